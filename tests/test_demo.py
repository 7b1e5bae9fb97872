"""``medtransfer demo`` end to end: the similarity showcase, the study, the analysis and the report;
the demo directory's files readable by others, and the directory movable and copyable."""

from __future__ import annotations

import os
import re
import shutil
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from medtransfer.cli import app
from medtransfer.demo import similarity_showcase


def assert_transfer_beats_random(auc: pd.DataFrame) -> None:
    """Each pretrained cell's mean test AUC exceeds random init's by more than twice the larger of
    the two standard errors (std / sqrt(folds)): the margin docs/training-settings.md shows at
    threads 1, 2, 3 x seeds 0, 1, 2, not one machine's numbers."""
    cells = auc.groupby(["source", "strategy"])["auc"].agg(["mean", "std", "count"])
    random = cells.loc[("random", "no-freeze")]
    for (source, strategy), cell in cells.drop(index=("random", "no-freeze")).iterrows():
        error = max(cell["std"] / np.sqrt(cell["count"]), random["std"] / np.sqrt(random["count"]))
        assert cell["mean"] - random["mean"] > 2 * error, (source, strategy, cells)


def assert_cca_falls_with_depth(similarity: pd.DataFrame) -> None:
    """As in the paper: for each pretrained source, the CCA of the fine-tuned network against its
    initialisation is lower at block3 than at conv1, by more than twice the standard error of the
    drop over the source's runs (folds x strategies). Random init is left out: its deep layers
    barely train in 3 epochs."""
    pretrained = similarity[(similarity.kind == "ft_vs_init") & (similarity.source != "random")
                            & (similarity.measure == "cca")]
    assert set(pretrained.source) == {"synth_a", "synth_b"}
    for source, rows in pretrained.groupby("source"):
        by_run = rows.pivot_table(index=["strategy", "fold"], columns="layer", values="mean")
        drop = by_run["conv1"] - by_run["block3"]
        assert len(drop) == 6 and drop.mean() > 2 * drop.std() / np.sqrt(len(drop)), (source, by_run)


def test_showcase_matches_known_answers():
    rows = {name: (cca_mean, cka) for name, _, cca_mean, cka in similarity_showcase()}
    for name in ("X vs X", "X vs X @ rotation", "X vs 1e4 * X (scale)"):
        assert rows[name][0] == pytest.approx(1.0, abs=1e-10)
        assert rows[name][1] == pytest.approx(1.0, abs=1e-10)
    # an invertible map with condition number 1e10 keeps CCA at 1 but changes CKA
    assert rows["X vs X @ A, cond(A)=1e10"][0] == pytest.approx(1.0, abs=1e-8)
    assert rows["X vs X @ A, cond(A)=1e10"][1] < 0.9
    # independent data: CKA near p/n, CCA far below 1
    assert rows["X vs independent noise"][0] < 0.15
    assert rows["X vs independent noise"][1] < 0.02


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """``medtransfer demo`` run once under the common umask 022: (directory, its console output)."""
    out = tmp_path_factory.mktemp("demo") / "demo"
    previous = os.umask(0o022)
    try:
        result = CliRunner().invoke(app, ["demo", "--out", str(out)])
    finally:
        os.umask(previous)
    assert result.exit_code == 0, result.output
    return out, result.output


@pytest.mark.slow
def test_demo_runs_the_whole_study_and_resumes(demo):
    out, output = demo
    assert "0 failed" in output
    assert "…" not in output  # not a terminal: no table cell cut to rich's 80 columns

    auc = pd.read_csv(out / "results" / "auc.csv")
    # 3 folds x (2 pretrained sources x 2 strategies + random no-freeze)
    assert len(auc) == 15
    assert set(zip(auc.source, auc.strategy)) == {
        ("synth_a", "no-freeze"), ("synth_a", "freeze"), ("synth_b", "no-freeze"), ("synth_b", "freeze"),
        ("random", "no-freeze"),
    }
    assert auc.auc.between(0.0, 1.0).all()
    # large held-out parts, a small training part (the fold spec's train fraction 1/6 < 2/3)
    sizes = pd.read_csv(out / "folds" / "synthetic.csv").groupby(["fold", "split"]).size().unstack()
    assert (sizes["test"] == 100).all() and (sizes["val"] == 20).all() and (sizes["train"] == 60).all(), sizes
    assert_transfer_beats_random(auc)

    similarity = pd.read_csv(out / "analysis" / "similarity.csv")
    assert set(similarity.measure) == {"cca", "cka"}
    assert set(similarity.layer) == {"conv1", "block1", "block2", "block3", "block4"}
    assert {"ft_vs_init", "ft_vs_ft", "init_vs_init", "random_vs_random"} <= set(similarity.kind)
    assert similarity["mean"].dropna().between(0.0, 1.0 + 1e-9).all()
    # every score with enough images carries its image-bootstrap interval and permutation null
    enough = similarity[similarity["images"] >= 2]
    assert len(enough) and enough[["ci_low", "ci_high", "null_mean", "null_p95", "p_value"]].notna().all().all()
    assert_cca_falls_with_depth(similarity)
    # the sources' conv1 filters (pretrained from 0.3x their random init) moved towards Gabor-like
    # detectors (measured: +0.18 / +0.19 over random init at 2 threads, +0.16 / +0.19 at 1 thread; ten
    # random seeds span 0.175-0.192)
    from medtransfer.models import load_source
    from medtransfer.models.filters import conv1_filters, gabor_similarity

    random_match = gabor_similarity(conv1_filters(load_source("random").model)).mean()
    for name in ("synth_a", "synth_b"):
        source = load_source(str(out / "sources" / f"{name}.pt")).model
        assert gabor_similarity(conv1_filters(source)).mean() > random_match + 0.1, name

    html = (out / "report.html").read_text()
    assert "Table 2" in html
    assert html.count("data:image/png;base64,") >= 5
    figures = sorted((out / "analysis" / "figures").glob("*.png"))
    assert len(figures) >= 5
    for png in figures:  # every figure in the three formats, each linked from the report
        for suffix in (".pdf", ".svg"):
            assert png.with_suffix(suffix).is_file(), png.with_suffix(suffix)
            assert f'href="analysis/figures/{png.stem}{suffix}"' in html

    again = CliRunner().invoke(app, ["demo", "--out", str(out)])
    assert again.exit_code == 0, again.output
    assert "15 already done, 0 now" in again.output
    pd.testing.assert_frame_equal(pd.read_csv(out / "results" / "auc.csv"), auc)


@pytest.mark.slow
def test_every_file_of_the_demo_is_readable_by_group_and_others_under_umask_022(demo):
    out, _ = demo
    files = [p for p in out.rglob("*") if p.is_file()]
    folders = [out, *(p for p in out.rglob("*") if p.is_dir())]
    assert len(files) > 150  # runs, sources, folds, results, analysis, figures, report, pixel cache
    assert [str(p.relative_to(out)) for p in files if stat.S_IMODE(p.stat().st_mode) & 0o044 != 0o044] == []
    assert [str(p.relative_to(out)) for p in folders if stat.S_IMODE(p.stat().st_mode) & 0o055 != 0o055] == []


def _report(out: Path) -> dict[str, bytes]:
    """What `analyze` writes that a moved study must reproduce: the tables and the report (but for
    the time the analysis took, which the report notes)."""
    files = {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted((out / "analysis").glob("*.csv"))}
    files["report.html"] = re.sub(rb"analysis took [0-9.]+ s", b"analysis took - s", (out / "report.html").read_bytes())
    return files


@pytest.mark.slow
def test_a_moved_and_a_copied_demo_are_done_and_analyse_to_the_same_report(demo, tmp_path):
    """`mv` and `cp -r` of the finished demo: `run` finds every run done (nothing recomputed) and
    `analyze` writes the same tables and report as the original, from the directory's own files
    (the original is gone from its place while they are read)."""
    out, _ = demo
    reference = _report(out)
    assert len(reference) >= 5 and b"Table 2" in reference["report.html"]
    copy, moved = tmp_path / "copy", tmp_path / "elsewhere" / "demo"
    shutil.copytree(out, copy, symlinks=True)  # cp -r
    moved.parent.mkdir()
    shutil.move(out, moved)  # mv
    try:
        for where in (copy, moved):
            result = CliRunner().invoke(app, ["run", str(where / "study.resolved.yaml"), "--out", str(where)])
            assert result.exit_code == 0, result.output
            assert "15 runs: 15 already done, 0 finished now, 0 failed" in " ".join(result.output.split())
            shutil.rmtree(where / "analysis")
            (where / "report.html").unlink()
            result = CliRunner().invoke(app, ["analyze", str(where)])
            assert result.exit_code == 0, result.output
            assert _report(where) == reference, where
        assert not out.exists()  # nothing was written where the original was
    finally:
        shutil.move(moved, out)


@pytest.mark.slow
def test_the_margin_holds_at_another_seed_and_thread_count(demo, tmp_path):
    """The demo's fine-tuning at seed 1 and 2 threads (one run at a time): other batch orders, other
    initial heads, other float sums, and still each pretrained cell beats random init by the robust
    margin. The study stage alone, from the demo's own sources (copied, not pretrained again)."""
    from medtransfer.demo import demo_study
    from medtransfer.study.runner import run_study
    from medtransfer.training.record import STUDY_FILE

    out, _ = demo
    study = demo_study()
    study = study.model_copy(update={"seeds": [1], "training": {**study.training, "threads": 2},
                                     "executor": study.executor.model_copy(update={"workers": 1})})
    other = tmp_path / "seed1-threads2"
    (other / "sources").mkdir(parents=True)
    (other / STUDY_FILE).write_text(study.to_yaml())  # a study folder, so that --out accepts its sources
    for name in ("synth_a", "synth_b"):
        for suffix in (".pt", ".pt.sha256.json"):
            shutil.copy2(out / "sources" / f"{name}{suffix}", other / "sources" / f"{name}{suffix}")
    report = run_study(study, other)
    assert report.finished == 15 and not report.failed, report
    auc = pd.read_csv(other / "results" / "auc.csv")
    assert set(auc.seed) == {1} and len(auc) == 15
    reference = pd.read_csv(out / "results" / "auc.csv")
    assert not np.allclose(auc.sort_values(["source", "strategy", "fold"]).auc.to_numpy(),
                           reference.sort_values(["source", "strategy", "fold"]).auc.to_numpy())  # other numbers
    assert_transfer_beats_random(auc)

"""``analyze`` checks the runs on disk against the study's grid before it computes: missing,
unfinished (also while ``run`` works on it), damaged (a bad ``DONE`` is never taken for a legacy
one), mismatched, foreign runs and replaced source files are each named; by default no table is
written, ``--partial`` writes them saying which cells are incomplete."""

from __future__ import annotations

import json
import os
import shutil
import socket

import pytest

from medtransfer.analysis.grid import IncompleteStudyError, check_grid
from medtransfer.training.record import STUDY_FILE, RunDir

from .conftest import tiny_study

NO_FREEZE = "synth/random-no-freeze/fold0"
OTHER = "synth/random-no-freeze/fold1"


@pytest.fixture
def copied(finished_study, tmp_path):
    _, out = finished_study
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    return copy


def _run(out, run_id=NO_FREEZE) -> RunDir:  # noqa: ANN001
    return RunDir(out / "runs" / run_id)


def _delete_run(out):  # noqa: ANN001, ANN202
    shutil.rmtree(_run(out).path)


def _unfinish(out):  # noqa: ANN001, ANN202
    _run(out).done.unlink()


def _running(out):  # noqa: ANN001, ANN202 - `run` works on it right now (this live process holds it)
    run = _run(out)
    run.done.unlink()
    run.running.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "token": "t"}))


def _foreign(out):  # noqa: ANN001, ANN202 - a run of another study written into the same folder
    shutil.copytree(_run(out).path, out / "runs" / "other" / "random-no-freeze" / "fold0")


def _done(text):  # noqa: ANN001, ANN202
    return lambda out: _run(out).done.write_text(text)


def _no_config(out):  # noqa: ANN001, ANN202
    _run(out).config_file.unlink()


def _other_lr(out):  # noqa: ANN001, ANN202 - resealed: intact files, made with other settings
    run = _run(out)
    config = json.loads(run.config_file.read_text())
    run.config_file.write_text(json.dumps({**config, "lr": 0.5}))
    run.write_done()


def _no_record(out):  # noqa: ANN001, ANN202
    (out / STUDY_FILE).unlink()


def _done_names(extra: dict, drop: str | None = None, replace: tuple[str, str] | None = None):  # noqa: ANN202
    """DONE with ``extra`` digests added, ``drop`` left out, and ``replace`` = (file, new content) written."""
    def damage(out):  # noqa: ANN001, ANN202
        run = _run(out)
        done = json.loads(run.done.read_text())
        done["files"].update(extra)
        done["files"].pop(drop, None)
        if replace:
            run.file(replace[0]).write_text(replace[1])
        run.done.write_text(json.dumps(done))
    return damage


def _resealed_predictions(edit):  # noqa: ANN001, ANN202 - predictions changed, DONE written again over them
    def damage(out):  # noqa: ANN001, ANN202
        run = _run(out)
        lines = run.predictions.read_text().splitlines()
        content = edit(lines)
        (run.predictions.write_bytes if isinstance(content, bytes) else run.predictions.write_text)(content)
        run.write_done()
    return damage


def _nan_probability(lines):  # noqa: ANN001, ANN202
    fields = lines[1].split(",")
    return "\n".join([lines[0], ",".join(fields[:2] + ["nan"] * (len(fields) - 2)), *lines[2:]]) + "\n"


CASES = [  # (damage, the kind reported, what the line must name)
    (_delete_run, "missing", NO_FREEZE),
    (_unfinish, "unfinished", NO_FREEZE),
    (_running, "unfinished", "(running)"),
    (_foreign, "foreign", "other/random-no-freeze/fold0"),
    (_done(""), "damaged", "DONE is damaged"),
    (_done("garbage"), "damaged", "DONE is damaged"),
    (_done("{}"), "damaged", "DONE is damaged"),
    (_done('{"finished": 1.0, "files": {}}'), "damaged", "DONE is damaged"),
    (_no_config, "damaged", "config.json is missing"),
    (_other_lr, "config mismatch", "lr: 0.5 -> 0.0001"),
    (_no_record, "no grid", STUDY_FILE),
    (_done_names({"../../../../../../etc/passwd": {"sha256": "0" * 64, "bytes": 3}}), "damaged",
     "not a file a run writes"),
    (_done_names({}, drop="predictions.csv", replace=("predictions.csv", "image_id,label,p_0,p_1\nx,0,1,0\n")),
     "damaged", "predictions.csv is not covered by the digests"),
    (_done_names({}, drop="predictions.csv", replace=None), "damaged", "predictions.csv is not covered"),
    (_resealed_predictions(_nan_probability), "damaged", "probabilities must be finite numbers in [0, 1]"),
    (_resealed_predictions(lambda lines: b"\x81\xff\x00garbage"), "damaged", "predictions.csv: not a readable CSV"),
]


def test_a_complete_study_passes(copied):
    check = check_grid(copied)
    assert check.complete and check.problems() == [] and check.verified == {NO_FREEZE, OTHER}


@pytest.mark.parametrize(("damage", "kind", "named"), CASES, ids=lambda v: getattr(v, "__name__", str(v))[:24])
def test_each_problem_is_named_and_refused(copied, damage, kind, named):
    damage(copied)
    check = check_grid(copied)
    assert not check.complete
    lines = [line for line in check.problems() if line.startswith(kind)]
    assert len(lines) == 1 and named in lines[0], check.problems()
    with pytest.raises(IncompleteStudyError, match="--partial") as caught:
        from medtransfer.analysis import analyze

        analyze(copied)
    assert named in str(caught.value)
    assert not (copied / "analysis").exists() and not (copied / "report.html").exists()


def test_a_legacy_done_is_unverified_not_damaged(copied):
    _run(copied).done.write_text(json.dumps({"finished": 1700000000.0}))  # what runs before digests wrote
    check = check_grid(copied)
    assert check.complete and check.legacy == [NO_FREEZE] and check.verified == {OTHER}


def test_status_and_run_treat_a_damaged_done_as_damaged(copied):
    from medtransfer.study.runner import run_study
    from medtransfer.study.status import study_progress

    _run(copied).done.write_text("")
    assert {s["run_id"]: s["state"] for s in study_progress(copied)["runs"]}[NO_FREEZE] == "damaged"
    report = run_study(tiny_study(copied.parent), copied)
    assert report.recomputed == [NO_FREEZE] and check_grid(copied).complete


def test_partial_writes_tables_that_name_the_incomplete_cells(copied):
    from typer.testing import CliRunner

    from medtransfer.cli import app

    _unfinish(copied)
    result = CliRunner().invoke(app, ["analyze", str(copied), "--partial", "--rows", "200", "--channels", "8",
                                      "--repeats", "1", "--threads", "1", "--device", "cpu", "--format", "png"])
    assert result.exit_code == 0, result.output
    caption = "Incomplete cells (--partial"
    assert caption in (copied / "analysis" / "table2.md").read_text()
    report = (copied / "report.html").read_text()
    assert caption in report and "synth random-no-freeze (unfinished: 1 run)" in report
    assert f"unfinished: {NO_FREEZE}" in report


def test_a_replaced_source_file_is_named(tmp_path):
    from medtransfer.models import ResNet50, keras_init_, save_checkpoint
    from medtransfer.study.runner import run_study

    weights = tmp_path / "mine.pt"
    save_checkpoint(weights, keras_init_(ResNet50(), seed=3), {"normalization": "caffe", "classes": []})
    study = tiny_study(tmp_path, sources=[{"name": "mine", "path": str(weights)}], strategies=["no-freeze"],
                       folds=[0])
    out = tmp_path / "study"
    run_study(study, out)
    assert check_grid(out).complete
    save_checkpoint(weights, keras_init_(ResNet50(), seed=4), {"normalization": "caffe", "classes": []})
    check = check_grid(out)
    assert [r for r, _ in check.source_changed] == ["synth/mine-no-freeze/fold0"]
    assert str(weights) in check.source_changed[0][1] and "replaced" in check.source_changed[0][1]
    from medtransfer.analysis import analyze

    with pytest.raises(IncompleteStudyError, match="source changed: synth/mine-no-freeze/fold0"):
        analyze(out)
    analyze(out, partial=True, rows=200, channels=8, repeats=1, threads=1, device="cpu", formats=["png"])
    caption = "synth mine-no-freeze (source changed: 1 run)"
    assert caption in (out / "analysis" / "table2.md").read_text()
    report = (out / "report.html").read_text()
    assert caption in report and f"source changed: synth/mine-no-freeze/fold0: {weights}" in report
    weights.unlink()  # gone, not replaced: the analysis names the init it cannot load
    assert check_grid(out).source_changed == []


@pytest.mark.parametrize("content", [b"\x81\x00garbage", b"target,source,strategy,fold,auc\nsynth,random,no-freeze,0,abc\n",
                                     "twice"], ids=["binary", "not numbers", "a run twice"])
def test_a_damaged_results_auc_csv_is_named_not_a_traceback(copied, content):
    from medtransfer.analysis.inventory import read_study
    from medtransfer.analysis.tables import run_aucs

    stored = copied / "results" / "auc.csv"
    if content == "twice":
        lines = stored.read_text().splitlines()
        content = ("\n".join(lines + lines[1:]) + "\n").encode()
    stored.write_bytes(content)
    frame, problems = run_aucs(read_study(copied))
    assert len(frame) == 2 and "auc_stored" not in frame
    assert [p for p in problems if str(stored) in p and "not cross-checked" in p], problems

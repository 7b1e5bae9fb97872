"""The run record of a finished study: digests catch damage, files are readable by others, and
a study directory can be moved or copied."""

import json
import os
import shutil
import stat

import pandas as pd
import pytest
from typer.testing import CliRunner

from medtransfer.analysis.inventory import read_study
from medtransfer.analysis.run import analyze
from medtransfer.cli import app
from medtransfer.errors import DataError
from medtransfer.study.results import AUC_COLUMNS
from medtransfer.study.runner import run_study
from medtransfer.study.store import status
from medtransfer.training.record import DamagedRunError, RunDir, read_record


@pytest.fixture
def copied(finished_study, tmp_path):
    study, out = finished_study
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    return study, copy


def _first_run(out):
    return RunDir(next(out.glob("runs/**/DONE")).parent)


def test_done_records_a_digest_of_every_file_the_run_wrote(finished_study):
    _, out = finished_study
    run = _first_run(out)
    assert set(run.digests()) == {"config.json", "facts.json", "folds.csv", "metrics.json", "predictions.csv",
                                  "checkpoints/best.pt"}
    record = read_record(run)
    assert record.verified and record.classes and record.normalization == "caffe"
    assert record.run_id == run.path.relative_to(out / "runs").as_posix()


@pytest.mark.parametrize(("damage", "name"), [("empty-json", "metrics.json"), ("truncate", "predictions.csv"),
                                             ("delete", "checkpoints/best.pt")])
def test_a_damaged_run_is_shown_refused_and_recomputed(copied, damage, name):
    study, out = copied
    run = _first_run(out)
    path = run.file(name)
    if damage == "empty-json":
        path.write_text("{}")
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.unlink()
    states = {s.run_id: s for s in status(out)}
    damaged = [s for s in states.values() if s.state == "damaged"]
    assert len(damaged) == 1 and name in damaged[0].error
    with pytest.raises(DamagedRunError, match=name.replace(".", r"\.")):
        read_study(out)  # analyze refuses it, naming the file
    before = pd.read_csv(out / "results" / "auc.csv")
    report = run_study(study, out)
    assert report.recomputed == [damaged[0].run_id] and report.finished == 1
    assert [s.state for s in status(out)] == ["done", "done"]
    pd.testing.assert_frame_equal(pd.read_csv(out / "results" / "auc.csv"), before)  # deterministic on the CPU


def test_a_damaged_pretrained_source_is_refused_by_analyze(tmp_path):
    from medtransfer.training.record import seal_file

    out = tmp_path / "study"
    (out / "runs").mkdir(parents=True)
    source = out / "sources" / "synth.pt"
    source.parent.mkdir()
    source.write_bytes(b"x" * 100)
    seal_file(source)
    read_study(out)
    source.write_bytes(b"x" * 50)
    with pytest.raises(DataError, match=r"synth.*50 bytes, 100 were written"):
        read_study(out)


def test_every_file_of_a_study_is_readable_by_others_under_umask_022(finished_study):
    _, out = finished_study
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) > 10
    private = [str(p.relative_to(out)) for p in files if not p.stat().st_mode & stat.S_IROTH]
    assert private == []
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o644 for p in files)


def test_atomic_writes_follow_the_umask(tmp_path):
    from medtransfer.atomic import write_text_atomic

    previous = os.umask(0o027)
    try:
        write_text_atomic(tmp_path / "a.txt", "x")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o640


@pytest.mark.parametrize("how", ["mv", "cp"])
def test_a_moved_or_copied_study_is_done_and_reads_its_own_files(finished_study, tmp_path, how):
    study, out = finished_study
    original = tmp_path / "original"
    shutil.copytree(out, original)
    settings = {"rows": 200, "channels": 8, "repeats": 1, "threads": 1}
    analyze(original, **settings)
    reference = {p.name: p.read_bytes() for p in (original / "analysis").glob("*.csv")}
    moved = tmp_path / "elsewhere" / "study"
    moved.parent.mkdir()
    if how == "mv":
        shutil.move(original, moved)
    else:
        shutil.copytree(original, moved)
    report = run_study(study, moved)
    assert (report.total, report.skipped, report.finished, report.recomputed) == (2, 2, 0, [])
    result = CliRunner().invoke(app, ["status", str(moved)])
    assert result.exit_code == 0 and "2/2 runs done" in result.output
    pd.testing.assert_frame_equal(pd.read_csv(moved / "results" / "auc.csv"), pd.read_csv(out / "results" / "auc.csv"))
    records = read_study(moved).runs
    for record in records:
        folds = record.resolved.folds_file
        assert folds.startswith(str(moved)) and os.path.exists(folds)  # its own folds file, not the original's
        saved = json.loads(record.dir.config_file.read_text())
        assert saved["folds_file"] == "folds/synth.csv"  # relative to the study
    if how == "cp":
        shutil.rmtree(original)  # the copy does not depend on the original
        assert [s.state for s in status(moved)] == ["done", "done"]
    shutil.rmtree(moved / "analysis")
    analyze(moved, **settings)
    again = {p.name: p.read_bytes() for p in (moved / "analysis").glob("*.csv")}
    assert again == reference and len(pd.read_csv(moved / "analysis" / "similarity.csv")) > 0
    assert list(pd.read_csv(moved / "results" / "auc.csv").columns) == AUC_COLUMNS

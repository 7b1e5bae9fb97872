"""The run record of a finished study: digests catch damage, files are readable by others, and
a study directory can be moved or copied."""

import ast
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

import medtransfer
from medtransfer.analysis.inventory import read_study
from medtransfer.analysis.run import analyze
from medtransfer.cli import app
from medtransfer.errors import DataError
from medtransfer.study.results import AUC_COLUMNS
from medtransfer.study.runner import run_study
from medtransfer.study.status import study_progress
from medtransfer.training import record
from medtransfer.training.record import DamagedRunError, RunDir, read_record
from tests.code_strings import code_strings


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
    damaged = [s for s in study_progress(out)["runs"] if s["state"] == "damaged"]
    assert len(damaged) == 1 and name in damaged[0]["error"]
    with pytest.raises(DamagedRunError, match=name.replace(".", r"\.")):
        read_study(out)  # analyze refuses it, naming the file
    before = pd.read_csv(out / "results" / "auc.csv")
    report = run_study(study, out)
    assert report.recomputed == [damaged[0]["run_id"]] and report.finished == 1
    assert [s["state"] for s in study_progress(out)["runs"]] == ["done", "done"]
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


def test_study_relative_paths_resolve_where_the_study_is(tmp_path):
    """A run config's relative folds file, source file and pixel cache are relative to its study
    directory (a fine-tuning run in DIR/runs/, a pretraining run in DIR/sources/), wherever it is."""
    from medtransfer.training.config import RunConfig

    config = RunConfig(target="synthetic", folds_file="folds/t.csv", cache_dir="cache", source="sources/a.pt")
    study = tmp_path / "study"
    resolved = RunDir.in_study(study, config).resolve(config)
    assert (resolved.folds_file, resolved.cache_dir, resolved.source) == (
        str(study / "folds" / "t.csv"), str(study / "cache"), str(study / "sources" / "a.pt"))
    assert RunDir(study / "sources" / "a-run").base == study and RunDir(study / "sources" / "a-run").resolve(
        config).cache_dir == str(study / "cache")
    assert RunDir(tmp_path / "lone").resolve(config) == config  # outside a study: the working directory's
    absolute = config.model_copy(update={"cache_dir": str(tmp_path / "elsewhere")})
    assert RunDir.in_study(study, absolute).resolve(absolute).cache_dir == str(tmp_path / "elsewhere")


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
    assert result.exit_code == 0 and "2/2 runs done" in " ".join(result.output.split())  # rich wraps long paths
    pd.testing.assert_frame_equal(pd.read_csv(moved / "results" / "auc.csv"), pd.read_csv(out / "results" / "auc.csv"))
    records = read_study(moved).runs
    for record in records:
        folds = record.resolved.folds_file
        assert folds.startswith(str(moved)) and os.path.exists(folds)  # its own folds file, not the original's
        saved = json.loads(record.dir.config_file.read_text())
        assert saved["folds_file"] == "folds/synth.csv"  # relative to the study
    if how == "cp":
        shutil.rmtree(original)  # the copy does not depend on the original
        assert [s["state"] for s in study_progress(moved)["runs"]] == ["done", "done"]
    shutil.rmtree(moved / "analysis")
    analyze(moved, **settings)
    again = {p.name: p.read_bytes() for p in (moved / "analysis").glob("*.csv")}
    assert again == reference and len(pd.read_csv(moved / "analysis" / "similarity.csv")) > 0
    assert list(pd.read_csv(moved / "results" / "auc.csv").columns) == AUC_COLUMNS


# -- one owner: only the run record spells, joins and parses a run directory's files ------------

SRC = Path(medtransfer.__file__).resolve().parent
RECORD = SRC / "training" / "record.py"
FOLDERS = (record.RUNS, record.CHECKPOINTS, record.PROBE, record.CORRUPTIONS, record.TRANSFER)  # folders: also ordinary words
FILES = tuple(n for n in record.LAYOUT if n not in FOLDERS) + (record.STUDY_FILE, record.LEGACY_STUDY_FILE,
                                                                record.SNAPSHOT_GLOB)
# the record's constants naming something inside a run directory (the study-level STUDY_FILE,
# SOURCES and FOLDS_DIR name the study's own files and may be joined to a study directory)
RUN_CONSTANTS = {name for name, value in vars(record).items()
                 if name.isupper() and isinstance(value, str) and value in record.LAYOUT + (record.RUNS,)}
RUN_DIR_FOLDERS = ("path", "checkpoints", "probe")  # RunDir attributes that are folders


def _modules():
    """(path relative to src/medtransfer, syntax tree) of every module but the record."""
    for path in sorted(SRC.rglob("*.py")):
        if path != RECORD:
            yield path.relative_to(SRC).as_posix(), ast.parse(path.read_text(encoding="utf-8"))



def test_the_layout_lists_every_name_the_record_defines():
    own = {node.id for node in ast.walk(ast.parse(RECORD.read_text(encoding="utf-8")))
           if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store)}  # not imported ones
    names = {value for name, value in vars(record).items() if name in own and name.isupper() and isinstance(value, str)
             and name not in ("SNAPSHOT", "SNAPSHOT_GLOB", "STUDY_FILE", "LEGACY_STUDY_FILE", "SOURCES", "FOLDS_DIR", "RUNS",
                              "RESULTS_DIR", "ANALYSIS_DIR", "FIGURES_DIR", "REPORT_FILE", "SLURM_DIR", "AUC_TABLE",
                              "TABLE2_CSV", "TABLE2_MD", "SIMILARITY_TABLE")}  # the study's
    assert names == set(record.LAYOUT) and len(set(record.LAYOUT)) == len(record.LAYOUT)
    assert {"config.json", "DONE", "RUNNING", "FAILED", "history.csv", "mlflow.json", "progress.json",
            "last.pt", "best.pt"} <= names


def test_run_directory_names_are_spelt_only_in_the_record():
    """No code string outside record.py is (or has as a path component) a run directory's file or
    marker name: the other modules take paths from RunDir."""
    found = []
    for module, tree in _modules():
        for line, text in code_strings(tree):
            parts = text.split("/")
            named = [n for n in FILES if n in parts]
            named += [n for n in FOLDERS if len(parts) > 1 and n in parts]
            if named:
                found.append(f"{module}:{line}: {text!r} names {named}")
    assert found == []


def test_no_module_outside_the_record_joins_a_run_path_or_reads_config_json():
    found = []
    for module, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "medtransfer.training.record":
                found += [f"{module}:{node.lineno}: imports {a.name}" for a in node.names if a.name in RUN_CONSTANTS]
            elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
                for side in (node.left, node.right):
                    name = getattr(side, "id", None) or getattr(side, "attr", "")
                    if name in RUN_CONSTANTS:
                        found.append(f"{module}:{node.lineno}: joins {name}")
                if isinstance(node.left, ast.Attribute) and node.left.attr in RUN_DIR_FOLDERS:
                    found.append(f"{module}:{node.lineno}: joins a path to .{node.left.attr}")
            elif isinstance(node, ast.Attribute) and node.attr == "config_file":
                found.append(f"{module}:{node.lineno}: uses config_file (read it with RunDir.read_config)")
            elif isinstance(node, ast.Call) and (ast.unparse(node.func) == "os.path.join"
                                                 or getattr(node.func, "attr", "") == "joinpath"):
                found.append(f"{module}:{node.lineno}: {ast.unparse(node)}")
    assert found == []


def test_the_record_imports_nothing_above_it():
    """record.py sits below the study, the tracking sinks, the progress reader and the analysis:
    they import it, it imports none of them, not even through its package (no import cycle)."""
    tree = ast.parse(RECORD.read_text(encoding="utf-8"))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    ours = sorted(m for m in imported if m.startswith("medtransfer"))
    assert ours == ["medtransfer.atomic", "medtransfer.errors", "medtransfer.training.config",
                    "medtransfer.vocabulary"]
    code = ("import sys, medtransfer.training.record; "
            "print(sorted(m for m in sys.modules if m.startswith(('medtransfer.study', 'medtransfer.tracking.', "
            "'medtransfer.analysis'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": str(SRC.parent)})
    assert done.stdout.strip() == "[]", done.stdout

"""A finished study grows by one line of its study file: the runs it holds stay byte for byte,
only the new ones train, and a change that would redo a recorded run or source is refused."""

from __future__ import annotations

import re

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from medtransfer.cli import app
from medtransfer.errors import ConfigError
from medtransfer.study.config import StudyConfig
from medtransfer.training.record import STUDY_FILE, find_all_run_dirs

from .conftest import tiny_study, write_yaml

PRETRAIN = {"dataset": "synthetic", "options": {"n_patients": 12, "images_per_patient": 2, "size": 32,
                                                "task": "source-a", "seed": 1},
            "size": 32, "batch_size": 8, "epochs": 1}


def _run(study_file, out):  # noqa: ANN001, ANN202
    result = CliRunner().invoke(app, ["run", str(study_file), "--out", str(out)])
    return result, " ".join(result.output.split())


def _files(out):  # noqa: ANN001, ANN202 - every file of every run and source: bytes and modification time
    return {p: (p.read_bytes(), p.stat().st_mtime_ns)
            for folder in ("runs", "sources") for p in (out / folder).rglob("*") if p.is_file()}


def _edit(study_file, change):  # noqa: ANN001, ANN202
    data = yaml.safe_load(study_file.read_text())
    change(data)
    study_file.write_text(yaml.safe_dump(data, sort_keys=False))


@pytest.fixture(scope="module")
def extended(tmp_path_factory):
    """A finished study (a pretrained source and random init, 2 folds), then the same study file
    with one line added to the source (``transfer: {up_to: [conv1, block2]}``), run again: (study
    file, out, the first run's files, the two runs' outputs)."""
    base = tmp_path_factory.mktemp("extended")
    study = tiny_study(base, strategies=["no-freeze"], training={"epochs": 1},
                       sources=[{"name": "mine", "pretrain": PRETRAIN}, {"name": "random"}])
    study_file = write_yaml(base / "study.yaml", study)
    out = base / "study"
    first, first_output = _run(study_file, out)
    assert first.exit_code == 0, first.output
    before = _files(out)
    recorded = (out / STUDY_FILE).read_text()
    _edit(study_file, lambda data: data["sources"][0].update(transfer={"up_to": ["conv1", "block2"]}))
    second, second_output = _run(study_file, out)
    assert second.exit_code == 0, second.output
    return study_file, out, before, recorded, first_output, second_output


@pytest.mark.slow
def test_adding_transfer_to_a_finished_study_trains_only_the_new_runs(extended):
    study_file, out, before, recorded, first_output, second_output = extended
    assert "4 runs: 0 already done, 4 finished now, 0 failed" in first_output
    assert "8 runs: 4 already done, 4 finished now, 0 failed" in second_output
    after = _files(out)
    # every file of the finished runs and of the source: same bytes, never rewritten
    assert {p: after.get(p) for p in before} == before
    assert any(p.name == "predictions.csv" for p in before)
    runs = find_all_run_dirs(out)
    new = {f"synth/mine.to_{stage}-no-freeze/fold{fold}" for stage in ("conv1", "block2") for fold in (0, 1)}
    assert set(runs) == new | {f"synth/{source}-no-freeze/fold{fold}" for source in ("mine", "random")
                               for fold in (0, 1)}
    assert all(runs[run_id].is_done() for run_id in runs)
    # the recorded study is the extended study file, replaced whole
    now = StudyConfig.from_yaml(out / STUDY_FILE)
    assert now.sources[0].transfer.up_to == ["conv1", "block2"]
    assert now == StudyConfig.from_yaml(study_file)
    assert StudyConfig.parse(yaml.safe_load(recorded)).sources[0].transfer is None
    auc = pd.read_csv(out / "results" / "auc.csv")
    assert len(auc) == 8


@pytest.mark.slow
def test_the_extended_study_analyses_into_a_transfer_depth_table(extended):
    from medtransfer.analysis import analyze

    _, out, *_ = extended
    analyze(out, rows=200, channels=8, repeats=1, threads=1, device="cpu", formats=["png"])
    table = pd.read_csv(out / "analysis" / "transfer_depth.csv")
    assert list(table["arm"]) == ["random", "conv1", "block2", "full"]
    assert list(table["depth"]) == [0, 1, 3, 5] and (table["n"] == 2).all()


@pytest.mark.slow
def test_a_rerun_that_would_redo_a_recorded_run_or_source_is_refused_and_records_nothing(extended, tmp_path):
    study_file, out, *_ = extended
    recorded = (out / STUDY_FILE).read_text()
    files = _files(out)
    text = study_file.read_text()
    cases = [
        (lambda data: data["training"].update(lr=1e-3), r"run synth/.* different settings \(lr: 0.0001 -> 0.001\)"),
        (lambda data: data["sources"][0]["pretrain"].update(epochs=2),
         r"source mine: its pretraining run in .*sources/mine-run was made with different settings \(epochs: 1 -> 2"),
        (lambda data: data["sources"][0]["transfer"].update(up_to=["conv1"]),
         r"leaves out 2 run\(s\) .*\(synth/mine.to_block2-no-freeze/fold0, synth/mine.to_block2-no-freeze/fold1\)"),
        (lambda data: data.update(folds=[0]), r"leaves out 4 run\(s\)"),
    ]
    for change, message in cases:
        study_file.write_text(text)
        _edit(study_file, change)
        result, _ = _run(study_file, out)
        assert isinstance(result.exception, ConfigError), result.output
        assert re.search(message, str(result.exception)), str(result.exception)
        assert (out / STUDY_FILE).read_text() == recorded
        assert _files(out) == files
    study_file.write_text(text)

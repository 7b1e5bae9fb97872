"""`medtransfer status` while a source is pretrained, and how it verifies finished runs."""

import json
import os
import shutil

import pytest
from typer.testing import CliRunner

from medtransfer.cli import app

from .conftest import tiny_study, write_yaml
from .held import release, start_held, wait_held


def _status(out, *extra):
    result = CliRunner().invoke(app, ["status", str(out), "--json", *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


@pytest.mark.slow
def test_status_json_during_source_pretraining_lists_the_pretraining_task(tmp_path):
    made = {"name": "made", "pretrain": {"dataset": "synthetic", "size": 32, "batch_size": 8, "epochs": 3,
                                         "options": {"n_patients": 16, "images_per_patient": 2, "size": 32,
                                                     "seed": 5}}}
    study = tiny_study(tmp_path, sources=[made], folds=[0])
    study_file = write_yaml(tmp_path / "study.yaml", study)
    out = tmp_path / "study"
    # held after the pretraining run's first checkpoint (an epoch timed): no fine-tuning run has started
    process = start_held(study_file, out, tmp_path / "barrier", method="checkpoint", pattern="sources/made-run")
    try:
        wait_held(process, tmp_path / "barrier")
        seen = _status(out)
        view = CliRunner().invoke(app, ["status", str(out)])
        release(tmp_path / "barrier")
        _, err = process.communicate(timeout=600)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err.decode()[-2000:]
    [task] = seen["pretraining"]
    assert task["task"] == "pretrain" and task["source"] == "pretrain-made" and task["state"] == "running", task
    assert task["epochs"] == 3 and 1 <= task["epoch"] <= 3 and task["seconds_per_epoch"] > 0
    # its own measured epochs: (epochs left) x (its s/epoch)
    assert task["eta_s"] == pytest.approx((3 - task["epoch"]) * task["seconds_per_epoch"])
    assert all(r["state"] == "pending" and r["eta_s"] is None for r in seen["runs"])  # waiting: no ETA of its own
    assert seen["counts"]["pending"] == len(seen["runs"]) == 2
    assert view.exit_code == 0 and "pretraining: " in view.output and "made running, epoch" in view.output
    final = _status(out)
    assert final["pretraining"][0]["state"] == "done" and final["counts"]["done"] == 2


def test_a_predictions_file_edited_to_the_same_size_reads_damaged(finished_study, tmp_path):
    _, original = finished_study
    out = tmp_path / "copy"
    shutil.copytree(original, out)  # copy2: times kept, so the quick check hashes nothing
    assert _status(out)["counts"]["done"] == 2
    run = next(r for r in _status(out)["runs"])
    predictions = out / "runs" / run["run_id"] / "predictions.csv"
    text = predictions.read_bytes()
    digits = [i for i, c in enumerate(text) if chr(c) in "0123456789"]
    i = digits[-3]
    edited = text[:i] + (b"1" if text[i:i + 1] != b"1" else b"2") + text[i + 1:]
    stat = predictions.stat()
    predictions.write_bytes(edited)
    assert predictions.stat().st_size == stat.st_size
    # edited in place: a new modification time, so the quick check hashes it
    quick = _status(out)
    assert quick["counts"]["damaged"] == 1 and "sha256" in next(r for r in quick["runs"] if r["state"] == "damaged")["error"]
    # the same edit with the old time put back: only --verify (every file hashed) sees it
    os.utime(predictions, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert _status(out)["counts"]["damaged"] == 0
    assert _status(out, "--verify")["counts"]["damaged"] == 1

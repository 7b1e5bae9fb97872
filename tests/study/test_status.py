"""`medtransfer status --json` on a study that is running in another process: every run is
reported, with its phase and epoch, and the grid has an ETA once an epoch has been timed."""

import json

import pytest
from typer.testing import CliRunner

from medtransfer.cli import app
from medtransfer.study.expand import expand

from .conftest import tiny_study, write_yaml
from .held import release, start_held, wait_held


def _status(out):
    result = CliRunner().invoke(app, ["status", str(out), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


@pytest.mark.slow
def test_status_json_while_the_study_runs(tmp_path):
    study = tiny_study(tmp_path, training={"epochs": 3})
    study_file = write_yaml(tmp_path / "study.yaml", study)
    out = tmp_path / "study"
    # held after the first run's first epoch (timed, checkpointed): status looks at a run that
    # certainly runs, then the driver goes on
    process = start_held(study_file, out, tmp_path / "barrier", method="checkpoint")
    try:
        wait_held(process, tmp_path / "barrier")
        seen = _status(out)
        release(tmp_path / "barrier")
        _, err = process.communicate(timeout=1200)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err.decode()[-2000:]
    assert seen["counts"]["running"] == 1 and seen["eta_s"] is not None, seen
    want = [config.run_id for config in expand(study, out)]
    assert [r["run_id"] for r in seen["runs"]] == want
    assert seen["eta_s"] >= 0 and seen["eta_max_s"] >= seen["eta_s"]
    running = [r for r in seen["runs"] if r["state"] == "running"]
    assert len(running) == 1 and running[0]["phase"] == "finetune" and running[0]["epochs"] == 3
    assert 1 <= running[0]["epoch"] <= 3 and running[0]["seconds_per_epoch"] > 0
    assert running[0]["best_val_auc"] is None or 0 <= running[0]["best_val_auc"] <= 1
    final = _status(out)
    assert final["counts"]["done"] == len(want) and final["eta_s"] == 0
    assert all(r["epoch"] == 3 for r in final["runs"])


def test_status_of_a_finished_study(finished_study):
    study, out = finished_study
    watched = CliRunner().invoke(app, ["status", str(out), "--json", "--watch", "--interval", "0.1"])
    assert watched.exit_code == 0 and len(watched.output.strip().splitlines()) == 1  # done: no refresh
    state = json.loads(watched.output)
    assert state["eta_s"] == 0 and state["counts"]["done"] == 2
    assert all(r["test_auc"] is not None and r["seconds_per_epoch"] > 0 for r in state["runs"])
    table = CliRunner().invoke(app, ["status", str(out), "--all"])
    assert table.exit_code == 0
    for config in expand(study, out):
        assert config.run_id in table.output
    assert "ETA 0:00:00" in table.output

"""A claim from another host (a study copied from a cluster) is named at once, with the way out,
and ``run --steal-claims`` takes such runs over; claims this machine can check are never stolen."""

from __future__ import annotations

import json
import os
import socket
import time

import pytest

from medtransfer.study import claims, runner
from medtransfer.study.executors import Outcome, Task
from medtransfer.training.record import STUDY_FILE, RunDir

from .conftest import tiny_study


def _foreign(directory, job=None):  # noqa: ANN001, ANN202
    run = RunDir(directory)
    run.path.mkdir(parents=True, exist_ok=True)
    (run.path / "history.csv").write_text("phase,epoch\n")  # fresh files: the owner looks alive
    run.running.write_text(json.dumps({"host": "gpu-node-17.cluster", "pid": 4242, "job": job,
                                       "started": time.time() - 3600, "token": "theirs"}))
    return run


class Recorder:
    """An executor that finishes every task it is given, recording them."""

    poll_s = 0.01

    def __init__(self) -> None:
        self.ran: list[str] = []

    def run(self, tasks: list[Task]) -> list[Outcome]:
        self.ran += [t.run_id for t in tasks]
        for task in tasks:
            RunDir(task.directory).done.write_text("{}")
        return [Outcome(t.run_id, "done") for t in tasks]


@pytest.mark.parametrize("job", [None, "123_4"])  # no job; a job id no squeue here can check
def test_a_claim_from_another_host_is_reported_before_any_wait(tmp_path, monkeypatch, capsys, job):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # no squeue on this machine
    run = _foreign(tmp_path / "runs" / "a", job)
    task = Task("a", "{}", str(run.path))
    assert claims.unverifiable(claims.read(run.path)) and claims.held_elsewhere(run.path)
    seen = {}

    def wait_for_owners(directories, poll_s, report=None):  # noqa: ANN001, ANN202
        seen["stderr"] = capsys.readouterr().err  # what the user had been told when the wait began
        return []

    monkeypatch.setattr(claims, "wait_for_owners", wait_for_owners)
    runner._execute(Recorder(), [task])
    message = seen["stderr"]
    assert "gpu-node-17.cluster" in message and str(run.path) in message and "--steal-claims" in message
    assert "15 min" in message


def test_claims_this_machine_can_check_are_not_reported_nor_stolen(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    local = {"host": socket.gethostname(), "pid": os.getppid(), "token": "parent"}  # a live process here
    run.running.write_text(json.dumps(local))
    assert not claims.unverifiable(claims.read(run.path))
    assert runner.report_unverifiable_claims([Task("r", "{}", str(run.path))]) == 0
    assert not claims.steal(run.path) and run.running.exists()


def test_a_slurm_job_that_squeue_lists_is_not_stolen(tmp_path, monkeypatch):
    from .fake_slurm import fake_slurm

    bin_dir = fake_slurm(tmp_path / "slurm", queue="123_4|RUNNING|None")
    monkeypatch.setenv("PATH", str(bin_dir) + os.pathsep + os.environ["PATH"])
    run = _foreign(tmp_path / "run", job="123_4")
    assert not claims.unverifiable(claims.read(run.path))
    assert not claims.steal(run.path) and run.running.exists()


def test_run_steal_claims_takes_over_a_copied_studys_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin") + os.pathsep + os.environ["PATH"])
    study = tiny_study(tmp_path)
    out = tmp_path / "study"
    from medtransfer.study.expand import expand

    configs = expand(study, out)
    out.mkdir()
    (out / STUDY_FILE).write_text(study.to_yaml())  # a study copied from where its claims were made
    for config in configs:
        _foreign(RunDir.in_study(out, config).path)

    def no_wait(directories, poll_s, report=None):  # noqa: ANN001, ANN202
        assert not directories, "waited for a claim that --steal-claims should have removed"
        return []

    monkeypatch.setattr(claims, "wait_for_owners", no_wait)
    recorder = Recorder()
    monkeypatch.setattr(runner, "write_results", lambda out, configs: None)
    runner.run_study(study, out, executor=recorder, steal_claims=True)
    assert sorted(recorder.ran) == sorted(c.run_id for c in configs)


def test_the_cli_offers_steal_claims():
    from typer.testing import CliRunner

    from medtransfer.cli import app

    result = CliRunner().invoke(app, ["run", "--help"])
    assert "--steal-claims" in result.output


def test_an_unreadable_claim_is_named_before_the_wait(tmp_path, capsys):
    run = RunDir(tmp_path / "runs" / "t" / "random-no-freeze" / "fold0")
    run.path.mkdir(parents=True)
    run.running.write_text("garbage")
    assert runner.report_unverifiable_claims([Task("r", "{}", str(run.path))]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert f"whose claim is not readable (damaged, or being replaced), e.g. {run.running}" in err
    assert "taken over once it has not changed for 60 s" in err

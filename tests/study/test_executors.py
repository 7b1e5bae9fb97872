"""Executors behind one interface: submitit (debug and local clusters) and a local Ray instance
run the same tiny run; a failing run is recorded, not raised."""

import json
import os

import pytest

from medtransfer.study.executors import LocalExecutor, RayExecutor, SlurmExecutor, Task, execute_task
from medtransfer.study.expand import expand
from medtransfer.study.store import run_dir
from medtransfer.training.record import RunDir

from .conftest import tiny_study


def _tasks(tmp_path, folds=(0,), out_name="study", **training):
    study = tiny_study(tmp_path, folds=list(folds), training={"epochs": 1, **training})
    out = tmp_path / out_name
    # folds made on the fly (no folds file): the executors need nothing prepared
    configs = [c.model_copy(update={"folds_file": None}) for c in expand(study, out)]
    return [Task.make(c, run_dir(out, c)) for c in configs]


def _check_done(tasks, outcomes):
    assert [o.state for o in outcomes] == ["done"] * len(tasks)
    for task, outcome in zip(tasks, outcomes):
        metrics = json.loads((run_dir_of(task) / "metrics.json").read_text())
        assert outcome.auc == metrics["auc"] and (run_dir_of(task) / "DONE").exists()
        assert not (run_dir_of(task) / "RUNNING").exists()


def run_dir_of(task):
    from pathlib import Path

    return Path(task.directory)


def test_failure_is_recorded_and_done_is_skipped(tmp_path):
    (task,) = _tasks(tmp_path)
    broken = Task(task.run_id, task.config_json.replace('"random"', '"no-such-source"'), task.directory)
    outcome = execute_task(broken)
    assert outcome.state == "failed" and "no-such-source" in outcome.error
    assert "WeightsError" in (run_dir_of(task) / "FAILED").read_text()
    (run_dir_of(task) / "DONE").write_text("{}")
    assert LocalExecutor([]).run([task])[0].state == "skipped"


def test_a_run_finished_by_this_jobs_preempted_incarnation_counts_as_done(tmp_path, monkeypatch):
    """Preempted after DONE but before releasing its claim, a requeued SLURM job finds the run done
    under its own claim: it finished the run (done, with its AUC), nobody else did (skipped)."""
    (task,) = _tasks(tmp_path)
    run = RunDir(run_dir_of(task))
    run.path.mkdir(parents=True)
    (run.path / "metrics.json").write_text(json.dumps({"auc": 0.75}))
    run.write_done()
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    run.running.write_text(json.dumps({"host": "node1", "pid": 1, "job": "4242", "token": "t"}))
    outcome = execute_task(task)
    assert (outcome.state, outcome.auc) == ("done", 0.75) and not run.running.exists()
    run.running.write_text(json.dumps({"host": "node1", "pid": 1, "job": "99", "token": "t"}))  # another job's
    assert execute_task(task).state == "skipped" and run.running.exists()


@pytest.mark.slow
@pytest.mark.parametrize("cluster", ["debug"])  # "local" (subprocess jobs) works too; kept out for time
def test_submitit_job_array(tmp_path, cluster):
    tasks = _tasks(tmp_path)
    outcomes = SlurmExecutor(tmp_path / "slurm", cluster=cluster, timeout_min=10).run(tasks)
    _check_done(tasks, outcomes)
    if cluster == "local":
        assert list((tmp_path / "slurm").glob("*/*_result.pkl"))  # ran as a submitted job


@pytest.mark.slow
def test_ray_tasks_on_a_local_instance(tmp_path):
    tasks = _tasks(tmp_path)
    outcomes = RayExecutor(num_cpus=2, include_dashboard=False, log_to_driver=False).run(tasks)
    _check_done(tasks, outcomes)


@pytest.mark.slow
def test_a_local_ray_instance_runs_tasks_at_the_drivers_priority(monkeypatch):
    """Ray starts its workers at nice 15: beside any other busy process they would get almost no
    CPU (a run under two busy loops took over 20 minutes); a local instance's workers run at 0."""
    import ray

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_worker_niceness", raising=False)
    executor = RayExecutor(num_cpus=1, include_dashboard=False, log_to_driver=False)
    assert executor.connect()
    try:
        niceness = ray.get(ray.remote(lambda: os.nice(0)).remote(), timeout=600)
    finally:
        ray.shutdown()
    assert niceness == os.nice(0)


def test_submitit_requeue_resubmits_the_same_task(tmp_path):
    from medtransfer.study.executors import _SubmititRun

    (task,) = _tasks(tmp_path)
    delayed = _SubmititRun().checkpoint(task)
    assert isinstance(delayed.function, _SubmititRun) and delayed.args == (task,)


@pytest.mark.slow
def test_local_pool_one_worker_per_device(tmp_path):
    tasks = _tasks(tmp_path, folds=(0, 1))
    outcomes = LocalExecutor(["cpu", "cpu"]).run(tasks)  # the multi-GPU path, with CPU "devices"
    _check_done(tasks, outcomes)
    devices = {json.loads((run_dir_of(t) / "metrics.json").read_text())["device"] for t in tasks}
    assert devices == {"cpu"}


@pytest.mark.slow
def test_local_workers_train_runs_side_by_side_with_the_sequential_numbers(tmp_path):
    """``workers: 2`` on a CPU: two runs train at the same time, in worker processes, and give
    byte-identical predictions to one run after the other (the thread count is pinned)."""
    side_by_side = _tasks(tmp_path, folds=(0, 1), out_name="workers", threads=1)
    _check_done(side_by_side, LocalExecutor([], workers=2).run(side_by_side))
    spans = [json.loads((run_dir_of(t) / "progress.json").read_text()) for t in side_by_side]
    (a_start, a_end), (b_start, b_end) = [(p["started"], p["updated"]) for p in spans]
    assert a_start < b_end and b_start < a_end, spans  # their training overlapped in time
    one_by_one = _tasks(tmp_path, folds=(0, 1), out_name="sequential", threads=1)
    _check_done(one_by_one, LocalExecutor([]).run(one_by_one))
    for parallel, sequential in zip(side_by_side, one_by_one):
        assert (run_dir_of(parallel) / "predictions.csv").read_bytes() == (run_dir_of(sequential) / "predictions.csv").read_bytes()


def test_local_worker_slots_cycle_over_the_devices():
    assert LocalExecutor([], workers=3).slots() == [None, None, None]
    assert LocalExecutor(["cuda:0", "cuda:1"], workers=3).slots() == ["cuda:0", "cuda:1", "cuda:0"]
    assert LocalExecutor(["cuda:0", "cuda:1"]).slots() == ["cuda:0", "cuda:1"]
    assert LocalExecutor([]).slots() == [None]
    from medtransfer.errors import ConfigError

    with pytest.raises(ConfigError, match="workers 0"):
        LocalExecutor([], workers=0)


@pytest.mark.slow
def test_an_interrupted_worker_stops_the_study_and_the_rerun_finishes_it(tmp_path):
    """SIGINT to the two workers alone (the driver does not get it) while they train: the driver
    starts no queued run and exits, the interrupted runs are left resumable, and a rerun finishes
    every run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.study.conftest import write_yaml

    study = tiny_study(tmp_path, folds=[0, 1], seeds=[0, 1], training={"epochs": 6}, executor={"workers": 2})
    study_file = write_yaml(tmp_path / "study.yaml", study)
    out = tmp_path / "study"
    command = [sys.executable, "-c", "from medtransfer.cli import main; main()", "run", str(study_file), "--out", str(out)]
    env = {**os.environ, "MEDTRANSFER_QUIET": "1"}

    def default_sigint() -> None:  # a shell runs background jobs with SIGINT ignored
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               preexec_fn=default_sigint)
    # hang guards only (the test waits on the runs' own files): generous, so that a loaded machine passes
    deadline = time.monotonic() + 900

    def training() -> dict:  # run directory -> pid of the worker training it, past its first epoch
        owners = {}
        for claim in out.glob("runs/**/RUNNING"):
            try:
                history = (claim.parent / "history.csv").read_text()
                owners[claim.parent] = json.loads(claim.read_text())["pid"]
            except (OSError, ValueError, KeyError):
                continue
            if len(history.splitlines()) < 2:
                del owners[claim.parent]
        return owners

    while process.poll() is None and len(training()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    owners = training()
    assert process.poll() is None and len(owners) == 2, process.stderr.read().decode()[-1000:]
    done_before = len(list(out.glob("runs/**/DONE")))
    for pid in set(owners.values()):
        os.kill(pid, signal.SIGINT)
    assert process.wait(timeout=600) != 0
    assert len(list(out.glob("runs/**/DONE"))) <= done_before, "queued runs trained after the interrupt"
    assert not list(out.glob("runs/**/RUNNING")), "an interrupted run kept its claim"
    rerun = subprocess.run(command, env=env, capture_output=True, timeout=1800, preexec_fn=default_sigint)
    assert rerun.returncode == 0, rerun.stderr.decode()[-2000:]
    assert len(list(out.glob("runs/**/DONE"))) == 4

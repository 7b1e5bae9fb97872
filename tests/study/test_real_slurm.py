"""On a real single-node SLURM started by the tests (skipped where slurmctld is not installed)
and a real local Ray: byte-identical results across engines, preemption (SIGTERM then USR2, as
submitit simulates it) ten times at seeded random moments ends in ten requeues and resumes with
the uninterrupted run's results, a rerun driver never duplicates a job that still runs, and
mistakes are errors within 60 s."""

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from medtransfer.errors import ConfigError
from medtransfer.study import claims
from medtransfer.study.config import ExecutorSpec
from medtransfer.study.executors import RayExecutor
from medtransfer.study.runner import run_study

from .conftest import tiny_study, write_yaml
from .preempting import EPOCHS, PREEMPTIONS, Preempter, seeded_moments
from .slurm_cluster import SlurmCluster, unavailable

WHY = unavailable()
pytestmark = pytest.mark.skipif(WHY is not None, reason=f"no real SLURM here: {WHY}")
SLURM = {"cpus_per_task": 1, "timeout_min": 60, "poll_s": 1}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    try:
        started = SlurmCluster(tmp_path_factory.mktemp("slurm")).start()
    except (RuntimeError, OSError) as error:  # installed but cannot run here (a container without root powers)
        pytest.skip(f"SLURM is installed but did not start: {error}")
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = started.env["SLURM_CONF"]
    yield started
    started.stop()
    if previous is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = previous


def _slurm_study(tmp_path, **overrides):
    study = tiny_study(tmp_path, **overrides)
    return study.model_copy(update={"executor": study.executor.model_copy(update={"kind": "slurm", "slurm": SLURM})})


def _job_dirs(out):
    """The SLURM jobs submitted for a study: submitit's folder per job (``ID`` or ``ARRAY_TASK``)."""
    import re

    return sorted(p.name for p in (out / "slurm").iterdir() if p.is_dir() and re.fullmatch(r"\d+(_\d+)?", p.name))


@pytest.mark.slow
def test_local_slurm_and_ray_give_byte_identical_auc_csv(cluster, finished_study, tmp_path):
    _, reference = finished_study
    report = run_study(_slurm_study(tmp_path), tmp_path / "slurm")
    assert report.finished == 2 and not report.failed, report
    assert {"_0", "_1"} <= {n[-2:] for n in _job_dirs(tmp_path / "slurm")}  # ran as SLURM array tasks
    ray = RayExecutor(cpus_per_run=1, num_cpus=2, include_dashboard=False, log_to_driver=False,
                      _node_ip_address="127.0.0.1")
    report = run_study(tiny_study(tmp_path), tmp_path / "ray", executor=ray)
    assert report.finished == 2 and not report.failed, report
    want = (reference / "results" / "auc.csv").read_bytes()
    assert (tmp_path / "slurm" / "results" / "auc.csv").read_bytes() == want
    assert (tmp_path / "ray" / "results" / "auc.csv").read_bytes() == want


@pytest.mark.slow
def test_preemption_at_random_moments_requeues_and_resumes(cluster, preemption_reference, tmp_path, monkeypatch):
    monkeypatch.delenv("MEDTRANSFER_QUIET", raising=False)  # the jobs log each start and resume
    study = _slurm_study(tmp_path, folds=[0], training={"epochs": EPOCHS})
    out = tmp_path / "out"
    run = out / "runs" / "synth" / "random-no-freeze" / "fold0"

    def preempt(owner):
        job = str(owner["job"])
        cluster.run("scancel", "--signal=TERM", job)
        time.sleep(0.1)
        cluster.run("scancel", "--signal=USR2", job)
        # SLURM holds a requeued job for about two minutes (BeginTime); let it start sooner, but in a
        # later second than its kill: slurmd refuses a job credential from that second ("already killed")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = cluster.run("squeue", "--noheader", f"--jobs={job}", "--format=%T").stdout.strip()
            if state.startswith("PENDING"):
                time.sleep(1.5)
                cluster.run("scontrol", "update", f"JobId={job}", "StartTime=now")
                return
            time.sleep(0.1)

    signaller = Preempter(run, seeded_moments(1), preempt)
    signaller.start()
    report = run_study(study, out)
    signaller.join(timeout=30)
    logs = "".join(p.read_text() for p in (out / "slurm").glob("*/*_log.err"))  # submitit's warnings, run lines
    starts = "".join(p.read_text() for p in (out / "slurm").glob("*/*_log.out")).count("Starting with JobEnvironment")
    print(signaller.summary(), f"; requeues logged: {logs.count('this job is preempted')}, job starts: {starts}")
    print("the job's log, without its epoch lines (shown when the test fails):")
    print("".join(line for line in logs.splitlines(keepends=True) if "ETA <=" not in line))
    assert signaller.error is None, (signaller.error, signaller.summary(), logs[-3000:])
    assert not report.failed and report.finished == 1, report
    assert len(signaller.sent) == PREEMPTIONS
    assert any(s["landed"] == "write" for s in signaller.sent), signaller.summary()
    assert len(signaller.resumes) == PREEMPTIONS and all(r["resumed"] for r in signaller.resumes)
    assert logs.count("this job is preempted") == PREEMPTIONS, logs[-3000:]
    assert starts == PREEMPTIONS + 1
    assert logs.count(": resumed from its checkpoint after finetune epoch") == PREEMPTIONS, logs[-3000:]
    assert not (run / "FAILED").exists()
    assert len(_job_dirs(out)) == 1  # one array task, requeued: never resubmitted
    assert len({s["owner"] for s in signaller.sent}) == 1  # the same job every time
    for name in ("results/auc.csv", "runs/synth/random-no-freeze/fold0/predictions.csv"):
        assert (out / name).read_bytes() == (preemption_reference / name).read_bytes(), name


def _squeue_recorder(folder, log):
    """A ``squeue`` that runs the real one and then appends its arguments and answer to ``log``
    (one line per call): put ``folder`` first on a process's PATH to see what it asked SLURM."""
    import shutil

    real = shutil.which("squeue")
    folder.mkdir()
    script = folder / "squeue"
    script.write_text(f"""#!/bin/sh
answer=$("{real}" "$@")
status=$?
printf '%s\\n' "$answer"
printf '%s => %s\\n' "$*" "$(printf '%s' "$answer" | tr '\\n' ' ')" >> "{log}"
exit $status
""")
    script.chmod(0o755)
    return folder


def _until(condition, what, timeout_s=120.0):
    """Poll ``condition`` (an observed state) until it holds; fail naming ``what`` after the timeout."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.mark.slow
def test_a_rerun_driver_waits_for_running_jobs_instead_of_resubmitting(cluster, finished_study, tmp_path):
    """The jobs cannot finish before the rerun driver has seen them: they are submitted while the
    partition is down (queued, not started), and the partition comes up only once the rerun driver
    has asked squeue about them and gone on to wait (its third query: one per run, then the wait)."""
    _, reference = finished_study
    study_file = write_yaml(tmp_path / "study.yaml", _slurm_study(tmp_path))
    out = tmp_path / "out"
    code = "from medtransfer.cli import main; main()"
    command = [sys.executable, "-c", code, "run", str(study_file), "--out", str(out)]
    env = {**os.environ, "MEDTRANSFER_QUIET": "1"}

    def claimed_by_jobs():
        found = [claims.read(p.parent) or {} for p in out.glob("runs/**/RUNNING")]
        return len(found) == 2 and all(c.get("job") for c in found)

    cluster.run("scontrol", "update", "PartitionName=debug", "State=DOWN")
    try:
        first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _until(claimed_by_jobs, "the first driver to submit both runs")
        first.send_signal(signal.SIGKILL)  # the driver dies; its jobs stay queued
        first.wait()
        jobs = sorted(str(claims.read(p.parent)["job"]) for p in out.glob("runs/**/RUNNING"))
        array = jobs[0].split("_")[0]
        log = tmp_path / "squeue.log"
        shim = _squeue_recorder(tmp_path / "bin", log)
        second = subprocess.Popen(command, env={**env, "PATH": f"{shim}{os.pathsep}{env['PATH']}"},
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

        def asked():  # the rerun driver's queries about the jobs, each answered "still queued"
            lines = log.read_text().splitlines() if log.exists() else []
            return [line for line in lines if f"--jobs={array}" in line.split(" => ")[0]]

        _until(lambda: len(asked()) >= 3 or second.poll() is not None, "the rerun driver to look at the jobs")
        assert second.poll() is None, second.communicate()
        assert all("PENDING" in line for line in asked()[:3]), asked()
    finally:
        cluster.run("scontrol", "update", "PartitionName=debug", "State=UP")
    stdout, stderr = second.communicate(timeout=600)
    assert second.returncode == 0, stderr[-2000:]
    assert "0 finished now" in stdout and "2 finished by another owner" in stdout, stdout
    arrays = {name.split("_")[0] for name in _job_dirs(out)}
    assert arrays == {array}, _job_dirs(out)  # nothing resubmitted
    assert (out / "results" / "auc.csv").read_bytes() == (reference / "results" / "auc.csv").read_bytes()
    assert not list(out.glob("runs/**/FAILED"))


def test_mistakes_on_a_real_cluster(cluster, tmp_path):
    began = time.monotonic()
    with pytest.raises(ConfigError, match=r"no partition 'gpu' on this cluster.*partitions: debug\*"):
        ExecutorSpec(kind="slurm", slurm={"partition": "gpu"}).build(tmp_path).check()
    with pytest.raises(ConfigError, match=rf"cpus_per_task: 999 CPUs per run, but the largest node of "
                                          rf"partition 'debug' has {cluster.cpus}"):
        ExecutorSpec(kind="slurm", slurm={"cpus_per_task": 999}).build(tmp_path).check()
    with pytest.raises(ConfigError, match=r"gpus_per_node: 1 GPU\(s\) per run, but partition 'debug' has no GPUs"):
        ExecutorSpec(kind="slurm", slurm={"gpus_per_node": 1}).build(tmp_path).check()
    ExecutorSpec(kind="slurm", slurm={}).build(tmp_path, threads=1).check()  # the bare defaults fit
    assert time.monotonic() - began < 60
    cluster.stop_controller()
    try:
        began = time.monotonic()
        with pytest.raises(ConfigError, match=r"slurmctld"):
            ExecutorSpec(kind="slurm", slurm={}).build(tmp_path).check()
        assert time.monotonic() - began < 60
    finally:
        cluster.start_controller()
        deadline = time.monotonic() + 60
        while cluster.run("sinfo", "--noheader", "--format=%T").returncode != 0 and time.monotonic() < deadline:
            time.sleep(0.5)


@pytest.mark.slow
def test_detach_submits_pretraining_and_runs_as_jobs_and_a_later_run_collects(cluster, tmp_path):
    from medtransfer.study.status import study_progress

    pretrain = {"dataset": "synthetic", "options": {"n_patients": 12, "images_per_patient": 2, "size": 32,
                                                    "task": "source-a", "seed": 1},
                "size": 32, "batch_size": 8, "epochs": 1}
    study = _slurm_study(tmp_path, folds=[0], strategies=["no-freeze"], training={"epochs": 1},
                         sources=[{"name": "mine", "pretrain": pretrain}])
    out = tmp_path / "out"
    began = time.monotonic()
    report = run_study(study, out, detach=True)
    assert report.submitted == 2 and time.monotonic() - began < 60  # returns at once
    assert study_progress(out)["counts"]["pending"] == 0  # the fine-tuning job is queued (or already running)
    # the fine-tuning job waits for the pretraining job: afterok dependency
    fine_tune = str(claims.read(out / "runs" / "synth" / "mine-no-freeze" / "fold0")["job"])
    shown = cluster.run("scontrol", "show", "job", fine_tune.split("_")[0]).stdout
    assert "Dependency=afterok:" in shown or "JobState=RUNNING" in shown or "JobState=COMPLETED" in shown, shown
    collected = run_study(study, out)  # the same process: the claims it made belong to the jobs now
    logs = "".join(p.read_text() for p in (out / "slurm").glob("*/*.err"))
    assert collected.finished == 0 and collected.elsewhere == 1 and not collected.failed, (collected, logs[-3000:])
    assert (out / "sources" / "mine.pt").exists()
    assert len(pd.read_csv(out / "results" / "auc.csv")) == 1

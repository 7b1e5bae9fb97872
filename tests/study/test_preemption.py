"""Preemption as submitit simulates it (SIGTERM, then USR2) at any moment - during a checkpoint
write too - ends in a requeue and a resume, never FAILED, with the uninterrupted run's results.
Jobs run on submitit's local cluster (subprocesses it requeues); test_real_slurm.py does the
same on a real SLURM."""

import os
import random
import signal
import threading
import time

import pandas as pd
import pytest

from medtransfer.study import claims
from medtransfer.study.executors import SlurmExecutor
from medtransfer.study.runner import run_study

from .conftest import tiny_study


def _owner_pid(directory, not_pid=None, timeout=120.0):
    """The pid of the process that holds the run's claim (and has installed its signal handlers)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = claims.read(directory)
        if info and info.get("pid") and info["pid"] not in (os.getpid(), not_pid):
            return int(info["pid"])
        time.sleep(0.02)
    return None


def _wait_gone(pid, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def preempt(run, moments, log):
    """Send SIGTERM then USR2 to the run's owner at each moment: "write" (while a checkpoint's
    temporary file exists) or a delay in seconds after training started."""
    last = None
    for moment in moments:
        pid = _owner_pid(run, not_pid=last)
        if pid is None:
            return
        deadline = time.monotonic() + 120
        if moment == "write":
            while not list((run / "checkpoints").glob(".last.pt.*.tmp")) and time.monotonic() < deadline:
                time.sleep(0.001)
        else:
            while not (run / "history.csv").exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(moment)
        try:
            os.kill(pid, signal.SIGTERM)
            time.sleep(0.05)
            os.kill(pid, signal.SIGUSR2)
            log.append((moment, pid))
        except ProcessLookupError:
            return
        _wait_gone(pid)
        last = pid


@pytest.mark.slow
def test_preemption_during_a_write_and_at_a_random_moment_resumes(finished_study, tmp_path):
    _, reference = finished_study
    study = tiny_study(tmp_path, folds=[0])
    out = tmp_path / "study"
    run = out / "runs" / "synth" / "random-no-freeze" / "fold0"
    moments = ["write", random.Random(7).uniform(0.0, 2.0)]
    log = []
    signaller = threading.Thread(target=preempt, args=(run, moments, log), daemon=True)
    signaller.start()
    report = run_study(study, out, executor=SlurmExecutor(out / "slurm", cluster="local", timeout_min=60))
    signaller.join(timeout=5)
    assert not report.failed and report.finished == 1, report
    assert log and log[0][0] == "write", log  # at least the write was preempted
    assert not (run / "FAILED").exists()
    logs = "".join(p.read_text() for p in (out / "slurm").glob("*/*.err"))
    assert logs.count("this job is preempted") == len(log), logs[-3000:]
    assert logs.count("Bypassing signal SIGTERM") == len(log)
    got = pd.read_csv(out / "results" / "auc.csv")
    want = pd.read_csv(reference / "results" / "auc.csv")
    pd.testing.assert_frame_equal(got, want[want["fold"] == 0].reset_index(drop=True))


def test_signals_during_a_write_are_delivered_after_it(tmp_path):
    import torch

    from medtransfer.interrupts import deferred_signals
    from medtransfer.training.checkpoints import save_atomic

    got = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: got.append((signum, (tmp_path / "x.pt").exists())))
    try:
        with deferred_signals():
            os.kill(os.getpid(), signal.SIGUSR1)
            os.kill(os.getpid(), signal.SIGUSR1)
            time.sleep(0.01)
            assert got == []  # held back
            save_atomic({"w": torch.zeros(3)}, tmp_path / "x.pt")  # nested: a no-op inside
        assert got == [(signal.SIGUSR1, True)]  # delivered once, after the write
        assert signal.getsignal(signal.SIGUSR1) is not None and len(list(tmp_path.iterdir())) == 1
    finally:
        signal.signal(signal.SIGUSR1, previous)

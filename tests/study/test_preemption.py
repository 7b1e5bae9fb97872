"""Preemption (SIGTERM, then USR2, as submitit simulates it) at seeded random moments while the
run trains or writes a checkpoint ends in a requeue and a resume every time, never FAILED, with
the uninterrupted run's results: ten times on a real local Ray (the signals go to the worker),
five on submitit's local cluster (jobs are subprocesses it requeues; its controller starts a job
at most six times). test_real_slurm.py does it ten times on a real SLURM."""

import os
import signal
import time

import pytest

from medtransfer.study.executors import RayExecutor, SlurmExecutor
from medtransfer.study.runner import run_study

from .conftest import preemption_study
from .preempting import PREEMPTIONS, Preempter, seeded_moments

RUN = ("runs", "synth", "random-no-freeze", "fold0")
LOCAL_PREEMPTIONS = 5
COMPARED = ("results/auc.csv", "runs/synth/random-no-freeze/fold0/predictions.csv")


def _kill(owner):
    """SIGTERM, then USR2, to the process that holds the run's claim."""
    pid = int(owner["pid"])
    os.kill(pid, signal.SIGTERM)
    time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGUSR2)
    except ProcessLookupError:  # already gone: the SIGTERM alone stopped it
        pass


def _check(signaller, report, out, reference):
    n = len(signaller.moments)
    assert signaller.error is None, (signaller.error, signaller.summary())
    assert not report.failed and report.finished == 1, report
    assert len(signaller.sent) == n and len({s["owner"] for s in signaller.sent}) == n  # a new process each time
    assert any(s["landed"] == "write" for s in signaller.sent), signaller.summary()
    assert len(signaller.resumes) == n and all(r["resumed"] for r in signaller.resumes)
    assert not out.joinpath(*RUN, "FAILED").exists() and not out.joinpath(*RUN, "RUNNING").exists()
    for name in COMPARED:
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name


@pytest.mark.slow
def test_preemption_at_random_moments_on_submitit_local_jobs(preemption_reference, tmp_path, monkeypatch):
    monkeypatch.delenv("MEDTRANSFER_QUIET", raising=False)  # the jobs log each start and resume
    out = tmp_path / "study"
    # submitit's local controller starts a job at most 6 times (Controller.run(max_retry=6))
    signaller = Preempter(out.joinpath(*RUN), seeded_moments(3, n=LOCAL_PREEMPTIONS), _kill)
    signaller.start()
    executor = SlurmExecutor(out / "slurm", cluster="local", timeout_min=60)
    report = run_study(preemption_study(tmp_path), out, executor=executor)
    signaller.join(timeout=30)
    print(signaller.summary())
    _check(signaller, report, out, preemption_reference)
    logs = "".join(p.read_text() for p in (out / "slurm").glob("*/*_log.err"))  # submitit's warnings, run lines
    starts = "".join(p.read_text() for p in (out / "slurm").glob("*/*_log.out")).count("Starting with JobEnvironment")
    print(f"requeues logged: {logs.count('this job is preempted')}, job starts: {starts}")
    print("".join(line for line in logs.splitlines(keepends=True) if "ETA <=" not in line))  # shown on failure
    assert logs.count("this job is preempted") == LOCAL_PREEMPTIONS, logs[-3000:]
    assert logs.count(": resumed from its checkpoint after finetune epoch") == LOCAL_PREEMPTIONS and starts == LOCAL_PREEMPTIONS + 1


@pytest.mark.slow
def test_preemption_at_random_moments_on_ray(preemption_reference, tmp_path, monkeypatch, capfd):
    monkeypatch.delenv("MEDTRANSFER_QUIET", raising=False)  # the driver logs each requeue
    out = tmp_path / "study"
    signaller = Preempter(out.joinpath(*RUN), seeded_moments(2), _kill)
    signaller.start()
    ray = RayExecutor(cpus_per_run=1, num_cpus=2, include_dashboard=False, log_to_driver=False,
                      _node_ip_address="127.0.0.1")
    report = run_study(preemption_study(tmp_path), out, executor=ray)
    signaller.join(timeout=30)
    logged = capfd.readouterr().err
    with capfd.disabled():
        print(signaller.summary(), f"; requeues logged: {logged.count('preempted; requeued on Ray')}")
    _check(signaller, report, out, preemption_reference)
    assert logged.count("synth/random-no-freeze/fold0: preempted; requeued on Ray") == PREEMPTIONS, logged[-3000:]
    assert f"requeued on Ray ({PREEMPTIONS} so far)" in logged


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


def test_the_first_preemption_signal_stops_a_process_and_the_rest_are_ignored():
    import subprocess
    import sys

    code = """
import os, signal, sys, time
from medtransfer import interrupts
assert interrupts.stop_on_preemption() and not interrupts.preempting()
try:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)
    sys.exit("not stopped")
except interrupts.Preempted as stopped:
    assert interrupts.preempting() and stopped.code == 128 + signal.SIGTERM, stopped.code
os.kill(os.getpid(), signal.SIGUSR2)  # the rest of the same preemption: ignored, not a second stop
os.kill(os.getpid(), signal.SIGTERM)
time.sleep(0.05)
print("stopped once")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0 and done.stdout.strip() == "stopped once", done.stderr[-2000:]


def test_a_preemption_exit_swallowed_by_a_finalizer_still_stops_the_training_loop():
    """CPython drops an exception raised inside a finalizer; a preemption handler that ran there
    must still stop the run at its next step, before it changes any weight."""
    import subprocess
    import sys

    code = """
import gc, os, signal, sys
import torch
from medtransfer import interrupts
from medtransfer.models import Normalization
from medtransfer.training.loop import StepSetup, train_epoch

signal.signal(signal.SIGUSR2, interrupts.mark_preempting(lambda signum, frame: sys.exit(7)))
dropped = []
sys.unraisablehook = lambda unraisable: dropped.append(type(unraisable.exc_value).__name__)

class Finalized:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGUSR2)
        sum(i for i in range(100))  # Python code, where the handler runs

cycle = [Finalized()]
cycle.append(cycle)
del cycle
gc.collect()
assert dropped == ["SystemExit"] and interrupts.preempting(), dropped  # the handler's exit was lost

model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(2))
pixels = torch.zeros((8, 3, 8, 8), dtype=torch.uint8)
model(pixels.float())
before = [p.detach().clone() for p in model.parameters()]
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
try:
    train_epoch(model, optimizer, pixels, torch.arange(8) % 2, torch.arange(8), 4,
                StepSetup(Normalization("caffe"), None, None, False), torch.Generator().manual_seed(0), None)
    sys.exit("the loop trained on")
except SystemExit as stopped:
    assert stopped.code == 7, stopped.code
assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
print("stopped before the first step")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0 and done.stdout.strip() == "stopped before the first step", done.stderr[-2000:]

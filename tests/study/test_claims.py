"""One owner per run: claims are atomic across processes, a dead owner's claim is taken over,
a SLURM job's claim lives while squeue lists the job, and two drivers on one study directory
train each run once."""

import json
import os
import re
import socket
import stat
import subprocess
import sys
import time

import pandas as pd
import pytest

from medtransfer.study import claims
from medtransfer.study.store import run_status
from medtransfer.training.checkpoints import remove_stale_snapshots
from medtransfer.training.record import RunDir

from .conftest import tiny_study, write_yaml
from .fake_slurm import fake_slurm
from .held import release, start_held, wait_held

_CLAIM = """
import sys, time
from pathlib import Path
from medtransfer.study import claims
go = Path(sys.argv[2])
print("ready", flush=True)
while sys.argv[2] and not go.exists():  # every racer has imported: they all try at once
    time.sleep(0.001)
print(int(claims.claim(Path(sys.argv[1]))))
"""


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def _claim_in_subprocess(directory, go=""):
    return subprocess.Popen([sys.executable, "-c", _CLAIM, str(directory), str(go)], stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})


def test_a_live_claim_is_refused_a_dead_one_taken_over(tmp_path):
    run = tmp_path / "run"
    assert claims.claim(run)  # this process
    assert claims.claim(run)  # again: it is ours
    other = _claim_in_subprocess(run)
    assert other.communicate(timeout=60)[0].split() == ["ready", "0"]  # we are alive: refused
    assert claims.held_elsewhere(run) is False and run_status(run, "r").state == "running"
    claims.release(run)
    assert not (run / "RUNNING").exists()

    for dead in ({"host": socket.gethostname(), "pid": _dead_pid()},  # the pid is gone
                 {"host": socket.gethostname(), "pid": os.getpid(), "proc_start": "1"}):  # the pid was reused
        (run / "RUNNING").write_text(json.dumps({**dead, "token": "old"}))
        assert run_status(run, "r").state == "interrupted"
        assert claims.claim(run) and claims.read(run)["pid"] == os.getpid()
        claims.release(run)


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="reads process states from /proc")
def test_the_claim_of_an_ended_process_that_nobody_reaped_is_dead(tmp_path):
    """A zombie (ended, not yet reaped; for good in a container whose first process reaps
    nothing, as an orphaned worker there) owns nothing: its claim is taken over."""
    child = subprocess.Popen(["sleep", "0"])
    try:
        record = {"host": socket.gethostname(), "pid": child.pid, "proc_start": claims._proc_start(child.pid)}
        deadline = time.monotonic() + 60  # a hang guard: the child ends at once
        while (claims._proc_stat(child.pid) or ["Z"])[0] != "Z" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert claims._proc_stat(child.pid)[0] == "Z"  # ended, and still not reaped: Popen waits for nobody
        assert not claims.alive(record)
        run = tmp_path / "run"
        run.mkdir()
        (run / "RUNNING").write_text(json.dumps({**record, "token": "old"}))
        assert claims.claim(run) and claims.read(run)["pid"] == os.getpid()
        claims.release(run)
    finally:
        child.wait()


@pytest.mark.slow
def test_exactly_one_of_many_racing_processes_wins(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "RUNNING").write_text(json.dumps({"host": socket.gethostname(), "pid": _dead_pid(), "token": "old"}))
    go = tmp_path / "go"
    racers = [_claim_in_subprocess(run, go) for _ in range(3)]
    for racer in racers:
        assert racer.stdout.readline().strip() == "ready"
    go.touch()
    won = [int(p.communicate(timeout=60)[0]) for p in racers]
    assert sum(won) == 1, won
    assert claims.read(run)["token"] != "old"


def test_a_slurm_jobs_claim_lives_while_squeue_lists_it(tmp_path, monkeypatch):
    bin_dir = fake_slurm(tmp_path / "fake", queue="77_3|RUNNING|None")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    for name in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(name, raising=False)
    run = tmp_path / "run"
    run.mkdir()
    # a job on another node (the driver's pid long gone): alive because SLURM lists it
    (run / "RUNNING").write_text(json.dumps({"host": "node7", "pid": 1, "job": "77_3", "token": "job"}))
    assert claims.held_elsewhere(run) and not claims.claim(run)
    assert run_status(run, "r").state == "running"
    # the job itself (started, or requeued) takes over the claim made for it
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "77")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    monkeypatch.setenv("SLURM_JOB_ID", "80")
    assert claims.claim(run) and claims.read(run)["job"] == "77_3" and claims.read(run)["pid"] == os.getpid()
    claims.release(run)
    # a job SLURM no longer lists is dead
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID")
    (run / "RUNNING").write_text(json.dumps({"host": "node7", "pid": 1, "job": "78_0", "token": "gone"}))
    assert not claims.held_elsewhere(run) and run_status(run, "r").state == "interrupted"
    assert claims.claim(run)
    claims.release(run)


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640)])
def test_a_claim_is_readable_as_the_umask_allows(tmp_path, umask, mode):
    """A colleague's `medtransfer status` reads the claim of a running run (mkstemp alone makes 0600)."""
    previous = os.umask(umask)
    try:
        assert claims.claim(tmp_path / "run")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(RunDir(tmp_path / "run").running.stat().st_mode) == mode
    claims.release(tmp_path / "run")


def test_stale_snapshot_cleanup_spares_a_young_temp_file(tmp_path):
    run = RunDir(tmp_path)
    run.checkpoints.mkdir()
    young, old = run.checkpoints / ".last.pt.abc.tmp", run.checkpoints / ".last.pt.def.tmp"
    young.write_bytes(b"being written")
    old.write_bytes(b"left by a kill")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    remove_stale_snapshots(run, keep=None)
    assert young.exists() and not old.exists()


@pytest.mark.slow
def test_two_local_drivers_on_one_study_train_each_run_once(finished_study, tmp_path):
    """Two drivers at once on a study of two runs: each trains one, waits for the other's, and
    neither retrains a run. Each driver is held after its first checkpoint until both are (a held
    driver keeps its claim, so the other one trains the other run): they overlap however unevenly
    the machine starts them, instead of one finishing the study before the other looks."""
    _, reference = finished_study
    study_file = write_yaml(tmp_path / "study.yaml", tiny_study(tmp_path))
    out = tmp_path / "shared"
    barriers = [tmp_path / f"barrier{i}" for i in range(2)]
    drivers = [start_held(study_file, out, barrier, stdout=subprocess.PIPE) for barrier in barriers]
    try:
        held = [wait_held(driver, barrier, timeout_s=600) for driver, barrier in zip(drivers, barriers)]
        assert held[0] != held[1]
        for barrier in barriers:
            release(barrier)
        outputs = [tuple(part.decode() for part in d.communicate(timeout=1200)) for d in drivers]
    finally:
        for driver in drivers:
            if driver.poll() is None:
                driver.kill()
    assert [d.returncode for d in drivers] == [0, 0], [o[1][-2000:] for o in outputs]
    finished = [int(re.search(r"(\d+) finished now", o[0]).group(1)) for o in outputs]
    elsewhere = [int(re.search(r"(\d+) finished by another", o[0]).group(1)) for o in outputs]
    assert finished == [1, 1] and elsewhere == [1, 1], outputs
    assert not list(out.glob("runs/**/FAILED")) and not list(out.glob("runs/**/RUNNING"))
    for history in out.glob("runs/**/history.csv"):  # trained once: one row per epoch
        assert len(pd.read_csv(history)) == 2
    pd.testing.assert_frame_equal(pd.read_csv(out / "results" / "auc.csv"),
                                  pd.read_csv(reference / "results" / "auc.csv"))

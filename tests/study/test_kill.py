"""SIGKILL a running study at random moments, re-run it: it completes, finished runs are not
redone, and the metrics equal those of an uninterrupted run (CPU, same seed).

The moments are seeded fractions of the run's own measured epoch time, counted from when the
driver trains an epoch (``progress.json``): so a kill lands while work remains on a fast machine
and on a loaded one alike (the study has two runs of two epochs: at least two epochs remain)."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from medtransfer.study import claims
from medtransfer.training.progress import read_progress

from .conftest import tiny_study, write_yaml


def _start(study_file, out):
    env = {**os.environ, "MEDTRANSFER_QUIET": "1"}
    code = "from medtransfer.cli import main; main()"
    return subprocess.Popen([sys.executable, "-c", code, "run", str(study_file), "--out", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _seconds_per_epoch(out, since: float) -> float | None:
    """The epoch time of a run that a driver started after ``since`` (time.time()) trains, once
    it has timed an epoch (this incarnation's or one it resumed); else None."""
    for path in out.glob("runs/**/progress.json"):
        state = read_progress(path.parent) or {}
        speed = (state.get("seconds_per_epoch") or {}).get(state.get("phase"))
        if state.get("started", 0) > since and state.get("state") == "training" and speed:
            return float(speed)
    return None


@pytest.mark.slow
def test_sigkill_then_rerun_equals_uninterrupted(finished_study, tmp_path):
    _, reference = finished_study
    study = tiny_study(tmp_path)
    study_file = write_yaml(tmp_path / "study.yaml", study)
    out = tmp_path / "killed"
    rng = random.Random(1234)
    kills = 0
    done_stamps = {}
    for _ in range(2):
        launched = time.time()
        process = _start(study_file, out)
        deadline = time.monotonic() + 120
        while (epoch_s := _seconds_per_epoch(out, launched)) is None and process.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.0) * (epoch_s or 0.0))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
        for marker in out.glob("runs/**/DONE"):
            done_stamps.setdefault(marker, marker.stat().st_mtime_ns)
    assert kills >= 1
    final = _start(study_file, out)
    _, err = final.communicate(timeout=1200)
    assert final.returncode == 0, err.decode()[-2000:]
    for marker, stamp in done_stamps.items():
        assert marker.stat().st_mtime_ns == stamp, f"{marker} was redone"
    got = pd.read_csv(out / "results" / "auc.csv")
    want = pd.read_csv(reference / "results" / "auc.csv")
    pd.testing.assert_frame_equal(got, want)
    assert not list(out.glob("runs/**/RUNNING"))
    assert not list(out.glob("runs/**/checkpoints/last.pt"))


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name (state first), None when gone."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _children(pid: int) -> dict[int, str]:
    """The processes whose parent is ``pid``: pid -> start time (to tell a reused pid apart)."""
    found = {}
    for entry in Path("/proc").iterdir():
        fields = _proc_stat(int(entry.name)) if entry.name.isdigit() else None
        if fields is not None and int(fields[1]) == pid:
            found[int(entry.name)] = fields[19]
    return found


def _running(pid: int, start: str) -> bool:
    """Whether process ``pid`` started at ``start`` still runs (a zombie that nobody reaps does not)."""
    fields = _proc_stat(pid)
    return fields is not None and fields[19] == start and fields[0] not in "ZX"


def _training_workers(out, driver: int) -> dict:
    """Run directory -> pid of the worker process (a child of ``driver``) that trains it now."""
    owners = {}
    for path in out.glob("runs/**/RUNNING"):
        claim = claims.read(path.parent) or {}
        if (read_progress(path.parent) or {}).get("state") == "training" and claim.get("pid") not in (None, driver):
            owners[path.parent] = claim["pid"]
    return owners


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
def test_local_workers_end_with_a_sigkilled_driver_and_the_rerun_equals_uninterrupted(finished_study, tmp_path):
    """SIGKILL the driver while its two local workers train: the workers (and the driver's other
    children) end with it instead of training on, and a rerun takes over their runs and gives the
    numbers of an uninterrupted run."""
    _, reference = finished_study
    study = tiny_study(tmp_path, executor={"kind": "local", "workers": 2})
    study_file = write_yaml(tmp_path / "study.yaml", study)
    out = tmp_path / "killed"
    process = _start(study_file, out)
    deadline = time.monotonic() + 600  # a hang guard only: the test waits on the runs' own files
    while len(_training_workers(out, process.pid)) < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    workers = _training_workers(out, process.pid)
    children = _children(process.pid)
    assert process.poll() is None and len(set(workers.values())) == 2, process.stderr.read().decode()[-2000:]
    assert set(workers.values()) <= set(children)
    process.send_signal(signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + 120  # they end at once; generous for a loaded machine
    while any(_running(pid, start) for pid, start in children.items()) and time.monotonic() < deadline:
        time.sleep(0.05)
    survivors = [pid for pid, start in children.items() if _running(pid, start)]
    for pid in survivors:
        os.kill(pid, signal.SIGKILL)
    assert not survivors, f"processes of the killed driver still run: {survivors} (its workers: {workers})"
    done_stamps = {marker: marker.stat().st_mtime_ns for marker in out.glob("runs/**/DONE")}
    for path in out.glob("runs/**/RUNNING"):  # what a dead worker left: its owner must count as dead
        assert not claims.alive(claims.read(path.parent), path.parent), path

    final = _start(study_file, out)
    _, err = final.communicate(timeout=1200)
    assert final.returncode == 0, err.decode()[-2000:]
    for marker, stamp in done_stamps.items():
        assert marker.stat().st_mtime_ns == stamp, f"{marker} was redone"
    pd.testing.assert_frame_equal(pd.read_csv(out / "results" / "auc.csv"),
                                  pd.read_csv(reference / "results" / "auc.csv"))
    assert not list(out.glob("runs/**/RUNNING"))

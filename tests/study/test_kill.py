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

import pandas as pd
import pytest

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

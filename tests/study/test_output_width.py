"""Output to a file or a pipe is never cut: rich assumes 80 columns for anything that is not a
terminal (and COLUMNS may say less); `status`, `run`'s Table 2 and `similarity` print whole cells."""

import os
import shutil
import subprocess
import sys

import pytest

from medtransfer.study.expand import expand
from medtransfer.training.record import STUDY_FILE

ELLIPSIS = "…"


def _medtransfer(*args, timeout=600):
    env = {**os.environ, "COLUMNS": "50", "MEDTRANSFER_QUIET": "1"}
    done = subprocess.run([sys.executable, "-c", "from medtransfer.cli import main; main()", *args],
                          capture_output=True, text=True, env=env, timeout=timeout)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.slow
def test_status_and_table2_to_a_pipe_are_whole(finished_study, tmp_path):
    study, original = finished_study
    out = tmp_path / "study"
    shutil.copytree(original, out)  # `run` rewrites results/: not in the shared study
    status = _medtransfer("status", str(out), "--all")
    assert ELLIPSIS not in status
    for config in expand(study, out):
        assert config.run_id in status  # whole, on one line
    rerun = _medtransfer("run", str(out / STUDY_FILE), "--out", str(out))
    assert ELLIPSIS not in rerun and "2 already done" in rerun
    table2 = (out / "results" / "table2.md").read_text().strip().splitlines()
    assert all(line in rerun.splitlines() for line in table2 if line.strip())  # each line unfolded


@pytest.mark.slow
def test_similarity_table_to_a_pipe_is_whole():
    text = _medtransfer("similarity", "random", "random", "--target", "synthetic", "--size", "32", "--images", "12",
                        "--rows", "60", "--channels", "4", "--repeats", "2", "--layers", "conv1", "--resamples", "20",
                        "--permutations", "3", "--threads", "1", "--device", "cpu", "-o", "n_patients=6",
                        "-o", "images_per_patient=2", "-o", "size=32")
    assert ELLIPSIS not in text
    row = next(line for line in text.splitlines() if "conv1" in line and "cca" in line)
    # the same network twice: CCA exactly 1 in every repeat; each of the 7 cells whole on one line
    assert "1.000±0.000" in row and row.count("│") == 8 and "x4 " in row, row

"""Two worker processes under a terminal-style progress bar: each run line lands on a line of its
own, never glued to the bar (the workers send their lines to the parent, which prints them above
the bar)."""

import os
import re
import subprocess
import sys

import pytest

from .conftest import tiny_study, write_yaml

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.mark.slow
def test_worker_lines_are_never_glued_to_the_progress_bar(tmp_path):
    study = tiny_study(tmp_path, executor={"kind": "local", "workers": 2}, training={"epochs": 1})
    study_file = write_yaml(tmp_path / "study.yaml", study)
    # a terminal as far as rich is concerned, so that the bar is drawn
    env = {**os.environ, "MEDTRANSFER_PROGRESS": "1", "TTY_COMPATIBLE": "1", "COLUMNS": "100"}
    env.pop("MEDTRANSFER_QUIET", None)
    done = subprocess.run([sys.executable, "-c", "from medtransfer.cli import main; main()", "run", str(study_file),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    pieces = re.split(r"[\r\n]", ANSI.sub("", done.stderr))
    assert any("finished," in p and "elapsed" in p and "━" in p for p in pieces), "no progress bar drawn"
    runs = [p for p in pieces if "synth/random-no-freeze/fold" in p]
    assert any(p.endswith("started") for p in runs) and any("finished, test AUC" in p for p in runs), runs
    assert all(p.startswith("synth/random-no-freeze/fold") for p in runs), [p for p in runs if not p.startswith("synth/")]

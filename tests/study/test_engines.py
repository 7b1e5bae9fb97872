"""Results that do not depend on the engine: the study pins torch's CPU thread count, so a run
under Ray's ``OMP_NUM_THREADS=1`` computes what a local run computes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from medtransfer.study.config import ExecutorSpec
from medtransfer.study.executors import MAX_PINNED_THREADS, Task, pin_threads
from medtransfer.study.expand import expand
from medtransfer.study.store import run_dir

from .conftest import tiny_study


def test_a_study_without_threads_gets_one_pinned_and_keeps_it(tmp_path):
    study = tiny_study(tmp_path)
    study = study.model_copy(update={"training": {k: v for k, v in study.training.items() if k != "threads"}})
    pinned = pin_threads(study, tmp_path / "out")
    assert pinned.training["threads"] == min(torch.get_num_threads(), MAX_PINNED_THREADS)
    assert all(c.threads == pinned.training["threads"] for c in expand(pinned, tmp_path / "out"))
    # a rerun keeps the count recorded in study.resolved.yaml, whatever this machine's default
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "study.resolved.yaml").write_text(pinned.model_copy(
        update={"training": {**pinned.training, "threads": 3}}).to_yaml())
    assert pin_threads(study, tmp_path / "out").training["threads"] == 3
    # an explicit setting wins
    assert pin_threads(tiny_study(tmp_path), tmp_path / "out").training["threads"] == 1


def test_cpus_per_run_default_to_the_pinned_threads(tmp_path):
    slurm = ExecutorSpec(kind="slurm", slurm={"cluster": "debug"}).build(tmp_path, threads=3)
    assert slurm.parameters["cpus_per_task"] == 3
    explicit = ExecutorSpec(kind="slurm", slurm={"cluster": "debug", "cpus_per_task": 5}).build(tmp_path, threads=3)
    assert explicit.parameters["cpus_per_task"] == 5
    assert ExecutorSpec(kind="ray").build(tmp_path, threads=3).cpus_per_run == 3


_RUN = """
import sys
from medtransfer.study.executors import Task, execute_task
task = Task(sys.argv[1], open(sys.argv[2]).read(), sys.argv[3])
outcome = execute_task(task)
assert outcome.state == "done", outcome
"""


def _run_in_subprocess(task: Task, directory: Path, omp: str) -> bytes:
    config_file = directory.parent / f"{directory.name}.json"
    config_file.write_text(task.config_json)
    env = {**os.environ, "OMP_NUM_THREADS": omp}
    subprocess.run([sys.executable, "-c", _RUN, task.run_id, str(config_file), str(directory)], env=env,
                   check=True, timeout=1200)
    assert json.loads((directory / "metrics.json").read_text())["threads"] == 2  # recorded in the run
    return (directory / "predictions.csv").read_bytes()


@pytest.mark.slow
def test_pinned_threads_give_identical_predictions_under_omp_num_threads_1(tmp_path):
    study = tiny_study(tmp_path, folds=[0], strategies=["no-freeze"], training={"epochs": 1, "threads": 2})
    (config,) = expand(study, tmp_path / "study")
    config = config.model_copy(update={"folds_file": None})
    got = {}
    for omp in ("1", "2"):  # Ray's worker environment, and a local one
        directory = tmp_path / f"omp{omp}"
        got[omp] = _run_in_subprocess(Task.make(config, directory), directory, omp)
    assert got["1"] == got["2"]
    assert json.loads((tmp_path / "omp1" / "config.json").read_text())["threads"] == 2

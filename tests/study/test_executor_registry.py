"""The executor registry: study.config.EXECUTORS owns the names, the config section builds them."""

import importlib

import pytest
import typer

from medtransfer.cli import app
from medtransfer.errors import ConfigError
from medtransfer.study.config import EXECUTORS, ExecutorSpec, StudyConfig
from tests.study.conftest import tiny_study


@pytest.mark.parametrize("kind", list(EXECUTORS))
def test_each_registered_executor_is_a_class_of_that_name(kind):
    module, _, name = EXECUTORS[kind].partition(":")
    cls = getattr(importlib.import_module(f"medtransfer.study.{module}"), name)
    assert cls.name == kind and callable(cls.from_spec) and callable(cls.run)


def test_the_section_builds_the_executor_it_names(tmp_path):
    local = ExecutorSpec(kind="local", devices=["cpu"], workers=2).build(tmp_path, threads=1)
    assert local.name == "local" and local.slots() == ["cpu", "cpu"]
    slurm = ExecutorSpec(kind="slurm", slurm={"cluster": "debug", "poll_s": 0.5}).build(tmp_path, threads=3)
    assert slurm.name == "slurm" and slurm.cluster == "debug" and slurm.poll_s == 0.5
    assert slurm.parameters["cpus_per_task"] == 3 and slurm.folder == tmp_path / "slurm"
    ray = ExecutorSpec(kind="ray", ray_address="ray://head:10001", gpus_per_run=0).build(tmp_path, threads=4)
    assert (ray.name, ray.address, ray.gpus_per_run, ray.cpus_per_run) == ("ray", "ray://head:10001", 0, 4)


def test_an_unknown_executor_is_refused_naming_the_registered_ones(tmp_path):
    with pytest.raises(ConfigError, match=r"executor\.kind: unknown executor 'kubernetes': expected one of "
                                          + ", ".join(EXECUTORS)):
        StudyConfig.parse({**tiny_study(tmp_path).model_dump(mode="json"), "executor": {"kind": "kubernetes"}})


def test_the_executor_option_names_every_registered_executor():
    """``medtransfer run --executor``'s help is built from the registry, so a new executor shows."""
    run = typer.main.get_command(app).commands["run"]
    (option,) = [p for p in run.params if p.name == "executor"]
    assert all(kind in option.help for kind in EXECUTORS), option.help

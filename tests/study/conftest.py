"""A tiny study on the synthetic dataset (32 px, 32 images, 2 runs of 2 epochs, one thread),
run once per test session and shared by the tests that only read it."""

import os

import pytest
import yaml

from medtransfer.study.config import StudyConfig

TINY = {
    "name": "tiny",
    "targets": [{"name": "synth", "dataset": "synthetic",
                 "options": {"n_patients": 16, "images_per_patient": 2, "size": 32},
                 "size": 32, "batch_size": 8}],
    "sources": [{"name": "random"}],
    "strategies": ["no-freeze", "freeze"],
    "k_folds": 4,
    "folds": [0, 1],
    "training": {"epochs": 2, "lr": 1e-4, "threads": 1, "checkpoint_every_s": 0,
                 "split_fractions": [0.75, 0.1, 0.15]},
}


def tiny_study(tmp_path, **overrides) -> StudyConfig:
    data = {**TINY, **overrides}
    data["training"] = {**TINY["training"], "cache_dir": str(tmp_path / "cache"), **overrides.get("training", {})}
    return StudyConfig.parse(data)


def write_yaml(path, study: StudyConfig):
    path.write_text(study.to_yaml())
    return path


@pytest.fixture(scope="session")
def finished_study(tmp_path_factory):
    """The tiny study, run to the end in this process: (study, out directory)."""
    from medtransfer.study.runner import run_study

    base = tmp_path_factory.mktemp("finished")
    study = tiny_study(base)
    previous = os.umask(0o022)  # the common default: the umask test reads every file's mode
    try:
        report = run_study(study, base / "study")
    finally:
        os.umask(previous)
    assert report.total == 2 and report.finished == 2 and not report.failed
    return study, base / "study"


@pytest.fixture
def yaml_dump():
    return yaml.safe_dump


def preemption_study(tmp_path, **overrides) -> StudyConfig:
    """The one run (fold 0) that the preemption tests preempt, with an epoch to lose per signal."""
    from .preempting import EPOCHS

    return tiny_study(tmp_path, folds=[0], training={"epochs": EPOCHS}, **overrides)


@pytest.fixture(scope="session")
def preemption_reference(tmp_path_factory):
    """:func:`preemption_study` run to the end in this process, never interrupted: its out directory."""
    from medtransfer.study.runner import run_study

    base = tmp_path_factory.mktemp("preemption-reference")
    report = run_study(preemption_study(base), base / "study")
    assert report.total == 1 and report.finished == 1 and not report.failed
    return base / "study"

"""Evaluations of a study's finished runs without retraining (``medtransfer evaluate STUDY``).

Each run of the study's grid that has finished gets ``corruptions/{name}.csv`` for every named
corruption it lacks, and ``transfer/{name}.csv`` for each of the study's ``evaluate.targets`` (:func:`medtransfer.training.robustness.evaluate_corruptions`: written and
sealed one file at a time, so a killed evaluation resumes where it stopped). Unfinished and damaged
runs are named and left alone (``run`` finishes or recomputes them; evaluate again afterwards).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from medtransfer.console import track
from medtransfer.data import load_manifest
from medtransfer.data.corruptions import parse_names
from medtransfer.errors import ConfigError
from medtransfer.study.expand import expand
from medtransfer.study.store import read_study_file
from medtransfer.training.record import DamagedRunError, RunDir
from medtransfer.training.robustness import evaluate_corruptions, evaluate_on_dataset

__all__ = ["EvaluateReport", "evaluate_study"]


@dataclass
class EvaluateReport:
    """What :func:`evaluate_study` did: ``runs`` in the grid, ``files`` written now, and the run ids
    left out (``unfinished``; ``damaged`` with the problem)."""

    runs: int = 0
    files: int = 0
    evaluated: list[str] = field(default_factory=list)
    unfinished: list[str] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)


def evaluate_study(out: str | Path, corruptions: Sequence[str] | str | None = None,
                   device: str | None = None) -> EvaluateReport:
    """Evaluate every finished run of the study in ``out`` under ``corruptions`` ("all", names;
    default: the study's ``evaluate.corruptions``) and on the study's ``evaluate.targets`` (other
    datasets, :func:`medtransfer.training.robustness.evaluate_on_dataset`), on ``device``
    (default: each run's own setting).

    Raises:
        ConfigError: ``out`` is no study directory, or there is nothing to evaluate.
        DataError: an ``evaluate.targets`` dataset cannot be loaded.
    """
    out = Path(out)
    study = read_study_file(out)
    names = parse_names(corruptions) if corruptions else list(study.evaluate.corruptions)
    others = study.evaluate.targets
    if not names and not others:
        raise ConfigError(f"{out}: nothing to evaluate; give --corruptions all (or names), or "
                          "evaluate: {corruptions: all} or evaluate: {targets: [...]} in the study file")
    manifests = {spec.name: load_manifest(spec.manifest_name, spec.root, **spec.options) for spec in others}
    report = EvaluateReport()
    configs = expand(study, out)
    report.runs = len(configs)
    for config in track(configs, "evaluating", total=len(configs)):
        run = RunDir.in_study(out, config)
        if not run.is_done():
            report.unfinished.append(config.run_id)
            continue
        written = 0
        try:
            if names:
                written += len(evaluate_corruptions(run, names, device=device))
            for spec in others:
                if spec.networks is None or config.target_label.split("@")[0] in spec.networks:
                    written += evaluate_on_dataset(run, spec.name, manifests[spec.name], spec.classes, device=device)
        except DamagedRunError as error:
            report.damaged.append(f"{config.run_id}: {'; '.join(error.problems)}")
            continue
        report.files += written
        if written:
            report.evaluated.append(config.run_id)
    return report

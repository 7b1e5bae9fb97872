"""Sources a study makes itself: a short training run from random init on another task,
saved as a medtransfer checkpoint ``DIR/sources/{name}.pt`` that ``load_source`` reads, sealed
with its digest (``{name}.pt.sha256.json``): a damaged source is made again by ``run`` and
refused by ``analyze``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from medtransfer.study.config import EXECUTION_FIELDS, SourceSpec
from medtransfer.training.config import RunConfig
from medtransfer.training.record import (RunDir, pretrain_run_dir, seal_file, sealed_file_problem,
                                         study_source_file)
from medtransfer.vocabulary import NO_FREEZE, PRETRAIN_PREFIX, RANDOM


def pretrain_config(spec: SourceSpec, execution: dict[str, Any]) -> RunConfig:
    """The run that makes source ``spec``: no-freeze from random init, fold 0, no early stop."""
    p = spec.pretrain
    values = {key: execution[key] for key in EXECUTION_FIELDS if key in execution}
    values.update(p.training)
    values.update(target=p.dataset, root=p.root, target_options=dict(p.options),
                  source=RANDOM if spec.backbone in (None, "resnet50") else f"{RANDOM}@{spec.backbone}",
                  source_name=f"{PRETRAIN_PREFIX}{spec.name}", strategy=NO_FREEZE, size=p.size,
                  batch_size=p.batch_size, epochs=p.epochs, lr=p.lr, seed=p.seed,
                  patience=values.get("patience", p.epochs))
    return RunConfig.parse(values, where=f"source {spec.name}: pretrain")


def source_file(out: Path, name: str) -> Path:
    """Where the study keeps the source it pretrained: ``DIR/sources/{name}.pt``."""
    return Path(out) / study_source_file(name)


def source_run_dir(spec: SourceSpec, out: Path) -> Path:
    """The run directory of the pretraining run that makes ``spec``."""
    return Path(out) / pretrain_run_dir(spec.name)


def publish_source(run_dir: Path, target: Path) -> bool:
    """Whether source file ``target`` is there intact, after moving a finished pretraining run's
    ``best.pt`` to it (and sealing it). A damaged ``target`` is deleted with its run, to be made
    again."""
    run = RunDir(Path(run_dir))
    if target.exists():
        if sealed_file_problem(target) is None:
            return True
        target.unlink()
        run.clear()
        return False
    best = run.best
    if run.is_done() and best.exists():
        os.replace(best, target)  # the run is DONE: its best.pt moves
        seal_file(target)
    return target.exists()

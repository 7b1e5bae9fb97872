"""Sources a study makes itself: a short training run from random init on another task,
saved as a medtransfer checkpoint ``DIR/sources/{name}.pt`` that ``load_source`` reads."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from medtransfer.study.config import SourceSpec
from medtransfer.training.config import RunConfig

# execution settings of the study that its pretraining runs share
EXECUTION_FIELDS = ("device", "amp", "channels_last", "compile", "threads", "deterministic", "cache_dir", "checkpoint_every_s")


def pretrain_config(spec: SourceSpec, execution: dict[str, Any]) -> RunConfig:
    """The run that makes source ``spec``: no-freeze from random init, fold 0, no early stop."""
    p = spec.pretrain
    values = {key: execution[key] for key in EXECUTION_FIELDS if key in execution}
    values.update(p.training)
    values.update(target=p.dataset, root=p.root, target_options=dict(p.options), source="random",
                  source_name=f"pretrain-{spec.name}", strategy="no-freeze", size=p.size,
                  batch_size=p.batch_size, epochs=p.epochs, lr=p.lr, seed=p.seed,
                  patience=values.get("patience", p.epochs))
    return RunConfig.parse(values, where=f"source {spec.name}: pretrain")


def source_file(spec: SourceSpec, out: Path) -> Path:
    """Where the study's pretrained source ``spec`` is saved: ``out/sources/{name}.pt``."""
    return Path(out) / "sources" / f"{spec.name}.pt"


def source_run_dir(spec: SourceSpec, out: Path) -> Path:
    """The run directory of the pretraining run that makes ``spec``."""
    return Path(out) / "sources" / f"{spec.name}-run"


def publish_source(run_dir: Path, target: Path) -> bool:
    """Move a finished pretraining run's ``best.pt`` to ``target`` (idempotent); whether it is there."""
    best = Path(run_dir) / "checkpoints" / "best.pt"
    if not target.exists() and (Path(run_dir) / "DONE").exists() and best.exists():
        os.replace(best, target)
    return target.exists()


def pretrain_source(spec: SourceSpec, out: Path, execution: dict[str, Any]) -> Path:
    """Make ``out/sources/{name}.pt`` unless it exists (resuming an interrupted pretraining run)."""
    from medtransfer.training.run import train_run

    target = Path(out) / "sources" / f"{spec.name}.pt"
    if target.exists():
        return target
    run_dir = Path(out) / "sources" / f"{spec.name}-run"
    train_run(pretrain_config(spec, execution), run_dir)
    os.replace(run_dir / "checkpoints" / "best.pt", target)  # the run is DONE: its best.pt moves
    return target

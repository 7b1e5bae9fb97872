"""Resumable training state: ``checkpoints/last.pt`` and the best-weights snapshot it names.

``last.pt`` holds everything needed to continue a run exactly: phase, epochs done, model and
optimizer state, early-stopping state, history so far, and the RNG states (global torch, CUDA,
shuffle and augmentation generators). The best weights of the phase live in a separate snapshot
file ``best.{phase}.{epoch}.pt`` written *before* ``last.pt`` that names it, so a kill at any
moment leaves a consistent pair. Every file is written atomically (temp file + rename).

Only tensors and plain data (dicts, lists, strings, numbers) go into these files, so they are read
back with ``torch.load(weights_only=True)``: a crafted ``last.pt`` in a copied study directory is
refused, never unpickled.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from medtransfer.atomic import temp_files, write_atomic
from medtransfer.errors import MedtransferError, WeightsError
from medtransfer.interrupts import deferred_signals
from medtransfer.models.safe_load import load_tensors
from medtransfer.training.record import SNAPSHOT_GLOB, RunDir  # the run directory's layout

TEMP_STALE_S = 300.0  # a temporary checkpoint file older than this has no live writer


def save_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename over ``path``.

    Safe against a killed process at any moment (the rename is atomic); no fsync, since these
    files are rewritten often and a lost one after a power cut only costs a restart.
    """
    with deferred_signals():  # a preemption signal lands after the write, not inside torch.save
        write_atomic(path, lambda handle: torch.save(obj, handle))


def cpu_state(module_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A detached CPU copy of a state dict."""
    return {name: t.detach().to("cpu", copy=True) for name, t in module_state.items()}


@dataclass
class BestSnapshot:
    """The best weights of the phase so far: a CPU ``state`` (``None`` before the first epoch that
    improved), the snapshot ``file`` under ``checkpoints/`` that holds them (``None`` until
    written), and whether they changed since (``dirty``)."""

    state: dict[str, torch.Tensor] | None = None
    file: str | None = None
    dirty: bool = False

    def take(self, model: torch.nn.Module) -> None:
        """Keep a copy of ``model``'s weights as the new best."""
        self.state = cpu_state(model.state_dict())
        self.dirty = True


def write_checkpoint(run: RunDir, state: dict[str, Any], best: BestSnapshot) -> None:
    """Write the best snapshot (if it changed) and then ``last.pt``; remove stale snapshots.

    ``state`` must not hold the best weights; its ``best_file`` entry is set here, and ``best``
    records the snapshot file now referenced. A preemption signal that arrives meanwhile lands
    after both writes: between them it would lose the epoch being saved.
    """
    with deferred_signals():
        if best.state is not None and (best.dirty or best.file is None or not run.snapshot(best.file).exists()):
            best.file = run.snapshot_name(state["phase"], state["epoch"])
            save_atomic(best.state, run.snapshot(best.file))
        best.dirty = False
        save_atomic(dict(state, best_file=best.file), run.last)
    remove_stale_snapshots(run, keep=best.file)


def remove_stale_snapshots(run: RunDir, keep: str | None) -> None:
    """Delete best snapshots other than ``keep`` (left over from a kill between two writes), and
    temporary files under ``checkpoints/`` that no live writer is filling."""
    for path in run.snapshots():
        if path.name != keep:
            path.unlink(missing_ok=True)
    for path in temp_files(run.checkpoints):
        try:  # a young temp file may be another writer's, still being filled: only old ones are stale
            if time.time() - path.stat().st_mtime > TEMP_STALE_S:
                path.unlink(missing_ok=True)
        except FileNotFoundError:
            pass


def read_checkpoint(run: RunDir) -> tuple[dict[str, Any], BestSnapshot] | None:
    """``(state, best snapshot)`` from ``last.pt`` and the snapshot it names, or None when there is none.

    Both files are read with ``torch.load(weights_only=True)`` (tensors and plain data only: a
    file that holds other pickled objects is refused before any of it runs) and checked to have
    the layout :func:`write_checkpoint` gives them.

    Raises:
        MedtransferError: naming the file that cannot be resumed from, and how to restart the run.
    """
    path = run.last
    if not path.exists():
        return None
    try:
        state = load_tensors(path, "checkpoint")
        _check_state(state)
        best = None
        if state.get("best_file"):
            snapshot = run.snapshot(state["best_file"])
            best = load_tensors(snapshot, "best-weights snapshot")
            if not _is_state_dict(best):
                raise WeightsError(f"best-weights snapshot {snapshot} does not hold a state dict (names to tensors)")
    except (WeightsError, _LayoutError) as error:
        raise MedtransferError(f"{path}: cannot resume from this checkpoint ({error}); delete "
                               f"{run.checkpoints} to restart the run") from None
    remove_stale_snapshots(run, keep=state.get("best_file"))
    return state, BestSnapshot(best, state.get("best_file") if best is not None else None)


class _LayoutError(ValueError):
    """``last.pt`` read safely, but not laid out as :func:`write_checkpoint` writes it."""


def _is_state_dict(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())


# what write_checkpoint stores, by key: the types each value may have
_LAYOUT: dict[str, tuple[type, ...]] = {"phase": (str,), "epoch": (int,), "model": (dict,),
                                        "optimizer": (dict, type(None)), "stopper": (dict, type(None)),
                                        "history": (list,), "rng": (dict,), "best_file": (str, type(None))}


def _check_state(state: Any) -> None:
    if not isinstance(state, dict):
        raise _LayoutError(f"expected a mapping, found {type(state).__name__}")
    for key, types in _LAYOUT.items():
        if key not in state:
            raise _LayoutError(f"no {key!r} entry")
        if not isinstance(state[key], types) or isinstance(state[key], bool):
            raise _LayoutError(f"{key!r} is a {type(state[key]).__name__}")
    if not _is_state_dict(state["model"]):
        raise _LayoutError("'model' is not a state dict (names to tensors)")
    best_file = state["best_file"]
    if best_file is not None and (Path(best_file).name != best_file or not Path(best_file).match(SNAPSHOT_GLOB)):
        raise _LayoutError(f"'best_file' {best_file!r} is not a snapshot name of checkpoints/ ({SNAPSHOT_GLOB})")
    if not all(isinstance(row, dict) for row in state["history"]):
        raise _LayoutError("'history' is not a list of rows")


def rng_states(shuffle: torch.Generator, augment: torch.Generator | None) -> dict[str, Any]:
    """Every random state a run draws from."""
    states = {"torch": torch.get_rng_state(), "shuffle": shuffle.get_state(),
              "augment": augment.get_state() if augment is not None else None}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng(states: dict[str, Any], shuffle: torch.Generator, augment: torch.Generator | None) -> None:
    """Undo :func:`rng_states`."""
    torch.set_rng_state(states["torch"])
    shuffle.set_state(states["shuffle"])
    if augment is not None and states.get("augment") is not None:
        augment.set_state(states["augment"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])

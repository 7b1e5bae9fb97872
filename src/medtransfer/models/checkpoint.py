"""medtransfer checkpoints: a backbone's weights plus metadata, written atomically.

File layout (``torch.save`` of a dict, readable with ``torch.load(weights_only=True)``)::

    {"format": "medtransfer-checkpoint", "version": 1, "backbone": "resnet50", "num_classes": k | None,
     "dropout": float, "state_dict": {...}, "meta": {...}}

``backbone`` is a registry name (:mod:`medtransfer.models.registry`); files without it hold a ResNet50.

``meta`` holds at least ``normalization`` (a mode string) and ``classes`` (list of class names);
a training run also records ``size`` (the side in pixels it was trained at) and ``interpolation``,
which :func:`checkpoint_meta` reads back (e.g. for ``medtransfer similarity``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medtransfer.atomic import write_atomic
from medtransfer.errors import WeightsError
from medtransfer.models import registry
from medtransfer.models.normalization import Normalization
from medtransfer.models.registry import backbone_of
from medtransfer.models.report import check_finite_state
from medtransfer.models.safe_load import UnsafeFileError, load_tensors

FORMAT = "medtransfer-checkpoint"
VERSION = 1


def plain_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """``meta`` checked to hold ``normalization`` and ``classes``, with both as plain strings."""
    if not isinstance(meta, dict):
        raise WeightsError(f"checkpoint meta must be a dict, got {type(meta).__name__}")
    missing = [key for key in ("normalization", "classes") if key not in meta]
    if missing:
        raise WeightsError(f"checkpoint meta lacks {', '.join(missing)}: it must hold 'normalization' and 'classes'")
    plain = dict(meta)
    plain["normalization"] = str(Normalization.coerce(meta["normalization"]))
    plain["classes"] = [str(c) for c in meta["classes"]]
    return plain


def save_checkpoint(path: str | os.PathLike, model: nn.Module, meta: dict[str, Any]) -> Path:
    """Write ``model`` (weights on the CPU) and ``meta`` to ``path`` atomically (temp file + rename).

    ``meta`` must hold ``normalization`` (mode string or :class:`Normalization`) and ``classes``
    (``[]`` for a backbone without head); other values should be plain Python data (str, int,
    float, bool, lists, dicts). Returns the path written.
    """
    path = Path(path)
    plain = plain_meta(meta)
    k = model.num_classes
    if k is not None and plain["classes"] and len(plain["classes"]) != k:
        raise WeightsError(
            f"checkpoint {path}: meta lists {len(plain['classes'])} classes but the head has {k} outputs"
        )

    payload = {
        "format": FORMAT,
        "version": VERSION,
        "backbone": backbone_of(model),
        "num_classes": k,
        "dropout": float(model.dropout),
        "state_dict": {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()},
        "meta": plain,
    }
    return write_atomic(path, lambda handle: torch.save(payload, handle), fsync=True)


def _payload(path: str | os.PathLike) -> dict[str, Any] | None:
    """The payload of a file medtransfer's :func:`save_checkpoint` wrote, None for other files.

    Raises:
        UnsafeFileError: the file holds pickled Python objects (never unpickled).
    """
    try:
        payload = load_tensors(path, mmap=True)
    except UnsafeFileError:
        raise
    except WeightsError:
        return None
    return payload if isinstance(payload, dict) and payload.get("format") == FORMAT else None


def is_checkpoint(path: str | os.PathLike) -> bool:
    """True when ``path`` is a file medtransfer's :func:`save_checkpoint` wrote (UnsafeFileError:
    a file of pickled Python objects, never unpickled)."""
    return _payload(path) is not None


def checkpoint_meta(path: str | os.PathLike) -> dict[str, Any] | None:
    """The ``meta`` of a medtransfer checkpoint (without building the model), None for other files
    (UnsafeFileError: a file of pickled Python objects, never unpickled)."""
    payload = _payload(path)
    return dict(payload["meta"]) if payload is not None and isinstance(payload.get("meta"), dict) else None


def read_payload(path: str | os.PathLike, file_format: str, version: int, what: str,
                 map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The dict a medtransfer file holds, checked for its ``format`` marker and ``version``.

    ``what`` names the kind of file in the errors (``checkpoint``, ``probe``).
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{what} {path} " + ("is a folder; expected a file" if path.is_dir() else "does not exist"))
    payload = load_tensors(path, what, map_location)
    if not isinstance(payload, dict) or payload.get("format") != file_format:
        raise WeightsError(f"{path} is not a medtransfer {what} (no format={file_format!r} marker)")
    if payload.get("version") != version:
        raise WeightsError(f"{what} {path} has version {payload.get('version')!r}, expected {version}")
    return payload


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Read a checkpoint written by :func:`save_checkpoint`: ``(model in eval mode, meta)``.

    The model is the backbone the file records (ResNet50 for files that record none).
    """
    path = Path(path)
    payload = read_payload(path, FORMAT, VERSION, "checkpoint", map_location)
    try:
        spec = registry.get(payload.get("backbone", "resnet50"))
    except Exception as error:
        raise WeightsError(f"checkpoint {path}: {error}") from error
    model = spec.create(num_classes=payload["num_classes"], dropout=payload.get("dropout", 0.5))
    expected = model.state_dict()
    state = payload["state_dict"]
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise WeightsError(
            f"checkpoint {path} does not match {spec.keras_name}(num_classes={payload['num_classes']}): "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise WeightsError(
                f"checkpoint {path}: {name} has shape {tuple(tensor.shape)}, expected {tuple(expected[name].shape)}"
            )
    check_finite_state(state, f"checkpoint {path}")
    model.load_state_dict(state)
    model.to(map_location)
    model.eval()
    return model, dict(payload["meta"])

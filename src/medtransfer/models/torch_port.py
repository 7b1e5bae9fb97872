"""PyTorch ports of the Keras backbones: export (``.pth`` with a digest) and load, e.g.
``RadImageNet-ResNet50_notop.pth``.

medtransfer's own port (:func:`export_port`) is ``torch.save`` of a dict readable with
``torch.load(weights_only=True)``::

    {"format": "medtransfer-port", "version": 1, "backbone": "densenet121", "keras_name": "DenseNet121",
     "normalization": "torch", "input_size": 224, "sha256": "<state digest>", "origin": "...",
     "state_dict": {...}}   # keys as the backbone's state_dict(): model.load_state_dict(d["state_dict"])

``sha256`` is the content digest of ``state_dict`` (per-tensor name, dtype, shape and bytes); it is
checked on import, so a damaged or edited file is refused.

The port (Warvito/radimagenet-models) is the Keras "v1" layout with conv biases under
torchvision-like names: ``conv1``, ``bn1``, ``layer{1..4}.{i}.{conv,bn}{1,2,3}`` and the shortcut
``layer{L}.0.downsample.{0,1}``, optionally ``fc`` for a head. A plain ``state_dict`` of
medtransfer's own :class:`~medtransfer.models.ResNet50` is accepted as well. A ``{"state_dict": ...}``
wrapper and a ``module.`` prefix (DataParallel) are unwrapped.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medtransfer.atomic import write_atomic
from medtransfer.errors import ConfigError, MedtransferError, WeightsError
from medtransfer.models import registry
from medtransfer.models.digests import state_digest
from medtransfer.models.normalization import Normalization
from medtransfer.models.report import LoadReport, check_finite_state, copy_state_
from medtransfer.models.resnet import ResNet50
from medtransfer.models.safe_load import UnsafeFileError, load_tensors

PORT_FORMAT = "medtransfer-port"
PORT_VERSION = 1

_LAYER = re.compile(r"^layer([1-4])\.(\d+)\.(.+)$")
_SUB = {"downsample.0": "conv0", "downsample.1": "bn0"}


def port_key(key: str) -> str | None:
    """medtransfer's state-dict key for a port's key, or ``None`` for keys outside a ResNet50."""
    if key.startswith(("conv1.", "bn1.", "blocks.", "head.")):
        return key
    if key.startswith("fc."):
        return "head.1." + key[3:]
    match = _LAYER.match(key)
    if not match:
        return None
    stage, index, rest = int(match.group(1)) + 1, int(match.group(2)) + 1, match.group(3)
    for old, new in _SUB.items():
        if rest.startswith(old + "."):
            rest = new + rest[len(old):]
    return f"blocks.conv{stage}_block{index}.{rest}"


def export_port(path: str | os.PathLike, model: nn.Module, *, normalization: str | None = None,
                origin: str = "") -> tuple[Path, str]:
    """Write ``model``'s backbone (no head) as a medtransfer port ``.pth``, atomically.

    Returns ``(path, sha256)``; ``normalization`` defaults to the backbone's Keras preprocessing.
    """
    spec = registry.get(registry.backbone_of(model))
    state = {k: t.detach().cpu().contiguous() for k, t in model.state_dict().items() if not k.startswith("head.")}
    digest = state_digest(state)
    payload = {
        "format": PORT_FORMAT, "version": PORT_VERSION, "backbone": spec.name, "keras_name": spec.keras_name,
        "normalization": str(Normalization.coerce(normalization, spec.normalization)),
        "input_size": spec.input_size, "sha256": digest, "origin": str(origin), "state_dict": state,
    }
    path = write_atomic(Path(path), lambda handle: torch.save(payload, handle), fsync=True)
    return path, digest


def check_port_target(path: str | os.PathLike) -> None:
    """Refuse, before any work, to export over a folder or over a file that is not a medtransfer
    port (:func:`read_port` cannot read it): ``ConfigError`` naming it. A port may be replaced."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder; expected the path of the .pth file to write")
    if not path.exists():
        return
    try:
        ours = read_port(path) is not None
    except MedtransferError:  # a pickle, a damaged or another version's port: not to be replaced silently
        ours = False
    if not ours:
        raise ConfigError(f"{path}: exists and is not a port medtransfer wrote; medtransfer never overwrites "
                          "other files: give a new file name")


def read_port(path: str | os.PathLike) -> dict[str, Any] | None:
    """The payload of a medtransfer port with its digest checked, or ``None`` for any other file."""
    path = Path(path)
    try:
        payload = load_tensors(path, "weights file")
    except UnsafeFileError:
        raise
    except WeightsError:
        return None
    if not isinstance(payload, dict) or payload.get("format") != PORT_FORMAT:
        return None
    if payload.get("version") != PORT_VERSION:
        raise WeightsError(f"{path}: medtransfer port version {payload.get('version')!r}, expected {PORT_VERSION}")
    state = payload.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: medtransfer port without a state dict")
    got = state_digest(state)
    if got != payload.get("sha256"):
        raise WeightsError(f"{path}: its tensors have digest {got[:16]}.., the file records {str(payload.get('sha256'))[:16]}..: "
                           "damaged or edited file, refused")
    return payload


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a ``.pth`` file, unwrapped from ``state_dict``/``model`` and ``module.``."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} " + ("is a folder; expected a file" if path.is_dir() else "does not exist"))
    try:
        payload = load_tensors(path, "weights file")
    except UnsafeFileError:
        raise
    except WeightsError as error:
        raise WeightsError(f"{error} (expected a .pth/.pt state dict, a Keras .h5/.keras file or a medtransfer "
                           "checkpoint)") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(payload, dict) and isinstance(payload.get(wrapper), dict):
            payload = payload[wrapper]
    if not isinstance(payload, dict) or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise WeightsError(f"{path} does not hold a PyTorch state dict (a mapping of names to tensors)")
    return {k[7:] if k.startswith("module.") else k: v for k, v in payload.items()}


def load_torch_port(path: str | os.PathLike, model: nn.Module) -> LoadReport:
    """Load a PyTorch port into ``model``, all or nothing.

    A medtransfer port (:func:`export_port`) must hold ``model``'s backbone and pass its digest. Any
    backbone also takes a plain state dict with its own keys; a ResNet50 takes the
    Warvito/radimagenet-models key names as well. Every backbone tensor must be present with its
    shape; a head is loaded when ``model`` has one of the same size, and skipped otherwise.
    """
    path = Path(path)
    port = read_port(path) if path.is_file() else None
    spec = registry.get(registry.backbone_of(model))
    notes: list[str] = []
    if port is not None:
        if port["backbone"] != spec.name:
            raise WeightsError(f"{path} holds a {port['backbone']} backbone, the model is a {spec.name}")
        notes.append(f"medtransfer port, sha256 {port['sha256']}")
        source = dict(port["state_dict"])
    else:
        source = read_state_dict(path)
    if not isinstance(model, ResNet50):
        return _load_plain(path, model, spec, source, notes)
    expected = model.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    ignored: list[str] = []
    for key, value in source.items():
        mapped = port_key(key)
        if mapped is None or mapped not in expected and not mapped.startswith("head."):
            ignored.append(key)
        else:
            tensors[mapped] = value
    backbone = [k for k in expected if not k.startswith("head.") and not k.endswith("num_batches_tracked")]
    if not any(k in tensors for k in backbone):
        raise WeightsError(
            f"{path} is not a ResNet50 state dict: none of its keys maps to conv1/bn1/layer1..4 "
            f"(first keys: {', '.join(list(source)[:5])})"
        )
    return _copy_and_report(path, model, spec, tensors, backbone, expected, ignored, notes)


def _load_plain(path: Path, model: nn.Module, spec, source: dict[str, torch.Tensor], notes: list[str]) -> LoadReport:
    expected = model.state_dict()
    backbone = [k for k in expected if not k.startswith("head.") and not k.endswith("num_batches_tracked")]
    tensors = {k: v for k, v in source.items() if k in expected or k.startswith("head.")}
    ignored = [k for k in source if k not in tensors]
    if not any(k in tensors for k in backbone):
        raise WeightsError(
            f"{path} is not a {spec.keras_name} state dict of medtransfer's Keras layout: none of its keys is one "
            f"of {', '.join(backbone[:3])}, ... (first keys: {', '.join(list(source)[:5])})"
        )
    return _copy_and_report(path, model, spec, tensors, backbone, expected, ignored, notes)


def _copy_and_report(path: Path, model: nn.Module, spec, tensors: dict[str, torch.Tensor], backbone: list[str],
                     expected: dict[str, torch.Tensor], ignored: list[str], notes: list[str]) -> LoadReport:
    """Copy the mapped tensors into ``model`` and say what was loaded and what was ignored."""
    head = _check_and_copy(path, model, spec, tensors, backbone, expected)
    if ignored:
        notes.append(f"ignored keys: {', '.join(ignored[:5])}{' ...' if len(ignored) > 5 else ''}")
    return LoadReport(path=str(path), layout="torch-port", layers=len(model.keras_layers()), head=head, notes=notes)


def _check_and_copy(path: Path, model: nn.Module, spec, tensors: dict[str, torch.Tensor], backbone: list[str],
                    expected: dict[str, torch.Tensor]) -> str:
    """Check completeness and shapes, pick the head, copy all or nothing; returns the head remark."""
    missing = [k for k in backbone if k not in tensors]
    if missing:
        raise WeightsError(
            f"{path}: {missing[0]} is missing ({len(backbone) - len(missing)} of {len(backbone)} {spec.keras_name} "
            f"backbone tensors present; missing: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''})"
        )
    for key in backbone:
        if tuple(tensors[key].shape) != tuple(expected[key].shape):
            raise WeightsError(f"{path}: {key} has shape {tuple(tensors[key].shape)}, expected {tuple(expected[key].shape)}")
    head_keys = {k: v for k, v in tensors.items() if k.startswith("head.")}
    tensors = {k: v for k, v in tensors.items() if k in expected and not k.startswith("head.")}
    head = "none in file"
    width = spec.features
    if head_keys:
        weight = head_keys.get("head.1.weight")
        shape = tuple(weight.shape) if weight is not None else None
        if model.num_classes is None:
            head = f"not loaded: the model has no head; file has a head of shape {shape}"
        elif shape == (model.num_classes, width) and "head.1.bias" in head_keys:
            tensors.update(head_keys)
            head = f"loaded ({width} -> {model.num_classes})"
        else:
            head = f"not loaded: file head has shape {shape}, the model's is {(model.num_classes, width)}"
    check_finite_state(tensors, str(path))
    copy_state_(model, tensors, str(path))
    return head

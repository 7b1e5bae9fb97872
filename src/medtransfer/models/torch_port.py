"""Load PyTorch ports of the Keras ResNet50, e.g. ``RadImageNet-ResNet50_notop.pth``.

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

import torch

from medtransfer.errors import WeightsError
from medtransfer.models.report import LoadReport, copy_state_
from medtransfer.models.resnet import ResNet50

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


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a ``.pth`` file, unwrapped from ``state_dict``/``model`` and ``module.``."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        first_line = (str(error).strip().splitlines() or [""])[0][:120]
        raise WeightsError(
            f"{path} is not a readable PyTorch file (expected a .pth/.pt state dict, a Keras .h5/.keras "
            f"file or a medtransfer checkpoint; truncated?): {error.__class__.__name__}: {first_line}"
        ) from error
    for wrapper in ("state_dict", "model"):
        if isinstance(payload, dict) and isinstance(payload.get(wrapper), dict):
            payload = payload[wrapper]
    if not isinstance(payload, dict) or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise WeightsError(f"{path} does not hold a PyTorch state dict (a mapping of names to tensors)")
    return {k[7:] if k.startswith("module.") else k: v for k, v in payload.items()}


def load_torch_port(path: str | os.PathLike, model: ResNet50) -> LoadReport:
    """Load a PyTorch port of the Keras ResNet50 into ``model``, all or nothing.

    Every backbone tensor must be present with its shape; an ``fc`` head is loaded when ``model``
    has a head of the same size, and skipped otherwise (the report says so).
    """
    path = Path(path)
    source = read_state_dict(path)
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
    missing = [k for k in backbone if k not in tensors]
    if missing:
        raise WeightsError(
            f"{path}: {missing[0]} is missing ({len(backbone) - len(missing)} of {len(backbone)} backbone "
            f"tensors present; missing: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''})"
        )
    for key in backbone:
        if tuple(tensors[key].shape) != tuple(expected[key].shape):
            raise WeightsError(f"{path}: {key} has shape {tuple(tensors[key].shape)}, expected {tuple(expected[key].shape)}")
    head_keys = {k: v for k, v in tensors.items() if k.startswith("head.")}
    for key in head_keys:
        del tensors[key]
    tensors = {k: v for k, v in tensors.items() if k in expected}
    head = "none in file"
    if head_keys:
        weight = head_keys.get("head.1.weight")
        shape = tuple(weight.shape) if weight is not None else None
        if model.num_classes is None:
            head = f"not loaded: the model has no head; file has a head of shape {shape}"
        elif shape == (model.num_classes, 2048) and "head.1.bias" in head_keys:
            tensors.update(head_keys)
            head = f"loaded (2048 -> {model.num_classes})"
        else:
            head = f"not loaded: file head has shape {shape}, the model's is {(model.num_classes, 2048)}"
    copy_state_(model, tensors, str(path))
    notes = [f"ignored keys: {', '.join(ignored[:5])}{' ...' if len(ignored) > 5 else ''}"] if ignored else []
    return LoadReport(path=str(path), layout="torch-port", layers=len(model.keras_layers()), head=head, notes=notes)

"""What a weight reader loaded, and the one place that copies validated tensors into a model."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from medtransfer.errors import WeightsError


@dataclass
class LoadReport:
    """Outcome of loading a weights file into a :class:`~medtransfer.models.ResNet50`.

    Attributes:
        path: the file read.
        layout: ``full-model`` / ``weights-only`` (Keras legacy h5), ``keras3-weights``
            (Keras 3 ``.weights.h5``), ``torch-port`` (PyTorch ``.pth`` state dict).
        layers: number of backbone weight layers loaded (106 for a ResNet50: 53 conv + 53 BN).
        head: what happened to a top classification layer (loaded, skipped and why, none in file).
        notes: further remarks (ignored layers, versions).
    """

    path: str
    layout: str
    layers: int
    head: str
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """Human-readable summary, one fact per line."""
        return [f"file: {self.path}", f"layout: {self.layout}", f"backbone layers loaded: {self.layers}", f"head: {self.head}"] + [
            f"note: {n}" for n in self.notes
        ]


def copy_state_(model: nn.Module, tensors: dict[str, torch.Tensor], origin: str) -> None:
    """Copy ``tensors`` (state-dict key -> tensor in PyTorch layout) into ``model``, all or nothing.

    Every key and shape is checked before the first copy, so a failure leaves ``model`` unchanged.
    Values are cast to each target's dtype and device.
    """
    state = model.state_dict()
    for key, value in tensors.items():
        if key not in state:
            raise WeightsError(f"{origin}: no model entry {key!r} to load into")
        if tuple(value.shape) != tuple(state[key].shape):
            raise WeightsError(
                f"{origin}: {key} has shape {tuple(value.shape)}, the model expects {tuple(state[key].shape)}"
            )
    with torch.no_grad():
        for key, value in tensors.items():
            state[key].copy_(value.to(dtype=state[key].dtype, device=state[key].device))

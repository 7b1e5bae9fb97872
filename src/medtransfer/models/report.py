"""What a weight reader loaded, and the one place that copies validated tensors into a model."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

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


#: Name endings of BatchNorm variance tensors (PyTorch and Keras names), which must not be negative.
VARIANCE_NAMES = ("running_var", "moving_variance")


def check_finite_state(state: Mapping[str, Any], origin: str) -> None:
    """Refuse a state (name -> torch tensor or numpy array) holding NaN or infinite values, or a
    negative BatchNorm variance: WeightsError naming ``origin`` (the file) and the tensor.

    Integer tensors (e.g. ``num_batches_tracked``) are skipped. Any weight loader can call this
    on what it is about to load.
    """
    for name, value in state.items():
        tensor = torch.as_tensor(value)
        if not tensor.is_floating_point():
            continue
        # NaN and infinity propagate through a sum: a finite sum clears the tensor in one cheap pass
        # (an order of magnitude faster than isfinite().all() on ResNet50); a sum that overflowed
        # from finite values falls through to the exact check
        if bool(torch.isfinite(tensor.sum())):
            finite = None
        else:
            finite = torch.isfinite(tensor)
        if finite is not None and not bool(finite.all()):
            bad = int((~finite).sum())
            kinds = "NaN" if bool(torch.isnan(tensor).any()) else "infinite"
            raise WeightsError(
                f"{origin}: tensor {name} holds {bad} {kinds} value(s) of {tensor.numel()}: the weights are "
                "damaged (a diverged training run, or a bad conversion); they are not loaded"
            )
        if name.endswith(VARIANCE_NAMES) and bool((tensor < 0).any()):
            raise WeightsError(
                f"{origin}: BatchNorm variance {name} has {int((tensor < 0).sum())} negative value(s) "
                f"(smallest {float(tensor.min()):.3g}): a variance cannot be negative; the weights are not loaded"
            )


def copy_state_(model: nn.Module, tensors: dict[str, torch.Tensor], origin: str) -> None:
    """Copy ``tensors`` (state-dict key -> tensor in PyTorch layout) into ``model``, all or nothing.

    Every key and shape, and every value (:func:`check_finite_state`), is checked before the first
    copy, so a failure leaves ``model`` unchanged. Values are cast to each target's dtype and device.
    """
    check_finite_state(tensors, origin)
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

"""The epoch loop: plain PyTorch, everything on the device, no host synchronisation per step.

A batch is gathered from the uint8 pixels already on the device, augmented there, normalised
with the source's normalisation, put in channels-last layout and run under bf16 autocast where
the GPU supports it. Losses and correct counts accumulate in device tensors and are read once
per epoch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from medtransfer.interrupts import exit_if_preempted
from medtransfer.training.metrics import softmax_probabilities

Transform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


@dataclass
class StepSetup:
    """What every step needs besides the model and the data.

    ``augment(x uint8 (n,3,h,w), generator) -> float32 0..255`` or None; ``normalize(x float
    0..255) -> float``; ``amp_dtype`` torch.bfloat16 or None; ``forward`` the (optionally
    compiled) model call used for training.
    """

    normalize: Callable[[torch.Tensor], torch.Tensor]
    augment: Transform | None = None
    amp_dtype: torch.dtype | None = None
    channels_last: bool = True
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        """bf16 autocast on ``device`` when enabled, else a no-op."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.amp_dtype)

    def prepare(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """uint8 ``(n, 3, h, w)`` -> normalised float input of the network (augmented if training)."""
        if self.augment is not None and generator is not None:
            x = self.augment(x, generator)
        else:
            x = x.float()
        x = self.normalize(x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x


def batch_slices(n: int, batch_size: int, drop_single: bool) -> list[tuple[int, int]]:
    """``(start, stop)`` of consecutive batches over ``n`` items; a trailing batch of one image is
    dropped when ``drop_single`` (BatchNorm cannot train on a single value per channel)."""
    slices = [(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]
    if drop_single and slices and slices[-1][1] - slices[-1][0] == 1 and len(slices) > 1:
        slices.pop()
    return slices


def train_epoch(model: torch.nn.Module, optimizer: torch.optim.Optimizer, pixels: torch.Tensor,
                labels: torch.Tensor, rows: torch.Tensor, batch_size: int, setup: StepSetup,
                shuffle: torch.Generator, augment_generator: torch.Generator | None,
                head_only: bool = False) -> tuple[float, float]:
    """One pass over ``rows`` (device int64) in a random order drawn from ``shuffle`` (CPU).

    ``head_only``: the backbone runs without gradients and in inference mode (the freeze
    strategy's phase 1); only the head trains. The caller sets train/eval modes.
    Returns (mean cross-entropy, accuracy) over the images seen; one host sync at the end.
    """
    device = pixels.device
    order = rows[torch.randperm(rows.numel(), generator=shuffle).to(device)]
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    seen = 0
    forward = setup.forward if setup.forward is not None else model  # a compiled module has no truth value
    for start, stop in batch_slices(order.numel(), batch_size, drop_single=not head_only):
        exit_if_preempted()  # a preemption whose exit a finalizer swallowed stops here, not after the run
        index = order[start:stop]
        x = setup.prepare(pixels[index], augment_generator)
        y = labels[index]
        with setup.autocast(device):
            if head_only:
                with torch.no_grad():
                    features = model.embed(x)
                logits = model.head(features.float())
            else:
                logits = forward(x)
            loss = F.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        n = stop - start
        loss_sum += loss.detach() * n
        correct += (logits.detach().argmax(1) == y).sum()
        seen += n
    return float(loss_sum) / max(seen, 1), float(correct) / max(seen, 1)


@torch.no_grad()
def predict(model: torch.nn.Module, pixels: torch.Tensor, labels: torch.Tensor, rows: torch.Tensor,
            batch_size: int, setup: StepSetup, generator: torch.Generator | None = None) -> tuple[torch.Tensor, float]:
    """Softmax probabilities ``(len(rows), k)`` float64 on the CPU and mean cross-entropy, in
    inference mode, without augmentation unless ``generator`` is given (then ``setup.augment``,
    e.g. a test-time corruption, transforms each batch drawing from it). The caller puts the
    model in eval mode."""
    device = pixels.device
    chunks = []
    loss_sum = torch.zeros((), device=device)
    for start, stop in batch_slices(rows.numel(), batch_size, drop_single=False):
        exit_if_preempted()
        index = rows[start:stop]
        x = setup.prepare(pixels[index], generator)
        with setup.autocast(device):
            logits = model(x).float()
        loss_sum += F.cross_entropy(logits, labels[index], reduction="sum")
        chunks.append(softmax_probabilities(logits))
    probs = torch.cat(chunks).cpu()
    return probs, float(loss_sum) / max(rows.numel(), 1)

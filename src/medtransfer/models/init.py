"""Keras' default initialisation, reproduced in PyTorch (the paper's "random" source).

Keras initialises Conv2D and Dense kernels glorot-uniform, biases with zeros, BatchNorm gamma 1,
beta 0, moving mean 0, moving variance 1. Glorot-uniform draws U(-l, l) with
``l = sqrt(6 / (fan_in + fan_out))``; Keras computes the fans from its kernel layout
``(kh, kw, in, out)`` as ``fan_in = kh * kw * in`` and ``fan_out = kh * kw * out`` (Dense:
``in`` and ``out``), which for PyTorch's ``(out, in, kh, kw)`` is the same product.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def glorot_fans(weight: torch.Tensor) -> tuple[int, int]:
    """(fan_in, fan_out) of a PyTorch conv ``(out, in, kh, kw)`` or linear ``(out, in)`` weight, as Keras counts them."""
    if weight.dim() < 2:
        raise ValueError(f"glorot fans need a weight with >= 2 dims, got shape {tuple(weight.shape)}")
    receptive = math.prod(weight.shape[2:]) if weight.dim() > 2 else 1
    return int(weight.shape[1]) * receptive, int(weight.shape[0]) * receptive


@torch.no_grad()
def glorot_uniform_(weight: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Fill ``weight`` in place with U(-l, l), ``l = sqrt(6 / (fan_in + fan_out))``, drawn on the CPU from ``generator``."""
    fan_in, fan_out = glorot_fans(weight)
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    values = torch.empty(weight.shape, dtype=torch.float32).uniform_(-limit, limit, generator=generator)
    weight.copy_(values)
    return weight


@torch.no_grad()
def keras_init_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Re-initialise every conv, linear and BatchNorm of ``model`` as Keras does, deterministically.

    The same ``seed`` gives the same weights on any device (values are drawn on the CPU in module
    order). Returns ``model``.
    """
    generator = torch.Generator().manual_seed(int(seed))
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            glorot_uniform_(module.weight, generator)
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, nn.BatchNorm2d):
            module.reset_parameters()  # gamma 1, beta 0, running mean 0, running var 1
    return model

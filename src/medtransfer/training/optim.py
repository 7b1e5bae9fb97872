"""Adam with Keras' update rule.

Keras applies epsilon to the *uncorrected* second moment::

    alpha_t = lr * sqrt(1 - b2^t) / (1 - b1^t);   w -= alpha_t * m_t / (sqrt(v_t) + eps)

which equals PyTorch's bias-corrected form ``lr * m_hat / (sqrt(v_hat) + eps')`` with
``eps' = eps / sqrt(1 - b2^t)``. :class:`KerasAdam` sets that ``eps'`` before every step and
otherwise runs PyTorch's Adam, so the update matches Keras exactly.

The fused kernel is the default wherever PyTorch has one (CPU and CUDA floating-point
parameters): for ResNet50's 23.5 M parameters on 2 CPU cores a step takes 17 ms against the
per-tensor loop's 61 ms (`benchmarks/adam_step.py`), and it allocates no temporaries per parameter.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch


class KerasAdam(torch.optim.Adam):
    """``torch.optim.Adam`` whose epsilon follows Keras' convention (see the module docstring).

    The step count lives in each parameter group (``keras_step``) so that it is saved and
    restored with ``state_dict``; no device synchronisation is needed to know it.
    """

    def __init__(self, params: Iterable, lr: float = 1e-5, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-7, fused: bool | None = None, **kwargs) -> None:
        params = list(params)
        if fused is None and not kwargs.get("foreach"):
            fused = fused_supported(params)
        super().__init__(params, lr=lr, betas=betas, eps=eps, fused=fused, **kwargs)
        for group in self.param_groups:
            group.setdefault("keras_eps", eps)
            group.setdefault("keras_step", 0)

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001, ANN201 - torch's signature
        """One Adam step with Keras' epsilon."""
        for group in self.param_groups:
            group["keras_step"] += 1
            beta2 = group["betas"][1]
            group["eps"] = group["keras_eps"] / math.sqrt(1.0 - beta2 ** group["keras_step"])
        return super().step(closure)


FUSED_DEVICE_TYPES = ("cpu", "cuda")


def fused_supported(params: list) -> bool:
    """Whether PyTorch's fused Adam takes every tensor in ``params`` (tensors or param-group
    dicts): floating-point tensors on a CPU or CUDA device."""
    tensors = []
    for item in params:
        group = item["params"] if isinstance(item, dict) else item
        if isinstance(group, torch.Tensor):
            tensors.append(group)
        else:
            group = list(group)
            item["params"] = group  # a generator is read once
            tensors.extend(group)
    return bool(tensors) and all(t.device.type in FUSED_DEVICE_TYPES and t.is_floating_point() for t in tensors)

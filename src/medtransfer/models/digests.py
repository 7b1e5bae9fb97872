"""Content digests of model states: one sha256 per tensor and one per state, independent of the
tensors' device, memory layout and order. Run records, probes and weight ports record and check them."""

from __future__ import annotations

import hashlib

import torch


def tensor_digests(state: dict[str, torch.Tensor]) -> dict[str, str]:
    """sha256 (hex) of each tensor's name, dtype, shape and bytes (CPU, contiguous layout)."""
    digests = {}
    for name, tensor in state.items():
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        h = hashlib.sha256(f"{name}|{flat.dtype}|{tuple(tensor.shape)}|".encode())
        h.update(flat.view(torch.uint8).numpy().data)
        digests[name] = h.hexdigest()
    return digests


def combine_digests(digests: dict[str, str]) -> str:
    """One sha256 (hex) of a state from its per-tensor digests (order independent)."""
    h = hashlib.sha256()
    for name in sorted(digests):
        h.update(f"{name}:{digests[name]}\n".encode())
    return h.hexdigest()


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """The content digest (sha256 hex) of a state dict (what a probe's ``source.sha256`` and a port record)."""
    return combine_digests(tensor_digests(state))

"""The paper's layer-wise similarity protocol: activations to rows, sampled images and channels, repeats.

Activations of one layer for the same n stimulus images under two models, ``(n, C, h, w)`` for
convolutional layers or ``(n, C)`` for pooled ones, become matrices ``(m * h * w, c)``: every
spatial position of a sampled image is a row, ``c`` sampled channels are the columns. Each repeat
draws fresh images (about ``rows / (h * w)`` of them, without replacement) and fresh channels
(``channels`` of them, without replacement, the same indices for both models when their channel
counts agree), then measures CCA (mean of all canonical correlations) or linear CKA.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from medtransfer.errors import MedtransferError
from medtransfer.similarity._validation import is_tensor

MEASURES = ("cca", "cka")


@dataclass(frozen=True)
class LayerSimilarity:
    """Similarity of one layer pair over repeats.

    Attributes:
        mean: mean over repeats, a python float.
        std: standard deviation over repeats (ddof=0), a python float.
        values: ``(repeats,)`` the per-repeat values.
        rows: rows per repeat (sampled images x h x w); channels: channels per repeat.
    """

    mean: float
    std: float
    values: np.ndarray
    rows: int
    channels: int


def layer_similarity(
    acts_a: Any,
    acts_b: Any,
    measure: str = "cca",
    rows: int | None = 20000,
    channels: int | None = 64,
    repeats: int = 5,
    seed: int = 0,
) -> LayerSimilarity:
    """Similarity of two models' activations of one layer on the same stimuli (paper protocol).

    Args:
        acts_a, acts_b: ``(n, C, h, w)`` or ``(n, C)`` activations of the same n images, in the same
            order (numpy or torch, any device). Spatial sizes must agree; channel counts may differ.
        measure: ``"cca"`` (mean of all canonical correlations, :func:`cca`) or ``"cka"``
            (:func:`linear_cka`).
        rows: target number of rows per repeat; ``m = round(rows / (h * w))`` images are drawn
            (at least 1, at most n). None uses every image.
        channels: channels drawn per repeat (all if None or if a layer has fewer).
        repeats: number of independent draws.
        seed: seed of the draws (numpy ``default_rng``); the same seed gives the same samples.
    """
    from medtransfer.similarity.canonical import cca
    from medtransfer.similarity.cka import linear_cka

    if measure not in MEASURES:
        raise MedtransferError(f"measure must be one of {', '.join(MEASURES)}, got {measure!r}")
    if int(repeats) < 1:
        raise MedtransferError(f"repeats must be at least 1, got {repeats}")
    a, b = _as_activations(acts_a, "acts_a"), _as_activations(acts_b, "acts_b")
    if a.shape[0] != b.shape[0]:
        raise MedtransferError(
            f"acts_a and acts_b must hold the same images: {a.shape[0]} and {b.shape[0]} images"
        )
    if a.shape[2:] != b.shape[2:]:
        raise MedtransferError(
            f"acts_a and acts_b must have the same spatial size, got {tuple(a.shape[2:])} and {tuple(b.shape[2:])}"
        )
    n, positions = a.shape[0], int(np.prod(a.shape[2:], dtype=np.int64))
    if rows is not None and int(rows) < 1:
        raise MedtransferError(f"rows must be positive, got {rows}")
    if channels is not None and int(channels) < 1:
        raise MedtransferError(f"channels must be positive, got {channels}")
    m = n if rows is None else int(min(n, max(1, round(int(rows) / positions))))
    c_a, c_b = a.shape[1], b.shape[1]
    c = min(c_a, c_b) if channels is None else min(int(channels), c_a, c_b)
    rng = np.random.default_rng(seed)
    values = np.empty(int(repeats))
    for r in range(int(repeats)):
        images = np.sort(rng.choice(n, size=m, replace=False))
        ch_a = np.sort(rng.choice(c_a, size=c, replace=False))
        ch_b = ch_a if c_b == c_a else np.sort(rng.choice(c_b, size=c, replace=False))
        x, y = activation_rows(a, images, ch_a), activation_rows(b, images, ch_b)
        values[r] = cca(x, y).mean if measure == "cca" else linear_cka(x, y)
    return LayerSimilarity(
        mean=float(values.mean()), std=float(values.std()), values=values, rows=m * positions, channels=c
    )


def activation_rows(acts: Any, images: np.ndarray, channels: np.ndarray) -> Any:
    """Rows ``(len(images) * h * w, len(channels))`` of ``acts (n, C, h, w)`` or ``(n, C)``.

    Row order: image-major, then spatial position (row-major over h, w); a numpy array or a tensor
    on ``acts``' device, in its dtype.
    """
    if is_tensor(acts):
        import torch

        index_i = torch.as_tensor(images, device=acts.device)
        index_c = torch.as_tensor(channels, device=acts.device)
        picked = acts.index_select(0, index_i).index_select(1, index_c)
        if picked.ndim == 2:
            return picked
        return picked.movedim(1, -1).reshape(-1, len(channels))
    picked = np.asarray(acts)[images][:, channels]
    if picked.ndim == 2:
        return picked
    return np.moveaxis(picked, 1, -1).reshape(-1, len(channels))


def _as_activations(acts: Any, name: str) -> Any:
    if not is_tensor(acts):
        acts = np.asarray(acts)
    if acts.ndim not in (2, 4):
        raise MedtransferError(f"{name} must be activations (n, C, h, w) or (n, C), got shape {tuple(acts.shape)}")
    if acts.shape[0] == 0 or acts.shape[1] == 0:
        raise MedtransferError(f"{name} is empty (shape {tuple(acts.shape)})")
    return acts

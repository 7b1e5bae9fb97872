"""Sampled hidden activations of many networks over one stimulus pool, one forward pass each.

The sampling is decided before any network runs (:func:`plan_sampling`): for every layer and
repeat, which pool images contribute all their spatial positions as rows and which channels are
kept - the same for every network, so that both sides of a pair see the same rows and channels.
Then each network sees each needed pool image exactly once (:func:`sample_activations`) and only
the sampled rows are kept, so memory is bounded by
``networks x layers x repeats x rows x channels x 4 bytes``, whatever the pool size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from medtransfer.console import track
from medtransfer.errors import ConfigError
from medtransfer.study.analysis_settings import AnalysisSettings

Shape = tuple[int, int, int]
DEFAULTS = AnalysisSettings()


@dataclass(frozen=True)
class LayerPlan:
    """The samples of one layer: per repeat, sorted pool indices and channel indices.

    ``shape`` is the layer's activation ``(C, h, w)``; repeat ``r`` yields a matrix of
    ``len(images[r]) * h * w`` rows (image-major, then y, x) by ``len(channels[r])`` columns, or,
    with ``positions`` (the "spread" sampling), ``len(images[r]) * k`` rows: the flat positions
    ``positions[r] (len(images[r]), k)`` of each image, in that order.
    """

    name: str
    shape: Shape
    images: tuple[np.ndarray, ...]
    channels: tuple[np.ndarray, ...]
    positions: tuple[np.ndarray, ...] | None = None

    @property
    def rows_per_image(self) -> int:
        """Rows each sampled image contributes (h x w, or k sampled positions)."""
        return self.shape[1] * self.shape[2] if self.positions is None else int(self.positions[0].shape[1])

    @property
    def rows(self) -> int:
        """Rows per repeat (images x rows per image)."""
        return len(self.images[0]) * self.rows_per_image


@dataclass(frozen=True)
class SamplingPlan:
    """Samples of every layer over a pool of ``n_pool`` images."""

    n_pool: int
    layers: dict[str, LayerPlan]

    @property
    def images(self) -> np.ndarray:
        """Sorted pool indices that any layer needs: the only images sent through the networks."""
        parts = [img for plan in self.layers.values() for img in plan.images]
        return np.unique(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)

    def nbytes(self, networks: int = 1) -> int:
        """Memory the sampled activations of ``networks`` networks take (float32)."""
        per = sum(len(img) * p.rows_per_image * len(ch) for p in self.layers.values() for img, ch in zip(p.images, p.channels))
        return 4 * per * networks


def plan_sampling(
    n_pool: int,
    shapes: dict[str, Shape],
    rows: int = DEFAULTS.rows,
    channels: int = DEFAULTS.channels,
    repeats: int = DEFAULTS.repeats,
    seed: int = DEFAULTS.seed,
    sampling: str = DEFAULTS.sampling,
    positions: int = DEFAULTS.positions,
) -> SamplingPlan:
    """Draw every layer's samples up front (protocol.md: ~``rows`` rows, ``channels`` channels).

    Per layer with activation ``(C, h, w)``: each repeat takes ``round(rows / (h*w))`` distinct
    pool images (at least 1, at most ``n_pool``) with all their positions, and ``min(channels, C)``
    distinct channels. ``sampling="spread"``: ``round(rows / k)`` images with ``k = min(positions,
    h*w)`` distinct random positions, one set per repeat shared by its images (drawn after the
    channels), so that the permutation null pairs each position with itself. Draws are independent across
    layers and repeats, from ``seed``; the paper sampling's draws do not depend on ``positions``.
    """
    if n_pool < 1:
        raise ConfigError("the stimulus pool is empty: no images in the chosen split")
    rng = np.random.default_rng(seed)
    layers = {}
    for name, (c, h, w) in shapes.items():
        per_image = h * w if sampling == "paper" else int(min(positions, h * w))
        k = int(min(n_pool, max(1, round(rows / per_image))))
        m = int(min(channels, c))
        images = tuple(np.sort(rng.choice(n_pool, size=k, replace=False)) for _ in range(repeats))
        chans = tuple(np.sort(rng.choice(c, size=m, replace=False)) for _ in range(repeats))
        where = None
        if sampling != "paper":  # one set of positions per repeat, shared by its images (the null pairs them)
            where = tuple(np.tile(np.sort(rng.choice(h * w, size=per_image, replace=False)), (k, 1))
                          for _ in range(repeats))
        layers[name] = LayerPlan(name, (int(c), int(h), int(w)), images, chans, where)
    return SamplingPlan(n_pool, layers)


@dataclass
class Network:
    """A network to sample: ``features(x) -> {layer: (n, C, h, w)}`` and its input normalisation."""

    features: Callable[[torch.Tensor, list[str]], dict[str, torch.Tensor]]
    normalize: Callable[[torch.Tensor], torch.Tensor]


@dataclass
class ForwardLog:
    """How often each network was run: pool passes started and images sent through it."""

    passes: dict[str, int] = field(default_factory=dict)
    images: dict[str, int] = field(default_factory=dict)


def sample_activations(
    network: Network,
    pool: np.ndarray,
    plan: SamplingPlan,
    batch_size: int = DEFAULTS.batch_size,
    device: str | torch.device = "cpu",
    log: ForwardLog | None = None,
    key: str = "network",
) -> dict[str, list[np.ndarray]]:
    """One forward pass of ``network`` over the plan's images; keep only the sampled rows.

    Args:
        pool: uint8 ``(N, h, w, 3)`` pixels (e.g. a memory-mapped pixel cache), ``N = plan.n_pool``;
            only ``plan.images`` rows are read.

    Returns:
        ``{layer: [repeat r: float32 (rows_r, channels_r)]}``.
    """
    if len(pool) != plan.n_pool:
        raise ConfigError(f"the pool holds {len(pool)} images but the sampling plan was drawn for {plan.n_pool}")
    names = list(plan.layers)
    out = {
        name: [np.empty((len(img) * p.rows_per_image, len(ch)), dtype=np.float32) for img, ch in zip(p.images, p.channels)]
        for name, p in plan.layers.items()
    }
    chan_t = {name: [torch.as_tensor(ch, device=device) for ch in p.channels] for name, p in plan.layers.items()}
    needed = plan.images
    if log is not None:
        log.passes[key] = log.passes.get(key, 0) + 1
        log.images[key] = log.images.get(key, 0) + len(needed)
    starts = range(0, len(needed), batch_size)
    with torch.no_grad():
        for start in track(starts, f"activations of {key}", total=len(starts)):
            idx = needed[start : start + batch_size]
            pixels = torch.from_numpy(np.ascontiguousarray(pool[idx])).to(device)
            x = network.normalize(pixels.permute(0, 3, 1, 2).float())
            feats = network.features(x, names)
            for name, p in plan.layers.items():
                act = feats[name]
                hw = p.rows_per_image
                for r, images in enumerate(p.images):
                    lo = np.searchsorted(images, idx[0])
                    hi = np.searchsorted(images, idx[-1], side="right")
                    if hi == lo:
                        continue
                    local = torch.as_tensor(np.searchsorted(idx, images[lo:hi]), device=device)
                    block = act.index_select(0, local).index_select(1, chan_t[name][r])
                    rows = block.permute(0, 2, 3, 1).reshape(block.shape[0], -1, block.shape[1])
                    if p.positions is not None:
                        where = torch.as_tensor(p.positions[r][lo:hi], device=rows.device)
                        rows = torch.gather(rows, 1, where[:, :, None].expand(-1, -1, rows.shape[-1]))
                    rows = rows.reshape(-1, block.shape[1])
                    out[name][r][lo * hw : hi * hw] = rows.float().cpu().numpy()
    return out

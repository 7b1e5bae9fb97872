"""conv1 filters as images (the paper's Figure 4) and a Gabor reference bank to compare them with.

A conv1 kernel is ``(64, 3, 7, 7)`` in PyTorch layout. Weights trained in Keras' "caffe" mode see
BGR input, so their channel axis is reversed before display to show the colours they respond to.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

from medtransfer.atomic import write_atomic
from medtransfer.errors import ConfigError


def first_conv(model: torch.nn.Module) -> torch.nn.Conv2d:
    """The network's first convolution (``conv1``, else the first Conv2d of its Keras layers)."""
    return model.conv1 if hasattr(model, "conv1") else next(
        m for m in model.keras_layers().values() if isinstance(m, torch.nn.Conv2d))


def conv1_filters(model: torch.nn.Module) -> np.ndarray:
    """The first conv's kernel as float32 ``(out, 3, kh, kw)`` (PyTorch layout, input channel order):
    ResNet50's and DenseNet121's ``(64, 3, 7, 7)``, the Inceptions' ``(32, 3, 3, 3)``."""
    return first_conv(model).weight.detach().float().cpu().numpy()


def filter_grid(filters: np.ndarray, count: int = 36, columns: int | None = None, bgr: bool = True, pad: int = 1) -> np.ndarray:
    """Tile the first ``count`` filters ``(n, 3, k, k)`` into one RGB image ``(H, W, 3)`` in [0, 1].

    Each filter is min-max scaled on its own (a constant filter becomes 0.5 grey); tiles are
    separated by ``pad`` white pixels; ``columns`` defaults to ``ceil(sqrt(count))`` (6 for 36).
    ``bgr=True`` reverses the channel axis (weights trained on BGR input, Keras "caffe" mode).
    """
    filters = np.asarray(filters, dtype=np.float64)
    if filters.ndim != 4 or filters.shape[1] != 3:
        raise ConfigError(f"filters must have shape (n, 3, k, k), got {filters.shape}")
    if not 1 <= count <= filters.shape[0]:
        raise ConfigError(f"count must be between 1 and {filters.shape[0]} filters, got {count}")
    chosen = filters[:count, ::-1] if bgr else filters[:count]
    low = chosen.min(axis=(1, 2, 3), keepdims=True)
    span = chosen.max(axis=(1, 2, 3), keepdims=True) - low
    scaled = np.where(span > 0, (chosen - low) / np.where(span > 0, span, 1.0), 0.5)
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    kh, kw = chosen.shape[2:]
    grid = np.ones((rows * (kh + pad) + pad, columns * (kw + pad) + pad, 3))
    for i, tile in enumerate(scaled.transpose(0, 2, 3, 1)):
        r, c = divmod(i, columns)
        grid[pad + r * (kh + pad): pad + r * (kh + pad) + kh, pad + c * (kw + pad): pad + c * (kw + pad) + kw] = tile
    return grid


def save_grid_png(grid: np.ndarray, path: str | os.PathLike, scale: int = 12) -> Path:
    """Write an RGB grid ``(H, W, 3)`` in [0, 1] as a PNG, enlarged ``scale`` times (nearest),
    atomically."""
    from PIL import Image

    from PIL.PngImagePlugin import PngInfo

    pixels = np.clip(np.round(np.asarray(grid) * 255), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, mode="RGB")
    enlarged = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    info = PngInfo()
    info.add_text("Software", GRID_MARK)  # what check_outputs recognises as a grid it may replace
    return write_atomic(path, lambda handle: enlarged.save(handle, format="PNG", pnginfo=info))


GRID_MARK = "medtransfer weights filters"


def check_outputs(paths: list[Path]) -> None:
    """Refuse to replace a file of ``paths`` that ``medtransfer weights filters`` did not write: a
    PNG without :data:`GRID_MARK`, an ``.npy`` that is not a filter array ``(n, 3, k, k)``
    (``ConfigError`` naming it); files that do not exist pass."""
    from PIL import Image

    for path in paths:
        if not path.exists():
            continue
        try:
            if path.suffix == ".png":
                with Image.open(path) as image:
                    ours = image.info.get("Software") == GRID_MARK
            else:
                array = np.load(path, allow_pickle=False, mmap_mode="r")
                ours = array.ndim == 4 and array.shape[1] == 3
        except (OSError, ValueError):
            ours = False
        if not ours:
            raise ConfigError(f"{path} exists and was not written by `medtransfer weights filters`; medtransfer never "
                              "overwrites other files: give another --out folder")


def gabor_bank(size: int = 7, orientations: int = 6, wavelengths: tuple[float, ...] = (3.0, 5.0, 7.0), phases: tuple[float, ...] = (0.0, math.pi / 2), sigma_ratio: float = 0.45, gamma: float = 1.0) -> np.ndarray:
    """Gabor filters ``(orientations * len(wavelengths) * len(phases), 3, size, size)``, grey in RGB.

    ``g(x, y) = exp(-(x'^2 + gamma^2 y'^2) / (2 sigma^2)) cos(2 pi x' / lambda + phase)`` with
    ``x' = x cos(theta) + y sin(theta)``, ``y' = -x sin(theta) + y cos(theta)``, ``sigma =
    sigma_ratio * lambda``, theta in ``k * pi / orientations``; each filter has zero mean and unit
    L2 norm per channel. The default is 6 x 3 x 2 = 36 filters of 7 x 7, the size of conv1.
    """
    half = (size - 1) / 2
    y, x = np.mgrid[-half: half + 1, -half: half + 1]
    bank = []
    for k in range(orientations):
        theta = k * math.pi / orientations
        xr = x * math.cos(theta) + y * math.sin(theta)
        yr = -x * math.sin(theta) + y * math.cos(theta)
        for wavelength in wavelengths:
            sigma = sigma_ratio * wavelength
            envelope = np.exp(-(xr**2 + gamma**2 * yr**2) / (2 * sigma**2))
            for phase in phases:
                g = envelope * np.cos(2 * math.pi * xr / wavelength + phase)
                g = g - g.mean()
                g = g / (np.linalg.norm(g) or 1.0)
                bank.append(np.repeat(g[None], 3, axis=0))
    return np.stack(bank).astype(np.float32)


def gabor_similarity(filters: np.ndarray, bank: np.ndarray | None = None) -> np.ndarray:
    """Per filter, the best absolute cosine similarity ``(n,)`` in [0, 1] with any filter of ``bank``.

    Filters ``(n, 3, k, k)`` are compared after removing each one's mean; sign is ignored (a
    Gabor filter and its negative are the same detector). ``bank`` defaults to :func:`gabor_bank`
    of the filters' size.
    """
    filters = np.asarray(filters, dtype=np.float64)
    bank = gabor_bank(size=filters.shape[-1]) if bank is None else np.asarray(bank, dtype=np.float64)
    if filters.shape[1:] != bank.shape[1:]:
        raise ConfigError(f"filters {filters.shape[1:]} and bank {bank.shape[1:]} must have the same (3, k, k)")

    def unit(a: np.ndarray) -> np.ndarray:
        flat = a.reshape(len(a), -1)
        flat = flat - flat.mean(axis=1, keepdims=True)
        norm = np.linalg.norm(flat, axis=1, keepdims=True)
        return flat / np.where(norm > 0, norm, 1.0)

    return np.abs(unit(filters) @ unit(bank).T).max(axis=1)

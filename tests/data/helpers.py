"""Shared helpers for the data tests: small manifests and tiny image files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from medtransfer.data.images import ArrayReader
from medtransfer.data.manifest import Manifest


def manifest_from(labels, groups, name="toy", refs=None) -> Manifest:
    """A manifest over given labels and groups (pixels: tiny in-memory images)."""
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    frame = pd.DataFrame({
        "image_id": [f"img{i:05d}" for i in range(n)],
        "ref": refs if refs is not None else [f"toy:{i}" for i in range(n)],
        "label": labels,
        "group": [str(g) for g in groups],
    })
    k = int(labels.max()) + 1 if n else 1
    pixels = np.zeros((n, 4, 4, 3), np.uint8)
    return Manifest(frame, [f"c{j}" for j in range(k)], name, reader=ArrayReader(pixels, key=name))


def write_image(path: Path, size=(20, 16), value: int = 128, mode: str = "RGB", seed: int = 0) -> Path:
    """Write a small image file (format from the suffix) with seeded random pixels around value."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    w, h = size
    shape = (h, w) if mode == "L" else (h, w, 3)
    pixels = np.clip(rng.normal(value, 20, shape), 0, 255).astype(np.uint8)
    Image.fromarray(pixels, mode).save(path)
    return path


def truncate(path: Path, keep: float = 0.5) -> Path:
    """Cut a file to a fraction of its bytes (a truncated download)."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path

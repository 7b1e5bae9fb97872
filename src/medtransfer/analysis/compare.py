"""Layer-wise similarity of any two networks (checkpoints, weight files or source names) on a
target dataset's images, for users who do not run a whole study (``medtransfer similarity``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from medtransfer.analysis.activations import ForwardLog, Network, layer_shapes, plan_sampling, sample_activations
from medtransfer.analysis.layerwise import measure
from medtransfer.analysis.loading import RowView
from medtransfer.analysis.settings import AnalysisSettings

COLUMNS = ["layer", "measure", "mean", "std", "rows", "channels", "repeats", "images"]
DEFAULT_SIZE = 112  # the paper's input size, for networks that do not record one (weight files)


def resolve_size(size: int | None, *models: str) -> tuple[int, str]:
    """The image size to compare ``models`` at, and where it comes from.

    ``size`` when given; else the training size the medtransfer checkpoints among ``models``
    record (they must agree); else :data:`DEFAULT_SIZE`.
    """
    from medtransfer.errors import ConfigError
    from medtransfer.models.checkpoint import checkpoint_meta

    if size is not None:
        return int(size), "given"
    recorded = {}
    for m in models:
        meta = checkpoint_meta(m) if Path(m).is_file() else None
        if meta is not None and meta.get("size") is not None:
            recorded[m] = int(meta["size"])
    if len(set(recorded.values())) > 1:
        raise ConfigError("the checkpoints were trained at different sizes ("
                          + ", ".join(f"{m}: {s} px" for m, s in recorded.items()) + "); choose one with --size")
    if recorded:
        return next(iter(recorded.values())), "the checkpoints' training size"
    return DEFAULT_SIZE, "default: no checkpoint records a training size"


def _network(name_or_path: str, device: torch.device) -> Network:
    from medtransfer.models import load_source

    source = load_source(name_or_path)
    model = source.model.to(device).eval()
    return Network(features=model.features, normalize=source.normalize)


def compare_models(
    model_a: str,
    model_b: str,
    target: str,
    root: str | Path | None,
    *,
    size: int | None = None,
    images: int | None = None,
    settings: AnalysisSettings | None = None,
    target_options: dict[str, Any] | None = None,
    cache_dir: str | Path | None = None,
    device: str | None = None,
) -> tuple[pd.DataFrame, ForwardLog]:
    """Similarity of two networks at each layer over ``target``'s images at ``size`` px
    (default: :func:`resolve_size` - the checkpoints' training size, else 112). Each network gets
    its own normalisation (what a checkpoint recorded, else caffe).

    The pool is the whole dataset, or ``images`` of it drawn with the settings' seed. Each network
    runs once over the images the sampling needs. Returns the table (:data:`COLUMNS`) and the log.
    """
    from medtransfer.data import PixelCache, load_manifest

    settings = settings or AnalysisSettings()
    size, _ = resolve_size(size, model_a, model_b)
    dev = torch.device(device if device else ("cuda" if torch.cuda.is_available() else "cpu"))
    manifest = load_manifest(target, root, **(target_options or {}))
    rows = np.arange(len(manifest.frame))
    if images is not None and images < len(rows):
        rows = np.sort(np.random.default_rng(settings.seed).choice(rows, size=images, replace=False))
    cache = PixelCache.build(manifest, size, cache_dir=cache_dir)
    pool = RowView(cache.pixels, rows)
    layers = settings.resolved_layers()
    plan = plan_sampling(len(pool), layer_shapes(size, list(layers.values())), settings.rows, settings.channels,
                         settings.repeats, settings.seed)
    log = ForwardLog()
    acts = [sample_activations(_network(m, dev), pool, plan, settings.batch_size, dev, log, f"{i}:{m}")
            for i, m in enumerate((model_a, model_b))]
    out = []
    for label, keras in layers.items():
        p = plan.layers[keras]
        for m in settings.measures:
            values = np.array([measure(xa, xb, m) for xa, xb in zip(acts[0][keras], acts[1][keras])])
            out.append([label, m, float(values.mean()), float(values.std()), p.rows, len(p.channels[0]),
                        len(values), len(p.images[0])])
    return pd.DataFrame(out, columns=COLUMNS), log

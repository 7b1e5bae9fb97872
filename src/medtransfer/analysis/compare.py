"""Layer-wise similarity of any two networks (checkpoints, weight files or source names) on a
target dataset's images, for users who do not run a whole study (``medtransfer similarity``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pandas as pd
import torch

from medtransfer.analysis.activations import ForwardLog, Network, layer_shapes, plan_sampling, sample_activations
from medtransfer.analysis.layerwise import measure
from medtransfer.analysis.loading import RowView
from medtransfer.analysis.settings import AnalysisSettings
from medtransfer.errors import MedtransferError

COLUMNS = ["layer", "measure", "mean", "std", "rows", "channels", "repeats", "images"]


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
    size: int = 112,
    images: int | None = None,
    settings: AnalysisSettings | None = None,
    target_options: dict[str, Any] | None = None,
    cache_dir: str | Path | None = None,
    device: str | None = None,
) -> tuple[pd.DataFrame, ForwardLog]:
    """Similarity of two networks at each layer over ``target``'s images at ``size`` px.

    The pool is the whole dataset, or ``images`` of it drawn with the settings' seed. Each network
    runs once over the images the sampling needs. Returns the table (:data:`COLUMNS`) and the log.
    """
    from medtransfer.data import PixelCache, load_manifest

    settings = settings or AnalysisSettings()
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
            values = layer_values(acts[0][keras], acts[1][keras], m, f"{label} ({keras})", (model_a, model_b))
            if values is None:
                continue
            out.append([label, m, float(values.mean()), float(values.std()), p.rows, len(p.channels[0]),
                        len(values), len(p.images[0])])
    return pd.DataFrame(out, columns=COLUMNS), log


def layer_values(xs: list[np.ndarray], ys: list[np.ndarray], measure_name: str, layer: str,
                 models: tuple[str, str], stream: TextIO | None = None) -> np.ndarray | None:
    """``measure_name`` of each repeat's activation samples ``xs[r] (rows, channels)`` of
    ``models[0]`` and ``ys[r]`` of ``models[1]`` at ``layer``: ``(repeats,)``.

    NaN/inf activations raise MedtransferError naming the network and the layer. A measure that
    refuses these samples (e.g. CCA with at least as many channels as rows, from too few images at
    a deep layer) skips the layer: a warning on ``stream`` (stderr) names it and the flags that
    fix it, and None is returned.
    """
    for model, samples in zip(models, (xs, ys)):
        if not all(np.isfinite(np.asarray(a)).all() for a in samples):
            raise MedtransferError(f"{model} has NaN or infinite activations at layer {layer}: its weights or "
                                   "the images are damaged (try `medtransfer weights info` on the weights file)")
    try:
        return np.array([measure(xa, xb, measure_name) for xa, xb in zip(xs, ys)])
    except MedtransferError as error:
        message = str(error).replace("x has", "each network has").replace("y has", "each network has")
        print(f"warning: layer {layer}: {measure_name.upper()} skipped ({message}); use more images (--images) "
              "or fewer channels (--channels)", file=stream or sys.stderr)
        return None

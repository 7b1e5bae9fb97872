"""Layer-wise similarity of any two networks (checkpoints, weight files, source names, model
factories or TorchScript files) on a target dataset's images, for users who do not run a whole
study (``medtransfer similarity``); the comparison itself is :mod:`medtransfer.analysis.modules`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medtransfer.analysis.activations import ForwardLog
from medtransfer.analysis.loading import RowView
from medtransfer.analysis.modules import COLUMNS, compare_modules
from medtransfer.data import PixelCache, load_manifest
from medtransfer.errors import ConfigError
from medtransfer.models import registry
from medtransfer.models.checkpoint import checkpoint_meta
from medtransfer.models.resolve import Model, resolve_model
from medtransfer.study.analysis_settings import AnalysisSettings

DEFAULT_SIZE = 112  # the paper's input size, for networks that do not record one (weight files)


def resolve_size(size: int | None, *models: str) -> tuple[int, str]:
    """The image size to compare ``models`` at, and where it comes from.

    ``size`` when given; else the training size the medtransfer checkpoints among ``models``
    record (they must agree); else :data:`DEFAULT_SIZE`.
    """
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


def _layers(settings: AnalysisSettings, model: Model) -> list[str] | None:
    """The settings' layers for one side: ``all`` is its backbone's block outputs; None: its default."""
    if settings.layers == ("all",):
        try:
            return list(registry.get(registry.backbone_of(model.module)).block_layers)
        except Exception as error:
            raise ConfigError(f"layers 'all' needs a medtransfer backbone, {model.origin} is not one") from error
    if not model.default_layers and settings.layers == AnalysisSettings().layers:
        return None  # the paper's stage names mean nothing to a foreign module: it must name its layers
    return list(settings.layers)


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
    layers_b: list[str] | None = None,
    state_dict_a: str | Path | None = None,
    state_dict_b: str | Path | None = None,
    sequence: str = "tokens",
) -> tuple[pd.DataFrame, ForwardLog]:
    """Similarity of two networks at each layer over ``target``'s images at ``size`` px
    (default: :func:`resolve_size` - the checkpoints' training size, else 112). Each network gets
    its own normalisation (what a checkpoint recorded, else caffe).

    Each model is a source name, weights file or checkpoint, a ``package.module:function`` factory
    (with ``state_dict_a``/``_b``), or a TorchScript file (:func:`~medtransfer.models.resolve.resolve_model`).
    The settings' layers name A's layers (default: the paper's five stages), ``layers_b`` B's,
    paired by position (default: the same names). The pool is the whole dataset, or ``images`` of
    it drawn with the settings' seed. Each network runs once over the images the sampling needs.
    Returns the table (:data:`COLUMNS`) and the log.
    """
    settings = settings or AnalysisSettings()
    size, _ = resolve_size(size, model_a, model_b)
    manifest = load_manifest(target, root, **(target_options or {}))
    rows = np.arange(len(manifest.frame))
    if images is not None and images < len(rows):
        rows = np.sort(np.random.default_rng(settings.seed).choice(rows, size=images, replace=False))
    cache = PixelCache.build(manifest, size, cache_dir=cache_dir)
    pool = RowView(cache.pixels, rows)
    a = resolve_model(model_a, state_dict=state_dict_a)
    b = resolve_model(model_b, state_dict=state_dict_b)
    names_a = _layers(settings, a)
    names_b = layers_b if layers_b else (_layers(settings, b) if settings.layers == ("all",) else None)
    return compare_modules(a, b, pool, names_a, names_b, settings=settings, device=device, sequence=sequence)

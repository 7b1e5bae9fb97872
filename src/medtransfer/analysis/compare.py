"""Layer-wise similarity of any two networks (checkpoints, weight files, source names, model
factories or TorchScript files) on a target dataset's images, for users who do not run a whole
study (``medtransfer similarity``); the comparison itself is :mod:`medtransfer.analysis.modules`."""

from __future__ import annotations

import os
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
from medtransfer.training.config import MAX_IMAGE_SIDE, MIN_IMAGE_SIDE
from medtransfer.training.run import resolve_device

DEFAULT_SIZE = 112  # the paper's input size, for networks that do not record one (weight files)
MAX_SIZE = MAX_IMAGE_SIDE  # the largest image side ``medtransfer similarity`` accepts, as a run does
MIN_SIZE = MIN_IMAGE_SIDE  # the smallest side the networks take (RunConfig.size)
MIN_IMAGES = 2  # CCA and CKA centre over images: one image has no variance to compare
#: The first columns of the table ``medtransfer similarity --out`` writes: a file whose header does
#: not start with them was not written by medtransfer, and is never replaced.
OUT_HEADER = ",".join(COLUMNS[:4])


def check_options(*, size: int | None = None, images: int | None = None, threads: int | None = None,
                  device: str | None = None, out: Path | None = None) -> None:
    """Refuse the options of a comparison before anything is loaded or computed: a size outside
    :data:`MIN_SIZE`..:data:`MAX_SIZE`, fewer than :data:`MIN_IMAGES` images, fewer than one
    thread, a device this machine does not have, an ``out`` that is a folder or a file that
    medtransfer did not write (:data:`OUT_HEADER`) or that cannot be written. ``ConfigError``
    naming the option and what it expects."""
    if size is not None and not MIN_SIZE <= size <= MAX_SIZE:
        raise ConfigError(f"--size {size}: expected an image side of {MIN_SIZE} to {MAX_SIZE} pixels")
    if images is not None and images < MIN_IMAGES:
        raise ConfigError(f"--images {images}: expected at least {MIN_IMAGES} images (similarity is measured "
                          "across images)")
    if threads is not None and threads < 1:
        raise ConfigError(f"--threads {threads}: expected at least 1 thread")
    if device is not None:
        resolve_device(device)
    if out is not None:
        check_out_file(Path(out))


def check_out_file(out: Path) -> None:
    """Refuse ``out`` as the table's CSV unless it is new (in a folder that can be written) or a
    table medtransfer wrote before: ``ConfigError`` naming the file."""
    if out.is_dir():
        raise ConfigError(f"--out {out}: is a folder; expected the path of a CSV file to write")
    if out.exists():
        try:
            with open(out, encoding="utf-8", errors="replace") as handle:
                first = handle.readline().strip()
        except OSError as error:
            raise ConfigError(f"--out {out}: cannot be read ({error.strerror}); expected a new file") from None
        if not first.startswith(OUT_HEADER):
            raise ConfigError(f"--out {out}: exists and is not a similarity table medtransfer wrote (its first "
                              f"line is not '{OUT_HEADER},...'); medtransfer never overwrites other files: "
                              "give a new file name")
    folder = next((p for p in (out.absolute().parent, *out.absolute().parents) if p.exists()), None)
    if folder is not None and not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {out}: the folder {folder} cannot be written (permission denied)")


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
    check_options(size=size, images=images, device=device)
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

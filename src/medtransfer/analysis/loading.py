"""Networks and stimulus images of a study, rebuilt from what its run directories store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from medtransfer.analysis.activations import Network
from medtransfer.analysis.pairs import ModelRef
from medtransfer.data import PixelCache, load_manifest
from medtransfer.errors import DataError
from medtransfer.models import Normalization, ResNet50, load_checkpoint, load_source, registry
from medtransfer.models.filters import conv1_filters
from medtransfer.training.config import RunConfig
from medtransfer.training.data import fold_table
from medtransfer.training.initial import initial_source
from medtransfer.training.record import SOURCES, RunRecord, sealed_file_problem
from medtransfer.vocabulary import SourceRef


def resolve_source(load: str, study_root: Path | None) -> str:
    """``load`` unchanged if it is a source name or an existing file; else a relative file path
    looked up under the study directory (and its ``sources/``, for a study that was moved).

    Raises:
        DataError: the file found is a source the study made, sealed, and now damaged.
    """
    if not SourceRef.of(load).is_file or study_root is None:
        return load
    found = load if Path(load).exists() else None
    for candidate in (study_root / load, study_root / SOURCES / Path(load).name):
        if found is None and candidate.exists():
            found = str(candidate)
    if found is None:
        return load
    problem = sealed_file_problem(Path(found))
    if problem:
        raise DataError(f"source {load!r} is damaged: {problem} - `medtransfer run` makes it again")
    return found


def load_network(ref: ModelRef, device: str | torch.device = "cpu", study_root: Path | None = None) -> Network:
    """The :class:`Network` of a model reference, in eval mode on ``device``.

    Fine-tuned: ``load_checkpoint(ref.checkpoint)`` with the checkpoint's normalisation.
    Init: ``load_source(ref.load, seed=ref.seed, normalization=ref.normalization)``, with
    ``ref.transfer`` applied (:func:`medtransfer.training.initial.initial_source`).

    Raises:
        WeightsError: weights missing or unreadable (from medtransfer.models).
    """
    if ref.kind == "finetuned":
        model, meta = load_checkpoint(ref.checkpoint)
        normalize = Normalization.coerce(meta.get("normalization", ref.normalization))
    else:
        source = initial_source(resolve_source(ref.load, study_root), ref.seed, ref.transfer, ref.normalization)
        model, normalize = source.model, source.normalize
    model = model.to(device).eval()
    return Network(features=_stage_features(model), normalize=normalize)


def _stage_features(model: torch.nn.Module):
    """``model.features``, taking the paper's ResNet50 layer names for any backbone's stages."""
    if isinstance(model, ResNet50):
        return model.features
    backbone = registry.backbone_of(model)

    def features(x: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
        own = {name: registry.stage_layer(backbone, name) for name in names}
        out = model.features(x, list(dict.fromkeys(own.values())))
        return {name: out[own[name]] for name in names}
    return features


def source_conv1(ref: ModelRef, study_root: Path | None = None) -> tuple[np.ndarray, str]:
    """conv1 kernels ``(64, 3, 7, 7)`` (input channel order) of an init and its normalisation mode."""
    source = load_source(resolve_source(ref.load, study_root), seed=ref.seed, normalization=ref.normalization)
    return conv1_filters(source.model).astype(np.float64), str(source.normalize)


class RowView:
    """Rows ``rows`` of a pixel array ``(N, h, w, 3)`` (e.g. a memory-mapped cache) seen as a pool;
    indexing with pool positions reads only those rows."""

    def __init__(self, pixels: np.ndarray, rows: np.ndarray) -> None:
        self.pixels = pixels
        self.rows = np.asarray(rows, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: Any) -> np.ndarray:
        return np.asarray(self.pixels[self.rows[index]])


def stimulus_pool(run: RunRecord | dict[str, Any], split: str = "test") -> tuple[RowView, np.ndarray]:
    """The images of one run's fold and ``split`` (``"all"``: every split) at the run's size, as
    ``(pool, image_ids)``; ``run`` a finished run (its folds file found where the study is now) or
    a run config mapping.

    ``pool[i]`` is uint8 ``(size, size, 3)``; built exactly as the run built its data
    (``load_manifest`` with the run's options, the run's folds, the pixel cache).
    """
    run = run.resolved if isinstance(run, RunRecord) else RunConfig.parse(run, where="run config")
    manifest = load_manifest(run.target, run.root, **run.target_options)
    folds = fold_table(run, manifest)
    chosen = folds["image_id"] if split == "all" else folds.loc[folds["split"] == split, "image_id"]
    if chosen.empty:
        raise DataError(f"fold {run.fold} of {run.target_label!r} has no {split} images for the stimulus pool")
    position = pd.Series(np.arange(len(manifest.frame)), index=manifest.frame["image_id"].to_numpy())
    rows = np.sort(position[chosen].to_numpy())
    cache = PixelCache.build(manifest, run.size, interpolation=run.interpolation, cache_dir=run.cache_dir)
    ids = manifest.frame["image_id"].to_numpy()[rows]
    return RowView(cache.pixels, rows), ids

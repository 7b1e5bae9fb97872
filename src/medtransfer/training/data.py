"""The images of one run on the training device: uint8 pixels, labels and the fold's splits."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from medtransfer.data import PixelCache, load_manifest, read_folds
from medtransfer.data.folds import EXCLUDED
from medtransfer.data.registry import dataset_folds
from medtransfer.errors import DataError
from medtransfer.training.config import RunConfig


@dataclass
class RunData:
    """Pixels ``(N, 3, size, size)`` uint8 and labels ``(N,)`` int64 on the device, in manifest
    order; ``index[split]`` int64 device tensors of rows per split; ``image_ids`` (N,) str."""

    pixels: torch.Tensor
    labels: torch.Tensor
    index: dict[str, torch.Tensor]
    image_ids: np.ndarray
    classes: list[str]
    folds: pd.DataFrame  # image_id, fold, split of this run's fold

    @property
    def num_classes(self) -> int:
        """k, the number of classes."""
        return len(self.classes)


def fold_table(config: RunConfig, manifest) -> pd.DataFrame:  # noqa: ANN001 - a medtransfer.data.Manifest
    """The rows of ``config.fold``: from ``config.folds_file`` if given, else ``make_folds``; the
    images the fold leaves out on purpose (split "excluded") are not among them."""
    if config.folds_file:
        folds = read_folds(config.folds_file, manifest)
    else:
        folds = dataset_folds(manifest, config.fold_spec)
    mine = folds[(folds["fold"] == config.fold) & (folds["split"] != EXCLUDED)].reset_index(drop=True)
    if mine.empty:
        raise DataError(f"folds{' file ' + config.folds_file if config.folds_file else ''}: no rows for fold "
                        f"{config.fold} of target {config.target!r}")
    return mine


def load_run_data(config: RunConfig, device: torch.device) -> RunData:
    """Load the manifest, the fold and the cached pixels, and move what the run uses to ``device``."""
    manifest = load_manifest(config.target, config.root, **config.target_options)
    folds = fold_table(config, manifest)
    ids = manifest.frame["image_id"].to_numpy()
    position = pd.Series(np.arange(len(ids)), index=ids)
    unknown = folds.loc[~folds["image_id"].isin(position.index), "image_id"]
    if len(unknown):
        raise DataError(f"fold {config.fold} of {config.target!r} names images not in the dataset, e.g. "
                        f"{unknown.iloc[0]!r}")
    cache = PixelCache.build(manifest, config.size, interpolation=config.interpolation, cache_dir=config.cache_dir)
    rows = position[folds["image_id"]].to_numpy()
    order = np.sort(rows)  # keep manifest order on the device; splits index into it
    pixels = np.ascontiguousarray(cache.pixels[order])  # (n, s, s, 3) uint8
    local = pd.Series(np.arange(order.size), index=order)
    tensor = torch.from_numpy(pixels).to(device).permute(0, 3, 1, 2).contiguous()
    labels = torch.from_numpy(manifest.labels[order].astype(np.int64)).to(device)
    index = {}
    for split in ("train", "val", "test"):
        chosen = local[rows[(folds["split"] == split).to_numpy()]].to_numpy()
        if chosen.size == 0:
            raise DataError(f"fold {config.fold} of {config.target!r} has no {split} images")
        index[split] = torch.from_numpy(np.sort(chosen)).to(device)
    return RunData(tensor, labels, index, ids[order], list(manifest.classes), folds)

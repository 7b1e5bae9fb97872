"""``pcam`` / ``pcam-small``: PatchCamelyon, Veeling et al. 2018, read straight from its HDF5 files.

Layout: ``camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5`` (or the distributed
``.h5.gz``, unpacked once into ``unpack_dir``), optionally ``..._meta.csv`` with a ``wsi`` column.
``x``: (N, 96, 96, 3) uint8; label = ``y[i, 0, 0, 0]`` (``center_tumor_patch``). Refs
``file.h5::i``: patches are read by index, never exported. Group = whole-slide image from the meta
CSV when present, else the patch. ``pcam-small`` = ``subset=10000``: a seeded random subset
(``seed``, default 0) of all patches of the chosen ``splits``.
"""

from __future__ import annotations

import errno
import gzip
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from medtransfer.atomic import storage_error, writing
from medtransfer.data.datasets._common import read_table
from medtransfer.data.images import H5Reader
from medtransfer.data.manifest import Manifest, ProblemLog, make_manifest
from medtransfer.errors import DataError

CLASSES = ["normal", "tumor"]
PREFIX = "camelyonpatch_level_2_split_"
SPLITS = ("train", "valid", "test")


def default_unpack_dir() -> Path:
    return Path.home() / ".cache" / "medtransfer" / "pcam"


_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES)


def _h5(root: Path, split: str, kind: str, unpack_dir: Path) -> Path | None:
    """The .h5 file of (split, x|y); a .h5.gz is unpacked into ``unpack_dir`` once."""
    plain = root / f"{PREFIX}{split}_{kind}.h5"
    if plain.is_file():
        return plain
    packed = root / f"{PREFIX}{split}_{kind}.h5.gz"
    if not packed.is_file():
        return None
    st = packed.stat()
    target = unpack_dir / f"{plain.stem}-{st.st_size}-{st.st_mtime_ns}.h5"
    if not target.is_file():
        with writing(unpack_dir):
            unpack_dir.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        try:
            with gzip.open(packed, "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 22)
        except (OSError, EOFError) as error:
            tmp.unlink(missing_ok=True)
            if isinstance(error, OSError) and error.errno in _DISK_ERRNOS:  # the disk of the copy
                raise storage_error(target, error) from error
            raise DataError(f"{packed}: cannot unpack ({error})") from error
        tmp.replace(target)
    return target


def load(root: Path, *, skip_bad: bool = False, subset: int | None = None, seed: int = 0,
         splits: tuple[str, ...] = SPLITS, unpack_dir: str | Path | None = None) -> Manifest:
    """Manifest of PCam in the folder ``root``."""
    import h5py

    if root.is_file():
        root = root.parent
    unknown = set(splits) - set(SPLITS)
    if unknown:
        raise DataError(f"pcam option splits={splits}: expected a subset of {list(SPLITS)}")
    unpack = Path(unpack_dir) if unpack_dir is not None else default_unpack_dir()
    log = ProblemLog("pcam", skip_bad)
    frames = []
    for split in splits:
        x, y = _h5(root, split, "x", unpack), _h5(root, split, "y", unpack)
        if x is None or y is None:
            log.add(root / f"{PREFIX}{split}_{'x' if x is None else 'y'}.h5",
                    "missing (neither .h5 nor .h5.gz found)")
            continue
        try:
            with h5py.File(y, "r") as fy, h5py.File(x, "r") as fx:
                labels = np.asarray(fy["y"]).reshape(len(fy["y"]), -1)[:, 0].astype(np.int64)
                shape = fx["x"].shape
        except (OSError, KeyError) as error:
            log.add(y, f"unreadable PCam HDF5 ({error}); expected datasets 'x' and 'y'")
            continue
        if shape[0] != len(labels) or len(shape) != 4 or shape[3] != 3:
            log.add(x, f"x has shape {shape}; expected ({len(labels)}, h, w, 3) to match y")
            continue
        if not np.isin(labels, (0, 1)).all():
            log.add(y, "labels outside {0, 1}")
            continue
        index = np.arange(len(labels))
        groups = np.char.add(f"{split}_", index.astype(str))
        meta = root / f"{PREFIX}{split}_meta.csv"
        if meta.is_file():
            table = read_table(meta, "PCam's meta CSV with a 'wsi' column, one row per patch")
            if "wsi" in table.columns and len(table) == len(labels):
                groups = table["wsi"].astype(str).to_numpy()
            else:
                log.add(meta, f"expected a 'wsi' column and {len(labels)} rows")
        frames.append(pd.DataFrame({"image_id": np.char.add(f"{split}_", np.char.zfill(index.astype(str), 6)),
                                    "ref": np.char.add(f"{x}::", index.astype(str)),
                                    "label": labels, "group": groups}))
    log.raise_if_any()
    if not frames:
        raise DataError(f"{root}: no PCam files {PREFIX}{{train,valid,test}}_{{x,y}}.h5[.gz]")
    frame = pd.concat(frames, ignore_index=True)
    if subset is not None:
        if subset > len(frame):
            raise DataError(f"pcam subset={subset}: only {len(frame)} patches in splits {list(splits)}")
        rows = np.sort(np.random.default_rng(seed).choice(len(frame), size=subset, replace=False))
        frame = frame.iloc[rows].reset_index(drop=True)
    return make_manifest(frame, CLASSES, "pcam", log, reader=H5Reader("x"),
                         options={"subset": subset, "seed": seed, "splits": list(splits)})

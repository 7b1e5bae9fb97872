"""``isic``: ISIC 2018 Task 3 (HAM10000) dermoscopy, 7 classes.

Layout (``root``): ``ISIC2018_Task3_Training_Input/ISIC_0024306.jpg`` (the folder also holds
``ATTRIBUTION.txt``, ``LICENSE.txt``), ``ISIC2018_Task3_Training_GroundTruth/
ISIC2018_Task3_Training_GroundTruth.csv`` (``image,MEL,NV,BCC,AKIEC,BKL,DF,VASC``, one-hot
``1.0``/``0.0``) and, when downloaded, ``ISIC2018_Task3_Training_LesionGroupings.csv``
(``image,lesion_id,...``). Label = the column holding 1; a row with none or several is an error.
Group = ``lesion_id`` when the groupings file exists (several images show one lesion: splitting
by image, as the authors did, leaks lesions across folds), else the image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medtransfer.data.datasets._common import image_files, read_table
from medtransfer.data.manifest import Manifest, ProblemLog, make_manifest
from medtransfer.errors import DataError

CLASSES = ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]


def _find(root: Path, pattern: str) -> Path | None:
    found = sorted(p for p in root.rglob(pattern) if not p.name.startswith("."))
    return found[0] if found else None


def load(root: Path, *, skip_bad: bool = False, lesion_groups: bool = True) -> Manifest:
    """Manifest of ISIC 2018 Task 3 under ``root``."""
    log = ProblemLog("isic", skip_bad)
    truth = _find(root, "*Task3_Training_GroundTruth.csv") or _find(root, "*GroundTruth*.csv")
    if truth is None:
        raise DataError(f"{root}: missing ISIC2018_Task3_Training_GroundTruth.csv (the label file)")
    images_dir = next((p for p in sorted(root.rglob("*Task3_Training_Input")) if p.is_dir()), None)
    if images_dir is None:
        raise DataError(f"{root}: missing the ISIC2018_Task3_Training_Input/ image folder")
    header = f"image,{','.join(CLASSES)} with one 1.0 per row"
    table = read_table(truth, header, dtype={"image": str})
    missing = {"image", *CLASSES} - set(table.columns)
    if missing:
        raise DataError(f"{truth}: missing columns {sorted(missing)}; expected image,{','.join(CLASSES)}")
    numbers = table[CLASSES].apply(pd.to_numeric, errors="coerce")
    not_numbers = (numbers.isna() & table[CLASSES].notna()).any(axis=1).to_numpy()
    onehot = numbers.fillna(0.0).to_numpy(dtype=np.float64)
    ones = (onehot == 1.0).sum(axis=1)
    labels = dict(zip(table["image"], onehot.argmax(axis=1)))
    for line in np.flatnonzero((ones != 1) | not_numbers):
        values = ", ".join(f"{c}={table[c].iat[line]!r}" for c in CLASSES if not_numbers[line]
                           and pd.isna(numbers[c].iat[line]) and pd.notna(table[c].iat[line]))
        log.add(f"{truth}:{line + 2}", f"image {table['image'].iat[line]}: " + (
            f"{values} not a number; expected 1.0 or 0.0" if not_numbers[line]
            else f"{ones[line]} classes marked 1; expected exactly one"))
        labels.pop(table["image"].iat[line], None)
    bad_rows = set(table["image"][(ones != 1) | not_numbers])
    groups: dict[str, str] = {}
    grouping = _find(root, "*LesionGroupings.csv") if lesion_groups else None
    if grouping is not None:
        g = read_table(grouping, "columns image,lesion_id", dtype=str)
        if not {"image", "lesion_id"} <= set(g.columns):
            raise DataError(f"{grouping}: expected columns image,lesion_id")
        groups = dict(zip(g["image"], g["lesion_id"]))
    rows, seen = [], set()
    for path in image_files(images_dir, log):
        image = path.stem
        seen.add(image)
        if image in bad_rows:
            continue
        if image not in labels:
            log.add(path, f"no row for {image} in {truth.name}")
            continue
        if grouping is not None and image not in groups:
            log.add(path, f"no lesion_id for {image} in {grouping.name}")
            continue
        rows.append({"image_id": image, "ref": str(path), "label": int(labels[image]),
                     "group": groups.get(image, image)})
    for image in sorted(set(labels) - seen):
        log.add(images_dir / f"{image}.jpg", "listed in the ground truth but the image file is missing")
    return make_manifest(rows, CLASSES, "isic", log, options={"lesion_groups": grouping is not None})

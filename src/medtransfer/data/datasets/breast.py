"""``breast``: BUSI breast ultrasound, Al-Dhabyani et al. 2020.

Layout: ``Dataset_BUSI_with_GT/{benign,malignant,normal}/benign (1).png`` with segmentation masks
beside the images (``benign (1)_mask.png``, ``benign (1)_mask_1.png``): masks are not images of the
dataset and are not read. No patient ids: each image is its own group.

Option ``normal``: ``"benign"`` (default, the paper: 570 benign incl. 133 normal / 210 malignant),
``"exclude"`` (benign vs malignant only: 437 / 210; normal images listed as left out) or
``"class"`` (three classes benign, malignant, normal).
"""

from __future__ import annotations

import re
from pathlib import Path

from medtransfer.data.datasets._common import image_files
from medtransfer.data.manifest import Manifest, ProblemLog, make_manifest
from medtransfer.errors import DataError

_MASK = re.compile(r"_mask(_\d+)?$", re.IGNORECASE)
NORMAL_RULES = ("benign", "exclude", "class")


def load(root: Path, *, skip_bad: bool = False, normal: str = "benign") -> Manifest:
    """Manifest of BUSI under ``root`` (``Dataset_BUSI_with_GT`` or its parent)."""
    if normal not in NORMAL_RULES:
        raise DataError(f"breast option normal={normal!r}: expected one of {list(NORMAL_RULES)}")
    base = next((c for c in (root, root / "Dataset_BUSI_with_GT")
                 if (c / "benign").is_dir() and (c / "malignant").is_dir()), None)
    if base is None:
        raise DataError(f"{root}: expected Dataset_BUSI_with_GT/{{benign,malignant,normal}}/ folders")
    classes = ["benign", "malignant"] + (["normal"] if normal == "class" else [])
    log = ProblemLog("breast", skip_bad)
    rows = []
    for folder in ("benign", "malignant", "normal"):
        directory = base / folder
        if not directory.is_dir():
            log.add(directory, "missing class folder")
            continue
        for path in image_files(directory, log):
            if _MASK.search(path.stem):
                log.note("segmentation mask files ignored (*_mask.png: not images of the dataset)")
                continue
            if folder == "normal" and normal == "exclude":
                log.exclude(path, "normal image (normal='exclude')")
                continue
            if folder == "normal":
                log.note("normal images merged into benign (normal='benign')" if normal == "benign"
                         else "normal images as a third class (normal='class')")
            label = {"benign": 0, "malignant": 1}.get(folder, 0 if normal == "benign" else 2)
            image_id = f"{folder}/{path.name}"
            rows.append({"image_id": image_id, "ref": str(path), "label": label, "group": image_id})
    return make_manifest(rows, classes, "breast", log, options={"normal": normal})

"""``chest``: Kermany et al. 2018 pediatric chest X-rays (Kaggle "chest-xray-pneumonia" or Mendeley).

Layout: ``chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg`` (Mendeley has no ``val``). The
Kaggle zip's junk is ignored: ``__MACOSX/``, ``._*`` resource forks, ``.DS_Store`` and the nested
duplicate ``chest_xray/chest_xray/`` (only ``<root>/<split>/<class>/`` is read).
Labels: normal 0, pneumonia 1. Group = patient from the file name: ``NORMAL2-IM-<n>``, ``IM-<n>``
or ``person<n>`` (``NORMAL2-IM-n`` and ``IM-n`` are different patients); train and val share one
numbering, the official test folder has its own, so its keys get a ``test/`` prefix. A name
outside this scheme is its own group. The paper's folds ignore the official split.
"""

from __future__ import annotations

import re
from pathlib import Path

from medtransfer.data.datasets._common import image_files
from medtransfer.data.manifest import Manifest, ProblemLog, make_manifest
from medtransfer.errors import DataError

CLASSES = ["normal", "pneumonia"]
FOLDERS = {"NORMAL": 0, "PNEUMONIA": 1}
SPLITS = ("train", "val", "test")
_PATIENT = re.compile(r"^(NORMAL2-IM-\d+|IM-\d+|person\d+)[-_]", re.IGNORECASE)


def patient_key(name: str, split: str) -> str:
    """Patient of a Kermany file name (``person12_virus_3.jpeg`` -> ``person12``)."""
    m = _PATIENT.match(name)
    key = m.group(1) if m else Path(name).stem
    return f"test/{key}" if split == "test" else key


def load(root: Path, *, skip_bad: bool = False) -> Manifest:
    """Manifest of the chest X-rays under ``root`` (the ``chest_xray`` folder or its parent)."""
    log = ProblemLog("chest", skip_bad)
    base = next((c for c in (root, root / "chest_xray") if (c / "train").is_dir() or (c / "test").is_dir()), None)
    if base is None:
        raise DataError(f"{root}: expected chest_xray/{{train,val,test}}/{{NORMAL,PNEUMONIA}}/ folders")
    rows = []
    for split in SPLITS:
        for folder, label in FOLDERS.items():
            directory = base / split / folder
            if not directory.is_dir():
                if split != "val":  # Mendeley's release has no val folder
                    log.add(directory, "missing class folder")
                continue
            for path in image_files(directory, log):
                rows.append({"image_id": f"{split}/{folder}/{path.name}", "ref": str(path),
                             "label": label, "group": patient_key(path.name, split)})
    return make_manifest(rows, CLASSES, "chest", log)

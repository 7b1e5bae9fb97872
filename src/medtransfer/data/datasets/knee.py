"""``knee``: MRNet knee MRI, Bien et al. 2018 - RadImageNet's sagittal slices or the raw volumes.

Labels come from MRNet's six header-less CSVs ``{train,valid}-{abnormal,acl,meniscus}.csv``
(``0000,0``), found anywhere under ``root``. Classes: normal, acl, meniscus. Group = case.

Slices (the paper's data): ``images/{acl,meniscus}/<case>_sagittal_<k>.000000.png``. A slice in
``images/acl`` is acl if its case has acl = 1, else normal; one in ``images/meniscus`` is meniscus
if meniscus = 1, else normal (validation meniscus labels from the meniscus CSV: the authors read
them from the abnormal CSV, a defect not inherited). A file name in both folders counts once: a
tear label wins over normal, and acl wins over meniscus.

Volumes (``mode="volumes"``, or automatically when there is no ``images/`` folder):
``{train,valid}/sagittal/NNNN.npy`` (slices x 256 x 256 uint8); ``slices`` central slices per
case (default 3). A case with acl = 1 is acl, else meniscus = 1 is meniscus, else normal; a case
with both tears is acl (``both="acl"``), meniscus, or left out (``both="exclude"``).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from medtransfer.data.datasets._common import image_files, read_table
from medtransfer.data.images import NpySliceReader
from medtransfer.data.manifest import Manifest, ProblemLog, make_manifest
from medtransfer.errors import DataError

CLASSES = ["normal", "acl", "meniscus"]
_SLICE = re.compile(r"^(\d+)_sagittal_\d+")


def read_labels(root: Path) -> tuple[dict[str, int], dict[str, int]]:
    """(acl, meniscus): case (4-digit str) -> 0/1, from the train and valid CSVs under root."""
    out = []
    for task in ("acl", "meniscus"):
        files = sorted(p for p in root.rglob(f"*-{task}.csv") if p.name.split("-")[0] in ("train", "valid"))
        if not files:
            raise DataError(f"{root}: missing label files train-{task}.csv / valid-{task}.csv (MRNet's "
                            "header-less 'case,label' CSVs)")
        labels: dict[str, int] = {}
        for f in files:
            table = read_table(f, "MRNet's header-less 'case,label' lines (0000,1)", header=None,
                               names=["case", "label"], dtype=str)
            bad = ~table["label"].isin(["0", "1"])
            if bad.any():
                raise DataError(f"{f}: line {int(np.flatnonzero(bad)[0]) + 1}: label "
                                f"{table['label'][bad].iloc[0]!r}; expected 0 or 1")
            labels.update({c.strip().zfill(4): int(v) for c, v in zip(table["case"], table["label"])})
        out.append(labels)
    return out[0], out[1]


def _slices(base: Path, acl: dict, meniscus: dict, log: ProblemLog) -> list[dict]:
    chosen: dict[str, dict] = {}
    for folder, table, tear in (("acl", acl, 1), ("meniscus", meniscus, 2)):
        directory = base / folder
        if not directory.is_dir():
            log.add(directory, "missing slice folder")
            continue
        for path in image_files(directory, log):
            m = _SLICE.match(path.name)
            if m is None:
                log.add(path, "name is not <case>_sagittal_<k>.<ext>")
                continue
            case = m.group(1).zfill(4)
            if case not in table:
                log.add(path, f"case {case} is not in the {folder} label CSVs")
                continue
            label = tear if table[case] == 1 else 0
            previous = chosen.get(path.name)
            if previous is None or (previous["label"] == 0 and label != 0):
                chosen[path.name] = {"image_id": path.name, "ref": str(path), "label": label, "group": case}
    return list(chosen.values())


def _volumes(root: Path, acl: dict, meniscus: dict, slices: int, both: str, log: ProblemLog) -> list[dict]:
    rows = []
    volumes = sorted(p for split in ("train", "valid") for p in (root / split / "sagittal").glob("*.npy"))
    if not volumes:
        raise DataError(f"{root}: no {{train,valid}}/sagittal/NNNN.npy volumes and no images/ folder")
    for path in volumes:
        case = path.stem.zfill(4)
        if case not in acl or case not in meniscus:
            log.add(path, f"case {case} is missing from the acl or meniscus label CSVs")
            continue
        if acl[case] and meniscus[case] and both == "exclude":
            log.exclude(path, "case has both tears (both='exclude')")
            continue
        label = 1 if acl[case] and both != "meniscus" else 2 if meniscus[case] else 1 if acl[case] else 0
        try:
            shape = np.load(path, mmap_mode="r").shape
        except (OSError, ValueError, EOFError) as error:
            log.add(path, f"unreadable .npy volume ({error})")
            continue
        if len(shape) not in (3, 4) or 0 in shape:
            log.add(path, f"holds an array of shape {shape}; expected a volume (slices, height, width)")
            continue
        depth = shape[0]
        start = max(0, depth // 2 - slices // 2)
        for k in range(start, min(depth, start + slices)):
            rows.append({"image_id": f"{case}_sagittal_{k}", "ref": f"{path}::{k}", "label": label, "group": case})
    return rows


def load(root: Path, *, skip_bad: bool = False, mode: str = "auto", slices: int = 3,
         both: str = "acl", labels_dir: str | Path | None = None) -> Manifest:
    """Manifest of MRNet under ``root`` (``mode``: "auto", "slices" or "volumes"); the label CSVs
    are searched under ``labels_dir`` when given (e.g. the MRNet download beside RadImageNet's
    slice folders), else under ``root``."""
    if mode not in ("auto", "slices", "volumes") or both not in ("acl", "meniscus", "exclude") or slices < 1:
        raise DataError(f"knee options mode={mode!r}, both={both!r}, slices={slices}: expected mode in "
                        "auto/slices/volumes, both in acl/meniscus/exclude, slices >= 1")
    log = ProblemLog("knee", skip_bad)
    acl, meniscus = read_labels(Path(labels_dir) if labels_dir is not None else root)
    images = next((c for c in (root / "images", root / "knee" / "images") if c.is_dir()), None)
    if mode == "slices" or (mode == "auto" and images is not None):
        if images is None:
            raise DataError(f"{root}: expected images/{{acl,meniscus}}/ slice folders")
        rows = _slices(images, acl, meniscus, log)
        return make_manifest(rows, CLASSES, "knee", log, options={"mode": "slices"})
    base = next((c for c in (root, root / "MRNet-v1.0") if (c / "train").is_dir() or (c / "valid").is_dir()), root)
    rows = _volumes(base, acl, meniscus, slices, both, log)
    return make_manifest(rows, CLASSES, "knee", log, reader=NpySliceReader(),
                         options={"mode": "volumes", "slices": slices, "both": both})

"""``mammograms``: CBIS-DDSM full mammograms (TCIA DICOM tree, Kaggle's JPEG re-upload, or
images pre-converted to PNG/JPEG and named after their series folder).

The four case-description CSVs (``{mass,calc}_case_description_{train,test}_set.csv``) list
abnormalities, not images: rows are grouped by image (the first component of ``image file
path``, e.g. ``Mass-Training_P_00001_LEFT_CC``, which is the series folder of the TCIA download),
each image counted once, malignant if any of its rows is MALIGNANT, else benign (BENIGN,
BENIGN_WITHOUT_CALLBACK). Group = ``patient_id``.

Where the pixels are, in this order:
1. a file ``<series folder>.png|.jpg|...`` anywhere under ``root`` (pre-converted);
2. Kaggle: ``dicom_info.csv`` rows with ``PatientID`` = series folder and ``SeriesDescription``
   "full mammogram images" give ``image_path`` (``CBIS-DDSM/jpeg/<uid>/1-<n>.jpg``);
3. TCIA: the folder named exactly like the series (ROI and cropped series live in
   ``<series>_<n>/`` and are never matched) holding one ``.dcm`` (if several, the one below a
   "full mammogram images" folder).
An image found in none of these is reported.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path, PurePosixPath

import pandas as pd

from medtransfer.data.datasets._common import IMAGE_SUFFIXES, JUNK_DIRS, read_table
from medtransfer.data.manifest import Manifest, ProblemLog, make_manifest
from medtransfer.errors import DataError

CLASSES = ["benign", "malignant"]
PATHOLOGIES = {"MALIGNANT": 1, "BENIGN": 0, "BENIGN_WITHOUT_CALLBACK": 0}
CSV_PATTERN = "*_case_description_*_set.csv"


def _series(path_field: str) -> str:
    parts = PurePosixPath(str(path_field).strip().strip('"').replace("\\", "/")).parts
    return parts[0] if parts else ""


def read_descriptions(files: list[Path], log: ProblemLog) -> dict[str, dict]:
    """series folder -> {"patient", "labels": set, "source"} from the case-description CSVs."""
    images: dict[str, dict] = {}
    for path in files:
        try:
            table = pd.read_csv(path, dtype=str, keep_default_na=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
            log.add(path, f"unreadable CSV ({error})")
            continue
        table.columns = [c.strip().lower() for c in table.columns]
        missing = {"patient_id", "image file path", "pathology"} - set(table.columns)
        if missing:
            log.add(path, f"missing columns {sorted(missing)}")
            continue
        for line, (patient, image, pathology) in enumerate(
                zip(table["patient_id"], table["image file path"], table["pathology"]), start=2):
            pathology = pathology.strip().upper()
            series = _series(image)
            if pathology not in PATHOLOGIES:
                log.add(f"{path}:{line}", f"pathology {pathology!r}; expected one of {sorted(PATHOLOGIES)}")
                continue
            if not series:
                log.add(f"{path}:{line}", "empty 'image file path'")
                continue
            entry = images.setdefault(series, {"patient": patient.strip(), "labels": set(), "source": path})
            entry["labels"].add(PATHOLOGIES[pathology])
    return images


def _walk(root: Path) -> tuple[dict[str, list[Path]], dict[str, list[Path]], list[Path]]:
    """(directories by name, image files by stem, dicom_info.csv files) under root."""
    dirs: dict[str, list[Path]] = defaultdict(list)
    files: dict[str, list[Path]] = defaultdict(list)
    infos: list[Path] = []
    for here, subdirs, names in os.walk(root):
        subdirs[:] = [d for d in subdirs if d not in JUNK_DIRS and not d.startswith(".")]
        base = Path(here)
        for d in subdirs:
            dirs[d].append(base / d)
        for name in names:
            if name.startswith("."):
                continue
            p = base / name
            if name.lower() == "dicom_info.csv":
                infos.append(p)
            elif p.suffix.lower() in IMAGE_SUFFIXES and p.suffix.lower() != ".dcm":
                files[p.stem].append(p)
    return dirs, files, infos


def _kaggle_paths(infos: list[Path], root: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for info in infos:
        table = read_table(info, "the Kaggle release's dicom_info.csv (image_path, PatientID, SeriesDescription)",
                           dtype=str, keep_default_na=False)
        if not {"image_path", "PatientID", "SeriesDescription"} <= set(table.columns):
            continue
        full = table[table["SeriesDescription"].str.strip().str.lower() == "full mammogram images"]
        for series, image_path in zip(full["PatientID"], full["image_path"]):
            rel = PurePosixPath(image_path.replace("\\", "/"))
            for candidate in (root / rel, root / Path(*rel.parts[1:]), info.parent.parent / Path(*rel.parts[1:])):
                if candidate.is_file():
                    found[series.strip()] = candidate
                    break
    return found


def _dicom_in(folder: Path) -> list[Path]:
    found = sorted(p for p in folder.rglob("*.dcm") if not p.name.startswith("."))
    full = [p for p in found if "full mammogram" in str(p.relative_to(folder)).lower()]
    return full or found


def load(root: Path, *, skip_bad: bool = False) -> Manifest:
    """Manifest of CBIS-DDSM under ``root`` (the folder holding the CSVs and the images)."""
    log = ProblemLog("mammograms", skip_bad)
    csvs = sorted(p for p in root.rglob(CSV_PATTERN) if not p.name.startswith("."))
    if not csvs:
        raise DataError(f"{root}: no {{mass,calc}}_case_description_{{train,test}}_set.csv files found")
    images = read_descriptions(csvs, log)
    dirs, files, infos = _walk(root)
    kaggle = _kaggle_paths(infos, root) if infos else {}
    rows, conflicts = [], []
    for series in sorted(images):
        entry = images[series]
        label = max(entry["labels"])
        if len(entry["labels"]) > 1:
            conflicts.append(series)
        if len(files.get(series, [])) == 1:
            ref = files[series][0]
        elif series in kaggle:
            ref = kaggle[series]
        elif series in dirs:
            dicoms = [d for folder in dirs[series] for d in _dicom_in(folder)]
            if len(dicoms) != 1:
                log.add(dirs[series][0], f"expected one full-mammogram .dcm in the series folder, found {len(dicoms)}")
                continue
            ref = dicoms[0]
        elif len(files.get(series, [])) > 1:
            log.add(files[series][0], f"{len(files[series])} files are named {series}.*; expected one")
            continue
        else:
            log.add(entry["source"], f"image {series}: no file {series}.png/.jpg, no dicom_info.csv entry "
                                     f"and no series folder {series}/ under {root}")
            continue
        rows.append({"image_id": series, "ref": str(ref), "label": label, "group": entry["patient"]})
    return make_manifest(rows, CLASSES, "mammograms", log, options={"conflicting_rows": conflicts})

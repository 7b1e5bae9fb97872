"""The manifest: one row per image of a dataset (image id, reference, integer label, group).

A manifest is what every loader returns and what folds, the pixel cache and training consume.
Images are read through the manifest's ``reader``, so that files on disk, slices of volumes,
rows of an HDF5 array and in-memory arrays all look the same: ``read_image(i) -> (h, w, 3) uint8``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from medtransfer.data.images import FileReader, ImageReader
from medtransfer.errors import DataError

COLUMNS = ("image_id", "ref", "label", "group")


@dataclass(frozen=True)
class SkippedFile:
    """A file a loader did not turn into a manifest row, and why.

    ``problem`` is True for bad input (unreadable image, missing or conflicting label) and False
    for files left out on purpose by an option (e.g. ``drop_empty_tirads=True``).
    """

    path: str
    reason: str
    problem: bool = True


class ProblemLog:
    """Collects problems found while loading; raises them together or keeps them as skipped files.

    ``skip_bad=False`` (the default everywhere): ``raise_if_any()`` raises one ``DataError`` that
    names every bad file (the first 20, then a count). ``skip_bad=True``: the files are returned
    by ``skipped`` and the caller leaves them out of the manifest.
    """

    def __init__(self, dataset: str, skip_bad: bool = False) -> None:
        self.dataset = dataset
        self.skip_bad = skip_bad
        self.problems: list[SkippedFile] = []
        self.excluded: list[SkippedFile] = []
        self.notes: dict[str, int] = {}

    def add(self, path: object, reason: str) -> None:
        """Record bad input at ``path``."""
        self.problems.append(SkippedFile(str(path), reason, True))

    def exclude(self, path: object, reason: str) -> None:
        """Record a file left out on purpose (by an option), never an error."""
        self.excluded.append(SkippedFile(str(path), reason, False))

    def note(self, what: str, count: int = 1) -> None:
        """Count what a loader's rules or options did to files that are not problems: merged into
        a class, ignored as not part of the dataset (e.g. "mask files ignored")."""
        self.notes[what] = self.notes.get(what, 0) + count

    @property
    def skipped(self) -> list[SkippedFile]:
        return [*self.problems, *self.excluded]

    def raise_if_any(self) -> None:
        """Raise ``DataError`` listing the problems, unless ``skip_bad`` is set or there are none."""
        if self.skip_bad or not self.problems:
            return
        raise DataError(format_problems(self.dataset, self.problems))


def reason_of(error: Exception, path: str) -> str:
    """An error's message without a leading ``"<path>: "`` (the path is listed beside it)."""
    text = str(error)
    return text[len(path) + 2:] if text.startswith(f"{path}: ") else text


def format_problems(dataset: str, problems: list[SkippedFile], limit: int = 20) -> str:
    """One message naming each bad file and what is wrong with it."""
    lines = [f"{dataset}: {len(problems)} problem(s) in the input; to leave these files out (and list them), "
             f"give `skip_bad: true` in the study target's options (options: {{skip_bad: true}}), or --skip-bad "
             f"to `medtransfer data check|folds|cache`:"]
    lines += [f"  {p.path}: {p.reason}" for p in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"  ... and {len(problems) - limit} more")
    return "\n".join(lines)


@dataclass
class Manifest:
    """A dataset as a table of images.

    Attributes:
        frame: columns ``image_id`` (str, unique), ``ref`` (str, how ``reader`` finds the image),
            ``label`` (int in ``0..len(classes)-1``), ``group`` (str: patient, case or lesion; the
            image id itself when the dataset has none).
        classes: class names, index = label.
        name: dataset name (e.g. ``"chest"``).
        skipped: files not in ``frame``, each with a reason.
        reader: turns a ``ref`` into pixels.
        options: the loader options that produced this manifest (for the record and cache keys).
        notes: what the loader's rules and options did, as counts (``{"mask files ignored": 647}``).
    """

    frame: pd.DataFrame
    classes: list[str]
    name: str
    skipped: list[SkippedFile] = field(default_factory=list)
    reader: ImageReader = field(default_factory=FileReader)
    options: dict[str, Any] = field(default_factory=dict)
    notes: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = [c for c in COLUMNS if c not in self.frame.columns]
        if missing:
            raise DataError(f"manifest {self.name!r}: missing columns {missing}; expected {list(COLUMNS)}")
        frame = self.frame.loc[:, list(COLUMNS)].reset_index(drop=True)
        frame = frame.astype({"image_id": str, "ref": str, "group": str})
        frame["label"] = frame["label"].astype(np.int64)
        dup = frame["image_id"][frame["image_id"].duplicated()]
        if len(dup):
            raise DataError(f"manifest {self.name!r}: duplicate image ids, e.g. {dup.iloc[0]!r}")
        if len(frame) and (frame["label"].min() < 0 or frame["label"].max() >= len(self.classes)):
            raise DataError(f"manifest {self.name!r}: labels must lie in 0..{len(self.classes) - 1} "
                            f"for classes {self.classes}")
        self.frame = frame

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def labels(self) -> np.ndarray:
        """(N,) int64 labels."""
        return self.frame["label"].to_numpy()

    @property
    def groups(self) -> np.ndarray:
        """(N,) group keys (str)."""
        return self.frame["group"].to_numpy()

    @property
    def image_ids(self) -> np.ndarray:
        """(N,) image ids (str)."""
        return self.frame["image_id"].to_numpy()

    def read_image(self, i: int) -> np.ndarray:
        """Pixels of row ``i``: (h, w, 3) uint8 RGB."""
        return self.reader.read(self.frame["ref"].iat[i])

    def class_counts(self) -> dict[str, int]:
        """Images per class name, in class order."""
        counts = np.bincount(self.labels, minlength=len(self.classes))
        return {name: int(n) for name, n in zip(self.classes, counts)}

    def subset(self, rows: Iterable[int] | np.ndarray) -> Manifest:
        """A manifest of the given rows (positions or a boolean mask), same classes and reader."""
        rows = np.asarray(list(rows) if not isinstance(rows, np.ndarray) else rows)
        frame = self.frame.iloc[np.flatnonzero(rows) if rows.dtype == bool else rows]
        return replace(self, frame=frame.reset_index(drop=True))

    def summary(self) -> dict[str, Any]:
        """What ``medtransfer data check`` reports: images, classes (name -> count), groups,
        skipped files (all), problems (bad input only), and notes: what the loader's rules did
        (counts of files merged, left out by an option - grouped by reason - and ignored)."""
        excluded: dict[str, int] = {}
        for s in self.skipped:
            if not s.problem:
                excluded[s.reason] = excluded.get(s.reason, 0) + 1
        return {
            "name": self.name,
            "images": len(self),
            "classes": self.class_counts(),
            "groups": int(self.frame["group"].nunique()),
            "skipped": [{"path": s.path, "reason": s.reason} for s in self.skipped],
            "problems": [{"path": s.path, "reason": s.reason} for s in self.skipped if s.problem],
            "notes": {**self.notes, **excluded},
        }


def make_manifest(rows: list[dict[str, Any]] | pd.DataFrame, classes: list[str], name: str,
                  log: ProblemLog | None = None, reader: ImageReader | None = None,
                  options: dict[str, Any] | None = None) -> Manifest:
    """Build a manifest from rows, after raising the log's problems (unless skipping)."""
    if log is not None:
        log.raise_if_any()
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows, columns=list(COLUMNS))
    if len(frame) == 0:
        raise DataError(f"{name}: no images found" + (
            f" ({len(log.skipped)} file(s) skipped, e.g. {log.skipped[0].path}: {log.skipped[0].reason})"
            if log is not None and log.skipped else ""))
    return Manifest(frame=frame, classes=list(classes), name=name,
                    skipped=log.skipped if log is not None else [],
                    reader=reader if reader is not None else FileReader(),
                    options=dict(options or {}), notes=dict(log.notes) if log is not None else {})

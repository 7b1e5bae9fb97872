"""``csv``: a user's own list of images, ``root`` = a CSV with columns ``path,label[,group]``.

Relative paths are taken from the CSV's folder. Labels may be names or integers; classes are the
distinct labels in sorted order (numerically when all are integers) unless ``classes`` is given.
A number written as a float with an integral value (``1.0``) is the integer label (``1``); any
other non-integral number is refused. A path listed twice (however written: ``./a/b.png``,
``a//b.png`` and ``a/b.png`` are one file) with the same label counts once; with different labels
it is an error (conflicting labels), as is a missing image file or an empty label.
"""

from __future__ import annotations

import csv
import math
import os
import warnings
from pathlib import Path

import pandas as pd

from medtransfer.data.manifest import Manifest, ProblemLog, make_manifest
from medtransfer.errors import DataError


def _normalised_path(path: str) -> str:
    """One spelling per path: ``./a/b.png``, ``a//b.png``, ``a/./b.png`` -> ``a/b.png``."""
    return Path(os.path.normpath(path)).as_posix()


def _file_key(path: str, base: Path) -> str:
    """The file a listed path names, for finding one file listed twice (relative and absolute)."""
    return os.path.normpath(path if Path(path).is_absolute() else base.absolute() / path)


def _normalised_label(label: str) -> tuple[str, bool]:
    """``(label, not_an_integer)``: ``"1.0"`` and ``"+1"`` -> ``"1"``; a non-integral number is flagged."""
    try:
        number = float(label)
    except ValueError:
        return label, False
    if not math.isfinite(number) or number != int(number):
        return label, True
    return str(int(number)), False


def _long_row(path: Path) -> str:
    """Which line of ``path`` has more fields than its header."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = csv.reader(handle)
        width = len(next(rows, []))
        for line, row in enumerate(rows, start=2):
            if len(row) > width:
                return f"line {line} has {len(row)} fields, the header {width}"
    return f"a line has more fields than the header ({width})"


def load(root: Path, *, skip_bad: bool = False, classes: list[str] | None = None) -> Manifest:
    """Manifest of the images a CSV lists."""
    if not root.is_file():
        raise DataError(f"{root}: expected a CSV file with columns path,label[,group]")
    try:
        with warnings.catch_warnings():  # a row longer than the header: pandas would shift it silently
            warnings.simplefilter("error", pd.errors.ParserWarning)
            table = pd.read_csv(root, dtype=str, keep_default_na=False, index_col=False)
    except pd.errors.ParserWarning:
        raise DataError(f"{root}: {_long_row(root)}; expected columns path,label[,group]") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise DataError(f"{root}: unreadable CSV ({' '.join(str(error).split())})") from error
    table.columns = [c.strip().lower() for c in table.columns]
    if not {"path", "label"} <= set(table.columns):
        raise DataError(f"{root}: columns {list(table.columns)}; expected path,label[,group]")
    log = ProblemLog("csv", skip_bad)
    base = root.parent
    first: dict[str, tuple[int, str, str, str]] = {}  # file -> (line, label, group, path as listed)
    conflicted: set[str] = set()
    for line, row in enumerate(table.itertuples(index=False), start=2):
        path, label = row.path.strip(), row.label.strip()
        group = getattr(row, "group", "").strip() if "group" in table.columns else ""
        if not path or not label:
            log.add(f"{root}:{line}", "empty path or label")
            continue
        path = _normalised_path(path)
        label, bad_label = _normalised_label(label)
        if bad_label:
            log.add(f"{root}:{line}", f"label {label!r} is a number that is not an integer; expected a class "
                                      "name or an integer class index")
            continue
        key = _file_key(path, base)
        if key in first:
            if first[key][1] != label:
                if key not in conflicted:
                    log.add(f"{root}:{line}", f"{path}: conflicting labels {first[key][1]!r} (line "
                                              f"{first[key][0]}) and {label!r}")
                conflicted.add(key)
            continue
        first[key] = (line, label, group, path)
    kept = []
    for key, (line, label, group, path) in first.items():
        if key in conflicted:
            continue
        file = Path(path) if Path(path).is_absolute() else base / path
        if not file.is_file():
            log.add(file, f"listed at {root.name}:{line} but not found")
            continue
        kept.append((path, file, label, group))
    values = sorted({label for _, _, label, _ in kept})
    if classes is None:
        numeric = all(v.lstrip("-").isdigit() for v in values)
        names = sorted(values, key=int) if numeric else values
    else:
        names = list(classes)
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise DataError(f"{root}: labels {unknown} are not among classes {names}")
    index = {name: i for i, name in enumerate(names)}
    rows = [{"image_id": path, "ref": str(file), "label": index[label], "group": group or path}
            for path, file, label, group in kept]
    return make_manifest(rows, names, "csv", log)

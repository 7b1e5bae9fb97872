"""``csv``: a user's own list of images, ``root`` = a CSV with columns ``path,label[,group]``.

Relative paths are taken from the CSV's folder. Labels may be names or integers; classes are the
distinct labels in sorted order (numerically when all are integers) unless ``classes`` is given.
A path listed twice with the same label counts once; with different labels it is an error
(conflicting labels), as is a missing image file or an empty label.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medtransfer.data.manifest import Manifest, ProblemLog, make_manifest
from medtransfer.errors import DataError


def load(root: Path, *, skip_bad: bool = False, classes: list[str] | None = None) -> Manifest:
    """Manifest of the images a CSV lists."""
    if not root.is_file():
        raise DataError(f"{root}: expected a CSV file with columns path,label[,group]")
    try:
        table = pd.read_csv(root, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise DataError(f"{root}: unreadable CSV ({error})") from error
    table.columns = [c.strip().lower() for c in table.columns]
    if not {"path", "label"} <= set(table.columns):
        raise DataError(f"{root}: columns {list(table.columns)}; expected path,label[,group]")
    log = ProblemLog("csv", skip_bad)
    base = root.parent
    first: dict[str, tuple[int, str, str]] = {}
    conflicted: set[str] = set()
    for line, row in enumerate(table.itertuples(index=False), start=2):
        path, label = row.path.strip(), row.label.strip()
        group = getattr(row, "group", "").strip() if "group" in table.columns else ""
        if not path or not label:
            log.add(f"{root}:{line}", "empty path or label")
            continue
        if path in first:
            if first[path][1] != label:
                if path not in conflicted:
                    log.add(f"{root}:{line}", f"{path}: conflicting labels {first[path][1]!r} (line "
                                              f"{first[path][0]}) and {label!r}")
                conflicted.add(path)
            continue
        first[path] = (line, label, group)
    kept = []
    for path, (line, label, group) in first.items():
        if path in conflicted:
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

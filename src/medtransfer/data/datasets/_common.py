"""Helpers shared by the dataset loaders: image file listing without download junk."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from medtransfer.data.manifest import ProblemLog
from medtransfer.errors import DataError

IMAGE_SUFFIXES = frozenset({".jpeg", ".jpg", ".png", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".dcm"})
JUNK_NAMES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})
JUNK_DIRS = frozenset({"__MACOSX"})


def is_junk(path: Path) -> bool:
    """macOS resource forks (``._x``), ``.DS_Store``, ``__MACOSX/`` and other hidden files."""
    return path.name in JUNK_NAMES or path.name.startswith(".") or any(p in JUNK_DIRS for p in path.parts)


def is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def image_files(folder: Path, log: ProblemLog | None = None, recursive: bool = False,
                ignore: tuple[str, ...] = ()) -> Iterator[Path]:
    """Image files in ``folder`` (sorted), skipping junk and files with a suffix in ``ignore``;
    other files are listed in ``log`` as left out (not an error: e.g. a README beside the images)."""
    entries = folder.rglob("*") if recursive else folder.iterdir()
    for path in sorted(entries):
        if is_junk(path.relative_to(folder)) or path.is_dir() or path.suffix.lower() in ignore:
            continue
        if is_image_name(path):
            yield path
        elif log is not None:
            log.exclude(path, "not an image file (expected " + ", ".join(sorted(IMAGE_SUFFIXES)) + ")")


def read_table(path: Path, expected: str, **options: Any) -> pd.DataFrame:
    """``pd.read_csv(path, **options)``, or a ``DataError`` naming the file, what is wrong (a row
    with more fields than the header, bad bytes, nothing in it) and ``expected`` (its layout)."""
    try:
        return pd.read_csv(path, **options)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as error:
        reason = " ".join(str(error).split()).removeprefix("Error tokenizing data. C error: ")
        raise DataError(f"{path}: not a readable CSV table ({reason}); expected {expected}") from None

"""Progress reporting for long work: one place, so that library code never prints directly."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def progress_enabled() -> bool:
    """Progress bars show on a terminal unless MEDTRANSFER_QUIET=1."""
    if os.environ.get("MEDTRANSFER_QUIET", "") == "1":
        return False
    return sys.stderr.isatty() or os.environ.get("MEDTRANSFER_PROGRESS", "") == "1"


def track(iterable: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Yield from ``iterable`` while showing a rich progress bar on stderr (when enabled)."""
    if not progress_enabled():
        yield from iterable
        return
    from rich.progress import track as rich_track

    yield from rich_track(iterable, description=description, total=total, transient=True)

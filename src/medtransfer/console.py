"""Console output shared by every layer, so that library code never prints directly.

- :func:`track`: a rich progress bar over an iterable on a terminal (downloads, caching, analysis).
- :func:`count_finished`: finished items with a bar on a terminal, one plain line each otherwise.
- :func:`clock`, :func:`write_line`: the formats the run views (:mod:`medtransfer.training.progress`)
  and the study status share.

Environment: ``MEDTRANSFER_QUIET=1`` silences everything; ``MEDTRANSFER_PROGRESS=1`` shows
terminal-style progress even when stderr is not a terminal.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, TypeVar

from rich.progress import track as rich_track

T = TypeVar("T")


def quiet() -> bool:
    """``MEDTRANSFER_QUIET=1``: no progress output at all."""
    return os.environ.get("MEDTRANSFER_QUIET", "") == "1"


def progress_enabled() -> bool:
    """Terminal-style progress (bars, live lines) shows on a terminal unless MEDTRANSFER_QUIET=1."""
    if quiet():
        return False
    return sys.stderr.isatty() or os.environ.get("MEDTRANSFER_PROGRESS", "") == "1"


def track(iterable: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Yield from ``iterable`` while showing a rich progress bar on stderr (when enabled)."""
    if not progress_enabled():
        yield from iterable
        return
    yield from rich_track(iterable, description=description, total=total, transient=True)


def count_finished(iterable: Iterable[T], description: str, total: int) -> Iterator[T]:
    """Yield finished items (futures, job results) with a bar on a terminal, or one plain line per
    finished item otherwise (``description: k/total finished, elapsed``)."""
    if progress_enabled() or quiet():
        yield from track(iterable, description, total)
        return
    began = time.monotonic()
    for k, item in enumerate(iterable, 1):
        yield item
        write_line(sys.stderr, f"{description}: {k}/{total} finished, {clock(time.monotonic() - began)} elapsed")


def clock(seconds: float | None) -> str:
    """``h:mm:ss`` of a duration in seconds (``-:--:--`` when unknown)."""
    if seconds is None:
        return "-:--:--"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def write_line(stream: IO[str], text: str) -> None:
    """``text`` as one flushed line on ``stream`` (a file or a cluster log shows it at once)."""
    stream.write(text + "\n")
    stream.flush()

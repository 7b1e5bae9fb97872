"""Console output shared by every layer, so that library code never prints directly.

- :func:`track`: a rich progress bar over an iterable on a terminal (downloads, caching, analysis).
- :func:`count_finished`: finished items with a bar on a terminal, one plain line each otherwise.
- :func:`clock`, :func:`write_line`: the formats the run views (:mod:`medtransfer.training.progress`)
  and the study status share.
- :func:`output_console`: the rich console of a command's output, never cut at 80 columns when
  the output goes to a file or a pipe.
- :func:`stages`: one stage of a longer job at a time (``analyze``): a transient spinner with the
  elapsed time on a terminal, one plain line per finished stage otherwise.

Environment: ``MEDTRANSFER_QUIET=1`` silences everything; ``MEDTRANSFER_PROGRESS=1`` shows
terminal-style progress even when stderr is not a terminal.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, TypeVar

from rich.console import Console
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
    if quiet():
        yield from iterable
        return
    if progress_enabled():
        # no time-remaining column: rich would extrapolate it from the few items finished so far
        # (runs of unequal length); the runs' own lines and `status` give ETAs from measured epochs
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("finished,"),
                      TimeElapsedColumn(), TextColumn("elapsed"), console=Console(stderr=True),
                      transient=True) as bar:
            task = bar.add_task(description, total=total)
            for item in iterable:
                yield item
                bar.advance(task)
        return
    began = time.monotonic()
    for k, item in enumerate(iterable, 1):
        yield item
        write_line(sys.stderr, f"{description}: {k}/{total} finished, {clock(time.monotonic() - began)} elapsed")


_LINES: IO[str] | None = None  # where plain progress lines go instead of stderr (see send_lines_to)


def line_stream() -> IO[str]:
    """Where plain progress lines go: stderr, or the parent's queue in a worker process whose
    parent shows a progress bar (:func:`send_lines_to`)."""
    return _LINES if _LINES is not None else sys.stderr


class _QueueLines:
    """A text stream that puts each complete line on a multiprocessing queue."""

    def __init__(self, queue) -> None:  # noqa: ANN001
        self.queue, self.buffer = queue, ""

    def write(self, text: str) -> int:
        self.buffer += text
        *lines, self.buffer = self.buffer.split("\n")
        for line in lines:
            self.queue.put(line)
        return len(text)

    def flush(self) -> None:
        pass


def send_lines_to(queue) -> None:  # noqa: ANN001 - a multiprocessing queue
    """In a worker process: send plain progress lines to ``queue``, for the parent to print above
    its progress bar (a line written to the terminal by another process lands on the bar's line)."""
    global _LINES
    _LINES = _QueueLines(queue)


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


# wide enough for any table medtransfer prints; rich assumes 80 columns for anything that is not a
# terminal and would cut cells to "…" there
FILE_WIDTH = 4096


def output_console(stderr: bool = False, soft_wrap: bool = False) -> Console:
    """A rich console for a command's output on stdout (stderr with ``stderr``): the terminal's
    width on a terminal (long lines left to the terminal with ``soft_wrap``); for a file or a pipe
    no width limit (``FILE_WIDTH`` columns, lines never wrapped), so that a table cell or a long
    line is never cut or folded."""
    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty():
        return Console(stderr=stderr, soft_wrap=soft_wrap)
    return Console(stderr=stderr, width=FILE_WIDTH, soft_wrap=True)


class stages:  # noqa: N801 - used as a context manager, like a function
    """Report the stages of one job on stderr: ``with stages("analyze") as stage: stage("tables");
    ...``. On a terminal a transient spinner names the current stage and its elapsed time; on a
    file or pipe each stage ends with one plain line ``analyze: tables done in 0:00:03``; nothing
    when quiet. The durations of the stages are kept in ``seconds`` (stage name -> seconds)."""

    def __init__(self, job: str) -> None:
        self.job = job
        self.seconds: dict[str, float] = {}
        self._current: str | None = None
        self._began = 0.0
        self._progress = None
        self._task = None

    def __enter__(self) -> "stages":
        if progress_enabled():
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self._progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                                      console=Console(stderr=True), transient=True)
            self._progress.start()
        return self

    def _end(self) -> None:
        if self._current is None:
            return
        took = time.monotonic() - self._began
        self.seconds[self._current] = self.seconds.get(self._current, 0.0) + took
        if self._progress is not None:
            self._progress.console.print(f"{self.job}: {self._current} done in {clock(took)}", highlight=False)
        elif not quiet():
            write_line(sys.stderr, f"{self.job}: {self._current} done in {clock(took)}")
        self._current = None

    def __call__(self, name: str) -> None:
        """End the current stage (if any) and begin ``name``."""
        self._end()
        self._current, self._began = name, time.monotonic()
        if self._progress is not None:
            if self._task is not None:
                self._progress.remove_task(self._task)
            self._task = self._progress.add_task(f"{self.job}: {name}", total=None)

    def __exit__(self, kind, *rest) -> None:  # noqa: ANN001
        if kind is None:
            self._end()
        if self._progress is not None:
            self._progress.stop()

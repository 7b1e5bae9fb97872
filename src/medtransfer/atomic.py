"""Atomic file writes: a reader (or a process killed mid-write) never sees a half-written file.

Every file a run or a study writes goes through here: the content goes to a unique temporary
file beside the target, then one ``os.replace`` swaps it in. The file gets the permissions an
ordinary ``open`` would give it (``0o666`` less the user's umask; ``tempfile`` alone makes
``0o600``), so colleagues on a shared cluster can read a study.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def current_umask() -> int:
    """The process' umask (read without changing it where ``/proc`` tells it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a new regular file gets: ``0o666`` less the umask."""
    return 0o666 & ~current_umask()


TEMP_GLOB = ".*.tmp"  # what write_atomic's temporary files look like (".{name}.{random}.tmp")


def temp_files(folder: str | os.PathLike) -> list[Path]:
    """The temporary files of :func:`write_atomic` in ``folder`` (a live writer's, or left by a kill)."""
    return sorted(Path(folder).glob(TEMP_GLOB))


def write_atomic(path: str | os.PathLike, write: Callable[[IO[bytes]], Any], *, fsync: bool = False) -> Path:
    """Call ``write(handle)`` on a temporary binary file beside ``path``, then rename it over ``path``.

    ``fsync=True`` also flushes the data to disk before the rename (for files that must survive a
    power cut, such as model checkpoints). The temporary file is removed if ``write`` fails.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_text_atomic(path: str | os.PathLike, text: str, *, fsync: bool = False) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; see :func:`write_atomic`."""
    return write_atomic(path, lambda handle: handle.write(text.encode("utf-8")), fsync=fsync)

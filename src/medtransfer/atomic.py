"""Atomic file writes: a reader (or a process killed mid-write) never sees a half-written file.

Every file a run or a study writes goes through here: the content goes to a unique temporary
file beside the target, then one ``os.replace`` swaps it in. The file gets the permissions an
ordinary ``open`` would give it (``0o666`` less the user's umask; ``tempfile`` alone makes
``0o600``), so colleagues on a shared cluster can read a study.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from medtransfer.errors import StorageError


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


def storage_error(path: str | os.PathLike, error: OSError, doing: str = "cannot write") -> StorageError:
    """A sentence for an ``OSError`` met on ``path``: the system's reason first ("No space left on
    device", "Permission denied", "Read-only file system"), then the path and what helps."""
    reason = error.strerror or (os.strerror(error.errno) if error.errno else str(error))
    hint = {errno.ENOSPC: "free some space there, or choose a folder on another disk",
            errno.EDQUOT: "your disk quota there is used up: free some space, or choose another folder",
            errno.EROFS: "choose a folder on a writable disk",
            errno.EACCES: "check the folder's owner and permissions, or choose another folder",
            errno.EPERM: "check the folder's owner and permissions, or choose another folder"}.get(error.errno)
    return StorageError(f"{reason}: {doing + ' ' if doing else ''}{path}" + (f" ({hint})" if hint else ""))


def check_folder(path: str | os.PathLike, *, write: bool, what: str = "folder") -> None:
    """Refuse, before any work, a folder that cannot be read (listed) or, with ``write``, written
    (or created: its nearest existing parent is checked): :class:`StorageError` naming it."""
    path = Path(path)
    with writing(path):
        exists = path.exists()
        if exists and not path.is_dir():
            raise StorageError(f"{what} {path} is a file; expected a folder")
        if exists and not os.access(path, os.R_OK | os.X_OK):
            raise storage_error(path, PermissionError(errno.EACCES, os.strerror(errno.EACCES)),
                                f"{what} cannot be read:")
        if not write:
            return
        existing = path if exists else next((p for p in path.absolute().parents if p.exists()), None)
        if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
            reason = errno.EROFS if _read_only_mount(existing) else errno.EACCES
            where = "" if existing == path else f" (its parent {existing} cannot be written)"
            raise storage_error(path, PermissionError(reason, os.strerror(reason)),
                                f"{what}{where} cannot be written:")


def _read_only_mount(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


@contextlib.contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Turn an ``OSError`` raised inside the block into a :class:`StorageError` naming ``path``."""
    try:
        yield
    except StorageError:
        raise
    except OSError as error:
        raise storage_error(error.filename or path, error) from error


class _Recorded:
    """A binary file that remembers the first ``OSError`` of a write: a library that writes through
    a callback may replace it with a vaguer error of its own (torch.save's zip writer: "unexpected
    pos"), or swallow it."""

    def __init__(self, handle: IO[bytes]) -> None:
        self._handle = handle
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self._handle.write(data)
        except OSError as error:
            self.error = self.error or error
            raise

    def flush(self) -> None:
        try:
            self._handle.flush()
        except OSError as error:
            self.error = self.error or error
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)


def write_atomic(path: str | os.PathLike, write: Callable[[IO[bytes]], Any], *, fsync: bool = False) -> Path:
    """Call ``write(handle)`` on a temporary binary file beside ``path``, then rename it over ``path``.

    ``fsync=True`` also flushes the data to disk before the rename (for files that must survive a
    power cut, such as model checkpoints). The temporary file is removed if ``write`` fails. A full
    disk, a read-only or foreign folder raise :class:`StorageError` naming ``path`` ("No space left
    on device: cannot write ..."), whatever error the library inside ``write`` made of it.
    """
    path = Path(path)
    if path.is_dir():  # os.replace would name the temporary file, and only after the whole write
        raise storage_error(path, IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR)),
                            "cannot write a file over the folder")
    with writing(path.parent):
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:  # named after the file being written, not the temporary one
        raise storage_error(path, error) from error
    handle = None
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb") as raw:
            handle = _Recorded(raw)
            write(handle)  # type: ignore[arg-type]
            handle.flush()
            if fsync:
                os.fsync(raw.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            if os.path.exists(tmp):
                os.unlink(tmp)
        cause = handle.error if handle is not None and handle.error is not None else None
        if cause is None and isinstance(error, OSError) and not isinstance(error, FileNotFoundError) \
                and error.errno in _WRITE_ERRNOS:
            cause = error
        if cause is not None and not isinstance(error, (KeyboardInterrupt, SystemExit)):
            raise storage_error(path, cause) from error
        raise
    return path


# the errors of a write that are the disk's or the folder's, not the caller's
_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG,
                           errno.EIO})


def write_text_atomic(path: str | os.PathLike, text: str, *, fsync: bool = False) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; see :func:`write_atomic`."""
    return write_atomic(path, lambda handle: handle.write(text.encode("utf-8")), fsync=fsync)

"""One owner per run: the claim file ``RUNNING`` in a run directory, taken atomically.

A claim is a small JSON file ``{host, pid, job, started, proc_start, token}`` created with
``os.link`` from a complete temporary file, which fails when the claim exists - atomic on a local
disk and on NFS, so two processes (two drivers, a driver and a job, a requeued job and its
earlier self) never both own a run. A claim whose owner is dead is broken, under a second
lock file so that only one process breaks it:

- a claim with a SLURM ``job`` id belongs to that job: alive while ``squeue`` lists it (queued,
  running or requeued), dead once it does not; a job that finds a claim with its own id (its
  driver's submission claim, or its incarnation before a requeue) takes it over;
- otherwise a claim made on this host is alive while its ``pid`` runs (the same process: the
  start time in ``/proc`` must match, so a reused pid does not count);
- a claim from another host that no scheduler can vouch for is alive while the run directory
  keeps changing (``stale_after_s``). Such a claim is *unverifiable* (:func:`unverifiable`): a
  study copied from a cluster carries its claims along, so ``run`` names them at once
  (:func:`describe`) and ``run --steal-claims`` removes them (:func:`steal`).
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from medtransfer.atomic import file_mode, write_text_atomic
from medtransfer.errors import ConfigError
from medtransfer.study import slurm
from medtransfer.training.record import RunDir  # the claim's file name belongs to the run record

_BREAK_LOCK_STALE_S = 60.0
#: An unreadable ``RUNNING`` (not JSON) younger than this is left alone (it may be one being
#: replaced); older, it is taken over.
UNREADABLE_GRACE_S = _BREAK_LOCK_STALE_S
_held: dict[str, str] = {}  # run directory -> token of the claims this process holds


def own_job_ids() -> set[str]:
    """The ids this process's SLURM job goes by: ``JOB``, and ``ARRAY_TASK`` for an array task."""
    env = os.environ
    ids = {env[name] for name in ("SLURM_JOB_ID",) if env.get(name)}
    array, task = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        ids.add(f"{array}_{task}")
        if task == "0":
            ids.add(array)  # a one-task array is known to submitit by its array id alone
    return ids


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name (Linux), None elsewhere or when gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def _proc_start(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux), None elsewhere."""
    fields = _proc_stat(pid)
    return fields[19] if fields else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a process that ended but was not reaped yet (a zombie) still answers; in a container whose
    # first process reaps nothing, an orphaned worker stays one for good
    fields = _proc_stat(pid)
    return fields is None or fields[0] not in ("Z", "X")


def owner_record(job: str | None = None) -> dict[str, Any]:
    """A claim for this process (``job``: a SLURM job id it stands for; default its own)."""
    jobs = sorted(own_job_ids(), key=len)
    return {"host": socket.gethostname(), "pid": os.getpid(), "job": job or (jobs[-1] if jobs else None),
            "started": time.time(), "proc_start": _proc_start(os.getpid()), "token": uuid.uuid4().hex}


def read(directory: Path) -> dict[str, Any] | None:
    """The claim on ``directory``, or None (no claim, or one being written)."""
    try:
        info = json.loads(RunDir(directory).running.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return info if isinstance(info, dict) else None


def is_mine(info: dict[str, Any]) -> bool:
    """Whether ``info`` is a claim of this very process, or one for this process's SLURM job (a
    claim handed to a job belongs to the job, even when this process made it)."""
    if info.get("job"):
        return str(info["job"]) in own_job_ids()
    return info.get("host") == socket.gethostname() and info.get("pid") == os.getpid()


def alive(info: dict[str, Any] | None, directory: Path | None = None, stale_after_s: float = 900.0) -> bool:
    """Whether the owner of claim ``info`` still runs (see the module docstring)."""
    if info is None:
        return False
    if info.get("job"):
        listed = slurm.job_listed(str(info["job"]))
        if listed is not None:
            return listed
    if info.get("host") == socket.gethostname() and info.get("pid"):
        pid = int(info["pid"])
        if not _pid_alive(pid):
            return False
        recorded, now = info.get("proc_start"), _proc_start(pid)
        return recorded is None or now is None or recorded == now
    if directory is None:
        return True
    files = [p for p in Path(directory).rglob("*") if p.is_file()]
    newest = max((p.stat().st_mtime for p in files), default=0.0)
    return time.time() - newest < stale_after_s


def unverifiable(info: dict[str, Any] | None) -> bool:
    """Whether claim ``info`` belongs to another host and no scheduler here can say if it lives
    (no SLURM job id, or one that ``squeue`` cannot be asked about from this machine)."""
    if info is None or (info.get("host") == socket.gethostname() and info.get("pid")):
        return False
    return not info.get("job") or slurm.job_listed(str(info["job"])) is None


def describe(directory: Path, info: dict[str, Any], stale_after_s: float = 900.0) -> str:
    """One line about an unverifiable claim: who holds it, and how long ``run`` waits for it."""
    files = [p for p in Path(directory).rglob("*") if p.is_file()]
    age = time.time() - max((p.stat().st_mtime for p in files), default=0.0)
    job = f", SLURM job {info['job']}" if info.get("job") else ""
    since = time.strftime("%Y-%m-%d %H:%M", time.localtime(info["started"])) \
        if isinstance(info.get("started"), (int, float)) else "an unknown time"
    wait = max(stale_after_s - age, 0.0)
    return (f"{directory}: claimed by host {info.get('host')!r} (pid {info.get('pid')}{job}) since {since}; this "
            f"machine cannot check that owner, so it counts as alive until the run's files stay unchanged for "
            f"{stale_after_s / 60:.0f} min (about {wait / 60:.0f} min from now)")


def steal(directory: Path) -> bool:
    """Remove an unverifiable claim on ``directory`` (see :func:`unverifiable`); True when one was
    removed. A claim whose owner this machine can check (a process here, a SLURM job that
    ``squeue`` lists) is never removed."""
    current = read(directory)
    if current is None or not unverifiable(current):
        return False
    path = RunDir(Path(directory)).running
    lock = RunDir(Path(directory)).claim_lock
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    os.close(fd)
    try:
        now = read(directory)
        if now is None or now.get("token") != current.get("token"):
            return False
        path.unlink(missing_ok=True)
        return True
    finally:
        lock.unlink(missing_ok=True)


def queued(info: dict[str, Any] | None) -> bool:
    """Whether claim ``info`` is a SLURM job still waiting to start (or to restart, requeued)."""
    if not info or not info.get("job") or info.get("host") is None:
        return False
    try:
        entry = slurm.lookup(slurm.queue([str(info["job"])]), str(info["job"]))
    except ConfigError:
        return False
    return entry is not None and entry[0] == "PENDING"


def _link_new(path: Path, info: dict[str, Any]) -> bool:
    """Create ``path`` holding ``info`` unless it exists (atomic: link of a complete file)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".claim", dir=path.parent)
    try:
        os.fchmod(fd, file_mode())  # readable as an ordinary file (mkstemp makes 0600): `status` of a colleague
        with os.fdopen(fd, "w") as handle:
            json.dump(info, handle)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError:  # a filesystem without hard links: exclusive create instead
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "w") as handle:
                json.dump(info, handle)
        return True
    finally:
        os.unlink(tmp)


def _replace(path: Path, info: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(info), fsync=True)


def claim(directory: Path, job: str | None = None) -> bool:
    """Make this process (or SLURM ``job``) the owner of run ``directory``; False when another
    live owner holds it. A dead owner's claim, or one of this process or its job, is taken over."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = RunDir(directory).running
    info = owner_record(job)
    for _ in range(3):
        if _link_new(path, info):
            _held[str(directory)] = info["token"]
            return True
        current = read(directory)
        if current is None:  # vanished, or unreadable: look again
            if path.exists() and time.time() - path.stat().st_mtime < UNREADABLE_GRACE_S:
                return False
            current = {"token": None}
        elif not is_mine(current) and alive(current, directory):
            return False
        if _break(path, current, info):
            _held[str(directory)] = info["token"]
            return True
    return False


def _break(path: Path, seen: dict[str, Any], info: dict[str, Any]) -> bool:
    """Replace the claim ``seen`` (dead, or ours) by ``info``, unless someone else got there first."""
    lock = RunDir(path.parent).claim_lock
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        try:
            if time.time() - lock.stat().st_mtime > _BREAK_LOCK_STALE_S:  # a breaker died mid-way
                lock.unlink(missing_ok=True)
        except OSError:
            pass
        return False
    os.close(fd)
    try:
        now = read(path.parent)
        if now is not None and now.get("token") != seen.get("token"):
            return False  # taken over meanwhile by someone else
        _replace(path, info)
        return True
    finally:
        lock.unlink(missing_ok=True)


def update(directory: Path, **fields: Any) -> None:
    """Change fields of a claim this process holds (e.g. the job id once a job is submitted)."""
    directory = Path(directory)
    token = _held.get(str(directory))
    current = read(directory)
    if token is None or current is None or current.get("token") != token:
        return
    _replace(RunDir(directory).running, {**current, **fields})


def release(directory: Path) -> None:
    """Give up this process's claim on ``directory`` (no effect on someone else's)."""
    directory = Path(directory)
    token = _held.pop(str(directory), None)
    current = read(directory)
    if current is not None and (current.get("token") == token or is_mine(current)):
        RunDir(directory).running.unlink(missing_ok=True)


def held_elsewhere(directory: Path) -> bool:
    """Whether a live owner other than this process holds run ``directory``."""
    current = read(directory)
    return current is not None and not is_mine(current) and alive(current, directory)


def wait_for_owners(directories: list[Path], poll_s: float = 5.0,
                    report=None) -> list[Path]:  # noqa: ANN001 - a callable(int)
    """Wait until each run in ``directories`` is done (its ``DONE`` marker) or has a dead owner.

    Returns the directories whose owner died without finishing (to run again). ``report(n)`` is
    called with the number still waited for, after every change.
    """
    waiting = [Path(d) for d in directories]
    orphans: list[Path] = []
    while waiting:
        still = []
        for directory in waiting:
            if RunDir(directory).is_done():
                continue
            if held_elsewhere(directory):
                still.append(directory)
            else:
                orphans.append(directory)
        if report is not None and len(still) != len(waiting):
            report(len(still))
        waiting = still
        if waiting:
            time.sleep(poll_s)
    return orphans

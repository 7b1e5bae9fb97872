"""The run store: one directory per run under ``DIR/runs/{run id}``, and its state on disk.

A run is ``done`` once its ``DONE`` marker exists (``train_run`` writes it last, atomically);
``running`` while a live process holds its ``RUNNING`` marker; ``interrupted`` when that process
is gone (killed, preempted) - re-running resumes it from ``checkpoints/last.pt``; ``failed`` when
it raised (``FAILED`` holds the error); ``pending`` otherwise.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from medtransfer.atomic import write_text_atomic
from medtransfer.errors import ConfigError
from medtransfer.study import claims
from medtransfer.training.config import RunConfig

DONE, RUNNING, FAILED = "DONE", claims.CLAIM, "FAILED"
STATES = ("done", "running", "queued", "interrupted", "failed", "pending")


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename (never half-written)."""
    write_text_atomic(path, text, fsync=True)


def run_dir(out: Path, config: RunConfig) -> Path:
    """Directory of one run inside a study directory."""
    return Path(out) / "runs" / config.run_id


def mark_running(directory: Path) -> bool:
    """Claim a run for this process (see :mod:`medtransfer.study.claims`); False when another live
    owner holds it."""
    if not claims.claim(directory):
        return False
    (directory / FAILED).unlink(missing_ok=True)
    return True


def mark_failed(directory: Path, message: str) -> None:
    """Record that the run raised; the next study run retries it."""
    write_atomic(directory / FAILED, message)
    claims.release(directory)


def clear_running(directory: Path) -> None:
    """Release this process's claim of :func:`mark_running`."""
    claims.release(directory)


def clear_claim(directory: Path) -> None:
    """Remove whatever claim a finished (``DONE``) run still carries (its owner was killed after DONE)."""
    (directory / RUNNING).unlink(missing_ok=True)


def _running_alive(marker: Path, stale_after_s: float) -> bool:
    return claims.alive(claims.read(marker.parent), marker.parent, stale_after_s)


@dataclass
class RunStatus:
    """State of one run: ``state`` in STATES, epochs recorded so far, and its test AUC when done."""

    run_id: str
    state: str
    epochs_done: int
    phase: str
    auc: float | None
    error: str


def run_status(directory: Path, run_id: str, stale_after_s: float = 900.0) -> RunStatus:
    """Read one run's state from its directory (missing directory: pending)."""
    epochs, phase, auc, error = 0, "", None, ""
    history = directory / "history.csv"
    if history.exists():
        lines = history.read_text().strip().splitlines()[1:]
        epochs = len(lines)
        if lines:
            phase = lines[-1].split(",", 1)[0]
    if (directory / DONE).exists():
        try:
            auc = float(json.loads((directory / "metrics.json").read_text())["auc"])
        except (OSError, KeyError, ValueError, json.JSONDecodeError):
            auc = None
        state = "done"
    elif (directory / RUNNING).exists():
        state = "running" if _running_alive(directory / RUNNING, stale_after_s) else "interrupted"
        if state == "running" and claims.queued(claims.read(directory)):
            state = "queued"
    elif (directory / FAILED).exists():
        state = "failed"
        lines = (directory / FAILED).read_text().strip().splitlines()
        error = lines[-1] if lines else ""
    elif (directory / "checkpoints" / "last.pt").exists():
        state = "interrupted"
    else:
        state = "pending"
    return RunStatus(run_id, state, epochs, phase, auc, error)


def read_study_file(out: Path):
    """The study recorded in ``DIR/study.yaml``."""
    from medtransfer.study.config import StudyConfig

    path = Path(out) / "study.yaml"
    if not path.exists():
        raise ConfigError(f"{out} is not a study directory: {path} is missing (create it with `medtransfer run`)")
    return StudyConfig.from_yaml(path)


def status(out: Path) -> list[RunStatus]:
    """State of every run of the study in ``out``, in the study's order."""
    from medtransfer.study.expand import expand

    out = Path(out)
    study = read_study_file(out)
    return [run_status(run_dir(out, config), config.run_id) for config in expand(study, out)]


def count_states(statuses: list[RunStatus]) -> dict[str, int]:
    """How many runs are in each state (every state listed, zeros included)."""
    counts = dict.fromkeys(STATES, 0)
    for item in statuses:
        counts[item.state] += 1
    return counts

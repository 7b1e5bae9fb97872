"""The run store: one directory per run under ``DIR/runs/{run id}``, and its state on disk.

The layout and marker names belong to :mod:`medtransfer.training.record`, the ``RUNNING`` claim
to :mod:`medtransfer.study.claims`; this module names the states. A run is ``done`` once its
``DONE`` marker exists and its files match the digests ``DONE`` recorded; ``damaged`` when one of
them is missing or changed (``medtransfer run`` recomputes it); ``running`` while a live process
holds its ``RUNNING`` claim; ``interrupted`` when that process is gone (killed, preempted) -
re-running resumes it from ``checkpoints/last.pt``; ``failed`` when it raised (``FAILED`` holds
the error); ``pending`` otherwise. ``status`` checks quickly (sizes, and the sha256 of a file whose
modification time changed: :func:`medtransfer.training.record.file_problem`); ``status --verify``,
``run`` and ``analyze`` hash every file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medtransfer.atomic import check_folder, write_text_atomic
from medtransfer.errors import ConfigError, MedtransferError
from medtransfer.study import claims
from medtransfer.study.config import StudyConfig
from medtransfer.training.config import RunConfig
from medtransfer.training.record import STUDY_FILE, Check, RunDir, recorded_study_file

__all__ = ["STATES", "RunStatus", "check_out_dir", "clear_claim", "clear_running", "count_states",
           "mark_failed", "mark_running", "read_study_file", "recorded_study_file", "run_dir", "run_status",
           "write_atomic"]

STATES = ("done", "damaged", "running", "queued", "interrupted", "failed", "pending")


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename (never half-written)."""
    write_text_atomic(path, text, fsync=True)


def run_dir(out: Path, config: RunConfig) -> Path:
    """Directory of one run inside a study directory."""
    return RunDir.in_study(out, config).path


def mark_running(directory: Path) -> bool:
    """Claim a run for this process (see :mod:`medtransfer.study.claims`); False when another live
    owner holds it."""
    if not claims.claim(directory):
        return False
    RunDir(directory).failed.unlink(missing_ok=True)
    return True


def mark_failed(directory: Path, message: str) -> None:
    """Record that the run raised; the next study run retries it."""
    RunDir(directory).write_failed(message)
    claims.release(directory)


def clear_running(directory: Path) -> None:
    """Release this process's claim of :func:`mark_running`."""
    claims.release(directory)


def clear_claim(directory: Path) -> None:
    """Remove whatever claim a finished (``DONE``) run still carries (its owner was killed after DONE)."""
    RunDir(directory).running.unlink(missing_ok=True)


@dataclass
class RunStatus:
    """State of one run: ``state`` in STATES, epochs recorded so far, and its test AUC when done;
    ``error`` the failure's last line, or what is damaged."""

    run_id: str
    state: str
    epochs_done: int
    phase: str
    auc: float | None
    error: str


def run_status(directory: Path, run_id: str, stale_after_s: float = 900.0, check: Check = "quick") -> RunStatus:
    """Read one run's state from its directory (missing directory: pending)."""
    run = RunDir(directory)
    rows = run.read_history()
    epochs, phase, auc, error = len(rows), rows[-1].get("phase", "") if rows else "", None, ""
    if run.is_done():
        problems = run.check(check)
        if problems:
            state, error = "damaged", "; ".join(problems)
        else:
            state = "done"
            try:
                auc = float(run.read_metrics()["auc"])
            except (MedtransferError, KeyError, TypeError, ValueError):
                auc = None
    elif run.running.exists():
        alive = claims.alive(claims.read(run.path), run.path, stale_after_s)
        state = "running" if alive else "interrupted"
        if state == "running" and claims.queued(claims.read(run.path)):
            state = "queued"  # a SLURM job that waits to start (or to restart, requeued)
    elif run.failed.exists():
        state, error = "failed", run.failure()
    elif run.last.exists():
        state = "interrupted"
    else:
        state = "pending"
    return RunStatus(run_id, state, epochs, phase, auc, error)


def check_out_dir(out: Path, study_file: Path | None = None) -> None:
    """Refuse ``--out`` when medtransfer could overwrite files it did not write there.

    Accepted: a folder that does not exist or is empty, a medtransfer study
    (:func:`recorded_study_file`), or a folder that holds nothing but ``study_file`` (the study
    being run: ``run study.yaml --out .``). Raises ConfigError naming the folder and what it holds.
    """
    out = Path(out)
    if not out.exists():
        return
    if not out.is_dir():
        raise ConfigError(f"--out {out}: is a file, expected a folder for the study")
    if recorded_study_file(out) is not None:
        return
    own = Path(study_file).resolve() if study_file is not None else None
    try:
        others = sorted(p.name for p in out.iterdir() if own is None or p.resolve() != own)
    except OSError as error:
        raise ConfigError(f"--out {out}: cannot list the folder ({error.strerror or error})") from None
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        raise ConfigError(f"--out {out} is not empty ({shown}) and is not a medtransfer study (no {STUDY_FILE}); "
                          "medtransfer writes folds/, runs/, results/, analysis/ and report.html there and could "
                          f"overwrite files of yours: give a new or empty folder, e.g. --out {out / 'study'}")


def read_study_file(out: Path):
    """The study recorded in the study directory ``out`` (see :func:`recorded_study_file`)."""
    check_folder(out, write=False, what="the study folder")
    path = recorded_study_file(out)
    if path is None:
        raise ConfigError(f"{out} is not a study directory: {Path(out) / STUDY_FILE} is missing (create it with "
                          "`medtransfer run`)")
    return StudyConfig.from_yaml(path)


def count_states(statuses: list[RunStatus]) -> dict[str, int]:
    """How many runs are in each state (every state listed, zeros included)."""
    counts = dict.fromkeys(STATES, 0)
    for item in statuses:
        counts[item.state] += 1
    return counts

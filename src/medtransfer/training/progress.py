"""The progress of one fine-tuning run: its ``progress.json`` and how a console shows it.

- :class:`RunProgress`: an observer of a run (:mod:`medtransfer.training.observers`). It keeps
  ``progress.json`` in the run directory up to date (phase, epoch k/N, best val AUC so far,
  seconds per epoch) and shows the run: a live line on a terminal (:func:`run_view`), one plain,
  flushed line per epoch and per finished run otherwise (a file, a SLURM log).
- :func:`summarize`, :func:`remaining_seconds`: a run's state and ETA from its history rows, which
  the study status (:mod:`medtransfer.study.status`) reuses for runs without a progress file.

Environment: as :mod:`medtransfer.console` (``MEDTRANSFER_QUIET``, ``MEDTRANSFER_PROGRESS``).
"""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.live import Live
from rich.text import Text

from medtransfer.atomic import write_text_atomic
from medtransfer.console import clock, line_stream, progress_enabled, quiet, write_line
from medtransfer.training.record import RunDir
from medtransfer.vocabulary import is_pretraining


def _finite(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def summarize(history: list[dict[str, Any]], plan: list[dict[str, Any]]) -> dict[str, Any]:
    """The progress of a run from its history rows and phase plan (``[{phase, lr, epochs}]``).

    Returns ``phase`` (the current one: that of the last row, else the first planned), ``phase_index``,
    ``epoch`` (epochs done in it) and ``epochs`` (its limit), ``epochs_done`` and
    ``seconds_per_epoch`` (median) per phase, ``best_val_auc`` over every row (None if none is
    finite) and ``last`` (the last row's losses and val AUC).
    """
    phases = [p["phase"] for p in plan]
    done: dict[str, int] = {}
    seconds: dict[str, list[float]] = {}
    for row in history:
        done[row["phase"]] = done.get(row["phase"], 0) + 1
        s = _finite(row.get("seconds"))
        if s is not None:
            seconds.setdefault(row["phase"], []).append(s)
    phase = history[-1]["phase"] if history else (phases[0] if phases else "")
    index = phases.index(phase) if phase in phases else 0
    aucs = [a for a in (_finite(r.get("val_auc")) for r in history) if a is not None]
    last = history[-1] if history else {}
    return {
        "phase": phase,
        "phase_index": index,
        "epoch": done.get(phase, 0),
        "epochs": plan[index]["epochs"] if plan else 0,
        "epochs_done": done,
        "seconds_per_epoch": {p: statistics.median(v) for p, v in seconds.items()},
        "best_val_auc": max(aucs) if aucs else None,
        "last": {k: _finite(last.get(k)) for k in ("train_loss", "val_loss", "val_accuracy", "val_auc")},
    }


def remaining_seconds(summary: dict[str, Any], plan: list[dict[str, Any]], expected: dict[str, float] | None = None,
                      seconds_per_epoch: dict[str, float] | None = None) -> float | None:
    """Seconds left for a run: per phase from the current one, (expected epochs - epochs done) x
    seconds per epoch. ``expected`` epochs default to the phase's limit (an upper bound: early
    stopping ends sooner); ``seconds_per_epoch`` defaults to the run's own. None when a phase
    still to run has no measured time."""
    own = summary.get("seconds_per_epoch", {})
    measured = {**(seconds_per_epoch or {}), **own}
    total = 0.0
    for p in plan[summary.get("phase_index", 0):]:
        name = p["phase"]
        done = summary.get("epochs_done", {}).get(name, 0)
        left = max(0.0, min(float(p["epochs"]), (expected or {}).get(name, p["epochs"])) - done)
        if left == 0:
            continue
        speed = measured.get(name)
        if speed is None:
            return None
        total += left * speed
    return total


def read_progress(directory: Path) -> dict[str, Any] | None:
    """A run's ``progress.json``, or None when it is missing, unreadable (being replaced) or not
    what :class:`RunProgress` writes (damaged: the caller then summarises ``history.csv``)."""
    try:
        state = json.loads(RunDir(directory).progress.read_text())
    except (OSError, ValueError):
        return None
    return state if _is_progress(state) else None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


_PROGRESS_KEYS = ("plan", "phase", "phase_index", "epoch", "epochs", "epochs_done", "seconds_per_epoch", "last")


def _is_progress(state: Any) -> bool:
    """Whether ``state`` is what :class:`RunProgress` writes (its plan and :func:`summarize`'s
    keys, of the types the readers use)."""
    if not isinstance(state, dict) or any(key not in state for key in _PROGRESS_KEYS):
        return False
    counts, speeds, plan = state["epochs_done"], state["seconds_per_epoch"], state["plan"]
    return (isinstance(state["phase"], str) and isinstance(plan, list) and isinstance(state["last"], dict)
            and all(isinstance(state[key], int) and not isinstance(state[key], bool) and state[key] >= 0
                    for key in ("phase_index", "epoch", "epochs"))
            and state["phase_index"] < max(1, len(plan))
            and isinstance(counts, dict) and all(isinstance(k, str) and isinstance(v, int) for k, v in counts.items())
            and isinstance(speeds, dict) and all(isinstance(k, str) and _is_number(v) for k, v in speeds.items())
            and (state.get("best_val_auc") is None or _is_number(state.get("best_val_auc"))))


class RunProgress:
    """Sink: keeps ``progress.json`` of a run current and shows the run on ``view`` (None:
    the view of :func:`current_view`)."""

    def __init__(self, view: Any | None = None) -> None:
        self.view = view
        self.state: dict[str, Any] = {}
        self.history: list[dict[str, Any]] = []

    def _write(self) -> None:
        self.state["updated"] = time.time()
        write_text_atomic(RunDir(self.directory).progress, json.dumps(self.state, indent=1))

    def _update(self, **extra: Any) -> None:
        self.state.update(summarize(self.history, self.state["plan"]), **extra)
        self._write()

    def start(self, run) -> None:  # noqa: ANN001 - a medtransfer.training.observers.RunStart
        """Record the plan and the restored history; show the start."""
        self.view = self.view or current_view()
        self.directory = Path(run.directory)
        self.history = list(run.history)
        plan = [{"phase": p.phase, "lr": p.lr, "epochs": p.epochs} for p in run.plan]
        task = "pretrain" if is_pretraining(run.config.get("source_name")) else "finetune"
        self.state = {"run_id": run.run_id, "state": "training", "plan": plan, "resumed": run.resumed,
                      "task": task, "started": time.time()}
        self._update()
        if self.view is not None:
            self.view.started(self.state)

    def epoch(self, row: dict[str, Any]) -> None:
        """One more history row."""
        self.history.append(row)
        self._update()
        if self.view is not None:
            self.view.epoch(self.state)

    def finish(self, metrics: dict[str, Any], probe_metrics: dict[str, Any] | None) -> None:
        """The run ended; record its test AUC."""
        self._update(state="finished", test_auc=_finite(metrics.get("auc")),
                     seconds=time.time() - self.state["started"])
        if self.view is not None:
            self.view.finished(self.state)

    def fail(self, error: str) -> None:
        """The run raised (before it started: nothing to record, the store's FAILED marker says it)."""
        if not self.state:
            return
        self._update(state="failed", error=error)
        if self.view is not None:
            self.view.failed(self.state)


# -- showing runs -------------------------------------------------------------------------------


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def phase_label(state: dict[str, Any]) -> str:
    """What a run's current phase is called on the console: ``pretraining`` for a run that makes
    a study's source (its one phase is a full fine-tuning from random init), else the phase."""
    return "pretraining" if state.get("task") == "pretrain" else str(state.get("phase", ""))


def resumed_text(state: dict[str, Any]) -> str:
    """How a resumed run goes on: from its checkpoint after epoch k of the phase, epoch k+1 next
    (epochs recorded after that checkpoint, if any, are run again)."""
    k, n = state.get("epoch", 0), state.get("epochs", 0)
    then = f"epoch {k + 1}/{n} runs next" if k < n else "the next phase starts"
    return f"resumed from its checkpoint after {phase_label(state)} epoch {k}/{n}: {then}"


def describe(state: dict[str, Any], since_update: float = 0.0) -> str:
    """One line for a run in progress: phase, epoch k/N, losses, val AUC, s/epoch and its ETA
    (counted down by ``since_update``, the seconds since ``state`` was last updated)."""
    last = state.get("last", {})
    speed = state.get("seconds_per_epoch", {}).get(state.get("phase"))
    eta = remaining_seconds(state, state.get("plan", []))
    if eta is not None:
        eta = max(0.0, eta - since_update)
    return (f"{phase_label(state)} epoch {state.get('epoch', 0)}/{state.get('epochs', 0)}  "
            f"loss {_num(last.get('train_loss'))} val {_num(last.get('val_loss'))}  "
            f"val AUC {_num(last.get('val_auc'))} best {_num(state.get('best_val_auc'))}  "
            f"{_num(speed, 1)} s/epoch  ETA <= {clock(eta)}")


class _Grid:
    """Runs of a grid shown by one view: how many, how many ended, since when."""

    def __init__(self, total: int | None) -> None:
        self.total, self.ended, self.began = total, 0, time.monotonic()

    def prefix(self) -> str:
        return f"[{self.ended + 1}/{self.total}] " if self.total else ""


class LineView:
    """One plain line per event, flushed (for files and cluster logs)."""

    def __init__(self, stream: IO[str] | None = None, total: int | None = None) -> None:
        self.stream = stream or line_stream()
        self.grid = _Grid(total)

    def started(self, state: dict[str, Any]) -> None:
        how = resumed_text(state) if state.get("resumed") else "started"
        write_line(self.stream, f"{self.grid.prefix()}{state['run_id']}: {how}")

    def epoch(self, state: dict[str, Any]) -> None:
        write_line(self.stream, f"{self.grid.prefix()}{state['run_id']}: {describe(state)}")

    def finished(self, state: dict[str, Any]) -> None:
        done = sum(state.get("epochs_done", {}).values())
        write_line(self.stream, f"{self.grid.prefix()}{state['run_id']}: finished, test AUC {_num(state.get('test_auc'))}, "
                           f"{done} epochs in {clock(state.get('seconds'))}")
        self.grid.ended += 1

    def failed(self, state: dict[str, Any]) -> None:
        error = (state.get("error") or "").strip().splitlines()
        write_line(self.stream, f"{self.grid.prefix()}{state['run_id']}: FAILED {error[-1] if error else ''}")
        self.grid.ended += 1


class LiveView(LineView):
    """On a terminal: a live line for the current run and the grid; finished runs stay above it."""

    def __init__(self, total: int | None = None) -> None:
        super().__init__(sys.stderr, total)
        self.state: dict[str, Any] | None = None
        self.console = Console(stderr=True)
        # rendered at every refresh, so the elapsed clock ticks between epochs
        self.live = Live(console=self.console, refresh_per_second=1, transient=True, get_renderable=self._render)

    def __enter__(self) -> "LiveView":
        self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.stop()

    def _render(self):  # noqa: ANN202 - a rich renderable
        grid = self.grid
        work = "pretraining" if self.state is not None and self.state.get("task") == "pretrain" else "fine-tuning"
        head = f"{work} run {min(grid.ended + 1, grid.total)}/{grid.total}, {clock(time.monotonic() - grid.began)} elapsed" \
            if grid.total else work
        if self.state is None:
            return Text(head)
        return Text(f"{head}: {self.state['run_id']}\n  {describe(self.state, time.time() - self.state.get('updated', time.time()))}")

    def started(self, state: dict[str, Any]) -> None:
        self.state = dict(state)
        self.live.refresh()

    def epoch(self, state: dict[str, Any]) -> None:
        self.state = dict(state)
        self.live.refresh()

    def finished(self, state: dict[str, Any]) -> None:
        done = sum(state.get("epochs_done", {}).values())
        self.console.print(f"{state['run_id']}: finished, test AUC {_num(state.get('test_auc'))}, {done} epochs "
                           f"in {clock(state.get('seconds'))}", highlight=False)
        self.grid.ended += 1
        self.state = None
        self.live.refresh()

    def failed(self, state: dict[str, Any]) -> None:
        error = (state.get("error") or "").strip().splitlines()
        self.console.print(f"[red]{state['run_id']}: FAILED[/] {error[-1] if error else ''}", highlight=False)
        self.grid.ended += 1
        self.state = None
        self.live.refresh()


_VIEW: LineView | None = None


def current_view() -> LineView | None:
    """The view of :func:`run_view` when one is open, else plain lines on stderr (None when quiet)."""
    if _VIEW is not None:
        return _VIEW
    return None if quiet() else LineView()


@contextlib.contextmanager
def run_view(total: int | None = None) -> Iterator[LineView | None]:
    """Show the runs of a grid of ``total`` runs executed in this process: a live view on a
    terminal (main process only), plain lines otherwise, nothing when quiet."""
    global _VIEW
    previous = _VIEW
    if quiet():
        view = None
    elif progress_enabled() and multiprocessing.parent_process() is None:
        view = LiveView(total)
    else:
        view = LineView(total=total)
    _VIEW = view
    try:
        if isinstance(view, LiveView):
            with view:
                yield view
        else:
            yield view
    finally:
        _VIEW = previous

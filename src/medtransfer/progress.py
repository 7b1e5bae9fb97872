"""Progress of long work, in one place, so that library code never prints directly.

- :func:`track`: a rich progress bar over an iterable on a terminal (downloads, caching, analysis).
- :class:`RunProgress`: a sink of a fine-tuning run (see :mod:`medtransfer.tracking`). It keeps
  ``progress.json`` in the run directory up to date (phase, epoch k/N, best val AUC so far,
  seconds per epoch) and shows the run: a live line on a terminal (:func:`run_view`), one plain,
  flushed line per epoch and per finished run otherwise (a file, a SLURM log).
- :func:`study_progress`: every run of a study directory and the grid's ETA from measured epoch
  times, read from the files alone (so it works whatever executes the runs: local, SLURM, Ray).

Environment: ``MEDTRANSFER_QUIET=1`` silences everything; ``MEDTRANSFER_PROGRESS=1`` shows
terminal-style progress even when stderr is not a terminal.
"""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

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
    from rich.progress import track as rich_track

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
        _line(sys.stderr, f"{description}: {k}/{total} finished, {clock(time.monotonic() - began)} elapsed")


# -- the state of one run -----------------------------------------------------------------------


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


def _progress_file(directory: Path) -> Path:
    from medtransfer.training.record import RunDir  # here: the data layer imports this module

    return RunDir(directory).progress


def read_progress(directory: Path) -> dict[str, Any] | None:
    """A run's ``progress.json``, or None when it is missing, unreadable (being replaced) or not
    what :class:`RunProgress` writes (damaged: the caller then summarises ``history.csv``)."""
    try:
        state = json.loads(_progress_file(directory).read_text())
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
        from medtransfer.atomic import write_text_atomic

        self.state["updated"] = time.time()
        write_text_atomic(_progress_file(self.directory), json.dumps(self.state, indent=1))

    def _update(self, **extra: Any) -> None:
        self.state.update(summarize(self.history, self.state["plan"]), **extra)
        self._write()

    def start(self, run) -> None:  # noqa: ANN001 - a medtransfer.tracking.RunStart
        """Record the plan and the restored history; show the start."""
        self.view = self.view or current_view()
        self.directory = Path(run.directory)
        self.history = list(run.history)
        plan = [{"phase": p.phase, "lr": p.lr, "epochs": p.epochs} for p in run.plan]
        self.state = {"run_id": run.run_id, "state": "training", "plan": plan, "resumed": run.resumed,
                      "started": time.time()}
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


def clock(seconds: float | None) -> str:
    """``h:mm:ss`` of a duration in seconds (``-:--:--`` when unknown)."""
    if seconds is None:
        return "-:--:--"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _line(stream: IO[str], text: str) -> None:
    stream.write(text + "\n")
    stream.flush()


def describe(state: dict[str, Any], since_update: float = 0.0) -> str:
    """One line for a run in progress: phase, epoch k/N, losses, val AUC, s/epoch and its ETA
    (counted down by ``since_update``, the seconds since ``state`` was last updated)."""
    last = state.get("last", {})
    speed = state.get("seconds_per_epoch", {}).get(state.get("phase"))
    eta = remaining_seconds(state, state.get("plan", []))
    if eta is not None:
        eta = max(0.0, eta - since_update)
    return (f"{state.get('phase', '')} epoch {state.get('epoch', 0)}/{state.get('epochs', 0)}  "
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
        self.stream = stream or sys.stderr
        self.grid = _Grid(total)

    def started(self, state: dict[str, Any]) -> None:
        how = f"resumed at {state['phase']} epoch {state['epoch']}" if state.get("resumed") else "started"
        _line(self.stream, f"{self.grid.prefix()}{state['run_id']}: {how}")

    def epoch(self, state: dict[str, Any]) -> None:
        _line(self.stream, f"{self.grid.prefix()}{state['run_id']}: {describe(state)}")

    def finished(self, state: dict[str, Any]) -> None:
        done = sum(state.get("epochs_done", {}).values())
        _line(self.stream, f"{self.grid.prefix()}{state['run_id']}: finished, test AUC {_num(state.get('test_auc'))}, "
                           f"{done} epochs in {clock(state.get('seconds'))}")
        self.grid.ended += 1

    def failed(self, state: dict[str, Any]) -> None:
        error = (state.get("error") or "").strip().splitlines()
        _line(self.stream, f"{self.grid.prefix()}{state['run_id']}: FAILED {error[-1] if error else ''}")
        self.grid.ended += 1


class LiveView(LineView):
    """On a terminal: a live line for the current run and the grid; finished runs stay above it."""

    def __init__(self, total: int | None = None) -> None:
        from rich.console import Console
        from rich.live import Live

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
        from rich.text import Text

        grid = self.grid
        head = f"fine-tuning run {grid.ended + 1}/{grid.total}, {clock(time.monotonic() - grid.began)} elapsed" \
            if grid.total else "fine-tuning"
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


# -- a study from its files -----------------------------------------------------------------------


def _history_rows(directory: Path) -> list[dict[str, Any]]:
    import pandas as pd

    from medtransfer.training.record import RunDir

    try:
        rows = pd.read_csv(RunDir(directory).history).to_dict("records")
    except (OSError, ValueError):
        return []
    # a damaged line (cut short, overwritten) has no phase or no epoch number
    return [row for row in rows if isinstance(row.get("phase"), str) and _finite(row.get("epoch")) is not None]


def study_progress(out: str | Path) -> dict[str, Any]:
    """Every run of the study in ``out`` with its progress, and the grid's ETA.

    Per run: ``run_id, target, strategy, state`` (done, running, interrupted, failed, pending),
    ``phase, epoch, epochs`` (epoch k/N of the current phase), ``best_val_auc``,
    ``seconds_per_epoch`` (current phase), ``test_auc`` (done runs), ``eta_s`` (this run).
    Grid: ``eta_s`` - seconds until every unfinished, not-failed run ends, each run expected to
    stop after the median epochs of finished runs of its target and strategy (its limit while none
    has finished) at its own measured s/epoch (else its target's median, else any run's), divided
    by the number of runs running now (at least 1); ``eta_max_s`` the same with every epoch limit
    reached; both None until an epoch of every phase still to run has been measured somewhere.
    """
    from medtransfer.study.expand import expand
    from medtransfer.study.store import count_states, read_study_file, run_dir, run_status
    from medtransfer.training.run import phase_plan

    out = Path(out)
    study = read_study_file(out)
    runs = []
    for config in expand(study, out):
        directory = run_dir(out, config)
        status = run_status(directory, config.run_id)
        plan = [{"phase": p.phase, "lr": p.lr, "epochs": p.epochs} for p in phase_plan(config)]
        saved = read_progress(directory)
        summary = summarize(_history_rows(directory), plan) if saved is None else saved
        runs.append({"config": config, "status": status, "plan": plan, "summary": summary})

    speeds: dict[tuple[str, str], list[float]] = {}
    lengths: dict[tuple[str, str, str], list[int]] = {}
    for run in runs:
        config, summary = run["config"], run["summary"]
        for phase, speed in summary.get("seconds_per_epoch", {}).items():
            speeds.setdefault((config.target_label, phase), []).append(speed)
            speeds.setdefault(("", phase), []).append(speed)
        if run["status"].state == "done":
            for phase, n in summary.get("epochs_done", {}).items():
                lengths.setdefault((config.target_label, config.strategy, phase), []).append(n)

    running = sum(r["status"].state == "running" for r in runs)
    total = total_max = 0.0
    known = True
    rows = []
    for run in runs:
        config, summary, plan, state = run["config"], run["summary"], run["plan"], run["status"].state
        phases = [p["phase"] for p in plan]
        fallback = {}
        for phase in phases:
            values = speeds.get((config.target_label, phase)) or speeds.get(("", phase))
            if values:
                fallback[phase] = statistics.median(values)
        expected = {phase: statistics.median(lengths[key]) for phase in phases
                    if (key := (config.target_label, config.strategy, phase)) in lengths}
        eta = eta_max = None
        if state not in ("done", "failed"):
            eta = remaining_seconds(summary, plan, expected, fallback)
            eta_max = remaining_seconds(summary, plan, None, fallback)
            if eta is None or eta_max is None:
                known = False
            else:
                total, total_max = total + eta, total_max + eta_max
        speed = summary.get("seconds_per_epoch", {}).get(summary.get("phase"))
        rows.append({"run_id": config.run_id, "target": config.target_label, "source": config.source_label,
                     "strategy": config.strategy, "fold": config.fold, "seed": config.seed, "state": state,
                     "phase": summary.get("phase", ""), "epoch": summary.get("epoch", 0),
                     "epochs": summary.get("epochs", 0), "best_val_auc": summary.get("best_val_auc"),
                     "seconds_per_epoch": speed, "test_auc": run["status"].auc, "eta_s": eta,
                     "error": run["status"].error})
    parallel = max(1, running)
    return {"study": str(out), "counts": count_states([r["status"] for r in runs]), "runs": rows,
            "running": running, "eta_s": total / parallel if known else None,
            "eta_max_s": total_max / parallel if known else None, "updated": time.time()}

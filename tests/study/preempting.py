"""Preempting one run again and again, each time while it trains or writes a checkpoint.

:class:`Preempter` is a thread that, for each of its moments, waits until an incarnation of the
run trains (``progress.json`` says so, with a start after the previous signal; the first time
also after the first checkpoint exists, so that every restart is a resume), then calls ``send``
(SIGTERM then USR2, by ``kill`` or ``scancel``) at the moment:

- a float ``u``: ``u`` epochs after training began (the run's median seconds per epoch), or
  as soon as a checkpoint write begins, whichever comes first;
- ``"write"``: as soon as a checkpoint write begins (its temporary file exists).

So a signal never lands after the first checkpoint write of an incarnation: each preemption lets
the run progress by at most one epoch, and a run of :data:`EPOCHS` epochs has work left for each
of :data:`PREEMPTIONS` signals, however fast the machine (none can land after ``DONE``). What
happened is in ``sent`` (the moment, where it landed, the epochs done then, the owner) and
``resumes`` (one per incarnation that began training after a signal: the epochs it restored),
or ``error``.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medtransfer.training.progress import read_progress
from medtransfer.study import claims

PREEMPTIONS = 10
EPOCHS = PREEMPTIONS + 4  # the first checkpoint, at most one epoch per preemption, three to spare
POLL_S = 0.002
TIMEOUT_S = 300.0


def seeded_moments(seed: int, n: int = PREEMPTIONS) -> list[float | str]:
    """``n`` moments: about a third ``"write"``, the others a fraction of an epoch in [0, 0.9)."""
    rng = random.Random(seed)
    return ["write" if rng.random() < 0.3 else round(rng.uniform(0.0, 0.9), 3) for _ in range(n)]


class Preempter(threading.Thread):
    """Preempts the run in ``run`` at each of ``moments``; ``send(claim)`` delivers the signals to
    the owner that the run's claim names (its ``pid``, its SLURM ``job``)."""

    def __init__(self, run: Path, moments: list[float | str], send: Callable[[dict[str, Any]], None]) -> None:
        super().__init__(daemon=True)
        self.run_dir, self.moments, self.send = Path(run), list(moments), send
        self.sent: list[dict[str, Any]] = []
        self.resumes: list[dict[str, Any]] = []
        self.error: str | None = None

    def run(self) -> None:
        try:
            self._preempt()
        except BaseException as error:  # noqa: BLE001 - reported by the test
            self.error = f"{error.__class__.__name__}: {error}"

    # -- what the run is doing ----------------------------------------------------------------

    def _writes(self) -> set[str]:
        try:
            return {e.name for e in os.scandir(self.run_dir / "checkpoints") if e.name.endswith(".tmp")}
        except OSError:
            return set()

    def _last(self) -> tuple[int, int] | None:
        try:
            stat = os.stat(self.run_dir / "checkpoints" / "last.pt")
        except OSError:
            return None
        return stat.st_ino, stat.st_mtime_ns

    def _training_after(self, since: float, first: bool) -> tuple[dict[str, Any], float] | None:
        """The progress of an incarnation that began training after ``since`` (time.time()), and
        when its moments count from; None when none does within TIMEOUT_S or the run is DONE."""
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            state = read_progress(self.run_dir)
            if state and state.get("started", 0) > since:
                if not first:
                    return state, float(state["started"])
                if state.get("state") == "training" and (self.run_dir / "checkpoints" / "last.pt").exists():
                    return read_progress(self.run_dir) or state, time.time()
            if (self.run_dir / "DONE").exists():
                return None
            time.sleep(POLL_S)
        return None

    def _wait(self, moment: float | str, start: float, state: dict[str, Any]) -> str:
        """Wait for ``moment`` counted from ``start``, or until a checkpoint write begins; returns
        where the signal lands: "training", "write", or "after a write" (one too short to see)."""
        writes, last = self._writes(), self._last()
        epoch_s = (state.get("seconds_per_epoch") or {}).get(state.get("phase")) or 1.0
        due = start + (moment * epoch_s if moment != "write" else TIMEOUT_S)
        while time.time() < due:
            if self._writes() - writes:
                return "write"
            if self._last() != last:
                return "after a write"
            time.sleep(POLL_S)
        if moment == "write":
            raise TimeoutError(f"no checkpoint write within {TIMEOUT_S:.0f} s")
        return "training"

    # -- the signals --------------------------------------------------------------------------

    def _preempt(self) -> None:
        last = 0.0
        for k, moment in enumerate(self.moments):
            found = self._training_after(last, first=k == 0)
            if found is None:
                self.error = f"preemption {k + 1}: no incarnation trained after the previous signal (DONE: " \
                             f"{(self.run_dir / 'DONE').exists()})"
                return
            state, start = found
            if k > 0:
                self.resumes.append({"epoch": state.get("epoch"), "resumed": state.get("resumed")})
            owner = claims.read(self.run_dir) or {}
            landed = self._wait(moment, start, state)
            if (self.run_dir / "DONE").exists():
                self.error = f"preemption {k + 1}: the run was DONE before the signal"
                return
            epoch = (read_progress(self.run_dir) or {}).get("epoch")
            last = time.time()
            self.send(owner)
            self.sent.append({"moment": moment, "landed": landed, "epoch": epoch,
                              "owner": owner.get("job") or owner.get("pid")})
        found = self._training_after(last, first=False)
        if found is None:
            self.error = "no incarnation trained after the last signal"
            return
        self.resumes.append({"epoch": found[0].get("epoch"), "resumed": found[0].get("resumed")})

    def summary(self) -> str:
        """One line: each preemption as moment@where(epochs done), and the epochs each resume restored."""
        sent = ", ".join(f"{s['moment']}@{s['landed']}(epoch {s['epoch']})" for s in self.sent)
        return f"{len(self.sent)} preemptions sent: [{sent}]; resumed at epochs {[r['epoch'] for r in self.resumes]}"

"""The observer protocol of a fine-tuning run: sinks that the run's history feeds.

Training defines the protocol and calls it; the sinks live above it (:mod:`medtransfer.tracking`).
A run calls :class:`Sinks` at four moments - ``start`` (with its plan and any history restored on
resume), ``epoch`` (each history row as it is appended), ``finish`` (test metrics, once the run's
files are written) and ``fail`` - and knows nothing else about who listens. Sinks:
:class:`medtransfer.training.progress.RunProgress` (``progress.json`` and the console view) and
:class:`medtransfer.tracking.mlflow_sink.MlflowSink` (MLflow, imported only when asked for).

A sink that raises is dropped for the rest of the run after one warning: a sink never fails
the run.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


class TrackingWarning(UserWarning):
    """A sink failed (e.g. the tracking server is unreachable); the run goes on without it."""


@dataclass(frozen=True)
class PhasePlan:
    """One phase of a run: its name (``probe`` or ``finetune``), learning rate and epoch limit."""

    phase: str
    lr: float
    epochs: int


@dataclass
class RunStart:
    """What a sink learns when a run starts (or resumes).

    ``config``: the run's config as a JSON-safe dict; ``history``: rows already recorded (non-empty
    on resume), each a dict with the keys of ``medtransfer.training.run.HISTORY_COLUMNS``.
    """

    run_id: str
    directory: Path
    config: dict[str, Any]
    plan: list[PhasePlan]
    history: list[dict[str, Any]] = field(default_factory=list)
    resumed: bool = False


class Sink(Protocol):
    """Anything with these four methods (a sink may ignore any of them)."""

    def start(self, run: RunStart) -> None: ...

    def epoch(self, row: dict[str, Any]) -> None: ...

    def finish(self, metrics: dict[str, Any], probe_metrics: dict[str, Any] | None) -> None: ...

    def fail(self, error: str) -> None: ...


class Sinks:
    """Fan-out to several sinks; a sink that raises is warned about once and dropped."""

    def __init__(self, sinks: list[Any] | tuple[Any, ...] = ()) -> None:
        self.sinks = [s for s in sinks if s is not None]

    def __bool__(self) -> bool:
        return bool(self.sinks)

    def _call(self, method: str, *args: Any) -> None:
        for sink in list(self.sinks):
            call = getattr(sink, method, None)
            if call is None:
                continue
            try:
                call(*args)
            except Exception as error:  # a sink never fails the run
                self.sinks.remove(sink)
                warnings.warn(f"{type(sink).__name__} stopped ({error.__class__.__name__}: {error}); "
                              "the run continues without it", TrackingWarning, stacklevel=3)

    def start(self, run: RunStart) -> None:
        """The run starts or resumes."""
        self._call("start", run)

    def epoch(self, row: dict[str, Any]) -> None:
        """A history row was appended."""
        self._call("epoch", row)

    def finish(self, metrics: dict[str, Any], probe_metrics: dict[str, Any] | None = None) -> None:
        """The run's test metrics and files are written (just before its DONE marker)."""
        self._call("finish", metrics, probe_metrics)

    def fail(self, error: str) -> None:
        """The run raised ``error``."""
        self._call("fail", error)

"""The sinks of one run of a study: its progress file and view, and MLflow when the study asks."""

from __future__ import annotations

import json

from medtransfer.tracking.mlflow_sink import MlflowSink
from medtransfer.training.observers import Sinks
from medtransfer.training.progress import RunProgress


def run_sinks(tracking: str = "") -> Sinks:
    """Sinks for a run: :class:`medtransfer.training.progress.RunProgress` always, and an MLflow sink when
    ``tracking`` (the JSON of :func:`medtransfer.tracking.mlflow_sink.open_study_tracking`) is given."""
    sinks: list = [RunProgress()]
    if tracking:
        sinks.append(MlflowSink(json.loads(tracking)))
    return Sinks(sinks)

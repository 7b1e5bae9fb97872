"""MLflow tracking of a study: one parent MLflow run per study, one nested run per fine-tuning run.

Off unless the study asks (``tracking: {kind: mlflow}`` or ``medtransfer run --track mlflow``).
The default store is a SQLite file inside the study directory (``DIR/mlflow/mlflow.db``, artifacts
in ``DIR/mlflow/artifacts``): offline, on a cluster node, without a server. ``uri`` points it at a
team's server instead. What is logged per fine-tuning run:

- params: the fields of the run's config (``config.json``) that apply to it (no ``probe_*`` for a
  no-freeze run, no ``k_folds``/``split_*`` for a dataset's official single split);
- metrics per epoch, ``step`` = the epoch's number counted from 1 over the whole run, as the
  console counts (probe epochs first): ``train_loss, train_accuracy, val_loss, val_accuracy,
  val_auc, lr, epoch_seconds``; the tag ``medtransfer.phase`` names the phase of the last epoch
  (probe, finetune);
- at the end: ``test_*`` (and ``probe_test_*``) from ``metrics.json`` as metrics, its facts about
  the run (threads, seconds, epochs, best_epoch, n, device) as tags; artifacts ``predictions.csv``,
  ``metrics.json``, ``history.csv``, ``config.json``, ``probe/*`` and ``checkpoint.json`` (path,
  size and sha256 of ``checkpoints/best.pt``; the weights themselves only with ``log_weights``, the
  best model as an MLflow PyTorch model only with ``log_model``).

The experiment is tagged as one of model training (``mlflow.experimentKind``), so that the MLflow UI
opens it in its classic runs view. After ``medtransfer analyze``, :func:`log_analysis` gives the
study's parent run Table 2's cells as metrics and the report and ``analysis/*.csv`` as artifacts.

The MLflow run id is kept in the run directory (``mlflow.json``), so a resumed run continues the
same MLflow run; an epoch redone after a kill is not logged twice when it reproduces the logged
values (runs resume bit for bit on the CPU). Failure policy: the store is probed once (an HTTP
``/health`` request with a 3 s timeout) before mlflow is even imported; an unreachable store warns
once and the study runs untracked, and any later error drops the sink after one warning
(:class:`medtransfer.training.observers.Sinks`), with HTTP timeouts and retries kept short.

mlflow is an optional dependency (``medtransfer[mlflow]``): it is imported inside the functions that
use it, so that this module loads without it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from medtransfer import __version__
from medtransfer.atomic import write_text_atomic
from medtransfer.data.registry import single_fold
from medtransfer.errors import ConfigError
from medtransfer.training.observers import RunStart, TrackingWarning
from medtransfer.training.record import ANALYSIS_DIR, STUDY_FILE, TABLE2_CSV, RunDir, file_digest
from medtransfer.vocabulary import NO_FREEZE

STORE_DIR = "mlflow"  # inside the study directory
STORE_STATE = "study.json"  # inside DIR/mlflow
EPOCH_METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_auc")
# entries of metrics.json that describe the run rather than measure the model: tags, not metrics
RUN_FACTS = ("threads", "seconds", "epochs", "best_epoch", "n", "device", "resumed")
# the MLflow UI's experiment types; ours is model training (else 3.x may open it as GenAI)
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
PROBE_TIMEOUT_S = 3.0
# our requests fail fast: mlflow's defaults (120 s, 7 retries with backoff) would stall a run
HTTP_LIMITS = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "10", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
               "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
MAX_PARAM_LENGTH = 6000


def default_uri(out: str | Path) -> str:
    """The embedded store of a study directory: ``sqlite:///DIR/mlflow/mlflow.db``."""
    return f"sqlite:///{(Path(out) / STORE_DIR / 'mlflow.db').resolve()}"


def artifact_location(uri: str) -> str | None:
    """Artifacts of a SQLite store live beside it (``artifacts/``; mlflow's default would be
    ``./mlruns`` under the current directory); a server decides for itself (None)."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).parent / "artifacts").resolve().as_uri()
    return None


def probe(uri: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Why the store at ``uri`` cannot be used, or None when it looks usable (without mlflow)."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme in ("http", "https"):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as response:
                response.read(64)
        except urllib.error.HTTPError as error:
            if error.code >= 500:
                return f"{uri} answered HTTP {error.code}"
        except (urllib.error.URLError, OSError, ValueError) as error:
            reason = getattr(error, "reason", error)
            return f"{uri} is unreachable ({reason})"
        return None
    if parsed.scheme == "sqlite":
        folder = Path(uri[len("sqlite:///"):]).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            return f"{uri}: cannot create {folder} ({error.strerror})"
    return None


@contextlib.contextmanager
def short_http() -> Iterator[None]:
    """MLflow's HTTP timeout and retries kept short for our calls (unless the user set them)."""
    added = [k for k in HTTP_LIMITS if k not in os.environ]
    os.environ.update({k: HTTP_LIMITS[k] for k in added})
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


_CLIENTS: dict[str, Any] = {}


def client(uri: str):  # noqa: ANN201 - an mlflow.MlflowClient
    """One MLflow client per store and process (opening a SQLite store costs seconds)."""
    if uri not in _CLIENTS:
        try:
            from mlflow import MlflowClient
        except ImportError:
            raise ConfigError('tracking: mlflow is not installed; pip install "medtransfer[mlflow]"') from None
        _CLIENTS[uri] = MlflowClient(tracking_uri=uri)
    return _CLIENTS[uri]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _live_run(mlflow_client, run_id: str | None, experiment_id: str) -> str | None:  # noqa: ANN001
    """``run_id`` if that run exists in ``experiment_id`` and is not deleted."""
    if not run_id:
        return None
    try:
        run = mlflow_client.get_run(run_id)
    except Exception:  # noqa: BLE001 - unknown id
        return None
    if run.info.experiment_id != experiment_id or run.info.lifecycle_stage != "active":
        return None
    return run_id


def _find_by_tag(mlflow_client, experiment_id: str, key: str, value: str) -> str | None:  # noqa: ANN001
    if "'" in value:
        return None
    found = mlflow_client.search_runs([experiment_id], filter_string=f"tags.`{key}` = '{value}'", max_results=1)
    return found[0].info.run_id if found else None


# fields of a run's config that only some runs use: (fields, does the run use them?)
_PROBE_FIELDS = ("probe_lr", "probe_epochs", "probe_patience")
_FOLD_FIELDS = ("k_folds", "split_fractions", "split_seed")


def applicable(config: dict[str, Any]) -> dict[str, Any]:
    """The fields of a run's config that apply to it: a no-freeze run has no probe phase, a
    dataset's official single split (e.g. medmnist ``split: official``) cuts no k folds."""
    dropped = set(_PROBE_FIELDS) if config.get("strategy") == NO_FREEZE else set()
    if single_fold(str(config.get("target")), dict(config.get("target_options") or {})):
        dropped |= set(_FOLD_FIELDS)
    return {key: value for key, value in config.items() if key not in dropped}


def _params(values: dict[str, Any]) -> list:
    from mlflow.entities import Param

    return [Param(key, str(value)[:MAX_PARAM_LENGTH]) for key, value in sorted(applicable(values).items())]


def _warn(message: str) -> None:
    warnings.warn(f"tracking: {message}; the study runs untracked", TrackingWarning, stacklevel=3)


def open_study_tracking(spec: Any, out: str | Path, study_name: str) -> str:
    """Prepare MLflow for a study: its experiment and its parent run (reused on a rerun).

    ``spec``: a ``TrackingSpec`` (``uri``, ``experiment``, ``log_weights``). Returns the JSON the
    runs' sinks need (empty when the store is unusable: one TrackingWarning, no exception).
    Raises ConfigError when mlflow is not installed.
    """
    if importlib.util.find_spec("mlflow") is None:  # asked for, not installed: say so before any run
        raise ConfigError('tracking: mlflow is not installed; pip install "medtransfer[mlflow]", '
                          "or run without tracking (--track off)")
    out = Path(out)
    uri = spec.uri or default_uri(out)
    problem = probe(uri)
    if problem:
        _warn(problem)
        return ""
    try:
        with short_http():
            mlflow_client = client(uri)
            from mlflow.entities import RunStatus

            name = spec.experiment or study_name
            experiment = mlflow_client.get_experiment_by_name(name)
            if experiment is not None:
                experiment_id = experiment.experiment_id
                if EXPERIMENT_KIND[0] not in experiment.tags:
                    mlflow_client.set_experiment_tag(experiment_id, *EXPERIMENT_KIND)
            else:
                experiment_id = mlflow_client.create_experiment(name, artifact_location=artifact_location(uri),
                                                                tags=dict([EXPERIMENT_KIND]))
            study_dir = str(out.resolve())
            saved = _read_json(out / STORE_DIR / STORE_STATE)
            parent = None
            if saved.get("uri") == uri:
                parent = _live_run(mlflow_client, saved.get("parent_run_id"), experiment_id)
            parent = parent or _find_by_tag(mlflow_client, experiment_id, "medtransfer.study_dir", study_dir)
            if parent is None:
                parent = mlflow_client.create_run(experiment_id, run_name=f"{study_name} ({out.name})",
                                                  tags={"medtransfer.study_dir": study_dir,
                                                        "medtransfer.kind": "study"}).info.run_id
                if (out / STUDY_FILE).exists():
                    mlflow_client.log_artifact(parent, str(out / STUDY_FILE))
            else:
                mlflow_client.update_run(parent, status=RunStatus.to_string(RunStatus.RUNNING))
            write_text_atomic(out / STORE_DIR / STORE_STATE,
                              json.dumps({"uri": uri, "experiment_id": experiment_id, "parent_run_id": parent}))
    except Exception as error:  # noqa: BLE001 - a tracking failure never fails the study
        _warn(f"{uri}: {error.__class__.__name__}: {error}")
        return ""
    return json.dumps({"uri": uri, "experiment_id": experiment_id, "parent_run_id": parent,
                       "log_weights": bool(getattr(spec, "log_weights", False)),
                       "log_model": bool(getattr(spec, "log_model", False)), "study_dir": study_dir})


def close_study_tracking(tracking: str, finished: bool) -> None:
    """Mark the study's parent run FINISHED when every run is done (else it stays RUNNING)."""
    if not tracking or not finished:
        return
    spec = json.loads(tracking)
    try:
        with short_http():
            mlflow_client = client(spec["uri"])
            from mlflow.entities import RunStatus

            mlflow_client.set_terminated(spec["parent_run_id"], RunStatus.to_string(RunStatus.FINISHED))
    except Exception as error:  # noqa: BLE001
        warnings.warn(f"tracking: could not close the study's MLflow run ({error})", TrackingWarning, stacklevel=2)


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def _folder(run: RunDir, path: Path) -> str | None:
    """The artifact folder of a run's file: its folder inside the run directory (None at the top)."""
    folder = Path(run.relative(path)).parent.as_posix()
    return None if folder == "." else folder


class MlflowSink:
    """Sink: one MLflow run per fine-tuning run, nested under the study's parent run.

    ``spec``: the decoded JSON of :func:`open_study_tracking` (uri, experiment_id,
    parent_run_id, log_weights).
    """

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.uri = spec["uri"]
        self.client = None
        self.run_id: str | None = None
        self.step = 0
        self.lrs: dict[str, float] = {}
        self.logged: dict[str, dict[int, float]] = {}

    def start(self, run: RunStart) -> None:
        """Open (or reopen, on resume) this run's MLflow run; log its params and restored history."""
        problem = probe(self.uri)
        if problem:
            warnings.warn(f"tracking: {problem}; this run goes on untracked", TrackingWarning, stacklevel=2)
            return
        self.run = RunDir(Path(run.directory))
        self.size = int(run.config.get("size") or 224)
        self.lrs = {p.phase: p.lr for p in run.plan}
        experiment = self.spec["experiment_id"]
        run_dir = str(self.run.path.resolve())
        with short_http():
            mlflow_client = client(self.uri)
            from mlflow.entities import RunStatus

            saved = _read_json(self.run.mlflow)
            run_id = _live_run(mlflow_client, saved.get("run_id"), experiment) if saved.get("uri") == self.uri else None
            run_id = run_id or _find_by_tag(mlflow_client, experiment, "medtransfer.run_dir", run_dir)
            if run_id is None:
                tags = {"medtransfer.run_id": run.run_id, "medtransfer.run_dir": run_dir}
                if self.spec.get("parent_run_id"):
                    tags["mlflow.parentRunId"] = self.spec["parent_run_id"]
                run_id = mlflow_client.create_run(experiment, run_name=run.run_id, tags=tags).info.run_id
                mlflow_client.log_batch(run_id, params=_params(run.config))
            else:
                mlflow_client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
                for key in (*EPOCH_METRICS, "lr", "epoch_seconds"):
                    self.logged[key] = {m.step: m.value for m in mlflow_client.get_metric_history(run_id, key)}
            write_text_atomic(self.run.mlflow, json.dumps({"uri": self.uri, "run_id": run_id,
                                                           "experiment_id": experiment}))
            self.client, self.run_id = mlflow_client, run_id
            for row in run.history:
                self.epoch(row)

    def _row_metrics(self, row: dict[str, Any]) -> dict[str, float]:
        values = {key: row.get(key) for key in EPOCH_METRICS}
        values.update(lr=self.lrs.get(row["phase"]), epoch_seconds=row.get("seconds"))
        return {k: float(v) for k, v in values.items() if v is not None}

    def epoch(self, row: dict[str, Any]) -> None:
        """Log one history row at step = its epoch number, counted from 1 (its index + 1)."""
        if self.client is None:
            return
        from mlflow.entities import Metric, RunTag

        self.step += 1
        step = self.step
        now = int(time.time() * 1000)
        metrics = [Metric(key, value, now, step) for key, value in self._row_metrics(row).items()
                   if not (step in self.logged.get(key, {}) and _same(self.logged[key][step], value))]
        with short_http():
            self.client.log_batch(self.run_id, metrics=metrics, tags=[RunTag("medtransfer.phase", str(row["phase"]))])

    def finish(self, metrics: dict[str, Any], probe_metrics: dict[str, Any] | None) -> None:
        """Log the test metrics and the artifacts; mark the MLflow run FINISHED."""
        if self.client is None:
            return
        from mlflow.entities import Metric, RunStatus

        from mlflow.entities import RunTag

        now = int(time.time() * 1000)
        measured = [(f"{prefix}{key}", value)
                    for prefix, values in (("test_", metrics), ("probe_test_", probe_metrics or {}))
                    for key, value in values.items()]
        final = [Metric(key, float(value), now, 0) for key, value in measured
                 if key.split("test_", 1)[1] not in RUN_FACTS
                 and isinstance(value, (int, float)) and not isinstance(value, bool)]
        facts = [RunTag(key, str(value)) for key, value in measured if key.split("test_", 1)[1] in RUN_FACTS]
        run, best = self.run, self.run.best
        with short_http():
            self.client.log_batch(self.run_id, metrics=final, tags=facts)
            for path in run.artifacts():
                self.client.log_artifact(self.run_id, str(path), _folder(run, path))
            if best.exists():
                with tempfile.TemporaryDirectory() as tmp:
                    reference = Path(tmp) / "checkpoint.json"
                    digest = file_digest(best)
                    write_text_atomic(reference, json.dumps({"path": str(best.resolve()), "bytes": digest["bytes"],
                                                             "sha256": digest["sha256"]}, indent=1))
                    self.client.log_artifact(self.run_id, str(reference))
                self.client.set_tag(self.run_id, "medtransfer.checkpoint", str(best.resolve()))
                if self.spec.get("log_weights"):
                    self.client.log_artifact(self.run_id, str(best), _folder(run, best))
                if self.spec.get("log_model"):
                    self._log_model(best)
            self.client.set_terminated(self.run_id, RunStatus.to_string(RunStatus.FINISHED))

    def _log_model(self, best: Path) -> None:
        """The best model as an MLflow PyTorch model (``model/`` of the run), with the checkpoint's
        metadata. Saved as an exported graph (``pt2``: no pickle), traced on images of the run's
        size, any batch size; pip requirements given, not inferred (that imports the model in a
        subprocess)."""
        import mlflow
        import mlflow.pytorch
        import torch

        from medtransfer.models.checkpoint import load_checkpoint, plain_meta  # heavy: torch, as above

        model, meta = load_checkpoint(best)
        previous = mlflow.get_tracking_uri()
        mlflow.set_tracking_uri(self.uri)
        try:
            with mlflow.start_run(run_id=self.run_id):
                # (n, 3, h, w) float, as the network takes; a batch of 2 exports a dynamic batch size
                example = torch.zeros(2, 3, self.size, self.size)
                mlflow.pytorch.log_model(model, name="model", metadata=plain_meta(meta), serialization_format="pt2",
                                         input_example=example.numpy(),
                                         pip_requirements=[f"torch=={torch.__version__.split('+')[0]}",
                                                           f"medtransfer=={__version__}"])
        finally:
            mlflow.set_tracking_uri(previous)

    def fail(self, error: str) -> None:
        """Mark the MLflow run FAILED with the error as a tag."""
        if self.client is None:
            return
        from mlflow.entities import RunStatus

        with short_http():
            self.client.set_tag(self.run_id, "medtransfer.error", error[:5000])
            self.client.set_terminated(self.run_id, RunStatus.to_string(RunStatus.FAILED))


# MLflow keys allow [A-Za-z0-9_-. :/]; a swept cell's target label (thyroid~epochs=30,lr=0.0001) holds more
_KEY_CHARACTERS = str.maketrans({"~": " ", "=": ":", ",": " "})


def metric_key(key: str) -> str:
    """``key`` as MLflow accepts it: a setting label's ``~``, ``,`` and ``=`` become spaces and a
    colon (``table2/thyroid epochs:30 lr:0.0001/...``), any other character MLflow refuses ``_``."""
    key = key.translate(_KEY_CHARACTERS)
    return "".join(c if c.isalnum() or c in "_-. :/" else "_" for c in key)


def log_analysis(out: str | Path) -> bool:
    """Give a tracked study's parent MLflow run what ``medtransfer analyze`` wrote: Table 2's cells
    as metrics ``table2/{target}/{source}/{strategy}/mean`` and ``.../std`` (AUC x 100), and
    ``report.html`` and ``analysis/*.csv`` as artifacts (under ``analysis/``). Does nothing for an
    untracked study (no ``DIR/mlflow/study.json``); a store that fails costs one warning. Returns
    whether it logged."""
    import pandas as pd

    out = Path(out)
    saved = _read_json(out / STORE_DIR / STORE_STATE)
    if not saved.get("uri") or not saved.get("parent_run_id") or probe(saved["uri"]) is not None:
        return False
    try:
        with short_http():
            from mlflow.entities import Metric

            mlflow_client = client(saved["uri"])
            parent = saved["parent_run_id"]
            now = int(time.time() * 1000)
            metrics = []
            table = out / ANALYSIS_DIR / TABLE2_CSV
            if table.is_file():
                for row in pd.read_csv(table).itertuples(index=False):
                    for what in ("mean", "std"):
                        value = float(getattr(row, what))
                        if math.isfinite(value):
                            key = metric_key(f"table2/{row.target}/{row.source}/{row.strategy}/{what}")
                            metrics.append(Metric(key, value, now, 0))
            if metrics:
                mlflow_client.log_batch(parent, metrics=metrics)
            for path in [out / "report.html", *sorted((out / "analysis").glob("*.csv"))]:
                if path.is_file():
                    mlflow_client.log_artifact(parent, str(path), "analysis")
    except Exception as error:  # noqa: BLE001 - tracking never fails the analysis
        warnings.warn(f"tracking: could not log the analysis to MLflow ({error.__class__.__name__}: {error})",
                      TrackingWarning, stacklevel=2)
        return False
    return True

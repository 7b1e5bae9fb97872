"""MLflow tracking against the real mlflow client: what we logged is read back from the store."""

import json
import socket
import time
import warnings

import pandas as pd
import pytest

from medtransfer.study.config import TrackingSpec
from medtransfer.study.runner import run_study
from medtransfer.training.observers import Sinks, TrackingWarning
from medtransfer.tracking.mlflow_sink import MlflowSink, applicable, default_uri, log_analysis, open_study_tracking
from medtransfer.training import run as run_module
from medtransfer.training.record import MLFLOW as RUN_FILE
from medtransfer.training.run import train_run
from tests.study.conftest import tiny_study
from tests.training.conftest import tiny_config

mlflow = pytest.importorskip("mlflow")

EPOCH_KEYS = ["train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_auc"]


def _client(out):
    return mlflow.MlflowClient(tracking_uri=default_uri(out))


def _children(client, experiment_id):
    runs = client.search_runs([experiment_id])
    return [r for r in runs if "mlflow.parentRunId" in r.data.tags], [r for r in runs if "mlflow.parentRunId" not in r.data.tags]


def _assert_history_logged(client, run_id, directory):
    history = pd.read_csv(directory / "history.csv")
    for key in EPOCH_KEYS:
        logged = sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
        assert [s for s, _ in logged] == list(range(1, len(history) + 1)), key  # epochs from 1, none twice
        want = history[key].to_numpy()
        got = [v for _, v in logged]
        assert all(g == w or (g != g and w != w) for g, w in zip(got, want)), key


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    base = tmp_path_factory.mktemp("tracked")
    study = tiny_study(base, tracking={"kind": "mlflow"})
    out = base / "study"
    report = run_study(study, out)
    assert report.finished == 2 and not report.failed
    return study, out


@pytest.mark.slow
def test_one_mlflow_run_per_run_with_the_history_params_and_test_metrics(tracked):
    study, out = tracked
    client = _client(out)
    experiment = client.get_experiment_by_name(study.name)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # the classic runs view
    children, parents = _children(client, experiment.experiment_id)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 2
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    for run in children:
        directory = out / "runs" / run.data.tags["medtransfer.run_id"]
        assert json.loads((directory / RUN_FILE).read_text())["run_id"] == run.info.run_id
        assert run.info.status == "FINISHED"
        _assert_history_logged(client, run.info.run_id, directory)
        config = json.loads((directory / "config.json").read_text())
        assert run.data.params["lr"] == str(config["lr"]) and run.data.params["fold"] == str(config["fold"])
        assert set(run.data.params) == set(applicable(config))
        assert any(k.startswith("probe_") for k in run.data.params) == (config["strategy"] == "freeze")
        assert "k_folds" in run.data.params  # the study cuts k folds
        assert "phase" not in run.data.metrics and run.data.tags["medtransfer.phase"] == "finetune"
        assert "test_threads" not in run.data.metrics and "test_seconds" not in run.data.metrics
        assert run.data.tags["test_threads"] == str(metrics_of(directory)["threads"])
        metrics = json.loads((directory / "metrics.json").read_text())
        assert run.data.metrics["test_auc"] == pytest.approx(metrics["auc"], abs=0)
        assert [m.value for m in client.get_metric_history(run.info.run_id, "lr")] == [config["lr"]] * 2
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"predictions.csv", "metrics.json", "history.csv", "config.json", "checkpoint.json"} <= artifacts
        assert not any(a.endswith(".pt") for a in artifacts)  # no weights unless asked
        reference = json.loads(open(client.download_artifacts(run.info.run_id, "checkpoint.json")).read())
        assert reference["bytes"] == (directory / "checkpoints" / "best.pt").stat().st_size
    # a rerun (nothing to do) reuses the parent and adds no run
    run_study(study, out)
    again_children, again_parents = _children(client, experiment.experiment_id)
    assert len(again_children) == 2 and [p.info.run_id for p in again_parents] == [parents[0].info.run_id]


def metrics_of(directory):
    return json.loads((directory / "metrics.json").read_text())


@pytest.mark.slow
def test_the_analysis_goes_to_the_parent_run(tracked):
    """After `analyze`: Table 2's cells as metrics of the study's run, report and csvs as artifacts."""
    study, out = tracked
    analysis = out / "analysis"
    analysis.mkdir(exist_ok=True)
    # the third row: a swept cell, whose label holds characters MLflow refuses in a key
    pd.DataFrame({"target": ["synth", "synth", "synth~epochs=1,lr=0.003"], "source": ["random"] * 3,
                  "strategy": ["no-freeze", "freeze", "no-freeze"], "mean": [61.5, 58.25, 70.0],
                  "std": [3.5, float("nan"), 1.0], "n": [2, 1, 2], "runs": [2, 1, 2],
                  "best": [True, False, True]}).to_csv(analysis / "table2.csv", index=False)
    pd.DataFrame({"x": [1]}).to_csv(analysis / "similarity.csv", index=False)
    (out / "report.html").write_text("<html></html>")
    assert log_analysis(out)
    client = _client(out)
    parent = json.loads((out / "mlflow" / "study.json").read_text())["parent_run_id"]
    metrics = client.get_run(parent).data.metrics
    assert metrics["table2/synth/random/no-freeze/mean"] == 61.5 and metrics["table2/synth/random/no-freeze/std"] == 3.5
    assert metrics["table2/synth/random/freeze/mean"] == 58.25 and "table2/synth/random/freeze/std" not in metrics
    assert metrics["table2/synth epochs:1 lr:0.003/random/no-freeze/mean"] == 70.0
    assert {a.path for a in client.list_artifacts(parent, "analysis")} >= {
        "analysis/report.html", "analysis/table2.csv", "analysis/similarity.csv"}


def test_log_analysis_of_an_untracked_study_does_nothing(tmp_path):
    assert log_analysis(tmp_path) is False


def test_only_applicable_params():
    config = {"strategy": "no-freeze", "target": "medmnist", "target_options": {"split": "official"},
              "probe_lr": 1e-3, "probe_epochs": 3, "probe_patience": 2, "k_folds": 5, "split_seed": 0,
              "split_fractions": [0.8, 0.05, 0.15], "lr": 1e-4}
    assert applicable(config) == {"strategy": "no-freeze", "target": "medmnist",
                                  "target_options": {"split": "official"}, "lr": 1e-4}
    kept = applicable({**config, "strategy": "freeze", "target_options": {}})
    assert {"probe_lr", "k_folds", "split_seed"} <= set(kept)


def _dies_at_call(n, real):
    calls = {"n": 0}

    def dies(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt("simulated kill")
        return real(*args, **kwargs)

    return dies


@pytest.mark.slow
def test_a_killed_and_resumed_run_continues_one_mlflow_run(tracked, tmp_path, monkeypatch):
    _, out = tracked
    spec = json.loads(open_study_tracking(TrackingSpec(uri=default_uri(out), experiment="resume"), tmp_path, "r"))
    # no checkpoint within a phase: the resumed run redoes fine-tune epoch 1, already logged
    config = tiny_config(tmp_path, strategy="freeze", epochs=2, probe_epochs=2, checkpoint_every_s=1e6)
    directory = tmp_path / "run"
    real = run_module.train_epoch
    monkeypatch.setattr(run_module, "train_epoch", _dies_at_call(4, real))  # dies in fine-tune epoch 2
    with pytest.raises(KeyboardInterrupt):
        train_run(config, directory, Sinks([MlflowSink(spec)]))
    run_id = json.loads((directory / RUN_FILE).read_text())["run_id"]
    assert len(_client(out).get_metric_history(run_id, "train_loss")) == 3
    assert len(pd.read_csv(directory / "history.csv")) == 3
    monkeypatch.setattr(run_module, "train_epoch", real)
    train_run(config, directory, Sinks([MlflowSink(spec)]))
    client = _client(out)
    runs = client.search_runs([spec["experiment_id"]], filter_string="tags.`medtransfer.run_id` != ''")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == spec["parent_run_id"]]
    assert len(children) == 1 and children[0].info.status == "FINISHED"
    _assert_history_logged(client, children[0].info.run_id, directory)
    assert client.get_metric_history(children[0].info.run_id, "phase") == []  # a tag, not a metric
    assert children[0].data.tags["medtransfer.phase"] == "finetune"
    assert "probe_test_auc" in children[0].data.metrics
    # artifacts beside the store, not in mlflow's default ./mlruns
    assert children[0].info.artifact_uri.startswith((out / "mlflow" / "artifacts").resolve().as_uri())


def _closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_server_warns_and_the_sink_does_nothing(tmp_path):
    uri = f"http://127.0.0.1:{_closed_port()}"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        began = time.perf_counter()
        assert open_study_tracking(TrackingSpec(uri=uri), tmp_path, "x") == ""
        sink = MlflowSink({"uri": uri, "experiment_id": "1", "parent_run_id": None})
        config = tiny_config(tmp_path)
        from medtransfer.training.observers import RunStart

        sink.start(RunStart("r", tmp_path, config.model_dump(mode="json"), []))
        sink.epoch({"phase": "finetune", "train_loss": 1.0})
        sink.finish({"auc": 0.5}, None)
        elapsed = time.perf_counter() - began
    assert sum(issubclass(w.category, TrackingWarning) for w in caught) == 2  # one each, then silence
    assert elapsed < 5.0
    assert not (tmp_path / RUN_FILE).exists()


@pytest.mark.slow
def test_unreachable_tracking_leaves_results_identical_and_waits_for_nothing(tmp_path, monkeypatch):
    """The study runs untracked with the same numbers, and the unreachable store costs no wait.

    The time measured is the one spent on the store (opening the study's tracking; the runs, being
    untracked, never call it), not the two studies' run times: their ratio depends on how the
    machine's load changes between them."""
    from medtransfer.study import runner

    uri = f"http://127.0.0.1:{_closed_port()}"
    spent = []

    def timed(*args, **kwargs):
        began = time.perf_counter()
        try:
            return opened(*args, **kwargs)
        finally:
            spent.append(time.perf_counter() - began)

    opened = runner.open_study_tracking
    monkeypatch.setattr(runner, "open_study_tracking", timed)
    for name, tracking in (("plain", None), ("unreachable", {"kind": "mlflow", "uri": uri})):
        study = tiny_study(tmp_path / name, tracking=tracking)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run_study(study, tmp_path / name / "study")
        assert sum(issubclass(w.category, TrackingWarning) for w in caught) == (1 if tracking else 0)
    plain, tracked = tmp_path / "plain" / "study", tmp_path / "unreachable" / "study"
    for path in ["results/auc.csv", "results/table2.csv", *[str(p.relative_to(plain)) for p in plain.glob("runs/**/predictions.csv")]]:
        assert (plain / path).read_bytes() == (tracked / path).read_bytes(), path
    assert not list(tracked.glob("runs/**/mlflow.json"))
    # a refused connection answers at once; waiting for a timeout (3 s a probe, 10 s an MLflow
    # request, with retries) is what this catches, with a margin for a loaded machine
    assert spent and max(spent) < 3.0, spent


def test_tracking_settings_are_checked(tmp_path):
    from typer.testing import CliRunner

    from medtransfer.cli import app
    from medtransfer.errors import ConfigError
    from medtransfer.study.config import StudyConfig

    with pytest.raises(ConfigError, match="tracking"):
        tiny_study(tmp_path, tracking={"kind": "wandb"})
    with pytest.raises(ConfigError, match="tracking"):
        tiny_study(tmp_path, tracking={"kind": "mlflow", "url": "http://x"})  # misspelt key
    assert tiny_study(tmp_path).tracking is None  # off unless asked
    study = tiny_study(tmp_path, tracking={"kind": "mlflow", "experiment": "e"})
    assert StudyConfig.parse(yaml_roundtrip(study)).tracking.experiment == "e"
    path = tmp_path / "s.yaml"
    path.write_text(study.to_yaml())
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / "o"), "--track", "neptune"])
    assert result.exit_code != 0 and "--track" in str(result.exception)


def yaml_roundtrip(study):
    import yaml

    return yaml.safe_load(study.to_yaml())


def test_tracking_without_mlflow_installed_is_a_clear_error(tmp_path, monkeypatch):
    import importlib.util

    from medtransfer.errors import ConfigError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(ConfigError, match=r"medtransfer\[mlflow\]"):
        open_study_tracking(TrackingSpec(), tmp_path, "x")


@pytest.mark.slow
def test_a_sigkilled_tracked_study_resumes_into_the_same_mlflow_runs(tmp_path):
    """A real SIGKILL of the driver while a tracked run trains: the rerun logs into the same MLflow
    run (one per fine-tuning run), with one value per epoch equal to the run's history."""
    import os
    import signal
    import subprocess
    import sys

    from tests.study.conftest import write_yaml
    from tests.study.held import start_held, wait_held

    study = tiny_study(tmp_path, tracking={"kind": "mlflow"}, training={"epochs": 3, "checkpoint_every_s": 0})
    study_file = write_yaml(tmp_path / "study.yaml", study)
    out = tmp_path / "study"
    # held after a run's first checkpoint (its MLflow run open, an epoch logged): killed there, not raced
    process = start_held(study_file, out, tmp_path / "barrier", method="checkpoint")
    held = wait_held(process, tmp_path / "barrier")
    assert (held / RUN_FILE).exists() and (held / "checkpoints" / "last.pt").exists() and not (held / "DONE").exists()
    assert len((held / "history.csv").read_text().splitlines()) >= 2
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed = {p.parent: json.loads(p.read_text())["run_id"] for p in out.glob("runs/**/" + RUN_FILE)}
    assert killed
    env = {**os.environ, "MEDTRANSFER_QUIET": "1"}
    command = [sys.executable, "-c", "from medtransfer.cli import main; main()", "run", str(study_file),
               "--out", str(out)]
    rerun = subprocess.run(command, env=env, capture_output=True, timeout=1200)
    assert rerun.returncode == 0, rerun.stderr.decode()[-2000:]
    client = _client(out)
    experiment = client.get_experiment_by_name(study.name)
    children, parents = _children(client, experiment.experiment_id)
    assert len(parents) == 1
    assert len(children) == 2  # one per fine-tuning run, the killed one not duplicated
    for directory, run_id in killed.items():
        assert json.loads((directory / RUN_FILE).read_text())["run_id"] == run_id
    for run in children:
        assert run.info.status == "FINISHED"
        _assert_history_logged(client, run.info.run_id, out / "runs" / run.data.tags["medtransfer.run_id"])

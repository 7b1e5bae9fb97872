"""`tracking: {log_model: true}`: the run's best model is logged with mlflow.pytorch and loads
back from the store as the same network (same outputs as the checkpoint)."""

import json

import pytest
import torch

from medtransfer.models.checkpoint import load_checkpoint
from medtransfer.study.config import TrackingSpec
from medtransfer.training.observers import Sinks
from medtransfer.tracking.mlflow_sink import MlflowSink, default_uri, open_study_tracking
from medtransfer.training.record import MLFLOW as RUN_FILE
from medtransfer.training.run import train_run
from tests.training.conftest import tiny_config

mlflow = pytest.importorskip("mlflow")


@pytest.mark.slow
def test_the_best_model_is_logged_and_loads_back(tmp_path):
    uri = default_uri(tmp_path / "store")
    spec = json.loads(open_study_tracking(TrackingSpec(uri=uri, experiment="models", log_model=True), tmp_path, "m"))
    assert spec["log_model"] is True
    directory = tmp_path / "run"
    train_run(tiny_config(tmp_path, epochs=1), directory, Sinks([MlflowSink(spec)]))
    run_id = json.loads((directory / RUN_FILE).read_text())["run_id"]
    client = mlflow.MlflowClient(tracking_uri=uri)
    assert client.get_run(run_id).info.status == "FINISHED"
    mlflow.set_tracking_uri(uri)
    logged = mlflow.pytorch.load_model(f"runs:/{run_id}/model")
    original, _ = load_checkpoint(directory / "checkpoints" / "best.pt")
    x = torch.rand(3, 3, 32, 32) * 255  # another batch size than the export example
    with torch.no_grad():  # the exported graph is the model in eval mode (traced so)
        torch.testing.assert_close(logged(x), original.eval()(x), rtol=1e-5, atol=1e-5)

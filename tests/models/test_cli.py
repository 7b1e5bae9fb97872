"""The ``medtransfer weights`` commands, through the root app."""

from __future__ import annotations

import urllib.error
import urllib.request

import numpy as np
from typer.testing import CliRunner

from medtransfer.cli import app
from medtransfer.errors import WeightsError
from medtransfer.models import ResNet50, save_checkpoint

runner = CliRunner()


def test_info_reports_layout_and_loadability(keras_reference, tmp_path):
    result = runner.invoke(app, ["weights", "info", str(keras_reference.files["tf2-full"])])
    assert result.exit_code == 0, result.output
    assert "layout: full-model, Keras 2.9.0 (tensorflow)" in result.output
    assert "loads: yes (106 ResNet50 layers); head: none in file" in result.output
    top = runner.invoke(app, ["weights", "info", str(keras_reference.files["top-full"])])
    assert "predictions (2048 -> 5)" in top.output
    bad = tmp_path / "bad.h5"
    bad.write_bytes(keras_reference.files["weights"].read_bytes()[:5000])
    result = runner.invoke(app, ["weights", "info", str(bad)])
    assert result.exit_code == 1 and "loads: no" in result.output
    ckpt = save_checkpoint(tmp_path / "c.pt", ResNet50(num_classes=2), {"normalization": "unit", "classes": ["a", "b"]})
    result = runner.invoke(app, ["weights", "info", str(ckpt)])
    assert result.exit_code == 0 and "medtransfer checkpoint, head: 2, normalization unit" in result.output


def test_check_and_filters(keras_reference, tmp_path):
    result = runner.invoke(app, ["weights", "check", str(keras_reference.files["keras3"]), "--normalization", "symmetric"])
    assert result.exit_code == 0, result.output
    assert "normalization: symmetric" in result.output and "layout: keras3-weights" in result.output
    result = runner.invoke(app, ["weights", "filters", "random", "--out", str(tmp_path / "f")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "f" / "random_conv1.png").is_file() and (tmp_path / "f" / "gabor_reference.png").is_file()
    assert np.load(tmp_path / "f" / "random_conv1.npy").shape == (64, 3, 7, 7)
    assert "Gabor similarity" in result.output


def test_fetch_offline_is_a_clear_error(monkeypatch, tmp_path):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    result = runner.invoke(app, ["weights", "fetch", "imagenet", "--cache-dir", str(tmp_path)])
    assert isinstance(result.exception, WeightsError)
    assert "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5" in str(result.exception)
    assert str(tmp_path) in str(result.exception)

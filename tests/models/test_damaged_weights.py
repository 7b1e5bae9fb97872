"""Weights with NaN/inf values or negative BatchNorm variances are refused at load, naming the file and tensor."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from medtransfer.cli import app
from medtransfer.errors import WeightsError
from medtransfer.models import ResNet50, load_checkpoint, save_checkpoint
from medtransfer.models.keras_h5 import load_keras_h5
from medtransfer.models.report import check_finite_state
from medtransfer.models.torch_port import load_torch_port
from tests.models.conftest import write_tf2_style
from tests.models.test_sources import port_state

runner = CliRunner()


def _damaged_arrays(arrays, layer: str, index: int, value: float):
    damaged = {name: [a.copy() for a in weights] for name, weights in arrays.items()}
    damaged[layer][index].flat[3] = value
    return damaged


@pytest.mark.parametrize(
    ("layer", "index", "value", "expected"),
    [
        ("conv2_block1_1_conv", 0, np.nan, r"tensor conv2_block1_1_conv/kernel holds 1 NaN value"),
        ("conv1_conv", 1, np.inf, r"tensor conv1_conv/bias holds 1 infinite value"),
        ("conv3_block2_2_bn", 3, -0.5, r"BatchNorm variance conv3_block2_2_bn/moving_variance has 1 negative"),
    ],
)
def test_h5_with_damaged_values_is_refused_naming_file_and_tensor(keras_reference, tmp_path, layer, index, value, expected):
    path = write_tf2_style(tmp_path / "damaged.h5", keras_reference.layer_names,
                           _damaged_arrays(keras_reference.arrays, layer, index, value), full=True)
    model = ResNet50()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(WeightsError, match=f"^{path}: {expected}"):
        load_keras_h5(path, model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing copied
    result = runner.invoke(app, ["weights", "info", str(path)])
    assert result.exit_code == 1 and "loads: no" in result.output and layer in result.output


def _port_copy(arrays) -> dict[str, torch.Tensor]:
    """A port state dict of its own (port_state's tensors share memory with the shared fixture's arrays)."""
    return {k: v.clone() for k, v in port_state(arrays).items()}


def test_pth_with_nan_is_refused_naming_file_and_tensor(keras_reference, tmp_path):
    state = _port_copy(keras_reference.arrays)
    key = next(k for k in state if k.endswith("running_var"))
    state[key][0] = -1.0
    torch.save(state, tmp_path / "negative.pth")
    with pytest.raises(WeightsError, match=r"negative\.pth: BatchNorm variance .*running_var has 1 negative"):
        load_torch_port(tmp_path / "negative.pth", ResNet50())
    state = _port_copy(keras_reference.arrays)
    key = next(k for k in state if k.endswith("weight"))
    state[key].view(-1)[0] = float("nan")
    torch.save(state, tmp_path / "nan.pth")
    with pytest.raises(WeightsError, match=r"nan\.pth: tensor .* holds 1 NaN value"):
        load_torch_port(tmp_path / "nan.pth", ResNet50())
    result = runner.invoke(app, ["weights", "info", str(tmp_path / "nan.pth")])
    assert result.exit_code == 1 and "loads: no" in result.output and "NaN" in result.output


def test_checkpoint_with_inf_is_refused(tmp_path):
    model = ResNet50(num_classes=2)
    with torch.no_grad():
        model.head[1].weight[0, 0] = float("inf")
    path = save_checkpoint(tmp_path / "c.pt", model, {"normalization": "unit", "classes": ["a", "b"]})
    with pytest.raises(WeightsError, match=r"checkpoint .*c\.pt: tensor head\.1\.weight holds 1 infinite value"):
        load_checkpoint(path)
    result = runner.invoke(app, ["weights", "info", str(path)])
    assert result.exit_code == 1 and "loads: no" in result.output


def test_check_finite_state_skips_integer_tensors_and_accepts_clean_state():
    check_finite_state({"bn.num_batches_tracked": torch.tensor(3), "bn.running_var": torch.ones(4)}, "f.pth")
    with pytest.raises(WeightsError, match="f.pth: BatchNorm variance bn.running_var"):
        check_finite_state({"bn.running_var": np.array([1.0, -2.0])}, "f.pth")


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_check_finite_state_accepts_finite_values_whose_sum_overflows_and_refuses_canceling_infinities(dtype):
    big = torch.full((8,), torch.finfo(dtype).max, dtype=dtype)  # finite, but their sum is inf
    check_finite_state({"w": big}, "f.pth")
    both = torch.tensor([float("inf"), float("-inf"), 1.0], dtype=dtype)  # sums to NaN
    with pytest.raises(WeightsError, match="f.pth: tensor w holds 2 infinite value"):
        check_finite_state({"w": both}, "f.pth")

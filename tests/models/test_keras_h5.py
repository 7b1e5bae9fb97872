"""The Bar: Keras h5 files of every layout load into ResNet50 and reproduce Keras' activations."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest
import torch

from medtransfer.errors import WeightsError
from medtransfer.models import ResNet50, load_keras_h5, read_keras_h5
from tests.models.conftest import PAPER, write_tf2_style

torch.set_num_threads(1)
LAYOUTS = {"full": "full-model", "weights": "weights-only", "keras3": "keras3-weights",
           "tf2-full": "full-model", "tf2-weights": "weights-only", "keras-archive": "keras3-weights"}


def paper_features(model: ResNet50, x: np.ndarray) -> dict[str, np.ndarray]:
    with torch.no_grad():
        return {k: v.numpy() for k, v in model.eval().features(torch.from_numpy(x), PAPER).items()}


def max_rel_error(ours: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> dict[str, float]:
    """max |ours - ref| / max |ref| per layer."""
    return {n: float(np.abs(ours[n] - ref[n]).max() / np.abs(ref[n]).max()) for n in ref}


def as_v15(model: ResNet50) -> ResNet50:
    """torchvision's v1.5 placement: stride 2 on the 3x3 conv of a downsampling block, not the 1x1."""
    for s in (3, 4, 5):
        block = model.blocks[f"conv{s}_block1"]
        block.conv1.stride, block.conv2.stride = (1, 1), (2, 2)
    return model


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_parity_with_keras(keras_reference, layout):
    model = ResNet50()
    report = load_keras_h5(keras_reference.files[layout], model)
    assert report.layout == LAYOUTS[layout] and report.layers == 106 and report.head == "none in file"
    errors = max_rel_error(paper_features(model, keras_reference.x), keras_reference.outputs)
    assert max(errors.values()) <= 1e-4, errors


def test_v15_layout_differs_so_parity_can_fail(keras_reference):
    model = as_v15(ResNet50())
    load_keras_h5(keras_reference.files["full"], model)  # same weights, same shapes: loads silently
    ours = paper_features(model, keras_reference.x)
    errors = max_rel_error(ours, keras_reference.outputs)
    assert errors["conv2_block3_out"] <= 1e-4  # before the first strided block: identical
    assert errors["conv3_block4_out"] > 0.05 and errors["conv5_block3_out"] > 0.05, errors


def test_top_layer_loaded_into_matching_head_and_skipped_otherwise(keras_reference):
    path = keras_reference.files["top-full"]
    model = ResNet50(num_classes=5)
    report = load_keras_h5(path, model)
    assert report.head == "loaded from predictions (2048 -> 5)"
    with torch.no_grad():
        probs = torch.softmax(model.eval()(torch.from_numpy(keras_reference.top_x)), dim=1).numpy()
    np.testing.assert_allclose(probs, keras_reference.top_probs, atol=1e-5)
    other = ResNet50(num_classes=3)
    before = other.head[1].weight.clone()
    report = load_keras_h5(path, other)
    assert "not loaded (none has 3 outputs)" in report.head and "predictions (2048 -> 5)" in report.head
    torch.testing.assert_close(other.head[1].weight, before)
    assert "no head" in load_keras_h5(path, ResNet50()).head


def test_read_by_name_not_position(keras_reference, tmp_path):
    # the same layers listed in reverse order (groups and layer_names) still load correctly
    names = list(reversed(keras_reference.layer_names))
    path = write_tf2_style(tmp_path / "reversed.h5", names, keras_reference.arrays, full=False)
    model = ResNet50()
    load_keras_h5(path, model)
    errors = max_rel_error(paper_features(model, keras_reference.x), keras_reference.outputs)
    assert max(errors.values()) <= 1e-4


@pytest.mark.parametrize("options", [{"scope_suffix": "_1"}, {"nest_as": "resnet50"}])
def test_uniquified_scopes_and_nested_model(keras_reference, tmp_path, options):
    path = write_tf2_style(tmp_path / "variant.h5", keras_reference.layer_names, keras_reference.arrays, full=True, **options)
    model = ResNet50()
    assert load_keras_h5(path, model).layers == 106
    errors = max_rel_error(paper_features(model, keras_reference.x), keras_reference.outputs)
    assert max(errors.values()) <= 1e-4


def _copy(keras_reference, tmp_path, layout="weights"):
    path = tmp_path / f"{layout}.h5"
    shutil.copy(keras_reference.files[layout], path)
    return path


def _assert_unchanged(model: ResNet50, before: dict[str, torch.Tensor]) -> None:
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_misshaped_layer_refused_with_both_shapes_and_no_partial_load(keras_reference, tmp_path):
    path = _copy(keras_reference, tmp_path)
    with h5py.File(path, "r+") as f:
        group = f["conv5_block3_3_conv"]  # Keras 3 nests like tf.keras: <layer>/<layer>/kernel
        del group["conv5_block3_3_conv/kernel"]
        group.create_dataset("conv5_block3_3_conv/kernel", data=np.zeros((1, 1, 512, 1024), "float32"))
    model = ResNet50()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(WeightsError, match=r"conv5_block3_3_conv kernel has shape \(1, 1, 512, 1024\), expected \(1, 1, 512, 2048\)"):
        load_keras_h5(path, model)
    _assert_unchanged(model, before)


def test_missing_layer_refused(keras_reference, tmp_path):
    path = _copy(keras_reference, tmp_path, "full")
    with h5py.File(path, "r+") as f:
        root = f["model_weights"]
        del root["conv4_block3_2_bn"]
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in root.attrs["layer_names"]]
        root.attrs["layer_names"] = np.array([n.encode() for n in names if n != "conv4_block3_2_bn"])
    model = ResNet50()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(WeightsError, match="conv4_block3_2_bn is missing .105 of 106"):
        load_keras_h5(path, model)
    _assert_unchanged(model, before)


def test_not_a_resnet_truncated_and_not_h5(keras_reference, tmp_path):
    other = write_tf2_style(tmp_path / "mlp.h5", ["dense", "dense_1"], {"dense": [np.zeros((4, 8)), np.zeros(8)], "dense_1": [np.zeros((8, 2)), np.zeros(2)]}, full=False)
    with pytest.raises(WeightsError, match="not a Keras ResNet50.*dense, dense_1"):
        load_keras_h5(other, ResNet50())
    data = keras_reference.files["full"].read_bytes()
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="truncated.h5"):
        load_keras_h5(truncated, ResNet50())
    text = tmp_path / "notes.h5"
    text.write_text("hello")
    with pytest.raises(WeightsError, match="cannot be opened as HDF5"):
        read_keras_h5(text)
    with h5py.File(tmp_path / "empty.h5", "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(WeightsError, match="not a Keras weights file"):
        read_keras_h5(tmp_path / "empty.h5")
    with pytest.raises(WeightsError, match="does not exist"):
        read_keras_h5(tmp_path / "missing.h5")
    (tmp_path / "fake.keras").write_bytes(b"PK not really")
    with pytest.raises(WeightsError, match="not a Keras 3 .keras archive"):
        read_keras_h5(tmp_path / "fake.keras")


def test_keras3_weights_file_with_wrong_layer_count_refused(keras_reference, tmp_path):
    path = _copy(keras_reference, tmp_path, "keras3")
    with h5py.File(path, "r+") as f:
        del f["layers/conv2d_52"]
    with pytest.raises(WeightsError, match=r"ResNet50 53 and 53\); this one has 52 and 53: not a ResNet50"):
        load_keras_h5(path, ResNet50())


def test_read_keras_h5_layers_in_keras_layout(keras_reference):
    for layout in ("full", "tf2-weights", "keras3"):
        weights = read_keras_h5(keras_reference.files[layout])
        assert weights.layers["conv1_conv"]["kernel"].shape == (7, 7, 3, 64)
        np.testing.assert_array_equal(weights.layers["conv4_block2_1_bn"]["moving_variance"], keras_reference.arrays["conv4_block2_1_bn"][3])
        np.testing.assert_array_equal(weights.layers["conv3_block1_0_conv"]["kernel"], keras_reference.arrays["conv3_block1_0_conv"][0])

"""The Bar for DenseNet121, InceptionV3 and InceptionResNetV2: files Keras 3 writes load by name and
reproduce Keras' stage outputs and logits; wrong or truncated files are refused by name.

Each Keras model is built once per backbone (module-scoped fixture), given random weights including
BatchNorm moving statistics, and saved by Keras itself: a full model (``model.save("x.h5")``, Keras 3
naming ``conv2d/kernel``), weights only (Keras 3's legacy ``save_weights`` h5), Keras 3
``.weights.h5``; tf.keras 2's naming (``conv2d_1/kernel:0``, one group deeper, counters from 1 as in
Keras' own released files) is written with h5py from the same arrays.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from medtransfer.errors import WeightsError
from medtransfer.models import registry
from medtransfer.models.keras_h5 import keras3_layer_order, load_keras_h5, read_keras_h5

torch.set_num_threads(1)

SIZE = {"densenet121": 64, "inception_v3": 75, "inception_resnet_v2": 75}
LAYOUTS = {"full": "full-model", "weights": "weights-only", "keras3": "keras3-weights",
           "tf2-full": "full-model", "tf2-weights": "weights-only"}
# InceptionResNetV2's files are 217 MB each: it writes three, still both namings and both file kinds
FEW_LAYOUTS = {"inception_resnet_v2": ("full", "keras3", "tf2-weights")}
BUILD_SECONDS: dict[str, float] = {}


@dataclass
class Reference:
    name: str
    files: dict[str, Path]
    taps: tuple[str, ...]  # every layer compared: the registry's block outputs and paper layers
    x: np.ndarray  # (2, 3, s, s) input
    outputs: dict[str, np.ndarray]  # Keras layer -> activation (n, C, h, w)
    logits: np.ndarray  # (2, 5) logits of the with-top model
    keras3_order: list[str]  # weight layers in Keras' model.layers order


def _randomise(model, rng) -> None:
    import keras

    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        if isinstance(layer, keras.layers.BatchNormalization):
            names = [w.name for w in layer.weights]
            c = weights[0].shape[0]
            draw = {"gamma": rng.uniform(0.5, 1.5, c), "beta": rng.normal(0, 0.2, c),
                    "moving_mean": rng.normal(0, 0.3, c), "moving_variance": rng.uniform(0.5, 2.0, c)}
            layer.set_weights([draw[n] for n in names])
        elif len(weights) == 2:
            layer.set_weights([weights[0], rng.normal(0, 0.05, weights[1].shape)])


def write_tf2_style(path: Path, model, full: bool, shift: int = 1) -> Path:
    """tf.keras 2.x's h5 naming: ``<layer>/<layer>/<var>:0``; automatic names' counters shifted by
    ``shift`` (Keras 2.0 numbered ``conv2d_1`` .. where Keras 3 writes ``conv2d`` ..)."""
    import re

    def rename(name: str) -> str:
        m = re.match(r"^(conv2d|batch_normalization)(?:_(\d+))?$", name)
        return name if not m else f"{m.group(1)}_{int(m.group(2) or 0) + shift}"

    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = b"2.9.0"
        f.attrs["backend"] = b"tensorflow"
        root = f.create_group("model_weights") if full else f
        names = [rename(layer.name) for layer in model.layers]
        root.attrs["layer_names"] = np.array([n.encode() for n in names])
        for layer, name in zip(model.layers, names):
            group = root.create_group(name)
            weight_names = [f"{name}/{w.name}:0" for w in layer.weights]
            for weight_name, value in zip(weight_names, layer.get_weights()):
                group.create_dataset(weight_name, data=value)
            group.attrs["weight_names"] = np.array([n.encode() for n in weight_names])
    return path


@pytest.fixture(scope="module", params=[
    "densenet121", "inception_v3", pytest.param("inception_resnet_v2", marks=pytest.mark.slow)])
def reference(request, tmp_path_factory) -> Reference:
    keras = pytest.importorskip("keras")
    from keras.src.legacy.saving import legacy_h5_format

    name = request.param
    spec = registry.get(name)
    size = SIZE[name]
    start = time.perf_counter()
    keras.backend.clear_session()  # Keras' automatic names start at conv2d, as in a fresh session
    constructor = getattr(keras.applications, spec.keras_name)
    top = constructor(weights=None, include_top=True, classes=5, input_shape=(size, size, 3),
                      classifier_activation=None)
    rng = np.random.default_rng(0)
    _randomise(top, rng)
    ours = spec.create()
    last = ours.layer_names[-1]
    headless = keras.Model(top.input, top.get_layer(last).output, name=name)
    folder = tmp_path_factory.mktemp(name)
    wanted = FEW_LAYOUTS.get(name, tuple(LAYOUTS))
    files = {"full": folder / "full.h5", "keras3": folder / "k3.weights.h5"}
    headless.save(files["full"])
    headless.save_weights(files["keras3"])
    if "weights" in wanted:
        files["weights"] = folder / "weights.h5"
        with h5py.File(files["weights"], "w") as handle:
            legacy_h5_format.save_weights_to_hdf5_group(handle, headless)
    if "tf2-full" in wanted:
        files["tf2-full"] = write_tf2_style(folder / "tf2_full.h5", headless, full=True)
    files["tf2-weights"] = write_tf2_style(folder / "tf2_weights.h5", headless, full=False, shift=0)
    top.get_layer("predictions").set_weights(
        [rng.normal(0, 0.05, (spec.features, 5)).astype("float32"), rng.normal(0, 0.5, 5).astype("float32")])
    files["top-full"] = folder / "top_full.h5"
    top.save(files["top-full"])

    taps = tuple(dict.fromkeys(spec.block_layers + tuple(spec.paper_layers.values())))
    pixels = rng.uniform(0, 255, (2, size, size, 3)).astype("float32")
    x_nhwc = pixels / 127.5 - 1.0
    probe = keras.Model(top.input, [top.get_layer(n).output for n in taps])
    outs = probe(x_nhwc, training=False)
    outputs = {n: keras.ops.convert_to_numpy(o).transpose(0, 3, 1, 2) for n, o in zip(taps, outs)}
    logits = keras.ops.convert_to_numpy(top(x_nhwc, training=False))
    order = [layer.name for layer in headless.layers if layer.weights]
    BUILD_SECONDS[name] = time.perf_counter() - start
    return Reference(name, files, taps, np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2)), outputs, logits, order)


def _features(model, ref: Reference, layers) -> dict[str, np.ndarray]:
    with torch.no_grad():
        return {k: v.numpy() for k, v in model.eval().features(torch.from_numpy(ref.x), layers).items()}


def _errors(ours: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> dict[str, float]:
    """max |ours - ref| / max |ref| per layer (the error relative to the activation scale)."""
    return {n: float(np.abs(ours[n] - ref[n]).max() / np.abs(ref[n]).max()) for n in ours}


def test_keras3_layer_order_is_keras_model_layers_order(reference):
    model = registry.create(reference.name)
    assert keras3_layer_order(model) == reference.keras3_order
    assert sorted(model.keras_layers()) == sorted(reference.keras3_order)  # same names as Keras


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_parity_with_keras(reference, layout):
    if layout not in reference.files:
        pytest.skip(f"{reference.name} is checked on {', '.join(FEW_LAYOUTS[reference.name])} only (file size)")
    model = registry.create(reference.name)
    report = load_keras_h5(reference.files[layout], model)
    assert report.layout == LAYOUTS[layout] and report.head == "none in file"
    assert report.layers == registry.get(reference.name).keras_layers
    layers = reference.taps if layout == "full" else tuple(registry.get(reference.name).paper_layers.values())
    errors = _errors(_features(model, reference, layers), reference.outputs)
    assert len(errors) == len(layers) and max(errors.values()) <= 1e-4, errors


def test_logits_with_top(reference):
    spec = registry.get(reference.name)
    model = spec.create(num_classes=5)
    report = load_keras_h5(reference.files["top-full"], model)
    assert report.head == f"loaded from predictions ({spec.features} -> 5)"
    with torch.no_grad():
        logits = model.eval()(torch.from_numpy(reference.x)).numpy()
    scale = np.abs(reference.logits).max()
    assert np.abs(logits - reference.logits).max() <= 1e-4 * max(scale, 1.0)
    assert "none has 3 outputs" in load_keras_h5(reference.files["top-full"], spec.create(num_classes=3)).head


def test_padding_rule_matters_so_parity_can_fail(reference):
    """One 3x3 'same' conv padded all after (a wrong 'same' rule, same shapes) breaks parity downstream."""
    model = registry.create(reference.name)
    load_keras_h5(reference.files["full"], model)
    conv = next(m for m in model.keras_layers().values()
                if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3) and m.padding == (1, 1))
    conv.padding = (0, 0)
    conv._dynamic = False
    original = conv.forward
    conv.forward = lambda x: original(torch.nn.functional.pad(x, (0, 2, 0, 2)))
    errors = _errors(_features(model, reference, list(registry.get(reference.name).paper_layers.values())),
                     reference.outputs)
    assert max(errors.values()) > 1e-2, errors
    eps = {m.eps for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert eps == {1.001e-5 if reference.name == "densenet121" else 1e-3}  # Keras' per-model epsilon


def _unchanged(model, before):
    return all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_wrong_and_truncated_files_refused_by_name(reference, tmp_path):
    spec = registry.get(reference.name)
    model = spec.create()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    # a layer missing (and dropped from layer_names)
    path = tmp_path / "missing.h5"
    shutil.copy(reference.files["tf2-weights"], path)
    victim = [n for n in model.keras_layers() if n.endswith("_bn") or "batch_normalization" in n][-1]
    with h5py.File(path, "r+") as f:
        del f[victim]
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in f.attrs["layer_names"]]
        f.attrs["layer_names"] = np.array([n.encode() for n in names if n != victim])
    with pytest.raises(WeightsError, match=f"missing.h5.*{spec.keras_name}"):
        load_keras_h5(path, model)
    assert _unchanged(model, before)
    # a mis-shaped array names the layer and both shapes
    path = tmp_path / "misshaped.h5"
    shutil.copy(reference.files["tf2-weights"], path)
    conv = [n for n, m in model.keras_layers().items() if isinstance(m, torch.nn.Conv2d)][-1]
    with h5py.File(path, "r+") as f:
        data = f[conv][f"{conv}/kernel:0"][()]
        del f[conv][f"{conv}/kernel:0"]
        f[conv].create_dataset(f"{conv}/kernel:0", data=data[..., :-1])
    with pytest.raises(WeightsError, match=rf"layer {conv} kernel has shape .*expected"):
        load_keras_h5(path, model)
    assert _unchanged(model, before)
    # truncated
    data = reference.files["full"].read_bytes()
    (tmp_path / "truncated.h5").write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="truncated.h5"):
        load_keras_h5(tmp_path / "truncated.h5", model)
    assert _unchanged(model, before)
    # another backbone's file
    other = "resnet50" if reference.name != "resnet50" else "densenet121"
    with pytest.raises(WeightsError, match=f"not a Keras {registry.get(other).keras_name}|{registry.get(other).keras_name}"):
        load_keras_h5(reference.files["full"], registry.create(other))
    with pytest.raises(WeightsError, match=f"not a {registry.get(other).keras_name}"):
        load_keras_h5(reference.files["keras3"], registry.create(other))


def test_keras3_file_names_its_backbone(reference):
    assert read_keras_h5(reference.files["keras3"]).backbone == reference.name


def test_build_time_reported(reference):
    # the Keras build + save + reference pass is the cost of this module; keep it visible
    assert BUILD_SECONDS[reference.name] < 600


def test_weights_info_names_the_backbone(reference):
    from typer.testing import CliRunner

    from medtransfer.cli import app

    spec = registry.get(reference.name)
    for layout in ("tf2-weights", "keras3"):
        result = CliRunner().invoke(app, ["weights", "info", str(reference.files[layout])])
        assert result.exit_code == 0, result.output
        assert f"backbone: {spec.name} (Keras {spec.keras_name})" in result.output
        assert f"loads: yes ({spec.keras_layers} {spec.keras_name} layers)" in result.output

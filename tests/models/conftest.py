"""Keras reference files for the reader tests, written once per session by Keras 3 itself.

``keras.applications.ResNet50`` (torch backend) gets random weights, including random BatchNorm
moving statistics and biases so that every array matters, and is saved in each layout the reader
supports; tf.keras 2.x's nesting (``conv1_conv/conv1_conv/kernel:0``) is written by hand with h5py
from the same arrays. Reference activations of the paper's layers come from Keras on one input.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("KERAS_BACKEND", "torch")
torch.set_num_threads(1)  # the test machine is shared: one thread is faster than two contended ones

SIZE = 64
PAPER = ("conv1_relu", "conv2_block3_out", "conv3_block4_out", "conv4_block6_out", "conv5_block3_out")


@dataclass
class KerasReference:
    files: dict[str, Path]  # layout label -> file
    arrays: dict[str, list[np.ndarray]]  # Keras layer name -> its weights in Keras order
    layer_names: list[str]  # every Keras layer name in model order
    x: np.ndarray  # normalised input (n, 3, h, w) float32
    outputs: dict[str, np.ndarray]  # paper layer -> Keras activation (n, C, h, w)
    top_x: np.ndarray
    top_probs: np.ndarray  # softmax outputs of the with-top model on top_x, (n, 5)


def _randomise(model, rng) -> None:
    import keras

    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        if isinstance(layer, keras.layers.BatchNormalization):
            c = weights[0].shape[0]
            layer.set_weights(
                [rng.uniform(0.5, 1.5, c), rng.normal(0, 0.2, c), rng.normal(0, 0.3, c), rng.uniform(0.5, 2.0, c)]
            )
        else:
            kernel, bias = weights
            layer.set_weights([kernel, rng.normal(0, 0.05, bias.shape)])


def write_tf2_style(path: Path, layer_names: list[str], arrays: dict[str, list[np.ndarray]], full: bool,
                    scope_suffix: str = "", nest_as: str | None = None) -> Path:
    """An h5 with tf.keras 2.x's naming: ``<layer>/<layer>/<var>:0`` and ``weight_names`` attributes.

    ``scope_suffix`` appends to each variable scope (tf.keras uniquifying, ``conv1_conv_1/kernel:0``);
    ``nest_as`` writes the whole ResNet as one layer group of that name (a model inside a model).
    """
    import h5py

    vars_of = {"conv": ("kernel:0", "bias:0"), "bn": ("gamma:0", "beta:0", "moving_mean:0", "moving_variance:0"),
               "dense": ("kernel:0", "bias:0")}
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = b"2.9.0"
        f.attrs["backend"] = b"tensorflow"
        root = f.create_group("model_weights") if full else f
        groups = [nest_as] if nest_as else layer_names
        root.attrs["layer_names"] = np.array([n.encode() for n in groups])
        for group_name in groups:
            group = root.create_group(group_name)
            all_names = []
            for name in layer_names if nest_as else [group_name]:
                weights = arrays.get(name, [])
                kind = "bn" if name.endswith("_bn") else ("conv" if name.endswith("_conv") else "dense")
                names = [f"{name}{scope_suffix}/{v}" for v in vars_of[kind][: len(weights)]]
                all_names += names
                for weight_name, value in zip(names, weights):
                    group.create_dataset(weight_name, data=value)
            group.attrs["weight_names"] = np.array([n.encode() for n in all_names])
    return path


@pytest.fixture(scope="session")
def keras_reference(tmp_path_factory) -> KerasReference:
    import h5py

    keras = pytest.importorskip("keras")
    from keras.src.legacy.saving import legacy_h5_format

    folder = tmp_path_factory.mktemp("keras")
    rng = np.random.default_rng(0)
    # one Keras ResNet50 with a 5-class top; the headless files come from its backbone sub-model
    top = keras.applications.ResNet50(weights=None, include_top=True, classes=5, input_shape=(SIZE, SIZE, 3))
    _randomise(top, rng)
    model = keras.Model(top.input, top.get_layer("conv5_block3_out").output, name="resnet50")
    files = {"full": folder / "full.h5", "weights": folder / "weights.h5", "keras3": folder / "k3.weights.h5"}
    model.save(files["full"])
    with h5py.File(files["weights"], "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, model)
    model.save_weights(files["keras3"])
    files["keras-archive"] = folder / "model.keras"
    model.save(files["keras-archive"])
    arrays = {layer.name: layer.get_weights() for layer in model.layers if layer.get_weights()}
    layer_names = [layer.name for layer in model.layers]
    files["tf2-full"] = write_tf2_style(folder / "tf2_full.h5", layer_names, arrays, full=True)
    files["tf2-weights"] = write_tf2_style(folder / "tf2_weights.h5", layer_names, arrays, full=False)

    pixels = rng.uniform(0, 255, (2, SIZE, SIZE, 3)).astype("float32")
    x_nhwc = pixels[..., ::-1] - np.array([103.939, 116.779, 123.68], dtype="float32")  # caffe mode
    probe = keras.Model(model.input, [model.get_layer(n).output for n in PAPER])
    outs = probe(x_nhwc, training=False)
    outputs = {n: keras.ops.convert_to_numpy(o).transpose(0, 3, 1, 2) for n, o in zip(PAPER, outs)}

    top.get_layer("predictions").set_weights(
        [rng.normal(0, 0.05, (2048, 5)).astype("float32"), rng.normal(0, 0.5, 5).astype("float32")]
    )
    files["top-full"] = folder / "top_full.h5"
    top.save(files["top-full"])
    top_probs = keras.ops.convert_to_numpy(top(x_nhwc, training=False))

    return KerasReference(
        files=files,
        arrays=arrays,
        layer_names=layer_names,
        x=np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2)),
        outputs=outputs,
        top_x=np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2)),
        top_probs=top_probs,
    )

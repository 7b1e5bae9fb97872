"""Read Keras weight files of the registered backbones with h5py alone (no TensorFlow) and load them by layer name.

Three layouts are understood:

- ``full-model``: ``model.save("x.h5")`` (tf.keras 2.x and Keras 3 legacy h5), e.g. RadImageNet's
  ``RadImageNet-ResNet50_notop.h5``: layer groups under ``model_weights``;
- ``weights-only``: ``save_weights("x.h5")`` of tf.keras 2.x / Keras 3's legacy h5 writer, e.g. Keras'
  ImageNet ``resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5``: layer groups at the top level;
- ``keras3-weights``: Keras 3 ``save_weights("x.weights.h5")``: ``layers/<class name>_<n>/vars/<i>``,
  also the ``model.weights.h5`` inside a Keras 3 ``model.save("x.keras")`` archive.

In the two legacy layouts every layer group lists its arrays in a ``weight_names`` attribute, written
``conv1_conv/kernel:0`` by tf.keras 2.x (stored one group deeper, ``conv1_conv/conv1_conv/kernel:0``)
and ``conv1_conv/kernel`` by Keras 3; arrays are found by those names, never by position. A ResNet50
nested as one layer of a larger model (its weight names then carry the inner layer names) is read
the same way. The Keras 3 format stores no layer names: its layers are matched in Keras 3's
topological order of the ``keras.applications`` model (verified against Keras in the tests), the
backbone being the one whose Conv2D / BatchNormalization counts the file has, and every shape is checked.

Layers Keras names automatically (InceptionV3's and InceptionResNetV2's ``conv2d_<i>`` /
``batch_normalization_<i>``) carry a per-session counter: a file written after other models were
built in the same session, or by Keras 2.0 (which counted from 1), has the same names shifted.
Such layers are matched by their counter's order (the creation order), after checking that the file
has exactly as many of them as the model.
"""

from __future__ import annotations

import io
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from medtransfer.errors import WeightsError
from medtransfer.models import registry
from medtransfer.models.report import LoadReport, check_finite_state, copy_state_
from medtransfer.models.resnet import STAGES, ResNet50

CONV_VARS = ("kernel", "bias")
BN_VARS = ("gamma", "beta", "moving_mean", "moving_variance")
BN_TORCH = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}


def keras_layer_names() -> list[str]:
    """The 106 weight layers of Keras' ResNet50 (conv and BN), in Keras 3's topological order."""
    names = ["conv1_conv", "conv1_bn"]
    for s, blocks, _, _ in STAGES:
        for i in range(1, blocks + 1):
            parts = ("1", "2", "0", "3") if i == 1 else ("1", "2", "3")
            for j in parts:
                names += [f"conv{s}_block{i}_{j}_conv", f"conv{s}_block{i}_{j}_bn"]
    return names


@dataclass
class KerasWeights:
    """The arrays of a Keras weights file, by layer name (Keras layouts, float arrays).

    ``layers[name][var]`` with var in kernel/bias (conv, dense) or gamma/beta/moving_mean/
    moving_variance (BatchNorm); conv kernels ``(kh, kw, in, out)``, dense kernels ``(in, out)``.
    """

    path: str
    layout: str
    layers: dict[str, dict[str, np.ndarray]]
    keras_version: str | None = None
    backend: str | None = None
    notes: list[str] = field(default_factory=list)
    backbone: str | None = None  # registry name, when the layout decides it (Keras 3 files)


def _text(value) -> str:
    return value.decode("utf8") if isinstance(value, bytes) else str(value)


def _read(dataset, path: str, where: str) -> np.ndarray:
    try:
        return np.asarray(dataset[()])
    except Exception as error:  # h5py raises OSError/KeyError on damaged files
        raise WeightsError(f"{path}: cannot read array {where} (truncated or damaged file?): {error}") from error


def _read_legacy(handle, path: str) -> KerasWeights:
    full = "model_weights" in handle
    root = handle["model_weights"] if full else handle
    names = [_text(n) for n in root.attrs["layer_names"]]
    layers: dict[str, dict[str, np.ndarray]] = {}
    for name in names:
        if name not in root:
            raise WeightsError(f"{path}: layer {name!r} is listed in layer_names but its group is missing (truncated file?)")
        group = root[name]
        weight_names = [_text(w) for w in group.attrs.get("weight_names", [])]
        # A plain layer group holds one layer's arrays: its name is the layer name (tf.keras may
        # have uniquified the variable scope, e.g. conv1_conv_1/kernel:0). A nested model's group
        # holds many layers: each array's scope names its layer.
        nested = len({w.split("/")[-2] for w in weight_names if "/" in w}) > 1
        for weight_name in weight_names:
            parts = weight_name.split("/")
            var = parts[-1].split(":")[0]
            layer = parts[-2] if nested and len(parts) >= 2 else name
            if weight_name not in group:
                raise WeightsError(f"{path}: array {weight_name!r} of layer {name!r} is missing (truncated file?)")
            arrays = layers.setdefault(layer, {})
            if var in arrays:
                raise WeightsError(f"{path}: layer {layer!r} has two arrays named {var!r}")
            arrays[var] = _read(group[weight_name], path, f"{name}/{weight_name}")
    return KerasWeights(
        path=path,
        layout="full-model" if full else "weights-only",
        layers=layers,
        keras_version=_text(handle.attrs["keras_version"]) if "keras_version" in handle.attrs else None,
        backend=_text(handle.attrs["backend"]) if "backend" in handle.attrs else None,
    )


_K3_GROUP = re.compile(r"(?:^|/)layers/(conv2d|batch_normalization|dense)(?:_(\d+))?$")


def _layer_vars(name: str, module: nn.Module) -> tuple[str, ...]:
    """The Keras arrays of one weight layer, in Keras' order."""
    if isinstance(module, nn.Conv2d):
        return CONV_VARS if module.bias is not None else CONV_VARS[:1]
    return BN_VARS if getattr(module, "scale", True) else BN_VARS[1:]


def keras3_layer_order(model: nn.Module) -> list[str]:
    """The model's weight layers in Keras 3's ``model.layers`` order (headless model)."""
    if isinstance(model, ResNet50):
        return keras_layer_names()
    weights = model.keras_layers()
    return [n for n in model.keras3_order() if n in weights]


def _read_keras3(handle, path: str, backbone: str | None = None) -> KerasWeights:
    found: dict[str, list[tuple[int, str]]] = {"conv2d": [], "batch_normalization": [], "dense": []}

    def visit(name, obj):
        match = _K3_GROUP.search(name)
        if match and "vars" in obj:
            found[match.group(1)].append((int(match.group(2) or 0), name))

    handle["layers"].visititems(lambda n, o: visit("layers/" + n, o))
    n_conv, n_bn = len(found["conv2d"]), len(found["batch_normalization"])
    candidates = [registry.get(backbone)] if backbone is not None else list(registry.registry().values())
    spec = model = None
    counts = []
    for candidate in candidates:
        net = candidate.create()
        kinds = [isinstance(m, nn.Conv2d) for m in net.keras_layers().values()]
        counts.append(f"{candidate.keras_name} {sum(kinds)} and {len(kinds) - sum(kinds)}")
        if (sum(kinds), len(kinds) - sum(kinds)) == (n_conv, n_bn):
            spec, model = candidate, net
            break
    if spec is None:
        raise WeightsError(
            f"{path}: a Keras 3 weights file stores no layer names, so its backbone is told by its counts of "
            f"Conv2D and BatchNormalization layers ({'; '.join(counts)}); this one has {n_conv} and {n_bn}: "
            f"not a {' / '.join(c.keras_name for c in candidates)}"
        )
    modules = model.keras_layers()
    layers: dict[str, dict[str, np.ndarray]] = {}
    convs = iter(sorted(found["conv2d"]))
    bns = iter(sorted(found["batch_normalization"]))
    for name in keras3_layer_order(model):
        module = modules[name]
        _, group_path = next(convs) if isinstance(module, nn.Conv2d) else next(bns)
        layers[name] = _keras3_vars(handle[group_path]["vars"], _layer_vars(name, module), path, group_path, name,
                                    spec.keras_name)
    for number, group_path in sorted(found["dense"]):
        name = group_path.rsplit("/", 1)[-1]
        layers[name] = _keras3_vars(handle[group_path]["vars"], CONV_VARS, path, group_path, name, "Dense")
    notes = ["Keras 3 .weights.h5 stores no layer names: layers matched in Keras 3's topological order"]
    return KerasWeights(path=path, layout="keras3-weights", layers=layers, notes=notes, backbone=spec.name)


def _keras3_vars(group, wanted, path, group_path, name, model_name="ResNet50") -> dict[str, np.ndarray]:
    keys = sorted(group.keys(), key=int)
    if len(keys) != len(wanted):
        raise WeightsError(
            f"{path}: {group_path} ({model_name} layer {name}) has {len(keys)} arrays, expected {len(wanted)} ({', '.join(wanted)})"
        )
    return {var: _read(group[k], path, f"{group_path}/vars/{k}") for var, k in zip(wanted, keys)}


def _keras_zip_weights(path: Path) -> io.BytesIO:
    """The ``model.weights.h5`` member of a Keras 3 ``.keras`` archive, in memory."""
    try:
        with zipfile.ZipFile(path) as archive:
            return io.BytesIO(archive.read("model.weights.h5"))
    except (zipfile.BadZipFile, KeyError, OSError) as error:
        raise WeightsError(f"{path} is not a Keras 3 .keras archive with a model.weights.h5 member: {error}") from error


def read_keras_h5(path: str | os.PathLike, backbone: str | None = None) -> KerasWeights:
    """Read every weight array of a Keras h5 file (any of the three layouts) or ``.keras`` archive into memory.

    ``backbone`` (a registry name) decides how a Keras 3 ``.weights.h5`` is read; by default the
    backbone whose layer counts the file has. The legacy layouts are read by name, whatever the backbone.
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} " + ("is a folder; expected a file" if path.is_dir() else "does not exist"))
    try:
        handle = h5py.File(_keras_zip_weights(path) if path.suffix.lower() == ".keras" else path, "r")
    except OSError as error:
        raise WeightsError(f"{path} cannot be opened as HDF5 (truncated or not an h5 file): {error}") from error
    with handle:
        root = handle["model_weights"] if "model_weights" in handle else handle
        if "layer_names" in root.attrs:
            return _read_legacy(handle, str(path))
        if "layers" in handle and hasattr(handle["layers"], "visititems"):
            return _read_keras3(handle, str(path), backbone)
        raise WeightsError(
            f"{path} is an HDF5 file but not a Keras weights file: expected a 'layer_names' attribute "
            f"(at the top or under 'model_weights') or a Keras 3 'layers' group; top-level keys: {sorted(handle.keys())[:8]}"
        )


def _expected_keras_shapes(model: nn.Module) -> dict[str, dict[str, tuple[int, ...]]]:
    shapes: dict[str, dict[str, tuple[int, ...]]] = {}
    for name, module in model.keras_layers().items():
        if isinstance(module, nn.Conv2d):
            out, cin, kh, kw = module.weight.shape
            shapes[name] = {"kernel": (kh, kw, cin, out), "bias": (out,)}
        else:
            shapes[name] = {var: (module.num_features,) for var in BN_VARS}
        shapes[name] = {var: shapes[name][var] for var in _layer_vars(name, module)}
    return shapes


_AUTO = re.compile(r"^(conv2d|batch_normalization)(?:_(\d+))?$")


def align_auto_names(layers: dict[str, dict[str, np.ndarray]], expected: list[str], path: str,
                     model_name: str) -> dict[str, dict[str, np.ndarray]]:
    """``layers`` with Keras' automatic names (``conv2d_<i>``, ``batch_normalization_<i>``) renamed to
    the model's, matched in the order of their counters; other names are kept.

    Raises :class:`WeightsError` when the file has a different number of such layers than the model.
    """
    def auto(names, kind):
        hits = [(int(m.group(2) or 0), n) for n in names if (m := _AUTO.match(n)) and m.group(1) == kind]
        return [n for _, n in sorted(hits)]

    renamed = dict(layers)
    for kind in ("conv2d", "batch_normalization"):
        ours, theirs = auto(expected, kind), auto(layers, kind)
        if not ours or ours == theirs:
            continue
        if len(theirs) != len(ours):
            raise WeightsError(
                f"{path}: has {len(theirs)} automatically named {kind} layers, {model_name} has {len(ours)} "
                f"({ours[0]} .. {ours[-1]}): truncated file or another model"
            )
        for name in theirs:
            del renamed[name]
        for name, theirs_name in zip(ours, theirs):
            renamed[name] = layers[theirs_name]
    return renamed


def keras_state(weights: KerasWeights, model: nn.Module) -> tuple[dict[str, torch.Tensor], str, list[str]]:
    """Validate ``weights`` against ``model`` and convert them to its state-dict keys.

    Returns ``(tensors, head, notes)``; raises :class:`WeightsError` naming the layer and both
    shapes for any missing or mis-shaped array, before anything is copied.
    """
    path = weights.path
    spec = registry.get(registry.backbone_of(model))
    expected = _expected_keras_shapes(model)
    file_layers = align_auto_names(weights.layers, list(expected), path, spec.keras_name)
    present = [name for name in expected if name in file_layers]
    if not present:
        sample = ", ".join(sorted(weights.layers)[:6]) or "none"
        first = ", ".join(list(expected)[:2])
        raise WeightsError(
            f"{path} is not a Keras {spec.keras_name} weights file: it has no layer named {first}, "
            f"... (its weight layers: {sample})"
        )
    missing = [name for name in expected if name not in file_layers]
    if missing:
        raise WeightsError(
            f"{path}: layer {missing[0]} is missing ({len(present)} of {len(expected)} {spec.keras_name} weight "
            f"layers present; missing: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''})"
        )
    prefixes = {id(m): n for n, m in model.named_modules()}
    tensors: dict[str, torch.Tensor] = {}
    for name, module in model.keras_layers().items():
        arrays = file_layers[name]
        for var, shape in expected[name].items():
            if var not in arrays:
                raise WeightsError(f"{path}: layer {name} lacks its {var} array (has {', '.join(arrays)})")
            if tuple(arrays[var].shape) != shape:
                raise WeightsError(
                    f"{path}: layer {name} {var} has shape {tuple(arrays[var].shape)}, expected {shape} "
                    f"(Keras layout)"
                )
        check_finite_state({f"{name}/{var}": arrays[var] for var in expected[name]}, path)
        prefix = prefixes[id(module)]
        if isinstance(module, nn.Conv2d):
            tensors[f"{prefix}.weight"] = torch.from_numpy(np.ascontiguousarray(arrays["kernel"].transpose(3, 2, 0, 1)))
            if "bias" in expected[name]:
                tensors[f"{prefix}.bias"] = torch.from_numpy(arrays["bias"])
        else:
            for var in expected[name]:
                tensors[f"{prefix}.{BN_TORCH[var]}"] = torch.from_numpy(arrays[var])
    extra = {n: a for n, a in file_layers.items() if n not in expected}
    head, notes = _head_tensors(extra, model, tensors)
    return tensors, head, notes


def _head_tensors(extra: dict[str, dict[str, np.ndarray]], model: nn.Module, tensors: dict[str, torch.Tensor]) -> tuple[str, list[str]]:
    """Pick a top Dense layer (kernel (features, k), bias (k,)) for the model's head, adding it to ``tensors``."""
    notes: list[str] = []
    width = int(getattr(model, "feature_dim", 2048))
    tops = {
        n: a for n, a in extra.items()
        if set(a) == {"kernel", "bias"} and a["kernel"].ndim == 2 and a["kernel"].shape[0] == width
    }
    for name in sorted(set(extra) - set(tops)):
        notes.append(f"ignored layer {name} (arrays: {', '.join(f'{v}{tuple(a.shape)}' for v, a in extra[name].items())})")
    if not tops:
        return "none in file", notes
    described = ", ".join(f"{n} ({width} -> {a['kernel'].shape[1]})" for n, a in tops.items())
    k = model.num_classes
    if k is None:
        return f"not loaded: the model has no head; file has {described}", notes
    fitting = [n for n, a in tops.items() if a["kernel"].shape[1] == k and a["bias"].shape == (k,)]
    if len(fitting) != 1:
        why = "several fit" if fitting else f"none has {k} outputs"
        return f"not loaded ({why}): file has {described}; the head keeps its initialisation", notes
    arrays = tops[fitting[0]]
    tensors["head.1.weight"] = torch.from_numpy(np.ascontiguousarray(arrays["kernel"].T))
    tensors["head.1.bias"] = torch.from_numpy(arrays["bias"])
    return f"loaded from {fitting[0]} ({width} -> {k})", notes


def load_keras_h5(path: str | os.PathLike, model: nn.Module) -> LoadReport:
    """Load a Keras h5 file into ``model`` (any registered backbone) by layer name, all or nothing.

    The backbone must be complete and every shape must match; a top Dense layer is loaded into
    the head when ``model`` has one with the same number of classes, and skipped otherwise (the
    report says so).
    """
    weights = read_keras_h5(path, registry.backbone_of(model))
    tensors, head, notes = keras_state(weights, model)
    copy_state_(model, tensors, str(path))
    extra = [f"written by Keras {weights.keras_version} ({weights.backend} backend)"] if weights.keras_version else []
    return LoadReport(
        path=str(path), layout=weights.layout, layers=len(model.keras_layers()), head=head, notes=weights.notes + extra + notes
    )

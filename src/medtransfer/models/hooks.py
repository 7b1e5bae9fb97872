"""Activations of any PyTorch model at named modules, by forward hooks, in one forward pass.

Layer names are those of ``model.named_modules()`` (``layer1.0.conv2``, ``blocks.conv2_block3``).
For medtransfer's own backbones the Keras layer names and short stage names of ``features()``
(``conv1_relu``, ``block2``) are accepted too and mixed freely with module names.

Rules, so that every layer becomes a matrix of (image x position) rows by channels:

- A module called several times in one pass (a shared ``ReLU``, as in torchvision's Bottleneck)
  yields its *last* output of the pass.
- A module returning a tuple / list yields its first tensor element (e.g. ``nn.MultiheadAttention``'s
  output, not its attention weights); a dict, its first tensor value.
- ``(n, C, h, w)``: as is. ``(n, C)``: one position, ``(n, C, 1, 1)``.
- ``(n, T, C)`` (3-D, e.g. transformer tokens, class token included): channels last, each token a
  position, ``(n, C, T, 1)``. A 1-D conv's ``(n, C, L)`` is read the same way unless
  ``sequence="channels_first"`` is asked for.
- ``(n, C, d, h, w)`` (3-D conv): positions ``d * h * w``, ``(n, C, d*h*w, 1)``.
- Anything else (a scalar per image, 6-D) is refused with the module's name and shape.

Outputs are copied as the hook sees them, so later in-place operations (``y += shortcut``, an
in-place ReLU) cannot change what was captured.

TorchScript modules (``torch.jit.load``) run compiled code that forward hooks never see. For them
(:class:`ScriptTap`) the layers are the module's *direct children* called by its ``forward``
(``layer1``, ``fc``; not ``layer1.0.conv1``), read by rewriting a copy of the forward graph to also
return each child call's output, plus ``output`` (the module's own output).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from medtransfer.errors import ConfigError
from medtransfer.models.resnet import PAPER_LAYERS, TAP_LAYERS, ResNet50

SEQUENCE_LAYOUTS = ("tokens", "channels_first")


def as_nchw(output, name: str, sequence: str = "tokens") -> torch.Tensor:
    """A module output as ``(n, C, h, w)`` by the rules of this module; ``name`` is for errors."""
    tensor = _first_tensor(output)
    if tensor is None:
        raise ConfigError(f"layer {name!r} returned {type(output).__name__}, not a tensor: it cannot be compared")
    if tensor.dim() == 4:
        return tensor
    if tensor.dim() == 2:
        return tensor[:, :, None, None]
    if tensor.dim() == 3:
        if sequence == "channels_first":
            return tensor[:, :, :, None]
        if sequence != "tokens":
            raise ConfigError(f"sequence layout must be one of {', '.join(SEQUENCE_LAYOUTS)}, got {sequence!r}")
        return tensor.transpose(1, 2)[:, :, :, None]
    if tensor.dim() == 5:
        return tensor.flatten(2)[:, :, :, None]
    raise ConfigError(
        f"layer {name!r} outputs shape {tuple(tensor.shape)}: expected (n, C, h, w), (n, C), (n, T, C) "
        "or (n, C, d, h, w)"
    )


def _first_tensor(output):
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        for item in output:
            found = _first_tensor(item)
            if found is not None:
                return found
    if isinstance(output, dict):
        for item in output.values():
            found = _first_tensor(item)
            if found is not None:
                return found
    return None


def _own_names(model: nn.Module) -> set[str]:
    """Names ``model.features`` resolves itself (medtransfer backbones), besides module names."""
    if isinstance(model, ResNet50):
        return set(TAP_LAYERS) | set(PAPER_LAYERS)
    if hasattr(model, "layer_names") and hasattr(model, "paper_layers"):
        return set(model.layer_names) | set(model.paper_layers) | {"avg_pool"}
    return set()


def _run(model: nn.Module, x: torch.Tensor, own: Sequence[str]) -> dict[str, torch.Tensor]:
    """One forward pass: ``features(x, own)`` when own names are asked for, else the model's output."""
    if own:
        return model.features(x, list(own))
    if hasattr(model, "embed") and getattr(model, "head", True) is None:
        model.embed(x)  # a headless medtransfer backbone has no logits to compute
    else:
        model(x)
    return {}


class LayerTap:
    """Extract named layers of ``model`` in one pass per batch.

    ``LayerTap(model, ["layer1.0.relu", "fc"])(x)`` returns ``{name: (n, C, h, w)}`` in the
    order asked; names unknown to the model raise :class:`ConfigError` listing some that exist.
    """

    def __init__(self, model: nn.Module, layers: Iterable[str], sequence: str = "tokens") -> None:
        self.model = model
        self.layers = list(dict.fromkeys(layers))
        if not self.layers:
            raise ConfigError("no layers asked for")
        self.sequence = sequence
        modules = dict(model.named_modules())
        own = _own_names(model)
        self.own = [n for n in self.layers if n in own]
        self.hooked = [n for n in self.layers if n not in own]
        unknown = [n for n in self.hooked if n not in modules or n == ""]
        if unknown:
            sample = [n for n in modules if n][:8]
            raise ConfigError(
                f"{type(model).__name__} has no module named {unknown[0]!r}: names are as model.named_modules() "
                f"gives them (e.g. {', '.join(sample)}, ...); `medtransfer weights layers` lists them all"
            )
        self.modules = {n: modules[n] for n in self.hooked}

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        captured: dict[str, object] = {}

        def hook(name):
            def save(module, inputs, output):
                tensor = _first_tensor(output)
                captured[name] = tensor.clone() if tensor is not None else output
            return save

        handles = [m.register_forward_hook(hook(n)) for n, m in self.modules.items()]
        try:
            # features() stops after its deepest layer: with hooks too, run it to the end (avg_pool)
            own = _run(self.model, x, self.own + (["avg_pool"] if self.hooked and self.own else []))
        finally:
            for handle in handles:
                handle.remove()
        out: dict[str, torch.Tensor] = {}
        for name in self.layers:
            if name in self.own:
                key = next(k for k in own if k == name or _stage(self.model, name) == k)
                out[name] = as_nchw(own[key], name, self.sequence)
            elif name not in captured:
                raise ConfigError(f"layer {name!r} of {type(self.model).__name__} was not called in the forward pass")
            else:
                out[name] = as_nchw(captured[name], name, self.sequence)
        return out


def is_script(model) -> bool:
    """True for TorchScript modules (scripted, traced or loaded with ``torch.jit.load``)."""
    return isinstance(model, torch.jit.ScriptModule)


class ScriptTap:
    """:class:`LayerTap` for a TorchScript module: outputs of its direct children, and ``output``.

    The children are found in a copy of ``forward``'s graph (``prim::CallMethod`` on
    ``prim::GetAttr`` of ``self``); the copy returns the original output and each tapped call's.
    A child called several times yields its last call's output, as with hooks.
    """

    def __init__(self, model, layers: Iterable[str], sequence: str = "tokens") -> None:
        self.model = model
        self.layers = list(dict.fromkeys(layers))
        if not self.layers:
            raise ConfigError("no layers asked for")
        self.sequence = sequence
        graph = model.forward.graph.copy()
        calls = _child_calls(graph)
        known = list(dict.fromkeys(name for name, _ in calls)) + ["output"]
        unknown = [n for n in self.layers if n not in known]
        if unknown:
            raise ConfigError(
                f"TorchScript module has no direct child {unknown[0]!r} called by its forward: TorchScript runs "
                f"compiled code that hooks cannot see, so only its children ({', '.join(known[:-1]) or 'none'}) "
                f"and 'output' can be compared"
            )
        last = {name: value for name, value in calls}  # the last call of each child
        wanted = [n for n in self.layers if n != "output"]
        ret = graph.return_node()
        values = [ret.input()] + [last[n] for n in wanted]
        node = graph.create("prim::TupleConstruct", values)
        node.insertBefore(ret)
        node.output().setType(torch._C.TupleType([v.type() for v in values]))
        ret.replaceInput(0, node.output())
        self._names = ["output"] + wanted
        self._fn = torch._C._create_function_from_graph("medtransfer_tapped_forward", graph)

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        found = dict(zip(self._names, self._fn(self.model._c, x)))
        return {n: as_nchw(found[n], n, self.sequence) for n in self.layers}


def _child_calls(graph) -> list[tuple[str, object]]:
    """(child name, output value) of every ``self.<child>.forward(...)`` call in ``graph``, in order."""
    self_value = next(iter(graph.inputs()))
    children = {}
    calls = []
    for node in graph.nodes():
        if node.kind() == "prim::GetAttr" and node.input().unique() == self_value.unique():
            children[node.output().unique()] = node.s("name")
        elif node.kind() == "prim::CallMethod" and node.s("name") == "forward":
            target = next(iter(node.inputs())).unique()
            if target in children:
                calls.append((children[target], node.output()))
    return calls


def tap(model, layers: Iterable[str], sequence: str = "tokens"):
    """The extractor for ``model``: :class:`ScriptTap` for TorchScript, else :class:`LayerTap`."""
    return ScriptTap(model, layers, sequence) if is_script(model) else LayerTap(model, layers, sequence)


def _stage(model: nn.Module, name: str) -> str:
    if isinstance(model, ResNet50):
        return PAPER_LAYERS.get(name, name)
    return getattr(model, "paper_layers", {}).get(name, name)


def list_layers(model: nn.Module, x: torch.Tensor, sequence: str = "tokens") -> list[tuple[str, str, tuple[int, ...], tuple[int, ...] | None]]:
    """Every named module with its class, raw output shape and the ``(C, h, w)`` it is compared as.

    One forward pass of ``x`` with a hook on every module; modules that did not run are left out,
    and the compared shape is ``None`` for outputs the rules refuse. A TorchScript module lists its
    direct children and ``output``.
    """
    if is_script(model):
        names = list(dict.fromkeys(n for n, _ in _child_calls(model.forward.graph.copy()))) + ["output"]
        with torch.no_grad():
            outs = ScriptTap(model, names, sequence)._fn(model._c, x)
        raw = dict(zip(["output"] + names[:-1], outs))
        return [(n, "script child" if n != "output" else "output", tuple(_first_tensor(raw[n]).shape),
                 tuple(as_nchw(raw[n], n, sequence).shape[1:])) for n in names]
    captured: dict[str, tuple[str, tuple[int, ...], tuple[int, ...] | None]] = {}

    def hook(name):
        def save(module, inputs, output):
            tensor = _first_tensor(output)
            shape = tuple(tensor.shape) if tensor is not None else ()
            try:
                compared = tuple(as_nchw(output, name, sequence).shape[1:])
            except ConfigError:
                compared = None
            captured[name] = (type(module).__name__, shape, compared)
        return save

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if n]
    try:
        with torch.no_grad():
            _run(model, x, ())
    finally:
        for handle in handles:
            handle.remove()
    rows = [(n, *v) for n, v in captured.items()]  # in the order the modules first ran
    own = sorted(_own_names(model) - set(captured))
    if own:  # a medtransfer backbone: its Keras layer names, in forward order
        with torch.no_grad():
            feats = model.features(x, _keras_names(model))
        rows = [(n, "keras layer", tuple(t.shape), tuple(as_nchw(t, n).shape[1:])) for n, t in feats.items()] + rows
    return rows


def _keras_names(model: nn.Module) -> list[str]:
    if isinstance(model, ResNet50):
        return list(TAP_LAYERS)
    return [n for n in model.layer_names[1:]] + ["avg_pool"]

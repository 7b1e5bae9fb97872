"""Keras functional models transliterated into PyTorch: one node per Keras layer, named as Keras names it.

The DenseNet121, InceptionV3 and InceptionResNetV2 backbones are written with :class:`GraphBuilder`,
whose calls mirror ``keras.applications``' code line by line (``conv``, ``bn``, ``act``, pooling,
``concat``, ...). Each call adds one node whose name is the Keras layer name: the explicit name when
Keras gives one, else Keras' automatic name (``conv2d``, ``conv2d_1``, ``batch_normalization_7``,
``activation_3``: class name in snake case plus a per-class counter, as in a fresh Keras session).
:class:`KerasGraphNet` runs the nodes in order, so every layer output can be tapped by its Keras name.

Keras conventions reproduced (they decide whether Keras weight files compute the same features):

- ``padding="same"``: TensorFlow's rule, ``total = max((ceil(n / s) - 1) * s + k - n, 0)`` with the
  extra pixel after (bottom/right) when ``total`` is odd: symmetric for the stride-1 odd kernels
  these networks use, asymmetric in general; ``"valid"``: no padding, output ``floor((n - k) / s) + 1``.
- Average pooling with ``"same"`` padding divides by the number of real (unpadded) pixels.
- BatchNorm: epsilon per model (Keras' default 1e-3, DenseNet's 1.001e-5), momentum 0.99 (0.01 in
  PyTorch's convention); ``scale=False`` (Inception) has no gamma: a fixed 1 kept as a buffer.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from medtransfer.errors import ConfigError
from medtransfer.models.init import glorot_uniform_

BN_MOMENTUM = 0.01
"""Keras' BatchNorm momentum 0.99, in PyTorch's convention (weight of the new batch statistic)."""


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) padding of TensorFlow/Keras ``padding="same"`` along one axis of ``size`` pixels."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class KerasConv2d(nn.Conv2d):
    """``keras.layers.Conv2D`` with ``padding="same"`` or ``"valid"`` (kernel ``(kh, kw)``, no dilation).

    Symmetric "same" padding (stride 1, odd kernel) is passed to the convolution; any other "same"
    case is padded per input size with TensorFlow's rule (:func:`same_padding`).
    """

    def __init__(self, cin: int, cout: int, kernel: tuple[int, int], stride: int, padding: str, bias: bool) -> None:
        if padding not in ("same", "valid"):
            raise ConfigError(f"Keras padding must be 'same' or 'valid', got {padding!r}")
        static = padding == "same" and stride == 1 and all(k % 2 == 1 for k in kernel)
        pad = tuple((k - 1) // 2 for k in kernel) if static else 0
        super().__init__(cin, cout, kernel, stride=stride, padding=pad, bias=bias)
        self.keras_padding = padding
        self._dynamic = padding == "same" and not static

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._dynamic:
            (kh, kw), (sh, sw) = self.kernel_size, self.stride
            top, bottom = same_padding(x.shape[-2], kh, sh)
            left, right = same_padding(x.shape[-1], kw, sw)
            x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


class KerasBatchNorm2d(nn.BatchNorm2d):
    """``keras.layers.BatchNormalization`` over channels; ``scale=False`` keeps gamma at 1 (a buffer)."""

    def __init__(self, channels: int, eps: float, scale: bool = True) -> None:
        super().__init__(channels, eps=eps, momentum=BN_MOMENTUM)
        self.scale = bool(scale)
        if not self.scale:
            del self._parameters["weight"]
            self.register_buffer("weight", torch.ones(channels))


@dataclass(frozen=True)
class Node:
    """One Keras layer: ``op`` applied to the outputs of ``inputs`` (node names).

    ``op`` is one of input, conv, bn, relu, maxpool, avgpool, zeropad, concat, scale_add;
    ``keras_class`` is the Keras class name in snake case (``conv2d``, ``batch_normalization``, ...);
    ``args`` holds the op's fixed settings (pool size, stride, padding, residual scale).
    """

    name: str
    op: str
    inputs: tuple[str, ...]
    keras_class: str
    args: tuple = ()


class GraphBuilder:
    """Records a Keras functional model as nodes and weight modules; each call returns the node name.

    Channel counts are tracked per node so that ``conv(x, filters, ...)`` needs no input width.
    """

    def __init__(self, bn_eps: float) -> None:
        self.bn_eps = float(bn_eps)
        self.nodes: list[Node] = []
        self.modules: dict[str, nn.Module] = {}
        self.channels: dict[str, int] = {}
        self._counts: Counter[str] = Counter()

    def _add(self, keras_class: str, name: str | None, op: str, inputs: Sequence[str], channels: int, args: tuple = ()) -> str:
        if name is None:
            k = self._counts[keras_class]
            self._counts[keras_class] += 1
            name = keras_class if k == 0 else f"{keras_class}_{k}"
        if name in self.channels:
            raise ConfigError(f"layer name {name!r} used twice")
        self.nodes.append(Node(name, op, tuple(inputs), keras_class, args))
        self.channels[name] = int(channels)
        return name

    def input(self, channels: int = 3) -> str:
        return self._add("input_layer", None, "input", (), channels)

    def conv(self, x: str, filters: int, kernel: int | Sequence[int], stride: int = 1, padding: str = "same",
             bias: bool = False, name: str | None = None) -> str:
        kernel = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
        out = self._add("conv2d", name, "conv", (x,), filters)
        self.modules[out] = KerasConv2d(self.channels[x], filters, kernel, stride, padding, bias)
        return out

    def bn(self, x: str, scale: bool = True, name: str | None = None) -> str:
        out = self._add("batch_normalization", name, "bn", (x,), self.channels[x])
        self.modules[out] = KerasBatchNorm2d(self.channels[x], self.bn_eps, scale)
        return out

    def act(self, x: str, name: str | None = None) -> str:
        return self._add("activation", name, "relu", (x,), self.channels[x])

    def maxpool(self, x: str, size: int, stride: int, name: str | None = None) -> str:
        return self._add("max_pooling2d", name, "maxpool", (x,), self.channels[x], (size, stride))

    def avgpool(self, x: str, size: int, stride: int, padding: str = "valid", name: str | None = None) -> str:
        if padding == "same" and not (stride == 1 and size % 2 == 1):
            raise ConfigError("only stride-1 odd-size 'same' average pooling is implemented")
        return self._add("average_pooling2d", name, "avgpool", (x,), self.channels[x], (size, stride, padding))

    def zeropad(self, x: str, pad: int, name: str | None = None) -> str:
        return self._add("zero_padding2d", name, "zeropad", (x,), self.channels[x], (pad,))

    def concat(self, xs: Sequence[str], name: str | None = None) -> str:
        return self._add("concatenate", name, "concat", xs, sum(self.channels[x] for x in xs))

    def scale_add(self, x: str, up: str, scale: float, name: str | None = None) -> str:
        """Inception-ResNet's ``CustomScaleLayer``: ``x + scale * up``."""
        return self._add("custom_scale_layer", name, "scale_add", (x, up), self.channels[x], (float(scale),))


class KerasGraphNet(nn.Module):
    """A Keras-layout backbone run node by node, with an optional classification head.

    Subclasses pass the :class:`GraphBuilder` that describes their Keras model. Input: float
    ``(n, 3, h, w)`` normalised as the weight source asks; ``forward`` returns logits ``(n, k)``
    (global average pool -> Dropout -> Linear(features, k)), :meth:`embed` the pooled features
    ``(n, features)`` and :meth:`features` any layer's output by its Keras name.

    Attributes:
        layers: ``ModuleDict`` Keras layer name -> conv or BatchNorm module (state-dict keys
            ``layers.<keras name>.weight``, ...).
        feature_dim: channels of the last node (the width of the head's input).
    """

    backbone = "keras-graph"
    paper_layers: dict[str, str] = {}

    def __init__(self, graph: GraphBuilder, num_classes: int | None = None, dropout: float = 0.5) -> None:
        super().__init__()
        self.dropout = float(dropout)
        self.nodes: tuple[Node, ...] = tuple(graph.nodes)
        self.layers = nn.ModuleDict(graph.modules)
        self.feature_dim = graph.channels[self.nodes[-1].name]
        self._index = {node.name: i for i, node in enumerate(self.nodes)}
        uses: Counter[str] = Counter(name for node in self.nodes for name in node.inputs)
        # a ReLU may overwrite its input when nothing else reads it (a BN's fresh output)
        self._inplace = {
            node.name for node in self.nodes
            if node.op == "relu" and uses[node.inputs[0]] == 1 and self.nodes[self._index[node.inputs[0]]].op == "bn"
        }
        last_use: dict[str, int] = {}
        for i, node in enumerate(self.nodes):
            for name in node.inputs:
                last_use[name] = i
        self._free_after: list[tuple[str, ...]] = [() for _ in self.nodes]
        for name, i in last_use.items():
            self._free_after[i] += (name,)
        self.head: nn.Sequential | None = None
        if num_classes is not None:
            self.reset_head(num_classes)

    # -- structure -------------------------------------------------------------------------------

    @property
    def layer_names(self) -> tuple[str, ...]:
        """Every Keras layer name, in Keras' creation (code) order, the input layer first."""
        return tuple(node.name for node in self.nodes)

    @property
    def num_classes(self) -> int | None:
        """k of the head, or ``None`` without a head."""
        return None if self.head is None else int(self.head[1].out_features)

    def keras_layers(self) -> dict[str, nn.Module]:
        """Keras layer name -> conv or BatchNorm module, for every weight layer (no head), creation order."""
        return dict(self.layers.items())

    def keras_class(self, name: str) -> str:
        """The Keras class (snake case) of layer ``name``: ``conv2d``, ``batch_normalization``, ..."""
        return self.nodes[self._index[name]].keras_class

    def keras3_order(self) -> list[str]:
        """Layer names in the order of Keras 3's ``model.layers`` for this headless model.

        Keras 3 (``keras.src.ops.function.map_graph``) sorts layers by decreasing depth from the
        output, ties broken by the order a depth-first walk from the output first reaches them. Its
        ``.weights.h5`` files store no layer names, only this order (``layers/conv2d_<i>``).
        """
        visit_index: dict[str, int] = {}
        post_order: list[str] = []
        done: set[str] = set()

        def walk(name: str) -> None:
            if name in done:
                return
            visit_index.setdefault(name, len(visit_index))
            for parent in self.nodes[self._index[name]].inputs:
                walk(parent)
            done.add(name)
            post_order.append(name)

        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(max(limit, 10 * len(self.nodes)))
        try:
            walk(self.nodes[-1].name)
        finally:
            sys.setrecursionlimit(limit)
        depth: dict[str, int] = {}
        for name in reversed(post_order):
            d = depth.setdefault(name, 0)
            for parent in self.nodes[self._index[name]].inputs:
                depth[parent] = max(d + 1, depth.get(parent, 0))
        return sorted(post_order, key=lambda n: (-depth[n], visit_index[n]))

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of everything but the head."""
        for name, param in self.named_parameters():
            if not name.startswith("head."):
                yield param

    def reset_head(self, num_classes: int, seed: int = 0) -> None:
        """Replace the head by Dropout -> Linear(features, k), Keras-initialised (glorot-uniform, zero bias)."""
        if int(num_classes) < 1:
            raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r}")
        linear = nn.Linear(self.feature_dim, int(num_classes))
        generator = torch.Generator().manual_seed(int(seed))
        with torch.no_grad():
            glorot_uniform_(linear.weight, generator)
            linear.bias.zero_()
        ref = next(iter(self.layers.values())).weight
        self.head = nn.Sequential(nn.Dropout(self.dropout), linear).to(device=ref.device, dtype=ref.dtype)

    # -- forward ---------------------------------------------------------------------------------

    def _run(self, x: torch.Tensor, wanted: set[str], stop: int) -> dict[str, torch.Tensor]:
        env: dict[str, torch.Tensor] = {}
        found: dict[str, torch.Tensor] = {}
        for i, node in enumerate(self.nodes[: stop + 1]):
            op = node.op
            if op == "input":
                y = x
            else:
                a = env[node.inputs[0]]
                if op in ("conv", "bn"):
                    y = self.layers[node.name](a)
                elif op == "relu":
                    y = F.relu(a, inplace=node.name in self._inplace and node.name not in wanted
                               and node.inputs[0] not in wanted)
                elif op == "maxpool":
                    y = F.max_pool2d(a, node.args[0], node.args[1])
                elif op == "avgpool":
                    size, stride, padding = node.args
                    pad = (size - 1) // 2 if padding == "same" else 0
                    y = F.avg_pool2d(a, size, stride, padding=pad, count_include_pad=False)
                elif op == "zeropad":
                    p = node.args[0]
                    y = F.pad(a, (p, p, p, p))
                elif op == "concat":
                    y = torch.cat([env[n] for n in node.inputs], dim=1)
                elif op == "scale_add":
                    y = a + env[node.inputs[1]] * node.args[0]
                else:  # pragma: no cover - the builder makes only the ops above
                    raise ConfigError(f"unknown op {op!r}")
            if node.name in wanted:
                found[node.name] = y.clone()
            env[node.name] = y
            for name in self._free_after[i]:
                del env[name]
        found["__last__"] = y
        return found

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features ``(n, feature_dim)`` of input ``(n, 3, h, w)``."""
        return self._run(x, set(), len(self.nodes) - 1)["__last__"].mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(n, k)`` of input ``(n, 3, h, w)``; requires a head."""
        if self.head is None:
            raise ConfigError(
                f"{self.backbone} has no classification head (num_classes=None): call reset_head(k) or use "
                "embed()/features()"
            )
        return self.head(self.embed(x))

    def resolve(self, name: str) -> str:
        """A layer's Keras name from itself, a short stage name (``conv1``, ``block1`` ..) or ``avg_pool``."""
        name = self.paper_layers.get(name, name)
        if name not in self._index and name != "avg_pool":
            raise ConfigError(
                f"unknown {self.backbone} layer {name!r}: expected a Keras layer name of the model "
                f"(e.g. {', '.join(self.layer_names[1:4])}, ..., {self.layer_names[-1]}), avg_pool, or one of "
                f"{', '.join(self.paper_layers)}"
            )
        return name

    def features(self, x: torch.Tensor, layers: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
        """Named layer outputs for input ``(n, 3, h, w)``, as copies, in forward order.

        Args:
            layers: Keras layer names, the short stage names of :attr:`paper_layers`, or ``avg_pool``
                (the pooled features ``(n, C)``); default: the paper-equivalent stage outputs.

        Returns:
            ``{keras_name: tensor}``; conv-stage outputs ``(n, C, h', w')``. The pass stops after the
            deepest requested layer.
        """
        names = [self.resolve(n) for n in (self.paper_layers.values() if layers is None else layers)]
        if not names:
            return {}
        pooled = "avg_pool" in names
        wanted = {n for n in names if n != "avg_pool"}
        stop = len(self.nodes) - 1 if pooled else max(self._index[n] for n in wanted)
        found = self._run(x, wanted, stop)
        last = found.pop("__last__")
        if pooled:
            found["avg_pool"] = last.mean(dim=(2, 3))
        order = {n: i for i, n in enumerate(self.layer_names)}
        order["avg_pool"] = len(order)
        return {n: found[n] for n in sorted(set(names), key=order.__getitem__)}

"""ResNet50 in Keras' "v1" layout, in plain PyTorch, with outputs named by their Keras layer names.

Keras' ``keras.applications.ResNet50`` differs from torchvision's "v1.5" ResNet50: the stride of a
downsampling block sits on its first 1x1 conv (and on the 1x1 shortcut conv), not on the 3x3 conv;
every conv has a bias; BatchNorm uses eps 1.001e-5 and momentum 0.99 in Keras' convention (0.01 in
PyTorch's). Keras weight files therefore compute the same features only in this layout.

Every conv / BatchNorm module maps 1:1 to a Keras layer name (``conv1_conv``, ``conv1_bn``,
``conv{s}_block{i}_{0,1,2,3}_{conv,bn}``) through :meth:`ResNet50.keras_layers`, which the weight
readers use to load by name.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch import nn

from medtransfer.errors import ConfigError
from medtransfer.models.init import glorot_uniform_
from medtransfer.models.registry import KERAS_WEIGHTS_URL, BackboneSpec, Weights

BN_EPS = 1.001e-5
"""Keras' BatchNorm epsilon in ``keras.applications.ResNet50``."""

BN_MOMENTUM = 0.01
"""Keras' momentum 0.99 in PyTorch's convention (weight of the new batch statistic)."""

STAGES: tuple[tuple[int, int, int, int], ...] = (
    # (stage number s of conv{s}, blocks, bottleneck filters, stride of the first block)
    (2, 3, 64, 1),
    (3, 4, 128, 2),
    (4, 6, 256, 2),
    (5, 3, 512, 2),
)

PAPER_LAYERS: dict[str, str] = {
    "conv1": "conv1_relu",
    "block1": "conv2_block3_out",
    "block2": "conv3_block4_out",
    "block3": "conv4_block6_out",
    "block4": "conv5_block3_out",
}
"""The five layers the paper compares, short name -> Keras layer name."""

BLOCK_NAMES: tuple[str, ...] = tuple(
    f"conv{s}_block{i}" for s, blocks, _, _ in STAGES for i in range(1, blocks + 1)
)

BLOCK_LAYERS: tuple[str, ...] = ("conv1_relu",) + tuple(f"{b}_out" for b in BLOCK_NAMES)
"""``conv1_relu`` and the outputs of all 16 bottleneck blocks, in forward order."""

TAP_LAYERS: tuple[str, ...] = ("conv1_relu", "pool1_pool") + tuple(f"{b}_out" for b in BLOCK_NAMES) + (
    "avg_pool",
)
"""Every layer name :meth:`ResNet50.features` accepts, in forward order."""

_TAP_INDEX = {name: i for i, name in enumerate(TAP_LAYERS)}


def _conv(cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=True)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class Bottleneck(nn.Module):
    """Keras' ``block1``: 1x1 (stride) -> 3x3 -> 1x1 (x4), with a 1x1 conv shortcut when asked.

    Input ``(n, cin, h, w)``; output ``(n, 4 * filters, h / stride, w / stride)``.
    Attribute names follow the Keras suffixes: ``conv0``/``bn0`` is the shortcut (``_0_conv``),
    ``conv1..3``/``bn1..3`` the residual branch (``_1_conv`` .. ``_3_conv``).
    """

    def __init__(self, cin: int, filters: int, stride: int, conv_shortcut: bool) -> None:
        super().__init__()
        cout = 4 * filters
        if conv_shortcut:
            self.conv0 = _conv(cin, cout, 1, stride)
            self.bn0 = _bn(cout)
        else:
            self.conv0 = None
            self.bn0 = None
        self.conv1 = _conv(cin, filters, 1, stride)
        self.bn1 = _bn(filters)
        self.conv2 = _conv(filters, filters, 3, 1, padding=1)
        self.bn2 = _bn(filters)
        self.conv3 = _conv(filters, cout, 1)
        self.bn3 = _bn(cout)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.conv0 is None else self.bn0(self.conv0(x))
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        y += shortcut  # in place: y is this block's own fresh tensor
        return self.relu(y)


class ResNet50(nn.Module):
    """Keras-layout ResNet50 with an optional classification head.

    Args:
        num_classes: k outputs of the head (global average pool -> Dropout -> Linear(2048, k)),
            or ``None`` for the backbone alone.
        dropout: dropout probability in the head (the paper: 0.5).

    Input: float ``(n, 3, h, w)``, already normalised by the source's :class:`Normalization`;
    any ``h, w >= 32``. ``forward`` returns logits ``(n, k)``; softmax is left to the loss.
    The default initialisation is PyTorch's; use :func:`keras_init_` or a weight reader for Keras'.
    """

    def __init__(self, num_classes: int | None = None, dropout: float = 0.5) -> None:
        super().__init__()
        self.dropout = float(dropout)
        self.conv1 = _conv(3, 64, 7, stride=2, padding=3)  # = ZeroPadding2D(3) + valid 7x7/2 conv
        self.bn1 = _bn(64)
        self.relu = nn.ReLU(inplace=True)
        # ZeroPadding2D(1) + valid 3x3/2 max pool; the input is >= 0 after the ReLU, so zero
        # padding and PyTorch's implicit -inf padding give the same maxima.
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        blocks: dict[str, Bottleneck] = {}
        cin = 64
        for s, n_blocks, filters, stride in STAGES:
            for i in range(1, n_blocks + 1):
                first = i == 1
                blocks[f"conv{s}_block{i}"] = Bottleneck(
                    cin, filters, stride if first else 1, conv_shortcut=first
                )
                cin = 4 * filters
        self.blocks = nn.ModuleDict(blocks)
        self.head: nn.Sequential | None = None
        if num_classes is not None:
            self.reset_head(num_classes)

    # -- structure -------------------------------------------------------------------------------

    @property
    def num_classes(self) -> int | None:
        """k of the head, or ``None`` without a head."""
        return None if self.head is None else int(self.head[1].out_features)

    def keras_layers(self) -> dict[str, nn.Module]:
        """Keras layer name -> conv or BatchNorm module, for all 106 weight layers (no head)."""
        layers: dict[str, nn.Module] = {"conv1_conv": self.conv1, "conv1_bn": self.bn1}
        for name, block in self.blocks.items():
            for j in range(4):
                conv = getattr(block, f"conv{j}")
                if conv is None:
                    continue
                layers[f"{name}_{j}_conv"] = conv
                layers[f"{name}_{j}_bn"] = getattr(block, f"bn{j}")
        return layers

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of everything but the head."""
        for name, param in self.named_parameters():
            if not name.startswith("head."):
                yield param

    def reset_head(self, num_classes: int, seed: int = 0) -> None:
        """Replace the head by Dropout -> Linear(2048, k), Keras-initialised (glorot-uniform, zero bias).

        The new head lives on the device and dtype of the backbone.
        """
        if int(num_classes) < 1:
            raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r}")
        linear = nn.Linear(2048, int(num_classes))
        generator = torch.Generator().manual_seed(int(seed))
        with torch.no_grad():
            glorot_uniform_(linear.weight, generator)
            linear.bias.zero_()
        ref = self.conv1.weight
        self.head = nn.Sequential(nn.Dropout(self.dropout), linear).to(device=ref.device, dtype=ref.dtype)

    # -- forward ---------------------------------------------------------------------------------

    def _taps(self, x: torch.Tensor, stop: int) -> Iterator[tuple[str, torch.Tensor]]:
        """Run the backbone, yielding (Keras name, tensor) for ``TAP_LAYERS[: stop + 1]``."""
        x = self.relu(self.bn1(self.conv1(x)))
        yield "conv1_relu", x
        if stop == 0:
            return
        x = self.maxpool(x)
        yield "pool1_pool", x
        if stop == 1:
            return
        for k, (name, block) in enumerate(self.blocks.items()):
            x = block(x)
            yield f"{name}_out", x
            if stop == k + 2:
                return
        yield "avg_pool", x.mean(dim=(2, 3))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features ``(n, 2048)`` (Keras' ``avg_pool``) of input ``(n, 3, h, w)``."""
        for _, out in self._taps(x, len(TAP_LAYERS) - 1):
            pass
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(n, k)`` of input ``(n, 3, h, w)``; requires a head."""
        if self.head is None:
            raise ConfigError(
                "ResNet50 has no classification head (num_classes=None): call reset_head(k) or use "
                "embed()/features()"
            )
        return self.head(self.embed(x))

    def features(
        self, x: torch.Tensor, layers: Iterable[str] = tuple(PAPER_LAYERS.values())
    ) -> dict[str, torch.Tensor]:
        """Named intermediate outputs for input ``(n, 3, h, w)``, as copies.

        Args:
            layers: Keras layer names from :data:`TAP_LAYERS` (``conv1_relu``, ``pool1_pool``,
                ``conv{s}_block{i}_out``, ``avg_pool``), or the short names of :data:`PAPER_LAYERS`.

        Returns:
            ``{keras_name: tensor}`` in forward order; conv outputs ``(n, C, h', w')``, ``avg_pool``
            ``(n, 2048)``. Each tensor is a clone, so later in-place ops cannot alter it. The forward
            pass stops after the deepest requested layer.
        """
        wanted = []
        for name in layers:
            name = PAPER_LAYERS.get(name, name)
            if name not in _TAP_INDEX:
                raise ConfigError(
                    f"unknown ResNet50 layer {name!r}: expected one of {', '.join(TAP_LAYERS)} "
                    f"or {', '.join(PAPER_LAYERS)}"
                )
            wanted.append(name)
        if not wanted:
            return {}
        wanted_set = set(wanted)
        stop = max(_TAP_INDEX[n] for n in wanted)
        found: dict[str, torch.Tensor] = {}
        for name, out in self._taps(x, stop):
            if name in wanted_set:
                found[name] = out.clone()
        return {name: found[name] for name in sorted(found, key=_TAP_INDEX.__getitem__)}


SPEC = BackboneSpec(
    "resnet50", "ResNet50", ResNet50, input_size=224, min_size=32, normalization="caffe", features=2048,
    paper_layers=dict(PAPER_LAYERS), block_layers=BLOCK_LAYERS, keras_layers=106,
    imagenet=Weights(KERAS_WEIGHTS_URL + "resnet/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
                     "4d473c1dd8becc155b73f8504c6f6626"),
    radimagenet=("RadImageNet-ResNet50_notop.h5", "RadImageNet-ResNet50_notop.pth"),
)
"""ResNet50 in the registry (:mod:`medtransfer.models.registry`)."""

"""InceptionResNetV2 in the Keras layout (``keras.applications.InceptionResNetV2``), in plain PyTorch.

Unnamed ``conv2d_bn`` layers (Conv2D without bias + BatchNormalization(scale=False, eps 1e-3) +
ReLU) carry Keras' automatic names in creation order (``conv2d``.., ``batch_normalization``..,
``activation``..); the residual blocks' named layers are ``block35_<i>``/``block17_<i>``/
``block8_<i>`` with ``_mixed`` (concat), ``_conv`` (1x1 conv with bias, no BN) and ``_ac`` (ReLU;
``block8_10`` has none), the reductions ``mixed_5b``/``mixed_6a``/``mixed_7a``, and the last
layer ``conv_7b`` / ``conv_7b_bn`` / ``conv_7b_ac``. Each block adds ``scale * residual`` to its
input (Keras' ``CustomScaleLayer``). Inputs must be at least 75 x 75.
"""

from __future__ import annotations

from medtransfer.models.keras_graph import GraphBuilder, KerasGraphNet
from medtransfer.models.registry import KERAS_WEIGHTS_URL, BackboneSpec, Weights

BN_EPS = 1e-3

PAPER_LAYERS: dict[str, str] = {
    "conv1": "activation_2",
    "block1": "activation_4",
    "block2": "block35_10_ac",
    "block3": "block17_20_ac",
    "block4": "conv_7b_ac",
}
"""Paper-equivalent stage outputs: the last output at stride 2, 4, 8, 16 and 32 (as ResNet50's five)."""

BLOCK_LAYERS: tuple[str, ...] = (
    ("activation_2", "activation_4", "mixed_5b")
    + tuple(f"block35_{i}_ac" for i in range(1, 11))
    + ("mixed_6a",)
    + tuple(f"block17_{i}_ac" for i in range(1, 21))
    + ("mixed_7a",)
    + tuple(f"block8_{i}_ac" for i in range(1, 10))
    + ("conv_7b_ac",)
)
"""The stem's stage outputs, every reduction and residual block output, and ``conv_7b_ac``."""


def build() -> GraphBuilder:
    """The graph of ``keras.applications.InceptionResNetV2(include_top=False)``, in Keras' creation order."""
    g = GraphBuilder(BN_EPS)

    def c(x, filters, kernel, stride=1, padding="same", activation=True, bias=False, name=None):
        x = g.conv(x, filters, kernel, stride=stride, padding=padding, bias=bias, name=name)
        if not bias:
            x = g.bn(x, scale=False, name=None if name is None else f"{name}_bn")
        if activation:
            x = g.act(x, name=None if name is None else f"{name}_ac")
        return x

    def block(x, scale, kind, idx, activation=True):
        if kind == "block35":
            branches = [c(x, 32, 1), c(c(x, 32, 1), 32, 3), c(c(c(x, 32, 1), 48, 3), 64, 3)]
        elif kind == "block17":
            branches = [c(x, 192, 1), c(c(c(x, 128, 1), 160, (1, 7)), 192, (7, 1))]
        else:
            branches = [c(x, 192, 1), c(c(c(x, 192, 1), 224, (1, 3)), 256, (3, 1))]
        name = f"{kind}_{idx}"
        mixed = g.concat(branches, name=f"{name}_mixed")
        up = c(mixed, g.channels[x], 1, activation=False, bias=True, name=f"{name}_conv")
        x = g.scale_add(x, up, scale)
        return g.act(x, name=f"{name}_ac") if activation else x

    x = g.input()
    x = c(x, 32, 3, stride=2, padding="valid")
    x = c(x, 32, 3, padding="valid")
    x = c(x, 64, 3)
    x = g.maxpool(x, 3, 2)
    x = c(x, 80, 1, padding="valid")
    x = c(x, 192, 3, padding="valid")
    x = g.maxpool(x, 3, 2)
    b0 = c(x, 96, 1)
    b1 = c(c(x, 48, 1), 64, 5)
    b2 = c(c(c(x, 64, 1), 96, 3), 96, 3)
    bp = c(g.avgpool(x, 3, 1, padding="same"), 64, 1)
    x = g.concat([b0, b1, b2, bp], name="mixed_5b")
    for i in range(1, 11):
        x = block(x, 0.17, "block35", i)
    b0 = c(x, 384, 3, stride=2, padding="valid")
    b1 = c(c(c(x, 256, 1), 256, 3), 384, 3, stride=2, padding="valid")
    bp = g.maxpool(x, 3, 2)
    x = g.concat([b0, b1, bp], name="mixed_6a")
    for i in range(1, 21):
        x = block(x, 0.1, "block17", i)
    b0 = c(c(x, 256, 1), 384, 3, stride=2, padding="valid")
    b1 = c(c(x, 256, 1), 288, 3, stride=2, padding="valid")
    b2 = c(c(c(x, 256, 1), 288, 3), 320, 3, stride=2, padding="valid")
    bp = g.maxpool(x, 3, 2)
    x = g.concat([b0, b1, b2, bp], name="mixed_7a")
    for i in range(1, 10):
        x = block(x, 0.2, "block8", i)
    x = block(x, 1.0, "block8", 10, activation=False)
    c(x, 1536, 1, name="conv_7b")
    return g


class InceptionResNetV2(KerasGraphNet):
    """Keras-layout InceptionResNetV2 (features 1536) with an optional head; see :class:`KerasGraphNet`."""

    backbone = "inception_resnet_v2"
    paper_layers = PAPER_LAYERS

    def __init__(self, num_classes: int | None = None, dropout: float = 0.5) -> None:
        super().__init__(build(), num_classes=num_classes, dropout=dropout)


SPEC = BackboneSpec(
    "inception_resnet_v2", "InceptionResNetV2", InceptionResNetV2, input_size=299, min_size=75,
    normalization="symmetric", features=1536, paper_layers=dict(PAPER_LAYERS), block_layers=BLOCK_LAYERS,
    keras_layers=448,
    imagenet=Weights(KERAS_WEIGHTS_URL + "inception_resnet_v2/"
                     "inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5", "d19885ff4a710c122648d3b5c3b684e4"),
    radimagenet=("RadImageNet-IRV2_notop.h5", "RadImageNet-InceptionResNetV2_notop.h5",
                 "RadImageNet-IRV2_notop.pth", "RadImageNet-InceptionResNetV2_notop.pth"),
)
"""InceptionResNetV2 in the registry (:mod:`medtransfer.models.registry`)."""

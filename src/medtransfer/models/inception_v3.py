"""InceptionV3 in the Keras layout (``keras.applications.InceptionV3``), in plain PyTorch.

Every ``conv2d_bn`` of Keras is an unnamed Conv2D (no bias) + BatchNormalization(scale=False,
eps 1e-3) + ReLU, so its layers carry Keras' automatic names in creation order: ``conv2d``,
``conv2d_1`` .. ``conv2d_93``, ``batch_normalization`` .. ``_93``, ``activation`` .. ``_93``; the
inception modules' outputs are ``mixed0`` .. ``mixed10``. Strided convs and the max pools are
"valid"; the others "same"; the pooling branch averages 3x3 "same" without counting padding.
Inputs must be at least 75 x 75.
"""

from __future__ import annotations

from medtransfer.models.keras_graph import GraphBuilder, KerasGraphNet
from medtransfer.models.registry import KERAS_WEIGHTS_URL, BackboneSpec, Weights

BN_EPS = 1e-3

PAPER_LAYERS: dict[str, str] = {
    "conv1": "activation_2",
    "block1": "activation_4",
    "block2": "mixed2",
    "block3": "mixed7",
    "block4": "mixed10",
}
"""Paper-equivalent stage outputs: the last output at stride 2, 4, 8, 16 and 32 (as ResNet50's five)."""

BLOCK_LAYERS: tuple[str, ...] = ("activation_2", "activation_4") + tuple(f"mixed{i}" for i in range(11))
"""The stem's two stage outputs and every inception module's output."""


def conv2d_bn(g: GraphBuilder, x: str, filters: int, rows: int, cols: int, padding: str = "same", stride: int = 1) -> str:
    x = g.conv(x, filters, (rows, cols), stride=stride, padding=padding)
    x = g.bn(x, scale=False)
    return g.act(x)


def build() -> GraphBuilder:
    """The graph of ``keras.applications.InceptionV3(include_top=False)``, in Keras' creation order."""
    g = GraphBuilder(BN_EPS)
    c = lambda x, f, r, k, padding="same", stride=1: conv2d_bn(g, x, f, r, k, padding, stride)  # noqa: E731
    x = g.input()
    x = c(x, 32, 3, 3, stride=2, padding="valid")
    x = c(x, 32, 3, 3, padding="valid")
    x = c(x, 64, 3, 3)
    x = g.maxpool(x, 3, 2)
    x = c(x, 80, 1, 1, padding="valid")
    x = c(x, 192, 3, 3, padding="valid")
    x = g.maxpool(x, 3, 2)
    for i, pool_filters in enumerate((32, 64, 64)):  # mixed0..2: 35 x 35 modules
        b1 = c(x, 64, 1, 1)
        b5 = c(c(x, 48, 1, 1), 64, 5, 5)
        b3 = c(c(c(x, 64, 1, 1), 96, 3, 3), 96, 3, 3)
        bp = c(g.avgpool(x, 3, 1, padding="same"), pool_filters, 1, 1)
        x = g.concat([b1, b5, b3, bp], name=f"mixed{i}")
    b3 = c(x, 384, 3, 3, stride=2, padding="valid")  # mixed3: reduction to 17 x 17
    bd = c(c(c(x, 64, 1, 1), 96, 3, 3), 96, 3, 3, stride=2, padding="valid")
    bp = g.maxpool(x, 3, 2)
    x = g.concat([b3, bd, bp], name="mixed3")
    for i, width in zip(range(4, 8), (128, 160, 160, 192)):  # mixed4..7: 17 x 17 modules
        b1 = c(x, 192, 1, 1)
        b7 = c(c(c(x, width, 1, 1), width, 1, 7), 192, 7, 1)
        bd = c(x, width, 1, 1)
        bd = c(bd, width, 7, 1)
        bd = c(bd, width, 1, 7)
        bd = c(bd, width, 7, 1)
        bd = c(bd, 192, 1, 7)
        bp = c(g.avgpool(x, 3, 1, padding="same"), 192, 1, 1)
        x = g.concat([b1, b7, bd, bp], name=f"mixed{i}")
    b3 = c(c(x, 192, 1, 1), 320, 3, 3, stride=2, padding="valid")  # mixed8: reduction to 8 x 8
    b7 = c(c(c(c(x, 192, 1, 1), 192, 1, 7), 192, 7, 1), 192, 3, 3, stride=2, padding="valid")
    bp = g.maxpool(x, 3, 2)
    x = g.concat([b3, b7, bp], name="mixed8")
    for i in range(2):  # mixed9, mixed10: 8 x 8 modules
        b1 = c(x, 320, 1, 1)
        b3 = c(x, 384, 1, 1)
        b3 = g.concat([c(b3, 384, 1, 3), c(b3, 384, 3, 1)], name=f"mixed9_{i}")
        bd = c(c(x, 448, 1, 1), 384, 3, 3)
        bd = g.concat([c(bd, 384, 1, 3), c(bd, 384, 3, 1)])
        bp = c(g.avgpool(x, 3, 1, padding="same"), 192, 1, 1)
        x = g.concat([b1, b3, bd, bp], name=f"mixed{9 + i}")
    return g


class InceptionV3(KerasGraphNet):
    """Keras-layout InceptionV3 (features 2048) with an optional head; see :class:`KerasGraphNet`."""

    backbone = "inception_v3"
    paper_layers = PAPER_LAYERS

    def __init__(self, num_classes: int | None = None, dropout: float = 0.5) -> None:
        super().__init__(build(), num_classes=num_classes, dropout=dropout)


SPEC = BackboneSpec(
    "inception_v3", "InceptionV3", InceptionV3, input_size=299, min_size=75, normalization="symmetric",
    features=2048, paper_layers=dict(PAPER_LAYERS), block_layers=BLOCK_LAYERS, keras_layers=188,
    imagenet=Weights(KERAS_WEIGHTS_URL + "inception_v3/inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
                     "bcbd6486424b2319ff4ef7d526e38f63"),
    radimagenet=("RadImageNet-InceptionV3_notop.h5", "RadImageNet-InceptionV3_notop.pth"),
)
"""InceptionV3 in the registry (:mod:`medtransfer.models.registry`)."""

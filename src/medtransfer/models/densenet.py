"""DenseNet121 in the Keras layout (``keras.applications.DenseNet121``), in plain PyTorch.

Keras' layer names throughout: ``conv1_conv``/``conv1_bn``/``conv1_relu``, ``pool1``, dense blocks
``conv{s}_block{i}_{0_bn,0_relu,1_conv,1_bn,1_relu,2_conv,concat}``, transitions
``pool{s}_{bn,relu,conv,pool}``, and the final ``bn``/``relu``. Convolutions have no bias; BatchNorm
eps 1.001e-5. The stem pads explicitly (``ZeroPadding2D``) before its valid 7x7/2 conv and 3x3/2 max pool.
"""

from __future__ import annotations

from medtransfer.models.keras_graph import GraphBuilder, KerasGraphNet
from medtransfer.models.registry import KERAS_WEIGHTS_URL, BackboneSpec, Weights

BN_EPS = 1.001e-5
BLOCKS = (6, 12, 24, 16)
GROWTH = 32

PAPER_LAYERS: dict[str, str] = {
    "conv1": "conv1_relu",
    "block1": "conv2_block6_concat",
    "block2": "conv3_block12_concat",
    "block3": "conv4_block24_concat",
    "block4": "relu",
}
"""Paper-equivalent stage outputs: the last output at stride 2, 4, 8, 16 and 32 (as ResNet50's five)."""

BLOCK_LAYERS: tuple[str, ...] = ("conv1_relu",) + tuple(
    f"conv{s}_block{i}_concat" for s, n in zip((2, 3, 4, 5), BLOCKS) for i in range(1, n + 1)
) + ("relu",)
"""``conv1_relu``, every dense layer's concatenated output, and the final ``relu``."""


def build(blocks: tuple[int, ...] = BLOCKS) -> GraphBuilder:
    """The graph of ``keras.applications.densenet.DenseNet(blocks, include_top=False)``."""
    g = GraphBuilder(BN_EPS)
    x = g.input()
    x = g.zeropad(x, 3)
    x = g.conv(x, 64, 7, stride=2, padding="valid", name="conv1_conv")
    x = g.bn(x, name="conv1_bn")
    x = g.act(x, name="conv1_relu")
    x = g.zeropad(x, 1)
    x = g.maxpool(x, 3, 2, name="pool1")
    for k, n in enumerate(blocks):
        s = k + 2
        for i in range(1, n + 1):
            name = f"conv{s}_block{i}"
            y = g.bn(x, name=f"{name}_0_bn")
            y = g.act(y, name=f"{name}_0_relu")
            y = g.conv(y, 4 * GROWTH, 1, name=f"{name}_1_conv")
            y = g.bn(y, name=f"{name}_1_bn")
            y = g.act(y, name=f"{name}_1_relu")
            y = g.conv(y, GROWTH, 3, padding="same", name=f"{name}_2_conv")
            x = g.concat([x, y], name=f"{name}_concat")
        if k < len(blocks) - 1:
            name = f"pool{s}"
            x = g.bn(x, name=f"{name}_bn")
            x = g.act(x, name=f"{name}_relu")
            x = g.conv(x, int(g.channels[x] * 0.5), 1, name=f"{name}_conv")
            x = g.avgpool(x, 2, 2, name=f"{name}_pool")
    x = g.bn(x, name="bn")
    g.act(x, name="relu")
    return g


class DenseNet121(KerasGraphNet):
    """Keras-layout DenseNet121 (features 1024) with an optional head; see :class:`KerasGraphNet`."""

    backbone = "densenet121"
    paper_layers = PAPER_LAYERS

    def __init__(self, num_classes: int | None = None, dropout: float = 0.5) -> None:
        super().__init__(build(), num_classes=num_classes, dropout=dropout)


SPEC = BackboneSpec(
    "densenet121", "DenseNet121", DenseNet121, input_size=224, min_size=32, normalization="torch", features=1024,
    paper_layers=dict(PAPER_LAYERS), block_layers=BLOCK_LAYERS, keras_layers=241,
    imagenet=Weights(KERAS_WEIGHTS_URL + "densenet/densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
                     "30ee3e1110167f948a6b9946edeeb738"),
    radimagenet=("RadImageNet-DenseNet121_notop.h5", "RadImageNet-DenseNet121_notop.pth"),
)
"""DenseNet121 in the registry (:mod:`medtransfer.models.registry`)."""

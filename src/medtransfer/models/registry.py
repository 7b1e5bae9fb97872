"""The backbones medtransfer knows, by name: constructor, input size, normalisation, Keras names.

A timm-style registry: ``create("densenet121", num_classes=3)`` builds a Keras-layout model,
``get(name)`` returns its :class:`BackboneSpec`, ``backbone_of(model)`` names the backbone of a
model instance. RadImageNet's authors released Keras weights for exactly these four backbones.

Each spec records the paper-equivalent stage outputs used for layer-wise similarity
(``conv1``, ``block1`` .. ``block4``: the last output at stride 2, 4, 8, 16 and 32, as the paper's
five ResNet50 layers), every block output (``analysis.layers: all``), and ``normalization``: the
input mode of Keras' ``preprocess_input`` for that application (what its ImageNet weights expect).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from medtransfer.errors import ConfigError
from medtransfer.models import densenet, inception_resnet_v2, inception_v3, resnet


@dataclass(frozen=True)
class BackboneSpec:
    """One backbone.

    Attributes:
        name: registry name (``resnet50``, ``densenet121``, ``inception_v3``, ``inception_resnet_v2``).
        keras_name: the ``keras.applications`` constructor it reproduces.
        constructor: ``constructor(num_classes=None, dropout=0.5) -> nn.Module``.
        input_size: Keras' default input side in pixels; ``min_size`` the smallest it accepts.
        normalization: the :class:`~medtransfer.models.Normalization` mode of Keras' preprocessing.
        features: channels of the pooled features (the head's input).
        paper_layers: short stage name -> Keras layer name.
        block_layers: Keras names of every block output, in forward order.
        keras_layers: number of Keras weight layers of the headless model (conv + BatchNorm).
    """

    name: str
    keras_name: str
    constructor: Callable[..., nn.Module]
    input_size: int
    min_size: int
    normalization: str
    features: int
    paper_layers: dict[str, str]
    block_layers: tuple[str, ...]
    keras_layers: int

    def create(self, num_classes: int | None = None, dropout: float = 0.5) -> nn.Module:
        """A fresh model (PyTorch's default init; use a weight reader or ``keras_init_`` for Keras')."""
        return self.constructor(num_classes=num_classes, dropout=dropout)


def _specs() -> dict[str, BackboneSpec]:
    specs = [
        BackboneSpec("resnet50", "ResNet50", resnet.ResNet50, 224, 32, "caffe", 2048,
                     dict(resnet.PAPER_LAYERS), resnet.BLOCK_LAYERS, 106),
        BackboneSpec("densenet121", "DenseNet121", densenet.DenseNet121, 224, 32, "torch", 1024,
                     dict(densenet.PAPER_LAYERS), densenet.BLOCK_LAYERS, 241),
        BackboneSpec("inception_v3", "InceptionV3", inception_v3.InceptionV3, 299, 75, "symmetric", 2048,
                     dict(inception_v3.PAPER_LAYERS), inception_v3.BLOCK_LAYERS, 188),
        BackboneSpec("inception_resnet_v2", "InceptionResNetV2", inception_resnet_v2.InceptionResNetV2, 299, 75,
                     "symmetric", 1536, dict(inception_resnet_v2.PAPER_LAYERS), inception_resnet_v2.BLOCK_LAYERS, 448),
    ]
    return {s.name: s for s in specs}


_REGISTRY: dict[str, BackboneSpec] | None = None
DEFAULT = "resnet50"


def registry() -> dict[str, BackboneSpec]:
    """Name -> spec of every registered backbone."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = _specs()
    return _REGISTRY


def names() -> tuple[str, ...]:
    """The registered backbone names."""
    return tuple(registry())


def get(name: str | None) -> BackboneSpec:
    """The spec of backbone ``name`` (``None``: resnet50); a clear error for unknown names."""
    key = DEFAULT if name is None else str(name).strip().lower().replace("-", "_")
    aliases = {"resnet": "resnet50", "densenet": "densenet121", "inceptionv3": "inception_v3",
               "inceptionresnetv2": "inception_resnet_v2"}
    key = aliases.get(key.replace("_", ""), key)
    specs = registry()
    if key not in specs:
        raise ConfigError(f"unknown backbone {name!r}: expected one of {', '.join(specs)}")
    return specs[key]


def create(name: str | None, num_classes: int | None = None, dropout: float = 0.5) -> nn.Module:
    """A fresh model of backbone ``name``."""
    return get(name).create(num_classes=num_classes, dropout=dropout)


create_model = create


def stage_layer(backbone: str | None, layer: str) -> str:
    """``layer`` on ``backbone``: a stage name (``block2``) or ResNet50's Keras name of a stage
    (``conv3_block4_out``, as analyses name the paper's layers) becomes the backbone's layer for that
    stage (DenseNet121: ``conv3_block12_concat``); any other name is returned as it is."""
    spec = get(backbone)
    resnet = get(DEFAULT).paper_layers
    short = next((k for k, v in resnet.items() if v == layer), layer)
    return spec.paper_layers.get(short, layer)


def layer_shapes(size: int, layers: Iterable[str], backbone: str | None = None) -> dict[str, tuple[int, int, int]]:
    """``(C, h, w)`` of each Keras layer of the backbone (default ResNet50) for ``size x size``
    inputs (one tiny pass); the paper's ResNet50 layer names stand for the backbone's stages
    (:func:`medtransfer.models.stage_layer`), keyed as asked."""
    layers = list(layers)
    own = {name: stage_layer(backbone, name) for name in layers}
    with torch.no_grad():
        feats = create(backbone).eval().features(torch.zeros(1, 3, size, size), list(own.values()))
    return {name: tuple(int(d) for d in feats[own[name]].shape[1:]) for name in layers}


def backbone_of(model: nn.Module) -> str:
    """The registry name of ``model``'s backbone (by its class), or a clear error."""
    for spec in registry().values():
        if type(model) is spec.constructor:
            return spec.name
    raise ConfigError(f"{type(model).__name__} is not a registered backbone ({', '.join(registry())})")

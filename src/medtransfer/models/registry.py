"""The backbones medtransfer knows, by name: constructor, input size, normalisation, Keras names,
published weights.

A timm-style registry: ``create("densenet121", num_classes=3)`` builds a Keras-layout model,
``get(name)`` returns its :class:`BackboneSpec`, ``backbone_of(model)`` names the backbone of a
model instance. RadImageNet's authors released Keras weights for exactly these four backbones.

A backbone is defined in one place: its module (``models/resnet.py``) holds the network and its
``SPEC``, a :class:`BackboneSpec` with the paper-equivalent stage outputs used for layer-wise
similarity (``conv1``, ``block1`` .. ``block4``: the last output at stride 2, 4, 8, 16 and 32, as
the paper's five ResNet50 layers), every block output (``analysis.layers: all``),
``normalization`` (the input mode of Keras' ``preprocess_input`` for that application: what its
ImageNet weights expect) and its published weights. :data:`BACKBONES` lists the modules by name.
This module does not import torch: the names are checked without it, and a backbone's module
(which does) is imported the first time its spec is asked for.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from medtransfer.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

KERAS_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"
"""Where ``keras.applications`` downloads its ImageNet weights from."""


@dataclass(frozen=True)
class Weights:
    """A published weights file: its URL and the md5 its publisher gives (``keras.applications``
    checks the same md5s)."""

    url: str
    md5: str

    @property
    def file(self) -> str:
        """The file name, as cached."""
        return self.url.rsplit("/", 1)[-1]


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
        imagenet: Keras' ImageNet notop weights (None: none published).
        radimagenet: file names of RadImageNet's release (and its PyTorch ports) looked for in the cache.
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
    imagenet: Weights | None = None
    radimagenet: tuple[str, ...] = ()

    def create(self, num_classes: int | None = None, dropout: float = 0.5) -> nn.Module:
        """A fresh model (PyTorch's default init; use a weight reader or ``keras_init_`` for Keras')."""
        return self.constructor(num_classes=num_classes, dropout=dropout)


BACKBONES: dict[str, tuple[str, tuple[str, ...]]] = {
    "resnet50": ("resnet", ("resnet",)),
    "densenet121": ("densenet", ("densenet",)),
    "inception_v3": ("inception_v3", ("inceptionv3",)),
    "inception_resnet_v2": ("inception_resnet_v2", ("inceptionresnetv2",)),
}
"""Registry name -> (the module under ``medtransfer.models`` whose ``SPEC`` defines it, other
spellings accepted, compared without underscores)."""

DEFAULT = "resnet50"


def names() -> tuple[str, ...]:
    """The registered backbone names."""
    return tuple(BACKBONES)


def canonical(name: str | None) -> str:
    """The registry name ``name`` spells (``None``: resnet50; case, ``-``/``_`` and the aliases of
    :data:`BACKBONES` are forgiven); a clear error for unknown names. Imports no backbone."""
    key = DEFAULT if name is None else str(name).strip().lower().replace("-", "_")
    aliases = {alias: backbone for backbone, (_, spellings) in BACKBONES.items() for alias in spellings}
    key = aliases.get(key.replace("_", ""), key)
    if key not in BACKBONES:
        raise ConfigError(f"unknown backbone {name!r}: expected one of {', '.join(BACKBONES)}")
    return key


def get(name: str | None) -> BackboneSpec:
    """The spec of backbone ``name`` (``None``: resnet50); a clear error for unknown names."""
    key = canonical(name)
    spec = importlib.import_module(f"medtransfer.models.{BACKBONES[key][0]}").SPEC
    if spec.name != key:
        raise ConfigError(f"backbone {key!r}: its module's SPEC is named {spec.name!r}")
    return spec


def registry() -> dict[str, BackboneSpec]:
    """Name -> spec of every registered backbone."""
    return {name: get(name) for name in BACKBONES}


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
    import torch  # heavy: the registry's names are read without it

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

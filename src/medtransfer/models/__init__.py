"""The Keras-layout ResNet50, its weight readers, the weight sources and their normalisation."""

from medtransfer.models.checkpoint import is_checkpoint, load_checkpoint, save_checkpoint
from medtransfer.models.init import keras_init_
from medtransfer.models.normalization import MODES as NORMALIZATION_MODES
from medtransfer.models.normalization import Normalization
from medtransfer.models.resnet import BLOCK_LAYERS, PAPER_LAYERS, TAP_LAYERS, ResNet50

__all__ = [
    "BLOCK_LAYERS",
    "NORMALIZATION_MODES",
    "PAPER_LAYERS",
    "TAP_LAYERS",
    "Normalization",
    "ResNet50",
    "is_checkpoint",
    "keras_init_",
    "load_checkpoint",
    "save_checkpoint",
]

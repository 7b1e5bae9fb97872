"""Keras-layout backbones (ResNet50, DenseNet121, InceptionV3, InceptionResNetV2) and their registry,
their weight readers and writers, the weight sources and their normalisation."""

from medtransfer.models import registry
from medtransfer.models.checkpoint import is_checkpoint, load_checkpoint, save_checkpoint
from medtransfer.models.densenet import DenseNet121
from medtransfer.models.download import IMAGENET_MD5, IMAGENET_URL, imagenet_weights
from medtransfer.models.inception_resnet_v2 import InceptionResNetV2
from medtransfer.models.inception_v3 import InceptionV3
from medtransfer.models.init import keras_init_
from medtransfer.models.keras_h5 import load_keras_h5, read_keras_h5
from medtransfer.models.normalization import MODES as NORMALIZATION_MODES
from medtransfer.models.normalization import Normalization
from medtransfer.models.registry import BackboneSpec, backbone_of, create_model
from medtransfer.models.report import LoadReport
from medtransfer.models.resnet import BLOCK_LAYERS, PAPER_LAYERS, TAP_LAYERS, ResNet50
from medtransfer.models.sources import Source, identify_backbone, load_source, load_weights_file
from medtransfer.models.torch_port import export_port, load_torch_port, read_port

__all__ = [
    "BLOCK_LAYERS",
    "BackboneSpec",
    "DenseNet121",
    "InceptionResNetV2",
    "InceptionV3",
    "backbone_of",
    "create_model",
    "export_port",
    "identify_backbone",
    "read_port",
    "registry",
    "IMAGENET_MD5",
    "IMAGENET_URL",
    "NORMALIZATION_MODES",
    "PAPER_LAYERS",
    "TAP_LAYERS",
    "LoadReport",
    "Normalization",
    "ResNet50",
    "Source",
    "imagenet_weights",
    "is_checkpoint",
    "keras_init_",
    "load_checkpoint",
    "load_keras_h5",
    "load_source",
    "load_torch_port",
    "load_weights_file",
    "read_keras_h5",
    "save_checkpoint",
]

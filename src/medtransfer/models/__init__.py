"""Keras-layout backbones (ResNet50, DenseNet121, InceptionV3, InceptionResNetV2) and their registry,
their weight readers and writers, the weight sources and their normalisation."""

from medtransfer.lazy import lazy_exports

# public name -> the module that defines it, imported on first use (a light module of the package
# does not load the heavy ones)
_EXPORTS = {
    "is_checkpoint": "checkpoint",
    "load_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
    "DenseNet121": "densenet",
    "imagenet_weights": "download",
    "InceptionResNetV2": "inception_resnet_v2",
    "InceptionV3": "inception_v3",
    "keras_init_": "init",
    "load_keras_h5": "keras_h5",
    "read_keras_h5": "keras_h5",
    "NORMALIZATION_MODES": "normalization:MODES",
    "Normalization": "normalization",
    "BackboneSpec": "registry",
    "backbone_of": "registry",
    "create_model": "registry",
    "LoadReport": "report",
    "BLOCK_LAYERS": "resnet",
    "PAPER_LAYERS": "resnet",
    "TAP_LAYERS": "resnet",
    "ResNet50": "resnet",
    "Source": "sources",
    "identify_backbone": "sources",
    "load_source": "sources",
    "load_weights_file": "sources",
    "export_port": "torch_port",
    "load_torch_port": "torch_port",
    "read_port": "torch_port",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

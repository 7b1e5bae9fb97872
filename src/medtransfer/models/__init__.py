"""Keras-layout backbones (ResNet50, DenseNet121, InceptionV3, InceptionResNetV2) and their registry,
their weight readers and writers, the weight sources and their normalisation."""

from medtransfer.lazy import lazy_exports

# module -> the public names it defines, imported on first use (a light module of the package does
# not load the heavy ones)
_EXPORTS = {
    "checkpoint": ("is_checkpoint", "load_checkpoint", "save_checkpoint"),
    "densenet": ("DenseNet121",),
    "download": ("imagenet_weights",),
    "inception_resnet_v2": ("InceptionResNetV2",),
    "inception_v3": ("InceptionV3",),
    "init": ("keras_init_",),
    "keras_h5": ("load_keras_h5", "read_keras_h5"),
    "normalization": ("NORMALIZATION_MODES=MODES", "Normalization"),
    "registry": ("BackboneSpec", "backbone_of", "create_model"),
    "report": ("LoadReport",),
    "resnet": ("BLOCK_LAYERS", "PAPER_LAYERS", "TAP_LAYERS", "ResNet50"),
    "sources": ("Source", "identify_backbone", "load_source", "load_weights_file"),
    "torch_port": ("export_port", "load_torch_port", "read_port"),
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

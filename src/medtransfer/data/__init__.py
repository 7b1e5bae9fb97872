"""Datasets, patient-grouped folds, the pixel cache and Keras-faithful augmentation.

Flow: ``load_manifest(name, root)`` -> ``Manifest`` (one row per image) -> ``make_folds`` ->
``PixelCache.build`` (decoded, resized uint8 pixels on disk) -> batches -> ``KerasAugment`` on the
training device. See ``docs/interfaces.md``.
"""

from medtransfer.lazy import lazy_exports

# public name -> the module that defines it, imported on first use (a light module of the package
# does not load the heavy ones)
_EXPORTS = {
    "AffineParams": "augment",
    "KerasAugment": "augment",
    "keras_matrices": "augment",
    "PixelCache": "cache",
    "import_author_splits": "folds",
    "make_folds": "folds",
    "read_folds": "folds",
    "validate_folds": "folds",
    "write_folds": "folds",
    "decode_file": "images",
    "resize": "images",
    "Manifest": "manifest",
    "SkippedFile": "manifest",
    "dataset_names": "registry",
    "load_manifest": "registry",
    "verify_images": "registry",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

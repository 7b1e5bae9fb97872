"""Datasets, patient-grouped folds, the pixel cache and Keras-faithful augmentation.

Flow: ``load_manifest(name, root)`` -> ``Manifest`` (one row per image) -> ``make_folds`` ->
``PixelCache.build`` (decoded, resized uint8 pixels on disk) -> batches -> ``KerasAugment`` on the
training device. See ``docs/interfaces.md``.
"""

from medtransfer.lazy import lazy_exports

# module -> the public names it defines, imported on first use (a light module of the package does
# not load the heavy ones)
_EXPORTS = {
    "augment": ("AffineParams", "KerasAugment", "keras_matrices"),
    "cache": ("PixelCache",),
    "folds": ("import_author_splits", "make_folds", "read_folds", "validate_folds", "write_folds"),
    "images": ("decode_file", "resize"),
    "manifest": ("Manifest", "SkippedFile"),
    "registry": ("dataset_names", "load_manifest", "verify_images"),
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

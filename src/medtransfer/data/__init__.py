"""Datasets, patient-grouped folds, the pixel cache and Keras-faithful augmentation.

Flow: ``load_manifest(name, root)`` -> ``Manifest`` (one row per image) -> ``make_folds`` ->
``PixelCache.build`` (decoded, resized uint8 pixels on disk) -> batches -> ``KerasAugment`` on the
training device. See ``docs/interfaces.md``.
"""

from medtransfer.data.augment import AffineParams, KerasAugment, keras_matrices
from medtransfer.data.cache import PixelCache
from medtransfer.data.folds import (
    import_author_splits,
    make_folds,
    read_folds,
    validate_folds,
    write_folds,
)
from medtransfer.data.images import decode_file, resize
from medtransfer.data.manifest import Manifest, SkippedFile
from medtransfer.data.registry import dataset_names, load_manifest, verify_images

__all__ = [
    "AffineParams",
    "KerasAugment",
    "Manifest",
    "PixelCache",
    "SkippedFile",
    "dataset_names",
    "decode_file",
    "import_author_splits",
    "keras_matrices",
    "load_manifest",
    "make_folds",
    "read_folds",
    "resize",
    "validate_folds",
    "verify_images",
    "write_folds",
]

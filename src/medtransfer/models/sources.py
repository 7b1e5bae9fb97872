"""The weight sources of the study: ``imagenet``, ``radimagenet``, ``random``, or a file.

``load_source(name_or_path)`` returns a :class:`Source`: a headless ResNet50 in eval mode, the input
normalisation that belongs to it, and where it came from. The authors normalised both pretrained
sources in Keras' "caffe" mode, which is therefore every source's default (protocol.md).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from medtransfer.errors import WeightsError
from medtransfer.models.checkpoint import is_checkpoint, load_checkpoint
from medtransfer.models.download import find_radimagenet, imagenet_weights
from medtransfer.models.init import keras_init_
from medtransfer.models.keras_h5 import load_keras_h5
from medtransfer.models.normalization import Normalization
from medtransfer.models.report import LoadReport
from medtransfer.models.resnet import ResNet50
from medtransfer.models.torch_port import load_torch_port
from medtransfer.vocabulary import KERAS_SUFFIXES, SOURCE_NAMES, TORCH_SUFFIXES, SourceRef

NAMES = SOURCE_NAMES
DEFAULT_NORMALIZATION = "caffe"
H5_SUFFIXES = KERAS_SUFFIXES


@dataclass
class Source:
    """A weight source: ``model`` (ResNet50 without head, eval mode), its input ``normalize``, and
    ``origin`` (the file read, or the init and seed); ``report`` says what a file reader loaded."""

    name: str
    model: ResNet50
    normalize: Normalization
    origin: str
    report: LoadReport | None = None


def load_weights_file(path: str | os.PathLike, model: ResNet50) -> LoadReport:
    """Load a Keras h5 file or a PyTorch port into ``model`` by its suffix (all or nothing)."""
    path = Path(path)
    kind = SourceRef.of(path).format
    if kind == "keras":
        return load_keras_h5(path, model)
    if kind == "torch":
        return load_torch_port(path, model)
    raise WeightsError(
        f"{path}: unknown weights format {path.suffix.lower()!r}: expected a Keras file ({', '.join(H5_SUFFIXES)}) "
        f"or a PyTorch file ({', '.join(TORCH_SUFFIXES)})"
    )


def _from_file(name: str, path: Path, normalization) -> Source:
    if SourceRef.of(path).format == "torch" and is_checkpoint(path):
        model, meta = load_checkpoint(path)
        model.head = None
        norm = Normalization.coerce(normalization if normalization is not None else meta["normalization"])
        return Source(name=name, model=model, normalize=norm, origin=f"medtransfer checkpoint {path}")
    model = ResNet50()
    report = load_weights_file(path, model)
    model.eval()
    norm = Normalization.coerce(normalization, DEFAULT_NORMALIZATION)
    return Source(name=name, model=model, normalize=norm, origin=str(path), report=report)


def load_source(
    name_or_path: str | os.PathLike,
    *,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    normalization: Normalization | str | None = None,
) -> Source:
    """Build a weight source.

    Args:
        name_or_path: ``"imagenet"`` (Keras' ImageNet notop file, downloaded once into the cache),
            ``"radimagenet"`` (``RadImageNet-ResNet50_notop.h5`` or ``.pth`` in the cache),
            ``"random"`` (Keras' default initialisation, seeded), or a path to a Keras ``.h5``, a
            PyTorch port ``.pth`` or a medtransfer checkpoint.
        seed: seed of the ``random`` source (same seed, same weights).
        cache_dir: weights cache; default ``$MEDTRANSFER_CACHE`` or ``~/.cache/medtransfer``.
        normalization: override of the source's normalisation (mode string or
            :class:`Normalization`); default ``caffe``, or what a checkpoint recorded.

    Returns:
        a :class:`Source` whose model has no head and is in eval mode, on the CPU.
    """
    key = str(name_or_path)
    if key == "random":
        model = keras_init_(ResNet50(), seed=seed).eval()
        norm = Normalization.coerce(normalization, DEFAULT_NORMALIZATION)
        return Source(name="random", model=model, normalize=norm, origin=f"Keras default initialisation, seed {int(seed)}")
    if key == "imagenet":
        return _from_file("imagenet", imagenet_weights(cache_dir), normalization)
    if key == "radimagenet":
        return _from_file("radimagenet", find_radimagenet(cache_dir), normalization)
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        raise WeightsError(
            f"unknown source {key!r}: expected one of {', '.join(NAMES)}, or the path of an existing "
            f"Keras .h5, PyTorch .pth or medtransfer checkpoint file"
        )
    return _from_file(SourceRef.of(key).label, path, normalization)

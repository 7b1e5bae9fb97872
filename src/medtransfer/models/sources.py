"""The weight sources of the study: ``imagenet``, ``radimagenet``, ``random``, or a file.

``load_source(name_or_path, backbone=...)`` returns a :class:`Source`: a headless model of that
backbone (default ResNet50) in eval mode, the input normalisation that belongs to it, and where it
came from. The authors normalised both pretrained ResNet50 sources in Keras' "caffe" mode, which is
therefore ResNet50's default (protocol.md); the other backbones default to their Keras
``preprocess_input`` mode (the registry's ``normalization``). A file's backbone is read from the
file (a medtransfer port or checkpoint records it; a Keras file is identified by its layers) unless
``backbone`` is given, which the file must then hold.

A source name may carry its backbone, ``imagenet@densenet121`` (:func:`source_key`): the one
string that rebuilds a run's initialisation (run records, probes and the analysis pass it on).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from medtransfer.errors import MedtransferError, WeightsError
from medtransfer.models import registry
from medtransfer.models.checkpoint import FORMAT, VERSION, is_checkpoint, load_checkpoint, read_payload
from medtransfer.models.download import find_radimagenet, imagenet_weights
from medtransfer.models.init import keras_init_
from medtransfer.models.keras_h5 import keras_state, load_keras_h5, read_keras_h5
from medtransfer.models.normalization import Normalization
from medtransfer.models.report import LoadReport
from medtransfer.models.torch_port import load_torch_port, read_port
from medtransfer.vocabulary import (IMAGENET, KERAS_SUFFIXES, RADIMAGENET, RANDOM, SOURCE_NAMES, TORCH_SUFFIXES,
                                    SourceRef)

NAMES = SOURCE_NAMES
H5_SUFFIXES = KERAS_SUFFIXES


@dataclass
class Source:
    """A weight source: ``model`` (a backbone without head, eval mode), its input ``normalize``, and
    ``origin`` (the file read, or the init and seed); ``report`` says what a file reader loaded;
    ``backbone`` is the model's registry name."""

    name: str
    model: nn.Module
    normalize: Normalization
    origin: str
    report: LoadReport | None = None
    backbone: str = registry.DEFAULT
    file: Path | None = None  # the weights file read (None for random init)


def source_key(name: str, backbone: str | None) -> str:
    """The ``load_source`` string of source ``name`` on ``backbone``: ``name@backbone``, or ``name``
    for ResNet50 (the default, so ResNet50 studies keep their strings)."""
    spec = registry.get(backbone)
    return name if spec.name == registry.DEFAULT else f"{name}@{spec.name}"


def split_key(key: str) -> tuple[str, str | None]:
    """``("imagenet", "densenet121")`` from ``imagenet@densenet121``; ``(key, None)`` for other strings."""
    name, sep, backbone = key.rpartition("@")
    if sep and name in NAMES:
        return name, registry.get(backbone).name
    return key, None


def load_weights_file(path: str | os.PathLike, model: nn.Module) -> LoadReport:
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


def identify_backbone(path: str | os.PathLike) -> str:
    """The registry name of the backbone a weights file holds, or a :class:`WeightsError` saying why none.

    A medtransfer port or checkpoint records it; a Keras file or plain state dict is tried against
    each registered backbone (without loading anything).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in TORCH_SUFFIXES:
        port = read_port(path)
        if port is not None:
            return str(port["backbone"])
        if is_checkpoint(path):
            return str(read_payload(path, FORMAT, VERSION, "checkpoint").get("backbone", registry.DEFAULT))
    if suffix not in H5_SUFFIXES + TORCH_SUFFIXES:
        load_weights_file(path, registry.create(registry.DEFAULT))  # the unknown-format error
    weights = read_keras_h5(path) if suffix in H5_SUFFIXES else None
    if weights is not None and weights.backbone is not None:
        return weights.backbone
    errors = []
    for spec in registry.registry().values():
        model = spec.create()
        try:
            if weights is not None:
                keras_state(weights, model)
            else:
                load_torch_port(path, model)
            return spec.name
        except WeightsError as error:
            errors.append(f"{spec.name}: {str(error).replace(str(path), '').lstrip(': ')}")
    raise WeightsError(f"{path} holds none of the registered backbones ({'; '.join(errors)})")


def _from_file(name: str, path: Path, normalization, backbone: str | None) -> Source:
    if SourceRef.of(path).format == "torch" and is_checkpoint(path):
        model, meta = load_checkpoint(path)
        model.head = None
        found = registry.backbone_of(model)
        if backbone is not None and registry.get(backbone).name != found:
            raise WeightsError(f"checkpoint {path} holds a {found}, not a {registry.get(backbone).name}")
        norm = Normalization.coerce(normalization if normalization is not None else meta["normalization"])
        return Source(name=name, model=model, normalize=norm, origin=f"medtransfer checkpoint {path}", backbone=found,
                      file=Path(path))
    spec = registry.get(backbone if backbone is not None else identify_backbone(path))
    model = spec.create()
    report = load_weights_file(path, model)
    model.eval()
    norm = Normalization.coerce(normalization, spec.normalization)
    return Source(name=name, model=model, normalize=norm, origin=str(path), report=report, backbone=spec.name,
                  file=Path(path))


def source_weights_file(name_or_path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path | None:
    """The weights file :func:`load_source` reads for ``name_or_path`` (``None`` for random init),
    without loading it or downloading anything.

    Raises:
        WeightsError: the file is not there.
    """
    key, named = split_key(str(name_or_path))
    backbone = registry.get(named).name
    if key == RANDOM:
        return None
    if key == IMAGENET:
        return imagenet_weights(cache_dir, download=False, backbone=backbone)
    if key == RADIMAGENET:
        return find_radimagenet(cache_dir, backbone=backbone)
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        raise WeightsError(f"source file {path} " + ("is a folder; expected a file" if path.is_dir() else "does not exist"))
    return path


def load_source(
    name_or_path: str | os.PathLike,
    *,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    normalization: Normalization | str | None = None,
    backbone: str | None = None,
) -> Source:
    """Build a weight source.

    Args:
        name_or_path: ``"imagenet"`` (Keras' ImageNet notop file of the backbone, downloaded once into
            the cache), ``"radimagenet"`` (RadImageNet's file of the backbone, e.g.
            ``RadImageNet-ResNet50_notop.h5`` or ``.pth``, in the cache), ``"random"`` (Keras' default
            initialisation, seeded), or a path to a Keras ``.h5``, a PyTorch ``.pth`` or a
            medtransfer checkpoint.
        seed: seed of the ``random`` source (same seed, same weights).
        cache_dir: weights cache; default ``$MEDTRANSFER_CACHE`` or ``~/.cache/medtransfer``.
        normalization: override of the source's normalisation (mode string or
            :class:`Normalization`); default: the backbone's (``caffe`` for ResNet50), or what a
            checkpoint recorded.
        backbone: registry name (default ``resnet50`` for names; for files, the one the file holds).

    Returns:
        a :class:`Source` whose model has no head and is in eval mode, on the CPU.
    """
    key, named = split_key(str(name_or_path))
    if named is not None:
        if backbone is not None and registry.get(backbone).name != named:
            raise WeightsError(f"source {name_or_path!r} names backbone {named}, but backbone={backbone!r} was asked for")
        backbone = named
    if key in NAMES:
        spec = registry.get(backbone)
    if key == RANDOM:
        model = keras_init_(spec.create(), seed=seed).eval()
        norm = Normalization.coerce(normalization, spec.normalization)
        return Source(name=RANDOM, model=model, normalize=norm, origin=f"Keras default initialisation, seed {int(seed)}",
                      backbone=spec.name)
    if key == IMAGENET:
        return _from_file(IMAGENET, imagenet_weights(cache_dir, backbone=spec.name), normalization, spec.name)
    if key == RADIMAGENET:
        return _from_file(RADIMAGENET, find_radimagenet(cache_dir, backbone=spec.name), normalization, spec.name)
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        raise WeightsError(
            f"unknown source {key!r}: expected one of {', '.join(NAMES)}, or the path of an existing "
            f"Keras .h5, PyTorch .pth or medtransfer checkpoint file"
        )
    return _from_file(SourceRef.of(key).label, path, normalization, backbone)


def backbone_of_source(load: str) -> str:
    """The backbone of a ``load_source`` string: ``imagenet@densenet121`` -> densenet121; a plain
    source name -> resnet50; a file -> the backbone it holds (read from the file; resnet50 when the
    file cannot be read here, e.g. a study's source that moved - loading it then fails on its own)."""
    name, backbone = split_key(load)
    if backbone is not None:
        return backbone
    if name in NAMES:
        return registry.DEFAULT
    try:
        return identify_backbone(load)
    except (MedtransferError, OSError):
        return registry.DEFAULT

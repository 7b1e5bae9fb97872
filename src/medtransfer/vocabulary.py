"""The words medtransfer's settings and files share, each defined once.

- :data:`Strategy`: how a source is fine-tuned (``no-freeze``: every layer from the start;
  ``freeze``: a linear probe on the frozen backbone first, then every layer).
- :data:`Phase`: a stage of a run (``probe`` = freeze phase 1, ``finetune`` = every layer).
- :data:`NormalizationMode`: how RGB pixels 0..255 become the network's input (the callable is
  :class:`medtransfer.models.Normalization`; :data:`NORMALIZATION_MODES` describes each mode).
- :data:`AucAverage`: how a multiclass test AUC is averaged (``macro``, ``weighted``, ``micro``).
- :class:`SourceRef`: the string a run starts from: a built-in source name or a weights file.

The similarity measures' names belong to :mod:`medtransfer.similarity`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

Strategy = Literal["no-freeze", "freeze"]
STRATEGIES: tuple[Strategy, ...] = get_args(Strategy)
NO_FREEZE, FREEZE = STRATEGIES

Phase = Literal["probe", "finetune"]
PROBE, FINETUNE = get_args(Phase)

# the source name of a run that pretrains a study's own source (``pretrain-{source}``): its
# progress reads "pretraining", not "finetune"
PRETRAIN_PREFIX = "pretrain-"


def is_pretraining(source_name: str | None) -> bool:
    """Whether a run with this ``source_name`` pretrains a source (see :data:`PRETRAIN_PREFIX`)."""
    return bool(source_name) and str(source_name).startswith(PRETRAIN_PREFIX)

NormalizationMode = Literal["caffe", "unit", "symmetric", "torch"]
NORMALIZATION_MODES: dict[str, str] = dict(zip(get_args(NormalizationMode), (
    "RGB->BGR, minus the ImageNet BGR mean [103.939, 116.779, 123.68], no scaling (Keras)",
    "x / 255",
    "x / 127.5 - 1",
    "x / 255, minus ImageNet mean [0.485, 0.456, 0.406], divided by std [0.229, 0.224, 0.225]",
)))

AucAverage = Literal["macro", "weighted", "micro"]
AUC_AVERAGES: tuple[str, ...] = get_args(AucAverage)

# -- weight sources ---------------------------------------------------------------------------

SourceName = Literal["imagenet", "radimagenet", "random"]
SOURCE_NAMES: tuple[str, ...] = get_args(SourceName)
IMAGENET, RADIMAGENET, RANDOM = SOURCE_NAMES
KERAS_SUFFIXES = (".weights.h5", ".h5", ".hdf5", ".keras")
TORCH_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")
WEIGHT_SUFFIXES = KERAS_SUFFIXES + TORCH_SUFFIXES


@dataclass(frozen=True)
class SourceRef:
    """What a run starts from: ``text`` is a built-in name (:data:`SOURCE_NAMES`, optionally with a
    backbone: ``imagenet@densenet121``) or a file path.

    Any string that is not a built-in name is a file, whatever its suffix (``load_source`` refuses
    a suffix it cannot read, naming the accepted ones). A relative path inside a study directory
    is relative to that directory (:meth:`resolve`).
    """

    text: str

    @classmethod
    def of(cls, value: str | os.PathLike | SourceRef) -> SourceRef:
        """A SourceRef from a string, a path or a SourceRef."""
        return value if isinstance(value, SourceRef) else cls(str(value))

    @property
    def name(self) -> str:
        """The built-in name without a backbone (``imagenet@densenet121`` -> ``imagenet``), or the text."""
        name, sep, _ = self.text.rpartition("@")
        return name if sep and name in SOURCE_NAMES else self.text

    @property
    def is_file(self) -> bool:
        """Whether the source is a weights file (not a built-in name, with or without ``@backbone``)."""
        return self.name not in SOURCE_NAMES

    @property
    def is_random(self) -> bool:
        """Keras' default initialisation (seeded), not pretrained weights."""
        return self.name == RANDOM

    @property
    def format(self) -> Literal["keras", "torch"] | None:
        """``keras`` or ``torch`` by the file's suffix; ``None`` for a name or an unknown suffix."""
        lower = self.text.lower()
        if lower.endswith(KERAS_SUFFIXES):
            return "keras"
        if lower.endswith(TORCH_SUFFIXES):
            return "torch"
        return None

    @property
    def label(self) -> str:
        """The name in run ids and tables: the built-in name, or the file's name without its
        weights suffix (``weights/my_net.weights.h5`` -> ``my_net``)."""
        if not self.is_file:
            return self.text
        name = Path(self.text).name
        for suffix in WEIGHT_SUFFIXES:
            if name.lower().endswith(suffix) and len(name) > len(suffix):
                return name[: -len(suffix)]
        return Path(name).stem or name

    def resolve(self, base: str | os.PathLike | None) -> str:
        """The string ``load_source`` reads: a name unchanged, a relative file under ``base``."""
        if not self.is_file or base is None or Path(self.text).expanduser().is_absolute():
            return self.text
        return str(Path(base) / self.text)

    def __str__(self) -> str:
        return self.text

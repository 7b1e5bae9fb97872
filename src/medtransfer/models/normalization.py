"""Input normalisation, a property of each weight source (protocol.md, "Preprocessing").

The authors normalised both sources in Keras' "caffe" mode; RadImageNet's own scripts divide by 255
and its PyTorch demo maps to [-1, 1]; torchvision models expect ImageNet mean/std.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from medtransfer.errors import ConfigError
from medtransfer.vocabulary import NORMALIZATION_MODES

CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
TORCH_MEAN_RGB = (0.485, 0.456, 0.406)
TORCH_STD_RGB = (0.229, 0.224, 0.225)

MODES = NORMALIZATION_MODES  # mode -> what it does (the names are owned by medtransfer.vocabulary)


@dataclass(frozen=True)
class Normalization:
    """Map RGB pixels 0..255 to the network's input, for one of :data:`MODES`.

    ``Normalization("caffe")(x)`` with ``x`` float ``(n, 3, h, w)`` (or ``(3, h, w)``) in 0..255
    returns a new float tensor of the same shape, device and dtype. ``str(norm)`` is the mode,
    and ``Normalization(str(norm))`` rebuilds it.
    """

    mode: str = "caffe"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(
                f"unknown normalization {self.mode!r}: expected one of {', '.join(MODES)}"
            )

    @classmethod
    def coerce(cls, value: Normalization | str | None, default: str = "caffe") -> Normalization:
        """A Normalization from an instance, a mode string, or ``None`` (the default mode)."""
        if value is None:
            return cls(default)
        if isinstance(value, Normalization):
            return value
        if isinstance(value, str):
            return cls(value)
        raise ConfigError(f"normalization must be a mode string ({', '.join(MODES)}), got {value!r}")

    def __str__(self) -> str:
        return self.mode

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() not in (3, 4) or x.shape[-3] != 3:
            raise ConfigError(
                f"normalization expects RGB images (n, 3, h, w) or (3, h, w), got shape {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            x = x.float()
        shape = (3, 1, 1)
        if self.mode == "caffe":
            mean = torch.tensor(CAFFE_MEAN_BGR, dtype=x.dtype, device=x.device).view(shape)
            return x.flip(-3) - mean
        if self.mode == "unit":
            return x / 255.0
        if self.mode == "symmetric":
            return x / 127.5 - 1.0
        mean = torch.tensor(TORCH_MEAN_RGB, dtype=x.dtype, device=x.device).view(shape)
        std = torch.tensor(TORCH_STD_RGB, dtype=x.dtype, device=x.device).view(shape)
        return (x / 255.0 - mean) / std

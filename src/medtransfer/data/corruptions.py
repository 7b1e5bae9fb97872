"""Image corruptions at five severities, batched on the input's device: the one table of them.

In the spirit of Hendrycks & Dietterich (2019, ImageNet-C), adapted to grey-scale medical images:
noise is drawn once per pixel and added to every channel alike (a grey image stays grey; a colour
image gets luminance noise), blur and resolution loss are defined at a 224-pixel reference side
and scaled with the image (the same loss of detail relative to the field of view at any input
size), and the intensity corruptions are the windowing changes of a scanner or a viewer (contrast,
gamma). Severity 0 is the identity: ``corrupt(x, name, 0)`` is ``x.float()`` exactly.

==================  ===================================  ==============================================
name                parameter (severities 1..5)          what it does to ``x`` (float, 0..255)
==================  ===================================  ==============================================
gaussian_noise      sigma / 255: .04 .08 .12 .18 .26     ``x + 255 sigma z``, z ~ N(0, 1) per pixel
speckle_noise       sigma: .15 .20 .35 .45 .60           ``x + x sigma z`` (multiplicative, ultrasound)
gaussian_blur       sigma at 224 px: 1 2 3 4 6           Gaussian filter, kernel 2 ceil(3 sigma) + 1
motion_blur         length at 224 px: 7 11 15 21 27      a line kernel at a random angle per image
contrast            factor c: .60 .45 .30 .20 .10        ``(x - m) c + m``, m the image's mean
brightness          gamma: .80 .65 .50 .40 .30           ``255 (x / 255) ** gamma`` (brightens)
jpeg                quality: 25 18 15 10 7               baseline JPEG (IJG tables, YCbCr, 4:4:4)
downsample          factor: 1.5 2 3 4 6                  antialiased bilinear down, bilinear up
==================  ===================================  ==============================================

Every result is clamped to 0..255 and rounded to integers, as an image stored to disk would be.
The random corruptions (the two noises, the motion angle) draw from the ``torch.Generator`` they
are given, in batch order: the same seed, rows and batch size give identical images run to run on
one device. Drawing a corruption's severities from one seed makes the same noise field grow with
the severity (so the distance to the clean image grows with it).

JPEG is simulated on the device: 8 x 8 orthonormal DCT of the level-shifted YCbCr planes,
quantisation by the IJG luminance (Y) and chrominance (Cb, Cr) tables scaled by the quality
(``5000 / q`` below 50), rounding, and the inverse; without chroma subsampling and with the
entropy coding (lossless) left out. A grey image has Cb = Cr = 128, so only its luminance changes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from medtransfer.errors import ConfigError

REFERENCE_SIDE = 224  # blur and motion lengths are given at this image side and scaled with it
SEVERITIES = (1, 2, 3, 4, 5)

Apply = Callable[[torch.Tensor, float, "torch.Generator | None"], torch.Tensor]


@dataclass(frozen=True)
class Corruption:
    """One corruption: its ``parameter`` (with unit) at severities 1..5, and the function
    ``apply(x float (n, c, h, w) 0..255, value, generator) -> float (n, c, h, w)`` (unclamped)."""

    name: str
    parameter: str
    values: tuple[float, ...]
    apply: Apply
    random: bool = False


def _scaled(value: float, side: int) -> float:
    return value * side / REFERENCE_SIDE


def _grey_noise(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise ``(n, 1, h, w)`` drawn on ``x``'s device, broadcast over channels."""
    n, _, h, w = x.shape
    return torch.randn((n, 1, h, w), generator=generator, device=x.device, dtype=torch.float32)


def _gaussian_noise(x: torch.Tensor, sigma: float, generator: torch.Generator | None) -> torch.Tensor:
    return x + 255.0 * sigma * _grey_noise(x, generator)


def _speckle_noise(x: torch.Tensor, sigma: float, generator: torch.Generator | None) -> torch.Tensor:
    return x + x * sigma * _grey_noise(x, generator)


def _gaussian_blur(x: torch.Tensor, sigma: float, generator: torch.Generator | None) -> torch.Tensor:
    s = _scaled(sigma, min(x.shape[-2:]))
    radius = max(1, math.ceil(3 * s))
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (t / s) ** 2)
    kernel = kernel / kernel.sum()
    c = x.shape[1]
    pad = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    rows = F.conv2d(pad, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1).contiguous(), groups=c)
    return F.conv2d(rows, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1).contiguous(), groups=c)


def motion_kernels(length: float, angle: torch.Tensor) -> torch.Tensor:
    """Line kernels ``(n, K, K)`` summing to 1: a segment of ``length`` pixels through the centre at
    ``angle`` (n,) degrees, rasterised by bilinear splatting of points spaced at most 1/4 pixel
    apart (so the length is continuous, not rounded to an odd kernel size)."""
    radius = math.ceil(length / 2) + 1
    samples = 4 * (2 * radius + 1)
    t = torch.linspace(-length / 2, length / 2, samples, device=angle.device)
    theta = torch.deg2rad(angle.float())
    px = t[None, :] * theta.cos()[:, None]  # (n, S)
    py = -t[None, :] * theta.sin()[:, None]
    grid = torch.arange(-radius, radius + 1, device=angle.device, dtype=torch.float32)
    wx = (1 - (grid[None, None, :] - px[..., None]).abs()).clamp(min=0)  # (n, S, K)
    wy = (1 - (grid[None, None, :] - py[..., None]).abs()).clamp(min=0)
    kernels = torch.einsum("nsy,nsx->nyx", wy, wx)
    return kernels / kernels.sum(dim=(1, 2), keepdim=True)


def _motion_blur(x: torch.Tensor, length: float, generator: torch.Generator | None) -> torch.Tensor:
    n, c, h, w = x.shape
    angle = torch.rand((n,), generator=generator, device=x.device) * 180.0
    kernels = motion_kernels(_scaled(length, min(h, w)), angle)
    r = kernels.shape[-1] // 2
    pad = F.pad(x, (r, r, r, r), mode="replicate").reshape(1, n * c, h + 2 * r, w + 2 * r)
    weight = kernels.repeat_interleave(c, dim=0).unsqueeze(1)  # (n c, 1, K, K)
    return F.conv2d(pad, weight, groups=n * c).view(n, c, h, w)


def _contrast(x: torch.Tensor, factor: float, generator: torch.Generator | None) -> torch.Tensor:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * factor + mean


def _brightness(x: torch.Tensor, gamma: float, generator: torch.Generator | None) -> torch.Tensor:
    return 255.0 * (x / 255.0) ** gamma


def _downsample(x: torch.Tensor, factor: float, generator: torch.Generator | None) -> torch.Tensor:
    h, w = x.shape[-2:]
    small = (max(1, round(h / factor)), max(1, round(w / factor)))
    low = F.interpolate(x, size=small, mode="bilinear", align_corners=False, antialias=True)
    return F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)


# JPEG (ITU T.81 Annex K tables)
_LUMA = [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
         14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
         49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99]
_CHROMA = [17, 18, 24, 47] + [99] * 4 + [18, 21, 26, 66] + [99] * 4 + [24, 26, 56] + [99] * 5 + [47, 66] \
    + [99] * 6 + [99] * 32


def jpeg_tables(quality: int) -> torch.Tensor:
    """The IJG quantisation tables at ``quality`` (1..100): ``(3, 8, 8)`` float32 for Y, Cb, Cr."""
    scale = 5000 / quality if quality < 50 else 200 - 2 * quality
    tables = []
    for base in (_LUMA, _CHROMA, _CHROMA):
        t = torch.tensor(base, dtype=torch.float64).view(8, 8)
        tables.append(torch.clamp(torch.floor((t * scale + 50) / 100), 1, 255))
    return torch.stack(tables).float()


def _dct_matrix(device: torch.device) -> torch.Tensor:
    k = torch.arange(8, dtype=torch.float64)
    m = torch.cos((2 * k[None, :] + 1) * k[:, None] * math.pi / 16) * math.sqrt(2 / 8)
    m[0] /= math.sqrt(2)
    return m.float().to(device)


_TO_YCBCR = torch.tensor([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])
# JFIF's inverse, written out: its first column is exactly 1, so a grey image (Cb = Cr = 0) stays grey
_TO_RGB = torch.tensor([[1.0, 0.0, 1.402], [1.0, -0.344136, -0.714136], [1.0, 1.772, 0.0]])


def _jpeg(x: torch.Tensor, quality: float, generator: torch.Generator | None) -> torch.Tensor:
    n, c, h, w = x.shape
    if c != 3:
        raise ConfigError(f"jpeg corruption: expected RGB images (n, 3, h, w), got {tuple(x.shape)}")
    to_ycc = _TO_YCBCR.to(x.device)
    ycc = torch.einsum("ij,njhw->nihw", to_ycc, x)
    ycc[:, 1:] += 128.0
    ph, pw = (-h) % 8, (-w) % 8
    ycc = F.pad(ycc - 128.0, (0, pw, 0, ph), mode="replicate")
    H, W = ycc.shape[-2:]
    blocks = ycc.view(n, 3, H // 8, 8, W // 8, 8).permute(0, 1, 2, 4, 3, 5)  # (n, 3, bh, bw, 8, 8)
    d = _dct_matrix(x.device)
    q = jpeg_tables(int(quality)).to(x.device).view(1, 3, 1, 1, 8, 8)
    coefficients = d @ blocks @ d.T
    blocks = d.T @ (torch.round(coefficients / q) * q) @ d
    ycc = blocks.permute(0, 1, 2, 4, 3, 5).reshape(n, 3, H, W)[..., :h, :w] + 128.0
    ycc[:, 1:] -= 128.0
    return torch.einsum("ij,njhw->nihw", _TO_RGB.to(x.device), ycc)


CORRUPTIONS: dict[str, Corruption] = {c.name: c for c in (
    Corruption("gaussian_noise", "sigma / 255", (0.04, 0.08, 0.12, 0.18, 0.26), _gaussian_noise, random=True),
    Corruption("speckle_noise", "sigma", (0.15, 0.20, 0.35, 0.45, 0.60), _speckle_noise, random=True),
    Corruption("gaussian_blur", f"sigma (px at {REFERENCE_SIDE})", (1, 2, 3, 4, 6), _gaussian_blur),
    Corruption("motion_blur", f"length (px at {REFERENCE_SIDE})", (7, 11, 15, 21, 27), _motion_blur, random=True),
    Corruption("contrast", "factor", (0.60, 0.45, 0.30, 0.20, 0.10), _contrast),
    Corruption("brightness", "gamma", (0.80, 0.65, 0.50, 0.40, 0.30), _brightness),
    Corruption("jpeg", "quality", (25, 18, 15, 10, 7), _jpeg),
    Corruption("downsample", "factor", (1.5, 2, 3, 4, 6), _downsample),
)}
NAMES = tuple(CORRUPTIONS)


def get(name: str) -> Corruption:
    """The corruption called ``name``; ``ConfigError`` naming the known ones otherwise."""
    try:
        return CORRUPTIONS[name]
    except KeyError:
        raise ConfigError(f"corruption {name!r}: expected one of {', '.join(NAMES)}") from None


def parse_names(text: str | list[str] | tuple[str, ...]) -> list[str]:
    """``"all"``, a comma-separated string or a list of names -> the names in table order."""
    items = [t.strip() for t in text.split(",")] if isinstance(text, str) else [str(t).strip() for t in text]
    if items == ["all"]:
        return list(NAMES)
    chosen = {get(name).name for name in items if name}
    if not chosen:
        raise ConfigError("corruptions: expected 'all' or names among " + ", ".join(NAMES))
    return [name for name in NAMES if name in chosen]


def corrupt(x: torch.Tensor, name: str, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``x`` (n, 3, h, w), uint8 or float 0..255, on any device, under corruption ``name`` at
    ``severity`` 0..5 -> float32 0..255, integral. Severity 0 returns ``x.float()`` unchanged."""
    corruption = get(name)
    if severity not in (0, *SEVERITIES):
        raise ConfigError(f"corruption {name!r}: severity {severity!r}, expected 0..{SEVERITIES[-1]}")
    x = x.float()
    if severity == 0:
        return x
    out = corruption.apply(x, float(corruption.values[severity - 1]), generator)
    return out.clamp_(0.0, 255.0).round_()

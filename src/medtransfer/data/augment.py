"""Augmentation equal to the authors' Keras ``ImageDataGenerator``, batched on the input's device.

The authors trained with ``ImageDataGenerator(rotation_range=10, width_shift_range=0.1,
height_shift_range=0.1, shear_range=0.1, zoom_range=0.1, fill_mode="nearest",
horizontal_flip=True)``. Per image Keras draws (``get_random_transform``):

- ``theta`` ~ U(-rotation, rotation) degrees;
- ``tx`` ~ U(-shift, shift) * rows, ``ty`` ~ U(-shift, shift) * cols (pixels, continuous);
- ``shear`` ~ U(-shear, shear) in DEGREES (so 0.1 is nearly the identity: it is what ran);
- ``zx``, ``zy`` ~ U(1 - zoom, 1 + zoom), independently;
- ``flip`` with probability 1/2 (when enabled),

and applies (``apply_affine_transform``, Keras 3) the matrix
``T = C @ R(theta) @ S(tx, ty) @ H(shear) @ Z(zx, zy) @ C^-1`` (C moves the origin to the image
centre), with rows and columns swapped, through ``scipy.ndimage.affine_transform`` (order 1 =
bilinear, mode "nearest" = border pixels replicated), then flips the columns. Here the same
matrix (with the flip folded in) drives ``torch.nn.functional.grid_sample`` (bilinear, border
padding, ``align_corners=True``), which samples at the same input coordinates. Border padding
clamps coordinates to the image, which for bilinear sampling equals scipy's edge replication.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from medtransfer.errors import ConfigError


@dataclass
class AffineParams:
    """Per-image transform parameters in Keras' convention, each a (n,) tensor.

    ``theta`` and ``shear`` in degrees, ``tx`` and ``ty`` in pixels, ``zx``/``zy`` zoom factors,
    ``flip`` bool (horizontal flip after the affine step).
    """

    theta: torch.Tensor
    tx: torch.Tensor
    ty: torch.Tensor
    shear: torch.Tensor
    zx: torch.Tensor
    zy: torch.Tensor
    flip: torch.Tensor

    def __len__(self) -> int:
        return len(self.theta)

    def to(self, device: torch.device | str) -> AffineParams:
        return AffineParams(*(getattr(self, f).to(device) for f in self.__dataclass_fields__))


def keras_matrices(params: AffineParams, h: int, w: int) -> torch.Tensor:
    """(n, 3, 3) float64 maps from output (row, col, 1) to input (row, col, 1) pixel coordinates,
    exactly as Keras 3 hands them to scipy (flip not included).

    Keras builds ``M = R(theta) @ S(tx, ty) @ H(shear) @ Z(zx, zy)``, centres it with
    ``transform_matrix_offset_center(M, h, w)`` (offset (h/2 - 0.5, w/2 - 0.5)) and then swaps
    rows and columns of the matrix. Written out in closed form here (one pass over (n,) vectors).
    """
    d = dict(dtype=torch.float64, device=params.theta.device)
    t = torch.deg2rad(params.theta.to(**d))
    sh = torch.deg2rad(params.shear.to(**d))
    c, s = t.cos(), t.sin()
    ss, cs = sh.sin(), sh.cos()
    zx, zy = params.zx.to(**d), params.zy.to(**d)
    tx, ty = params.tx.to(**d), params.ty.to(**d)
    # linear part L = R @ H @ Z and translation R @ (tx, ty), in Keras' (axis 0, axis 1) frame
    l00, l01 = c * zx, (-c * ss - s * cs) * zy
    l10, l11 = s * zx, (-s * ss + c * cs) * zy
    o0, o1 = h / 2 - 0.5, w / 2 - 0.5
    b0 = c * tx - s * ty + o0 - (l00 * o0 + l01 * o1)
    b1 = s * tx + c * ty + o1 - (l10 * o0 + l11 * o1)
    zeros, ones = torch.zeros_like(c), torch.ones_like(c)
    # the swap of rows and columns (Keras 3, col_axis > row_axis)
    rows = [torch.stack(r, dim=-1) for r in ([l11, l10, b1], [l01, l00, b0], [zeros, zeros, ones])]
    return torch.stack(rows, dim=-2)


def sampling_grid(params: AffineParams, h: int, w: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """(n, h, w, 2) grid for ``grid_sample(align_corners=True)`` that reproduces Keras' warp and
    flip: entry [k, r, c] holds the input's (x = col, y = row) in [-1, 1] for output pixel (r, c)."""
    m = keras_matrices(params, h, w)
    flip = params.flip.to(torch.bool)
    a_rc = torch.where(flip, -m[:, 0, 1], m[:, 0, 1])  # flip: output column c reads column w-1-c
    a_cc = torch.where(flip, -m[:, 1, 1], m[:, 1, 1])
    b_r = m[:, 0, 2] + torch.where(flip, m[:, 0, 1] * (w - 1), torch.zeros_like(a_rc))
    b_c = m[:, 1, 2] + torch.where(flip, m[:, 1, 1] * (w - 1), torch.zeros_like(a_cc))
    sy, sx = 2.0 / max(h - 1, 1), 2.0 / max(w - 1, 1)
    d = dict(dtype=torch.float64, device=m.device)
    rr = torch.arange(h, **d).view(1, h, 1)
    cc = torch.arange(w, **d).view(1, 1, w)
    def v(t):  # noqa: E306 - (n,) -> (n, 1, 1)
        return t.view(-1, 1, 1)
    row = v(m[:, 0, 0] * sy) * rr + v(a_rc * sy) * cc + v(b_r * sy - 1)
    col = v(m[:, 1, 0] * sx) * rr + v(a_cc * sx) * cc + v(b_c * sx - 1)
    return torch.stack([col, row], dim=-1).to(dtype)


class KerasAugment:
    """Random affine augmentation with Keras ``ImageDataGenerator`` semantics.

    Args:
        rotation: degrees (``rotation_range``). shift: fraction of the size (both
        ``width_shift_range`` and ``height_shift_range``). shear: degrees (``shear_range``).
        zoom: ``zoom_range`` (factors in [1 - zoom, 1 + zoom]). hflip: ``horizontal_flip``.
        precise: sample in float64 (equal to Keras within 1e-5 on 0..255; the default) or in
        float32 (faster on GPUs with slow float64; within ~2e-3).
    """

    def __init__(self, rotation: float = 10.0, shift: float = 0.1, shear: float = 0.1,
                 zoom: float = 0.1, hflip: bool = True, precise: bool = True) -> None:
        self.precise = precise
        if min(rotation, shift, shear, zoom) < 0 or zoom >= 1:
            raise ConfigError(f"KerasAugment: expected non-negative ranges and zoom < 1; got rotation="
                              f"{rotation}, shift={shift}, shear={shear}, zoom={zoom}")
        self.rotation, self.shift, self.shear, self.zoom, self.hflip = rotation, shift, shear, zoom, hflip

    def __repr__(self) -> str:
        return (f"KerasAugment(rotation={self.rotation}, shift={self.shift}, shear={self.shear}, "
                f"zoom={self.zoom}, hflip={self.hflip})")

    def sample(self, n: int, h: int, w: int, generator: torch.Generator) -> AffineParams:
        """Draw parameters for ``n`` images of ``h`` x ``w`` pixels on the generator's device."""
        u = torch.rand(7, n, generator=generator, device=generator.device, dtype=torch.float64)
        sym = 2 * u[:6] - 1  # U(-1, 1)
        return AffineParams(
            theta=sym[0] * self.rotation,
            tx=sym[1] * self.shift * h,
            ty=sym[2] * self.shift * w,
            shear=sym[3] * self.shear,
            zx=1 + sym[4] * self.zoom,
            zy=1 + sym[5] * self.zoom,
            flip=(u[6] < 0.5) & self.hflip,
        )

    def apply(self, x: torch.Tensor, params: AffineParams) -> torch.Tensor:
        """Warp ``x`` (n, c, h, w), uint8 or float on 0..255, with given ``params`` on x's device.

        Returns float32 (float64 when ``x`` is float64), same shape, values in the input's range.
        With ``precise`` the sampling runs in float64: float32 sampling coordinates are off by up
        to ~1e-5 pixels at 112 px, which moves noisy 0..255 pixels by up to ~2e-3.
        """
        if x.ndim != 4 or len(params) != x.shape[0]:
            raise ConfigError(f"KerasAugment: expected x of shape (n, c, h, w) with n = {len(params)}; "
                              f"got {tuple(x.shape)}")
        out_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        work = torch.float64 if self.precise else out_dtype
        h, w = x.shape[-2:]
        grid = sampling_grid(params.to(x.device), h, w, work)
        y = F.grid_sample(x.to(work), grid, mode="bilinear", padding_mode="border", align_corners=True)
        return y.to(out_dtype)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Augment a batch (n, c, h, w) uint8 or float 0..255 -> float32 0..255, on x's device."""
        params = self.sample(x.shape[0], x.shape[-2], x.shape[-1], generator)
        return self.apply(x, params)

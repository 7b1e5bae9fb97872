"""Measures computed from centred Gram blocks, for a whole batch of resamples at once.

Input: torch float64 tensors ``gxx (B, p, p)``, ``gyy (B, q, q)``, ``gxy (B, p, q)`` (full
symmetric Gram blocks, not just lower triangles): for each batch element the Gram matrices of column-centred ``x`` and ``y`` and their cross product (any common
factor, e.g. the number of rows, cancels). Output: ``(B,)`` values, NaN where a value is undefined
(a side without variance). These are the c x c problems of the image bootstrap and the permutation
null (:mod:`medtransfer.similarity.bootstrap`); the point estimates come from the data-level
functions (:func:`~medtransfer.similarity.cca`, ...), and for every weight vector the two agree to
rounding (tested).
"""

from __future__ import annotations

from typing import Any

# The rank rule shared with ``cca``: Cholesky while trace(C^-1) <= MAX_TRACE_INV for both sides,
# else an eigendecomposition dropping directions whose eigenvalue is below RANK_RTOL x the largest.
from medtransfer.similarity._rank import MAX_TRACE_INV, RANK_RTOL

#: A neuron whose variance is below this fraction of the largest variance on its side is constant
#: in that resample (e.g. a ReLU channel active only in images the resample left out).
CONSTANT_RTOL = 1e-20


def cca_mean_from_grams(gxx: Any, gyy: Any, gxy: Any, power: int = 1) -> Any:
    """Mean canonical correlation over ``min(rank_x, rank_y)`` directions, ``(B,)``; ``power=2``:
    the mean squared canonical correlation (``cca_r2``).

    Fast path per batch element: Cholesky factors of both correlation matrices and their inverses,
    taken only where ``trace(C^-1) = ||L^-1||_F^2 <= MAX_TRACE_INV`` for both sides (the check
    ``cca`` makes); then ``m = L_x^-1 C_xy L_y^-T`` and the eigenvalues of the smaller of
    ``m m^T``, ``m^T m``. Other elements (a neuron nearly a combination of the others) take the
    eigendecomposition route with the shared rank cutoff ``RANK_RTOL`` instead.
    """
    import torch

    if gxx.shape[0] > 1 and gxx.stride(0) == 0 and gyy.stride(0) == 0:
        return _cca_mean_shared_sides(gxx[:1], gyy[:1], gxy, power)
    cxx, cyy, cxy, kx, ky = _correlations(gxx, gyy, gxy)
    lx, info_x = torch.linalg.cholesky_ex(cxx)
    ly, info_y = torch.linalg.cholesky_ex(cyy)
    ok = (info_x == 0) & (info_y == 0)
    count = torch.minimum(kx, ky).to(cxx.dtype)
    total = torch.empty(cxx.shape[0], dtype=cxx.dtype, device=cxx.device)
    good = torch.nonzero(ok).flatten()
    if len(good):
        ix, iy = _triangular_inverse(lx[good]), _triangular_inverse(ly[good])
        certified = (ix.square().sum((-2, -1)) <= MAX_TRACE_INV) & (iy.square().sum((-2, -1)) <= MAX_TRACE_INV)
        ok[good[~certified]] = False
        good, ix, iy = good[certified], ix[certified], iy[certified]
    if len(good):
        total[good] = _rho_sum(ix @ cxy[good] @ iy.transpose(-1, -2), power)
    bad = torch.nonzero(~ok).flatten()
    if len(bad):
        fx, rank_x = _eigen_whitener(cxx[bad])
        fy, rank_y = _eigen_whitener(cyy[bad])
        total[bad] = _rho_sum(fx @ cxy[bad] @ fy.transpose(-1, -2), power)
        count[bad] = torch.minimum(rank_x, rank_y).to(cxx.dtype)
    out = total / count
    return torch.where(count > 0, out, torch.full_like(out, float("nan")))


def _cca_mean_shared_sides(gxx: Any, gyy: Any, gxy: Any, power: int) -> Any:
    """:func:`cca_mean_from_grams` when every batch element has the same ``gxx (1, p, p)`` and
    ``gyy (1, q, q)`` (the permutation null: only the cross product changes): each side's
    whitener, and the choice between the Cholesky and eigen routes, is made once (the same rule,
    hence the same values) and only ``m = W_x C_xy W_y^T`` and its singular values per element."""
    import torch

    cxx, cyy, cxy, kx, ky = _correlations(gxx, gyy, gxy)
    lx, info_x = torch.linalg.cholesky_ex(cxx)
    ly, info_y = torch.linalg.cholesky_ex(cyy)
    whiteners = None
    if int(info_x[0]) == 0 and int(info_y[0]) == 0:
        ix, iy = _triangular_inverse(lx), _triangular_inverse(ly)
        if float(ix.square().sum()) <= MAX_TRACE_INV and float(iy.square().sum()) <= MAX_TRACE_INV:
            whiteners, count = (ix, iy), torch.minimum(kx, ky)
    if whiteners is None:
        (fx, rank_x), (fy, rank_y) = _eigen_whitener(cxx), _eigen_whitener(cyy)
        whiteners, count = (fx, fy), torch.minimum(rank_x, rank_y)
    wx, wy = whiteners
    total = _rho_sum(wx @ cxy @ wy.transpose(-1, -2), power)
    count = count.to(total.dtype).expand_as(total)
    out = total / count
    return torch.where(count > 0, out, torch.full_like(out, float("nan")))


def _triangular_inverse(lower: Any) -> Any:
    """``L^-1 (B, p, p)`` of lower-triangular ``L (B, p, p)``."""
    import torch

    eye = torch.eye(lower.shape[-1], dtype=lower.dtype, device=lower.device).expand_as(lower)
    return torch.linalg.solve_triangular(lower, eye, upper=False)


def cca_r2_from_grams(gxx: Any, gyy: Any, gxy: Any) -> Any:
    """Mean squared canonical correlation, ``(B,)`` (see :func:`cca_mean_from_grams`)."""
    return cca_mean_from_grams(gxx, gyy, gxy, power=2)


def _rho_sum(m: Any, power: int = 1) -> Any:
    """Sum of the singular values (``power=2``: their squares) of each ``m (B, r, s)``, each
    clipped to [0, 1]."""
    import torch

    small = m.transpose(-1, -2) @ m if m.shape[-1] <= m.shape[-2] else m @ m.transpose(-1, -2)
    if power == 2:
        return torch.linalg.eigvalsh(small).clamp(0.0, 1.0).sum(-1)
    # The floor (not 0) keeps the derivative of the root finite where an eigenvalue is 0 (the
    # linearised bootstrap differentiates this); it moves a value by at most 1e-150.
    return torch.linalg.eigvalsh(small).clamp(min=1e-300).sqrt().clamp(max=1.0).sum(-1)


def _eigen_whitener(c: Any) -> tuple[Any, Any]:
    """``(F (B, p, p), rank (B,))``: ``F = diag(lam^-1/2) V^T`` over eigenvalues above
    RANK_RTOL * lam_max, zero rows for the others."""
    import torch

    lam, v = torch.linalg.eigh(c)
    keep = lam > RANK_RTOL * lam.amax(-1, keepdim=True)
    scale = torch.where(keep, lam.clamp(min=1e-300).rsqrt(), torch.zeros_like(lam))
    return scale[..., :, None] * v.transpose(-1, -2), keep.sum(-1)


def cka_from_grams(gxx: Any, gyy: Any, gxy: Any) -> Any:
    """Linear CKA ``||Gxy||_F^2 / (||Gxx||_F ||Gyy||_F)``, ``(B,)``."""
    import torch

    xx = torch.linalg.matrix_norm(gxx)
    yy = torch.linalg.matrix_norm(gyy)
    xy = (gxy * gxy).sum((-2, -1))
    out = xy / (xx * yy)
    return torch.where((xx > 0) & (yy > 0), out, torch.full_like(out, float("nan")))


def procrustes_from_grams(gxx: Any, gyy: Any, gxy: Any) -> Any:
    """Squared orthogonal Procrustes distance ``2 - 2 ||Gxy||_* / sqrt(tr Gxx tr Gyy)``, ``(B,)``."""
    import torch

    tx = torch.diagonal(gxx, dim1=-2, dim2=-1).sum(-1)
    ty = torch.diagonal(gyy, dim1=-2, dim2=-1).sum(-1)
    nuclear = torch.linalg.svdvals(gxy).sum(-1)
    out = (2.0 - 2.0 * nuclear / torch.sqrt(tx * ty)).clamp(0.0, 2.0)
    return torch.where((tx > 0) & (ty > 0), out, torch.full_like(out, float("nan")))


def _correlations(gxx: Any, gyy: Any, gxy: Any):
    """Correlation matrices (constant neurons decoupled: unit diagonal, zero correlations) and the
    number of varying neurons per side, ``(B,)`` int64."""
    import torch

    out = []
    for g in (gxx, gyy):
        d = torch.diagonal(g, dim1=-2, dim2=-1)
        varying = d > CONSTANT_RTOL * d.amax(-1, keepdim=True).clamp(min=0.0)
        varying &= d > 0
        s = torch.where(varying, d.clamp(min=1e-300).rsqrt(), torch.zeros_like(d))
        c = g * s[..., :, None] * s[..., None, :]
        if not bool(varying.all()):
            eye = torch.eye(g.shape[-1], dtype=g.dtype, device=g.device)
            c = torch.where(varying[..., :, None] | varying[..., None, :], c, eye.expand_as(c))
        out.append((c, s, varying))
    (cxx, sx, vx), (cyy, sy, vy) = out
    cxy = gxy * sx[..., :, None] * sy[..., None, :]
    return cxx, cyy, cxy, vx.sum(-1), vy.sum(-1)

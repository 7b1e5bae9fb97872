"""Measures computed from centred Gram blocks, for a whole batch of resamples at once.

Input: torch float64 tensors ``gxx (B, p, p)``, ``gyy (B, q, q)``, ``gxy (B, p, q)``: for each batch
element the Gram matrices of column-centred ``x`` and ``y`` and their cross product (any common
factor, e.g. the number of rows, cancels). Output: ``(B,)`` values, NaN where a value is undefined
(a side without variance). These are the c x c problems of the image bootstrap and the permutation
null (:mod:`medtransfer.similarity.bootstrap`); the point estimates come from the data-level
functions (:func:`~medtransfer.similarity.cca`, ...), and for every weight vector the two agree to
rounding (tested).
"""

from __future__ import annotations

from typing import Any

#: A neuron whose variance is below this fraction of the largest variance on its side is constant
#: in that resample (e.g. a ReLU channel active only in images the resample left out).
CONSTANT_RTOL = 1e-20
#: Resamples whose correlation matrix has trace(C^-1) above this (or fails Cholesky) are solved by
#: an eigendecomposition with a rank cutoff instead (as ``cca``'s robust path drops dependent directions).
MAX_TRACE_INV = 1e6
#: Relative eigenvalue cutoff of that fallback (directions below it are numerically absent).
EIGEN_RTOL = 1e-12


def cca_mean_from_grams(gxx: Any, gyy: Any, gxy: Any) -> Any:
    """Mean canonical correlation over ``min(rank_x, rank_y)`` directions, ``(B,)``."""
    import torch

    cxx, cyy, cxy, kx, ky = _correlations(gxx, gyy, gxy)
    wx, rank_x, ok_x = _whiten(cxx)
    wy, rank_y, ok_y = _whiten(cyy)
    kx = torch.where(ok_x, kx, rank_x)
    ky = torch.where(ok_y, ky, rank_y)
    # m = W_x^T C_xy W_y with W = L^-T (Cholesky) or V diag(lam^-1/2) (fallback), written as left
    # factors F = W^T: F_x C_xy F_y^T.
    m = wx @ cxy @ wy.transpose(-1, -2)
    small = m.transpose(-1, -2) @ m if m.shape[-1] <= m.shape[-2] else m @ m.transpose(-1, -2)
    rho = torch.linalg.eigvalsh(small).clamp(min=0.0).sqrt().clamp(max=1.0)
    count = torch.minimum(kx, ky).to(rho.dtype)
    out = rho.sum(-1) / count
    return torch.where(count > 0, out, torch.full_like(out, float("nan")))


def cka_from_grams(gxx: Any, gyy: Any, gxy: Any) -> Any:
    """Linear CKA ``||Gxy||_F^2 / (||Gxx||_F ||Gyy||_F)``, ``(B,)``."""
    import torch

    xx = torch.linalg.matrix_norm(_symmetric(gxx))
    yy = torch.linalg.matrix_norm(_symmetric(gyy))
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


def _symmetric(g: Any) -> Any:
    """``g`` with its upper triangle mirrored from the lower one (the blocks may be lower-only)."""
    import torch

    lower = torch.tril(g)
    return lower + torch.tril(g, -1).transpose(-1, -2)


def _correlations(gxx: Any, gyy: Any, gxy: Any):
    """Correlation matrices (constant neurons decoupled: unit diagonal, zero correlations) and the
    number of varying neurons per side, ``(B,)`` int64."""
    import torch

    gxx, gyy = _symmetric(gxx), _symmetric(gyy)
    out = []
    for g in (gxx, gyy):
        d = torch.diagonal(g, dim1=-2, dim2=-1)
        varying = d > CONSTANT_RTOL * d.amax(-1, keepdim=True).clamp(min=0.0)
        varying &= d > 0
        s = torch.where(varying, d.clamp(min=1e-300).rsqrt(), torch.zeros_like(d))
        c = g * s[..., :, None] * s[..., None, :]
        eye = torch.eye(g.shape[-1], dtype=g.dtype, device=g.device)
        c = torch.where(varying[..., :, None] | varying[..., None, :], c, eye.expand_as(c))
        out.append((c, s, varying))
    (cxx, sx, vx), (cyy, sy, vy) = out
    cxy = gxy * sx[..., :, None] * sy[..., None, :]
    return cxx, cyy, cxy, vx.sum(-1), vy.sum(-1)


def _whiten(c: Any):
    """Left whitening factors ``F (B, p, p)`` with ``F C F^T`` = identity on C's column space.

    Cholesky (``F = L^-1``) where it succeeds and trace(C^-1) <= MAX_TRACE_INV, else
    ``F = diag(lam^-1/2) V^T`` over eigenvalues above EIGEN_RTOL * lam_max (zero rows elsewhere).
    Returns ``(F, rank (B,), cholesky_ok (B,) bool)``; the rank is only meaningful where not ok.
    """
    import torch

    lower, info = torch.linalg.cholesky_ex(c)
    eye = torch.eye(c.shape[-1], dtype=c.dtype, device=c.device).expand_as(c)
    ok = info == 0
    inverse = torch.linalg.solve_triangular(torch.where(ok[:, None, None], lower, eye), eye, upper=False)
    trace = (inverse * inverse).sum((-2, -1))
    ok &= torch.isfinite(trace) & (trace <= MAX_TRACE_INV)
    rank = torch.full(ok.shape, c.shape[-1], dtype=torch.int64, device=c.device)
    if bool(ok.all()):
        return inverse, rank, ok
    bad = torch.nonzero(~ok).flatten()
    lam, v = torch.linalg.eigh(c[bad])
    keep = lam > EIGEN_RTOL * lam.amax(-1, keepdim=True)
    scale = torch.where(keep, lam.clamp(min=1e-300).rsqrt(), torch.zeros_like(lam))
    inverse = inverse.clone()
    inverse[bad] = scale[..., :, None] * v.transpose(-1, -2)
    rank[bad] = keep.sum(-1)
    return inverse, rank, ok

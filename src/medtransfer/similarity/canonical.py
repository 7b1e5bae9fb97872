"""Canonical correlation analysis (CCA), SVCCA and PWCCA that stay correct on real activations.

Conventions: ``x (n, p)`` and ``y (n, q)``, rows are data points (the same n stimuli for both),
columns are neurons. numpy arrays or torch tensors on any device; float64 inside.

How the canonical correlations are computed (no covariance matrix is ever inverted):

1. Columns are centred. A neuron whose values are all equal is *constant* (e.g. a dead ReLU
   channel): it carries no variation and is dropped. Any other neuron varies, however large its
   mean next to its spread: the data are then centred explicitly, in two passes, so an offset of
   1e12 times the spread changes the result only by the rounding the offset itself caused.
2. Every remaining neuron is scaled to unit norm (where its magnitude is extreme, first by a power
   of two, which is exact: scales from 1e-300 to 1e300 give the same answer). CCA is invariant to per-neuron scale, and the
   scaling makes all later tolerances independent of neuron scales (1e-4 next to 1e4 is fine).
3. Fast path: one Gram matrix per side and one cross product (these products over the n rows
   are the whole cost; for float64 input they are taken on the raw data, without a copy, and
   centred algebraically unless some neuron's mean dominates its spread, see
   ``MAX_MEAN_RATIO``), Cholesky factors ``C = L L^T`` of the two correlation matrices, and the
   check ``trace(C^-1) = ||L^-1||_F^2 <= MAX_TRACE_INV``, which bounds ``1 / lambda_min(C)``
   and hence the error the Gram route can make. If it holds for both sides, the canonical
   correlations are the singular values of ``L_x^-1 C_xy L_y^-T``, taken as square roots of the
   eigenvalues of ``m m^T`` unless some correlation is tiny (see :func:`canonical_correlations`).
4. Robust path, only when step 3's check fails (duplicated or nearly linearly dependent neurons,
   maps with condition numbers up to 1e10 and beyond): Householder QR of the scaled data of each
   side, an SVD of the small triangular factor, and a rank cutoff: directions whose singular
   value is below ``rtol`` times the largest one are numerically absent (default
   ``sqrt(RANK_RTOL)`` = 1e-5, the rule shared with the image bootstrap and the null,
   :mod:`medtransfer.similarity._rank`). The canonical correlations are the singular values of
   ``U_x^T Q_x^T Q_y U_y`` over the retained directions.

Rank and the number of correlations: constant neurons, duplicated neurons and any other linear
dependence contribute no canonical direction. ``rho`` therefore has ``min(rank_x, rank_y)``
entries, where ``rank`` counts the non-constant neurons on the fast path and the retained
directions on the robust path; for full-rank inputs that is ``min(p, q)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg as sla

from medtransfer.errors import MedtransferError
from medtransfer.similarity import _linalg as la
from medtransfer.similarity._rank import MAX_TRACE_INV, RANK_RTOL
from medtransfer.similarity._validation import as_pair, check_cca_shape, is_tensor

#: The float32 path (``precision="float32"``) keeps its products only while trace(C^-1) of both
#: correlation matrices stays below this. Its rounding is amplified by about 1/lambda_min(C):
#: measured max |drho| 4e-7 at trace 517, 5.7e-5 at trace 7.6e4, 0.058 at 9.5e6 (50000 x 512).
MAX_TRACE_INV_FLOAT32 = 1e5
#: CUDA tensors with at least this many neurons on a side get the p x p algebra on their device.
MIN_DEVICE_ALGEBRA_SIZE = 256
#: The Gram matrix of float64 input is formed from the raw data and centred algebraically
#: (G - n m m^T, no centred copy) while every neuron's raw mean square is at most this many times
#: its variance; otherwise the data are centred explicitly first.
MAX_MEAN_RATIO = 10.0
#: Canonical correlations come from the eigenvalues of ``m m^T`` while all of them are at least
#: this large, else from an SVD of ``m``. An eigenvalue's error is about eps * ||m||^2 <= 2.2e-16,
#: so a root's error is about 2.2e-16 / rho: under 1e-9 here (measured: 3e-14 at 50000 x 1024, 5e-15
#: on the Gaussian null with rho down to 3e-4; 2e-12 at rho = 1e-5).
MIN_RHO_FOR_EIGH = 1e-6


@dataclass(frozen=True)
class CCAResult:
    """Canonical correlations of two representations.

    Attributes:
        rho: ``(min(rank_x, rank_y),)`` canonical correlations in [0, 1], descending.
        mean: their mean (the paper's CCA similarity), a python float.
        rank_x, rank_y: the number of independent directions found in x and in y.
        method: ``"cholesky"`` (fast path), ``"cholesky-float32"`` (fast path on float32
            products, ``precision="float32"``) or ``"qr"`` (robust path).
    """

    rho: np.ndarray
    mean: float
    rank_x: int
    rank_y: int
    method: str


@dataclass(frozen=True)
class _Canonical:
    """The CCA problem in orthonormal bases of both column spaces.

    ``m (rx, ry)``: the cross matrix whose singular values are the canonical correlations.
    ``bx (rx, p)``: basis_x^T @ centred x, i.e. each neuron's coordinates in x's orthonormal basis
    (zero columns for constant neurons); ``by (ry, q)`` likewise.
    """

    m: np.ndarray
    bx: np.ndarray
    by: np.ndarray
    method: str


def cca(x: Any, y: Any, rtol: float | None = None, precision: str = "float64") -> CCAResult:
    """All canonical correlations of ``x (n, p)`` and ``y (n, q)`` and their mean.

    Args:
        x, y: activations, rows = the same n data points, columns = neurons; numpy or torch
            (any device). A 1-D input is a single neuron.
        rtol: rank cutoff, relative to the largest singular value of the centred data with
            unit-norm neurons; default ``sqrt(RANK_RTOL)`` = 1e-5, the rule the image bootstrap
            and the null share (:mod:`medtransfer.similarity._rank`).
        precision: ``"float64"`` (default) or ``"float32"``: the products over the n rows in
            float32, for GPUs whose float64 is slow. They are used only while both correlation
            matrices pass a stricter conditioning check (``MAX_TRACE_INV_FLOAT32``); otherwise
            the products are redone in float64 and ``method`` says so. Accuracy of ``rho`` on
            the float32 path, against float64 on the same data: about 5e-7 on well-conditioned
            data (trace(C^-1) ~ p), at worst about 1e-4 at the threshold; ``mean`` to about 1e-7.

    Returns:
        :class:`CCAResult`; ``rho`` has ``min(rank_x, rank_y)`` entries (see the module notes).

    Raises:
        MedtransferError: shapes differ in n, ``p + q > n - 1`` (then ``p + q - (n - 1)``
            correlations are 1 whatever the data; the message names n, p, q), NaN/inf (the
            message names x or y), or a side with no varying neuron.
    """
    x, y = as_pair(x, y, min_rows=3, check_finite=False)
    check_cca_shape(x, y)
    canonical = _canonical(x, y, rtol, _check_precision(precision))
    rho = canonical_correlations(canonical.m)
    return CCAResult(
        rho=rho,
        mean=float(rho.mean()),
        rank_x=canonical.m.shape[0],
        rank_y=canonical.m.shape[1],
        method=canonical.method,
    )


def svcca(x: Any, y: Any, keep: float = 0.99, rtol: float | None = None) -> CCAResult:
    """SVCCA (Raghu et al. 2017): each side reduced by SVD to the top directions that explain
    ``keep`` of its variance, then :func:`cca` of the reduced representations.

    Args:
        x, y: ``(n, p)`` and ``(n, q)`` as in :func:`cca`.
        keep: fraction of variance (sum of squared singular values of the centred data) to keep,
            in (0, 1].
    """
    if not 0.0 < float(keep) <= 1.0:
        raise MedtransferError(f"keep must be a fraction of variance in (0, 1], got {keep}")
    x, y = as_pair(x, y, min_rows=3)
    rx, ry = _top_directions(x, keep, "x"), _top_directions(y, keep, "y")
    check_cca_shape(rx, ry, f"SVCCA after reduction to the directions explaining {keep:g} of the variance")
    return cca(rx, ry, rtol=rtol)


def pwcca(x: Any, y: Any, rtol: float | None = None) -> float:
    """Projection-weighted CCA (Morcos et al. 2018): a weighted mean of the canonical correlations.

    The weight of canonical direction i is ``sum_j |<h_i, x_j>|``, the absolute projections of the
    centred neurons ``x_j`` onto the unit-norm canonical variate ``h_i``, taken on the side with
    fewer independent directions (x on a tie), normalised to sum to 1. Returns a python float.
    """
    x, y = as_pair(x, y, min_rows=3, check_finite=False)
    check_cca_shape(x, y, "PWCCA")
    canonical = _canonical(x, y, rtol)
    u, rho, vt = sla.svd(la.to_numpy(canonical.m), full_matrices=False, check_finite=False)
    rho = np.clip(rho, 0.0, 1.0)
    if canonical.m.shape[0] <= canonical.m.shape[1]:
        projections = u.T @ canonical.bx
    else:
        projections = vt @ canonical.by
    weights = np.abs(projections).sum(axis=1)
    return float(weights @ rho / weights.sum())


def pwcca_google(x: Any, y: Any, epsilon: float = 0.0) -> float:
    """PWCCA as google/svcca's ``compute_pwcca(x.T, y.T, epsilon)[0]`` computes it, for comparison
    with published numbers; :func:`pwcca` is the definition of Morcos et al. (2018).

    What google's code does differently (docs/measures.md): the "canonical directions" it weights
    are ``U^T (x - mean) + mean`` with ``U`` the left singular vectors of the whitened cross
    covariance, i.e. rotated *unwhitened* neurons with their means added back, orthonormalised by
    a QR in neuron order; each direction's weight is the summed absolute projection of the
    *uncentred* neurons onto it. Covariances are whitened by the inverse square root of their
    pseudo-inverse; neurons whose variance (relative to the largest entry of the covariance) is
    below ``epsilon`` are dropped. The side with fewer kept neurons is weighted (x on a tie).
    google's code reads x's activations in the y branch; here the y branch reads y (results agree
    whenever x has no more neurons than y). Returns a python float.
    """
    x, y = as_pair(x, y, min_rows=3)
    check_cca_shape(x, y, "PWCCA (google)")
    xn, yn = la.to_numpy(x), la.to_numpy(y)
    p = xn.shape[1]
    z = np.hstack([xn, yn])
    mean = z.mean(axis=0)
    cov = np.cov(z, rowvar=False).reshape(z.shape[1], z.shape[1])
    sxx, syy, sxy = cov[:p, :p], cov[p:, p:], cov[:p, p:]
    sx, sy = np.abs(sxx).max(), np.abs(syy).max()
    if sx == 0.0 or sy == 0.0:
        raise MedtransferError(f"every neuron of {'x' if sx == 0.0 else 'y'} is constant: nothing to compare")
    sxx, syy, sxy = sxx / sx, syy / sy, sxy / np.sqrt(sx * sy)
    kx, ky = np.abs(np.diag(sxx)) >= epsilon, np.abs(np.diag(syy)) >= epsilon
    sxx, syy, sxy = sxx[np.ix_(kx, kx)], syy[np.ix_(ky, ky)], sxy[np.ix_(kx, ky)]
    wx = _inverse_sqrt(sxx + epsilon * np.eye(len(sxx)))
    wy = _inverse_sqrt(syy + epsilon * np.eye(len(syy)))
    u, rho, vt = np.linalg.svd(wx @ sxy @ wy)
    if kx.sum() <= ky.sum():
        coef, acts, means = u.T, xn[:, kx], mean[:p][kx]
    else:
        coef, acts, means = vt, yn[:, ky], mean[p:][ky]
    directions = coef @ (acts - means).T + means[:, None]
    basis, _ = np.linalg.qr(directions.T)
    weights = np.abs(basis.T @ acts).sum(axis=1)
    weights = weights / weights.sum()
    return float(np.sum(weights[: rho.size] * np.abs(rho)))


def _inverse_sqrt(c: np.ndarray) -> np.ndarray:
    """Square root of the pseudo-inverse of the symmetric positive semi-definite ``c``."""
    lam, v = np.linalg.eigh(c)
    keep = lam > RANK_RTOL * lam.max()
    inv_sqrt = np.where(keep, 1.0 / np.sqrt(np.where(keep, lam, 1.0)), 0.0)
    return (v * inv_sqrt) @ v.T


def canonical_correlations(m: Any) -> np.ndarray:
    """Singular values of the cross matrix ``m (r_x, r_y)``, clipped to [0, 1], descending, numpy.

    Computed as square roots of the eigenvalues of the smaller of ``m m^T`` and ``m^T m`` (a
    syrk and a symmetric tridiagonal eigensolver: several times faster than an SVD at a few
    thousand neurons). An eigenvalue carries an absolute error of about ``eps``, so its root is
    accurate to about ``eps / rho``: when the smallest correlation is below ``MIN_RHO_FOR_EIGH``
    the SVD, accurate to about ``eps`` for every value, is used instead.
    ``m`` may be a CUDA tensor: the eigensolver then runs on that device.
    """
    if is_tensor(m):
        return _canonical_correlations_torch(m)
    small = la.gram(m.T, lower_only=True) if m.shape[0] <= m.shape[1] else la.gram(m, lower_only=True)
    # LAPACK's dsyev directly (what scipy's eigh with driver="ev" calls), without eigh's checks.
    eigenvalues, _, info = sla.lapack.dsyev(small, compute_v=0, lower=1, overwrite_a=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"dsyev did not converge (info {info})")
    rho = np.sqrt(np.clip(eigenvalues[::-1], 0.0, None))
    if rho[-1] < MIN_RHO_FOR_EIGH:
        rho = np.sort(sla.svdvals(m, check_finite=False))[::-1]
    return np.clip(rho, 0.0, 1.0)


def _canonical_correlations_torch(m: Any) -> np.ndarray:
    import torch

    small = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m
    rho = torch.linalg.eigvalsh(small).flip(0).clamp(min=0.0).sqrt()
    if float(rho[-1]) < MIN_RHO_FOR_EIGH:
        rho = torch.linalg.svdvals(m)
    return np.clip(np.sort(la.to_numpy(rho))[::-1], 0.0, 1.0)


def _top_directions(a: Any, keep: float, name: str) -> Any:
    """Centred ``a (n, p)`` projected on its top principal directions explaining ``keep`` of the variance."""
    ac, _ = la.centred(a)  # two-pass, constant neurons exactly zero, one power-of-two scale for the side
    evals, evecs = sla.eigh(la.gram(ac), check_finite=False)
    evals, evecs = np.clip(evals[::-1], 0.0, None), evecs[:, ::-1]
    total = evals.sum()
    if total <= 0.0:
        raise MedtransferError(f"every neuron of {name} is constant: nothing to compare")
    k = int(np.searchsorted(np.cumsum(evals) / total, keep * (1 - 1e-12)) + 1)
    k = min(k, evals.size)
    return ac @ la.to_like(ac, np.ascontiguousarray(evecs[:, :k]))


def _check_precision(precision: str) -> str:
    if precision not in ("float64", "float32"):
        raise MedtransferError(f"precision must be 'float64' or 'float32', got {precision!r}")
    return precision


def cca_from_centred_gram(x: Any, y: Any, blocks: la.CentredGram) -> CCAResult:
    """:func:`cca` of ``x (n, p)``, ``y (n, q)`` whose centred Gram blocks ``centred_gram(x, y)``
    (:func:`centred_gram`) were taken already, e.g. to serve several measures of one pair
    (:mod:`medtransfer.similarity.pairstats`): the same checks, path and result as ``cca(x, y)``."""
    x, y = as_pair(x, y, min_rows=3, check_finite=False)
    check_cca_shape(x, y)
    canonical = _canonical(x, y, None, "float64", blocks)
    rho = canonical_correlations(canonical.m)
    return CCAResult(rho=rho, mean=float(rho.mean()), rank_x=canonical.m.shape[0], rank_y=canonical.m.shape[1],
                     method=canonical.method)


def centred_gram(x: Any, y: Any) -> la.CentredGram:
    """The centred Gram blocks :func:`cca` takes of validated ``x``, ``y`` (float64 products)."""
    return la.centred_gram(x, y, MAX_MEAN_RATIO, "float64")


def _canonical(x: Any, y: Any, rtol: float | None, precision: str = "float64",
               blocks: la.CentredGram | None = None) -> _Canonical:
    """Reduce the CCA of validated ``x (n, p)``, ``y (n, q)`` to an orthonormal-basis cross matrix;
    ``blocks``: their :func:`centred_gram` when already taken (float64 precision only)."""
    n, p = x.shape
    q = y.shape[1]
    if blocks is None:
        blocks = la.centred_gram(x, y, MAX_MEAN_RATIO, precision)
    keep_x = blocks.x.varying & (np.diag(blocks.gxx) > 0.0)
    keep_y = blocks.y.varying & (np.diag(blocks.gyy) > 0.0)
    for name, keep in (("x", keep_x), ("y", keep_y)):
        if not keep.any():
            raise MedtransferError(f"every neuron of {name} is constant over the {n} data points: nothing to compare")
    ix, iy = np.flatnonzero(keep_x), np.flatnonzero(keep_y)
    gxx, gyy, gxy = blocks.gxx, blocks.gyy, blocks.gxy
    sx = 1.0 / np.sqrt(gxx[ix, ix])
    sy = 1.0 / np.sqrt(gyy[iy, iy])
    cxx = _submatrix(gxx, ix, ix, p, p) * np.outer(sx, sx)
    cyy = _submatrix(gyy, iy, iy, q, q) * np.outer(sy, sy)
    cxy = _submatrix(gxy, ix, iy, p, q) * np.outer(sx, sy)
    # sx, sy from here on: the factors that bring each kept neuron of the data itself to unit norm.
    sx, sy = sx * blocks.x.scale[ix], sy * blocks.y.scale[iy]
    del gxx, gyy, gxy, blocks

    max_trace = MAX_TRACE_INV if precision == "float64" else MAX_TRACE_INV_FLOAT32
    device = _algebra_device(x, max(ix.size, iy.size))
    fast_x, fast_y = _whitener(cxx, max_trace, device), _whitener(cyy, max_trace, device)
    if precision == "float32" and (fast_x is None or fast_y is None):
        return _canonical(x, y, rtol, "float64")
    if fast_x is not None and fast_y is not None:
        (lx, lx_inv), (ly, ly_inv) = fast_x, fast_y
        if device is None:
            # m = L_x^-1 C_xy L_y^-T by two triangular multiplies (half the flops of general products).
            m = sla.blas.dtrmm(1.0, lx_inv, cxy, lower=1)
            m = sla.blas.dtrmm(1.0, ly_inv, m, side=1, lower=1, trans_a=1, overwrite_b=1)
        else:
            m = lx_inv @ la.to_like(lx_inv, cxy) @ ly_inv.T
            lx, ly = la.to_numpy(lx), la.to_numpy(ly)
        bx = _embed(lx.T / sx, ix, p)
        by = _embed(ly.T / sy, iy, q)
        return _Canonical(m, bx, by, "cholesky" if precision == "float64" else "cholesky-float32")

    # The robust path centres again, side by side, to keep peak memory near twice the inputs.
    qx, ux, bx = _orthonormal_basis(la.select_columns(x, keep_x), sx, rtol, ix, p)
    qy, uy, by = _orthonormal_basis(la.select_columns(y, keep_y), sy, rtol, iy, q)
    return _Canonical(la.cross(ux, la.cross(qx, qy)) @ uy, bx, by, "qr")


def _submatrix(g: np.ndarray, rows: np.ndarray, cols: np.ndarray, p: int, q: int) -> np.ndarray:
    """``g[rows][:, cols]``, a view when all rows and columns are kept."""
    if rows.size == p and cols.size == q:
        return g
    return g[np.ix_(rows, cols)]


def _algebra_device(x: Any, size: int) -> Any:
    """The CUDA device of a tensor input when the p x p algebra should run there too; None: numpy.

    ``size`` is the larger number of kept neurons. Below ``MIN_DEVICE_ALGEBRA_SIZE`` the kernel
    launches cost more than they save (measured on an H200: 2.5 ms instead of 1.2 ms per CCA of
    20000 x 64; at 512 neurons 17 ms instead of 200 ms). Other accelerators are left to numpy
    (MPS, for one, has no float64).
    """
    if is_tensor(x) and x.device.type == "cuda" and size >= MIN_DEVICE_ALGEBRA_SIZE:
        return x.device
    return None


def _whitener(c: np.ndarray, max_trace: float | None = None, device: Any = None) -> tuple[Any, Any] | None:
    """``(L, L^-1)`` with ``c = L L^T`` if ``c`` is well conditioned (trace(c^-1) <= max_trace), else None.

    Only the lower triangle of ``c`` is read. With a CUDA ``device`` both factors are float64
    tensors computed there.
    """
    max_trace = MAX_TRACE_INV if max_trace is None else max_trace
    if device is not None:
        return _whitener_torch(c, max_trace, device)
    # LAPACK's dpotrf directly (what scipy's cholesky calls, upper triangle cleaned), without its checks.
    lower, info = sla.lapack.dpotrf(c, lower=1, clean=1)
    if info != 0:
        return None
    # cholesky zeroes the upper triangle of its factor and dtrtri leaves it untouched: the inverse
    # is clean lower-triangular without another pass.
    inverse, info = sla.lapack.dtrtri(lower, lower=1)
    if info != 0:
        return None
    trace_inv = float(np.einsum("ij,ij->", inverse, inverse))
    if not np.isfinite(trace_inv) or trace_inv > max_trace:
        return None
    return lower, inverse


def _whitener_torch(c: np.ndarray, max_trace: float, device: Any) -> tuple[Any, Any] | None:
    import torch

    lower, info = torch.linalg.cholesky_ex(torch.as_tensor(np.ascontiguousarray(c), device=device))
    if int(info) != 0:
        return None
    identity = torch.eye(c.shape[0], dtype=lower.dtype, device=device)
    inverse = torch.linalg.solve_triangular(lower, identity, upper=False)
    trace_inv = float((inverse * inverse).sum())
    if not np.isfinite(trace_inv) or trace_inv > max_trace:
        return None
    return lower, inverse


def _orthonormal_basis(
    a: Any, scale: np.ndarray, rtol: float | None, index: np.ndarray, p: int
) -> tuple[Any, np.ndarray, np.ndarray]:
    """Orthonormal basis of the column space of ``a (n, k)`` after centring, with a rank cutoff.

    ``scale (k,)`` scales each centred column to unit norm first. Returns ``(q (n, k), u (k, r),
    coordinates (r, p))``: the basis is ``q @ u`` (never formed, to save memory), and
    coordinates = basis^T @ (centred data placed at columns ``index`` of p, zeros elsewhere).
    """
    n, k = a.shape
    q, r = la.scaled_centred_qr(a, scale)
    u, s, vt = sla.svd(r, check_finite=False)
    cutoff = (np.sqrt(RANK_RTOL) if rtol is None else float(rtol)) * s[0]
    rank = max(1, int(np.count_nonzero(s > cutoff)))
    coordinates = (s[:rank, None] * vt[:rank]) / scale
    return q, u[:, :rank], _embed(coordinates, index, p)


def _embed(coordinates: np.ndarray, index: np.ndarray, p: int) -> np.ndarray:
    """Place the columns of ``coordinates (r, k)`` at ``index`` of an ``(r, p)`` zero matrix."""
    if coordinates.shape[1] == p:
        return coordinates
    out = np.zeros((coordinates.shape[0], p))
    out[:, index] = coordinates
    return out

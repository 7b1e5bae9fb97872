"""Centred kernel alignment with a linear kernel (Kornblith et al. 2019), plain and debiased, and a
minibatch accumulator (Nguyen et al. 2021) that never forms an n x n Gram matrix.

Conventions: ``x (n, p)``, ``y (n, q)``, rows are the same n data points; numpy arrays or torch
tensors (any device); float64 inside. The kernels are never formed when n >= p + q: everything
then comes from one ``(p + q) x (p + q)`` Gram matrix of the centred features and the rows'
squared norms (cost O(n (p + q)^2)); when n < p + q the two n x n kernels are cheaper and used.

Linear CKA is invariant to orthogonal maps and to isotropic scaling of either side, but not to
general invertible linear maps (unlike CCA).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medtransfer.errors import MedtransferError, TooFewRowsError
from medtransfer.similarity import _linalg as la
from medtransfer.similarity._validation import as_pair, is_tensor


def linear_cka(x: Any, y: Any, debiased: bool = False) -> float:
    """Linear CKA of ``x (n, p)`` and ``y (n, q)``, a python float.

    ``debiased=False``: ``||Xc^T Yc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` with column-centred
    X, Y, in [0, 1]. ``debiased=True``: the same ratio of unbiased HSIC estimates (Song et al.
    2012), which stays near 0 for independent data even when p >> n (needs n >= 4; may be
    slightly negative).

    Exact to the data's float64 precision whatever their offset or scale (two-pass centring,
    power-of-two rescaling). Raises MedtransferError naming x or y when every neuron of that side
    is constant, or (debiased) when its self-similarity estimate is not positive.
    (The biased estimate of a side that varies is positive.)
    """
    x, y = as_pair(x, y, min_rows=4 if debiased else 2)
    if not debiased:
        value = _biased_from_raw_products(x, y)
        if value is not None:
            return value
    xy, xx, yy, _ = _hsic(x, y, debiased)
    _require_positive(xx, yy, x.shape[0], debiased)
    return float(xy / np.sqrt(xx) / np.sqrt(yy))


def cka_from_centred_gram(x: Any, y: Any, blocks: la.CentredGram) -> float:
    """:func:`linear_cka` of ``x (n, p)``, ``y (n, q)`` from the centred Gram blocks that
    :func:`~medtransfer.similarity.canonical.centred_gram` took of them (one product over the rows
    for CCA and CKA of a pair, :mod:`medtransfer.similarity.pairstats`).

    The same number as ``linear_cka(x, y)``, bit for bit, where linear_cka takes the same route:
    float32 numpy input (float64 input goes through the raw products instead), at least as many
    rows as columns (fewer: the n x n kernels), and no power-of-two rescaling of any column (data
    of ordinary magnitude). Elsewhere it is ``linear_cka(x, y)``.
    """
    x, y = as_pair(x, y, min_rows=2)
    same_route = (
        not is_tensor(x) and x.dtype == np.float32 and y.dtype == np.float32
        and x.shape[0] >= x.shape[1] + y.shape[1]
        and bool(np.all(blocks.x.scale == 1.0)) and bool(np.all(blocks.y.scale == 1.0))
    )
    if not same_route:
        return linear_cka(x, y)
    _require_varying(blocks.x, blocks.y)
    xy, xx, yy = (float(np.sum(g**2)) for g in (blocks.gxy, blocks.gxx, blocks.gyy))
    _require_positive(xx, yy, x.shape[0], False)
    return float(xy / np.sqrt(xx) / np.sqrt(yy))


#: As ``canonical.MAX_MEAN_RATIO``: raw products are centred algebraically while every neuron's
#: raw mean square is at most this many times its variance (digits lost: log10 of the ratio).
MAX_MEAN_RATIO = 10.0


def _biased_from_raw_products(x: Any, y: Any) -> float | None:
    """Biased linear CKA of float64 numpy ``x (n, p)``, ``y (n, q)`` from the three products of the
    raw data (two syrk, one gemm; no centred copy), centred algebraically as ``G - n m m^T``;
    None where that would lose digits (a dominant mean, a constant neuron, extreme magnitudes) or
    for other inputs: the caller then centres explicitly. Each block is divided by the largest
    diagonal entry of its side(s) before squaring, so no square overflows."""
    if is_tensor(x) or x.dtype != np.float64 or y.dtype != np.float64:
        return None
    means = la.checked_column_mean(x, "x"), la.checked_column_mean(y, "y")
    with np.errstate(all="ignore"):
        blocks = la._raw_centred_blocks(x, y, means, MAX_MEAN_RATIO)
    if blocks is None:
        return None
    gxx, gyy, gxy = blocks
    a, b = float(np.diag(gxx).max()), float(np.diag(gyy).max())
    xx, yy = _lower_frobenius_squared(gxx / a), _lower_frobenius_squared(gyy / b)
    cross = gxy / np.sqrt(a) / np.sqrt(b)
    xy = float(np.einsum("ij,ij->", cross, cross))
    return float(xy / np.sqrt(xx) / np.sqrt(yy))


def _lower_frobenius_squared(g: np.ndarray) -> float:
    """``||G||_F^2`` of a symmetric matrix of which only the lower triangle is valid."""
    lower = np.tril(g, -1)
    return float(2.0 * np.einsum("ij,ij->", lower, lower) + np.einsum("i,i->", np.diag(g), np.diag(g)))


def _require_varying(centring_x: Any, centring_y: Any) -> None:
    """MedtransferError naming the side whose every neuron is constant (its centring says so)."""
    for name, centring in (("x", centring_x), ("y", centring_y)):
        if not centring.varying.any():
            raise MedtransferError(f"every neuron of {name} is constant: CKA is undefined")


def _require_positive(xx: float, yy: float, n: int, debiased: bool) -> None:
    for name, value in (("x", xx), ("y", yy)):
        if value <= 0.0:
            raise TooFewRowsError(
                f"the unbiased estimate of HSIC({name}, {name}) over {n} data points is not positive "
                f"({value:.3g}): debiased CKA is undefined here; use more data points or the biased CKA"
            )


class MinibatchCKA:
    """Linear CKA accumulated over minibatches (Nguyen, Raghu & Kornblith 2021).

    Each :meth:`update` adds the unbiased HSIC estimates of one minibatch (rows of x and y that
    belong together, at least 4 rows); :meth:`value` returns
    ``sum HSIC_u(K, L) / sqrt(sum HSIC_u(K, K) * sum HSIC_u(L, L))``. Memory and time per batch are
    O(b (p + q)^2) for b rows; no full-data Gram matrix is formed. For a large number of batches the
    value approaches the full-data debiased CKA. The sums are kept in units of the first batch's
    power-of-two scale (exact), so activations of any magnitude accumulate without overflow.
    """

    def __init__(self) -> None:
        self._xy = 0.0
        self._xx = 0.0
        self._yy = 0.0
        self._log2_scale: tuple[int, int] | None = None
        self.batches = 0
        self.rows = 0

    def update(self, x: Any, y: Any) -> None:
        """Add one minibatch: ``x (b, p)``, ``y (b, q)`` with b >= 4 (p and q fixed across batches)."""
        x, y = as_pair(x, y, min_rows=4)
        xy, xx, yy, (kx, ky) = _hsic(x, y, debiased=True)
        if self._log2_scale is None:
            self._log2_scale = (kx, ky)
        # HSIC(K, L) of data scaled by 2^kx and 2^ky is 2^(2 kx + 2 ky) times the true value.
        dx, dy = 2 * (self._log2_scale[0] - kx), 2 * (self._log2_scale[1] - ky)
        self._xy += float(np.ldexp(xy, dx + dy))
        self._xx += float(np.ldexp(xx, 2 * dx))
        self._yy += float(np.ldexp(yy, 2 * dy))
        self.batches += 1
        self.rows += x.shape[0]

    def value(self) -> float:
        """The accumulated CKA, a python float.

        Raises MedtransferError before any update, or naming x or y when its accumulated
        self-similarity is not positive.
        """
        if self.batches == 0:
            raise MedtransferError("MinibatchCKA.value() needs at least one update() first")
        _require_positive(self._xx, self._yy, self.rows, debiased=True)
        return float(self._xy / np.sqrt(self._xx) / np.sqrt(self._yy))


def _hsic(x: Any, y: Any, debiased: bool) -> tuple[float, float, float, tuple[int, int]]:
    """``(HSIC(x, y), HSIC(x, x), HSIC(y, y), (kx, ky))`` of the linear kernels, up to a common factor.

    The data are centred in two passes and each side multiplied by a power of two ``2^kx``,
    ``2^ky`` when its magnitude is extreme (see ``_linalg.centre_into``); the values are those of
    the scaled data. Biased: squared Frobenius norms of the centred cross products. Debiased: the
    unbiased estimator of Song et al. (2012). Computed in feature space from the ``(p + q)^2``
    Gram matrix, or in sample space from the two ``n x n`` kernel matrices when ``n < p + q``
    (cheaper there).
    """
    n, p = x.shape
    z, centring_x, centring_y = la.centred_concat(x, y)
    _require_varying(centring_x, centring_y)
    log2_scale = (_log2(centring_x.scale), _log2(centring_y.scale))
    if n < z.shape[1]:
        kx, ky = la.to_numpy(z[:, :p] @ z[:, :p].T), la.to_numpy(z[:, p:] @ z[:, p:].T)
        del z
        k, l = np.diag(kx).copy(), np.diag(ky).copy()
        inner = {"xx": np.sum(kx * kx), "yy": np.sum(ky * ky), "xy": np.sum(kx * ky)}
    else:
        g = la.gram(z)
        inner = {"xx": np.sum(g[:p, :p] ** 2), "yy": np.sum(g[p:, p:] ** 2), "xy": np.sum(g[:p, p:] ** 2)}
        if debiased:
            squares = z * z
            k = la.to_numpy_vector(squares[:, :p].sum(**_axis1(z)))  # ||x_i||^2, the diagonal of K
            l = la.to_numpy_vector(squares[:, p:].sum(**_axis1(z)))
            del squares
    if not debiased:
        return float(inner["xy"]), float(inner["xx"]), float(inner["yy"]), log2_scale
    # <K, L>_F = ||X^T Y||_F^2. With centred features the column sums vanish, so for K~ (K with
    # its diagonal zeroed) K~ 1 = -k and 1^T K~ 1 = -sum(k); likewise for L~.
    out = {}
    for key, a, b in (("xx", k, k), ("yy", l, l), ("xy", k, l)):
        trace = inner[key] - a @ b
        out[key] = (trace + a.sum() * b.sum() / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * (a @ b)) / (n * (n - 3))
    return float(out["xy"]), float(out["xx"]), float(out["yy"]), log2_scale


def _log2(scale: np.ndarray) -> int:
    """The exponent of a side's single power-of-two scale (0 when unscaled)."""
    return int(np.frexp(scale.max())[1] - 1)


def _axis1(z: Any) -> dict[str, int]:
    return {"dim": 1} if is_tensor(z) else {"axis": 1}


def cka_from_blocks(blocks: Any, w: Any) -> Any:
    """Linear CKA of each weighting ``w (R, m)`` as polynomials in the weights, ``(R,)``.

    ``blocks``: a :class:`medtransfer.similarity.bootstrap.ImageBlocks` (torch float64 per-image
    ``gram (m, d, d)``, ``sums (m, d)``, ``rows_per_image``, ``p`` columns of x); ``w`` torch too.

    With per-image cross block ``A_i`` and column sums ``u_i`` (x) and ``v_i`` (y), a weighting's
    centred cross Gram is ``A(w) - u(w) v(w)^T / N(w)``, so its squared Frobenius norm is
    ``w^T K w - 2 T[w, w, w] / N + (w^T U w)(w^T V w) / N^2`` with the image-by-image tables
    ``K_ij = <A_i, A_j>``, ``T_ijk = u_i^T A_j v_k``, ``U_ij = u_i . u_j``; likewise for both Gram
    matrices. The tables cost ``m^2 c^2 + m^3 c`` once; each resample then costs ``O(m^3)``.
    """
    import torch  # heavy, and similarity imports it only when given tensors

    p = blocks.p
    g, s = blocks.gram, blocks.sums
    n = w.sum(dim=1) * blocks.rows_per_image

    def squared_norm(a, left, right):  # ||A(w) - left(w) right(w)^T / n||_F^2 for every weighting
        k = torch.einsum("ipq,jpq->ij", a, a)
        t = torch.einsum("ip,jpk->ijk", left, torch.einsum("jpq,kq->jpk", a, right))
        m = t.shape[0]
        cubic = torch.einsum("rj,rjk,rk->r", w, (w @ t.reshape(m, m * m)).reshape(-1, m, m), w)
        lw, rw = w @ left, w @ right
        quad = ((w @ k) * w).sum(dim=1)
        return quad - 2.0 * cubic / n + (lw * lw).sum(1) * (rw * rw).sum(1) / (n * n)

    sx, sy = s[:, :p], s[:, p:]
    xy = squared_norm(g[:, :p, p:], sx, sy)
    xx = squared_norm(g[:, :p, :p], sx, sx)
    yy = squared_norm(g[:, p:, p:], sy, sy)
    out = xy / torch.sqrt(xx * yy)
    return torch.where((xx > 0) & (yy > 0), out, torch.full_like(out, float("nan")))

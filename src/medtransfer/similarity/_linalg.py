"""The few data-sized operations of the similarity core, for numpy arrays and torch tensors alike.

Products over the n data points (centring, Gram and cross-product matrices, QR of the data) run in
the input's own library and device; their small results (p x q) come back as float64 numpy arrays.
Gram matrices are BLAS ``syrk`` calls (half the multiply-adds of a general product). Where the raw
float64 data cannot be used directly, x and y are centred into one ``(n, p + q)`` buffer whose
single Gram matrix holds both Gram matrices and the cross product.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg as sla

from medtransfer.similarity._validation import is_tensor, require_finite, to_numpy


#: A centred side (or column) whose largest magnitude lies outside [2**-SAFE_LOG2, 2**SAFE_LOG2] is
#: rescaled by a power of two (exact): products of such data, and squares of those products, stay
#: far from float64 overflow and underflow whatever the input's scale.
SAFE_LOG2 = 64
#: The raw float64 products are used only while every raw Gram diagonal lies at or above this: below
#: it, products of the smallest values would be subnormal and lose digits.
MIN_RAW_DIAGONAL = 2.0**-900
#: Narrow C-ordered float64 inputs (``p + q`` at most ``MAX_FUSED_WIDTH``) have their three raw
#: products and column sums taken block by block over the rows, each block of x and y (about
#: ``FUSED_BLOCK_BYTES`` together) read from memory once and reused from cache by all five BLAS
#: calls: measured 0.84x the time of the separate full-length calls at 10000 x (64 + 64) on one
#: thread. Wider inputs keep one call per product (there the products, not the reads, dominate).
MAX_FUSED_WIDTH = 256
FUSED_BLOCK_BYTES = 500 * 128 * 8


@dataclass(frozen=True)
class Centring:
    """What :func:`centre_into` did to the columns of one side ``a (n, p)``.

    ``varying (p,)``: False for a constant neuron (every value equal: its centred column is exactly
    zero). ``scale (p,)``: the power of two each centred column was multiplied by (1.0 for data of
    ordinary magnitude), so the buffer holds ``(a - mean) * scale``.
    """

    varying: np.ndarray
    scale: np.ndarray


def checked_column_mean(a: Any, name: str) -> np.ndarray:
    """Column means ``(p,)`` of ``a``, float64; MedtransferError naming ``name`` for NaN/inf values.

    Finite values so large that their sum overflows are averaged at a power-of-two scale (exact).
    """
    with np.errstate(all="ignore"):
        mean = _column_mean(a)
        if np.all(np.isfinite(mean)):
            return mean
        require_finite(a, name)
        return _column_mean(a * 2.0**-64) * 2.0**64


def centre_into(out: Any, a: Any, per_column: bool, mean: np.ndarray | None = None) -> Centring:
    """``out[:] = (a - column means) * power-of-two scale`` for ``a (n, p)``, exact to ``a``'s precision.

    Two passes: after subtracting the float64 means, the residual mean of each centred column
    (rounding of the first mean, up to ``eps * |mean|``: large next to the spread when the offset is
    1e12 times it) is subtracted too. A column whose values are all equal is constant: it is set
    to exactly zero. ``per_column``: each column is scaled on its own (for scale-invariant
    measures, CCA); otherwise one factor for the whole side (CKA, Procrustes, SVCCA). Columns
    (sides) of ordinary magnitude are left unscaled (see ``SAFE_LOG2``). ``a`` must be finite.
    """
    mean = _column_mean(a) if mean is None else mean
    if is_tensor(a):
        _write_centred(out, a, mean)
        high, low = to_numpy(out.amax(dim=0)), to_numpy(out.amin(dim=0))
    else:
        np.subtract(a, mean, out=out, casting="same_kind")
        high, low = out.max(axis=0).astype(np.float64), out.min(axis=0).astype(np.float64)
    varying = high > low
    residual = np.where(varying, _column_mean(out), 0.0)
    largest = np.where(varying, np.maximum(high - residual, residual - low), 0.0)
    scale = _power_of_two_scale(largest, varying, per_column)
    if np.any(residual != 0.0):
        out -= to_like(out, residual)
    if np.any(scale != 1.0):
        out *= to_like(out, scale)
    if not varying.all():
        index = np.flatnonzero(~varying)
        if is_tensor(out):
            import torch

            out[:, torch.as_tensor(index, device=out.device)] = 0.0
        else:
            out[:, index] = 0.0
    return Centring(varying=varying, scale=scale)


def _power_of_two_scale(largest: np.ndarray, varying: np.ndarray, per_column: bool) -> np.ndarray:
    """Powers of two ``(p,)`` that bring each column's (or the side's) ``largest`` magnitude near 1
    when it lies outside [2**-SAFE_LOG2, 2**SAFE_LOG2]; 1.0 elsewhere. ``per_column=False``: one
    factor for every column of the side; else each column its own (1.0 for constant columns)."""
    if not per_column:
        largest = np.full_like(largest, largest.max(initial=0.0))
        varying = np.ones_like(varying)
    _, exponent = np.frexp(largest)
    rescale = varying & (largest > 0.0) & (np.abs(exponent) > SAFE_LOG2)
    return np.where(rescale, np.ldexp(1.0, np.clip(-exponent, -1022, 1000)), 1.0)


def centred(a: Any, per_column: bool = False) -> tuple[Any, Centring]:
    """``((a - column means) * scale, Centring)``, float64, for ``a (n, p)``; see :func:`centre_into`.

    ``a`` is not modified.
    """
    if is_tensor(a):
        import torch

        out = torch.empty(a.shape, dtype=torch.float64, device=a.device)
    else:
        out = np.empty(a.shape, dtype=np.float64)
    return out, centre_into(out, a, per_column)


def centred_concat(
    x: Any,
    y: Any,
    precision: str = "float64",
    means: tuple[np.ndarray, np.ndarray] | None = None,
    per_column: bool = False,
) -> tuple[Any, Centring, Centring]:
    """``([(x - mean(x)) * sx, (y - mean(y)) * sy] (n, p + q), centring of x, centring of y)``.

    The buffer has the dtype named by ``precision`` (float64 or float32); the subtraction runs in
    float64 before any rounding to float32. Centring is two-pass, constant neurons are exactly
    zero and ``sx``, ``sy`` are powers of two (see :func:`centre_into`). ``means``: the column
    means when the caller has them already (one pass over the data less). x and y are not
    modified.
    """
    n, p = x.shape
    q = y.shape[1]
    mean_x, mean_y = means if means is not None else (_column_mean(x), _column_mean(y))
    if is_tensor(x):
        import torch

        dtype = torch.float64 if precision == "float64" else torch.float32
        z = torch.empty((n, p + q), dtype=dtype, device=x.device)
    else:
        z = np.empty((n, p + q), dtype=np.dtype(precision))
    centring_x = centre_into(z[:, :p], x, per_column, mean_x)
    centring_y = centre_into(z[:, p:], y, per_column, mean_y)
    return z, centring_x, centring_y


#: Rows centred at a time when a float64 difference is rounded into a float32 tensor buffer.
_CHUNK_ELEMENTS = 1 << 23


def _write_centred(out: Any, a: Any, mean: np.ndarray) -> None:
    """``out[:] = a - mean`` for tensors, the difference taken in float64 (chunked over rows)."""
    import torch

    mean_t = torch.as_tensor(mean, dtype=torch.float64, device=a.device)
    if out.dtype == torch.float64:
        torch.sub(a, mean_t, out=out)
        return
    rows = max(1, _CHUNK_ELEMENTS // max(1, a.shape[1]))
    for start in range(0, a.shape[0], rows):
        out[start : start + rows] = a[start : start + rows].to(torch.float64) - mean_t


@dataclass(frozen=True)
class CentredGram:
    """Gram blocks of the column-centred x and y, each column multiplied by its ``scale``.

    ``gxx (p, p)``, ``gyy (q, q)``: only the lower triangles (with the diagonals) are meaningful.
    ``gxy (p, q)``. ``x``, ``y``: the :class:`Centring` of each side (constant neurons, scales).
    """

    gxx: np.ndarray
    gyy: np.ndarray
    gxy: np.ndarray
    x: Centring
    y: Centring


def centred_gram(x: Any, y: Any, max_mean_ratio: float, precision: str = "float64") -> CentredGram:
    """Gram blocks of the column-centred x and y (see :class:`CentredGram`).

    For float64 inputs the three products ``x^T x`` (syrk), ``y^T y`` (syrk) and ``x^T y`` are
    taken on the raw data, without any copy, and centred in place as ``G - n m m^T``. That
    subtraction loses about ``log10(mean square / variance)`` digits per neuron, so when any
    neuron's ratio exceeds ``max_mean_ratio`` (or is undefined: a constant neuron), or a raw
    product would overflow or be subnormal, the data are centred explicitly (two-pass, rescaled
    by powers of two where needed, :func:`centre_into`) into one ``(n, p + q)`` buffer first.
    Other dtypes are always centred explicitly (the cast needs a copy). Narrow C-ordered float64
    numpy inputs have the products and the column sums taken together, block by block over the
    rows (see ``MAX_FUSED_WIDTH``), so that each block is read from memory once.

    ``precision="float32"``: the data are centred (in float64, then rounded) into a float32
    buffer and the products run in float32 (tensor cores are not used: TF32 is left to torch's
    default, which is off for matrix products); the blocks come back as float64.

    Raises MedtransferError naming x or y for NaN/inf values.
    """
    with np.errstate(all="ignore"):  # overflow of a raw product only sends the data the explicit way
        if precision == "float64" and _fusable(x, y):
            blocks = _fused_centred_blocks(x, y, max_mean_ratio)
            if blocks is not None:
                return _raw_gram(blocks, x.shape[1], y.shape[1])
            # Non-finite sums (NaN/inf, or finite values whose sum overflows) or mean-dominated
            # neurons: the checked means and the explicit centring below.
            means = checked_column_mean(x, "x"), checked_column_mean(y, "y")
            return _centred_gram(x, y, means, max_mean_ratio, precision, raw=False)
        means = checked_column_mean(x, "x"), checked_column_mean(y, "y")
        return _centred_gram(x, y, means, max_mean_ratio, precision)


def _raw_gram(blocks: tuple[np.ndarray, np.ndarray, np.ndarray], p: int, q: int) -> CentredGram:
    return CentredGram(*blocks, Centring(np.ones(p, bool), np.ones(p)), Centring(np.ones(q, bool), np.ones(q)))


def _centred_gram(
    x: Any, y: Any, means: tuple[np.ndarray, np.ndarray], max_mean_ratio: float, precision: str, raw: bool = True
):
    p, q = x.shape[1], y.shape[1]
    if raw and precision == "float64" and _dtype_is_float64(x) and _dtype_is_float64(y):
        blocks = _raw_centred_blocks(x, y, means, max_mean_ratio)
        if blocks is not None:
            return _raw_gram(blocks, p, q)
    z, centring_x, centring_y = centred_concat(x, y, precision, means, per_column=True)
    g = gram(z)
    return CentredGram(g[:p, :p], g[p:, p:], g[:p, p:], centring_x, centring_y)


def _raw_centred_blocks(x: np.ndarray, y: np.ndarray, means: tuple[np.ndarray, np.ndarray], max_mean_ratio: float):
    """``(gxx, gyy, gxy)`` from products of the raw float64 data, centred algebraically; None as
    soon as a Gram matrix would lose too many digits that way (no further product is taken)."""
    n = x.shape[0]
    mean_x, mean_y = means
    gxx = gram(x, lower_only=True)
    if not _centre_in_place(gxx, mean_x, n, max_mean_ratio):
        return None
    gyy = gram(y, lower_only=True)
    if not _centre_in_place(gyy, mean_y, n, max_mean_ratio):
        return None
    gxy = cross(x, y)
    gxy -= np.multiply.outer(n * mean_x, mean_y)
    return gxx, gyy, gxy


def _fusable(x: Any, y: Any) -> bool:
    """Whether :func:`_fused_centred_blocks` applies: narrow C-ordered float64 numpy x and y."""
    return (
        not is_tensor(x)
        and not is_tensor(y)
        and x.dtype == np.float64
        and y.dtype == np.float64
        and x.flags.c_contiguous
        and y.flags.c_contiguous
        and x.shape[1] + y.shape[1] <= MAX_FUSED_WIDTH
    )


def _fused_centred_blocks(x: np.ndarray, y: np.ndarray, max_mean_ratio: float):
    """``(gxx, gyy, gxy)`` as :func:`_raw_centred_blocks` gives them, with the column sums, Gram
    matrices and cross product of C-ordered float64 ``x (n, p)``, ``y (n, q)`` taken in one pass
    over blocks of rows (see ``FUSED_BLOCK_BYTES``), no copy of the data. None when a column sum
    is not finite (NaN/inf, or an overflowing sum: the caller takes the checked means) or a Gram
    matrix would lose too many digits by the algebraic centring."""
    n, p = x.shape
    q = y.shape[1]
    rows = max(1, FUSED_BLOCK_BYTES // (8 * (p + q)))
    # Fortran-ordered accumulators, updated in place by BLAS (beta = 1, overwrite).
    gxx, gyy, gxy = np.zeros((p, p), order="F"), np.zeros((q, q), order="F"), np.zeros((p, q), order="F")
    sum_x, sum_y = np.zeros(p), np.zeros(q)
    ones = np.ones(min(rows, n))
    blas = sla.blas
    for start in range(0, n, rows):
        # Row blocks of C-ordered data are C-ordered: their transposes (p, r) are Fortran-ordered.
        xb, yb = x[start : start + rows].T, y[start : start + rows].T
        o = ones if xb.shape[1] == ones.size else ones[: xb.shape[1]]
        blas.dsyrk(1.0, xb, 1.0, gxx, trans=0, lower=1, overwrite_c=1)
        blas.dsyrk(1.0, yb, 1.0, gyy, trans=0, lower=1, overwrite_c=1)
        blas.dgemm(1.0, xb, yb, 1.0, gxy, trans_b=1, overwrite_c=1)
        blas.dgemv(1.0, xb, o, 1.0, sum_x, overwrite_y=1)
        blas.dgemv(1.0, yb, o, 1.0, sum_y, overwrite_y=1)
    mean_x, mean_y = sum_x / n, sum_y / n
    if not (np.all(np.isfinite(mean_x)) and np.all(np.isfinite(mean_y))):
        return None
    if not (_centre_in_place(gxx, mean_x, n, max_mean_ratio) and _centre_in_place(gyy, mean_y, n, max_mean_ratio)):
        return None
    gxy -= np.multiply.outer(n * mean_x, mean_y)
    return gxx, gyy, gxy


def _centre_in_place(g: np.ndarray, mean: np.ndarray, n: int, max_mean_ratio: float) -> bool:
    """``g -= n m m^T`` for a raw Gram matrix ``g (p, p)``; False when that loses too many digits,
    or when a raw product overflowed or is too small to be exact (see ``MIN_RAW_DIAGONAL``)."""
    raw_diag = np.diag(g).copy()
    if not (np.all(np.isfinite(raw_diag)) and np.all(raw_diag >= MIN_RAW_DIAGONAL)):
        return False
    g -= np.multiply.outer(n * mean, mean)
    variance = np.diag(g)
    return bool(np.all(variance > 0.0) and np.all(raw_diag <= max_mean_ratio * variance))


def _dtype_is_float64(a: Any) -> bool:
    if is_tensor(a):
        import torch

        return a.dtype == torch.float64
    return a.dtype == np.float64


def _column_mean(a: Any) -> np.ndarray:
    """Column means ``(p,)`` as float64 numpy, accumulated in float64 without a float64 copy of ``a``.

    A contiguous float64 numpy ``a`` is summed by BLAS ``gemv`` against a vector of ones (about
    1.7x faster than numpy's reduction over rows on one thread, with the same error bound and in
    the same thread pool as the products that follow, see :func:`_transposed_operand`).
    """
    if is_tensor(a):
        import torch

        return to_numpy(a.sum(dim=0, dtype=torch.float64) / a.shape[0])
    if a.dtype == np.float64 and (a.flags.c_contiguous or a.flags.f_contiguous) and a.size > 0:
        operand, trans = _transposed_operand(a)
        return sla.blas.dgemv(1.0, operand, np.ones(a.shape[0]), trans=trans) / a.shape[0]
    return a.mean(axis=0, dtype=np.float64)


def gram(a: Any, lower_only: bool = False) -> np.ndarray:
    """``a.T @ a`` as a float64 numpy array ``(p, p)``; a numpy ``a`` goes through scipy's BLAS syrk.

    ``lower_only``: only the lower triangle (with the diagonal) is guaranteed, for consumers that
    read nothing else (Cholesky, symmetric eigensolvers); it saves the symmetrising pass.
    """
    if is_tensor(a) or a.dtype not in (np.float32, np.float64):
        return to_numpy(a.T @ a)
    operand, trans = _transposed_operand(a)
    syrk = sla.blas.dsyrk if a.dtype == np.float64 else sla.blas.ssyrk
    lower = syrk(1.0, operand, trans=trans, lower=1)  # the lower triangle of a^T a; the upper one is zero
    g = np.asarray(lower, dtype=np.float64)
    if not lower_only:
        g += np.tril(g, -1).T
    return g


def cross(a: Any, b: Any) -> np.ndarray:
    """``a.T @ b`` as a float64 numpy array ``(p, q)``; numpy inputs go through scipy's BLAS gemm."""
    if is_tensor(a) or a.dtype != b.dtype or a.dtype not in (np.float32, np.float64):
        return to_numpy(a.T @ b)
    left, trans_a = _transposed_operand(a)
    right, trans_b = _transposed_operand(b)
    gemm = sla.blas.dgemm if a.dtype == np.float64 else sla.blas.sgemm
    # op(right) must be b itself, i.e. the transpose of what _transposed_operand describes.
    return np.asarray(gemm(1.0, left, right, trans_a=trans_a, trans_b=1 - trans_b), dtype=np.float64)


def _transposed_operand(a: np.ndarray) -> tuple[np.ndarray, int]:
    """``(f, t)`` with ``f`` Fortran-ordered and ``op_t(f) = a.T`` (t = 1: transposed), no copy
    when ``a`` is C- or Fortran-contiguous.

    Why scipy's BLAS rather than ``a.T @ a``: numpy and scipy each bundle an OpenBLAS with its own
    thread pool, and the Cholesky/eigen steps run in scipy's. After a call, a pool's idle threads
    spin for a while; alternating pools on few cores made a 20000 x 64 CCA twice as slow.
    """
    if a.flags.c_contiguous:
        return a.T, 0
    if a.flags.f_contiguous:
        return a, 1
    return np.asfortranarray(a.T), 0


def select_columns(a: Any, keep: np.ndarray) -> Any:
    """Columns of ``a`` where the boolean mask ``keep (p,)`` is true (no copy when all are kept)."""
    if bool(keep.all()):
        return a
    index = np.flatnonzero(keep)
    if is_tensor(a):
        import torch

        return a[:, torch.as_tensor(index, device=a.device)]
    return a[:, index]


def scaled_centred_qr(a: Any, scale: np.ndarray) -> tuple[Any, np.ndarray]:
    """Reduced QR of the centred (two-pass, :func:`centre_into`), column-scaled ``a (n, k)``, n > k.

    ``scale (k,)`` multiplies the centred columns of ``a`` itself. Returns ``(q (n, k) in a's
    library/device, r (k, k) numpy)``. For numpy input the centred copy is written in Fortran
    order and LAPACK factorises it in place, so one ``(n, k)`` float64 buffer is all the memory
    it takes.
    """
    if is_tensor(a):
        import torch

        centred_a, centring = centred(a, per_column=True)
        centred_a *= to_like(centred_a, scale / centring.scale)
        q, r = torch.linalg.qr(centred_a, mode="reduced")
        return q, to_numpy(r)
    buffer = np.empty(a.shape, order="F")
    centring = centre_into(buffer, a, per_column=True)
    buffer *= scale / centring.scale
    q, r = sla.qr(buffer, overwrite_a=True, mode="economic", check_finite=False)
    return q, r


def to_like(a: Any, m: np.ndarray) -> Any:
    """The numpy array ``m`` in ``a``'s library, dtype and device."""
    if is_tensor(a):
        import torch

        return torch.as_tensor(np.ascontiguousarray(m), dtype=a.dtype, device=a.device)
    return m


def to_numpy_vector(a: Any) -> np.ndarray:
    """A float64 numpy vector from an array or tensor."""
    return to_numpy(a).reshape(-1)

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

from medtransfer.errors import MedtransferError
from medtransfer.similarity import _linalg as la
from medtransfer.similarity._validation import as_pair, is_tensor


def linear_cka(x: Any, y: Any, debiased: bool = False) -> float:
    """Linear CKA of ``x (n, p)`` and ``y (n, q)``, a python float.

    ``debiased=False``: ``||Xc^T Yc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` with column-centred
    X, Y, in [0, 1]. ``debiased=True``: the same ratio of unbiased HSIC estimates (Song et al.
    2012), which stays near 0 for independent data even when p >> n (needs n >= 4; may be
    slightly negative; nan if a self-similarity estimate is not positive).
    """
    x, y = as_pair(x, y, min_rows=4 if debiased else 2)
    xy, xx, yy = _hsic(x, y, debiased)
    if debiased and (xx <= 0.0 or yy <= 0.0):
        return float("nan")
    if xx == 0.0 or yy == 0.0:
        name = "x" if xx == 0.0 else "y"
        raise MedtransferError(f"every neuron of {name} is constant: CKA is undefined")
    return float(xy / np.sqrt(xx * yy))


class MinibatchCKA:
    """Linear CKA accumulated over minibatches (Nguyen, Raghu & Kornblith 2021).

    Each :meth:`update` adds the unbiased HSIC estimates of one minibatch (rows of x and y that
    belong together, at least 4 rows); :meth:`value` returns
    ``sum HSIC_u(K, L) / sqrt(sum HSIC_u(K, K) * sum HSIC_u(L, L))``. Memory and time per batch are
    O(b (p + q)^2) for b rows; no full-data Gram matrix is formed. For a large number of batches the
    value approaches the full-data debiased CKA.
    """

    def __init__(self) -> None:
        self._xy = 0.0
        self._xx = 0.0
        self._yy = 0.0
        self.batches = 0
        self.rows = 0

    def update(self, x: Any, y: Any) -> None:
        """Add one minibatch: ``x (b, p)``, ``y (b, q)`` with b >= 4 (p and q fixed across batches)."""
        x, y = as_pair(x, y, min_rows=4)
        xy, xx, yy = _hsic(x, y, debiased=True)
        self._xy += xy
        self._xx += xx
        self._yy += yy
        self.batches += 1
        self.rows += x.shape[0]

    def value(self) -> float:
        """The accumulated CKA, a python float (nan if a self-similarity sum is not positive)."""
        if self.batches == 0:
            raise MedtransferError("MinibatchCKA.value() needs at least one update() first")
        if self._xx <= 0.0 or self._yy <= 0.0:
            return float("nan")
        return float(self._xy / np.sqrt(self._xx * self._yy))


def _hsic(x: Any, y: Any, debiased: bool) -> tuple[float, float, float]:
    """``(HSIC(x, y), HSIC(x, x), HSIC(y, y))`` of the linear kernels, up to a common factor.

    Biased: squared Frobenius norms of the centred cross products. Debiased: the unbiased
    estimator of Song et al. (2012). Computed in feature space from the ``(p + q)^2`` Gram matrix,
    or in sample space from the two ``n x n`` kernel matrices when ``n < p + q`` (cheaper there).
    """
    n, p = x.shape
    z, _, _ = la.centred_concat(x, y)
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
        return float(inner["xy"]), float(inner["xx"]), float(inner["yy"])
    # <K, L>_F = ||X^T Y||_F^2. With centred features the column sums vanish, so for K~ (K with
    # its diagonal zeroed) K~ 1 = -k and 1^T K~ 1 = -sum(k); likewise for L~.
    out = {}
    for key, a, b in (("xx", k, k), ("yy", l, l), ("xy", k, l)):
        trace = inner[key] - a @ b
        out[key] = (trace + a.sum() * b.sum() / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * (a @ b)) / (n * (n - 3))
    return float(out["xy"]), float(out["xx"]), float(out["yy"])


def _axis1(z: Any) -> dict[str, int]:
    return {"dim": 1} if is_tensor(z) else {"axis": 1}

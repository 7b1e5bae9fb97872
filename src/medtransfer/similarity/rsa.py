"""Representational similarity analysis (Kriegeskorte et al. 2008): compare the two
representations' dissimilarity matrices (RDMs) over the same n data points.

RDM entry ``(i, j)`` is the correlation distance ``1 - corr(x_i, x_j)`` of rows i and j (each row
centred over its own features and scaled to unit norm), as rsatoolbox's ``calc_rdm(method=
"correlation")``. The two RDMs' upper triangles (``n (n - 1) / 2`` entries) are compared by
Spearman's rank correlation (``rsa_spearman``, ties given average ranks) or by Pearson's
correlation (``rsa_pearson``), as rsatoolbox's ``compare(method="spearman" | "corr")``.

Invariances: per-row scaling and per-row offsets (the correlation distance ignores both),
permutations and isotropic scaling of the features, and (Spearman) any increasing transform
of the RDM. Not invariant to general orthogonal maps of the features (they move the per-row mean)
nor to translation of the columns. Cost O(n^2 (p + q)) time and O(n^2) memory: at most
``MAX_ROWS`` rows (the layer protocol, :func:`~medtransfer.similarity.score_repeats`, subsamples
whole images down to it).

A row that is constant over its features (an all-zero row of a sparse ReLU layer) has no
correlation pattern; rsatoolbox gives NaN there. Here its correlation with a varying row is 0
(distance 1: nothing in common) and with another constant row 1 (distance 0: the same, empty,
pattern; consistent with the invariance to row offsets and scales).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats

from medtransfer.errors import MedtransferError
from medtransfer.similarity._validation import MAX_PAIRWISE_ROWS, as_pair, to_numpy

#: Largest number of rows (data points) an RDM is built for (two float64 RDMs: 2 x 8 n^2 bytes).
MAX_ROWS = MAX_PAIRWISE_ROWS


def correlation_rdm(a: np.ndarray, name: str = "x") -> np.ndarray:
    """Upper triangle (``k > 0`` diagonal offset, row-major) of the correlation-distance RDM of
    ``a (n, p)``; constant rows as in the module notes."""
    constant = a.max(axis=1) == a.min(axis=1)  # exactly, not by a rounded norm of the centred row
    centred = a - a.mean(axis=1, keepdims=True)
    centred[constant] = 0.0
    norms = np.sqrt(np.einsum("ij,ij->i", centred, centred))
    unit = centred / np.where(constant, 1.0, norms)[:, None]
    rows, cols = np.triu_indices(a.shape[0], k=1)
    gram = unit @ unit.T
    if constant.any():
        gram[np.ix_(constant, constant)] = 1.0
    return 1.0 - gram[rows, cols]


def rsa(x: Any, y: Any, method: str = "spearman") -> float:
    """RSA of ``x (n, p)`` and ``y (n, q)``: the ``method`` ("spearman" or "pearson") correlation of
    their correlation-distance RDMs; a python float in [-1, 1] (needs n >= 3)."""
    if method not in ("spearman", "pearson"):
        raise MedtransferError(f"rsa method must be 'spearman' or 'pearson', got {method!r}")
    x, y = as_pair(x, y, min_rows=3)
    n = x.shape[0]
    if n > MAX_ROWS:
        raise MedtransferError(
            f"x and y have {n} rows: RSA builds n x n dissimilarity matrices and takes at most {MAX_ROWS} rows; "
            "sample fewer rows (layer_similarity and score_repeats subsample whole images)"
        )
    dx, dy = correlation_rdm(to_numpy(x), "x"), correlation_rdm(to_numpy(y), "y")
    for name, d in (("x", dx), ("y", dy)):
        if np.ptp(d) == 0.0:
            raise MedtransferError(f"every dissimilarity of {name} is the same: the RDM comparison is undefined")
    if method == "spearman":
        dx, dy = stats.rankdata(dx), stats.rankdata(dy)
    dx = dx - dx.mean()
    dy = dy - dy.mean()
    return float(np.clip(dx @ dy / np.sqrt((dx @ dx) * (dy @ dy)), -1.0, 1.0))


def rsa_spearman(x: Any, y: Any) -> float:
    """:func:`rsa` with Spearman's rank correlation of the RDMs."""
    return rsa(x, y, "spearman")


def rsa_pearson(x: Any, y: Any) -> float:
    """:func:`rsa` with Pearson's correlation of the RDMs."""
    return rsa(x, y, "pearson")

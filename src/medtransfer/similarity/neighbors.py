"""Nearest-neighbour agreement of two representations over the same n data points.

Each data point's k nearest neighbours (itself excluded) are found in each representation by
cosine similarity of the rows (rows scaled to unit L2 norm, not centred: the convention of Huh et
al. 2024's reference code, which L2-normalises features and ranks inner products). Ties are
broken by the lower row index.

- ``mutual_knn`` (Huh, Cheung, Wang & Isola 2024, "The platonic representation hypothesis"):
  the mean over data points of ``|N_x(i) & N_y(i)| / k``, in [0, 1].
- ``knn_jaccard``: the mean over data points of the Jaccard index
  ``|N_x(i) & N_y(i)| / |N_x(i) | N_y(i)|``, in [0, 1]; with ``I`` shared neighbours it is
  ``I / (2k - I)``.

Invariances: orthogonal maps, isotropic scaling and per-row positive scaling of either side, and
any change that keeps each row's neighbour ranking. Not translation (no centring). O(n^2 (p + q))
time, O(n^2) memory; at most ``MAX_ROWS`` rows (the layer protocol,
:func:`~medtransfer.similarity.score_repeats`, subsamples whole images down to it).

An all-zero row has no direction: its cosine similarity is 0 with every non-zero row and 1 with
another all-zero row (so all-zero rows are each other's nearest neighbours, then the others by
index), consistent with the invariance to per-row scale.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medtransfer.errors import MedtransferError
from medtransfer.similarity._validation import MAX_PAIRWISE_ROWS, as_pair, to_numpy

#: Largest number of rows the neighbour search takes (an n x n similarity matrix per side).
MAX_ROWS = MAX_PAIRWISE_ROWS
#: Default neighbourhood size (Huh et al. 2024 use k = 10).
DEFAULT_K = 10


def nearest_neighbors(a: np.ndarray, k: int, name: str = "x") -> np.ndarray:
    """``(n, k)`` row indices of each row's k nearest neighbours by cosine similarity, self excluded,
    nearest first, ties to the lower index; all-zero rows as in the module notes."""
    norms = np.sqrt(np.einsum("ij,ij->i", a, a))
    zero = norms == 0.0
    unit = a / np.where(zero, 1.0, norms)[:, None]
    sim = unit @ unit.T
    if zero.any():
        sim[np.ix_(zero, zero)] = 1.0
    np.fill_diagonal(sim, -np.inf)
    return np.argsort(-sim, axis=1, kind="stable")[:, :k]


def shared_neighbors(x: Any, y: Any, k: int) -> tuple[np.ndarray, int]:
    """``(|N_x(i) & N_y(i)| for each row (n,), k)`` after checking the inputs."""
    x, y = as_pair(x, y, min_rows=2)
    n = x.shape[0]
    if isinstance(k, bool) or int(k) != k or not 1 <= int(k) <= n - 1:
        raise MedtransferError(f"k must be an integer from 1 to n - 1 = {n - 1} (the rows), got {k!r}")
    if n > MAX_ROWS:
        raise MedtransferError(
            f"x and y have {n} rows: the neighbour search takes at most {MAX_ROWS} rows; sample fewer "
            "(layer_similarity and score_repeats subsample whole images)"
        )
    k = int(k)
    nx, ny = nearest_neighbors(to_numpy(x), k, "x"), nearest_neighbors(to_numpy(y), k, "y")
    mask = np.zeros((n, n), dtype=bool)
    mask[np.arange(n)[:, None], nx] = True
    return mask[np.arange(n)[:, None], ny].sum(axis=1), k


def mutual_knn(x: Any, y: Any, k: int = DEFAULT_K) -> float:
    """Mutual k-NN alignment of ``x (n, p)`` and ``y (n, q)``, a python float in [0, 1]."""
    shared, k = shared_neighbors(x, y, k)
    return float(shared.mean() / k)


def knn_jaccard(x: Any, y: Any, k: int = DEFAULT_K) -> float:
    """Mean Jaccard index of the k-NN sets of ``x (n, p)`` and ``y (n, q)``, a python float in [0, 1]."""
    shared, k = shared_neighbors(x, y, k)
    return float(np.mean(shared / (2 * k - shared)))

"""Orthogonal Procrustes distance between representations (Ding, Denain & Steinhardt 2021)."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.linalg as sla

from medtransfer.errors import MedtransferError
from medtransfer.similarity import _linalg as la
from medtransfer.similarity._validation import as_pair


def procrustes_distance(x: Any, y: Any) -> float:
    """Squared orthogonal Procrustes distance of ``x (n, p)`` and ``y (n, q)``, a python float in [0, 2].

    Both sides are column-centred and scaled to unit Frobenius norm; the distance is
    ``min_R ||X - Y R||_F^2 = 2 - 2 ||X^T Y||_*`` over (partial) orthogonal maps R, with ``||.||_*``
    the nuclear norm. 0 when y is a rotation (or isotropic rescaling) of x. numpy or torch input.
    Exact to the data's float64 precision whatever their offset or scale (two-pass centring,
    power-of-two rescaling); MedtransferError naming x or y when every neuron of it is constant.
    """
    x, y = as_pair(x, y, min_rows=2)
    p = x.shape[1]
    z, _, _ = la.centred_concat(x, y)
    g = la.gram(z)
    norm_x, norm_y = np.sqrt(np.trace(g[:p, :p])), np.sqrt(np.trace(g[p:, p:]))
    for name, norm in (("x", norm_x), ("y", norm_y)):
        if norm == 0.0:
            raise MedtransferError(f"every neuron of {name} is constant: the Procrustes distance is undefined")
    nuclear = sla.svdvals(g[:p, p:] / norm_x / norm_y, check_finite=False).sum()
    return float(np.clip(2.0 - 2.0 * nuclear, 0.0, 2.0))

"""Generalized shape metrics (Williams, Kunz, Kornblith & Linderman 2021): the angular distance
between two representations after partial whitening and the best orthogonal alignment.

With ``Xc`` the column-centred ``x (n, p)`` and its Gram eigendecomposition ``Xc^T Xc = V diag(lam) V^T``,
the partial whitening of regularisation ``alpha`` in [0, 1] is

    phi(X) = Xc V diag(alpha + (1 - alpha) lam^-1/2) V^T      (lam floored at ``eigval_tol``)

(``alpha = 1``: no whitening; ``alpha = 0``: full whitening, every direction of unit variance), and

    d_alpha(X, Y) = arccos( ||phi(X)^T phi(Y)||_* / (||phi(X)||_F ||phi(Y)||_F) )   in [0, pi/2],

the angle between ``phi(X)`` and ``phi(Y) Q`` at the orthogonal ``Q`` that aligns them best
(``||.||_*`` the nuclear norm; a side with fewer columns is zero-padded, which changes nothing).
``alpha = 1`` is the angular Procrustes distance: ``cos d = 1 - procrustes_distance / 2``.
``alpha = 0`` with full-rank sides of equal width p is ``arccos(mean canonical correlation)``.
This is the formula of netrep's ``LinearMetric(alpha, score_method="angular")``; everything is
computed from the three Gram blocks, so the metric also runs on resampled sufficient statistics.

Invariances: translation, orthogonal maps, and (for ``alpha`` in {0, 1}) isotropic scaling;
``alpha = 0`` adds every invertible linear map. For ``0 < alpha < 1`` the whitening mixes units,
so rescaling one side changes the value.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medtransfer.errors import MedtransferError
from medtransfer.similarity import _linalg as la
from medtransfer.similarity._validation import as_pair

#: Eigenvalues of the centred Gram matrix are floored here before ``lam^-1/2`` (netrep's default).
EIGVAL_TOL = 1e-7


def angular_shape_distance(x: Any, y: Any, alpha: float = 1.0) -> float:
    """``d_alpha(x, y)`` in radians, in [0, pi/2] (0: identical up to the metric's invariances).

    Args:
        x, y: ``(n, p)`` and ``(n, q)``, rows the same n data points; numpy or torch.
        alpha: regularisation of the whitening, in [0, 1] (1: angular Procrustes, 0: CCA-like).
    """
    alpha = _check_alpha(alpha)
    x, y = as_pair(x, y, min_rows=2)
    p = x.shape[1]
    z, _, _ = la.centred_concat(x, y)
    g = la.gram(z)
    for name, block in (("x", g[:p, :p]), ("y", g[p:, p:])):
        if np.trace(block) <= 0.0:
            raise MedtransferError(f"every neuron of {name} is constant: the shape metric is undefined")
    import torch

    gxx, gyy, gxy = (torch.as_tensor(np.ascontiguousarray(b))[None] for b in (g[:p, :p], g[p:, p:], g[:p, p:]))
    return float(shape_from_grams(gxx, gyy, gxy, alpha)[0])


def shape_from_grams(gxx: Any, gyy: Any, gxy: Any, alpha: float = 1.0) -> Any:
    """Batched ``d_alpha`` from centred Gram blocks: torch float64 ``(B, p, p)``, ``(B, q, q)``,
    ``(B, p, q)`` -> ``(B,)`` radians (NaN where a side has no variance)."""
    import torch

    zx, tx = _whitening(gxx, alpha)
    zy, ty = _whitening(gyy, alpha)
    cross = zx @ gxy @ zy
    nuclear = torch.linalg.svdvals(cross).sum(dim=-1)
    cosine = nuclear / torch.sqrt(tx * ty)
    out = torch.arccos(cosine.clamp(-1.0, 1.0))
    return torch.where((tx > 0) & (ty > 0), out, torch.full_like(out, float("nan")))


def _whitening(g: Any, alpha: float) -> tuple[Any, Any]:
    """``(Z (B, p, p), ||phi(X)||_F^2 (B,))`` with ``phi(X) = Xc Z``, from ``g = Xc^T Xc``."""
    import torch

    if alpha == 1.0:
        eye = torch.eye(g.shape[-1], dtype=g.dtype, device=g.device).expand_as(g)
        return eye, torch.diagonal(g, dim1=-2, dim2=-1).sum(-1)
    lam, v = torch.linalg.eigh(g)
    d = alpha + (1.0 - alpha) * lam.clamp(min=EIGVAL_TOL).rsqrt()
    z = (v * d[..., None, :]) @ v.transpose(-1, -2)
    return z, (lam.clamp(min=0.0) * d * d).sum(-1)


def _check_alpha(alpha: float) -> float:
    alpha = float(alpha)
    if not 0.0 <= alpha <= 1.0:
        raise MedtransferError(f"alpha (the shape metric's whitening regularisation) must be in [0, 1], got {alpha}")
    return alpha

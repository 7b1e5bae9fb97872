"""Independent, deliberately plain references for the similarity tests (covariance inverses, n x n Gram matrices)."""

from __future__ import annotations

import numpy as np


def cca_covariance_inverse(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Canonical correlations by the textbook route: Cxx^-1/2 Cxy Cyy^-1/2, then its singular values."""
    p = x.shape[1]
    c = np.cov(np.hstack([x, y]), rowvar=False)
    cxx, cyy, cxy = c[:p, :p], c[p:, p:], c[:p, p:]

    def inverse_sqrt(a: np.ndarray) -> np.ndarray:
        w, v = np.linalg.eigh(a)
        return (v / np.sqrt(w)) @ v.T

    return np.linalg.svd(inverse_sqrt(cxx) @ cxy @ inverse_sqrt(cyy), compute_uv=False)


def hsic_biased(k: np.ndarray, l: np.ndarray) -> float:
    """tr(K H L H) for n x n kernel matrices."""
    n = k.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    return float(np.trace(k @ h @ l @ h))


def hsic_unbiased(k: np.ndarray, l: np.ndarray) -> float:
    """Song et al. (2012) unbiased HSIC estimator from n x n kernel matrices."""
    n = k.shape[0]
    k, l = k.copy(), l.copy()
    np.fill_diagonal(k, 0.0)
    np.fill_diagonal(l, 0.0)
    one = np.ones(n)
    return float(
        (np.trace(k @ l) + (one @ k @ one) * (one @ l @ one) / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * (one @ k @ l @ one))
        / (n * (n - 3))
    )


def cka_from_kernels(x: np.ndarray, y: np.ndarray, unbiased: bool) -> float:
    hsic = hsic_unbiased if unbiased else hsic_biased
    k, l = x @ x.T, y @ y.T
    return hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))


def random_orthogonal(rng: np.random.Generator, p: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((p, p)))
    return q * np.sign(np.diag(r))


def matrix_with_condition(rng: np.random.Generator, p: int, condition: float) -> np.ndarray:
    """U diag(1 .. 1/condition) V^T with random orthogonal U, V: condition number ``condition``."""
    s = np.logspace(0, -np.log10(condition), p)
    return random_orthogonal(rng, p) @ np.diag(s) @ random_orthogonal(rng, p).T


def orthonormal_centred(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """k orthonormal columns of length n, each with zero mean."""
    a = rng.standard_normal((n, k))
    a -= a.mean(axis=0)
    q, _ = np.linalg.qr(a)
    return q


def pwcca_uncentred_reference(x: np.ndarray, y: np.ndarray) -> float:
    """The projection weighting google/svcca's compute_pwcca computes, written out step by step
    (x the weighted side, p <= q, full rank): symmetric whitening, the left singular vectors U of
    the whitened cross covariance, rows ``U^T (x - mean) + mean`` orthonormalised by classical
    Gram-Schmidt in order, weights = summed |projection| of the raw (uncentred) neurons."""
    from scipy.linalg import sqrtm

    p = x.shape[1]
    c = np.cov(np.hstack([x, y]), rowvar=False)
    wx = np.real(sqrtm(np.linalg.pinv(c[:p, :p])))
    wy = np.real(sqrtm(np.linalg.pinv(c[p:, p:])))
    u, rho, _ = np.linalg.svd(wx @ c[:p, p:] @ wy)
    mean = x.mean(axis=0)
    rows = u.T @ (x - mean).T + mean[:, None]
    basis = []
    for r in rows:
        v = r - sum((b @ r) * b for b in basis)
        basis.append(v / np.linalg.norm(v))
    weights = np.array([sum(abs(b @ x[:, j]) for j in range(p)) for b in basis])
    return float(weights @ rho / weights.sum())

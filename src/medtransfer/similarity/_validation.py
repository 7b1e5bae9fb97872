"""Input checks shared by the similarity functions: shapes, dtype and finiteness, named by argument.

Every public function accepts numpy arrays or torch tensors (any device). Arrays become float64
numpy arrays; tensors become float64 tensors on their own device, so heavy products run where the
data already lives. Nothing here copies data that is already float64.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medtransfer.errors import MedtransferError, TooFewRowsError


#: Largest number of rows (data points) of the measures that build n x n matrices (RSA's
#: dissimilarities, k-NN's similarities); the layer protocol subsamples whole images down to it.
MAX_PAIRWISE_ROWS = 5000


def is_tensor(a: Any) -> bool:
    """True for a torch tensor (without importing torch when it is not loaded yet)."""
    torch = _torch_if_loaded()
    return torch is not None and isinstance(a, torch.Tensor)


def _torch_if_loaded():
    import sys

    return sys.modules.get("torch")


def as_matrix(a: Any, name: str, check_finite: bool = True) -> Any:
    """``a`` as a real floating-point matrix ``(n, p)``; a 1-D input ``(n,)`` is one neuron, ``(n, 1)``.

    numpy input (and torch tensors on the CPU, viewed as numpy without a copy) comes back as a
    numpy array; tensors on other devices stay tensors there. Float dtypes are kept (the
    computations cast to float64 while centring, without an extra copy), other numeric dtypes
    become float64. Raises MedtransferError naming ``name`` for other ranks, empty input, or
    NaN/inf values (unless ``check_finite`` is False: then the caller must check, see
    :func:`require_finite`).
    """
    if is_tensor(a):
        import torch

        m = a.detach()
        if m.is_complex():
            raise MedtransferError(f"{name} must be real, got a complex tensor")
        if not m.is_floating_point() or m.dtype == torch.bfloat16:
            m = m.to(torch.float64)
        if m.device.type == "cpu":
            m = m.numpy()
    else:
        m = a
    if not is_tensor(m):
        try:
            m = np.asarray(m)
        except (TypeError, ValueError) as error:
            raise MedtransferError(f"{name} must be a numeric array, got {type(a).__name__}: {error}") from None
        if m.dtype.kind == "c":
            raise MedtransferError(f"{name} must be real, got a complex array")
        if m.dtype.kind not in "fiub":
            raise MedtransferError(f"{name} must be a numeric array, got dtype {m.dtype}")
        if m.dtype.kind != "f":
            m = m.astype(np.float64)
    if m.ndim == 1:
        m = m.reshape(-1, 1)
    if m.ndim != 2:
        raise MedtransferError(
            f"{name} must be a matrix (rows = data points, columns = neurons), got shape {tuple(m.shape)}"
        )
    if m.shape[0] == 0 or m.shape[1] == 0:
        raise MedtransferError(f"{name} is empty (shape {tuple(m.shape)})")
    if check_finite:
        require_finite(m, name)
    return m


def require_finite(m: Any, name: str) -> None:
    """Raise MedtransferError naming ``name`` if the matrix ``m`` holds NaN or infinite values."""
    if not _all_finite(m):
        raise MedtransferError(f"{name} contains NaN or infinite values")


def _all_finite(m: Any) -> bool:
    """All entries finite; a float64 sum answers in one pass unless it is itself not finite."""
    if is_tensor(m):
        import torch

        return bool(torch.isfinite(m.sum(dtype=torch.float64))) or bool(torch.isfinite(m).all())
    with np.errstate(all="ignore"):  # inf - inf in the sum is expected here, not worth a warning
        return bool(np.isfinite(m.sum(dtype=np.float64))) or bool(np.isfinite(m).all())


def as_pair(x: Any, y: Any, min_rows: int = 2, check_finite: bool = True) -> tuple[Any, Any]:
    """Check ``x (n, p)`` and ``y (n, q)``: same number of rows, at least ``min_rows``, same device.

    ``check_finite=False`` skips the pass over the data that looks for NaN/inf, for callers that
    detect them in their own first pass (and then call :func:`require_finite` for the message).
    """
    x, y = as_matrix(x, "x", check_finite), as_matrix(y, "y", check_finite)
    if x.shape[0] != y.shape[0]:
        raise MedtransferError(
            f"x and y must have the same number of rows (data points): x has {x.shape[0]}, y has {y.shape[0]}"
        )
    if x.shape[0] < min_rows:
        raise TooFewRowsError(f"x and y need at least {min_rows} rows (data points), got {x.shape[0]}")
    if is_tensor(x) != is_tensor(y):
        x, y = to_numpy(x), to_numpy(y)
    elif is_tensor(x) and x.device != y.device:
        y = y.to(x.device)
    return x, y


def check_cca_shape(x: Any, y: Any, what: str = "CCA") -> None:
    """Refuse ``p + q > n - 1`` for ``x (n, p)``, ``y (n, q)``.

    The centred rows span at most n - 1 dimensions, so the column spaces of x and y (p and q
    dimensions) share at least ``p + q - (n - 1)`` directions there: that many canonical
    correlations are exactly 1 whatever the data (independent 80 x 64 and 80 x 64 data give 49
    ones and a mean of 0.85). ``what`` names the measure in the message (CCA, SVCCA after its
    reduction, PWCCA).
    """
    n, p, q = x.shape[0], x.shape[1], y.shape[1]
    if p + q > n - 1:
        raise TooFewRowsError(
            f"{what} of x with p = {p} neurons and y with q = {q} neurons over n = {n} data points: "
            f"p + q = {p + q} > n - 1 = {n - 1}, so {p + q - (n - 1)} canonical correlations are exactly 1 "
            f"whatever the data; use at least p + q + 1 = {p + q + 1} rows or fewer neurons"
        )


def to_numpy(a: Any) -> np.ndarray:
    """A float64 numpy copy/view of an array or tensor (moved to the CPU)."""
    if is_tensor(a):
        return a.detach().to("cpu").numpy().astype(np.float64, copy=False)
    return np.asarray(a, dtype=np.float64)

"""Similarity of two classifiers' mistakes on the same test set, with the independent baseline."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from medtransfer.errors import MedtransferError
from medtransfer.similarity._validation import to_numpy


@dataclass(frozen=True)
class PredictionSimilarity:
    """Agreement of mistakes of models a and b (python floats).

    Attributes:
        observed: P(err_a == err_b), the fraction of samples where both are right or both wrong.
        baseline: ``a1 * a2 + (1 - a1) * (1 - a2)``, the agreement expected if the two models' errors
            were independent with their accuracies a1 and a2.
        accuracy_a, accuracy_b: the two accuracies.
    """

    observed: float
    baseline: float
    accuracy_a: float
    accuracy_b: float


def prediction_similarity(labels: Any, probs_a: Any, probs_b: Any) -> PredictionSimilarity:
    """Observed agreement of mistakes and its independent baseline.

    Args:
        labels: ``(n,)`` integer class labels 0..k-1.
        probs_a, probs_b: ``(n, k)`` class probabilities (or scores) of each model; the prediction
            is the argmax. A 1-D ``(n,)`` input is the positive-class probability of a binary
            task (prediction 1 when > 0.5). numpy or torch.
    """
    y = _labels(labels)
    pred_a = _predictions(probs_a, "probs_a", y.size)
    pred_b = _predictions(probs_b, "probs_b", y.size)
    k = max(_classes(probs_a), _classes(probs_b))
    if y.max() >= k:
        raise MedtransferError(f"labels go up to {int(y.max())} but the probabilities have only {k} classes")
    right_a, right_b = pred_a == y, pred_b == y
    a1, a2 = float(right_a.mean()), float(right_b.mean())
    return PredictionSimilarity(
        observed=float((right_a == right_b).mean()),
        baseline=a1 * a2 + (1.0 - a1) * (1.0 - a2),
        accuracy_a=a1,
        accuracy_b=a2,
    )


def _labels(labels: Any) -> np.ndarray:
    try:
        y = to_numpy(labels).reshape(-1)
    except (TypeError, ValueError) as error:
        raise MedtransferError(f"labels must be integer classes 0..k-1: {error}") from None
    if y.size == 0:
        raise MedtransferError("labels is empty")
    if not np.all(np.isfinite(y)) or np.any(y != np.round(y)) or np.any(y < 0):
        raise MedtransferError("labels must be integer classes 0..k-1")
    return y.astype(np.int64)


def _classes(probs: Any) -> int:
    shape = tuple(probs.shape) if hasattr(probs, "shape") else np.shape(probs)
    return 2 if len(shape) == 1 else int(shape[1])


def _predictions(probs: Any, name: str, n: int) -> np.ndarray:
    p = to_numpy(probs)
    if p.ndim not in (1, 2) or p.shape[0] != n:
        raise MedtransferError(f"{name} must have shape (n,) or (n, k) with n = {n} (the labels), got {p.shape}")
    if not np.isfinite(p).all():
        raise MedtransferError(f"{name} contains NaN or infinite values")
    if p.ndim == 1:
        return (p > 0.5).astype(np.int64)
    return p.argmax(axis=1)

"""Test-fold metrics of a classifier from its probabilities: AUC in every common definition,
accuracy, expected calibration error and Brier score.

All functions take ``labels`` (n,) integers in ``0..k-1`` and ``probs`` (n, k) class probabilities
(rows sum to 1). The raw probabilities are stored beside the metrics, so any definition can be
recomputed later.

Precision: probabilities come from the logits by a float64 softmax (:func:`softmax_probabilities`)
and are stored at full float64 precision. A binary AUC ranks images by the log-odds
``log p_1 - log p_0`` (:func:`binary_scores`), not by a probability that has rounded to exactly
1.0 for confident predictions (a float32 softmax does so from a logit gap of about 17, making
ties that change the AUC); for two classes the one-vs-rest macro and weighted AUCs are that same
number.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from medtransfer.errors import MedtransferError
from medtransfer.vocabulary import AUC_AVERAGES


def _check(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] < 2:
        raise MedtransferError(f"probs: expected shape (n, k) with k >= 2, got {probs.shape}")
    if labels.shape != (probs.shape[0],):
        raise MedtransferError(f"labels: expected shape ({probs.shape[0]},), got {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= probs.shape[1]):
        raise MedtransferError(f"labels: expected integers in 0..{probs.shape[1] - 1}")
    return labels.astype(np.int64), probs


def _one_hot(labels: np.ndarray, k: int) -> np.ndarray:
    out = np.zeros((labels.size, k))
    out[np.arange(labels.size), labels] = 1.0
    return out


def softmax_probabilities(logits: Any) -> Any:
    """Class probabilities ``(n, k)`` float64 from logits ``(n, k)`` (a torch tensor, any dtype and
    device; the result stays on that device): softmax taken in float64, so a probability near 1
    keeps its distance from 1 down to about 1e-16 and the smaller ones keep every digit."""
    import torch

    return torch.softmax(logits.to(torch.float64), dim=1)


def binary_scores(probs: np.ndarray) -> np.ndarray:
    """Log-odds of the positive class, ``log p_1 - log p_0`` (n,) float64, for ``probs (n, 2)``.

    Monotone in the logit difference as long as neither probability underflows to 0 (a logit gap
    beyond about 745), even where the larger probability has rounded to exactly 1.0; beyond that,
    the saturated images rank above (below) every other one and tie with each other.
    """
    with np.errstate(divide="ignore"):
        scores = np.log(probs[:, 1]) - np.log(probs[:, 0])
    # a probability that underflowed to 0 gives +-inf: still the right rank (beyond every finite
    # score, tied with the other saturated ones), but scikit-learn refuses infinities
    finite = scores[np.isfinite(scores)]
    top = float(np.abs(finite).max()) + 1.0 if finite.size else 1.0
    return np.nan_to_num(scores, nan=np.nan, posinf=top, neginf=-top)


def auc_binary(labels: np.ndarray, probs: np.ndarray) -> float:
    """ROC AUC of the positive class (column 1) for two classes, ranked by :func:`binary_scores`;
    NaN if only one class occurs."""
    labels, probs = _check(labels, probs)
    if probs.shape[1] != 2:
        raise MedtransferError(f"auc_binary: expected 2 classes, got {probs.shape[1]}")
    if np.unique(labels).size < 2:
        return math.nan
    return float(roc_auc_score(labels, binary_scores(probs)))


def auc_ovr(labels: np.ndarray, probs: np.ndarray, average: str = "macro") -> float:
    """One-vs-rest ROC AUC averaged over classes (``average`` "macro" or "weighted" by class size).

    For two classes both are :func:`auc_binary` (each class's one-vs-rest AUC is the same ranking
    of the same pairs). Classes absent from ``labels`` are left out (their AUC is undefined); NaN if
    fewer than two classes occur.
    """
    labels, probs = _check(labels, probs)
    if average not in ("macro", "weighted"):
        raise MedtransferError(f"average: expected 'macro' or 'weighted', got {average!r}")
    if probs.shape[1] == 2:
        return auc_binary(labels, probs)
    present = np.unique(labels)
    if present.size < 2:
        return math.nan
    onehot = _one_hot(labels, probs.shape[1])
    aucs = np.array([roc_auc_score(onehot[:, c], probs[:, c]) for c in present])
    weights = onehot[:, present].sum(0) if average == "weighted" else np.ones(present.size)
    return float(np.sum(aucs * weights) / np.sum(weights))


def auc_micro(labels: np.ndarray, probs: np.ndarray) -> float:
    """ROC AUC of the flattened one-hot labels against the flattened probabilities (Keras' default
    ``AUC`` metric). Not a ranking measure of the positive class for binary tasks."""
    labels, probs = _check(labels, probs)
    onehot = _one_hot(labels, probs.shape[1])
    if labels.size == 0:
        return math.nan
    return float(roc_auc_score(onehot.ravel(), probs.ravel()))


def accuracy(labels: np.ndarray, probs: np.ndarray) -> float:
    """Fraction of rows whose arg-max class equals the label."""
    labels, probs = _check(labels, probs)
    return float(np.mean(probs.argmax(1) == labels)) if labels.size else math.nan


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, bins: int = 15) -> float:
    """Top-label ECE: equal-width confidence bins on (0, 1]; sum over bins of
    ``(bin size / n) * |accuracy in bin - mean confidence in bin|``."""
    labels, probs = _check(labels, probs)
    if labels.size == 0:
        return math.nan
    confidence = probs.max(1)
    correct = (probs.argmax(1) == labels).astype(np.float64)
    # bin b holds confidences in (b/bins, (b+1)/bins]
    index = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    gap = np.bincount(index, weights=correct - confidence, minlength=bins)
    return float(np.sum(np.abs(gap)) / labels.size)


def brier_score(labels: np.ndarray, probs: np.ndarray) -> float:
    """Multiclass Brier score: mean over rows of ``sum_k (p_k - onehot_k)^2``, in [0, 2].

    For two classes this is twice scikit-learn's ``brier_score_loss`` of the positive class.
    """
    labels, probs = _check(labels, probs)
    if labels.size == 0:
        return math.nan
    return float(np.mean(np.sum((probs - _one_hot(labels, probs.shape[1])) ** 2, axis=1)))


def headline_auc(labels: np.ndarray, probs: np.ndarray, average: str = "macro") -> float:
    """The test AUC a run reports and Table 2 averages (the one owner of this rule): for two
    classes the binary AUC of column 1 (:func:`auc_binary`), else the one-vs-rest ``average``
    "macro" or "weighted" (:func:`auc_ovr`) or the flattened "micro" (:func:`auc_micro`).
    ``labels (n,)`` ints, ``probs (n, k)``; NaN when fewer than two classes occur."""
    labels, probs = _check(labels, probs)
    if average not in AUC_AVERAGES:
        raise MedtransferError(f"headline AUC: expected one of {sorted(AUC_AVERAGES)}, got {average!r}")
    if probs.shape[1] == 2:
        return auc_binary(labels, probs)
    return auc_micro(labels, probs) if average == "micro" else auc_ovr(labels, probs, average)


def classification_metrics(labels: np.ndarray, probs: np.ndarray, headline: str = "macro") -> dict[str, float]:
    """Every metric of a run: ``auc`` (binary AUC for two classes, else the one-vs-rest
    ``headline`` average: "macro", "weighted" or "micro"), ``auc_macro``, ``auc_weighted``,
    ``auc_micro``, ``accuracy``, ``ece``, ``brier``, ``n``."""
    labels, probs = _check(labels, probs)
    macro = auc_ovr(labels, probs, "macro")
    weighted = auc_ovr(labels, probs, "weighted")
    micro = auc_micro(labels, probs)
    headline_value = headline_auc(labels, probs, headline)
    return {
        "auc": headline_value,
        "auc_macro": macro,
        "auc_weighted": weighted,
        "auc_micro": micro,
        "accuracy": accuracy(labels, probs),
        "ece": expected_calibration_error(labels, probs),
        "brier": brier_score(labels, probs),
        "n": int(labels.size),
    }

"""Metrics against scikit-learn and closed forms."""

import math

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss, roc_auc_score

from medtransfer.errors import MedtransferError
from medtransfer.training import metrics as m


def _probs(rng, n, k):
    logits = rng.standard_normal((n, k))
    e = np.exp(logits)
    return e / e.sum(1, keepdims=True)


def test_binary_auc_matches_sklearn_and_ovr_equals_binary():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    probs = _probs(rng, 200, 2)
    ref = roc_auc_score(labels, probs[:, 1])
    assert m.auc_binary(labels, probs) == pytest.approx(ref)
    assert m.auc_ovr(labels, probs, "macro") == pytest.approx(ref)
    assert m.auc_ovr(labels, probs, "weighted") == pytest.approx(ref)
    out = m.classification_metrics(labels, probs)
    assert out["auc"] == pytest.approx(ref)


@pytest.mark.parametrize("average", ["macro", "weighted"])
def test_multiclass_ovr_matches_sklearn(average):
    rng = np.random.default_rng(1)
    labels = rng.choice(4, 300, p=[0.6, 0.2, 0.15, 0.05])
    probs = _probs(rng, 300, 4)
    ref = roc_auc_score(labels, probs, multi_class="ovr", average=average)
    assert m.auc_ovr(labels, probs, average) == pytest.approx(ref)


def test_micro_matches_flattened_reference_and_headline_choice():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 3, 150)
    probs = _probs(rng, 150, 3)
    onehot = np.eye(3)[labels]
    ref = roc_auc_score(onehot.ravel(), probs.ravel())
    assert m.auc_micro(labels, probs) == pytest.approx(ref)
    assert m.classification_metrics(labels, probs, "micro")["auc"] == pytest.approx(ref)
    assert m.classification_metrics(labels, probs, "weighted")["auc"] == pytest.approx(
        roc_auc_score(labels, probs, multi_class="ovr", average="weighted"))


def test_perfect_and_reversed_rankings():
    labels = np.array([0, 0, 1, 1])
    good = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.1, 0.9]])
    assert m.auc_binary(labels, good) == 1.0
    assert m.auc_binary(labels, good[:, ::-1]) == 0.0
    assert m.accuracy(labels, good) == 1.0


def test_single_class_gives_nan():
    labels = np.zeros(5, dtype=int)
    probs = _probs(np.random.default_rng(3), 5, 2)
    assert math.isnan(m.auc_binary(labels, probs))
    assert math.isnan(m.auc_ovr(labels, probs))


def test_brier_is_twice_sklearn_for_binary_and_zero_when_perfect():
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 2, 100)
    probs = _probs(rng, 100, 2)
    assert m.brier_score(labels, probs) == pytest.approx(2 * brier_score_loss(labels, probs[:, 1]))
    assert m.brier_score(labels, np.eye(2)[labels]) == 0.0


def test_ece_closed_forms():
    # every prediction at confidence 0.8 and 80% correct: perfectly calibrated
    labels = np.array([0] * 8 + [1] * 2)
    probs = np.tile([0.8, 0.2], (10, 1))
    assert m.expected_calibration_error(labels, probs) == pytest.approx(0.0, abs=1e-12)
    # confidence 0.9, all wrong: ECE 0.9
    assert m.expected_calibration_error(np.ones(10, int), np.tile([0.9, 0.1], (10, 1))) == pytest.approx(0.9)
    # two bins: half at 0.95 all right (gap .05), half at 0.6 all wrong (gap .6) -> mean .325
    labels = np.array([0, 0, 1, 1])
    probs = np.array([[0.95, 0.05]] * 2 + [[0.6, 0.4]] * 2)
    assert m.expected_calibration_error(labels, probs) == pytest.approx(0.325)


def test_bad_shapes_raise_clear_errors():
    with pytest.raises(MedtransferError, match="probs"):
        m.accuracy(np.zeros(3, int), np.zeros(3))
    with pytest.raises(MedtransferError, match="labels"):
        m.accuracy(np.array([0, 5]), np.full((2, 2), 0.5))

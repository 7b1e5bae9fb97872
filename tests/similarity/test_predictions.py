"""prediction_similarity: observed agreement of mistakes and the independent baseline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medtransfer.errors import MedtransferError
from medtransfer.similarity import prediction_similarity


def one_hot_probs(predictions, k):
    probs = np.full((len(predictions), k), 0.1 / (k - 1))
    probs[np.arange(len(predictions)), predictions] = 0.9
    return probs


def test_hand_computed_example_uses_both_accuracies():
    labels = np.array([0, 1, 2, 1, 0, 2, 1, 0])
    pred_a = np.array([0, 1, 2, 1, 0, 2, 0, 1])  # 6/8 right
    pred_b = np.array([0, 1, 0, 0, 1, 2, 0, 0])  # 4/8 right
    sim = prediction_similarity(labels, one_hot_probs(pred_a, 3), one_hot_probs(pred_b, 3))
    assert sim.accuracy_a == pytest.approx(0.75)
    assert sim.accuracy_b == pytest.approx(0.5)
    right_a, right_b = pred_a == labels, pred_b == labels
    assert sim.observed == pytest.approx(np.mean(right_a == right_b))
    assert sim.baseline == pytest.approx(0.75 * 0.5 + 0.25 * 0.5)
    assert sim.baseline != pytest.approx(0.75**2 + 0.25**2)  # the authors' defect: a1 used twice


def test_identical_models_and_symmetry():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 200)
    probs = rng.dirichlet(np.ones(4), 200)
    same = prediction_similarity(labels, probs, probs)
    assert same.observed == 1.0
    other = rng.dirichlet(np.ones(4), 200)
    ab, ba = prediction_similarity(labels, probs, other), prediction_similarity(labels, other, probs)
    assert ab.observed == ba.observed and ab.baseline == pytest.approx(ba.baseline)


def test_independent_errors_match_the_baseline():
    rng = np.random.default_rng(1)
    n = 200_000
    labels = rng.integers(0, 2, n)
    pred_a = np.where(rng.random(n) < 0.9, labels, 1 - labels)
    pred_b = np.where(rng.random(n) < 0.6, labels, 1 - labels)
    sim = prediction_similarity(labels, one_hot_probs(pred_a, 2), one_hot_probs(pred_b, 2))
    assert sim.observed == pytest.approx(sim.baseline, abs=0.005)
    assert sim.baseline == pytest.approx(0.9 * 0.6 + 0.1 * 0.4, abs=0.005)


def test_binary_positive_class_probabilities_and_torch():
    labels = np.array([1, 0, 1, 1])
    p_a = np.array([0.9, 0.2, 0.4, 0.7])  # right, right, wrong, right
    p_b = torch.tensor([[0.2, 0.8], [0.3, 0.7], [0.6, 0.4], [0.1, 0.9]])  # right, wrong, wrong, right
    sim = prediction_similarity(torch.tensor(labels), p_a, p_b)
    assert (sim.accuracy_a, sim.accuracy_b, sim.observed) == (0.75, 0.5, 0.75)


def test_bad_input_refused():
    labels = np.array([0, 1, 1])
    good = np.array([[0.6, 0.4], [0.3, 0.7], [0.2, 0.8]])
    with pytest.raises(MedtransferError, match="probs_b must have shape"):
        prediction_similarity(labels, good, good[:2])
    with pytest.raises(MedtransferError, match="probs_a contains NaN"):
        prediction_similarity(labels, np.where(good > 0.7, np.nan, good), good)
    with pytest.raises(MedtransferError, match="labels go up to 2"):
        prediction_similarity(np.array([0, 2, 1]), good, good)
    with pytest.raises(MedtransferError, match="integer classes"):
        prediction_similarity(np.array([0, 0.5, 1]), good, good)

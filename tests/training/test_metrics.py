"""Metrics against scikit-learn and closed forms."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import brier_score_loss, roc_auc_score

from medtransfer.errors import MedtransferError
from medtransfer.training import metrics as m
from medtransfer.training.metrics import (
    auc_binary,
    auc_ovr,
    binary_scores,
    classification_metrics,
    softmax_probabilities,
)


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


def _confident_logits(seed: int = 0, n: int = 117) -> tuple[np.ndarray, torch.Tensor]:
    """Labels and float32 logits where a float32 softmax rounds the larger probability to exactly 1.0
    for many images (logit gaps up to 40), as a confident fine-tuned network gives."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    gap = rng.normal(0.0, 15.0, n) + 6.0 * (labels - 0.5)
    logits = torch.from_numpy(np.stack([np.zeros(n), gap], axis=1).astype(np.float32))
    return labels, logits


def test_binary_auc_is_one_number_however_it_is_computed(tmp_path):
    labels, logits = _confident_logits()
    float32_probs = torch.softmax(logits, dim=1).numpy()
    assert (float32_probs == 1.0).any(axis=1).sum() >= 10  # the ties of a float32 softmax are there
    truth = roc_auc_score(labels, logits[:, 1].double().numpy() - logits[:, 0].double().numpy())
    probs = softmax_probabilities(logits).numpy()
    assert probs.dtype == np.float64
    values = classification_metrics(labels, probs)
    assert values["auc"] == values["auc_macro"] == values["auc_weighted"] == truth
    # stored in predictions.csv and read back: the same number again
    frame = pd.DataFrame({"image_id": [str(i) for i in range(labels.size)], "label": labels})
    for c in range(2):
        frame[f"p_{c}"] = probs[:, c]
    frame.to_csv(tmp_path / "predictions.csv", index=False)
    from medtransfer.analysis.tables import auc_from_probs, read_predictions

    _, read_labels, read_probs = read_predictions(tmp_path / "predictions.csv")
    for average in ("macro", "weighted"):
        assert auc_from_probs(read_labels, read_probs, average) == truth
    # even from the rounded float32 probabilities the log-odds keep the order where p_1 is tiny
    assert auc_ovr(labels, float32_probs.astype(np.float64), "macro") == auc_binary(labels, float32_probs)


def test_predict_returns_float64_probabilities_that_keep_their_distance_from_one():
    from medtransfer.models import Normalization
    from medtransfer.training.loop import StepSetup, predict

    class Confident(torch.nn.Module):  # logit gaps of about 0..45, growing with the image's pixel value
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            gap = (x.mean(dim=(1, 2, 3)) + 115.0) / 2.0
            return torch.stack([torch.zeros_like(gap), gap], dim=1)

    pixels = (torch.arange(9, dtype=torch.uint8) * 10).reshape(9, 1, 1, 1).expand(9, 3, 4, 4).contiguous()
    labels = torch.arange(9) % 2
    setup = StepSetup(Normalization("caffe"), None, None, False, None)
    probs, _ = predict(Confident().eval(), pixels, labels, torch.arange(9), 4, setup)
    assert probs.dtype == torch.float64
    assert (probs[:, 0] > 0).all() and (probs[:, 1] < 1).sum() >= 7  # float32 would give 1.0 from a gap of ~17
    scores = binary_scores(probs.numpy())
    assert (np.diff(scores) > 0).all()


def test_binary_auc_of_probabilities_that_underflowed_to_zero():
    """A diverged network's softmax gives p_0 = 0 exactly (logit gap > 745): the AUC is still the
    ranking's, with the saturated images tied above every other one (was: scikit-learn's
    'Input contains infinity')."""
    import torch

    from medtransfer.training.metrics import auc_binary, classification_metrics, softmax_probabilities

    logits = torch.tensor([[0.0, 900.0], [0.0, 1000.0], [0.0, 2.0], [0.0, -1.0], [800.0, 0.0], [0.0, 0.5]])
    labels = np.array([1, 0, 1, 0, 0, 1])
    probs = softmax_probabilities(logits).numpy()
    assert probs[0, 0] == 0.0 and probs[4, 1] == 0.0  # really underflowed
    # ranking: {0, 1} tied on top, then 2, 5, 3, then 4 at the bottom
    scores = np.array([1000.0, 1000.0, 2.0, -1.0, -1000.0, 0.5])
    assert auc_binary(labels, probs) == roc_auc_score(labels, scores)
    metrics = classification_metrics(labels, probs, "macro")
    assert metrics["auc"] == auc_binary(labels, probs)

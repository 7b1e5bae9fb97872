"""layer_similarity: the paper's rows/channels sampling protocol."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medtransfer.errors import MedtransferError
from medtransfer.similarity import activation_rows, cca, layer_similarity, linear_cka


def activations(seed=0, n=60, c=12, h=4, w=5):
    return np.random.default_rng(seed).standard_normal((n, c, h, w))


def test_activation_rows_layout():
    acts = activations()
    images, channels = np.array([3, 7]), np.array([1, 4, 9])
    rows = activation_rows(acts, images, channels)
    assert rows.shape == (2 * 4 * 5, 3)
    # row index = image_position * h * w + r * w + c
    assert rows[1 * 20 + 2 * 5 + 3, 2] == acts[7, 9, 2, 3]
    assert rows[0 * 20 + 0 * 5 + 4, 0] == acts[3, 1, 0, 4]
    flat = activation_rows(acts[:, :, 0, 0], images, channels)
    np.testing.assert_array_equal(flat, acts[np.ix_(images, channels)][:, :, 0, 0])


def test_identical_and_rescaled_activations_give_one():
    acts = activations()
    for measure in ("cca", "cka"):
        result = layer_similarity(acts, acts, measure=measure, rows=400, channels=6, repeats=3)
        np.testing.assert_allclose(result.values, 1.0, atol=1e-10)
        assert result.std == pytest.approx(0.0, abs=1e-10)
    # Same channel indices and images for both models: a per-channel rescaling keeps CCA at exactly 1.
    scaled = acts * np.arange(1, 13)[None, :, None, None]
    assert layer_similarity(acts, scaled, rows=400, channels=6).mean == pytest.approx(1.0, abs=1e-10)


def test_rows_and_channels_drawn_as_documented():
    acts = activations(n=60)
    result = layer_similarity(acts, acts, rows=200, channels=5, repeats=2)
    assert result.rows == 10 * 20  # round(200 / (4 * 5)) = 10 images of 20 positions
    assert result.channels == 5
    assert result.values.shape == (2,)
    everything = layer_similarity(acts, 2 * acts + 1, rows=None, channels=None, repeats=1)
    assert everything.rows == 60 * 20 and everything.channels == 12
    capped = layer_similarity(acts, acts, rows=10**6, channels=500, repeats=1)
    assert capped.rows == 60 * 20 and capped.channels == 12


def test_seeded_and_matches_manual_protocol():
    rng = np.random.default_rng(1)
    a = activations(seed=2)
    b = np.maximum(a, 0) + 0.5 * rng.standard_normal(a.shape)
    first = layer_similarity(a, b, rows=300, channels=4, repeats=3, seed=5)
    again = layer_similarity(a, b, rows=300, channels=4, repeats=3, seed=5)
    other = layer_similarity(a, b, rows=300, channels=4, repeats=3, seed=6)
    np.testing.assert_array_equal(first.values, again.values)
    assert not np.allclose(first.values, other.values)
    assert first.mean == pytest.approx(first.values.mean()) and first.std == pytest.approx(first.values.std())
    # Replay the documented draws: per repeat images (sorted), then channels (sorted), shared by both.
    draws = np.random.default_rng(5)
    expected = []
    for _ in range(3):
        images = np.sort(draws.choice(60, size=15, replace=False))
        channels = np.sort(draws.choice(12, size=4, replace=False))
        expected.append(cca(activation_rows(a, images, channels), activation_rows(b, images, channels)).mean)
    np.testing.assert_allclose(first.values, expected, atol=1e-12)
    cka = layer_similarity(a, b, measure="cka", rows=300, channels=4, repeats=1, seed=5)
    draws = np.random.default_rng(5)
    images = np.sort(draws.choice(60, size=15, replace=False))
    channels = np.sort(draws.choice(12, size=4, replace=False))
    assert cka.mean == pytest.approx(linear_cka(activation_rows(a, images, channels), activation_rows(b, images, channels)))


def test_channels_drawn_without_replacement():
    acts = activations()
    result = layer_similarity(acts, acts, rows=None, channels=12, repeats=2, measure="cca")
    np.testing.assert_allclose(result.values, 1.0, atol=1e-10)  # duplicates would be dropped, not fail


def test_torch_input_matches_numpy():
    a = activations(seed=3).astype(np.float32)
    b = np.tanh(a)
    expected = layer_similarity(a, b, rows=300, channels=6, repeats=2)
    got = layer_similarity(torch.from_numpy(a), torch.from_numpy(b), rows=300, channels=6, repeats=2)
    np.testing.assert_allclose(got.values, expected.values, atol=1e-12)


def test_bad_arguments_refused():
    acts = activations()
    with pytest.raises(MedtransferError, match="measure"):
        layer_similarity(acts, acts, measure="nope")
    with pytest.raises(MedtransferError, match="same images"):
        layer_similarity(acts, acts[:-1])
    with pytest.raises(MedtransferError, match="spatial size"):
        layer_similarity(acts, acts[:, :, :2])
    with pytest.raises(MedtransferError, match=r"acts_a must be activations"):
        layer_similarity(acts[0], acts[0])
    with pytest.raises(MedtransferError, match="repeats"):
        layer_similarity(acts, acts, repeats=0)

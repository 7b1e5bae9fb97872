"""conv1 filter grids (Figure 4) and the Gabor reference bank."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from medtransfer.errors import ConfigError
from medtransfer.models import ResNet50
from medtransfer.models.filters import conv1_filters, filter_grid, gabor_bank, gabor_similarity, save_grid_png


def test_grid_layout_scaling_and_bgr(tmp_path):
    filters = np.zeros((64, 3, 7, 7), np.float32)
    filters[0, 0] = 1.0  # first filter: only its first input channel (B in caffe mode) is active
    filters[1] = np.arange(7)[None, None, :]  # a horizontal ramp on all channels
    grid = filter_grid(filters, count=36)
    assert grid.shape == (6 * 8 + 1, 6 * 8 + 1, 3) and grid.min() >= 0 and grid.max() <= 1
    tile0 = grid[1:8, 1:8]
    assert (tile0[..., 2] == 1).all() and (tile0[..., :2] == 0).all()  # shown as blue
    assert (filter_grid(filters, bgr=False)[1:8, 1:8, 0] == 1).all()
    ramp = grid[1:8, 9:16, 0]
    np.testing.assert_allclose(ramp[0], np.arange(7) / 6)
    assert (grid[1:8, 17:24] == 0.5).all()  # constant filter -> grey
    assert (grid[0] == 1).all()  # white separators
    png = save_grid_png(grid, tmp_path / "conv1.png", scale=4)
    assert Image.open(png).size == (grid.shape[1] * 4, grid.shape[0] * 4)
    with pytest.raises(ConfigError, match="count"):
        filter_grid(filters, count=65)
    with pytest.raises(ConfigError, match=r"\(n, 3, k, k\)"):
        filter_grid(np.zeros((4, 1, 7, 7)))


def test_gabor_bank_and_similarity():
    bank = gabor_bank()
    assert bank.shape == (36, 3, 7, 7)
    np.testing.assert_allclose(np.linalg.norm(bank[:, 0].reshape(36, -1), axis=1), 1, rtol=1e-5)
    np.testing.assert_allclose(bank.mean(axis=(2, 3)), 0, atol=1e-6)
    np.testing.assert_allclose(gabor_similarity(bank, bank), 1, rtol=1e-6)
    np.testing.assert_allclose(gabor_similarity(-3 * bank + 2, bank), 1, rtol=1e-6)  # sign, scale, offset
    noise = np.random.default_rng(0).standard_normal((200, 3, 7, 7))
    scores = gabor_similarity(noise, bank)
    assert scores.max() < 0.6 and np.median(scores) < 0.4
    model = ResNet50()
    assert conv1_filters(model).shape == (64, 3, 7, 7)

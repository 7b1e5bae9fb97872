"""`similarity` on a foreign module: NaN activations and layers with too few rows are named."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medtransfer.analysis.modules import SimilarityWarning, compare_modules
from medtransfer.models.resolve import Model
from medtransfer.study.analysis_settings import AnalysisSettings
from medtransfer.errors import MedtransferError
from medtransfer.models import Normalization


class Small(nn.Module):
    """conv (16 x 16 grid, 8 channels) -> pooled head (1 x 1 grid, 32 channels)."""

    def __init__(self, poison: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU())
        self.wide = nn.Sequential(nn.Conv2d(8, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        if poison:
            with torch.no_grad():
                self.wide[0].bias[3] = float("nan")

    def forward(self, x):
        return self.wide(self.stem(x))


POOL = np.random.default_rng(0).integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
SETTINGS = AnalysisSettings(rows=400, channels=32, repeats=2, batch_size=8, ci=None, permutations=0)


def _model(poison: bool = False) -> Model:
    return Model(Small(poison).eval(), Normalization("unit"), "poisoned.pth" if poison else "small.pth")


def test_a_layer_with_too_few_rows_is_skipped_with_a_warning_naming_the_flags():
    # the pooled layer gives one row per image: 20 rows for 32 channels is too few for CCA
    with pytest.warns(SimilarityWarning) as caught:
        frame, _ = compare_modules(_model(), _model(), POOL, ["stem", "wide"], settings=SETTINGS, device="cpu")
    cca = frame[frame["measure"] == "cca"]
    assert list(cca["layer"]) == ["stem"]  # the stem is measured, the wide layer left out
    assert np.isclose(cca["mean"].iloc[0], 1.0)
    message = " ".join(str(w.message) for w in caught)
    assert "layer wide" in message and "--images" in message and "--channels" in message


def test_nan_activations_name_the_network_and_the_layer():
    with pytest.raises(MedtransferError, match=r"poisoned\.pth: layer wide gives NaN"):
        compare_modules(_model(), _model(poison=True), POOL, ["stem", "wide"], settings=SETTINGS, device="cpu")

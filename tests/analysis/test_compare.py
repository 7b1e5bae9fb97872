"""``medtransfer similarity``'s per-layer values: damaged activations named, too few rows skip the layer."""

from __future__ import annotations

import numpy as np
import pytest

from medtransfer.analysis.compare import compare_models, layer_values
from medtransfer.analysis.settings import AnalysisSettings
from medtransfer.errors import MedtransferError


def test_nan_activations_name_the_network_and_the_layer():
    rng = np.random.default_rng(0)
    good, bad = rng.standard_normal((50, 4)), rng.standard_normal((50, 4))
    bad[3, 1] = np.nan
    with pytest.raises(MedtransferError, match=r"^b\.pt has NaN or infinite activations at layer block2 \(conv3"):
        layer_values([good], [bad], "cca", "block2 (conv3_block4_out)", ("a.pt", "b.pt"))


def test_too_few_rows_skip_the_layer_with_a_warning_naming_the_flags(capsys):
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((20, 64)), rng.standard_normal((20, 64))
    assert layer_values([x], [y], "cca", "block4 (conv5_block3_out)", ("a", "b")) is None
    err = capsys.readouterr().err
    assert "layer block4 (conv5_block3_out): CCA skipped" in err
    assert "--images" in err and "--channels" in err
    assert layer_values([x], [y], "cka", "block4", ("a", "b")).shape == (1,)


@pytest.mark.slow
def test_compare_models_keeps_going_past_a_layer_with_too_few_rows(tmp_path, capsys):
    settings = AnalysisSettings().override(layers=["conv1", "block4"], rows=400, channels=16, repeats=1)
    frame, _ = compare_models("random", "random", "synthetic", None, size=32, images=6, settings=settings,
                              cache_dir=tmp_path, device="cpu")
    assert set(zip(frame["layer"], frame["measure"])) == {("conv1", "cca"), ("conv1", "cka"), ("block4", "cka")}
    assert "block4" in capsys.readouterr().err

"""``medtransfer demo --feature-reuse``: the transfer-depth curve on the synthetic task rises from
random init to full transfer by more than the interval at its ends (training threads 1, the demo's
setting). At threads 2, one run at a time (by hand, docs/protocol.md): random 48.9 [44.2, 53.6],
full transfer 97.6 [94.8, 99.3], rising through conv1 60.7, block2 78.8, block3 94.6."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from medtransfer.cli import app


@pytest.mark.slow
def test_feature_reuse_demo_shows_auc_rising_with_transferred_depth(tmp_path):
    out = tmp_path / "demo-feature-reuse"
    result = CliRunner().invoke(app, ["demo", "--feature-reuse", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "30 runs (0 already done, 30 now, 0 failed)" in " ".join(result.output.split())
    table = pd.read_csv(out / "analysis" / "transfer_depth.csv")
    assert list(table["arm"]) == ["random", "conv1", "block2", "block3", "full", "mean-var"]
    assert (table["n"] == 5).all()
    arm = table.set_index("arm")
    assert (table["low"] <= table["mean"]).all() and (table["mean"] <= table["high"]).all()
    assert (table[["low", "high"]].to_numpy() >= 0).all() and (table[["low", "high"]].to_numpy() <= 100).all()
    # the ends: full transfer's interval lies above random init's, no overlap
    assert arm.loc["full", "low"] > arm.loc["random", "high"], table
    # Mean-Var keeps the weights' scale but not the features: below full transfer's interval
    assert arm.loc["mean-var", "mean"] < arm.loc["full", "low"], table
    depths = table[table["depth"].notna()]
    assert np.array_equal(depths["depth"].to_numpy(), [0, 1, 3, 4, 5])
    assert "synthetic: with synth_a the test AUC" in " ".join(result.output.split())
    assert (out / "analysis" / "figures" / "transfer_depth_synthetic.png").is_file()
    # the runs record what they took from the source
    config = (out / "runs" / "synthetic" / "synth_a.to_block2-no-freeze" / "fold0" / "config.json").read_text()
    assert '"up_to": "block2"' in config

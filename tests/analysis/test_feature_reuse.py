"""Weight-space distance per stage (closed forms) and the transfer-depth table and its plateau."""

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from medtransfer.analysis.figures import configure
from medtransfer.analysis.transfer_depth import arms, depth_figure, depth_table, plateau, plateau_sentence
from medtransfer.analysis.weight_distance import relative_distances
from medtransfer.training.config import TransferSetting


def test_relative_distance_closed_form():
    gen = torch.Generator().manual_seed(0)
    init = {"a.weight": torch.randn(8, 3, generator=gen, dtype=torch.float64),
            "a.bias": torch.randn(8, generator=gen, dtype=torch.float64),
            "b.weight": torch.ones(5, 5), "c.weight": torch.zeros(4)}
    tuned = {"a.weight": init["a.weight"] * 1.5, "a.bias": init["a.bias"] * 1.5,  # stage s1: W_ft = 1.5 W_0
             "b.weight": torch.ones(5, 5) + torch.eye(5) * 0.25,  # stage s2: ||dW|| = 0.25 sqrt(5), ||W_0|| = 5
             "c.weight": torch.ones(4)}
    stage_of = {"a.weight": "s1", "a.bias": "s1", "b.weight": "s2", "c.weight": "s3"}
    found = relative_distances(init, tuned, stage_of)
    assert list(found) == ["s1", "s2", "s3"]
    assert found["s1"][0] == pytest.approx(0.5, rel=1e-12)  # ||0.5 W_0|| / ||W_0||, whatever W_0
    assert found["s1"][3] == 8 * 3 + 8
    assert found["s2"][0] == pytest.approx(0.25 * math.sqrt(5) / 5, rel=1e-12)
    assert found["s2"][1:3] == pytest.approx((5.0, 0.25 * math.sqrt(5)), rel=1e-12)
    assert math.isnan(found["s3"][0]) and found["s3"][2] == pytest.approx(2.0)  # W_0 = 0: no relative distance
    assert relative_distances(init, init, stage_of)["s1"][0] == 0.0


def _run(source, fold, transfer=None, strategy="no-freeze"):
    config = SimpleNamespace(transfer=transfer)
    return SimpleNamespace(target="t", source=source, strategy=strategy, fold=fold, config=config,
                           load_string="random" if source == "random" else "imagenet")


def _study(labels):
    runs = [_run(label, fold, transfer) for label, transfer in labels for fold in range(3)]
    runs.append(_run("imagenet", 0, strategy="freeze"))
    return SimpleNamespace(runs=runs)


LABELS = [("random", None), ("imagenet", None), ("imagenet.to_conv1", TransferSetting(up_to="conv1")),
          ("imagenet.to_block2", TransferSetting(up_to="block2")), ("imagenet.meanvar", TransferSetting(init="mean-var"))]


def _aucs(means):
    rows = [{"target": "t", "source": s, "strategy": "no-freeze", "fold": f, "auc": m + d}
            for s, m in means.items() for f, d in enumerate((-0.02, 0.0, 0.02))]
    rows.append({"target": "t", "source": "imagenet", "strategy": "freeze", "fold": 0, "auc": 0.1})
    return pd.DataFrame(rows)


def test_depth_table_orders_random_depths_full_then_redrawn(tmp_path):
    study = _study(LABELS)
    mapping = arms(study)
    assert set(mapping["source"]) == {"imagenet"} and "random" not in set(mapping["label"])
    means = {"random": 0.5, "imagenet.to_conv1": 0.6, "imagenet.to_block2": 0.8, "imagenet": 0.81,
             "imagenet.meanvar": 0.55}
    table = depth_table(study, _aucs(means), "random")
    assert list(table["arm"]) == ["random", "conv1", "block2", "full", "mean-var"]
    assert list(table["depth"])[:4] == [0.0, 1.0, 3.0, 5.0] and np.isnan(table["depth"].iloc[4])
    # the freeze run is not a depth: full transfer is the no-freeze cell
    assert table.set_index("arm")["mean"].to_dict()["full"] == pytest.approx(81.0)
    assert (table["low"] < table["mean"]).all() and (table["mean"] < table["high"]).all()
    stop = plateau(table)
    assert stop["arm"] == "block2"  # 81 lies inside block2's interval; 80 lies above conv1's
    sentence = plateau_sentence(table, "t")
    assert "stops rising at block2: 80.0 [" in sentence and "random init 50.0" in sentence
    configure(["png"])
    assert depth_figure(table, "t", tmp_path) == tmp_path / "transfer_depth_t.png"
    assert (tmp_path / "transfer_depth_t.png").stat().st_size > 1000


def test_depth_figure_draws_a_mean_outside_its_logit_interval(tmp_path):
    # two folds at AUC 0 give the interval of the clipped logit, 0.1, above the mean 0: the bars
    # are drawn from the interval's own ends (an error bar of mean - low would be negative)
    table = pd.DataFrame({"target": "t", "source": "s", "arm": ["random", "conv1", "full", "mean-var"],
                          "depth": [0.0, 1.0, 5.0, np.nan], "mean": [25.0, 50.0, 0.0, 0.0],
                          "low": [0.0, 50.0, 0.1, 0.1], "high": [100.0, 50.0, 0.1, 0.1], "n": 2})
    assert (table["mean"] < table["low"]).any()
    configure(["png"])
    assert depth_figure(table, "t", tmp_path) == tmp_path / "transfer_depth_t.png"
    assert (tmp_path / "transfer_depth_t.png").stat().st_size > 1000


def test_plateau_at_full_when_every_step_rises_beyond_the_interval():
    curve = pd.DataFrame({"arm": ["random", "conv1", "full"], "depth": [0.0, 1.0, 5.0], "mean": [50.0, 60.0, 70.0],
                          "low": [48.0, 58.0, 68.0], "high": [52.0, 62.0, 72.0], "target": "t", "source": "s"})
    assert plateau(curve)["arm"] == "full"
    assert "does not stop rising before full transfer" in plateau_sentence(curve, "t")
    flat = curve.assign(mean=[50.0, 51.0, 51.5])
    assert plateau(flat)["arm"] == "random"  # no depth beats random init by more than its interval

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from medtransfer.analysis.correlation import correlation, correlation_table, gain_points


def test_coefficients_match_scipy_and_p_values_are_permutation_ones():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(40)
    y = 2.0 * x + rng.standard_normal(40)
    res = correlation(x, y, permutations=999, seed=1)
    assert res["pearson_r"] == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert res["spearman_rho"] == pytest.approx(stats.spearmanr(x, y).statistic)
    assert res["pearson_low"] < res["pearson_r"] < res["pearson_high"]
    assert res["spearman_low"] < res["spearman_rho"] < res["spearman_high"]
    assert res["pearson_p"] == pytest.approx(1 / 1000) and res["n"] == 40  # Monte Carlo: never 0


def test_three_perfectly_ranked_points_give_p_one_third_and_no_interval():
    res = correlation([0.1, 0.5, 0.7], [0.2, 0.3, 0.9])
    assert res["spearman_rho"] == pytest.approx(1.0) and res["spearman_p"] == pytest.approx(1 / 3)
    assert np.isnan(res["spearman_low"]) and np.isnan(res["pearson_low"]) and "n too small" in res["note"]


def test_too_few_or_constant_points_give_nan_not_errors():
    assert np.isnan(correlation([1, 2], [3, 4])["pearson_r"])
    assert np.isnan(correlation([1, 1, 1, 1], [1, 2, 3, 4])["spearman_rho"])


def test_points_are_per_target_means_by_default_and_per_fold_only_when_asked():
    rng = np.random.default_rng(3)
    rows = [{"target": t, "fold": f, "source": "a", "strategy": s, "layer": "conv1", "cca": rng.random(),
             "gain": rng.random()} for t in ("t1", "t2", "t3", "t4") for f in range(3) for s in ("no-freeze", "freeze")]
    points = pd.DataFrame(rows)
    table = correlation_table(points, permutations=99).set_index("strategy")
    assert table.loc["no-freeze", "n"] == 4 and table.loc["all", "n"] == 4  # one point per target
    means = points[points["strategy"] == "freeze"].groupby("target")[["cca", "gain"]].mean()
    assert table.loc["freeze", "pearson_r"] == pytest.approx(np.corrcoef(means["cca"], means["gain"])[0, 1])
    assert table["unit"].str.startswith("target").all()
    folds = correlation_table(points, permutations=99, by="fold").set_index("strategy")
    assert folds.loc["no-freeze", "n"] == 12 and folds["unit"].str.contains("NOT independent").all()


def test_gain_points_use_the_random_run_of_the_same_fold():
    sim = pd.DataFrame({
        "target": ["knee"] * 2, "fold": [0, 1], "kind": ["ft_vs_init"] * 2, "measure": ["cca"] * 2,
        "source": ["imagenet"] * 2, "strategy": ["no-freeze"] * 2, "layer": ["conv1"] * 2, "mean": [0.9, 0.8],
    })
    aucs = pd.DataFrame({
        "target": ["knee"] * 4, "fold": [0, 1, 0, 1], "source": ["imagenet", "imagenet", "random", "random"],
        "strategy": ["no-freeze"] * 4, "auc": [0.9, 0.85, 0.8, 0.5],
    })
    points = gain_points(sim, aucs, "random")
    assert points["gain"].tolist() == pytest.approx([0.1 / 0.8, 0.35 / 0.5])
    assert points["cca"].tolist() == [0.9, 0.8]
    table = correlation_table(points, permutations=10)
    assert table["n"].tolist() == [1]  # one target: one point

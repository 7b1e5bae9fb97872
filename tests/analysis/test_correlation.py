import numpy as np
import pandas as pd
import pytest
from scipy import stats

from medtransfer.analysis.correlation import correlation, correlation_table, gain_points


def test_coefficients_match_scipy_and_cis_contain_them():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(40)
    y = 0.6 * x + rng.standard_normal(40)
    res = correlation(x, y, resamples=1000, seed=1)
    assert res["pearson_r"] == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert res["spearman_rho"] == pytest.approx(stats.spearmanr(x, y).statistic)
    assert res["pearson_low"] < res["pearson_r"] < res["pearson_high"]
    assert res["spearman_low"] < res["spearman_rho"] < res["spearman_high"]
    assert res["pearson_p"] == pytest.approx(stats.pearsonr(x, y).pvalue) and res["n"] == 40


def test_monotone_data_gives_rank_correlation_one_and_independent_data_covers_zero():
    x = np.linspace(0, 1, 12)
    res = correlation(x, np.exp(3 * x), resamples=500)
    assert res["spearman_rho"] == pytest.approx(1.0) and res["spearman_low"] == pytest.approx(1.0)
    rng = np.random.default_rng(5)
    res = correlation(rng.standard_normal(200), rng.standard_normal(200), resamples=1000)
    assert res["pearson_low"] < 0 < res["pearson_high"]


def test_too_few_or_constant_points_give_nan_not_errors():
    assert np.isnan(correlation([1, 2], [3, 4])["pearson_r"])
    assert np.isnan(correlation([1, 1, 1, 1], [1, 2, 3, 4])["spearman_rho"])


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
    table = correlation_table(points, resamples=10)
    assert table["n"].tolist() == [2]

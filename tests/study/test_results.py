"""Table 2 (medtransfer.study.table2, its one owner): mean and sample std x 100 over folds per
target x source x strategy, and a 95% interval of the mean inside [0, 100]."""

import numpy as np
import pandas as pd
import pytest
from scipy import special
from scipy import stats as sps

from medtransfer.study.results import AUC_COLUMNS
from medtransfer.study.table2 import table2, table2_wide, to_markdown


def _aucs():
    rows = []
    for target, base in (("thyroid", 0.6), ("chest", 0.9)):
        for source, strategy, shift in (("imagenet", "freeze", 0.05), ("random", "no-freeze", 0.0)):
            for fold, noise in enumerate((-0.02, 0.0, 0.02)):
                rows.append({"target": target, "source": source, "strategy": strategy, "fold": fold, "seed": 0,
                             "auc": base + shift + noise})
    return pd.DataFrame(rows).reindex(columns=AUC_COLUMNS)


def test_table2_means_and_sample_std():
    table = table2(_aucs())
    wide = table2_wide(table)
    assert list(wide.index) == ["thyroid", "chest"]
    assert list(wide.columns) == ["imagenet / freeze", "random / no-freeze"]  # pretrained first, random last
    assert wide.loc["thyroid", "imagenet / freeze"] == "**65.0 ± 2.0**"  # std of (-2, 0, 2) with ddof=1
    assert wide.loc["chest", "random / no-freeze"] == "90.0 ± 2.0"
    md = to_markdown(table)
    assert "| thyroid | **65.0 ± 2.0 [" in md and "logit" in md


def test_interval_is_a_logit_t_interval_inside_zero_hundred():
    table = table2(_aucs())
    row = table[(table["target"] == "chest") & (table["source"] == "imagenet")].iloc[0]
    z = special.logit(np.array([0.93, 0.95, 0.97]))
    half = sps.t.ppf(0.975, 2) * z.std(ddof=1) / np.sqrt(3)
    assert row["low"] == pytest.approx(100 * special.expit(z.mean() - half))
    assert row["high"] == pytest.approx(100 * special.expit(z.mean() + half))
    # the cases: a Student-t interval of these leaves [0, 100]; this one cannot
    wild = pd.DataFrame({"target": "t", "source": "s", "strategy": "freeze", "fold": range(3),
                         "auc": [1.0, 0.97, 0.78]})
    r = table2(wild).iloc[0]
    assert 0 <= r["low"] <= r["mean"] <= r["high"] <= 100
    low_cell = table2(wild.assign(auc=[0.05, 0.6, 0.54])).iloc[0]
    assert 0 <= low_cell["low"] <= low_cell["high"] <= 100


def test_single_run_and_missing_cells():
    auc = pd.DataFrame([{"target": "t", "source": "s", "strategy": "freeze", "fold": 0, "seed": 0, "auc": 0.5},
                        {"target": "u", "source": "r", "strategy": "no-freeze", "fold": 0, "seed": 0,
                         "auc": np.nan}]).reindex(columns=AUC_COLUMNS)
    table = table2(auc)
    wide = table2_wide(table, interval=True)
    assert wide.loc["t", "s / freeze"] == "**50.0**" and list(wide.index) == ["t"]  # no defined AUC: no cell
    assert np.isnan(table.iloc[0]["low"])

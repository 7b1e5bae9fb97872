"""Table 2 layout: mean and sample std x 100 over folds, per target x source x strategy."""

import numpy as np
import pandas as pd

from medtransfer.study.results import AUC_COLUMNS, table2, to_markdown


def test_table2_means_and_sample_std():
    rows = []
    for target, base in (("thyroid", 0.6), ("chest", 0.9)):
        for source, strategy, shift in (("imagenet", "freeze", 0.05), ("random", "no-freeze", 0.0)):
            for fold, noise in enumerate((-0.02, 0.0, 0.02)):
                rows.append({"target": target, "source": source, "strategy": strategy, "fold": fold, "seed": 0,
                             "auc": base + shift + noise})
    auc = pd.DataFrame(rows).reindex(columns=AUC_COLUMNS)
    table = table2(auc)
    assert list(table.index) == ["thyroid", "chest"]
    assert list(table.columns) == ["imagenet freeze", "random no-freeze"]
    assert table.loc["thyroid", "imagenet freeze"] == "65.0 ± 2.0"  # std of (-2, 0, 2) with ddof=1
    assert table.loc["chest", "random no-freeze"] == "90.0 ± 2.0"
    md = to_markdown(table)
    assert "| thyroid | **65.0 ± 2.0** | 60.0 ± 2.0 |" in md


def test_single_run_and_missing_cells():
    auc = pd.DataFrame([{"target": "t", "source": "s", "strategy": "freeze", "fold": 0, "seed": 0, "auc": 0.5},
                        {"target": "u", "source": "r", "strategy": "no-freeze", "fold": 0, "seed": 0,
                         "auc": np.nan}]).reindex(columns=AUC_COLUMNS)
    table = table2(auc)
    assert table.loc["t", "s freeze"] == "50.0 ± -" and table.loc["t", "r no-freeze"] == ""

"""A test fold with one class has no AUC: Table 2 says how many runs its mean is over, stderr says which."""

from __future__ import annotations

import numpy as np
import pandas as pd

from medtransfer.analysis.tables import table2, table2_wide
from medtransfer.study.results import warn_undefined_auc
from medtransfer.study.results import AUC_COLUMNS, write_results
from medtransfer.study.results import table2 as run_table2


def _aucs(values):
    return pd.DataFrame([{"target": "thyroid", "source": "imagenet", "strategy": "freeze", "fold": f, "seed": 0,
                          "auc": v} for f, v in enumerate(values)])


def test_analysis_table2_counts_the_folds_used():
    table = table2(_aucs([0.5, np.nan, 0.7, 0.9, np.nan]), ("imagenet",), None)
    row = table.iloc[0]
    assert (row["n"], row["runs"]) == (3, 5)
    assert row["mean"] == 70.0
    assert table2_wide(table).loc["thyroid", "imagenet / freeze"] == "**70.0 ± 20.0** (3 of 5 runs)"
    complete = table2(_aucs([0.5, 0.7]), ("imagenet",), None)
    assert table2_wide(complete).loc["thyroid", "imagenet / freeze"] == "**60.0 ± 14.1**"


def test_run_table2_counts_the_folds_used_and_warns(capsys):
    auc = _aucs([0.5, None, 0.7]).reindex(columns=AUC_COLUMNS)
    assert run_table2(auc).loc["thyroid", "imagenet freeze"] == "60.0 ± 14.1 (2 of 3 runs)"
    messages = warn_undefined_auc(auc)
    err = capsys.readouterr().err
    assert len(messages) == 1 and "thyroid / imagenet freeze fold 1 seed 0: test AUC undefined" in err
    assert "one class" in err


def test_write_results_warns_on_stderr(tmp_path, capsys, monkeypatch):
    from medtransfer.study import results

    monkeypatch.setattr(results, "collect", lambda out, configs: _aucs([0.5, np.nan]).reindex(columns=AUC_COLUMNS))
    _, table = write_results(tmp_path, [])
    assert "fold 1 seed 0: test AUC undefined" in capsys.readouterr().err
    assert "(1 of 2 runs)" in (tmp_path / "results" / "table2.md").read_text()

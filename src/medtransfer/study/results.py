"""Results tables of a study: one row per finished run (``results/auc.csv``) and the paper's
Table 2 (``results/table2.{csv,md}``, written by :mod:`medtransfer.study.table2`)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from medtransfer.study.store import write_atomic
from medtransfer.study.table2 import table2, warn_undefined_auc, write_table2
from medtransfer.training.config import RunConfig
from medtransfer.training.record import AUC_TABLE, RESULTS_DIR, RunDir, read_record, study_results_file

AUC_COLUMNS = ["target", "source", "strategy", "fold", "seed", "auc", "auc_macro", "auc_weighted", "auc_micro",
               "accuracy", "ece", "brier"]


def collect(out: Path, configs: list[RunConfig]) -> pd.DataFrame:
    """One row per finished run (columns :data:`AUC_COLUMNS`), in the order of ``configs``.

    Raises:
        DamagedRunError: a finished run's files differ in size from what it wrote.
    """
    rows = []
    for config in configs:
        run = RunDir.in_study(out, config)
        if not run.is_done():
            continue
        metrics = read_record(run, check="quick").metrics()
        row = {"target": config.target_label, "source": config.source_label, "strategy": config.strategy,
               "fold": config.fold, "seed": config.seed}
        row.update({key: metrics.get(key, math.nan) for key in AUC_COLUMNS[5:]})
        rows.append(row)
    return pd.DataFrame(rows, columns=AUC_COLUMNS)


def write_results(out: Path, configs: list[RunConfig]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write ``results/auc.csv``, ``results/table2.csv`` and ``results/table2.md``; return the
    per-run frame and Table 2's long frame (:func:`medtransfer.study.table2.table2`)."""
    out = Path(out)
    auc = collect(out, configs)
    warn_undefined_auc(auc)
    table = table2(auc)
    write_atomic(out / study_results_file(AUC_TABLE), auc.to_csv(index=False))
    write_table2(table, out / RESULTS_DIR)
    return auc, table

"""Results tables of a study: one row per finished run (``results/auc.csv``) and the paper's
Table 2 layout (``results/table2.{csv,md}``: mean +- std of test AUC x 100 per target, source
and strategy)."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import TextIO

import numpy as np
import pandas as pd

from medtransfer.console import write_line
from medtransfer.study.store import write_atomic
from medtransfer.training.config import RunConfig
from medtransfer.training.record import RunDir, read_record, study_results_file

AUC_COLUMNS = ["target", "source", "strategy", "fold", "seed", "auc", "auc_macro", "auc_weighted", "auc_micro",
               "accuracy", "ece", "brier"]


def undefined_note(used: int, runs: int) -> str:
    """The Table 2 cell suffix saying how many runs' AUCs a mean is over, when some are undefined
    (a test fold with one class only): ``" (4 of 5 runs)"``; empty when all are used."""
    return f" ({used} of {runs} runs)" if used < runs else ""


def warn_undefined_auc(aucs: pd.DataFrame, stream: TextIO | None = None) -> list[str]:
    """Say on stderr (``stream``) which runs have no test AUC (NaN/empty: their test fold holds one
    class only), so that a Table 2 mean over the other folds is not mistaken for all of them.
    ``aucs``: a frame with columns ``target, source, strategy, fold, auc`` (and optionally
    ``seed``). Returns the messages."""
    undefined = aucs[pd.to_numeric(aucs["auc"], errors="coerce").isna()] if len(aucs) else aucs
    messages = []
    for row in undefined.itertuples(index=False):
        seed = f" seed {row.seed}" if "seed" in aucs.columns else ""
        messages.append(f"warning: {row.target} / {row.source} {row.strategy} fold {row.fold}{seed}: test AUC "
                        "undefined (its test fold holds one class only); Table 2 averages the other runs "
                        "and says how many")
    for message in messages:
        write_line(stream or sys.stderr, message)
    return messages


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


def table2(auc: pd.DataFrame, metric: str = "auc") -> pd.DataFrame:
    """Mean and sample standard deviation (ddof=1) x 100 of ``metric`` over folds and seeds.

    Returns a frame indexed by target (first-seen order) with one column per ``source strategy``
    (first-seen order) holding strings ``"mean ± std"`` (one decimal; std ``-`` for one run).
    """
    if auc.empty:
        return pd.DataFrame()
    targets = list(dict.fromkeys(auc["target"]))
    cells = list(dict.fromkeys(zip(auc["source"], auc["strategy"])))
    grouped = auc.groupby(["target", "source", "strategy"], sort=False)[metric]
    stats = grouped.agg(["mean", "std", "count", "size"])
    table = pd.DataFrame(index=pd.Index(targets, name="target"))
    for source, strategy in cells:
        values = []
        for target in targets:
            key = (target, source, strategy)
            if key not in stats.index:
                values.append("")
                continue
            mean, std, count, size = stats.loc[key]
            spread = "-" if count < 2 or np.isnan(std) else f"{100 * std:.1f}"
            values.append(f"{100 * mean:.1f} ± {spread}" + undefined_note(int(count), int(size)))
        table[f"{source} {strategy}"] = values
    return table


def to_markdown(table: pd.DataFrame, title: str = "Test AUC x 100, mean ± std over folds") -> str:
    """A GitHub-flavoured Markdown table, the best mean per target in bold."""
    if table.empty:
        return f"{title}\n\n(no finished runs)\n"
    header = ["target", *table.columns]
    lines = [title, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for target, row in table.iterrows():
        means = [float(v.split(" ")[0]) if v else -math.inf for v in row]
        best = max(means)
        cells = [f"**{v}**" if v and m == best else v for v, m in zip(row, means)]
        lines.append("| " + " | ".join([str(target), *cells]) + " |")
    return "\n".join(lines) + "\n"


def write_results(out: Path, configs: list[RunConfig]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write ``results/auc.csv``, ``results/table2.csv`` and ``results/table2.md``; return both frames."""
    out = Path(out)
    auc = collect(out, configs)
    warn_undefined_auc(auc)
    table = table2(auc)
    write_atomic(out / study_results_file("auc.csv"), auc.to_csv(index=False))
    write_atomic(out / study_results_file("table2.csv"), table.to_csv())
    write_atomic(out / study_results_file("table2.md"), to_markdown(table))
    return auc, table

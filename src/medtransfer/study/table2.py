"""The paper's Table 2, its one owner: numbers, layout and files.

One row per target, one column per (source, strategy): pretrained sources in role order (each
no-freeze then freeze), then random init; each cell the mean and sample standard deviation
(ddof=1) over folds of the test AUC, both x100, and a 95% interval of the mean that stays inside
[0, 100]: a Student-t interval over folds on the logit scale, mapped back
(:func:`medtransfer.stats.logit_t_interval`; AUCs clipped to [0.001, 0.999] before the logit, since
an AUC of 1 has no finite logit). Unit: the fold (one trained model and its test part); the
interval does not correct for the overlap of the folds' training sets, so it is somewhat narrow.
The highest mean per target is marked ``best``. ``results/table2.*`` (after ``medtransfer run``)
and ``analysis/table2.*`` (after ``analyze``) are both written here, in one format.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

import numpy as np
import pandas as pd

from medtransfer.atomic import write_text_atomic
from medtransfer.console import write_line
from medtransfer.stats import logit_t_interval
from medtransfer.training.record import TABLE2_CSV, TABLE2_MD
from medtransfer.vocabulary import FREEZE, NO_FREEZE, RANDOM, STRATEGIES

COLUMNS = ["target", "source", "strategy", "mean", "std", "low", "high", "n", "runs", "best"]
#: AUCs are clipped this far inside [0, 1] before the logit of the interval.
LOGIT_FLOOR = 1e-3
INTERVAL = "95% t interval over folds on the logit scale"


def undefined_note(used: int, runs: int) -> str:
    """The cell suffix saying how many runs' AUCs a mean is over, when some are undefined
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


def default_roles(aucs: pd.DataFrame) -> tuple[tuple[str, ...], str | None]:
    """``(pretrained, random)`` when no roles are given: sources in first-seen order, ``random``
    last when present."""
    sources = list(dict.fromkeys(aucs["source"])) if len(aucs) else []
    return tuple(s for s in sources if s != RANDOM), (RANDOM if RANDOM in sources else None)


def column_order(frame: pd.DataFrame, pretrained: tuple[str, ...], random: str | None) -> list[tuple[str, str]]:
    """Table 2's columns: each pretrained source (no-freeze, freeze), then random (no-freeze)."""
    present = set(zip(frame["source"], frame["strategy"]))
    order = [(s, st) for s in pretrained for st in STRATEGIES]
    if random is not None:
        order += [(random, NO_FREEZE), (random, FREEZE)]
    order += sorted(present - set(order))
    return [c for c in order if c in present]


def table2(aucs: pd.DataFrame, pretrained: tuple[str, ...] | None = None, random: str | None = None) -> pd.DataFrame:
    """Table 2 as a long frame (:data:`COLUMNS`), AUC x100.

    ``aucs``: per run ``target, source, strategy, fold, auc`` (AUC in [0, 1]; NaN where a test fold
    holds one class). ``n`` runs with a defined AUC of ``runs``; ``low``, ``high`` the interval of
    the module notes (NaN for one fold); ``best`` the highest mean of its target, ties all marked.
    ``pretrained``/``random`` None: :func:`default_roles`.
    """
    if aucs.empty:
        return pd.DataFrame(columns=COLUMNS)
    if pretrained is None:
        pretrained, random = default_roles(aucs)
    order = column_order(aucs, tuple(pretrained), random)
    rows = []
    for target in dict.fromkeys(aucs["target"]):
        sub = aucs[aucs["target"] == target]
        for source, strategy in order:
            values = pd.to_numeric(sub[(sub["source"] == source) & (sub["strategy"] == strategy)]["auc"],
                                   errors="coerce").to_numpy(np.float64)
            runs = len(values)
            values = values[np.isfinite(values)]
            if len(values) == 0:
                continue
            std = float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
            low, high = logit_t_interval(values, floor=LOGIT_FLOOR)
            rows.append([target, source, strategy, 100.0 * float(np.mean(values)), 100.0 * std, 100.0 * low,
                         100.0 * high, len(values), runs, False])
    table = pd.DataFrame(rows, columns=COLUMNS)
    for _, sub in table.groupby("target", sort=False):
        table.loc[sub.index, "best"] = np.isclose(sub["mean"], sub["mean"].max(), rtol=0, atol=1e-12)
    return table


def format_cell(mean: float, std: float, low: float = float("nan"), high: float = float("nan")) -> str:
    """``"64.9 ± 7.2"``, with ``" [57.9, 71.0]"`` when an interval is given (one decimal; std and
    interval omitted for one fold)."""
    text = f"{mean:.1f}" if not np.isfinite(std) else f"{mean:.1f} ± {std:.1f}"
    return text + (f" [{low:.1f}, {high:.1f}]" if np.isfinite(low) and np.isfinite(high) else "")


def table2_wide(table: pd.DataFrame, interval: bool = False, mark_best: bool = True) -> pd.DataFrame:
    """Table 2 as printed: targets x ``source / strategy`` columns of formatted cells; the best in
    ``**`` (``mark_best``), the interval in brackets (``interval``); ``–`` where a cell has no run."""
    if table.empty:
        return pd.DataFrame()
    cells = []
    for r in table.itertuples(index=False):
        text = format_cell(r.mean, r.std, *((r.low, r.high) if interval else ()))
        cells.append(("**" + text + "**" if r.best and mark_best else text) + undefined_note(r.n, r.runs))
    cells = table.assign(column=table["source"] + " / " + table["strategy"], cell=cells)
    order = list(dict.fromkeys(cells["column"]))
    wide = cells.pivot(index="target", columns="column", values="cell")
    wide = wide.reindex(index=list(dict.fromkeys(cells["target"])), columns=order).fillna("–")
    wide.index.name = "target"
    wide.columns.name = None
    return wide


def to_markdown(table: pd.DataFrame) -> str:
    """Table 2 as GitHub Markdown, with a line saying what the numbers and the interval are."""
    lines = [f"Test AUC x100: mean ± std over folds [{INTERVAL}]; best mean per target in bold.", ""]
    wide = table2_wide(table, interval=True)
    if wide.empty:
        return "\n".join(lines + ["(no finished runs)"]) + "\n"
    header = ["target", *wide.columns]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join([str(target), *row.tolist()]) + " |" for target, row in wide.iterrows()]
    return "\n".join(lines) + "\n"


def write_table2(table: pd.DataFrame, out_dir: Path, caption: str = "") -> tuple[Path, Path]:
    """Write ``table2.csv`` (long, numeric: :data:`COLUMNS`) and ``table2.md`` into ``out_dir``,
    each atomically; ``caption`` (e.g. the incomplete cells of a partial analysis) ends the markdown."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = write_text_atomic(out_dir / TABLE2_CSV, table.to_csv(index=False))
    markdown = to_markdown(table) + (f"\n{caption}\n" if caption else "")
    md_path = write_text_atomic(out_dir / TABLE2_MD, markdown)
    return csv_path, md_path

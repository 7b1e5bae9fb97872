"""AUC per run recomputed from stored probabilities, and the paper's Table 2 layout.

Table 2: one row per target, one column per (source, strategy) in role order, each cell the mean
and sample standard deviation (ddof=1) over folds of the test AUC, both x100, the highest mean per
target marked ``best``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medtransfer.analysis.inventory import Study
from medtransfer.errors import DataError
from medtransfer.study.results import undefined_note, warn_undefined_auc
from medtransfer.training import metrics
from medtransfer.vocabulary import STRATEGIES

AUC_TOLERANCE = 1e-6


def read_predictions(path: Path) -> tuple[pd.Series, np.ndarray, np.ndarray]:
    """Read a ``predictions.csv`` (``image_id, label, p_0..p_{k-1}``).

    Returns ``(image_ids (n,), labels (n,) int, probs (n, k) float64)``.

    Raises:
        DataError: the file is missing or lacks those columns.
    """
    if not path.is_file():
        raise DataError(f"{path}: predictions file not found")
    frame = pd.read_csv(path, dtype={"image_id": str})
    prob_cols = [c for c in frame.columns if c.startswith("p_")]
    prob_cols.sort(key=lambda c: int(c[2:]) if c[2:].isdigit() else 10**9)
    if "image_id" not in frame or "label" not in frame or not prob_cols:
        raise DataError(f"{path}: expected columns image_id, label, p_0..p_(k-1); found {list(frame.columns)}")
    if [c for c in prob_cols] != [f"p_{i}" for i in range(len(prob_cols))]:
        raise DataError(f"{path}: probability columns must be p_0..p_{len(prob_cols) - 1}, found {prob_cols}")
    probs = frame[prob_cols].to_numpy(dtype=np.float64)
    labels = frame["label"].to_numpy()
    if not np.issubdtype(labels.dtype, np.integer) or labels.min(initial=0) < 0 or labels.max(initial=0) >= probs.shape[1]:
        raise DataError(f"{path}: labels must be integers in 0..{probs.shape[1] - 1}")
    return frame["image_id"], labels.astype(np.int64), probs


def auc_from_probs(labels: np.ndarray, probs: np.ndarray, average: str = "macro") -> float:
    """Test AUC with the training run's own definitions (``medtransfer.training.metrics``), so
    that recomputed and stored values are comparable: binary = ROC AUC of column 1; multiclass =
    one-vs-rest ROC AUC, ``average`` "macro" or "weighted", or flattened "micro".

    ``labels`` (n,) ints, ``probs`` (n, k). NaN when fewer than two classes occur.
    """
    if probs.shape[1] == 2:
        return metrics.auc_binary(labels, probs)
    if average == "micro":
        return metrics.auc_micro(labels, probs)
    return metrics.auc_ovr(labels, probs, average)


def run_aucs(study: Study, average: str = "macro") -> tuple[pd.DataFrame, list[str]]:
    """AUC of every finished run from its ``predictions.csv``, checked against ``results/auc.csv``.

    Returns ``(frame, problems)``: frame columns ``target, source, strategy, fold, auc, n_classes``
    and, where ``results/auc.csv`` has the run, ``auc_stored``; ``problems`` lists runs without
    predictions and stored AUCs that differ from the recomputed ones by more than 1e-6.
    """
    rows = []
    problems: list[str] = []
    for run in study.runs:
        try:
            _, labels, probs = read_predictions(run.predictions)
        except DataError as error:
            problems.append(f"{run.run_id}: {error}")
            continue
        rows.append(
            {
                "target": run.target,
                "source": run.source,
                "strategy": run.strategy,
                "fold": run.fold,
                "auc": auc_from_probs(labels, probs, average),
                "n_classes": probs.shape[1],
            }
        )
    frame = pd.DataFrame(rows, columns=["target", "source", "strategy", "fold", "auc", "n_classes"])
    problems += [m.removeprefix("warning: ") for m in warn_undefined_auc(frame)]
    stored_path = study.root / "results" / "auc.csv"
    if stored_path.is_file() and len(frame):
        stored = pd.read_csv(stored_path)
        keys = ["target", "source", "strategy", "fold"]
        if set(keys + ["auc"]) <= set(stored.columns):
            column = f"auc_{average}"
            cols = keys + ["auc"] + ([column] if column in stored.columns else [])
            merged = frame.merge(stored[cols].rename(columns={"auc": "_auc", column: "_avg"}), on=keys, how="left")
            multiclass = merged["n_classes"] > 2
            stored_value = merged["_auc"]
            if "_avg" in merged:
                stored_value = stored_value.where(~multiclass, merged["_avg"])
            frame["auc_stored"] = stored_value.to_numpy()
            diff = (frame["auc"] - frame["auc_stored"]).abs()
            for i in np.flatnonzero(diff.to_numpy() > AUC_TOLERANCE):
                r = frame.iloc[i]
                problems.append(
                    f"{r.target}/{r.source}-{r.strategy}/fold{r.fold}: results/auc.csv says {r.auc_stored:.6f}, "
                    f"predictions.csv gives {r.auc:.6f}"
                )
        else:
            problems.append(f"{stored_path}: lacks columns {keys + ['auc']}; AUCs were not cross-checked")
    return frame, problems


def column_order(frame: pd.DataFrame, pretrained: tuple[str, ...], random: str | None) -> list[tuple[str, str]]:
    """Table 2's columns: each pretrained source (no-freeze, freeze), then random (no-freeze)."""
    present = set(zip(frame["source"], frame["strategy"]))
    order = [(s, st) for s in pretrained for st in STRATEGIES]
    if random is not None:
        order += [(random, "no-freeze"), (random, "freeze")]
    order += sorted(present - set(order))
    return [c for c in order if c in present]


def table2(aucs: pd.DataFrame, pretrained: tuple[str, ...], random: str | None) -> pd.DataFrame:
    """Mean and std (ddof=1) over folds of AUC x100 per target and (source, strategy).

    Returns a long frame ``target, source, strategy, mean, std, n, runs, best``: ``n`` runs with a
    defined AUC of ``runs`` (a test fold with one class has none), ``best`` the highest mean of
    its target, ties all marked; columns in Table 2's order, targets in first-seen order.
    """
    columns = ["target", "source", "strategy", "mean", "std", "n", "runs", "best"]
    if aucs.empty:
        return pd.DataFrame(columns=columns)
    order = column_order(aucs, pretrained, random)
    rows = []
    for target in dict.fromkeys(aucs["target"]):
        sub = aucs[aucs["target"] == target]
        for source, strategy in order:
            values = 100.0 * sub[(sub["source"] == source) & (sub["strategy"] == strategy)]["auc"].to_numpy(np.float64)
            runs = len(values)
            values = values[np.isfinite(values)]
            if len(values) == 0:
                continue
            std = float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
            rows.append([target, source, strategy, float(np.mean(values)), std, len(values), runs, False])
    table = pd.DataFrame(rows, columns=columns)
    for target, sub in table.groupby("target", sort=False):
        best = sub["mean"].max()
        table.loc[sub.index, "best"] = np.isclose(sub["mean"], best, rtol=0, atol=1e-12)
    return table


def format_cell(mean: float, std: float) -> str:
    """``"64.9 ± 7.2"`` (one decimal, std omitted for one fold)."""
    return f"{mean:.1f}" if not np.isfinite(std) else f"{mean:.1f} ± {std:.1f}"


def table2_wide(table: pd.DataFrame) -> pd.DataFrame:
    """Table 2 as printed: targets x ``source / strategy`` columns of formatted cells; best in ``**``."""
    if table.empty:
        return pd.DataFrame()
    cells = table.assign(
        column=table["source"] + " / " + table["strategy"],
        cell=[(("**" + format_cell(m, s) + "**") if b else format_cell(m, s)) + undefined_note(n, r)
              for m, s, b, n, r in zip(table["mean"], table["std"], table["best"], table["n"], table["runs"])],
    )
    order = list(dict.fromkeys(cells["column"]))
    wide = cells.pivot(index="target", columns="column", values="cell")
    wide = wide.reindex(index=list(dict.fromkeys(cells["target"])), columns=order).fillna("–")
    wide.index.name = "target"
    wide.columns.name = None
    return wide


def write_table2(table: pd.DataFrame, out_dir: Path) -> tuple[Path, Path]:
    """Write ``table2.csv`` (long, numeric) and ``table2.md`` (wide, best in bold) into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out_dir / "table2.csv", out_dir / "table2.md"
    table.to_csv(csv_path, index=False)
    wide = table2_wide(table)
    lines = ["Mean AUC ± std (both x100) over folds; best mean per target in bold.", ""]
    if not wide.empty:
        header = ["target", *wide.columns]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        for target, row in wide.iterrows():
            lines.append("| " + " | ".join([str(target), *row.tolist()]) + " |")
    md_path.write_text("\n".join(lines) + "\n")
    return csv_path, md_path

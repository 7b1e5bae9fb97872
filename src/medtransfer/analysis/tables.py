"""AUC per run recomputed from stored probabilities (``analysis/auc.csv``), checked against what
the runs stored. Table 2 itself is :mod:`medtransfer.study.table2`'s.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medtransfer.analysis.inventory import Study
from medtransfer.errors import DataError
from medtransfer.study.table2 import warn_undefined_auc
from medtransfer.training import metrics
from medtransfer.training.record import AUC_TABLE, study_results_file

AUC_TOLERANCE = 1e-6


def _read_csv(path: Path, **options) -> pd.DataFrame:
    """``pd.read_csv`` with a file that is no CSV (binary, empty, ragged) as a ``DataError`` naming it."""
    try:
        return pd.read_csv(path, **options)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as error:
        raise DataError(f"{path}: not a readable CSV ({type(error).__name__}: {error})") from error


def read_predictions(path: Path) -> tuple[pd.Series, np.ndarray, np.ndarray]:
    """Read a ``predictions.csv`` (``image_id, label, p_0..p_{k-1}``).

    Returns ``(image_ids (n,), labels (n,) int, probs (n, k) float64)``.

    Raises:
        DataError: the file is missing or lacks those columns.
    """
    if not path.is_file():
        raise DataError(f"{path}: predictions file not found")
    frame = _read_csv(path, dtype={"image_id": str})
    prob_cols = [c for c in frame.columns if c.startswith("p_")]
    prob_cols.sort(key=lambda c: int(c[2:]) if c[2:].isdigit() else 10**9)
    if "image_id" not in frame or "label" not in frame or not prob_cols:
        raise DataError(f"{path}: expected columns image_id, label, p_0..p_(k-1); found {list(frame.columns)}")
    if [c for c in prob_cols] != [f"p_{i}" for i in range(len(prob_cols))]:
        raise DataError(f"{path}: probability columns must be p_0..p_{len(prob_cols) - 1}, found {prob_cols}")
    try:
        probs = frame[prob_cols].to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise DataError(f"{path}: probability columns hold values that are not numbers ({error})") from error
    if not np.all(np.isfinite(probs) & (probs >= 0) & (probs <= 1)):
        row = int(np.flatnonzero(~np.all(np.isfinite(probs) & (probs >= 0) & (probs <= 1), axis=1))[0])
        raise DataError(f"{path}: line {row + 2}: probabilities must be finite numbers in [0, 1], "
                        f"found {probs[row].tolist()}")
    labels = frame["label"].to_numpy()
    if not np.issubdtype(labels.dtype, np.integer) or labels.min(initial=0) < 0 or labels.max(initial=0) >= probs.shape[1]:
        raise DataError(f"{path}: labels must be integers in 0..{probs.shape[1] - 1}")
    return frame["image_id"], labels.astype(np.int64), probs


auc_from_probs = metrics.headline_auc  # the runs' own rule, so recomputed and stored AUCs compare


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
    stored_path = study.root / study_results_file(AUC_TABLE)
    if stored_path.is_file() and len(frame):
        keys = ["target", "source", "strategy", "fold"]
        try:
            stored = _read_csv(stored_path)
        except DataError as error:
            problems.append(f"{error}; AUCs were not cross-checked")
            stored = pd.DataFrame()
        numbers = [c for c in ("fold", "auc", f"auc_{average}") if c in stored.columns]
        unreadable = [c for c in numbers if pd.to_numeric(stored[c], errors="coerce").isna().ne(stored[c].isna()).any()]
        if unreadable:
            problems.append(f"{stored_path}: column(s) {unreadable} hold values that are not numbers; "
                            "AUCs were not cross-checked")
        elif stored.empty:
            pass
        elif set(keys) <= set(stored.columns) and stored.duplicated(keys).any():
            twice = stored.loc[stored.duplicated(keys), keys].iloc[0].tolist()
            problems.append(f"{stored_path}: lists a run twice (e.g. {'/'.join(map(str, twice))}); "
                            "AUCs were not cross-checked")
        elif set(keys + ["auc"]) <= set(stored.columns):
            stored = stored.astype({c: "float64" for c in numbers if c != "fold"})
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

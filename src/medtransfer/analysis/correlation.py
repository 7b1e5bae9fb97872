"""Figure 6's question with numbers: does the AUC gained over random init correlate with how much
of a layer's representation survives fine-tuning?

x = CCA between a fine-tuned model and its initialisation at one layer (``ft_vs_init`` rows of
``similarity.csv``); y = relative AUC gain over the random-init run of the same target and fold,
(AUC_FT - AUC_random) / AUC_random. ``gain_points.csv`` holds one point per target and fold
(``ci_low``/``ci_high``: the point's CCA image-bootstrap interval).

The correlation (``correlation.csv``) is across targets: the unit of independence is the target,
so by default each target contributes one point, its means of x and y over folds (and, for
``strategy = "all"``, over both strategies). Folds of one target share their data and most of
their training images: per-fold points (``points="fold"``) are offered only as an explicit option,
labelled not independent in the ``unit`` column, and their p-values are not valid tests. For each
source, strategy and layer: Pearson r and Spearman rho, each with a two-sided permutation p-value
(exact over all n! orderings up to :data:`medtransfer.stats.EXACT_PERMUTATION_MAX_N` points, Monte
Carlo above; never 0) and a Fisher-z 95% interval from
:data:`medtransfer.stats.MIN_N_CORRELATION_INTERVAL` points on (below, NaN and a note saying "n too
small"). With 3 points a perfect rank correlation has p = 1/3.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from medtransfer import stats
from medtransfer.errors import MedtransferError
from medtransfer.study.sweep import split_label
from medtransfer.vocabulary import NO_FREEZE

GAIN_COLUMNS = ["target", "fold", "source", "strategy", "layer", "cca", "gain", "ci_low", "ci_high"]
STAT_COLUMNS = [
    "source", "strategy", "layer", "n",
    "pearson_r", "pearson_p", "pearson_low", "pearson_high",
    "spearman_rho", "spearman_p", "spearman_low", "spearman_high", "test", "unit", "note",
]
#: What one point of the correlation is, per ``points`` option (the ``unit`` column).
UNITS = {
    "target": "target (mean over folds)",
    "fold": "fold (NOT independent: folds of one target share data; p-values are not valid tests)",
}


def gain_points(similarity: pd.DataFrame, aucs: pd.DataFrame, random: str | None, measure: str = "cca") -> pd.DataFrame:
    """Figure 6's points: one per (target, fold, source, strategy, layer) with a random-init run.

    ``similarity`` is ``similarity.csv``'s frame, ``aucs`` the per-run AUCs (``run_aucs``).
    """
    if random is None or similarity.empty or aucs.empty:
        return pd.DataFrame(columns=GAIN_COLUMNS)
    sim = similarity[(similarity["kind"] == "ft_vs_init") & (similarity["measure"] == measure) & (similarity["source"] != random)]
    base = aucs[(aucs["source"] == random) & (aucs["strategy"] == NO_FREEZE)][["target", "fold", "auc"]]
    base = base.rename(columns={"auc": "auc_random"})
    merged = sim.merge(aucs[["target", "fold", "source", "strategy", "auc"]], on=["target", "fold", "source", "strategy"])
    merged = merged.merge(base, on=["target", "fold"])
    merged["gain"] = (merged["auc"] - merged["auc_random"]) / merged["auc_random"]
    merged = merged.rename(columns={"mean": "cca"})
    for column in ("ci_low", "ci_high"):  # the CCA's image-bootstrap interval, where similarity.csv has it
        if column not in merged:
            merged[column] = np.nan
    return merged[GAIN_COLUMNS].reset_index(drop=True)


def correlation(x: np.ndarray, y: np.ndarray, permutations: int = 9999, seed: int = 0, level: float = 0.95) -> dict:
    """Pearson and Spearman correlation of paired points ``x``, ``y`` (n,) with permutation p-values
    and Fisher-z intervals (:func:`medtransfer.stats.permutation_correlation`); the keys of
    :data:`STAT_COLUMNS` from ``n`` to ``note``. NaN where undefined (n < 3, a constant variable)
    and, for the intervals, below :data:`medtransfer.stats.MIN_N_CORRELATION_INTERVAL` points."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    pr = stats.permutation_correlation(x[keep], y[keep], "pearson", permutations, seed, level)
    sr = stats.permutation_correlation(x[keep], y[keep], "spearman", permutations, seed, level)
    return {"n": int(keep.sum()), "pearson_r": pr.statistic, "pearson_p": pr.p_value, "pearson_low": pr.low,
            "pearson_high": pr.high, "spearman_rho": sr.statistic, "spearman_p": sr.p_value, "spearman_low": sr.low,
            "spearman_high": sr.high, "test": "permutation (exact up to "
            f"{stats.EXACT_PERMUTATION_MAX_N} points, else Monte Carlo); Fisher-z interval", "note": sr.note}


def target_means(points: pd.DataFrame) -> pd.DataFrame:
    """One point per (target, source, strategy, layer): the means of ``cca`` and ``gain`` over folds
    (and over the settings of a sweep: a target at two settings is one unit, ``thyroid~lr=0.0001``
    and ``thyroid`` are one target here)."""
    keys = ["target", "source", "strategy", "layer"]
    points = points.assign(target=points["target"].map(lambda t: split_label(t)[0]))
    return points.groupby(keys, sort=False)[["cca", "gain"]].mean().reset_index()


def correlation_table(points: pd.DataFrame, permutations: int = 9999, seed: int = 0, by: str = "target") -> pd.DataFrame:
    """Statistics (:data:`STAT_COLUMNS`) per (source, strategy, layer) and per (source, ``"all"``,
    layer). ``by``: ``"target"`` (default: one point per target, means over folds and, for
    ``"all"``, over strategies) or ``"fold"`` (one point per target and fold: not independent, see
    the module notes)."""
    if by not in UNITS:
        raise MedtransferError(f"analysis.correlation_points must be one of {sorted(UNITS)}, got {by!r}")
    rows = []
    if points.empty:
        return pd.DataFrame(columns=STAT_COLUMNS)
    layers = list(dict.fromkeys(points["layer"]))
    for source in dict.fromkeys(points["source"]):
        sub = points[points["source"] == source]
        groups = [(st, sub[sub["strategy"] == st]) for st in dict.fromkeys(sub["strategy"])]
        if len(groups) > 1:
            groups.append(("all", sub.assign(strategy="all")))
        for strategy, group in groups:
            if by == "target":
                group = target_means(group)
            for layer in layers:
                g = group[group["layer"] == layer]
                if g.empty:
                    continue
                res = correlation(g["cca"].to_numpy(), g["gain"].to_numpy(), permutations, seed)
                rows.append({"source": source, "strategy": strategy, "layer": layer, **res, "unit": UNITS[by]})
    return pd.DataFrame(rows, columns=STAT_COLUMNS)

"""Figure 6's question with numbers: does the AUC gained over random init correlate with how much
of a layer's representation survives fine-tuning?

x = CCA between a fine-tuned model and its initialisation at one layer (``ft_vs_init`` rows of
``similarity.csv``); y = relative AUC gain over the random-init run of the same target and fold,
(AUC_FT - AUC_random) / AUC_random. One point per target and fold; ``ci_low``/``ci_high`` carry
the point's CCA image-bootstrap interval. For each source, strategy
(and both strategies pooled, ``"all"``) and layer: Pearson r and Spearman rho with their p-values
(scipy) and percentile bootstrap 95% confidence intervals (points resampled in pairs).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import stats

GAIN_COLUMNS = ["target", "fold", "source", "strategy", "layer", "cca", "gain", "ci_low", "ci_high"]
STAT_COLUMNS = [
    "source", "strategy", "layer", "n",
    "pearson_r", "pearson_p", "pearson_low", "pearson_high",
    "spearman_rho", "spearman_p", "spearman_low", "spearman_high",
]


def gain_points(similarity: pd.DataFrame, aucs: pd.DataFrame, random: str | None, measure: str = "cca") -> pd.DataFrame:
    """Figure 6's points: one per (target, fold, source, strategy, layer) with a random-init run.

    ``similarity`` is ``similarity.csv``'s frame, ``aucs`` the per-run AUCs (``run_aucs``).
    """
    if random is None or similarity.empty or aucs.empty:
        return pd.DataFrame(columns=GAIN_COLUMNS)
    sim = similarity[(similarity["kind"] == "ft_vs_init") & (similarity["measure"] == measure) & (similarity["source"] != random)]
    base = aucs[(aucs["source"] == random) & (aucs["strategy"] == "no-freeze")][["target", "fold", "auc"]]
    base = base.rename(columns={"auc": "auc_random"})
    merged = sim.merge(aucs[["target", "fold", "source", "strategy", "auc"]], on=["target", "fold", "source", "strategy"])
    merged = merged.merge(base, on=["target", "fold"])
    merged["gain"] = (merged["auc"] - merged["auc_random"]) / merged["auc_random"]
    merged = merged.rename(columns={"mean": "cca"})
    for column in ("ci_low", "ci_high"):  # the CCA's image-bootstrap interval, where similarity.csv has it
        if column not in merged:
            merged[column] = np.nan
    return merged[GAIN_COLUMNS].reset_index(drop=True)


def _pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r of each row pair of ``x``, ``y`` (B, n); NaN where a row is constant."""
    xc = x - x.mean(axis=1, keepdims=True)
    yc = y - y.mean(axis=1, keepdims=True)
    den = np.sqrt((xc * xc).sum(axis=1) * (yc * yc).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (xc * yc).sum(axis=1) / den
    return np.where(den > 0, r, np.nan)


def correlation(x: np.ndarray, y: np.ndarray, resamples: int = 2000, seed: int = 0, level: float = 0.95) -> dict[str, float]:
    """Pearson and Spearman correlation of paired samples ``x``, ``y`` (n,), with bootstrap CIs.

    Returns keys ``n, pearson_r, pearson_p, pearson_low, pearson_high, spearman_rho, spearman_p,
    spearman_low, spearman_high``; NaN where undefined (n < 3 or a constant variable). The CI is
    the percentile interval of ``resamples`` paired bootstrap resamples (constant resamples dropped).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = len(x)
    out = {k: float("nan") for k in STAT_COLUMNS[4:]}
    out["n"] = n
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pr = stats.pearsonr(x, y)
        sr = stats.spearmanr(x, y)
    out["pearson_r"], out["pearson_p"] = float(pr.statistic), float(pr.pvalue)
    out["spearman_rho"], out["spearman_p"] = float(sr.statistic), float(sr.pvalue)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(resamples, n))
    xs, ys = x[idx], y[idx]
    boot_p = _pearson_rows(xs, ys)
    boot_s = _pearson_rows(stats.rankdata(xs, axis=1), stats.rankdata(ys, axis=1))
    tail = 100 * (1 - level) / 2
    for name, boot in (("pearson", boot_p), ("spearman", boot_s)):
        finite = boot[np.isfinite(boot)]
        if len(finite):
            out[f"{name}_low"], out[f"{name}_high"] = (float(v) for v in np.percentile(finite, [tail, 100 - tail]))
    return out


def correlation_table(points: pd.DataFrame, resamples: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Statistics per (source, strategy, layer) and per (source, ``"all"``, layer)."""
    rows = []
    if points.empty:
        return pd.DataFrame(columns=STAT_COLUMNS)
    layers = list(dict.fromkeys(points["layer"]))
    for source in dict.fromkeys(points["source"]):
        sub = points[points["source"] == source]
        groups = [(st, sub[sub["strategy"] == st]) for st in dict.fromkeys(sub["strategy"])]
        if len(groups) > 1:
            groups.append(("all", sub))
        for strategy, group in groups:
            for layer in layers:
                g = group[group["layer"] == layer]
                if g.empty:
                    continue
                res = correlation(g["cca"].to_numpy(), g["gain"].to_numpy(), resamples, seed)
                rows.append({"source": source, "strategy": strategy, "layer": layer, **res})
    return pd.DataFrame(rows, columns=STAT_COLUMNS)

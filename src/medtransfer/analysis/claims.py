"""The paper's four claims (sections 5.1-5.4), each stated as a test at its unit of independence:
``analysis/claims.csv`` and the report's first section.

For two pretrained sources a and b (the study's ``analysis: sources:`` pair, else the first two):

1. **Sources (5.1)**: "a outperforms b". Per target and strategy, the mean over folds of the
   paired AUC difference (x100) with the Nadeau-Bengio corrected resampled t-test (unit: the fold;
   the correction uses the fold spec's n_test / n_train) and, where the target is binary and each
   image is tested once, DeLong's test on the pooled out-of-fold predictions (unit: the test image,
   models fixed). Holm across targets, per strategy and test. Across targets: the exact Wilcoxon
   signed-rank test of the per-target mean differences (unit: the target; Demsar 2006).
2. **Representations diverge (5.2)**: "a-FT and b-FT are less similar than a and b". Per target,
   strategy, layer and measure, after minus before on the same stimuli with a paired image
   bootstrap stratified by fold (:mod:`medtransfer.analysis.divergence`); Holm across the layers,
   strategies and measures of a target.
3. **Similar mistakes (5.3)**: "a-FT and b-FT agree on mistakes more than independent models".
   Per target and comparison, agreement minus the independent baseline pooled over folds, with an
   image bootstrap stratified by fold and a permutation test within fold and class
   (:func:`medtransfer.stats.agreement_excess`); Holm across targets per comparison.
4. **Similarity vs gain (5.4)**: "higher CCA(FT, init) goes with less AUC gain over random init"
   (the text: no positive association). Per source, strategy and layer, Spearman's rho across
   targets (one point per target: its means over folds) with an exact permutation p-value;
   Holm across layers per source and strategy.

5. **Robustness** (beyond the paper, its section 6.3): "a is more robust to image corruptions than
   b". Per target and strategy, the mean over folds of the paired difference of the relative AUC
   drop under corruption (``100 (clean - mCA) / clean``, :mod:`medtransfer.analysis.robustness`;
   both sources see the same corrupted images) with the Nadeau-Bengio corrected resampled t-test
   (unit: the fold); Holm across targets per strategy; across targets the exact Wilcoxon test of
   the per-target means (unit: the target). Only for studies evaluated under corruptions.

Each row's ``sentence`` reads supported / contradicted / inconclusive at :data:`ALPHA` on the
adjusted p-value; "n too small" where a test cannot be run (e.g. the across-target tests with one
target).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd

from medtransfer import stats
from medtransfer.analysis.inventory import Study
from medtransfer.analysis.pairs import Roles
from medtransfer.analysis.predictions import FINE_TUNED
from medtransfer.analysis.tables import read_predictions
from medtransfer.errors import DataError
from medtransfer.similarity.registry import get as get_measure
from medtransfer.study.sweep import labelled, split_label
from medtransfer.training.metrics import binary_scores
from medtransfer.vocabulary import STRATEGIES

ALPHA = 0.05
ALL_TARGETS = "all targets"
COLUMNS = [
    "claim", "target", "source_a", "source_b", "strategy", "layer", "measure", "statistic", "unit", "low", "high",
    "p_value", "p_adjusted", "test", "n", "correction", "verdict", "sentence",
]
CLAIMS = {
    1: "5.1 sources",
    2: "5.2 representations diverge",
    3: "5.3 similar mistakes",
    4: "5.4 similarity vs gain",
}
# beyond the paper's four: tested only where the study was evaluated for it (medtransfer evaluate)
ROBUSTNESS = "robustness"
_NAMES = {**CLAIMS, 5: ROBUSTNESS}


def verdict(statistic: float, p: float, expected_sign: int, note: str = "") -> str:
    """``supported`` (significant at :data:`ALPHA` in the claimed direction), ``contradicted``
    (significant the other way), ``inconclusive``, or ``n too small`` (no p-value)."""
    if not np.isfinite(p):
        return "n too small" if "too small" in note or not note else "inconclusive"
    if p < ALPHA and np.isfinite(statistic) and statistic != 0:
        return "supported" if np.sign(statistic) == expected_sign else "contradicted"
    return "inconclusive"


def _row(claim: int, target: str, a: str, b: str, strategy: str, result: stats.TestResult, unit: str,
         layer: str = "", measure: str = "") -> dict:
    return {"claim": _NAMES[claim], "target": target, "source_a": a, "source_b": b, "strategy": strategy,
            "layer": layer, "measure": measure, "statistic": result.statistic, "unit": unit, "low": result.low,
            "high": result.high, "p_value": result.p_value, "test": result.test, "n": result.n, "note": result.note}


def _adjust(rows: list[dict], family: Callable[[dict], tuple]) -> None:
    """Holm-adjust ``p_value`` within each family (rows with equal ``family(row)``), in place."""
    families: dict[tuple, list[dict]] = {}
    for r in rows:
        families.setdefault(family(r), []).append(r)
    for members in families.values():
        adjusted = stats.holm([r["p_value"] for r in members])
        size = int(np.isfinite([r["p_value"] for r in members]).sum())
        for r, p in zip(members, adjusted):
            r["p_adjusted"] = float(p)
            if not np.isfinite(r["p_value"]):
                r["correction"] = "none (not tested)"
            else:
                r["correction"] = f"Holm over {size} tests" if size > 1 else "none (one test in its family)"


def fold_test_train_ratio(study: Study, target: str) -> float:
    """n_test / n_train of one fold of ``target``, from its runs' fold spec (``split_fractions``)."""
    run = next(r for r in study.runs if r.target == target)
    train, _, test = run.config.split_fractions
    return float(test) / float(train)


def _pooled_scores(study: Study, target: str, source: str, strategy: str) -> pd.DataFrame | None:
    """Out-of-fold positive-class scores of a binary target, pooled over folds (image_id, label, score, fold)."""
    frames = []
    for fold in study.folds(target):
        run = study.run(target, source, strategy, fold)
        if run is None:
            return None
        ids, labels, probs = read_predictions(run.predictions)
        if probs.shape[1] != 2:
            return None
        frames.append(pd.DataFrame({"image_id": ids.to_numpy(), "label": labels, "score": binary_scores(probs),
                                    "fold": fold}))
    return pd.concat(frames, ignore_index=True) if frames else None


def source_claim(study: Study, aucs: pd.DataFrame, a: str, b: str) -> list[dict]:
    """Claim 1 rows: per target and strategy the corrected t-test and DeLong; across targets Wilcoxon."""
    rows: list[dict] = []
    unit = "AUC x100, a - b"
    for strategy in STRATEGIES:
        per_target: dict[str, list[float]] = {}  # per setting label (a sweep's): targets at one setting
        for target in dict.fromkeys(aucs["target"]):
            sub = aucs[(aucs["target"] == target) & (aucs["strategy"] == strategy)]
            sub = sub.groupby(["source", "fold"], as_index=False)["auc"].mean()  # several seeds: one value per fold
            pair = sub[sub["source"] == a].merge(sub[sub["source"] == b], on="fold", suffixes=("_a", "_b"))
            if pair.empty:
                continue
            diff = 100.0 * (pair["auc_a"] - pair["auc_b"]).to_numpy(np.float64)
            nb = stats.corrected_resampled_t(diff, fold_test_train_ratio(study, target), bounds=(-100.0, 100.0))
            rows.append(_row(1, target, a, b, strategy, nb, unit + ", mean over folds"))
            setting = split_label(target)[1]
            per_target.setdefault(setting, [])
            if np.isfinite(nb.statistic):
                per_target[setting].append(nb.statistic)
            rows.append(_row(1, target, a, b, strategy, _delong_pooled(study, target, a, b, strategy),
                             unit + ", pooled out-of-fold"))
        # one point per target: the settings of a sweep are tested apart (a target at two settings is
        # one unit, not two)
        for setting, means in (per_target or {"": []}).items():
            wil = stats.wilcoxon_exact(means)
            rows.append(_row(1, labelled(ALL_TARGETS, setting), a, b, strategy, wil,
                             unit + ", Hodges-Lehmann over per-target means"))
    _adjust(rows, lambda r: (r["strategy"], r["test"], split_label(r["target"])[0] == ALL_TARGETS))
    return rows


def _delong_pooled(study: Study, target: str, a: str, b: str, strategy: str) -> stats.TestResult:
    name = "DeLong (pooled out-of-fold)"
    try:
        sa, sb = _pooled_scores(study, target, a, strategy), _pooled_scores(study, target, b, strategy)
    except DataError as error:
        return stats.TestResult(math.nan, math.nan, math.nan, math.nan, name, 0, note=f"not computed: {error}")
    if sa is None or sb is None:
        return stats.TestResult(math.nan, math.nan, math.nan, math.nan, name, 0,
                                note="not applicable: needs a binary target and both sources in every fold")
    if not sa["image_id"].is_unique:
        return stats.TestResult(math.nan, math.nan, math.nan, math.nan, name, len(sa),
                                note="not applicable: an image is tested in more than one fold")
    merged = sa.merge(sb, on=["image_id", "fold"], suffixes=("_a", "_b"))
    if len(merged) != len(sa) or not (merged["label_a"] == merged["label_b"]).all():
        return stats.TestResult(math.nan, math.nan, math.nan, math.nan, name, len(sa),
                                note="not applicable: the two sources' test images differ")
    result = stats.delong(merged["label_a"].to_numpy(), merged["score_a"].to_numpy(), merged["score_b"].to_numpy())
    return stats.TestResult(100.0 * result.statistic, 100.0 * result.low, 100.0 * result.high, result.p_value, name,
                            result.n, note=result.note)


def divergence_claim(divergence: pd.DataFrame, a: str, b: str) -> list[dict]:
    """Claim 2 rows from :func:`medtransfer.analysis.divergence.combine`'s frame."""
    rows = []
    for r in divergence.itertuples(index=False):
        result = stats.TestResult(r.difference, r.low, r.high, r.p_value,
                                  "paired image bootstrap, stratified by fold", int(r.folds))
        rows.append(_row(2, r.target, a, b, r.strategy, result,
                         f"{r.measure} after - before fine-tuning, mean over folds (n: folds)", r.layer, r.measure))
    _adjust(rows, lambda r: (r["target"],))
    return rows


def mistakes_claim(images: pd.DataFrame, a: str, b: str, resamples: int, permutations: int, seed: int) -> list[dict]:
    """Claim 3 rows: per target and comparison, the pooled agreement excess and its test."""
    rows = []
    sub = images[(images["source_a"] == a) & (images["source_b"] == b)]
    for i, ((target, comparison, strategy), g) in enumerate(sub.groupby(["target", "comparison", "strategy"], sort=False)):
        result = stats.agreement_excess(g["correct_a"].to_numpy(bool), g["correct_b"].to_numpy(bool),
                                        g["fold"].to_numpy(), g["label"].to_numpy(), resamples, permutations, seed + i)
        label = strategy if comparison == FINE_TUNED else f"{comparison} ({strategy} probes)"
        rows.append(_row(3, target, a, b, label, result, "agreement - independent baseline, pooled over folds"))
    _adjust(rows, lambda r: (r["strategy"],))
    return rows


def gain_claim(correlation: pd.DataFrame, sources: tuple[str, ...]) -> list[dict]:
    """Claim 4 rows from ``correlation.csv``'s frame: Spearman's rho across targets per source,
    strategy and layer, for the two sources of the claims."""
    rows = []
    chosen = correlation[correlation["source"].isin(sources)]
    for (source, strategy), family in chosen.groupby(["source", "strategy"], sort=False):
        if (family["n"] < 3).all():  # one row, not one per layer, when no layer has enough targets
            result = stats.TestResult(math.nan, math.nan, math.nan, math.nan, "Spearman, permutation", int(family["n"].max()),
                                      note=f"n too small: {int(family['n'].max())} target(s), a correlation needs 3")
            rows.append(_row(4, ALL_TARGETS, source, "", strategy, result, "rho(CCA(FT, init), AUC gain)", "all layers",
                             "cca"))
            chosen = chosen.drop(family.index)
    for r in chosen.itertuples(index=False):
        result = stats.TestResult(r.spearman_rho, r.spearman_low, r.spearman_high, r.spearman_p,
                                  "Spearman, " + str(r.test), int(r.n), note=str(r.note) if isinstance(r.note, str) else "")
        row = _row(4, ALL_TARGETS, r.source, "", r.strategy, result, f"rho(CCA(FT, init), AUC gain); points: {r.unit}",
                   r.layer, "cca")
        rows.append(row)
    _adjust(rows, lambda r: (r["source_a"], r["strategy"]))
    return rows


def robustness_claim(study: Study, runs: pd.DataFrame, a: str, b: str) -> list[dict]:
    """Claim "robustness" rows from :func:`medtransfer.analysis.robustness.mca_runs`' frame: per
    target and strategy the corrected t-test of drop(a) - drop(b) over folds; across targets Wilcoxon."""
    rows: list[dict] = []
    unit = "relative AUC drop under corruption (% of clean), a - b"
    for strategy in STRATEGIES:
        per_target = []
        for target in dict.fromkeys(runs["target"]):
            sub = runs[(runs["target"] == target) & (runs["strategy"] == strategy)]
            sub = sub.groupby(["source", "fold"], as_index=False)["drop"].mean()  # seeds: one value per fold
            pair = sub[sub["source"] == a].merge(sub[sub["source"] == b], on="fold", suffixes=("_a", "_b"))
            if pair.empty:
                continue
            diff = (pair["drop_a"] - pair["drop_b"]).to_numpy(np.float64)
            nb = stats.corrected_resampled_t(diff, fold_test_train_ratio(study, target))
            rows.append(_row(5, target, a, b, strategy, nb, unit + ", mean over folds"))
            if np.isfinite(nb.statistic):
                per_target.append(nb.statistic)
        if per_target:
            wil = stats.wilcoxon_exact(per_target)
            rows.append(_row(5, ALL_TARGETS, a, b, strategy, wil, unit + ", Hodges-Lehmann over per-target means"))
    _adjust(rows, lambda r: (r["strategy"], r["target"] == ALL_TARGETS))
    return rows


def _sentence(row: dict) -> tuple[str, str]:
    """The verdict and a sentence for one row."""
    claim = row["claim"]
    p = row.get("p_adjusted", row["p_value"])
    note = row.get("note", "")
    a, b = row["source_a"], row["source_b"]
    if claim == CLAIMS[1]:
        word, sign = f"{a} outperforms {b}", 1
    elif claim == CLAIMS[2]:
        higher = get_measure(row["measure"]).higher_is_similar
        word, sign = f"{a} and {b} are less similar after fine-tuning ({row['strategy']}) at {row['layer']}", \
            -1 if higher else 1
    elif claim == CLAIMS[3]:
        word, sign = f"{a} and {b} ({row['strategy']}) agree on mistakes more than independent models", 1
    elif claim == ROBUSTNESS:
        word, sign = f"{a} is more robust to image corruptions than {b} ({row['strategy']}): a smaller AUC drop", -1
    else:
        word, sign = (f"higher CCA({a}-FT, {a}) at {row['layer']} goes with less AUC gain ({row['strategy']})", -1)
    word += f" [{row['test']}]"
    v = verdict(row["statistic"], p, sign, note)
    control = row.get("correction", "")
    if v == "n too small":
        text = f"{word}: not tested ({note or 'n too small: n = ' + str(row['n'])})."
    elif v == "inconclusive":
        text = (f"{word}: inconclusive at alpha {ALPHA} ({control}; adjusted p = {p:.3g})"
                + (" - no evidence of an association either way, which does not show its absence" if claim == CLAIMS[4]
                   else "") + ".") if np.isfinite(p) else f"{word}: inconclusive ({note})."
    else:
        text = f"{word}: {v} at alpha {ALPHA} ({control}; adjusted p = {p:.3g})."
    return v, text


def claims_table(study: Study, role_map: Roles, aucs: pd.DataFrame, images: pd.DataFrame, divergence: pd.DataFrame,
                 correlation: pd.DataFrame, resamples: int = 2000, permutations: int = 2000,
                 seed: int = 0, robustness: pd.DataFrame | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Every claim's rows (:data:`COLUMNS`), and what could not be tested at all. ``robustness``:
    :func:`medtransfer.analysis.robustness.mca_runs`' frame (no robustness claim when empty)."""
    missing = []
    if len(role_map.pretrained) < 2:
        return pd.DataFrame(columns=COLUMNS), ["claims need two pretrained sources; the study has "
                                               f"{', '.join(role_map.pretrained) or 'none'}"]
    a, b = role_map.pretrained[:2]
    rows = source_claim(study, aucs, a, b) if not aucs.empty else []
    rows += divergence_claim(divergence, a, b)
    rows += mistakes_claim(images, a, b, resamples, permutations, seed)
    rows += gain_claim(correlation, (a, b))
    if robustness is not None and not robustness.empty:
        rows += robustness_claim(study, robustness, a, b)
    for number, name in CLAIMS.items():
        if not any(r["claim"] == name for r in rows):
            missing.append(f"claim {name}: nothing to test (its runs, pairs or random-init runs are missing)")
    for r in rows:
        r.setdefault("p_adjusted", r["p_value"])
        r.setdefault("correction", "none")
        r["verdict"], r["sentence"] = _sentence(r)
    return pd.DataFrame(rows).reindex(columns=COLUMNS), missing

"""Prediction similarity (paper Figure 5) from the stored test-set probabilities.

Per target, fold and pair of pretrained sources: the fine-tuned models of each strategy
(``predictions.csv``) and the models before fine-tuning, i.e. the phase-1 linear probes of the
freeze runs (``probe/predictions.csv``). A model errs on an image when the argmax of its
probabilities is not the label (docs/protocol.md). :func:`mistake_images` gives each test image's
correctness under both models; :func:`prediction_table` (``prediction_similarity.csv``) one row per
target, fold and comparison: the observed similarity P(err_a == err_b), the independent baseline
a1*a2 + (1-a1)*(1-a2), their difference ``excess`` with its image-bootstrap 95% interval
(``excess_low``, ``excess_high``) and the one-sided ``p_value`` of "agreement above chance"
(permutation of b's correctness within class; :func:`medtransfer.stats.agreement_excess`). Unit:
the test image; the trained models are fixed.

:func:`fine_tuned_pairs` (``prediction_pairs.csv``) does not need two pretrained sources: every
pair of fine-tuned networks of a target (each source, random init included, each strategy and
seed), pooled over the folds both have, with the same statistic, interval and test, and the
p-value Holm-adjusted over the pairs of the target (``p_holm``).
"""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

from medtransfer import stats
from medtransfer.analysis.inventory import Study
from medtransfer.analysis.pairs import Roles
from medtransfer.analysis.tables import read_predictions
from medtransfer.errors import DataError
from medtransfer.vocabulary import FREEZE, STRATEGIES

KEYS = ["target", "fold", "source_a", "source_b", "comparison", "strategy"]
COLUMNS = [*KEYS, "observed", "baseline", "accuracy_a", "accuracy_b", "n", "excess", "excess_low", "excess_high",
           "p_value"]
IMAGE_COLUMNS = [*KEYS, "image_id", "label", "correct_a", "correct_b"]
FINE_TUNED = "fine-tuned"
BEFORE = "before fine-tuning"


def aligned(path_a: Path, path_b: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels (n,) and probabilities (n, k) of two prediction files, matched by ``image_id``.

    Raises:
        DataError: the files cover different images or disagree on a label.
    """
    ids_a, labels_a, probs_a = read_predictions(path_a)
    ids_b, labels_b, probs_b = read_predictions(path_b)
    index_b = pd.Index(ids_b)
    if len(ids_a) != len(ids_b) or not index_b.is_unique or set(ids_a) != set(ids_b):
        raise DataError(f"{path_a} and {path_b} cover different test images; expected the same fold's test split")
    order = index_b.get_indexer(ids_a)
    labels_b, probs_b = labels_b[order], probs_b[order]
    if not np.array_equal(labels_a, labels_b):
        raise DataError(f"{path_a} and {path_b} disagree on the labels of the same images")
    if probs_a.shape[1] != probs_b.shape[1]:
        raise DataError(f"{path_a} and {path_b} have different numbers of classes")
    return labels_a, probs_a, probs_b


def aligned_ids(path_a: Path, path_b: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`aligned` with the image ids: ``(ids (n,), labels (n,), probs_a (n, k), probs_b (n, k))``."""
    ids = read_predictions(path_a)[0].to_numpy()
    labels, pa, pb = aligned(path_a, path_b)
    return ids, labels, pa, pb


def mistake_images(study: Study, role_map: Roles) -> tuple[pd.DataFrame, list[str]]:
    """Per test image (:data:`IMAGE_COLUMNS`), for every target, fold, pair of pretrained sources
    and comparison: the label and whether each model is right; and a message per missing comparison."""
    frames = []
    missing: list[str] = []
    for target in study.targets:
        for fold in study.folds(target):
            for a, b in combinations(role_map.pretrained, 2):
                wanted = [(FINE_TUNED, st, "predictions") for st in STRATEGIES]
                wanted.append((BEFORE, FREEZE, "probe_predictions"))
                for comparison, strategy, attr in wanted:
                    ra, rb = study.run(target, a, strategy, fold), study.run(target, b, strategy, fold)
                    what = f"{target} fold {fold}: {a} vs {b} {comparison} ({strategy})"
                    if ra is None or rb is None:
                        lacking = [f"{s}-{strategy}" for s, r in ((a, ra), (b, rb)) if r is None]
                        missing.append(f"{what} skipped, no finished run {', '.join(lacking)}")
                        continue
                    try:
                        ids, labels, pa, pb = aligned_ids(getattr(ra, attr), getattr(rb, attr))
                    except DataError as error:
                        missing.append(f"{what} skipped: {error}")
                        continue
                    frames.append(pd.DataFrame({
                        "target": target, "fold": fold, "source_a": a, "source_b": b, "comparison": comparison,
                        "strategy": strategy, "image_id": ids, "label": labels,
                        "correct_a": pa.argmax(axis=1) == labels, "correct_b": pb.argmax(axis=1) == labels,
                    }))
    if len(role_map.pretrained) < 2:
        missing.append("prediction similarity between two pretrained sources (Figure 5) needs two; the study has "
                       f"{', '.join(role_map.pretrained) or 'none'} (prediction_pairs.csv compares every pair of "
                       "fine-tuned networks, random init included)")
    images = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=IMAGE_COLUMNS)
    return images, missing


def prediction_table(images: pd.DataFrame, resamples: int = 2000, permutations: int = 2000,
                     seed: int = 0) -> pd.DataFrame:
    """``prediction_similarity.csv``'s rows (:data:`COLUMNS`) from :func:`mistake_images`' frame:
    per target, fold and comparison, the similarity, baseline and accuracies, and the excess over
    the baseline with its interval and test (module notes)."""
    rows = []
    for i, (key, g) in enumerate(images.groupby(KEYS, sort=False)):
        a, b = g["correct_a"].to_numpy(bool), g["correct_b"].to_numpy(bool)
        a1, a2 = float(a.mean()), float(b.mean())
        test = stats.agreement_excess(a, b, g["fold"].to_numpy(), g["label"].to_numpy(), resamples, permutations,
                                      seed + i)
        rows.append([*key, float((a == b).mean()), a1 * a2 + (1 - a1) * (1 - a2), a1, a2, len(g),
                     test.statistic, test.low, test.high, test.p_value])
    return pd.DataFrame(rows, columns=COLUMNS)


PAIR_COLUMNS = ["target", "model_a", "model_b", "source_a", "strategy_a", "seed_a", "source_b", "strategy_b", "seed_b",
                "folds", "n", "observed", "baseline", "accuracy_a", "accuracy_b", "excess", "excess_low", "excess_high",
                "p_value", "p_holm"]


def _model_label(source: str, strategy: str, seed: int) -> str:
    return f"{source}-{strategy}" + (f"-seed{seed}" if seed else "")


def fine_tuned_pairs(study: Study, resamples: int = 2000, permutations: int = 2000,
                     seed: int = 0) -> tuple[pd.DataFrame, list[str]]:
    """``prediction_pairs.csv``'s rows (:data:`PAIR_COLUMNS`): for each target, every unordered
    pair of its fine-tuned networks (``(source, strategy, seed)``, random init included), pooled
    over the folds where both finished: agreement ``observed``, the independent baseline, each
    model's accuracy, and :func:`medtransfer.stats.agreement_excess` (excess, its image-bootstrap
    interval stratified by fold, permutation p within fold and class); ``p_holm`` adjusts the
    p-values over the target's pairs. Also a message per pair that lacks a fold or whose files
    disagree."""
    rows: list[list] = []
    missing: list[str] = []
    for target in study.targets:
        runs = [r for r in study.runs if r.target == target]
        models = sorted({(r.source, r.strategy, r.seed) for r in runs},
                        key=lambda m: (study.sources.index(m[0]) if m[0] in study.sources else len(study.sources),
                                       STRATEGIES.index(m[1]) if m[1] in STRATEGIES else len(STRATEGIES), m[2]))
        first = len(rows)
        for a, b in combinations(models, 2):
            label_a, label_b = _model_label(*a), _model_label(*b)
            parts = []
            for fold in study.folds(target):
                ra, rb = study.run(target, a[0], a[1], fold, a[2]), study.run(target, b[0], b[1], fold, b[2])
                if ra is None or rb is None:
                    missing.append(f"{target} fold {fold}: prediction pair {label_a} vs {label_b} lacks a finished run")
                    continue
                try:
                    labels, pa, pb = aligned(ra.predictions, rb.predictions)
                except DataError as error:
                    missing.append(f"{target} fold {fold}: prediction pair {label_a} vs {label_b} skipped: {error}")
                    continue
                parts.append((np.full(len(labels), fold), labels, pa.argmax(axis=1) == labels, pb.argmax(axis=1) == labels))
            if not parts:
                continue
            folds, labels, ca, cb = (np.concatenate(x) for x in zip(*parts))
            test = stats.agreement_excess(ca, cb, folds, labels, resamples, permutations, seed + len(rows))
            a1, a2 = float(ca.mean()), float(cb.mean())
            rows.append([target, label_a, label_b, a[0], a[1], a[2], b[0], b[1], b[2], len(parts), len(ca),
                         float((ca == cb).mean()), a1 * a2 + (1 - a1) * (1 - a2), a1, a2,
                         test.statistic, test.low, test.high, test.p_value, float("nan")])
        if len(rows) > first:
            for row, value in zip(rows[first:], stats.holm([r[-2] for r in rows[first:]])):
                row[-1] = float(value)
    return pd.DataFrame(rows, columns=PAIR_COLUMNS), missing

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
from medtransfer.similarity import prediction_similarity
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
        missing.append("prediction similarity needs two pretrained sources; the study has "
                       f"{', '.join(role_map.pretrained) or 'none'}")
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

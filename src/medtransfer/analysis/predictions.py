"""Prediction similarity (paper Figure 5) from the stored test-set probabilities.

Per target, fold and pair of pretrained sources: the fine-tuned models of each strategy
(``predictions.csv``) and the models before fine-tuning, i.e. the phase-1 linear probes of the
freeze runs (``probe/predictions.csv``). Each row carries the observed similarity
P(err_a == err_b) and the independent baseline a1*a2 + (1-a1)*(1-a2).
"""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

from medtransfer.analysis.inventory import Study
from medtransfer.analysis.pairs import Roles
from medtransfer.analysis.tables import read_predictions
from medtransfer.errors import DataError
from medtransfer.similarity import prediction_similarity
from medtransfer.vocabulary import FREEZE, STRATEGIES

COLUMNS = [
    "target", "fold", "source_a", "source_b", "comparison", "strategy",
    "observed", "baseline", "accuracy_a", "accuracy_b", "n",
]
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


def prediction_table(study: Study, role_map: Roles) -> tuple[pd.DataFrame, list[str]]:
    """All prediction-similarity rows of the study, and a message per comparison that is missing."""
    rows = []
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
                        labels, pa, pb = aligned(getattr(ra, attr), getattr(rb, attr))
                    except DataError as error:
                        missing.append(f"{what} skipped: {error}")
                        continue
                    sim = prediction_similarity(labels, pa, pb)
                    rows.append(
                        [target, fold, a, b, comparison, strategy, float(sim.observed), float(sim.baseline),
                         float(sim.accuracy_a), float(sim.accuracy_b), len(labels)]
                    )
    if len(role_map.pretrained) < 2:
        missing.append("prediction similarity needs two pretrained sources; the study has "
                       f"{', '.join(role_map.pretrained) or 'none'}")
    return pd.DataFrame(rows, columns=COLUMNS), missing

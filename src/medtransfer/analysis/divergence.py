"""Claim 5.2 as a paired difference: at each layer, the similarity of the two pretrained sources
after fine-tuning (``a-FT vs b-FT``, per strategy) minus before (``a vs b``), on the same stimuli.

Both scores of a fold are computed on the same sampled activations (the same images, positions
and channels, :mod:`medtransfer.analysis.layerwise`), and their image-bootstrap resamples use the
same image weights, so the difference's interval is a paired image bootstrap: the unit is the
stimulus image, and what the two scores share (which images were drawn) cancels. Over folds the
folds' images are resampled independently (a bootstrap stratified by fold: each fold's test images
are its own stimulus pool), and the statistic is the mean over folds of the per-fold differences.
The trained networks are held fixed: the interval says how far the difference moves over fresh
stimulus draws, not over retraining.

Each fold's difference and its resamples are :func:`medtransfer.similarity.paired_difference`'s
(the one implementation of the paired image bootstrap); only measures with a Gram form have them
(``Measure.from_grams``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from medtransfer import stats
from medtransfer.analysis.activations import SamplingPlan
from medtransfer.analysis.pairs import Pair
from medtransfer.similarity import bootstrap as boot
from medtransfer.similarity import paired_difference
from medtransfer.similarity.registry import get


@dataclass(frozen=True)
class FoldDivergence:
    """One fold's paired difference at one layer: ``after - before`` (means over repeats) and the
    ``resamples (R,)`` of the difference under shared image weights."""

    target: str
    fold: int
    strategy: str
    layer: str
    measure: str
    after: float
    before: float
    resamples: np.ndarray

    @property
    def difference(self) -> float:
        return self.after - self.before


def fold_divergence(target: str, fold: int, pairs: list[Pair], samples: dict[str, dict[str, list[np.ndarray]]],
                    plan: SamplingPlan, labels: dict[str, str], measures: tuple[str, ...], resamples: int,
                    seed: int, method: str = boot.DEFAULT_INTERVAL_METHOD) -> list[FoldDivergence]:
    """Paired differences of one fold for every strategy, layer and measure with a Gram form, each
    by :func:`medtransfer.similarity.paired_difference` (pair a: after fine-tuning, pair b: before).

    ``samples``: model key -> Keras layer name -> per-repeat activation matrices (as
    :func:`medtransfer.analysis.layerwise.fold_similarity` samples them); ``labels``: Keras layer
    name -> label. Pairs or layers without samples, or with fewer than ``MIN_IMAGES`` images per
    repeat, are left out.
    """
    before = next((p for p in pairs if p.kind == "init_vs_init"), None)
    if before is None:
        return []
    out = []
    rng = np.random.default_rng(seed)
    for after in (p for p in pairs if p.kind == "ft_vs_ft"):
        keys = (after.a.key, after.b.key, before.a.key, before.b.key)
        if any(k not in samples for k in keys):
            continue
        for name, layer in plan.layers.items():
            if min(len(i) for i in layer.images) < boot.MIN_IMAGES:
                continue
            fa, fb, ia, ib = (samples[k][name] for k in keys)
            for m in measures:
                if get(m).from_grams is None:
                    continue
                paired = paired_difference(fa, fb, ia, ib, list(layer.images), layer.rows_per_image, m,
                                           n_images=plan.n_pool, resamples=resamples, ci_method=method,
                                           seed=int(rng.integers(2**63)))
                out.append(FoldDivergence(target, fold, after.strategy, labels.get(name, name), m, paired.mean_a,
                                          paired.mean_b, paired.resamples))
    return out


def combine(folds: list[FoldDivergence], level: float = 0.95) -> pd.DataFrame:
    """Per (target, strategy, layer, measure): the mean over folds of ``after - before`` with the
    fold-stratified paired image-bootstrap interval (centred percentile,
    ``similarity.bootstrap.percentile_interval``) and a two-sided bootstrap p-value of "no
    difference": ``(1 + #{|d* - mean(d*)| >= |d|}) / (1 + R)``, the centred resamples as the null.
    The interval is clipped to the difference's range (+- the measure's range)."""
    columns = ["target", "strategy", "layer", "measure", "after", "before", "difference", "low", "high", "p_value",
               "folds"]
    groups: dict[tuple, list[FoldDivergence]] = {}
    for f in folds:
        groups.setdefault((f.target, f.strategy, f.layer, f.measure), []).append(f)
    rows = []
    for key, members in groups.items():
        length = min(len(m.resamples) for m in members)
        resampled = np.mean([m.resamples[:length] for m in members], axis=0)
        estimate = float(np.mean([m.difference for m in members]))
        low, high = boot.percentile_interval(resampled, level, estimate)
        spec = get(key[3])
        width = spec.high - spec.low  # a difference of two values in [low, high] lies in [-width, width]
        low, high = max(low, -width), min(high, width)
        finite = resampled[np.isfinite(resampled)]
        p = (stats.monte_carlo_p(int((np.abs(finite - finite.mean()) >= abs(estimate)).sum()), len(finite))
             if len(finite) else float("nan"))
        rows.append([*key, float(np.mean([m.after for m in members])), float(np.mean([m.before for m in members])),
                     estimate, low, high, p, len(members)])
    return pd.DataFrame(rows, columns=columns)

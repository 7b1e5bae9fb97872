"""Layer-wise similarity of model pairs (paper Figures 3, 7-12): CCA as in the paper, CKA beside it,
or any registered measure, each with an image-bootstrap interval and a permutation null.

For one target and fold: the distinct networks of all pairs are each run once over the stimulus
pool (:mod:`medtransfer.analysis.activations`), then every pair, layer and repeat is measured on
the shared samples. A value is a measure of :mod:`medtransfer.similarity.registry` (``cca``: the
mean of all canonical correlations); ``mean``/``std`` (ddof=0) are over the repeats. Uncertainty
(:func:`medtransfer.similarity.score_repeats`; NaN where not available):

- ``ci_low``, ``ci_high``: the stimulus interval, the image bootstrap of ``mean``: how far it moves
  over fresh stimulus images with the drawn channels and positions held;
- ``draws_ci_low``, ``draws_ci_high``: that interval widened by the channel and position draw
  (the spread of the repeats), for comparing scores whose channels were drawn independently;
- ``null_mean``, ``null_p95``, ``p_value``: the permutation null (images mismatched);
- ``adjusted``: ``(mean - null_mean) / (best - null_mean)``, the score corrected for chance, for
  comparing layers read at different geometries (docs/protocol.md says for which measures).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from medtransfer.analysis.activations import DEFAULTS, ForwardLog, LayerPlan, Network, SamplingPlan, sample_activations
from medtransfer.analysis.pairs import ModelRef, Pair, distinct_models
from medtransfer.console import track
from medtransfer.errors import MedtransferError
from medtransfer.similarity.concurrency import map_in_order, scoring_workers
from medtransfer.similarity.sampling import score_measures

COLUMNS = [
    "target", "fold", "pair", "strategy", "layer", "measure", "mean", "std",
    "kind", "source", "model_a", "model_b", "layer_name", "rows", "channels", "repeats",
    "ci_low", "ci_high", "null_mean", "null_p95", "p_value", "images",
    "draws_ci_low", "draws_ci_high", "adjusted",
]
#: The uncertainty columns of similarity.csv (NaN where not computed).
UNCERTAINTY = ["ci_low", "ci_high", "null_mean", "null_p95", "p_value", "draws_ci_low", "draws_ci_high", "adjusted"]


@dataclass(frozen=True)
class Uncertainty:
    """What each layer-wise score carries: interval level (None: none), resamples, permutations,
    seed, and how resample values are computed (``ci_method``, :mod:`medtransfer.similarity.bootstrap`)."""

    ci: float | None = DEFAULTS.ci
    resamples: int = DEFAULTS.resamples
    permutations: int = DEFAULTS.null_permutations(len(DEFAULTS.layers))
    seed: int = DEFAULTS.seed
    ci_method: str = DEFAULTS.ci_method


def score_layer(
    xs: list[np.ndarray], ys: list[np.ndarray], layer: LayerPlan, measures: tuple[str, ...], n_pool: int,
    uncertainty: Uncertainty | None, seeds: list[int],
) -> dict[str, dict[str, float] | MedtransferError]:
    """Per measure, ``mean, std, repeats`` and the :data:`UNCERTAINTY` columns of one pair and
    layer (or the MedtransferError the measure raised), measure ``j`` seeded by ``seeds[j]``;
    the measures share their work (:func:`~medtransfer.similarity.sampling.score_measures`)."""
    u = uncertainty or Uncertainty(ci=None, permutations=0)
    results = score_measures(xs, ys, list(layer.images), layer.rows_per_image, measures, seeds, n_images=n_pool,
                             ci=u.ci, resamples=u.resamples, ci_method=u.ci_method, permutations=u.permutations)
    return {m: r if isinstance(r, MedtransferError) else
            {"mean": r.mean, "std": r.std, "repeats": len(r.values), "images": r.images,
             **{c: getattr(r, c) for c in UNCERTAINTY}}
            for m, r in results.items()}


def fold_similarity(
    target: str,
    fold: int,
    pairs: list[Pair],
    pool: np.ndarray,
    plan: SamplingPlan,
    load: Callable[[ModelRef], Network],
    labels: dict[str, str],
    measures: tuple[str, ...] = DEFAULTS.measures,
    batch_size: int = DEFAULTS.batch_size,
    device: str | torch.device = "cpu",
    log: ForwardLog | None = None,
    uncertainty: Uncertainty | None = None,
    keep: dict[str, dict[str, list[np.ndarray]]] | None = None,
    stage: Callable[[str], None] | None = None,
) -> tuple[pd.DataFrame, list[str]]:
    """Similarity rows (:data:`COLUMNS`) of every pair at every planned layer, and problems met.

    Args:
        pool: uint8 ``(N, h, w, 3)`` stimulus images of this target and fold.
        load: builds a :class:`Network` for a model reference (called once per distinct model).
        labels: Keras layer name -> label written in the ``layer`` column (``conv1_relu`` -> ``conv1``).
        uncertainty: interval and null settings (None: neither; the columns are NaN).
        keep: if given, receives the sampled activations (model key -> layer -> per-repeat
            matrices) for paired statistics on the same stimuli (:mod:`medtransfer.analysis.divergence`).
        stage: called with ``"activations"`` before the networks run and ``"measures"`` before the
            pairs are scored (progress reporting, :func:`medtransfer.console.stages`).

    A network that fails to load (e.g. weights not available) is reported and its pairs skipped.
    """
    log = log if log is not None else ForwardLog()
    problems: list[str] = []
    samples: dict[str, dict[str, list[np.ndarray]]] = {}
    stage = stage or (lambda name: None)
    stage("activations")
    for key, ref in distinct_models(pairs).items():
        try:
            network = load(ref)
        except MedtransferError as error:
            problems.append(f"{target} fold {fold}: could not load {ref.label} ({error}); its pairs are skipped")
            continue
        samples[key] = sample_activations(network, pool, plan, batch_size, device, log, key)
        del network
    if keep is not None:
        keep.update(samples)
    rows = []
    refused: dict[tuple[str, str], str] = {}
    seed = (uncertainty.seed if uncertainty is not None else 0) + 7919 * fold
    stage("measures")
    tasks = [(p, pair, name, layer) for p, pair in enumerate(pairs)
             if pair.a.key in samples and pair.b.key in samples for name, layer in plan.layers.items()]

    def score(task: tuple[int, Pair, str, LayerPlan]) -> dict[str, dict[str, float] | MedtransferError]:
        p, pair, name, layer = task
        return score_layer(samples[pair.a.key][name], samples[pair.b.key][name], layer, tuple(measures), plan.n_pool,
                           uncertainty, [seed + 104729 * p + 31 * j for j in range(len(measures))])

    # each (pair, layer) has its own seeds, so the numbers do not depend on the threads that score them
    workers = scoring_workers(torch.get_num_threads()) if torch.device(device).type == "cpu" else 1
    results = map_in_order(score, tasks, workers)
    for (p, pair, name, layer), scored in track(zip(tasks, results), f"similarity {target} fold {fold}",
                                                 total=len(tasks)):
        for m in measures:
            scores = scored[m]
            if isinstance(scores, MedtransferError):  # e.g. CCA with channels >= rows - 1
                refused.setdefault((name, m), str(scores))
                scores = {"mean": float("nan"), "std": float("nan"), "repeats": len(layer.images),
                          **{c: float("nan") for c in UNCERTAINTY}, "images": len(layer.images[0])}
            rows.append({
                "target": target, "fold": fold, "pair": pair.name, "strategy": pair.strategy,
                "layer": labels.get(name, name), "measure": m, "kind": pair.kind, "source": pair.source,
                "model_a": pair.a.label, "model_b": pair.b.label, "layer_name": name, "rows": layer.rows,
                "channels": len(layer.channels[0]), **scores,
            })
    for (name, m), message in refused.items():
        problems.append(f"{target} fold {fold}, {labels.get(name, name)}: {m.upper()} not computed ({message})")
    return pd.DataFrame(rows, columns=COLUMNS), problems

"""Layer-wise similarity of model pairs (paper Figures 3, 7-12): CCA as in the paper, CKA beside it.

For one target and fold: the distinct networks of all pairs are each run once over the stimulus
pool (:mod:`medtransfer.analysis.activations`), then every pair, layer and repeat is measured on
the shared samples. A value is the mean of all canonical correlations (``cca(x, y).mean``) or linear
CKA; ``mean``/``std`` (ddof=0) are over the repeats.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import torch

from medtransfer.analysis.activations import ForwardLog, Network, SamplingPlan, sample_activations
from medtransfer.analysis.pairs import ModelRef, Pair, distinct_models
from medtransfer.errors import MedtransferError
from medtransfer.progress import track

COLUMNS = [
    "target", "fold", "pair", "strategy", "layer", "measure", "mean", "std",
    "kind", "source", "model_a", "model_b", "layer_name", "rows", "channels", "repeats",
]


def measure(x: np.ndarray, y: np.ndarray, name: str) -> float:
    """Similarity of two activation matrices ``(rows, channels)``: ``"cca"`` mean rho or ``"cka"``."""
    from medtransfer.similarity import cca, linear_cka

    if name == "cca":
        return float(cca(x, y).mean)
    return float(linear_cka(x, y))


def fold_similarity(
    target: str,
    fold: int,
    pairs: list[Pair],
    pool: np.ndarray,
    plan: SamplingPlan,
    load: Callable[[ModelRef], Network],
    labels: dict[str, str],
    measures: tuple[str, ...] = ("cca", "cka"),
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    log: ForwardLog | None = None,
) -> tuple[pd.DataFrame, list[str]]:
    """Similarity rows (:data:`COLUMNS`) of every pair at every planned layer, and problems met.

    Args:
        pool: uint8 ``(N, h, w, 3)`` stimulus images of this target and fold.
        load: builds a :class:`Network` for a model reference (called once per distinct model).
        labels: Keras layer name -> label written in the ``layer`` column (``conv1_relu`` -> ``conv1``).

    A network that fails to load (e.g. weights not available) is reported and its pairs skipped.
    """
    log = log if log is not None else ForwardLog()
    problems: list[str] = []
    samples: dict[str, dict[str, list[np.ndarray]]] = {}
    for key, ref in distinct_models(pairs).items():
        try:
            network = load(ref)
        except MedtransferError as error:
            problems.append(f"{target} fold {fold}: could not load {ref.label} ({error}); its pairs are skipped")
            continue
        samples[key] = sample_activations(network, pool, plan, batch_size, device, log, key)
        del network
    rows = []
    refused: dict[tuple[str, str], str] = {}

    def value(xa: np.ndarray, xb: np.ndarray, name: str, m: str) -> float:
        try:
            return measure(xa, xb, m)
        except MedtransferError as error:  # e.g. CCA with channels >= rows - 1
            refused.setdefault((name, m), str(error))
            return float("nan")

    for pair in track(pairs, f"similarity {target} fold {fold}", total=len(pairs)):
        if pair.a.key not in samples or pair.b.key not in samples:
            continue
        acts_a, acts_b = samples[pair.a.key], samples[pair.b.key]
        for name, layer in plan.layers.items():
            for m in measures:
                values = np.array([value(xa, xb, name, m) for xa, xb in zip(acts_a[name], acts_b[name])])
                rows.append(
                    [target, fold, pair.name, pair.strategy, labels.get(name, name), m,
                     float(np.mean(values)), float(np.std(values)), pair.kind, pair.source,
                     pair.a.label, pair.b.label, name, layer.rows, len(layer.channels[0]), len(values)]
                )
    for (name, m), message in refused.items():
        problems.append(f"{target} fold {fold}, {labels.get(name, name)}: {m.upper()} not computed ({message})")
    return pd.DataFrame(rows, columns=COLUMNS), problems

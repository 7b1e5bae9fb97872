"""The measure vocabulary: one :class:`Measure` per name, the only place a measure name is defined.

The library (:func:`~medtransfer.similarity.layer_similarity`), the image bootstrap and the
permutation null, the analysis settings, the layer-wise analysis and the command line all look
measures up here. ``docs/measures.md`` shows the same facts as a table (a test checks that it
lists every measure).

Invariance words (what may be applied to one side without changing the value):

- ``translation``: adding a constant vector to every row;
- ``permutation``: reordering the neurons (columns);
- ``isotropic scale``: multiplying all values by one positive number;
- ``orthogonal``: ``x -> x Q`` for an orthogonal Q;
- ``invertible linear``: ``x -> x A`` for any invertible A (implies the three above);
- ``neuron scale``: multiplying each neuron by its own positive factor;
- ``row scale``: multiplying each row (data point) by its own positive factor;
- ``row offset``: adding its own constant to each row;
- ``monotone rdm``: any increasing transform of the dissimilarities.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from medtransfer.errors import MedtransferError
from medtransfer.similarity import batched
from medtransfer.similarity._validation import MAX_PAIRWISE_ROWS
from medtransfer.similarity.canonical import cca, pwcca, pwcca_google, svcca
from medtransfer.similarity.cka import cka_from_blocks, linear_cka
from medtransfer.similarity.neighbors import knn_jaccard, mutual_knn
from medtransfer.similarity.procrustes import procrustes_distance
from medtransfer.similarity.rsa import rsa
from medtransfer.similarity.shape import angular_shape_distance, shape_from_grams

INVARIANCE_WORDS = (
    "translation", "permutation", "isotropic scale", "orthogonal", "invertible linear",
    "neuron scale", "row scale", "row offset", "monotone rdm",
)


@dataclass(frozen=True)
class Measure:
    """One similarity or distance between two representations ``x (n, p)``, ``y (n, q)``.

    Attributes:
        name: the vocabulary word (settings, CSV columns, command line).
        function: ``(x, y) -> float``, numpy arrays or torch tensors.
        title: a short human name for figures.
        kind: ``"similarity"`` (higher = more alike) or ``"distance"`` (lower = more alike).
        low, high: the range of values.
        invariances: words of :data:`INVARIANCE_WORDS`.
        symmetric: whether swapping x and y leaves the value unchanged.
        from_grams: the batched form on centred Gram blocks (:mod:`medtransfer.similarity.batched`),
            or None when the measure needs the rows themselves. Only measures with it get an image
            bootstrap interval (one weighted sum of per-image statistics per resample); their
            permutation null is cheap too. Others get the null by recomputation, and no interval.
        reference: where the definition comes from (the `definition` column of `medtransfer measures`).
        from_blocks: optional faster batched form on the per-image blocks and the weights
            (:func:`medtransfer.similarity.cka.cka_from_blocks`), used for few images.
        max_rows: the most rows the measure takes (None: any number); the layer protocol
            subsamples whole images down to it (:func:`~medtransfer.similarity.score_repeats`).
    """

    name: str
    function: Callable[[Any, Any], float]
    title: str
    kind: str
    low: float
    high: float
    invariances: tuple[str, ...]
    symmetric: bool
    from_grams: Callable[[Any, Any, Any], Any] | None
    reference: str
    from_blocks: Callable[[Any, Any], Any] | None = None
    max_rows: int | None = None

    @property
    def higher_is_similar(self) -> bool:
        return self.kind == "similarity"

    def __call__(self, x: Any, y: Any) -> float:
        return float(self.function(x, y))


def _cca(x, y):
    return cca(x, y).mean


def _cca_r2(x, y):
    return float(np.mean(cca(x, y).rho ** 2))


def _svcca(x, y):
    return svcca(x, y).mean


def _cka_debiased(x, y):
    return linear_cka(x, y, debiased=True)


def _shape(x, y):
    return angular_shape_distance(x, y, alpha=1.0)


def _shape_grams(gxx, gyy, gxy):
    return shape_from_grams(gxx, gyy, gxy, alpha=1.0)


def _rsa_spearman(x, y):
    return rsa(x, y, "spearman")


def _rsa_pearson(x, y):
    return rsa(x, y, "pearson")


_LINEAR = ("translation", "permutation", "isotropic scale", "orthogonal", "invertible linear", "neuron scale")
_ORTHO = ("translation", "permutation", "isotropic scale", "orthogonal")
_KNN = ("permutation", "isotropic scale", "orthogonal", "row scale")

MEASURES: dict[str, Measure] = {
    m.name: m
    for m in (
        Measure("cca", _cca, "CCA (mean ρ)", "similarity", 0.0, 1.0, _LINEAR, True,
                batched.cca_mean_from_grams, "Hotelling 1936; mean of all canonical correlations (the paper's score)"),
        Measure("cca_r2", _cca_r2, "CCA (mean ρ²)", "similarity", 0.0, 1.0, _LINEAR, True,
                batched.cca_r2_from_grams,
                "Kornblith et al. 2019's R²_CCA; mean of the squared canonical correlations (adjusts like R², see docs)"),
        Measure("svcca", _svcca, "SVCCA", "similarity", 0.0, 1.0, _ORTHO, True, None,
                "Raghu et al. 2017; CCA of the top principal directions explaining 99% of the variance"),
        Measure("pwcca", pwcca, "PWCCA", "similarity", 0.0, 1.0, ("translation", "permutation", "isotropic scale"),
                False, None,
                "Morcos et al. 2018; projection-weighted mean of the canonical correlations"),
        Measure("pwcca_google", pwcca_google, "PWCCA (google/svcca)", "similarity", 0.0, 1.0, (),
                False, None, "google/svcca's compute_pwcca: weights from uncentred activations (see docs)"),
        Measure("cka", linear_cka, "linear CKA", "similarity", 0.0, 1.0, _ORTHO, True, batched.cka_from_grams,
                "Kornblith et al. 2019; linear kernels, biased HSIC", cka_from_blocks),
        Measure("cka_debiased", _cka_debiased, "linear CKA (debiased)", "similarity", -1.0, 1.0, _ORTHO, True, None,
                "Kornblith et al. 2019 with the unbiased HSIC of Song et al. 2012"),
        Measure("procrustes", procrustes_distance, "Procrustes distance", "distance", 0.0, 2.0, _ORTHO, True,
                batched.procrustes_from_grams, "Ding, Denain & Steinhardt 2021; squared, unit-norm sides"),
        Measure("angular_shape", _shape, "angular shape metric", "distance", 0.0, 1.5707963267948966, _ORTHO, True,
                _shape_grams, "Williams et al. 2021, generalized shape metric with alpha = 1 (angular Procrustes), radians"),
        Measure("rsa_spearman", _rsa_spearman, "RSA (Spearman)", "similarity", -1.0, 1.0,
                ("permutation", "isotropic scale", "row scale", "row offset", "monotone rdm"), True, None,
                "Kriegeskorte et al. 2008; correlation-distance RDMs compared by Spearman's rho",
                max_rows=MAX_PAIRWISE_ROWS),
        Measure("rsa_pearson", _rsa_pearson, "RSA (Pearson)", "similarity", -1.0, 1.0,
                ("permutation", "isotropic scale", "row scale", "row offset"), True, None,
                "Kriegeskorte et al. 2008; correlation-distance RDMs compared by Pearson's r",
                max_rows=MAX_PAIRWISE_ROWS),
        Measure("mutual_knn", mutual_knn, "mutual k-NN (k=10)", "similarity", 0.0, 1.0, _KNN, True, None,
                "Huh et al. 2024; cosine neighbours, k = 10", max_rows=MAX_PAIRWISE_ROWS),
        Measure("knn_jaccard", knn_jaccard, "k-NN Jaccard (k=10)", "similarity", 0.0, 1.0, _KNN, True, None,
                "mean Jaccard index of the cosine 10-NN sets", max_rows=MAX_PAIRWISE_ROWS),
    )
}

#: Every measure name, in registry order.
NAMES: tuple[str, ...] = tuple(MEASURES)
#: The measures of the paper's layer-wise analysis (and the default of ``analyze``).
PAPER_MEASURES: tuple[str, ...] = ("cca", "cka")


def get(name: str) -> Measure:
    """The measure called ``name``; MedtransferError listing the vocabulary otherwise."""
    try:
        return MEASURES[name]
    except (KeyError, TypeError):
        raise MedtransferError(f"unknown similarity measure {name!r}; expected one of {', '.join(NAMES)}") from None


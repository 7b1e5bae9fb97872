"""Similarity of representations and of mistakes: CCA (plain, SVCCA, PWCCA), CKA, Procrustes, the
angular shape metric, RSA, k-NN alignment (every name in :mod:`~medtransfer.similarity.registry`),
the paper's layer-wise sampling protocol with image-bootstrap intervals and a permutation null,
a paired test of two pairs' scores on the same stimuli (:func:`paired_difference`), and
prediction similarity.

Pure functions on numpy arrays or torch tensors (any device), float64 inside; rows are data
points, columns neurons. Imports nothing from the other medtransfer packages.
"""

from medtransfer.similarity.canonical import CCAResult, cca, pwcca, pwcca_google, svcca
from medtransfer.similarity.bootstrap import Interval, Null, image_bootstrap, permutation_null
from medtransfer.similarity.cka import MinibatchCKA, linear_cka
from medtransfer.similarity.neighbors import knn_jaccard, mutual_knn
from medtransfer.similarity.paired import PairedDifference, draws_for_holm, paired_difference, paired_layer_difference
from medtransfer.similarity.predictions import PredictionSimilarity, prediction_similarity
from medtransfer.similarity.procrustes import procrustes_distance
from medtransfer.similarity.registry import MEASURES, Measure
from medtransfer.similarity.rsa import rsa, rsa_pearson, rsa_spearman
from medtransfer.similarity.sampling import LayerSimilarity, activation_rows, layer_similarity, score_repeats
from medtransfer.similarity.shape import angular_shape_distance

__all__ = [
    "MEASURES",
    "CCAResult",
    "Interval",
    "Measure",
    "Null",
    "PairedDifference",
    "angular_shape_distance",
    "draws_for_holm",
    "image_bootstrap",
    "knn_jaccard",
    "mutual_knn",
    "paired_difference",
    "paired_layer_difference",
    "permutation_null",
    "rsa",
    "rsa_pearson",
    "rsa_spearman",
    "score_repeats",
    "LayerSimilarity",
    "MinibatchCKA",
    "PredictionSimilarity",
    "activation_rows",
    "cca",
    "layer_similarity",
    "linear_cka",
    "prediction_similarity",
    "procrustes_distance",
    "pwcca",
    "pwcca_google",
    "svcca",
]

"""Similarity of representations and of mistakes: CCA (plain, SVCCA, PWCCA), CKA, Procrustes,
the paper's layer-wise sampling protocol and prediction similarity.

Pure functions on numpy arrays or torch tensors (any device), float64 inside; rows are data
points, columns neurons. Imports nothing from the other medtransfer packages.
"""

from medtransfer.similarity.canonical import CCAResult, cca, pwcca, svcca
from medtransfer.similarity.cka import MinibatchCKA, linear_cka
from medtransfer.similarity.predictions import PredictionSimilarity, prediction_similarity
from medtransfer.similarity.procrustes import procrustes_distance
from medtransfer.similarity.sampling import LayerSimilarity, activation_rows, layer_similarity

__all__ = [
    "CCAResult",
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
    "svcca",
]

"""New measures against closed forms, invariances and independent implementations; the registry."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import typer
from scipy import linalg as sla
from scipy import stats
from typer.testing import CliRunner

from medtransfer.errors import MedtransferError
from medtransfer.similarity import (
    angular_shape_distance, cca, knn_jaccard, mutual_knn, procrustes_distance, rsa_pearson, rsa_spearman,
)
from medtransfer.similarity.cli import register
from medtransfer.similarity.registry import INVARIANCE_WORDS, MEASURES, NAMES, get
from tests.similarity.reference import random_orthogonal

ROOT = Path(__file__).resolve().parents[2]


def data(seed=0, n=80, p=6, q=6, noise=1.0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, p))
    y = x @ rng.standard_normal((p, q)) + noise * rng.standard_normal((n, q))
    return x, y


# --- angular shape metric: netrep's formula, written out plainly ---------------------------------

def netrep_whiten(x, alpha, eigval_tol=1e-7):
    lam, v = np.linalg.eigh(x.T @ x)
    lam = np.maximum(lam, eigval_tol)
    d = alpha + (1 - alpha) * lam ** -0.5
    return x @ ((v * d) @ v.T)


def netrep_angular(x, y, alpha):
    x, y = x - x.mean(0), y - y.mean(0)
    xw, yw = netrep_whiten(x, alpha), netrep_whiten(y, alpha)
    width = max(xw.shape[1], yw.shape[1])
    xw = np.pad(xw, ((0, 0), (0, width - xw.shape[1])))
    yw = np.pad(yw, ((0, 0), (0, width - yw.shape[1])))
    rotation, _ = sla.orthogonal_procrustes(yw, xw)
    cosine = np.sum(xw * (yw @ rotation)) / (np.linalg.norm(xw) * np.linalg.norm(yw))
    return float(np.arccos(np.clip(cosine, -1, 1)))


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_shape_metric_matches_netrep_formula(alpha):
    for seed, (p, q) in enumerate([(6, 6), (5, 8)]):
        x, y = data(seed, p=p, q=q)
        assert angular_shape_distance(x, y, alpha) == pytest.approx(netrep_angular(x, y, alpha), abs=1e-8)


def test_shape_metric_closed_forms_and_invariances():
    x, y = data(1)
    # alpha = 1 is angular Procrustes; alpha = 0 (equal widths, full rank) is arccos(mean CCA).
    assert np.cos(angular_shape_distance(x, y, 1.0)) == pytest.approx(1 - procrustes_distance(x, y) / 2, abs=1e-10)
    assert np.cos(angular_shape_distance(x, y, 0.0)) == pytest.approx(cca(x, y).mean, abs=1e-8)
    rng = np.random.default_rng(2)
    q = random_orthogonal(rng, 6)
    for alpha in (0.0, 0.5, 1.0):
        base = angular_shape_distance(x, y, alpha)
        assert angular_shape_distance(x @ q + 3.0, y, alpha) == pytest.approx(base, abs=1e-8)
    assert angular_shape_distance(x, 7.0 * y, 1.0) == pytest.approx(angular_shape_distance(x, y, 1.0), abs=1e-10)
    general = x @ rng.standard_normal((6, 6))
    assert angular_shape_distance(x, general, 0.0) == pytest.approx(0.0, abs=1e-6)
    assert angular_shape_distance(x, general, 1.0) > 0.05  # alpha = 1 is not invariant to general maps
    assert angular_shape_distance(x, x, 0.5) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(MedtransferError, match="alpha"):
        angular_shape_distance(x, y, 1.5)


# --- RSA against rsatoolbox ----------------------------------------------------------------------

def test_rsa_matches_rsatoolbox():
    rsatoolbox = pytest.importorskip("rsatoolbox")
    for seed in range(3):
        x, y = data(seed, n=40, p=7, q=5, noise=2.0)
        rdms = [rsatoolbox.rdm.calc_rdm(rsatoolbox.data.Dataset(a), method="correlation") for a in (x, y)]
        expected_s = float(rsatoolbox.rdm.compare(rdms[0], rdms[1], method="spearman")[0, 0])
        expected_p = float(rsatoolbox.rdm.compare(rdms[0], rdms[1], method="corr")[0, 0])
        assert rsa_spearman(x, y) == pytest.approx(expected_s, abs=1e-8)
        assert rsa_pearson(x, y) == pytest.approx(expected_p, abs=1e-8)


def test_rsa_closed_forms_and_invariances():
    x, y = data(3, n=30)
    rng = np.random.default_rng(4)
    scaled = x * rng.uniform(0.5, 2.0, size=(30, 1)) + rng.standard_normal((30, 1))  # per-row scale and offset
    assert rsa_pearson(x, scaled) == pytest.approx(1.0, abs=1e-12)
    assert rsa_spearman(x, x[:, ::-1]) == pytest.approx(1.0, abs=1e-12)  # feature permutation
    # Spearman of the RDMs equals scipy's on the condensed distance vectors.
    from scipy.spatial.distance import pdist

    assert rsa_spearman(x, y) == pytest.approx(stats.spearmanr(pdist(x, "correlation"), pdist(y, "correlation")).statistic,
                                               abs=1e-10)
    # A constant row is defined (test_pairwise_rows.py); every row constant is not.
    assert np.isfinite(rsa_pearson(np.vstack([np.ones(6), x[1:]]), y))
    with pytest.raises(MedtransferError, match="every dissimilarity of x"):
        rsa_pearson(np.ones_like(x), y)


# --- k-NN measures against a plain double loop ---------------------------------------------------

def knn_reference(x, y, k):
    def neighbours(a):
        unit = a / np.linalg.norm(a, axis=1, keepdims=True)
        out = []
        for i in range(len(a)):
            sims = [(-(unit[i] @ unit[j]), j) for j in range(len(a)) if j != i]
            out.append({j for _, j in sorted(sims)[:k]})
        return out

    nx, ny = neighbours(x), neighbours(y)
    mutual = np.mean([len(a & b) / k for a, b in zip(nx, ny)])
    jaccard = np.mean([len(a & b) / len(a | b) for a, b in zip(nx, ny)])
    return mutual, jaccard


def test_knn_measures_match_plain_reference_and_closed_forms():
    for seed, k in ((0, 3), (1, 10)):
        x, y = data(seed, n=50, noise=1.5)
        mutual, jaccard = knn_reference(x, y, k)
        assert mutual_knn(x, y, k) == pytest.approx(mutual, abs=1e-12)
        assert knn_jaccard(x, y, k) == pytest.approx(jaccard, abs=1e-12)
    x, _ = data(2, n=40)
    rng = np.random.default_rng(5)
    moved = 3.0 * (x @ random_orthogonal(rng, 6)) * rng.uniform(0.5, 2, size=(40, 1))  # orthogonal, row scales
    assert mutual_knn(x, moved) == pytest.approx(1.0) and knn_jaccard(x, moved) == pytest.approx(1.0)
    independent = rng.standard_normal((40, 6))
    assert mutual_knn(x, independent, 5) < 0.5
    with pytest.raises(MedtransferError, match="k must be"):
        mutual_knn(x, x, 40)


# --- the registry --------------------------------------------------------------------------------

def test_registry_entries_are_consistent():
    x, y = data(6, n=60)
    for name, m in MEASURES.items():
        assert m.name == name and get(name) is m
        assert m.kind in ("similarity", "distance")
        assert set(m.invariances) <= set(INVARIANCE_WORDS)
        value = m(x, y)
        assert m.low - 1e-12 <= value <= m.high + 1e-12, name
        if m.symmetric:
            assert m(y, x) == pytest.approx(value, abs=1e-8), name
    with pytest.raises(MedtransferError, match="unknown similarity measure"):
        get("cosine")


def test_the_measures_command_shows_each_definition():
    """``medtransfer measures`` prints one row per measure with the registry's reference (the
    output is piped here, so it is never wrapped)."""
    app = typer.Typer()
    register(app)
    app.command("unused")(lambda: None)  # two commands: typer then dispatches by name
    done = CliRunner().invoke(app, ["measures"])
    assert done.exit_code == 0, done.output
    rows = done.output.splitlines()
    for m in MEASURES.values():
        assert m.reference and any(m.name in row and m.reference in row for row in rows), m.name


def test_registry_invariances_hold():
    """Each listed invariance is checked numerically for every measure that claims it."""
    x, y = data(7, n=60)
    rng = np.random.default_rng(8)
    maps = {
        "translation": lambda a: a + rng.standard_normal(a.shape[1]),
        "permutation": lambda a: a[:, rng.permutation(a.shape[1])],
        "isotropic scale": lambda a: 3.7 * a,
        "orthogonal": lambda a: a @ random_orthogonal(rng, a.shape[1]),
        "invertible linear": lambda a: a @ (rng.standard_normal((a.shape[1], a.shape[1])) + 3 * np.eye(a.shape[1])),
        "neuron scale": lambda a: a * rng.uniform(0.5, 2.0, a.shape[1]),
        "row scale": lambda a: a * rng.uniform(0.5, 2.0, (a.shape[0], 1)),
        "row offset": lambda a: a + rng.standard_normal((a.shape[0], 1)),
        "monotone rdm": None,
    }
    for m in MEASURES.values():
        base = m(x, y)
        for word in m.invariances:
            if maps[word] is None:
                continue
            assert m(maps[word](x), y) == pytest.approx(base, abs=1e-7), (m.name, word)


def test_docs_table_lists_every_measure():
    text = (ROOT / "docs" / "measures.md").read_text()
    listed = re.findall(r"^\| `([a-z0-9_]+)` \|", text, flags=re.M)
    assert listed == list(NAMES)

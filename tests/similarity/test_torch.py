"""torch tensors: CPU tensors go through numpy; the device code path (used for CUDA tensors) is
exercised here on CPU tensors through the internal functions, and on a GPU when one is present."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import medtransfer.similarity.canonical as canonical
from medtransfer.similarity import MinibatchCKA, cca, layer_similarity, linear_cka, procrustes_distance, pwcca, svcca
from medtransfer.similarity.cka import _hsic
from tests.similarity.reference import matrix_with_condition


def data(seed=0, n=600, p=6, q=5):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, p))
    y = x @ rng.standard_normal((p, q)) + rng.standard_normal((n, q))
    return x, y


def test_cpu_tensors_match_numpy():
    x, y = data()
    tx, ty = torch.from_numpy(x).float(), torch.from_numpy(y)
    np.testing.assert_allclose(cca(tx, ty).rho, cca(x.astype(np.float32), y).rho, atol=1e-12)
    assert linear_cka(tx, ty, debiased=True) == pytest.approx(linear_cka(x.astype(np.float32), y, debiased=True), abs=1e-12)
    mixed = cca(torch.from_numpy(x), y)
    np.testing.assert_allclose(mixed.rho, cca(x, y).rho, atol=1e-12)


@pytest.mark.parametrize("duplicate", [False, True])
def test_tensor_code_path_matches_numpy(duplicate):
    x, y = data(1)
    y = np.hstack([y, np.zeros((600, 1))] + ([y[:, :1]] if duplicate else []))  # constant (+ duplicated) neurons
    expected = canonical._canonical(x, y, None)
    got = canonical._canonical(torch.from_numpy(x).float(), torch.from_numpy(y), None)
    assert got.method == expected.method == ("qr" if duplicate else "cholesky")
    np.testing.assert_allclose(np.linalg.svd(got.m, compute_uv=False), np.linalg.svd(expected.m, compute_uv=False), atol=1e-6)
    for a, b in zip(_hsic(torch.from_numpy(x), torch.from_numpy(y), True), _hsic(x, y, True)):
        assert a == pytest.approx(b, rel=1e-12)


def test_tensor_code_path_fast_method():
    x, y = data(2)
    expected = canonical._canonical(x, y, None)
    got = canonical._canonical(torch.from_numpy(x), torch.from_numpy(y), None)
    assert got.method == expected.method == "cholesky"
    np.testing.assert_allclose(got.m, expected.m, atol=1e-12)
    reduced = canonical._top_directions(torch.from_numpy(x), 0.9, "x")
    assert isinstance(reduced, torch.Tensor)
    assert reduced.shape[1] == canonical._top_directions(x, 0.9, "x").shape[1]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors_match_numpy():
    x, y = data(3, n=4000, p=32, q=24)
    rng = np.random.default_rng(4)
    ill = x @ matrix_with_condition(rng, 32, 1e10)
    cx, cy, cill = (torch.from_numpy(a).cuda() for a in (x, y, ill))
    np.testing.assert_allclose(cca(cx, cy).rho, cca(x, y).rho, atol=1e-10)
    assert cca(cx, cill).mean == pytest.approx(1.0, abs=1e-8)
    assert cca(cx.float(), cy.float()).mean == pytest.approx(cca(x.astype(np.float32), y.astype(np.float32)).mean, abs=1e-8)
    assert svcca(cx, cy).mean == pytest.approx(svcca(x, y).mean, abs=1e-10)
    assert pwcca(cx, cy) == pytest.approx(pwcca(x, y), abs=1e-10)
    assert linear_cka(cx, cy) == pytest.approx(linear_cka(x, y), abs=1e-12)
    assert linear_cka(cx, cy, debiased=True) == pytest.approx(linear_cka(x, y, debiased=True), abs=1e-12)
    assert procrustes_distance(cx, cy) == pytest.approx(procrustes_distance(x, y), abs=1e-12)
    acc = MinibatchCKA()
    acc.update(cx[:100], cy[:100])
    assert acc.value() == pytest.approx(linear_cka(x[:100], y[:100], debiased=True), abs=1e-12)
    acts = torch.randn(40, 16, 6, 6, device="cuda")
    result = layer_similarity(acts, acts.relu(), rows=700, channels=8, repeats=2)
    expected = layer_similarity(acts.cpu().numpy(), acts.relu().cpu().numpy(), rows=700, channels=8, repeats=2)
    np.testing.assert_allclose(result.values, expected.values, atol=1e-10)

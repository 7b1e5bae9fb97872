"""Linear CKA (plain, debiased), the minibatch accumulator, and the Procrustes distance."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg as sla
from hypothesis import given, settings
from hypothesis import strategies as st

from medtransfer.errors import MedtransferError
from medtransfer.similarity import MinibatchCKA, linear_cka, procrustes_distance
from tests.similarity.reference import cka_from_kernels, matrix_with_condition, random_orthogonal


def related(rng, n, p, q, noise=1.0):
    x = rng.standard_normal((n, p)) + 3.0
    y = x @ rng.standard_normal((p, q)) + noise * rng.standard_normal((n, q))
    return x, y


@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("n,p,q", [(6, 2, 3), (40, 5, 5), (120, 30, 7), (20, 30, 25), (8, 3, 9)])
def test_matches_kernel_space_reference(n, p, q, debiased):
    rng = np.random.default_rng(n * p * q)
    x, y = related(rng, n, p, q)
    assert linear_cka(x, y, debiased=debiased) == pytest.approx(cka_from_kernels(x, y, debiased), abs=1e-10)


def test_self_similarity_and_invariances():
    rng = np.random.default_rng(0)
    x, y = related(rng, 300, 8, 6)
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, x, debiased=True) == pytest.approx(1.0, abs=1e-12)
    base = linear_cka(x, y)
    q = random_orthogonal(rng, 8)
    assert linear_cka(x @ q, y) == pytest.approx(base, abs=1e-12)
    assert linear_cka(1e4 * x, 1e-3 * y) == pytest.approx(base, abs=1e-12)
    assert linear_cka(x + 100.0, y) == pytest.approx(base, abs=1e-10)
    assert linear_cka(y, x) == pytest.approx(base, abs=1e-14)
    assert 0.0 <= base <= 1.0


def test_not_invariant_to_general_linear_maps():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((500, 10))
    assert linear_cka(x, x @ matrix_with_condition(rng, 10, 1e3)) < 0.9
    assert linear_cka(x, x * np.logspace(0, 2, 10)) < 0.9  # anisotropic scaling changes CKA


def test_debiased_is_near_zero_for_independent_data_with_p_much_larger_than_n():
    rng = np.random.default_rng(2)
    n, p = 40, 1000
    x, y = rng.standard_normal((n, p)), rng.standard_normal((n, p))
    assert linear_cka(x, y) > 0.5  # the plain estimator is dominated by the bias
    assert abs(linear_cka(x, y, debiased=True)) < 0.1


@pytest.mark.parametrize("batch", [4, 5, 7, 16, 64, 250, 1000])
def test_minibatch_close_to_full_data_debiased_cka(batch):
    rng = np.random.default_rng(3)
    n = 3000
    x, y = related(rng, n, 6, 5, noise=2.0)
    full = linear_cka(x, y, debiased=True)
    acc = MinibatchCKA()
    starts = range(0, n - batch + 1, batch)  # whole batches only; every batch has >= 4 rows
    for s in starts:
        acc.update(x[s : s + batch], y[s : s + batch])
    assert acc.batches == len(starts)
    assert acc.value() == pytest.approx(full, abs=0.03)


def test_minibatch_single_batch_equals_debiased_and_batches_may_differ_in_size():
    rng = np.random.default_rng(4)
    x, y = related(rng, 500, 4, 3)
    acc = MinibatchCKA()
    acc.update(x, y)
    assert acc.value() == pytest.approx(linear_cka(x, y, debiased=True), abs=1e-12)
    uneven = MinibatchCKA()
    for lo, hi in [(0, 4), (4, 100), (100, 137), (137, 500)]:
        uneven.update(x[lo:hi], y[lo:hi])
    assert uneven.rows == 500
    assert 0.0 < uneven.value() <= 1.0


def test_minibatch_refuses_tiny_batches_and_empty_accumulator():
    acc = MinibatchCKA()
    with pytest.raises(MedtransferError, match="at least one update"):
        acc.value()
    with pytest.raises(MedtransferError, match="at least 4 rows"):
        acc.update(np.ones((3, 2)), np.ones((3, 2)))


def test_cka_bad_input():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((20, 3))
    with pytest.raises(MedtransferError, match="every neuron of y is constant"):
        linear_cka(x, np.ones((20, 2)))
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(MedtransferError, match="^y contains NaN"):
        linear_cka(x, bad)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(5, 60), p=st.integers(1, 10), q=st.integers(1, 10), log_scale=st.floats(-4, 4), seed=st.integers(0, 2**31 - 1))
def test_property_cka_in_unit_interval_and_orthogonal_invariant(n, p, q, log_scale, seed):
    rng = np.random.default_rng(seed)
    x, y = related(rng, n, p, q)
    value = linear_cka(x, y)
    assert -1e-12 <= value <= 1 + 1e-12
    rotated = linear_cka(10.0**log_scale * x @ random_orthogonal(rng, p), y)
    assert rotated == pytest.approx(value, abs=1e-9)


def test_procrustes_matches_scipy_orthogonal_procrustes():
    rng = np.random.default_rng(6)
    x, y = related(rng, 400, 7, 7)

    def normalised(a):
        a = a - a.mean(axis=0)
        return a / np.linalg.norm(a)

    a, b = normalised(x), normalised(y)
    rotation, _ = sla.orthogonal_procrustes(b, a)
    expected = np.linalg.norm(a - b @ rotation) ** 2
    assert procrustes_distance(x, y) == pytest.approx(expected, abs=1e-10)
    assert procrustes_distance(y, x) == pytest.approx(expected, abs=1e-10)


def test_procrustes_zero_for_rotations_and_scaling():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((300, 9))
    assert procrustes_distance(x, 5.0 * x @ random_orthogonal(rng, 9) + 2.0) == pytest.approx(0.0, abs=1e-12)
    assert procrustes_distance(x, x @ matrix_with_condition(rng, 9, 1e3)) > 0.1
    assert 0.0 <= procrustes_distance(x, rng.standard_normal((300, 4))) <= 2.0


@pytest.mark.parametrize("offset", [0.0, 0.5, 1e6])
def test_raw_product_route_equals_the_explicitly_centred_one(offset):
    """Biased CKA of float64 data comes from raw products centred algebraically unless a mean
    dominates (offset 1e6: the explicit two-pass route); both give the value of centred data."""
    from medtransfer.similarity import cka as module

    rng = np.random.default_rng(int(offset) % 97)
    x = rng.standard_normal((3000, 12)) + offset
    y = x[:, :5] @ rng.standard_normal((5, 9)) + rng.standard_normal((3000, 9)) - offset
    fast = module._biased_from_raw_products(x, y)
    if offset in (0.0, 1e6):
        assert (fast is None) == (offset > 0)
    xy, xx, yy, _ = module._hsic(x, y, debiased=False)
    assert linear_cka(x, y) == pytest.approx(xy / np.sqrt(xx * yy), abs=1e-12)
    xc, yc = x - x.mean(0), y - y.mean(0)
    plain = np.linalg.norm(xc.T @ yc) ** 2 / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc))
    assert linear_cka(x, y) == pytest.approx(plain, abs=1e-9)

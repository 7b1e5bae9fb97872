"""CCA, SVCCA, PWCCA: closed forms, invariances, an independent reference, and the cases where
the covariance-inverse route breaks (ill-conditioned maps, scales 1e-4..1e4, duplicated and
constant neurons)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medtransfer.errors import MedtransferError
from medtransfer.similarity import cca, pwcca, svcca
from medtransfer.similarity.canonical import canonical_correlations
from tests.similarity.reference import (
    cca_covariance_inverse,
    matrix_with_condition,
    orthonormal_centred,
    random_orthogonal,
)


def correlated(rng, n, p, q, strength=0.7):
    x = rng.standard_normal((n, p))
    y = strength * x @ rng.standard_normal((p, q)) / np.sqrt(p) + rng.standard_normal((n, q))
    return x, y


@pytest.mark.parametrize("n,p,q", [(500, 1, 1), (800, 5, 3), (2000, 12, 20), (3000, 40, 40)])
def test_agrees_with_covariance_inverse_reference(n, p, q):
    rng = np.random.default_rng(n + p + q)
    x, y = correlated(rng, n, p, q)
    result = cca(x, y)
    expected = cca_covariance_inverse(x, y)
    assert result.method == "cholesky"
    assert result.rho.shape == (min(p, q),)
    np.testing.assert_allclose(result.rho, expected, rtol=0, atol=1e-8)
    assert result.mean == pytest.approx(expected.mean(), abs=1e-8)
    assert isinstance(result.mean, float)


def test_robust_path_agrees_with_reference_on_well_conditioned_data(monkeypatch):
    import medtransfer.similarity.canonical as canonical

    rng = np.random.default_rng(3)
    x, y = correlated(rng, 1500, 10, 7)
    monkeypatch.setattr(canonical, "MAX_TRACE_INV", 0.0)  # force the QR path
    result = cca(x, y)
    assert result.method == "qr"
    np.testing.assert_allclose(result.rho, cca_covariance_inverse(x, y), rtol=0, atol=1e-10)


def test_self_similarity_is_one():
    x = np.random.default_rng(0).standard_normal((400, 10))
    result = cca(x, x)
    np.testing.assert_allclose(result.rho, 1.0, atol=1e-12)


@pytest.mark.parametrize("condition", [1.0, 1e3, 1e6, 1e8, 1e10])
def test_invertible_map_gives_one_up_to_condition_1e10(condition):
    rng = np.random.default_rng(int(np.log10(condition)))
    n, p = 3000, 16
    x = rng.standard_normal((n, p))
    a = matrix_with_condition(rng, p, condition)
    result = cca(x, x @ a + rng.standard_normal(p))
    if condition <= 1e3:  # beyond, directions of y fall under the shared rank cutoff and are absent
        assert result.rho.size == p
    assert result.rho.min() > 1 - 1e-8
    assert result.mean == pytest.approx(1.0, abs=1e-10)


@pytest.mark.parametrize("condition", [1.0, 1e4, 1e10])
def test_invertible_map_with_neuron_scales_1e_minus4_to_1e4(condition):
    rng = np.random.default_rng(7)
    n, p = 3000, 12
    scales = np.logspace(-4, 4, p)
    base = rng.standard_normal((n, p))
    x = base * scales
    y = (base @ matrix_with_condition(rng, p, condition)) * scales[::-1]
    result = cca(x, y)
    assert result.mean == pytest.approx(1.0, abs=1e-8)
    assert result.rho.min() > 1 - 1e-7


def test_covariance_inverse_reference_fails_where_cca_does_not():
    """The textbook route is wrong on a near-singular map; cca is not (why the robust path exists)."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2000, 16))
    y = x @ matrix_with_condition(rng, 16, 1e10) * np.logspace(-4, 4, 16)
    with np.errstate(all="ignore"):
        try:
            reference = cca_covariance_inverse(x, y)
            reference_error = float(np.nanmax(np.abs(reference - 1.0))) if np.isfinite(reference).any() else np.inf
        except np.linalg.LinAlgError:
            reference_error = np.inf
    assert reference_error > 1e-6
    assert cca(x, y).mean == pytest.approx(1.0, abs=1e-8)


def test_duplicated_neurons_add_no_direction():
    rng = np.random.default_rng(1)
    x, y = correlated(rng, 1000, 6, 5)
    duplicated = np.hstack([x, x[:, :3], 2.5 * x[:, 1:2]])
    result = cca(duplicated, y)
    assert result.method == "qr"
    assert result.rank_x == 6
    np.testing.assert_allclose(result.rho, cca(x, y).rho, atol=1e-10)
    assert cca(duplicated, x).mean == pytest.approx(1.0, abs=1e-12)


def test_constant_neurons_are_dropped_without_leaving_the_fast_path():
    rng = np.random.default_rng(2)
    x, y = correlated(rng, 1000, 6, 5)
    with_dead = np.hstack([np.zeros((1000, 2)), x, np.full((1000, 1), 0.1), np.full((1000, 1), -3e5)])
    result = cca(with_dead, y)
    assert result.method == "cholesky"
    assert result.rank_x == 6
    np.testing.assert_allclose(result.rho, cca(x, y).rho, atol=1e-12)


def test_rank_deficient_input_returns_min_rank_correlations():
    rng = np.random.default_rng(4)
    n = 1500
    w = rng.standard_normal((n, 3))
    x = w @ rng.standard_normal((3, 8))  # 8 neurons, rank 3
    y = 0.5 * w @ rng.standard_normal((3, 6)) + rng.standard_normal((n, 6))
    result = cca(x, y)
    assert (result.rank_x, result.rank_y) == (3, 6)
    assert result.rho.shape == (3,)
    np.testing.assert_allclose(result.rho, cca(w, y).rho, atol=1e-9)


def test_relu_activations_with_dead_and_duplicate_channels():
    """The case that breaks google/svcca: ReLU layers with dead channels and exact copies."""
    rng = np.random.default_rng(5)
    pre = rng.standard_normal((4000, 10))
    pre[:, 7] = -np.abs(pre[:, 7]) - 0.1  # always negative: a dead ReLU channel
    x = np.maximum(pre, 0.0)
    x = np.hstack([x, x[:, :2]])  # duplicated channels
    result = cca(x, 3.0 * x)
    assert result.rank_x == 9
    assert result.mean == pytest.approx(1.0, abs=1e-10)


def test_symmetric():
    rng = np.random.default_rng(6)
    x, y = correlated(rng, 900, 7, 4)
    np.testing.assert_allclose(cca(x, y).rho, cca(y, x).rho, atol=1e-12)


def test_one_dimensional_case_is_absolute_pearson():
    rng = np.random.default_rng(8)
    a = rng.standard_normal(500)
    b = -0.6 * a + rng.standard_normal(500)
    result = cca(a, b)
    assert result.rho.shape == (1,)
    assert result.mean == pytest.approx(abs(np.corrcoef(a, b)[0, 1]), abs=1e-12)


def test_independent_gaussian_null():
    """For independent X, Y: E sum(rho^2) ~ p q / n (Bartlett); mean over seeds within 4 standard errors."""
    n, p, q = 20000, 16, 12
    sums = [
        float(np.sum(cca(r.standard_normal((n, p)), r.standard_normal((n, q))).rho ** 2))
        for r in (np.random.default_rng(100 + s) for s in range(6))
    ]
    expected = p * q / n
    standard_error = np.sqrt(2 * p * q) / n / np.sqrt(len(sums))
    assert abs(np.mean(sums) - expected) < 4 * standard_error


def test_rows_below_neurons_refused():
    rng = np.random.default_rng(9)
    with pytest.raises(MedtransferError, match=r"p = 9 .* q = 2 .* n = 10 .*2 canonical correlations are exactly 1"):
        cca(rng.standard_normal((10, 9)), rng.standard_normal((10, 2)))
    with pytest.raises(MedtransferError, match=r"p = 2 .* q = 10 .* n = 10"):
        cca(rng.standard_normal((10, 2)), rng.standard_normal((10, 10)))
    assert cca(rng.standard_normal((10, 7)), rng.standard_normal((10, 2))).rho.size == 2


def test_forced_canonical_correlations_refused_for_cca_svcca_and_pwcca():
    """With p + q > n - 1 the column spaces must share p + q - (n - 1) directions: that many
    correlations are exactly 1 whatever the data. Exactly at p + q = n - 1 none is forced."""
    rng = np.random.default_rng(19)
    x, y = rng.standard_normal((80, 64)), rng.standard_normal((80, 64))
    with pytest.raises(MedtransferError, match=r"CCA .*p = 64 .*q = 64 .*n = 80.* 49 canonical"):
        cca(x, y)
    with pytest.raises(MedtransferError, match=r"PWCCA .*p = 64 .*q = 64 .*n = 80"):
        pwcca(x, y)
    with pytest.raises(MedtransferError, match=r"SVCCA after reduction .*n = 50"):
        svcca(rng.standard_normal((50, 200)), rng.standard_normal((50, 150)))
    for seed in range(5):
        r = np.random.default_rng(seed)
        rho = cca(r.standard_normal((80, 40)), r.standard_normal((80, 39))).rho
        assert rho.max() < 1 - 1e-6  # p + q = n - 1: no direction shared by construction


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_refused_naming_the_argument(bad):
    rng = np.random.default_rng(10)
    x, y = rng.standard_normal((50, 3)), rng.standard_normal((50, 3))
    x_bad, y_bad = x.copy(), y.copy()
    x_bad[4, 1] = bad
    y_bad[7, 2] = bad
    with pytest.raises(MedtransferError, match=r"^x contains NaN"):
        cca(x_bad, y)
    with pytest.raises(MedtransferError, match=r"^y contains NaN"):
        cca(x, y_bad)


def test_other_bad_input_refused():
    rng = np.random.default_rng(12)
    with pytest.raises(MedtransferError, match="same number of rows"):
        cca(rng.standard_normal((50, 3)), rng.standard_normal((49, 3)))
    with pytest.raises(MedtransferError, match="x must be a matrix"):
        cca(rng.standard_normal((50, 3, 2)), rng.standard_normal((50, 3)))
    with pytest.raises(MedtransferError, match="every neuron of y is constant"):
        cca(rng.standard_normal((50, 3)), np.ones((50, 2)))


def test_float32_and_integer_inputs_are_computed_in_float64():
    rng = np.random.default_rng(13)
    x, y = correlated(rng, 700, 5, 5)
    np.testing.assert_allclose(cca(x.astype(np.float32), y).rho, cca(x.astype(np.float32).astype(np.float64), y).rho, atol=1e-13)
    counts = rng.integers(0, 5, size=(700, 4))
    np.testing.assert_allclose(cca(counts, y).rho, cca(counts.astype(float), y).rho, atol=1e-13)


# Property-based: shapes, neuron scales and offsets drawn by hypothesis.
shapes = st.tuples(st.integers(1, 6), st.integers(1, 6), st.integers(0, 80))
log_scales = st.lists(st.floats(-4, 4), min_size=6, max_size=6)


@settings(max_examples=40, deadline=None)
@given(shape=shapes, scales=log_scales, seed=st.integers(0, 2**31 - 1))
def test_property_rho_sorted_in_unit_interval_and_scale_invariant(shape, scales, seed):
    p, q, extra = shape
    n = p + q + 20 + extra
    rng = np.random.default_rng(seed)
    x, y = correlated(rng, n, p, q)
    base = cca(x, y)
    assert base.rho.shape == (min(p, q),)
    assert np.all(base.rho >= 0.0) and np.all(base.rho <= 1.0)
    assert np.all(np.diff(base.rho) <= 0.0)
    factors = 10.0 ** np.asarray(scales)
    scaled = cca(x * factors[:p] + rng.standard_normal(p), y * factors[-q:])
    np.testing.assert_allclose(scaled.rho, base.rho, atol=1e-8)
    np.testing.assert_allclose(cca(y, x).rho, base.rho, atol=1e-10)


@settings(max_examples=30, deadline=None)
@given(
    p=st.integers(1, 8),
    log_condition=st.floats(0, 10),
    log_scale=st.floats(-4, 4),
    seed=st.integers(0, 2**31 - 1),
)
def test_property_invertible_maps_give_one(p, log_condition, log_scale, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((60 + 10 * p, p))
    a = matrix_with_condition(rng, p, 10.0**log_condition) * 10.0**log_scale
    result = cca(x, x @ a)
    assert result.rho.size == (p if log_condition <= 3 else result.rank_y) <= p  # shared rank cutoff
    assert result.mean == pytest.approx(1.0, abs=1e-8)


def test_svcca_keeps_the_top_variance_directions():
    rng = np.random.default_rng(14)
    n = 2000
    basis = orthonormal_centred(rng, n, 6)
    x = basis @ np.diag([10.0, 8.0, 6.0, 0.01, 0.01, 0.01]) @ random_orthogonal(rng, 6)
    y = basis[:, :2] + 0.3 * rng.standard_normal((n, 2))
    reduced = svcca(x, y, keep=0.99)
    assert reduced.rank_x == 3
    np.testing.assert_allclose(reduced.rho, cca(basis[:, :3], y).rho, atol=1e-10)
    np.testing.assert_allclose(svcca(x, y, keep=1.0).rho, cca(x, y).rho, atol=1e-8)
    with pytest.raises(MedtransferError, match="keep"):
        svcca(x, y, keep=1.5)


def test_pwcca_closed_form():
    """x = [10 s1, s2], y = [s1, 0.5 s2 + sqrt(0.75) s3] with orthonormal s: rho = (1, 0.5), weights 10 : 1."""
    rng = np.random.default_rng(15)
    s = orthonormal_centred(rng, 500, 3)
    x = np.column_stack([10 * s[:, 0], s[:, 1]])
    y = np.column_stack([s[:, 0], 0.5 * s[:, 1] + np.sqrt(0.75) * s[:, 2]])
    np.testing.assert_allclose(cca(x, y).rho, [1.0, 0.5], atol=1e-12)
    assert pwcca(x, y) == pytest.approx((10 * 1.0 + 1 * 0.5) / 11, abs=1e-10)
    # With more independent directions in x than in y, the weights come from y's neurons.
    wide = np.column_stack([x, rng.standard_normal(500)])
    y_weighted = np.column_stack([s[:, 0], 4 * (0.5 * s[:, 1] + np.sqrt(0.75) * s[:, 2])])
    rho = cca(wide, y_weighted).rho
    assert pwcca(wide, y_weighted) == pytest.approx((1 * rho[0] + 4 * rho[1]) / 5, abs=1e-3)


def test_pwcca_of_invertible_map_is_one():
    rng = np.random.default_rng(16)
    x = rng.standard_normal((800, 6))
    assert pwcca(x, x @ matrix_with_condition(rng, 6, 1e6)) == pytest.approx(1.0, abs=1e-9)


def test_large_offsets_are_centred_exactly():
    """Neurons whose mean dwarfs their spread (1e4 vs 1e-4) take the explicit-centring route."""
    x = np.random.default_rng(17).standard_normal((3000, 8))
    result = cca(x * 1e-4 + 1e4, x)
    assert result.mean == pytest.approx(1.0, abs=1e-10)
    assert result.rank_x == 8
    # only the second side offset: its check fails after the first side's Gram matrix was taken
    result = cca(x, x * 1e-4 + 1e4)
    assert result.mean == pytest.approx(1.0, abs=1e-10)
    assert result.rank_y == 8


@pytest.mark.parametrize("duplicate", [False, True])
def test_peak_extra_memory_at_most_twice_the_inputs(duplicate):
    import tracemalloc

    rng = np.random.default_rng(18)
    x, y = correlated(rng, 5000, 40, 40)
    if duplicate:
        x[:, -1] = x[:, 0]
    tracemalloc.start()
    try:
        result = cca(x, y)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.method == ("qr" if duplicate else "cholesky")
    assert peak <= 2 * (x.nbytes + y.nbytes)


@settings(max_examples=30, deadline=None)
@given(
    p=st.integers(1, 6),
    q=st.integers(1, 6),
    copies=st.lists(st.tuples(st.integers(0, 5), st.floats(-4, 4)), max_size=3),
    constants=st.lists(st.floats(-1e3, 1e3), max_size=2),
    seed=st.integers(0, 2**31 - 1),
)
def test_property_duplicated_and_constant_neurons_change_nothing(p, q, copies, constants, seed):
    rng = np.random.default_rng(seed)
    x, y = correlated(rng, 80 + 5 * p, p, q)
    extra = [10.0**log_scale * x[:, j % p] for j, log_scale in copies] + [np.full(x.shape[0], c) for c in constants]
    padded = np.column_stack([x, *extra]) if extra else x
    result = cca(padded, y)
    assert result.rank_x == p
    np.testing.assert_allclose(result.rho, cca(x, y).rho, atol=1e-9)


def _matrix_with_singular_values(s: np.ndarray, q: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.standard_normal((s.size, s.size)))
    v, _ = np.linalg.qr(rng.standard_normal((q, s.size)))
    return (u * s) @ v.T


@pytest.mark.parametrize("transpose", [False, True])
def test_canonical_correlations_by_eigenvalues_match_known_singular_values(transpose):
    s = np.sort(np.random.default_rng(1).uniform(1e-3, 1.0, 200))[::-1]
    m = _matrix_with_singular_values(s, 260, seed=2)
    rho = canonical_correlations(m.T if transpose else m)
    assert rho.shape == (200,)
    np.testing.assert_allclose(rho, s, rtol=0, atol=1e-12)


def test_canonical_correlations_stay_exact_for_tiny_values():
    # Roots of eigenvalues would lose half the digits here (error ~ eps / rho); the SVD must take over.
    s = np.array([0.9, 0.5, 1e-5, 1e-9, 1e-12])
    rho = canonical_correlations(_matrix_with_singular_values(s, 7, seed=3))
    np.testing.assert_allclose(rho, s, rtol=1e-6, atol=1e-15)
    # Just above the threshold the eigenvalue route is kept, and is still within 1e-9.
    s = np.array([0.9, 0.5, 1e-3, 1e-5, 2e-6])
    np.testing.assert_allclose(canonical_correlations(_matrix_with_singular_values(s, 7, seed=4)), s, atol=1e-9)


@pytest.mark.parametrize("kind", ["well-conditioned", "ill-conditioned", "constant-neuron"])
def test_p_by_p_algebra_on_the_tensor_device_matches_numpy(kind, monkeypatch):
    """The Cholesky, triangular-inverse and eigenvalue steps that run on a CUDA tensor's device,
    exercised here with torch on the CPU, agree with the numpy path (cca, pwcca)."""
    import torch

    from medtransfer.similarity import canonical

    rng = np.random.default_rng(18)
    x = rng.standard_normal((2000, 24)) * rng.uniform(0.1, 10.0, 24)
    y = x @ rng.standard_normal((24, 20)) / 5 + rng.standard_normal((2000, 20))
    if kind == "ill-conditioned":
        y[:, 5] = y[:, 4] * 3.0 + 1e-12 * rng.standard_normal(2000)  # the robust path must take over
    if kind == "constant-neuron":
        x[:, 2] = 4.5
    expected, expected_pw = cca(x, y), pwcca(x, y)
    calls = []
    real = canonical._whitener_torch

    def spy(*args):
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(canonical, "_algebra_device", lambda a, size: torch.device("cpu"))
    monkeypatch.setattr(canonical, "_whitener_torch", spy)
    result = cca(x, y)
    assert calls, "the device algebra was not used"
    assert result.method == expected.method and result.rank_x == expected.rank_x
    np.testing.assert_allclose(result.rho, expected.rho, rtol=0, atol=1e-12)
    assert pwcca(x, y) == pytest.approx(expected_pw, abs=1e-12)
    assert cca(x, y, precision="float32").mean == pytest.approx(expected.mean, abs=1e-5)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("kind", ["numpy", "torch", "float32"])
def test_non_finite_found_without_a_separate_pass_still_named_and_silent(bad, kind, recwarn):
    import torch

    rng = np.random.default_rng(11)
    x, y = rng.standard_normal((60, 4)), rng.standard_normal((60, 3))
    y[5, 0] = bad
    convert = {"numpy": lambda a: a, "torch": torch.from_numpy, "float32": lambda a: a.astype(np.float32)}[kind]
    for function in (cca, pwcca):
        with pytest.raises(MedtransferError, match=r"^y contains NaN or infinite values"):
            function(convert(x), convert(y))
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_values_whose_squares_overflow_are_rescaled_not_refused_or_garbled():
    rng = np.random.default_rng(12)
    x, y = rng.standard_normal((80, 4)), rng.standard_normal((80, 3))
    exact = cca(x, y)
    for scale in (1e100, 1e160, 1e250, 1e-160, 1e-250):
        assert cca(x * scale, y).mean == pytest.approx(exact.mean, abs=1e-12), scale
    # Values whose very sum overflows float64 are averaged at a smaller scale.
    big = np.abs(x) * 1e307 + 1e307
    with np.errstate(over="ignore"):
        assert np.isinf(big.sum(axis=0)).all()
    assert cca(big, y).mean == pytest.approx(cca(np.abs(x), y).mean, abs=1e-12)


def _well_conditioned_float32(n: int, p: int, seed: int, offset: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, p)) * rng.uniform(0.1, 10.0, p) + offset
    y = x @ rng.standard_normal((p, p)) / np.sqrt(p) + rng.standard_normal((n, p))
    return x.astype(np.float32), y.astype(np.float32)


@pytest.mark.parametrize("offset", [0.0, 1e4])
def test_float32_precision_agrees_with_float64_on_the_same_data(offset):
    x, y = _well_conditioned_float32(6000, 48, seed=13, offset=offset)
    exact = cca(x.astype(np.float64), y.astype(np.float64))
    fast = cca(x, y, precision="float32")
    assert fast.method == "cholesky-float32"
    np.testing.assert_allclose(fast.rho, exact.rho, rtol=0, atol=1e-5)
    assert fast.mean == pytest.approx(exact.mean, abs=1e-6)
    # The bound is not loose enough to hide a wrong computation: float32 differs from float64.
    assert np.abs(fast.rho - exact.rho).max() > 1e-12


def test_float32_precision_falls_back_to_float64_when_ill_conditioned():
    rng = np.random.default_rng(14)
    x = rng.standard_normal((3000, 12))
    u, _ = np.linalg.qr(rng.standard_normal((12, 12)))
    a = (u * np.logspace(0, -10, 12)) @ u.T  # condition number 1e10
    result = cca(x, x @ a, precision="float32")
    assert result.method in ("cholesky", "qr")
    np.testing.assert_allclose(result.rho, 1.0, atol=1e-6)


def test_float32_precision_on_torch_tensors_and_constant_neurons():
    import torch

    x, y = _well_conditioned_float32(4000, 16, seed=15)
    x[:, 3] = 7.25  # a constant neuron is dropped on the float32 path too
    exact = cca(x.astype(np.float64), y.astype(np.float64))
    fast = cca(torch.from_numpy(x), torch.from_numpy(y), precision="float32")
    assert fast.method == "cholesky-float32" and fast.rank_x == 15
    np.testing.assert_allclose(fast.rho, exact.rho, rtol=0, atol=1e-5)


def test_unknown_precision_refused():
    x, y = _well_conditioned_float32(100, 3, seed=16)
    with pytest.raises(MedtransferError, match="precision must be 'float64' or 'float32'"):
        cca(x, y, precision="half")


def test_tensor_centring_into_float32_matches_numpy_chunk_by_chunk(monkeypatch):
    import torch

    from medtransfer.similarity import _linalg

    monkeypatch.setattr(_linalg, "_CHUNK_ELEMENTS", 64)  # many chunks of a few rows
    x, y = _well_conditioned_float32(301, 5, seed=17, offset=3.0)
    x64 = x.astype(np.float64)
    z_t, mx_t, my_t = _linalg.centred_concat(torch.from_numpy(x64), torch.from_numpy(y), "float32")
    z_n, mx_n, my_n = _linalg.centred_concat(x64, y, "float32")
    assert z_t.dtype == torch.float32 and z_n.dtype == np.float32
    np.testing.assert_array_equal(z_t.numpy(), z_n)
    np.testing.assert_array_equal(mx_t.scale, mx_n.scale)
    np.testing.assert_array_equal(my_t.varying, my_n.varying)
    np.testing.assert_allclose(z_n, np.hstack([x64 - x64.mean(0), y - y.mean(0, dtype=np.float64)]), rtol=0, atol=1e-6)


def test_whitener_reads_only_the_lower_triangle_and_returns_clean_factors():
    from medtransfer.similarity.canonical import _whitener

    rng = np.random.default_rng(19)
    a = rng.standard_normal((200, 30))
    c = np.corrcoef(a, rowvar=False)
    garbage = c.copy()
    garbage[np.triu_indices(30, 1)] = rng.standard_normal(30 * 29 // 2) * 1e3  # as the centred Gram leaves it
    lower, inverse = _whitener(garbage)
    np.testing.assert_array_equal(np.triu(lower, 1), 0.0)
    np.testing.assert_array_equal(np.triu(inverse, 1), 0.0)
    np.testing.assert_allclose(lower @ lower.T, c, atol=1e-12)
    np.testing.assert_allclose(inverse @ lower, np.eye(30), atol=1e-12)


def test_gram_lower_only_matches_the_full_gram_below_the_diagonal():
    from medtransfer.similarity import _linalg

    rng = np.random.default_rng(20)
    for a in (rng.standard_normal((50, 7)), np.asfortranarray(rng.standard_normal((50, 7))),
              rng.standard_normal((50, 14))[:, ::2], rng.standard_normal((50, 7)).astype(np.float32)):
        full = _linalg.gram(a)
        expected = a.astype(np.float64).T @ a.astype(np.float64)
        np.testing.assert_allclose(full, expected, rtol=1e-5 if a.dtype == np.float32 else 1e-12)
        np.testing.assert_array_equal(full, full.T)
        np.testing.assert_array_equal(np.tril(_linalg.gram(a, lower_only=True)), np.tril(full))
    x, y = rng.standard_normal((40, 5)), np.asfortranarray(rng.standard_normal((40, 3)))
    np.testing.assert_allclose(_linalg.cross(x, y), x.T @ y, rtol=1e-12)
    np.testing.assert_allclose(_linalg.cross(y, x[:, ::2]), y.T @ x[:, ::2], rtol=1e-12)


@pytest.mark.parametrize("eps", [1e-2, 1e-3, 1e-4, 3e-6, 1e-6, 1e-8])
def test_one_rank_rule_for_cca_and_the_gram_form_of_the_bootstrap_and_null(eps):
    """A near-duplicate neuron (x_7 = x_1 + eps * noise) on the side with fewer neurons: above the
    shared cutoff both cca() and the batched Gram form keep it, below both drop it, and the two
    means agree (they disagreed by 0.03 when each form had its own rule)."""
    import torch

    from medtransfer.similarity.batched import cca_mean_from_grams

    rng = np.random.default_rng(int(-np.log10(eps) * 10))
    n = 2000
    x = rng.standard_normal((n, 6))
    y = 0.5 * np.hstack([x, x[:, :2]]) + rng.standard_normal((n, 8))
    x = np.hstack([x, x[:, :1] + eps * rng.standard_normal((n, 1))])
    result = cca(x, y)
    z = np.hstack([x, y])
    z = z - z.mean(axis=0)
    g = torch.as_tensor(z.T @ z)[None]
    gram_form = float(cca_mean_from_grams(g[:, :7, :7], g[:, 7:, 7:], g[:, :7, 7:])[0])
    assert result.rank_x == (7 if eps >= 1e-4 else 6)
    assert gram_form == pytest.approx(result.mean, abs=1e-7)


def test_pwcca_google_follows_the_uncentred_weighting_and_differs_from_pwcca():
    """google's compute_pwcca weights by projections of uncentred neurons onto unwhitened rotated
    neurons: equal to a step-by-step reference; on ReLU-like data with offsets it moves away from
    Morcos et al.'s pwcca; with centred, orthonormal x (whitening is then the identity) they agree."""
    from medtransfer.similarity import pwcca_google
    from tests.similarity.reference import pwcca_uncentred_reference

    rng = np.random.default_rng(23)
    x = np.maximum(rng.standard_normal((600, 5)) + 0.5, 0.0) * rng.uniform(0.5, 3.0, 5)
    y = np.maximum(x @ rng.standard_normal((5, 7)) + rng.standard_normal((600, 7)), 0.0)
    assert pwcca_google(x, y) == pytest.approx(pwcca_uncentred_reference(x, y), abs=1e-10)
    assert abs(pwcca_google(x, y) - pwcca(x, y)) > 1e-3
    q = orthonormal_centred(rng, 600, 5)
    y2 = q @ rng.standard_normal((5, 7)) + 0.05 * rng.standard_normal((600, 7))
    assert pwcca_google(q, y2) == pytest.approx(pwcca(q, y2), abs=1e-10)


@pytest.mark.parametrize("offset", [0.0, 1e5])
def test_blocked_pass_over_rows_agrees_with_centred_products_and_other_layouts(offset):
    # Narrow C-ordered float64 data are summed and multiplied block by block over the rows; the
    # last block here is partial. Offset 1e5: the means dominate (centring the raw products would
    # lose 10 digits), the explicit centring takes over.
    from medtransfer.similarity import _linalg as la

    rng = np.random.default_rng(31)
    p, q = 6, 9
    rows = la.FUSED_BLOCK_BYTES // (8 * (p + q))
    n = 3 * rows + 7
    x, y = correlated(rng, n, p, q)
    x, y = x + offset, y - offset
    assert la._fusable(x, y) and not la._fusable(np.asfortranarray(x), y)
    blocks = la.centred_gram(x, y, 10.0)
    xc, yc = x - x.mean(axis=0), y - y.mean(axis=0)
    xc, yc = xc - xc.mean(axis=0), yc - yc.mean(axis=0)
    sx, sy = blocks.x.scale, blocks.y.scale
    np.testing.assert_allclose(np.tril(blocks.gxx), np.tril((xc * sx).T @ (xc * sx)), rtol=1e-9, atol=1e-9 * n)
    np.testing.assert_allclose(np.tril(blocks.gyy), np.tril((yc * sy).T @ (yc * sy)), rtol=1e-9, atol=1e-9 * n)
    np.testing.assert_allclose(blocks.gxy, (xc * sx[:, None].T).T @ (yc * sy), rtol=1e-9, atol=1e-9 * n)
    expected = cca_covariance_inverse(xc, yc)
    strided_y = np.hstack([y, y])[:, :q]  # neither C- nor Fortran-ordered: the full-length products
    for a, b in ((x, y), (np.asfortranarray(x), y), (x, strided_y)):
        np.testing.assert_allclose(cca(a, b).rho, expected, rtol=0, atol=1e-8)


def test_nan_in_a_blocked_pass_is_refused_naming_the_side():
    rng = np.random.default_rng(32)
    x, y = correlated(rng, 5000, 4, 4)
    y[4321, 2] = np.nan
    with pytest.raises(MedtransferError, match=r"\by\b"):
        cca(x, y)

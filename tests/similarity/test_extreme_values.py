"""Every similarity measure on data with huge offsets and extreme scales: exact to the float64
precision of the centred data, or a MedtransferError naming x or y.

The reference for a transformed input ``xt`` is the same measure on ``xt`` centred *exactly* (the
offset subtracted where that subtraction is exact, Sterbenz) and brought back to unit scale: the
float64 data the user actually passed, without the offset. An offset of 1e12 times the spread
quantises the data to about 1e-4 of the spread; that is the data's own precision, and the
measure must be exact on those quantised values, not merely close to the untransformed ones.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medtransfer.errors import MedtransferError
from medtransfer.similarity import MinibatchCKA, cca, linear_cka, procrustes_distance, pwcca, svcca
from medtransfer.similarity.registry import MEASURES as REGISTRY


def _minibatch_cka(x, y) -> float:
    accumulator = MinibatchCKA()
    half = x.shape[0] // 2
    accumulator.update(x[:half], y[:half])
    accumulator.update(x[half:], y[half:])
    return accumulator.value()


#: The core measures: (name, callable(x, y) -> float or array). CCA and SVCCA give every
#: canonical correlation, and minibatch CKA is accumulated over two batches.
CORE_MEASURES = [
    ("cca", lambda x, y: cca(x, y).rho),
    ("svcca", lambda x, y: svcca(x, y).rho),
    ("pwcca", pwcca),
    ("linear_cka", linear_cka),
    ("linear_cka_debiased", lambda x, y: linear_cka(x, y, debiased=True)),
    ("procrustes_distance", procrustes_distance),
    ("minibatch_cka", _minibatch_cka),
]

#: What the property tests iterate over: (name, callable, translation_invariant). Every measure of
#: the registry is included; one that is not invariant to per-neuron offsets (RSA, k-NN) is tested
#: under scaling only.
MEASURES_UNDER_TEST = [(name, f, True) for name, f in CORE_MEASURES] + [
    (f"registry:{m.name}", m, "translation" in m.invariances) for m in REGISTRY.values()
    if "isotropic scale" in m.invariances  # every case rescales a side; pwcca_google claims no invariance
]
MEASURE_IDS = [m[0] for m in MEASURES_UNDER_TEST]
TRANSLATION_INVARIANT = [m for m in MEASURES_UNDER_TEST if m[2]]

#: Absolute agreement with the exactly centred data (the measures lie in [0, 1] or [0, 2]).
TOLERANCE = 1e-9


def _pair(seed: int, n: int = 48, p: int = 5, q: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, p)) * rng.uniform(0.5, 2.0, p)
    y = x[:, :q] @ rng.standard_normal((q, q)) + rng.standard_normal((n, q))
    return x, y


def _transform(a: np.ndarray, log10_offset: float | None, log10_scale: int, rng: np.random.Generator):
    """``(transformed (n, p), the same data exactly centred at unit scale)``; no offset when
    ``log10_offset`` is None."""
    signs = rng.choice([-1.0, 1.0], a.shape[1])
    offset = np.zeros(a.shape[1]) if log10_offset is None else 10.0**log10_offset * a.std(axis=0) * signs
    scale = 10.0**log10_scale
    transformed = (a + offset) * scale
    shift = offset * scale  # within a factor 2 of every value when the offset dominates: exact subtraction
    return transformed, (transformed - shift) / scale


def _assert_exact_or_named(name, measure, xt, yt, x_ref, y_ref) -> None:
    expected = np.asarray(measure(x_ref, y_ref), dtype=np.float64)
    try:
        got = np.asarray(measure(xt, yt), dtype=np.float64)
    except MedtransferError as error:  # allowed only when it names the side at fault, and not as "constant":
        message = str(error)  # every neuron here varies
        assert message.startswith(("x ", "y ")) or " of x" in message or " of y" in message, (name, error)
        assert "constant" not in message, (name, error)
        return
    assert got.shape == expected.shape, name
    assert np.all(np.isfinite(got)), (name, got)
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE, err_msg=name)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    side=st.sampled_from(["x", "y", "both"]),
    log10_offset=st.floats(0.0, 12.0),
    log10_scale=st.integers(-150, 150),
)
def test_property_every_measure_is_exact_under_offsets_and_scales(seed, side, log10_offset, log10_scale):
    x, y = _pair(seed)
    for offsets in (True, False):
        rng = np.random.default_rng(seed + 1)
        log10 = log10_offset if offsets else None
        xt, x_ref = _transform(x, log10, log10_scale, rng) if side in ("x", "both") else (x, x)
        yt, y_ref = _transform(y, log10, -log10_scale, rng) if side in ("y", "both") else (y, y)
        for name, measure, translation_invariant in MEASURES_UNDER_TEST:
            if translation_invariant == offsets:
                _assert_exact_or_named(name, measure, xt, yt, x_ref, y_ref)


@pytest.mark.parametrize(("name", "measure", "_"), TRANSLATION_INVARIANT, ids=[m[0] for m in TRANSLATION_INVARIANT])
@pytest.mark.parametrize("offset", [1e10, 3e10, 1e12, -1e12])
def test_offsets_of_the_issue_give_the_exact_answer(name, measure, _, offset):
    x, y = _pair(3, n=60, p=10, q=6)
    xt = x + offset
    x_ref = xt - offset  # exact (Sterbenz)
    _assert_exact_or_named(name, measure, xt, y, x_ref, y)
    # and not merely the answer on differently rounded data: the quantised data are what was passed
    assert np.abs(x_ref - x).max() > 1e-7


def test_cca_keeps_every_varying_neuron_under_a_large_offset():
    x, y = _pair(4, n=200, p=10, q=10)
    result = cca(x + 1e10, y)
    assert result.rank_x == 10
    assert result.mean == pytest.approx(cca((x + 1e10) - 1e10, y).mean, abs=TOLERANCE)
    # a genuinely constant neuron next to them is still dropped, at any offset
    with_constant = np.hstack([x + 1e10, np.full((200, 1), 1e10 + 0.1)])
    assert cca(with_constant, y).rank_x == 10


@pytest.mark.parametrize(("name", "measure"), CORE_MEASURES, ids=[m[0] for m in CORE_MEASURES])
@pytest.mark.parametrize("scale", [1e200, 1e-200, 1e300])
@pytest.mark.parametrize("side", ["x", "y", "both"])
def test_extreme_scales_beyond_the_property_range(name, measure, scale, side):
    x, y = _pair(5)
    xt = x * scale if side in ("x", "both") else x
    yt = y * scale if side in ("y", "both") else y
    _assert_exact_or_named(name, measure, xt, yt, xt / scale if side != "y" else x, yt / scale if side != "x" else y)


def test_torch_tensors_get_the_same_exact_answers():
    import torch

    x, y = _pair(6)
    xt, yt = (x + 1e11 * x.std(0)) * 1e-120, y * 1e140
    x_ref, y_ref = (xt - 1e11 * x.std(0) * 1e-120) / 1e-120, yt / 1e140
    for name, measure in CORE_MEASURES:
        _assert_exact_or_named(name, measure, torch.from_numpy(xt), torch.from_numpy(yt), x_ref, y_ref)


def test_a_constant_side_is_refused_by_name_at_any_offset():
    x, y = _pair(7)
    constant = np.full((x.shape[0], 3), 1e12 + 0.5)
    for name, measure, _ in TRANSLATION_INVARIANT:
        with pytest.raises(MedtransferError, match="of y is constant"):
            measure(x, constant)

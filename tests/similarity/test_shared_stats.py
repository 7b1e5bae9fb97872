"""The statistics several measures share (similarity.pairstats) give the numbers the per-measure
computation gives: point values bit for bit, intervals and nulls up to rounding."""

from __future__ import annotations

import numpy as np
import pytest

from medtransfer.similarity import bootstrap as boot
from medtransfer.similarity import score_repeats
from medtransfer.similarity.pairstats import PairStats
from medtransfer.similarity.registry import get
from medtransfer.similarity.sampling import shared_stats

MEASURES = ("cca", "cka", "cca_r2", "procrustes")


def repeats(seed: int, images: int, k: int, p: int, q: int, pool: int, n_repeats: int = 3,
            dtype=np.float32) -> tuple[list, list, list]:
    """Repeats of two coupled representations over images drawn from a pool (image-major rows)."""
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((pool, k, 6))
    mix_x, mix_y = rng.standard_normal((6, p)), rng.standard_normal((6, q))
    xs, ys, picked = [], [], []
    for _ in range(n_repeats):
        img = np.sort(rng.choice(pool, size=images, replace=False))
        lat = latent[img].reshape(-1, 6)
        x = np.maximum(lat @ mix_x + rng.standard_normal((images * k, p)), 0.0) + 3.0
        y = lat @ mix_y + 0.8 * rng.standard_normal((images * k, q))
        xs.append(x.astype(dtype))
        ys.append(y.astype(dtype))
        picked.append(img)
    return xs, ys, picked


@pytest.mark.parametrize("images,k,dtype", [(12, 40, np.float32), (40, 12, np.float32), (12, 40, np.float64)])
def test_shared_statistics_give_the_per_measure_numbers(images, k, dtype):
    # 12 images: jackknife influences and the null's image-pair cross blocks (permutations > images);
    # 40 images: derivative influences and the direct cross products of the first batch.
    xs, ys, picked = repeats(1, images, k, 7, 5, pool=60, dtype=dtype)
    shared = shared_stats(xs, ys, k)
    settings = dict(n_images=60, ci=0.95, resamples=300, permutations=150)
    for j, name in enumerate(MEASURES):
        alone = score_repeats(xs, ys, picked, k, name, seed=11 + j, **settings)
        together = score_repeats(xs, ys, picked, k, name, seed=11 + j, shared=shared, **settings)
        direct = np.array([get(name)(x, y) for x, y in zip(xs, ys)])
        np.testing.assert_array_equal(together.values, direct)  # the data-level functions' own values
        np.testing.assert_array_equal(alone.values, direct)
        for field in ("ci_low", "ci_high", "draws_ci_low", "draws_ci_high", "null_mean", "null_p95", "p_value",
                      "adjusted"):
            assert np.isfinite(getattr(alone, field)), (name, field)
            np.testing.assert_allclose(getattr(together, field), getattr(alone, field), rtol=1e-9, atol=1e-12,
                                       err_msg=f"{name} {field}")
        np.testing.assert_allclose(together.resamples, alone.resamples, rtol=1e-9, atol=1e-12)
    assert shared[0].cached("pair_blocks") is not None or images > 150


def test_shared_null_matches_a_straightforward_permutation_loop():
    """Null values from the shared cross blocks against the measure of each permuted copy of y."""
    xs, ys, _ = repeats(2, 10, 30, 6, 4, pool=10, n_repeats=1, dtype=np.float64)
    x, y = xs[0], ys[0]
    perms = boot.random_permutations(10, 40, np.random.default_rng(3))
    stats = PairStats(x, y, 30)
    for name in ("cca", "cka"):
        fast = boot.permuter(x, y, 30, name, stats)(perms)
        slow = [get(name)(x, y.reshape(10, 30, -1)[pi].reshape(300, -1)) for pi in perms]
        np.testing.assert_allclose(fast, slow, rtol=1e-9, atol=1e-12)
    assert stats.cached("pair_blocks") is not None  # 40 permutations > 10 images: built once, used by both


def test_shared_influences_match_fresh_ones():
    xs, ys, _ = repeats(4, 50, 6, 5, 5, pool=50, n_repeats=1)
    x, y = xs[0], ys[0]
    stats = PairStats(x, y, 6)
    for name in ("cca", "cka", "procrustes", "angular_shape"):
        value, grad = boot.influence(x, y, 6, get(name), stats)
        fresh_value, fresh_grad = boot.influence(x, y, 6, get(name))
        assert value == pytest.approx(fresh_value, rel=1e-12)
        np.testing.assert_allclose(grad, fresh_grad, rtol=1e-8, atol=1e-14)


def test_point_value_errors_are_each_measures_own():
    """A pair CCA refuses (too few rows for its channels) still gets its CKA, as before."""
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((20, 12)).astype(np.float32), rng.standard_normal((20, 12)).astype(np.float32)
    stats = PairStats(x, y, 4)
    with pytest.raises(Exception, match="canonical correlations are exactly 1"):
        stats.point_value(get("cca"))
    assert stats.point_value(get("cka")) == get("cka")(x, y)

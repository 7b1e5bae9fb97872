"""The statistics several measures share (similarity.pairstats) give the numbers the per-measure
computation gives: point values bit for bit, intervals and nulls up to rounding."""

from __future__ import annotations

import numpy as np
import pytest

from medtransfer.errors import MedtransferError
from medtransfer.similarity import bootstrap as boot
from medtransfer.similarity import score_repeats
from medtransfer.similarity.pairstats import PairStats
from medtransfer.similarity.registry import get
from medtransfer.similarity.sampling import score_measures, shared_stats

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


@pytest.mark.parametrize("images,k,table_bytes", [
    (12, 40, None),      # all permutations of both measures at once from one table of image-pair blocks
    (30, 10, 4096),      # the same one x image at a time, where the table would not fit in memory
    (40, 4, 4096),       # images of 4 rows: each measure's null drawn batch by batch, direct products
])
def test_score_measures_gives_each_measures_score_repeats(monkeypatch, images, k, table_bytes):
    if table_bytes is not None:
        monkeypatch.setattr(boot, "MAX_PAIR_BLOCK_BYTES", table_bytes)
    xs, ys, picked = repeats(6, images, k, 6, 5, pool=60)
    measures, seeds = ("cca", "cka", "rsa_pearson", "procrustes"), [3, 4, 5, 6]
    settings = dict(n_images=60, ci=0.9, resamples=200, permutations=150)
    together = score_measures(xs, ys, picked, k, measures, seeds, **settings)
    assert list(together) == list(measures)
    for name, seed in zip(measures, seeds):
        alone = score_repeats(xs, ys, picked, k, name, seed=seed, **settings)
        got = together[name]
        np.testing.assert_array_equal(got.values, alone.values)
        for field in ("mean", "ci_low", "ci_high", "null_mean", "null_p95", "p_value", "adjusted"):
            np.testing.assert_allclose(getattr(got, field), getattr(alone, field), rtol=1e-9, atol=1e-12,
                                       err_msg=f"{name} {field}")
        assert np.isfinite(got.p_value)


def test_score_measures_early_stop_and_errors_per_measure():
    # Independent sides: the null stops after its first batch (Besag & Clifford) as score_repeats' does;
    # CCA with more channels than rows is refused while CKA is scored.
    rng = np.random.default_rng(8)
    xs = [rng.standard_normal((40 * 5, 6)).astype(np.float32) for _ in range(2)]
    ys = [rng.standard_normal((40 * 5, 6)).astype(np.float32) for _ in range(2)]
    picked = [np.arange(40), np.arange(40)]
    settings = dict(n_images=40, ci=0.95, resamples=100, permutations=999)
    together = score_measures(xs, ys, picked, 5, ("cca", "cka"), [1, 2], **settings)
    for name, seed in (("cca", 1), ("cka", 2)):
        alone = score_repeats(xs, ys, picked, 5, name, seed=seed, **settings)
        np.testing.assert_allclose(together[name].p_value, alone.p_value, rtol=1e-12)
        np.testing.assert_allclose(together[name].null_mean, alone.null_mean, rtol=1e-9)
    narrow = [x[:10] for x in xs]
    out = score_measures(narrow, [y[:10] for y in ys], [np.arange(2), np.arange(2)], 5, ("cca", "cka"), [1, 2],
                         **settings)
    assert isinstance(out["cca"], MedtransferError) and "canonical correlations" in str(out["cca"])
    assert np.isfinite(out["cka"].mean)


def test_null_cross_routes_agree(monkeypatch):
    xs, ys, _ = repeats(9, 15, 10, 5, 4, pool=15, n_repeats=1, dtype=np.float64)
    perms = boot.random_permutations(15, 40, np.random.default_rng(1))
    table_stats = PairStats(xs[0], ys[0], 10)
    assert boot.null_route(table_stats, 40, chunked=True) == "table"
    table = boot.null_crosses(table_stats, perms)
    assert table_stats.cached("pair_blocks") is not None
    direct = boot.null_crosses(PairStats(xs[0], ys[0], 10), perms[:10])
    monkeypatch.setattr(boot, "MAX_PAIR_BLOCK_BYTES", 1024)  # the table does not fit: one image at a time
    assert boot.null_route(PairStats(xs[0], ys[0], 10), 40, chunked=True) == "images"
    by_image = boot.null_crosses(PairStats(xs[0], ys[0], 10), perms, chunked=True)
    np.testing.assert_allclose(by_image.numpy(), table.numpy(), rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(direct.numpy(), table.numpy()[:10], rtol=1e-12, atol=1e-10)

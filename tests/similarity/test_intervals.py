"""What the intervals and the chance-corrected score cover, by simulation with a known population:
the stimulus interval against the one that adds the channel and position draw, and the
chance-corrected score across sampling geometries."""

from __future__ import annotations

import numpy as np
import pytest

from medtransfer.similarity import cca, layer_similarity, linear_cka
from medtransfer.similarity import bootstrap as boot
from medtransfer.similarity.registry import get
from medtransfer.similarity.sampling import chance_corrected

C, D, H = 128, 6, 4
_PARAMS = np.random.default_rng(777)
#: One fixed pair of networks: C channels each, loading on a D-dim image-level latent with
#: channel-specific strengths, so which channels are drawn changes the score.
LOAD_A = _PARAMS.standard_normal((D, C)) * _PARAMS.uniform(0, 1.5, C)
LOAD_B = _PARAMS.standard_normal((D, C)) * _PARAMS.uniform(0, 1.5, C)


def network_pair(rng, n=60):
    """Activations ``(n, C, H, H)`` of the two networks on n fresh stimulus images."""
    z = rng.standard_normal((n, D, 1, 1))
    a = np.einsum("ndhw,dc->nchw", z + 0.5 * rng.standard_normal((n, D, H, H)), LOAD_A)
    b = np.einsum("ndhw,dc->nchw", z + 0.5 * rng.standard_normal((n, D, H, H)), LOAD_B)
    return a + rng.standard_normal(a.shape), b + rng.standard_normal(b.shape)


@pytest.mark.slow
def test_draws_interval_covers_when_channels_are_redrawn_and_the_stimulus_one_does_not():
    """Each dataset: a fresh pool of 60 images, 5 repeats of 20 images x 16 positions and 16 of 128
    channels. Target: E[score] over datasets and channel draws (600 datasets). Over 200 fixed
    seeds the 95% draws interval covers it 90-99% of the time (measured 96.5%); the stimulus
    interval, which holds the channels fixed, covers visibly less (measured 87.5%)."""
    kw = dict(measure="cka", rows=320, channels=16, repeats=5)
    truth = np.mean([layer_similarity(*network_pair(np.random.default_rng(10**6 + s)), seed=s, **kw).mean
                     for s in range(600)])
    stimulus = draws = 0
    for seed in range(200):
        r = layer_similarity(*network_pair(np.random.default_rng(seed)), seed=seed, ci=0.95, resamples=300, **kw)
        stimulus += r.ci_low <= truth <= r.ci_high
        draws += r.draws_ci_low <= truth <= r.draws_ci_high
    assert 0.90 <= draws / 200 <= 0.99
    assert stimulus < draws


def test_intervals_stay_in_range_and_draws_contain_stimulus():
    rng = np.random.default_rng(3)
    a, b = network_pair(rng)
    r = layer_similarity(a, a + 1e-3 * b, "cka", rows=320, channels=16, repeats=3, ci=0.95, resamples=200,
                         permutations=9)
    assert 0.0 <= r.draws_ci_low <= r.ci_low <= r.mean <= r.ci_high <= r.draws_ci_high <= 1.0
    assert r.adjusted == pytest.approx((r.mean - r.null_mean) / (1.0 - r.null_mean))
    one = layer_similarity(a, b, "cka", rows=320, channels=16, repeats=1, ci=0.95, resamples=200)
    assert np.isfinite(one.ci_low) and np.isnan(one.draws_ci_low) and np.isnan(one.adjusted)


def test_chance_corrected_is_zero_at_the_null_and_one_at_identity_for_both_kinds():
    for name in ("cka", "procrustes", "cca_r2"):
        spec = get(name)
        best = spec.high if spec.higher_is_similar else spec.low
        assert chance_corrected(0.3, 0.3, spec) == 0.0
        assert chance_corrected(best, 0.3, spec) == pytest.approx(1.0)
    assert chance_corrected(0.5, 0.7, get("procrustes")) == pytest.approx(0.2 / 0.7)  # a distance below its null


def clustered_rows(rng, images, positions, c=64, image_var=2.0, coupling=0.25):
    """One population read in different geometries: every row is an image-level component
    (shared by the image's positions) plus a position-level one; y depends on x linearly."""
    mix = np.random.default_rng(99).standard_normal((c, c)) / np.sqrt(c)
    a = rng.standard_normal((images, 1, c)) * np.sqrt(image_var) + rng.standard_normal((images, positions, c))
    b = coupling * a @ mix + rng.standard_normal((images, 1, c)) * np.sqrt(image_var) + rng.standard_normal((images, positions, c))
    return a.reshape(-1, c), b.reshape(-1, c)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cca_r2", "cka"])
def test_chance_corrected_score_is_flat_across_geometries_where_the_raw_one_is_not(name):
    """The same population (every row drawn alike) read with 20000 rows as 100 images x 200
    positions, 20 x 1000, 1250 x 16 and 20000 x 1: the raw score's mean over 3 datasets moves by
    a factor of 4-10 (cca_r2 0.237 to 0.058, cka 0.616 to 0.062), the chance-corrected one stays
    within 25% of its value at independent rows (measured: cca_r2 0.043-0.055, cka 0.056-0.070).
    The paper's mean rho does not adjust this way (corrected 0.054-0.166): see docs/protocol.md."""
    spec = get(name)
    raw, corrected = [], []
    for images, positions in ((100, 200), (20, 1000), (1250, 16), (20000, 1)):
        scores, nulls = [], []
        for seed in range(3):
            x, y = clustered_rows(np.random.default_rng(seed), images, positions)
            scores.append(spec(x, y))
            perms = boot.random_permutations(images, 6, np.random.default_rng(seed))
            nulls.append(boot.permutation_values(x, y, positions, name, perms).mean())
        raw.append(np.mean(scores))
        corrected.append(chance_corrected(np.mean(scores), np.mean(nulls), spec))
    assert max(raw) / min(raw) > 3
    assert np.all(np.abs(np.array(corrected) / corrected[-1] - 1) <= 0.25), corrected

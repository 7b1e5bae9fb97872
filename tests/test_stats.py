"""medtransfer.stats: closed forms, independent implementations, and calibration under simulated nulls.

The calibration tests simulate the paper's shape: 7 targets, 5 folds cut as the study cuts them
(held-out blocks of 20%, three quarters of each tested), so training sets overlap by 75% and the
per-fold AUC differences of two models are correlated. Fixed seeds: the rates are deterministic.
"""

import itertools
import math

import numpy as np
import pytest
from scipy import stats as sps
from sklearn.metrics import roc_auc_score

from medtransfer import stats as st
from medtransfer.errors import MedtransferError

ALPHA = 0.05
RATIO = 0.15 / 0.80  # n_test / n_train under the paper's 80/5/15


# --- the simulated study -------------------------------------------------------------------------

def fold_parts(n: int, k: int, rng: np.random.Generator):
    """The study's fold protocol on n images: k held-out blocks, 3/4 of a block tested, others train."""
    blocks = np.array_split(rng.permutation(n), k)
    for f in range(k):
        test = blocks[f][: int(round(len(blocks[f]) * 0.75))]
        yield np.concatenate([blocks[g] for g in range(k) if g != f]), test


def auc(y: np.ndarray, s: np.ndarray) -> float:
    r = sps.rankdata(s)
    m = y.sum()
    return (r[y == 1].sum() - m * (m + 1) / 2) / (m * (len(y) - m))


def target_fold_differences(rng, n=160, q=8, signal=0.3, shift=0.0, k=5) -> np.ndarray:
    """Per-fold AUC(a) - AUC(b) of one simulated target: model a a ridge classifier on features
    0..q-1, model b on q..2q-1. With ``shift = 0`` the two feature sets are exchangeable, so the
    expected difference over datasets is exactly 0 (the null); ``shift`` adds signal to a's."""
    y = np.arange(n) % 2
    x = rng.standard_normal((n, 2 * q)) + signal * y[:, None]
    x[:, :q] += shift * y[:, None]
    out = []
    for train, test in fold_parts(n, k, rng):
        aucs = []
        for cols in (slice(0, q), slice(q, 2 * q)):
            xt = x[train, cols] - x[train, cols].mean(0)
            w = np.linalg.solve(xt.T @ xt + np.eye(q), xt.T @ (y[train] - y[train].mean()))
            aucs.append(auc(y[test], x[test, cols] @ w))
        out.append(aucs[0] - aucs[1])
    return np.array(out)


@pytest.fixture(scope="module")
def null_study():
    """3500 simulated targets (500 studies of 7) under the null: per-fold AUC differences (3500, 5)."""
    rng = np.random.default_rng(20250)
    return np.array([target_fold_differences(rng) for _ in range(3500)])


# --- Nadeau-Bengio ------------------------------------------------------------------------------

def test_corrected_t_closed_form_and_range():
    d = np.array([0.01, 0.02, -0.01, 0.03, 0.02])
    r = st.corrected_resampled_t(d, RATIO, bounds=(-1, 1))
    se = math.sqrt((1 / 5 + RATIO) * d.var(ddof=1))
    assert r.statistic == pytest.approx(d.mean())
    assert r.p_value == pytest.approx(2 * sps.t.sf(d.mean() / se, 4))
    assert r.high - r.low == pytest.approx(2 * sps.t.ppf(0.975, 4) * se)
    # a tiny ratio gives back the plain paired t-test
    assert st.corrected_resampled_t(d, 1e-12).p_value == pytest.approx(sps.ttest_1samp(d, 0).pvalue)
    wide = st.corrected_resampled_t([0.9, -0.9, 0.95], RATIO, bounds=(-1, 1))
    assert -1 <= wide.low <= wide.high <= 1
    one = st.corrected_resampled_t([0.1], RATIO)
    assert math.isnan(one.p_value) and "n too small" in one.note


@pytest.mark.slow
def test_corrected_t_is_calibrated_where_the_plain_t_is_not(null_study):
    p_nb = np.array([st.corrected_resampled_t(d, RATIO).p_value for d in null_study])
    p_plain = np.array([sps.ttest_1samp(d, 0).pvalue for d in null_study])
    rate = float(np.mean(p_nb <= ALPHA))
    assert 0.02 <= rate <= 0.08, rate
    assert float(np.mean(p_plain <= ALPHA)) > rate  # the overlap of training sets inflates the plain test


# --- Wilcoxon -----------------------------------------------------------------------------------

def test_wilcoxon_matches_scipy_exact_and_enumeration():
    rng = np.random.default_rng(3)
    for n in (3, 5, 7, 10):
        d = rng.normal(0.2, 1, n)
        ours = st.wilcoxon_exact(d).p_value
        assert ours == pytest.approx(sps.wilcoxon(d, method="exact").pvalue, rel=1e-12)
    # with ties, the exact conditional p-value by brute force over sign patterns
    d = np.array([1.0, -1.0, 2.0, 2.0, 3.0, 0.5])
    ranks = sps.rankdata(np.abs(d))
    observed = ranks[d > 0].sum()
    null = [sum(r for r, s in zip(ranks, signs) if s) for signs in itertools.product([0, 1], repeat=6)]
    centre = ranks.sum() / 2
    brute = np.mean([abs(t - centre) >= abs(observed - centre) - 1e-9 for t in null])
    assert st.wilcoxon_exact(d).p_value == pytest.approx(brute)


def test_wilcoxon_interval_is_exact_and_small_n_says_so():
    d = np.arange(1.0, 8.0) - 2.5  # n = 7
    r = st.wilcoxon_exact(d)
    walsh = sorted((a + b) / 2 for a, b in itertools.combinations_with_replacement(d, 2))
    assert r.statistic == pytest.approx(np.median(walsh))
    # n = 7: P(T+ <= 2) = 3/128 <= 0.025 < P(T+ <= 3): c = 3, interval [W_(3), W_(26)]
    assert (r.low, r.high) == (walsh[2], walsh[25])
    small = st.wilcoxon_exact([0.1, 0.2, 0.3])
    assert math.isnan(small.low) and "too small" in small.note and small.p_value == pytest.approx(0.25)
    assert "n too small" in st.wilcoxon_exact([0.1]).note


@pytest.mark.slow
def test_wilcoxon_across_seven_targets_is_calibrated(null_study):
    per_target = null_study.mean(axis=1).reshape(500, 7)
    rate = float(np.mean([st.wilcoxon_exact(w).p_value <= ALPHA for w in per_target]))
    assert 0.02 <= rate <= 0.08, rate


# --- DeLong -------------------------------------------------------------------------------------

def brute_force_delong(y, a, b):
    """DeLong's variance from the explicit pair kernel psi(x, z) = 1, 1/2, 0."""
    pos, neg = y == 1, y == 0

    def comps(s):
        psi = (s[pos][:, None] > s[neg][None, :]) + 0.5 * (s[pos][:, None] == s[neg][None, :])
        return psi.mean(1), psi.mean(0)

    (xa, za), (xb, zb) = comps(a), comps(b)
    m, l = pos.sum(), neg.sum()
    s10, s01 = np.cov(np.vstack([xa, xb])), np.cov(np.vstack([za, zb]))
    cov = s10 / m + s01 / l
    return xa.mean() - xb.mean(), cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]


def test_delong_matches_sklearn_and_a_brute_force_variance():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 80)
    a = np.round(rng.normal(size=80) + y, 1)  # rounded: ties
    b = np.round(rng.normal(size=80) + 0.4 * y + 0.5 * a, 1)
    r = st.delong(y, a, b)
    diff, var = brute_force_delong(y, a, b)
    assert r.statistic == pytest.approx(roc_auc_score(y, a) - roc_auc_score(y, b), abs=1e-12)
    assert r.statistic == pytest.approx(diff, abs=1e-12)
    assert r.p_value == pytest.approx(2 * sps.norm.sf(abs(diff) / math.sqrt(var)))
    assert -1 <= r.low <= r.statistic <= r.high <= 1
    with pytest.raises(MedtransferError, match="both classes"):
        st.delong(np.ones(5), a[:5], b[:5])


@pytest.mark.slow
def test_delong_is_calibrated_for_two_correlated_scores_of_equal_auc():
    rng = np.random.default_rng(11)
    p = []
    for _ in range(600):
        y = np.repeat([0, 1], 60)
        shared = rng.standard_normal(120)
        a = 0.7 * shared + 0.71 * rng.standard_normal(120) + 1.0 * y
        b = 0.7 * shared + 0.71 * rng.standard_normal(120) + 1.0 * y
        p.append(st.delong(y, a, b).p_value)
    rate = float(np.mean(np.array(p) <= ALPHA))
    assert 0.02 <= rate <= 0.08, rate


# --- Holm ---------------------------------------------------------------------------------------

def test_holm_by_hand_and_properties():
    adjusted = st.holm([0.01, 0.04, 0.03, np.nan, 0.005])
    np.testing.assert_allclose(adjusted[[4, 0, 2, 1]], [0.02, 0.03, 0.06, 0.06])
    assert math.isnan(adjusted[3])
    rng = np.random.default_rng(0)
    p = rng.random(9)
    h = st.holm(p)
    assert (h >= p).all() and (h <= 1).all()
    assert (np.diff(h[np.argsort(p)]) >= 0).all()


@pytest.mark.slow
def test_holm_controls_the_family_wise_error_of_seven_null_targets(null_study):
    p = np.array([st.corrected_resampled_t(d, RATIO).p_value for d in null_study[:3500]]).reshape(500, 7)
    fwer = float(np.mean([(st.holm(row) <= ALPHA).any() for row in p]))
    assert fwer <= 0.08, fwer


# --- correlation --------------------------------------------------------------------------------

def test_perfect_rank_correlation_at_three_points_has_p_one_third():
    r = st.permutation_correlation([1, 2, 3], [4, 5, 9])
    assert r.statistic == pytest.approx(1.0)
    assert r.p_value == pytest.approx(1 / 3)
    assert math.isnan(r.low) and "n too small" in r.note


def test_permutation_correlation_matches_scipy_permutation_test():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=6), rng.normal(size=6)
    for method, fn in (("spearman", lambda v: abs(sps.spearmanr(x, v).statistic)),
                       ("pearson", lambda v: abs(sps.pearsonr(x, v).statistic))):
        ours = st.permutation_correlation(x, y, method).p_value  # two-sided: |r| at least as large
        theirs = sps.permutation_test((y,), fn, permutation_type="pairings", n_resamples=np.inf,
                                      alternative="greater").pvalue
        assert ours == pytest.approx(theirs, abs=1e-12)
    big = st.permutation_correlation(rng.normal(size=30), rng.normal(size=30), permutations=999)
    assert big.p_value >= 1 / 1000 and "Monte Carlo" in big.test
    assert -1 <= big.low <= big.statistic <= big.high <= 1
    perfect = st.permutation_correlation(np.arange(30.0), np.arange(30.0) ** 2, permutations=99)
    assert perfect.p_value == pytest.approx(1 / 100)  # never 0


@pytest.mark.slow
def test_permutation_correlation_is_calibrated_exact_and_monte_carlo():
    rng = np.random.default_rng(7)
    exact = [st.permutation_correlation(rng.normal(size=7), rng.normal(size=7)).p_value for _ in range(500)]
    mc = [st.permutation_correlation(rng.normal(size=14), rng.normal(size=14), permutations=499, seed=s).p_value
          for s in range(500)]
    for p in (exact, mc):
        rate = float(np.mean(np.array(p) <= ALPHA))
        assert 0.02 <= rate <= 0.08, rate


# --- agreement ----------------------------------------------------------------------------------

def test_agreement_excess_closed_form_and_range():
    folds = np.repeat([0, 1], [4, 6])
    labels = np.array([0, 1] * 5)
    a = np.array([1, 1, 0, 1, 1, 1, 1, 0, 0, 1], bool)
    b = np.array([1, 0, 0, 1, 1, 1, 0, 0, 1, 1], bool)
    expected = 0.0
    for f in (0, 1):
        m = folds == f
        o = np.mean(a[m] == b[m])
        a1, a2 = a[m].mean(), b[m].mean()
        expected += m.sum() / 10 * (o - (a1 * a2 + (1 - a1) * (1 - a2)))
    r = st.agreement_excess(a, b, folds, labels, resamples=500, permutations=200)
    assert r.statistic == pytest.approx(expected)
    assert -1 <= r.low <= r.high <= 1 and 0 < r.p_value <= 1
    same = st.agreement_excess(a, a, folds, labels, resamples=200, permutations=200)
    assert same.statistic > 0 and same.p_value < 0.2


@pytest.mark.slow
def test_agreement_test_is_calibrated_for_mistakes_independent_given_class():
    rng = np.random.default_rng(13)
    folds = np.repeat(np.arange(5), 24)
    labels = np.tile([0, 1, 2], 40)
    rates = np.array([0.9, 0.7, 0.5])  # both models err more on class 2: agreement above the unconditional baseline
    p = []
    for s in range(500):
        a = rng.random(120) < rates[labels]
        b = rng.random(120) < rates[labels]
        p.append(st.agreement_excess(a, b, folds, labels, resamples=10, permutations=199, seed=s).p_value)
    rate = float(np.mean(np.array(p) <= ALPHA))
    assert 0.02 <= rate <= 0.08, rate


# --- logit interval -----------------------------------------------------------------------------

def test_logit_interval_stays_inside_zero_one():
    for values in ([0.917, 1.0, 0.6], [0.397, 0.05, 0.8], [1.0, 1.0, 1.0], [0.0, 0.2]):
        low, high = st.logit_t_interval(values)
        assert 0 <= low <= high <= 1
    low, high = st.logit_t_interval([0.8, 0.82, 0.78, 0.81, 0.79])
    assert low < 0.8 < high
    assert all(math.isnan(v) for v in st.logit_t_interval([0.9]))
    with pytest.raises(MedtransferError, match="proportions"):
        st.logit_t_interval([91.7, 80.0])

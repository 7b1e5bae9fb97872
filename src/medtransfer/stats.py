"""Tests and intervals for the paper's claims, on plain arrays (numpy and scipy only).

Each function names its unit of resampling or independence: the thing that is assumed to be an
independent draw. Getting that unit right is the point of this module: folds of one target share
most of their training images, the spatial positions of one image are not independent rows, a
target's five folds are not five targets.

- :func:`corrected_resampled_t`: per-fold paired differences of one target (unit: the fold, with
  the Nadeau-Bengio correction for the overlap of the folds' training sets).
- :func:`delong`: two correlated AUCs on the same test images (unit: the test image; the trained
  models are fixed).
- :func:`wilcoxon_exact`: per-target differences across targets (unit: the target), exact.
- :func:`holm`: Holm's step-down adjustment of a family of p-values.
- :func:`permutation_correlation` and :func:`correlation_interval`: a correlation across targets
  (unit: the target; exact permutation p-value up to :data:`EXACT_PERMUTATION_MAX_N` points).
- :func:`agreement_excess`: mistake agreement of two models minus the independent baseline, with
  an image bootstrap stratified by fold and a permutation test within fold and class (unit: the
  test image).
- :func:`logit_t_interval`: an interval of a mean AUC over folds that stays inside [0, 1].

Monte Carlo p-values are ``(b + 1) / (m + 1)`` (b of m resamples at least as extreme), never 0.
References: Nadeau & Bengio 2003 (Machine Learning 52:239); DeLong, DeLong & Clarke-Pearson 1988
(Biometrics 44:837), Sun & Xu 2014 (IEEE SPL 21:1389) for the fast algorithm; Wilcoxon 1945,
Demsar 2006 (JMLR 7:1); Holm 1979 (Scand. J. Statist. 6:65); Phipson & Smyth 2010 (SAGMB 9:39)
for the +1 in permutation p-values; Fieller, Hartley & Pearson 1957 (Biometrika 44:470) for the
Spearman interval.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
from scipy import special
from scipy import stats as sps

from medtransfer.errors import MedtransferError

#: Up to this many points a correlation's permutation p-value enumerates all n! orderings.
EXACT_PERMUTATION_MAX_N = 10
#: Below this many points no interval is given for a correlation (Fisher-z intervals rest on
#: asymptotics that are poor at a handful of points; the bootstrap is worse there).
MIN_N_CORRELATION_INTERVAL = 10
#: Up to this many non-zero differences the Wilcoxon p-value enumerates all 2^n sign patterns.
EXACT_SIGNED_RANK_MAX_N = 20
#: Relative tolerance under which two statistics count as equal (ties of a permutation statistic).
_TIE = 1e-9


@dataclass(frozen=True)
class TestResult:
    """One test: the ``statistic`` (an effect in the measure's own units), its interval ``low``,
    ``high`` at ``level``, the ``p_value``, the ``test``'s name, the number ``n`` of independent
    units it rests on, and a ``note`` (why something is NaN, e.g. "n too small")."""

    statistic: float
    low: float
    high: float
    p_value: float
    test: str
    n: int
    level: float = 0.95
    note: str = ""


def _check_level(level: float) -> float:
    if not 0.0 < float(level) < 1.0:
        raise MedtransferError(f"level must be a confidence level in (0, 1), e.g. 0.95; got {level}")
    return float(level)


def _vector(values, name: str) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64)
    if a.ndim != 1:
        raise MedtransferError(f"{name}: expected a 1-D array, got shape {a.shape}")
    return a


def monte_carlo_p(extreme: int, resamples: int) -> float:
    """``(b + 1) / (m + 1)``: the p-value of ``b`` = ``extreme`` of ``m`` = ``resamples`` random
    resamples at least as extreme as the data; never 0 (Phipson & Smyth 2010)."""
    return (int(extreme) + 1) / (int(resamples) + 1)


def corrected_resampled_t(differences, test_train_ratio: float, level: float = 0.95,
                          bounds: tuple[float, float] = (-math.inf, math.inf)) -> TestResult:
    """Nadeau-Bengio corrected resampled t-test of the mean of paired per-fold differences.

    Unit: the fold. ``differences (J,)``: per fold, the score of model a minus model b on that
    fold's test part. Folds of one dataset share most of their training images, so the J
    differences are positively correlated and the plain paired t-test's variance ``s^2 / J`` is too
    small; Nadeau & Bengio (2003) replace it by ``(1 / J + n_test / n_train) s^2``.
    ``test_train_ratio`` = n_test / n_train of one fold (0.15 / 0.80 under the paper's 80/5/15).
    Statistic: the mean difference; interval: ``mean +- t_{J-1} * sqrt((1/J + ratio) s^2)``,
    clipped to ``bounds`` (the difference's range, e.g. (-1, 1) for AUC); two-sided p from t_{J-1}.
    NaN with a note for fewer than 2 folds.
    """
    level = _check_level(level)
    d = _vector(differences, "differences")
    d = d[np.isfinite(d)]
    j = len(d)
    name = "Nadeau-Bengio corrected resampled t"
    if not test_train_ratio > 0:
        raise MedtransferError(f"test_train_ratio must be n_test / n_train > 0, got {test_train_ratio}")
    if j < 2:
        return TestResult(float(d.mean()) if j else math.nan, math.nan, math.nan, math.nan, name, j, level,
                          "n too small: needs at least 2 folds")
    mean = float(d.mean())
    var = float(d.var(ddof=1))
    se = math.sqrt((1.0 / j + float(test_train_ratio)) * var)
    if se == 0.0:
        p = 1.0 if mean == 0.0 else 0.0
        if p == 0.0:  # every fold the same non-zero difference: t is infinite; say so rather than print p = 0
            return TestResult(mean, max(mean, bounds[0]), min(mean, bounds[1]), math.nan, name, j, level,
                              "no spread over folds: t undefined")
        return TestResult(mean, mean, mean, p, name, j, level)
    t = mean / se
    p = float(2.0 * sps.t.sf(abs(t), j - 1))
    half = float(sps.t.ppf(0.5 + level / 2.0, j - 1)) * se
    return TestResult(mean, max(mean - half, bounds[0]), min(mean + half, bounds[1]), p, name, j, level)


def _midranks(x: np.ndarray) -> np.ndarray:
    """Midranks (1-based, ties averaged) along the last axis."""
    return sps.rankdata(x, axis=-1)


def delong_components(labels, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DeLong's structural components of the AUCs of ``scores (k, n)`` for binary ``labels (n,)``.

    Returns ``(auc (k,), v10 (k, m), v01 (k, l))``: ``v10[r, i]`` is the fraction of negatives that
    positive i outranks under score r (ties count 1/2), ``v01[r, j]`` the fraction of positives that
    outrank negative j; ``auc = v10.mean(1) = v01.mean(1)``. Midrank algorithm of Sun & Xu (2014).
    """
    y = np.asarray(labels)
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    if s.shape[1] != len(y):
        raise MedtransferError(f"scores have {s.shape[1]} images, labels {len(y)}")
    positive = y == 1
    if not np.isin(y, (0, 1)).all():
        raise MedtransferError("labels must be binary (0 or 1) for DeLong's test")
    m, l = int(positive.sum()), int((~positive).sum())
    if m == 0 or l == 0:
        raise MedtransferError("DeLong's test needs both classes among the test images")
    x, z = s[:, positive], s[:, ~positive]
    tz = _midranks(np.concatenate([x, z], axis=1))
    v10 = (tz[:, :m] - _midranks(x)) / l
    v01 = 1.0 - (tz[:, m:] - _midranks(z)) / m
    return v10.mean(axis=1), v10, v01


def delong(labels, scores_a, scores_b, level: float = 0.95) -> TestResult:
    """DeLong's test of AUC(a) - AUC(b) for two score vectors on the same binary test images.

    Unit: the test image (positives and negatives each an independent draw); the two models are
    fixed functions, so the test says whether these trained networks rank these images
    differently, not whether their training procedures differ. ``labels (n,)`` 0/1,
    ``scores_* (n,)`` the positive-class score. Statistic: the AUC difference; interval: normal,
    ``+- z * se`` clipped to [-1, 1]; two-sided p from the normal.
    """
    level = _check_level(level)
    auc, v10, v01 = delong_components(labels, np.vstack([_vector(scores_a, "scores_a"), _vector(scores_b, "scores_b")]))
    m, l = v10.shape[1], v01.shape[1]
    name = "DeLong"
    if m < 2 or l < 2:
        return TestResult(float(auc[0] - auc[1]), math.nan, math.nan, math.nan, name, m + l, level,
                          "n too small: needs two images of each class")
    cov = np.cov(v10) / m + np.cov(v01) / l
    diff = float(auc[0] - auc[1])
    var = float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1])
    if var <= 0.0:
        note = "" if diff == 0.0 else "no variance: the two scores rank every image pair alike"
        return TestResult(diff, diff, diff, 1.0 if diff == 0.0 else math.nan, name, m + l, level, note)
    se = math.sqrt(var)
    half = float(sps.norm.ppf(0.5 + level / 2.0)) * se
    p = float(2.0 * sps.norm.sf(abs(diff) / se))
    return TestResult(diff, max(diff - half, -1.0), min(diff + half, 1.0), p, name, m + l, level)


def _signed_rank_null(ranks: np.ndarray) -> np.ndarray:
    """T+ of all 2^n sign patterns of ``ranks (n,)`` (midranks allowed), by enumeration."""
    n = len(ranks)
    signs = ((np.arange(2**n)[:, None] >> np.arange(n)[None, :]) & 1).astype(np.float64)
    return signs @ ranks


def wilcoxon_exact(differences, level: float = 0.95) -> TestResult:
    """Wilcoxon signed-rank test of paired differences, exact (Demsar 2006's test for comparing two
    methods over several datasets).

    Unit: the target (one difference per target, e.g. its mean over folds); targets are assumed
    independent and the differences symmetric about their median under the null. Zero differences
    are dropped (Wilcoxon's convention). The p-value is exact: the two-sided share of all 2^n sign
    patterns of the observed midranks at least as extreme as the observed T+ (with ties this is the
    exact conditional distribution; without ties it equals scipy's ``method="exact"``). Statistic:
    the Hodges-Lehmann estimate (median of the Walsh averages); interval: the exact signed-rank
    interval from the Walsh averages (no ties assumed), NaN where n is too small for the level
    (n <= 5 at 95%: no sign pattern is rare enough). NaN p below 2 non-zero differences.
    """
    level = _check_level(level)
    d = _vector(differences, "differences")
    d = d[np.isfinite(d)]
    nonzero = d[d != 0.0]
    n = len(nonzero)
    name = "Wilcoxon signed-rank (exact)"
    walsh = (d[:, None] + d[None, :]) / 2.0
    walsh = np.sort(walsh[np.triu_indices(len(d))]) if len(d) else walsh.ravel()
    estimate = float(np.median(walsh)) if len(walsh) else math.nan
    if n < 2:
        return TestResult(estimate, math.nan, math.nan, math.nan, name, len(d), level,
                          "n too small: needs at least 2 non-zero differences")
    if n > EXACT_SIGNED_RANK_MAX_N:
        raise MedtransferError(f"wilcoxon_exact enumerates 2^n sign patterns; n = {n} > {EXACT_SIGNED_RANK_MAX_N}")
    ranks = sps.rankdata(np.abs(nonzero))
    observed = float(ranks[nonzero > 0].sum())
    null = _signed_rank_null(ranks)
    centre = ranks.sum() / 2.0
    tol = _TIE * max(1.0, centre)
    p = float(np.mean(np.abs(null - centre) >= abs(observed - centre) - tol))
    low = high = math.nan
    note = ""
    # Exact interval (Hollander & Wolfe): [W_(c), W_(N+1-c)] of the N sorted Walsh averages, with
    # c = 1 + the largest j with P(T+ <= j) <= alpha / 2 under the untied null of len(d) ranks.
    exact = np.sort(_signed_rank_null(np.arange(1.0, len(d) + 1)))
    cdf = np.searchsorted(exact, np.arange(len(walsh) + 1) + 0.5, side="right") / len(exact)
    ok = np.flatnonzero(cdf <= (1.0 - level) / 2.0 + 1e-12)
    if len(ok):
        c = int(ok[-1]) + 1
        low, high = float(walsh[c - 1]), float(walsh[len(walsh) - c])
    else:
        note = f"n too small for a {level:.0%} interval (n = {len(d)})"
    return TestResult(estimate, low, high, p, name, len(d), level, note)


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjusted p-values of one family (NaNs are left out of the family and stay
    NaN). Controls the family-wise error rate under any dependence (Holm 1979)."""
    p = _vector(p_values, "p_values")
    out = np.full(len(p), np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    if len(finite) == 0:
        return out
    order = finite[np.argsort(p[finite], kind="stable")]
    k = len(order)
    adjusted = np.maximum.accumulate((k - np.arange(k)) * p[order])
    out[order] = np.minimum(adjusted, 1.0)
    return out


def _pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r of ``x (n,)`` with each row of ``y (B, n)``."""
    xc = x - x.mean()
    yc = y - y.mean(axis=1, keepdims=True)
    den = math.sqrt(float(xc @ xc)) * np.sqrt((yc * yc).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (yc @ xc) / den, np.nan)


def _permutations(n: int):
    """All n! orderings of range(n), in chunks of at most 40320 rows."""
    it = itertools.permutations(range(n))
    while True:
        chunk = list(itertools.islice(it, 40320))
        if not chunk:
            return
        yield np.array(chunk, dtype=np.int64)


def permutation_correlation(x, y, method: str = "spearman", permutations: int = 9999, seed: int = 0,
                            level: float = 0.95) -> TestResult:
    """Correlation of paired points with a two-sided permutation p-value.

    Unit: the point (e.g. one target: its mean over folds); points must be independent, so per-fold
    points of one target do not qualify. ``method``: ``"spearman"`` (Pearson of midranks) or
    ``"pearson"``. Null: x and y independent (y's order exchangeable). Up to
    :data:`EXACT_PERMUTATION_MAX_N` points the p-value is exact over all n! orderings (a perfect
    rank correlation at n = 3 gives 2/6 = 1/3); above, Monte Carlo with ``permutations`` random
    orderings and ``(b + 1) / (m + 1)``. Interval: :func:`correlation_interval` (NaN below
    :data:`MIN_N_CORRELATION_INTERVAL` points). NaN below 3 points or with a constant variable.
    """
    level = _check_level(level)
    if method not in ("spearman", "pearson"):
        raise MedtransferError(f"method must be 'spearman' or 'pearson', got {method!r}")
    x, y = _vector(x, "x"), _vector(y, "y")
    if len(x) != len(y):
        raise MedtransferError(f"x and y must pair up, got {len(x)} and {len(y)} points")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = len(x)
    if method == "spearman":
        x, y = sps.rankdata(x), sps.rankdata(y)
    exact = n <= EXACT_PERMUTATION_MAX_N
    name = f"{method.capitalize()} correlation, {'exact' if exact else 'Monte Carlo'} permutation"
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return TestResult(math.nan, math.nan, math.nan, math.nan, name, n, level,
                          "n too small: needs 3 points" if n < 3 else "a variable is constant")
    r = float(_pearson_rows(x, y[None, :])[0])
    threshold = abs(r) - _TIE
    if exact:
        extreme = total = 0
        for perms in _permutations(n):
            extreme += int((np.abs(_pearson_rows(x, y[perms])) >= threshold).sum())
            total += len(perms)
        p = extreme / total
    else:
        rng = np.random.default_rng(seed)
        extreme = 0
        for start in range(0, int(permutations), 10000):
            b = min(10000, int(permutations) - start)
            perms = np.argsort(rng.random((b, n)), axis=1)
            extreme += int((np.abs(_pearson_rows(x, y[perms])) >= threshold).sum())
        p = monte_carlo_p(extreme, permutations)
    low, high, note = correlation_interval(r, n, method, level)
    return TestResult(r, low, high, float(p), name, n, level, note)


def correlation_interval(r: float, n: int, method: str = "pearson", level: float = 0.95) -> tuple[float, float, str]:
    """Fisher-z interval of a correlation ``r`` from ``n`` independent points: ``tanh(atanh(r) +-
    z * se)`` with ``se = 1 / sqrt(n - 3)`` (Pearson, bivariate normal) or ``sqrt(1.06 / (n - 3))``
    (Spearman, Fieller et al. 1957). Inside [-1, 1] by construction. ``(nan, nan, note)`` below
    :data:`MIN_N_CORRELATION_INTERVAL` points."""
    level = _check_level(level)
    if n < MIN_N_CORRELATION_INTERVAL or not np.isfinite(r):
        return math.nan, math.nan, f"n too small for an interval (n = {n} < {MIN_N_CORRELATION_INTERVAL})"
    se = math.sqrt((1.06 if method == "spearman" else 1.0) / (n - 3))
    z = math.atanh(min(max(r, -1 + 1e-15), 1 - 1e-15))
    half = float(sps.norm.ppf(0.5 + level / 2.0)) * se
    return math.tanh(z - half), math.tanh(z + half), ""


def _strata_index(*keys: np.ndarray) -> np.ndarray:
    """One integer stratum per image from one or more key arrays."""
    stacked = np.stack([np.unique(np.asarray(k), return_inverse=True)[1] for k in keys], axis=1)
    return np.unique(stacked, axis=0, return_inverse=True)[1].ravel()


def agreement_excess(correct_a, correct_b, folds, labels, resamples: int = 2000, permutations: int = 2000,
                     seed: int = 0, level: float = 0.95) -> TestResult:
    """Mistake agreement of two models minus the independent-mistakes baseline, pooled over folds.

    Per fold f (``n_f`` test images): agreement ``o_f = P(correct_a == correct_b)``, baseline
    ``e_f = a1 a2 + (1 - a1)(1 - a2)`` from the two accuracies on that fold; statistic
    ``sum_f n_f / N (o_f - e_f)`` in [-1, 1]. Unit: the test image (the trained models are fixed).

    Interval: percentile bootstrap over test images stratified by fold (each fold's images
    resampled with replacement, ``o_f`` and ``e_f`` recomputed, the weighted mean taken): inside
    [-1, 1] by construction. Test ("agreement above chance"): one model's correctness permuted
    within each (fold, class) stratum, ``permutations`` times; this keeps each model's accuracy per
    fold and class, so the null is "mistakes independent given the class"; one-sided p =
    ``(b + 1) / (m + 1)`` of permutations with at least the observed agreement. ``folds (n,)`` and
    ``labels (n,)`` any hashable codes; ``correct_* (n,)`` booleans.
    """
    level = _check_level(level)
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    f = np.asarray(folds)
    y = np.asarray(labels)
    if not (a.shape == b.shape == f.shape == y.shape) or a.ndim != 1:
        raise MedtransferError(f"correct_a, correct_b, folds, labels must be 1-D of one length; got shapes "
                               f"{a.shape}, {b.shape}, {f.shape}, {y.shape}")
    name = "agreement - independent baseline; image bootstrap by fold; permutation within fold and class"
    n = len(a)
    if n < 2:
        return TestResult(math.nan, math.nan, math.nan, math.nan, name, n, level, "n too small")
    fold_index = _strata_index(f)
    k = int(fold_index.max()) + 1
    sizes = np.bincount(fold_index, minlength=k).astype(np.float64)
    agree = (a == b).astype(np.float64)

    def excess(counts: np.ndarray) -> np.ndarray:
        """counts (R, n) image weights -> (R,) statistic; each fold's weights sum to n_f."""
        per = np.zeros((counts.shape[0], k, 3))
        for column, values in enumerate((agree, a.astype(np.float64), b.astype(np.float64))):
            for g in range(k):
                mask = fold_index == g
                per[:, g, column] = counts[:, mask] @ values[mask] / sizes[g]
        o, a1, a2 = per[..., 0], per[..., 1], per[..., 2]
        e = a1 * a2 + (1 - a1) * (1 - a2)
        return ((o - e) * sizes).sum(axis=1) / sizes.sum()

    statistic = float(excess(np.ones((1, n)))[0])
    rng = np.random.default_rng(seed)
    counts = np.zeros((int(resamples), n))
    for g in range(k):
        idx = np.flatnonzero(fold_index == g)
        counts[:, idx] = rng.multinomial(len(idx), np.full(len(idx), 1.0 / len(idx)), size=int(resamples))
    boot = excess(counts)
    tail = 50.0 * (1.0 - level)
    low, high = (float(v) for v in np.percentile(boot, [tail, 100.0 - tail]))
    strata = _strata_index(f, y)
    permuted = np.empty((int(permutations), n), dtype=bool)
    for s in np.unique(strata):
        idx = np.flatnonzero(strata == s)
        order = np.argsort(rng.random((int(permutations), len(idx))), axis=1)
        permuted[:, idx] = b[idx][order]
    null_agree = (permuted == a[None, :]).sum(axis=1)
    p = monte_carlo_p(int((null_agree >= agree.sum()).sum()), permutations)
    return TestResult(statistic, low, high, p, name, n, level)


def logit_t_interval(values, level: float = 0.95, floor=None) -> tuple[float, float]:
    """Interval of a mean of proportions (e.g. per-fold AUCs in [0, 1]) that stays inside [0, 1]:
    a Student-t interval over the ``values (J,)`` on the logit scale, mapped back.

    Unit: the fold (each value one fold's model and test part; the interval ignores the overlap of
    training sets, as a t interval over folds does). ``floor``: per value the smallest distance to 0
    or 1 it is clipped to before the logit (an AUC of exactly 1 has an infinite logit); e.g. half an
    image pair, ``0.5 / (n_pos * n_neg)``; default 1e-3. ``(nan, nan)`` for fewer than 2 values.
    """
    level = _check_level(level)
    v = _vector(values, "values")
    keep = np.isfinite(v)
    eps = np.broadcast_to(np.asarray(1e-3 if floor is None else floor, dtype=np.float64), v.shape)[keep]
    v = v[keep]
    if len(v) < 2:
        return math.nan, math.nan
    if (v < 0).any() or (v > 1).any():
        raise MedtransferError(f"logit_t_interval takes proportions in [0, 1], got {v.min()}..{v.max()}")
    z = special.logit(np.clip(v, eps, 1.0 - eps))
    half = float(sps.t.ppf(0.5 + level / 2.0, len(z) - 1)) * float(z.std(ddof=1)) / math.sqrt(len(z))
    centre = float(z.mean())
    return float(special.expit(centre - half)), float(special.expit(centre + half))

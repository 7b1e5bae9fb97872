"""Rejection rates of the claims' tests (medtransfer.stats) at alpha 0.05: under the null the
calibration tests simulate (tests/test_stats.py: 7 targets, 5 folds cut as the study cuts them) and
under stated alternatives. The numbers quoted in docs/protocol.md come from

    python benchmarks/claims_power.py --simulations 500

Alternatives: the sources differ by ``--shift`` extra signal per feature for model a (0.1: a mean
gap of 7 AUC points); DeLong on two scores with AUCs 0.80 and 0.76; a correlation of 0.7
across 7 targets; mistakes of two models correlated beyond their class (a shared hard subset).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy import stats as sps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for tests/
from medtransfer import stats as st  # noqa: E402
from tests.test_stats import ALPHA, RATIO, target_fold_differences  # noqa: E402


def rate(p) -> float:
    return float(np.mean(np.asarray(p) <= ALPHA))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--simulations", type=int, default=500)
    parser.add_argument("--shift", type=float, default=0.1)
    args = parser.parse_args()
    n = args.simulations
    rng = np.random.default_rng(1)
    for label, shift in (("null", 0.0), (f"alternative (shift {args.shift})", args.shift)):
        d = np.array([target_fold_differences(rng, shift=shift) for _ in range(7 * n)])
        print(f"{label}: mean AUC difference x100 = {100 * d.mean():.2f}")
        print(f"  corrected resampled t, per target: {rate([st.corrected_resampled_t(x, RATIO).p_value for x in d]):.3f}"
              f"  (plain paired t: {rate([sps.ttest_1samp(x, 0).pvalue for x in d]):.3f})")
        print(f"  exact Wilcoxon over 7 targets:     "
              f"{rate([st.wilcoxon_exact(w).p_value for w in d.mean(1).reshape(n, 7)]):.3f}")
    for label, gap in (("null", 0.0), ("alternative (AUC 0.80 vs 0.76)", 0.18)):
        p = []
        for _ in range(n):
            y = np.repeat([0, 1], 60)
            shared = rng.standard_normal(120)
            a = 0.7 * shared + 0.71 * rng.standard_normal(120) + (1.0 + gap) * y
            b = 0.7 * shared + 0.71 * rng.standard_normal(120) + 1.0 * y
            p.append(st.delong(y, a, b).p_value)
        print(f"DeLong, 120 test images, {label}: {rate(p):.3f}")
    for label, r in (("null", 0.0), ("alternative (rho 0.7)", 0.7)):
        cov = [[1, r], [r, 1]]
        p = [st.permutation_correlation(*rng.multivariate_normal([0, 0], cov, 7).T).p_value for _ in range(n)]
        print(f"Spearman over 7 targets, exact permutation, {label}: {rate(p):.3f}")
    folds, labels = np.repeat(np.arange(5), 24), np.tile([0, 1, 2], 40)
    acc = np.array([0.9, 0.7, 0.5])[labels]
    for label, hard in (("null (independent given class)", 0.0), ("alternative (10% shared hard images)", 0.1)):
        p = []
        for s in range(n):
            shared = rng.random(120) < hard
            a = (rng.random(120) < acc) & ~shared
            b = (rng.random(120) < acc) & ~shared
            p.append(st.agreement_excess(a, b, folds, labels, resamples=10, permutations=199, seed=s).p_value)
        print(f"agreement above chance, 120 images in 5 folds, {label}: {rate(p):.3f}")


if __name__ == "__main__":
    main()

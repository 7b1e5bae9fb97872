"""Paired tests on the same stimuli: is the similarity of one pair of networks different from that
of another pair, measured on the same images (the paper's questions: ImageNet-vs-RadImageNet
against random-vs-random; a network before against after fine-tuning)?

The permutation null of :mod:`medtransfer.similarity.bootstrap` asks whether two networks' images
correspond at all, which any two networks fed the same images pass (random vs random included).
Here the hypothesis is ``E[score_a] = E[score_b]`` over draws of stimulus images from the
population the pool stands for, for two pairs measured on the same images (and, in the paper's
protocol, the same channel indices and positions).

**Resampling unit: the stimulus image.** Each resample draws the pool's ``n`` images with
replacement (multinomial counts ``w (n,)``); every repeat of *both* pairs weights its own images by
the same counts, so what the two pairs share (which images were drawn, how hard they are) cancels
in the difference, as in a paired t-test. A resample's value per repeat is computed as in the
image bootstrap (``"linear"`` first order in the weights or ``"exact"``), the repeat means are
differenced, and

- the interval is the centred percentile interval of the resampled differences
  (:func:`~medtransfer.similarity.bootstrap.percentile_interval`);
- the two-sided p-value is ``(1 + #{|d* - mean(d*)| >= |d|}) / (1 + R)`` with ``d`` the observed
  difference and ``d*`` the R resampled ones: the bootstrap distribution shifted to the null
  (Hall & Wilson 1991), with the +1 correction. Its smallest value is ``1 / (R + 1)``: use
  :func:`draws_for_holm` resamples for it to survive a Holm
  correction over a study's tests.

Only measures with a Gram form (``Measure.from_grams``: cca, cka, procrustes, angular_shape) can
be resampled this way; the others raise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from medtransfer.errors import MedtransferError
from medtransfer.similarity import bootstrap as boot
from medtransfer.similarity.registry import Measure, get
from medtransfer.similarity.sampling import draw_repeats

#: Resamples drawn at once (bounds the weight matrix to about this x pool size x 8 bytes).
RESAMPLE_BATCH = 2000


@dataclass(frozen=True)
class PairedDifference:
    """Difference of two pairs' scores on the same stimuli, with its image-bootstrap uncertainty.

    Attributes:
        difference: ``mean_a - mean_b``, python float.
        mean_a, mean_b: each pair's repeat mean (the scores ``layer_similarity`` reports).
        ci_low, ci_high: centred percentile interval of the difference at level ``ci``.
        p_value: two-sided bootstrap p-value of ``E[score_a] = E[score_b]`` (module notes).
        resamples: ``(R,)`` the resampled differences.
        measure: the measure's name; for a distance, a negative difference means pair a is the
            more similar one.
    """

    difference: float
    mean_a: float
    mean_b: float
    ci_low: float
    ci_high: float
    p_value: float
    resamples: np.ndarray
    measure: str


def paired_difference(
    xs_a: list[Any], ys_a: list[Any], xs_b: list[Any], ys_b: list[Any], images: list[np.ndarray],
    rows_per_image: int, measure: str = "cca", *, n_images: int | None = None, ci: float = 0.95,
    resamples: int = 10000, ci_method: str = boot.DEFAULT_INTERVAL_METHOD, seed: int = 0,
) -> PairedDifference:
    """Paired image-bootstrap test of ``score(pair a) - score(pair b)`` on the same stimuli.

    Args:
        xs_a, ys_a: pair a's repeats: ``xs_a[r] (m_r * k, p)`` and ``ys_a[r] (m_r * k, q)``, the
            two networks' activation rows (image-major, ``k`` rows per image) of repeat r, as
            :func:`~medtransfer.similarity.score_repeats` takes them.
        xs_b, ys_b: pair b's repeats on the same rows (the same images and positions in the
            same order; channels may differ); ``len(xs_b) == len(xs_a)``.
        images: ``images[r] (m_r,)`` pool indices of repeat r's images, shared by both pairs.
        rows_per_image: ``k``.
        measure: a registered measure with a Gram form (cca, cka, procrustes, angular_shape).
        n_images: size of the stimulus pool (default: the largest index + 1); the resampling
            unit is one image of it.
        ci: level of the interval. resamples: bootstrap resamples R (the p-value's floor is
            1 / (R + 1)). ci_method: ``"linear"`` or ``"exact"`` resample values. seed: of the draws.

    Returns:
        :class:`PairedDifference`.
    """
    spec: Measure = get(measure)
    if spec.from_grams is None:
        raise MedtransferError(f"{measure} has no form on Gram matrices: no paired image bootstrap (use cca, cka, "
                               "procrustes or angular_shape)")
    level = boot.check_level(ci)
    boot.check_method(ci_method)
    if int(resamples) < 1:
        raise MedtransferError(f"resamples must be at least 1, got {resamples}")
    if not (len(xs_a) == len(ys_a) == len(xs_b) == len(ys_b) == len(images)) or not images:
        raise MedtransferError(
            f"paired_difference needs the same number of repeats for xs_a, ys_a, xs_b, ys_b and images; got "
            f"{len(xs_a)}, {len(ys_a)}, {len(xs_b)}, {len(ys_b)}, {len(images)}"
        )
    for r, (xa, xb, img) in enumerate(zip(xs_a, xs_b, images)):
        if xa.shape[0] != xb.shape[0] or xa.shape[0] != len(img) * int(rows_per_image):
            raise MedtransferError(
                f"repeat {r}: pair a has {xa.shape[0]} rows, pair b {xb.shape[0]}, and {len(img)} images x "
                f"{rows_per_image} rows per image = {len(img) * int(rows_per_image)}: both pairs must use the same rows"
            )
    if min(len(i) for i in images) < boot.MIN_IMAGES:
        raise MedtransferError(f"a paired image bootstrap needs at least {boot.MIN_IMAGES} images per repeat")
    n_pool = int(n_images if n_images is not None else max(int(np.max(i)) for i in images) + 1)
    k = int(rows_per_image)
    with boot.small_problem_threads(int(xs_a[0].shape[1]) + int(ys_a[0].shape[1])):
        mean_a, resample_a = _repeat_means(xs_a, ys_a, images, k, spec, ci_method, n_pool)
        mean_b, resample_b = _repeat_means(xs_b, ys_b, images, k, spec, ci_method, n_pool)
        rng = np.random.default_rng(seed)
        diffs = []
        for start in range(0, int(resamples), RESAMPLE_BATCH):
            w = boot.bootstrap_weights(n_pool, min(RESAMPLE_BATCH, int(resamples) - start), rng)
            diffs.append(resample_a(w) - resample_b(w))
    d = np.concatenate(diffs)
    observed = mean_a - mean_b
    low, high = boot.percentile_interval(d, level, observed)
    span = spec.high - spec.low
    low, high = max(low, -span), min(high, span)  # a difference of two scores in [low, high]
    finite = d[np.isfinite(d)]
    p = float("nan")
    if len(finite) >= 0.9 * len(d) and np.isfinite(observed):
        p = float((1 + np.sum(np.abs(finite - finite.mean()) >= abs(observed))) / (1 + len(finite)))
    return PairedDifference(float(observed), mean_a, mean_b, low, high, p, d, spec.name)


def paired_layer_difference(
    acts_a1: Any, acts_a2: Any, acts_b1: Any, acts_b2: Any, measure: str = "cca", rows: int | None = 20000,
    channels: int | None = 64, repeats: int = 5, seed: int = 0, *, sampling: str = "paper",
    positions: int | None = None, ci: float = 0.95, resamples: int = 10000,
    ci_method: str = boot.DEFAULT_INTERVAL_METHOD,
) -> PairedDifference:
    """:func:`paired_difference` of pair a = (a1, a2) against pair b = (b1, b2) on one layer, from
    activations, with the paper's draws (:func:`~medtransfer.similarity.layer_similarity`) made once
    and shared by the two pairs: the same images, positions and (where channel counts agree) channel
    indices. E.g. a = (imagenet, radimagenet), b = (random seed 1, random seed 2); or a =
    (fine-tuned, its initialisation), b = (another fine-tuned run, its initialisation).

    Args:
        acts_a1, acts_a2, acts_b1, acts_b2: ``(n, C, h, w)`` or ``(n, C)`` activations of the same n
            stimulus images in the same order (numpy or torch); spatial sizes must agree.
        Others as :func:`~medtransfer.similarity.layer_similarity` and :func:`paired_difference`;
        the resampling unit is one of the n images.
    """
    acts = {"acts_a1": acts_a1, "acts_a2": acts_a2, "acts_b1": acts_b1, "acts_b2": acts_b2}
    (xa, ya, xb, yb), images, k, n, rng = draw_repeats(acts, rows, channels, repeats, seed, sampling, positions)
    return paired_difference(xa, ya, xb, yb, images, k, measure, n_images=n, ci=ci, resamples=resamples,
                             ci_method=ci_method, seed=int(rng.integers(2**63)))


def _repeat_means(xs, ys, images, k, spec, method, n_pool):
    """``(mean over repeats, resample(w (B, n_pool)) -> (B,) repeat means)`` for one pair.

    Linear method: each repeat's centred influences are scattered to the pool once, so a batch of
    resamples costs one matrix-vector product (``f(w) = f + g . (w - 1)``; with ``sum g = 0`` the
    weights need not total a repeat's image count). Exact method, or an undefined influence: the
    measure of each resample's weighted Gram blocks."""
    values, influences, linear_total, exact = [], np.zeros(n_pool), 0.0, []
    for x, y, img in zip(xs, ys, images):
        value = spec(x, y)
        values.append(value)
        if method == "linear":
            f, g = boot.influence(x, y, k, spec)
            if np.isfinite(f) and np.isfinite(g).all():
                np.add.at(influences, np.asarray(img), g)
                linear_total += f
                continue
        exact.append((boot.image_blocks(x, y, k), np.asarray(img)))

    def resample(w: np.ndarray) -> np.ndarray:
        total = linear_total + (w - 1.0) @ influences
        for blocks, img in exact:
            total = total + boot.weighted_values(blocks, w[:, img], spec)
        return total / len(values)

    return float(np.mean(values)), resample


def draws_for_holm(tests: int, alpha: float = 0.05) -> int:
    """The fewest permutations (or resamples) ``m`` whose smallest p-value ``1 / (m + 1)`` can still
    pass a Holm (or Bonferroni) correction over ``tests`` tests at family-wise level ``alpha``:
    ``1 / (m + 1) <= alpha / tests``. E.g. 4900 tests at 0.05: 97999."""
    if int(tests) < 1 or not 0.0 < float(alpha) < 1.0:
        raise MedtransferError(f"draws_for_holm needs tests >= 1 and alpha in (0, 1), got {tests} and {alpha}")
    return int(np.ceil(int(tests) / float(alpha))) - 1

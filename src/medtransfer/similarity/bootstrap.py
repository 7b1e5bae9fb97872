"""Uncertainty whose unit is the stimulus image: an image bootstrap interval and a permutation null
for a similarity measured on rows that come in per-image blocks.

Rows of one image (its spatial positions) are correlated, so resampling rows overstates the
precision; here whole images are resampled. Layout: ``x (m * k, p)`` and ``y (m * k, q)``, image-major,
``k`` rows per image (all h x w positions, or a fixed number of sampled ones), the same images and
positions on both sides.

**Bootstrap from sufficient statistics.** With ``z_r = [x_r, y_r]`` (rows centred by the overall
mean, for rounding only), image i contributes ``S_i = sum_r z_r^T z_r`` ``(p + q)^2``, the column sums
``s_i`` and its row count ``k``. A resample with image weights ``w (m,)`` (multinomial counts) has the
centred Gram ``sum_i w_i S_i - (sum_i w_i s_i)(sum_i w_i s_i)^T / sum_i w_i k``: for all resamples at
once this is one matrix product ``W (R, m) @ S (m, (p + q)^2)``, followed by batched c x c problems
(:mod:`medtransfer.similarity.batched`); nothing passes over the rows again. That is the ``"exact"``
interval method. Its c x c problems cost about ``R * c^3`` (eigen- and triangular solves per
resample), which for CCA at c = 64 is already 50-70 one-estimate costs and grows with c^3.

**Linearised resamples** (``"linear"``, the default): each resample's value is replaced by its
first-order expansion in the image weights, ``f(w) ~ f(1) + g . (w - 1)`` with image influences
``g (m,)``, so all R resamples cost one matrix-vector product: the bootstrap distribution of a
linear approximation, as in Efron's linear bootstrap. Up to ``JACKKNIFE_MAX_IMAGES`` images the
influences are jackknife ones, from the m leave-one-image-out values (m batched c x c problems);
above, derivatives ``df/dw_i`` at ``w = 1`` (one autograd pass through the same Gram form). With
few images a resample's duplicated images act far from linearly, and derivatives under-cover
badly there (57% at 16 images and 64 channels, against 95% for the jackknife influences). For the
smooth measures here (CCA, CKA, Procrustes, the angular metric) the linear intervals cover as the
exact ones do or better (the calibration tests run both; docs/protocol.md has the figures); they
miss only the skewness that a resample's nonlinearity would add. Where the influence
is not finite (an undefined derivative, e.g. an angular metric of exactly identical inputs or a
rank-deficient side), the exact resamples are used instead. Measures without a
Gram form (``Measure.from_grams`` is None: SVCCA, PWCCA, debiased CKA, RSA, k-NN) get no interval
(NaN): a resample duplicates images, which for RSA and k-NN would create zero distances and
spurious neighbours, and a recomputation per resample costs R full estimates.

**Permutation null.** The same score with the image correspondence broken: image i of x is paired
with image pi(i) of y (position by position). Gxx, Gyy and the centring stay; only the cross block
changes, ``X^T Y_pi`` (one ``(p x n) @ (n x q)`` product per permutation). Measures without a Gram
form are recomputed on the permuted rows. The p-value counts null values at least as extreme as the
observed one, with the +1 correction: ``(1 + #{null >= observed}) / (1 + permutations)`` for a
similarity (``<=`` for a distance).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np

from medtransfer.errors import MedtransferError
from medtransfer.similarity.pairstats import ImageBlocks, PairStats
from medtransfer.similarity.pairstats import split_images as _split_images
from medtransfer.similarity.registry import Measure, get

#: Resamples of Gram blocks held at once (bounds memory to about this many x (p + q)^2 x 8 bytes).
MAX_BATCH_BYTES = 1 << 27
#: The permutation null precomputes all image-pair cross blocks X_i^T Y_j (m^2 p q floats) while
#: they take at most this many bytes and there are more permutations than images.
MAX_PAIR_BLOCK_BYTES = 1 << 28
#: The null's image-pair cross blocks are taken one image at a time (for all permutations at once)
#: only while each image has at least this many rows: thinner products cost more per multiply-add
#: than the direct ones they replace.
MIN_ROWS_FOR_CHUNKS = 8
#: Image-block forms (cubic in the weights) are used up to this many images.
MAX_IMAGES_FOR_BLOCK_FORMS = 128
#: Batched problems up to this size (p + q) run on one torch CPU thread.
SMALL_PROBLEM = 128
#: A bootstrap interval needs at least this many images per repeat (fewer: NaN interval).
MIN_IMAGES = 2
#: Up to this many images the linear method's influences come from leave-one-image-out values
#: (m batched c x c problems); above, from derivatives (one autograd pass).
JACKKNIFE_MAX_IMAGES = 32

#: How resample values are computed (module notes): ``"linear"`` first-order in the image weights,
#: ``"exact"`` the measure of each resample's Gram blocks.
IntervalMethod = Literal["linear", "exact"]
INTERVAL_METHODS: tuple[str, ...] = get_args(IntervalMethod)
DEFAULT_INTERVAL_METHOD: IntervalMethod = "linear"


def check_method(method: str) -> str:
    if method not in INTERVAL_METHODS:
        raise MedtransferError(f"ci_method must be one of {', '.join(INTERVAL_METHODS)}, got {method!r}")
    return method


@contextmanager
def small_problem_threads(d: int):
    """One torch CPU thread while batched problems of size ``d`` run (threads only add spin-waits
    on small batched LAPACK calls; measured 2-3x slower with 2 threads on a busy 2-core machine)."""
    import torch

    previous = torch.get_num_threads()
    if d <= SMALL_PROBLEM and previous > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def image_blocks(x: Any, y: Any, rows_per_image: int) -> ImageBlocks:
    """Per-image Gram blocks of the rows ``x (m * k, p)``, ``y (m * k, q)``; ``k = rows_per_image``."""
    return PairStats(x, y, rows_per_image).blocks()


def weighted_grams(blocks: ImageBlocks, weights: Any) -> tuple[Any, Any, Any]:
    """Centred Gram blocks ``(gxx (R, p, p), gyy (R, q, q), gxy (R, p, q))`` of each weighting
    ``weights (R, m)`` of the images (row counts of a resample; all ones = the data themselves)."""
    import torch

    w = torch.as_tensor(weights, dtype=torch.float64, device=blocks.gram.device)
    m, d = blocks.gram.shape[0], blocks.gram.shape[1]
    g = (w @ blocks.gram.reshape(m, d * d)).reshape(-1, d, d)
    s = w @ blocks.sums
    count = (w.sum(dim=1) * blocks.rows_per_image).clamp(min=1.0)
    g = g - s[:, :, None] * (s[:, None, :] / count[:, None, None])
    p = blocks.p
    return g[:, :p, :p], g[:, p:, p:], g[:, :p, p:]


def weighted_values(blocks: ImageBlocks, weights: Any, measure: Measure) -> np.ndarray:
    """``measure`` for each row of ``weights (R, m)``, numpy ``(R,)``, in memory-bounded batches.

    Measures with a form on the image blocks themselves (``Measure.from_blocks``, linear CKA) use it
    while there are at most ``MAX_IMAGES_FOR_BLOCK_FORMS`` images: polynomials in the weights whose
    cost does not grow with the number of neurons."""
    if measure.from_grams is None:
        raise MedtransferError(f"{measure.name} has no form on Gram matrices: no image bootstrap")
    if measure.from_blocks is not None and blocks.images <= MAX_IMAGES_FOR_BLOCK_FORMS:
        import torch

        w = torch.as_tensor(np.asarray(weights), dtype=torch.float64, device=blocks.gram.device)
        return measure.from_blocks(blocks, w).cpu().numpy()
    d = blocks.gram.shape[1]
    batch = max(1, MAX_BATCH_BYTES // (8 * d * d * 3))
    out = []
    for start in range(0, len(weights), batch):
        gxx, gyy, gxy = weighted_grams(blocks, weights[start : start + batch])
        out.append(measure.from_grams(gxx, gyy, gxy).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def influence(x: Any, y: Any, rows_per_image: int, measure: Measure,
              stats: PairStats | None = None) -> tuple[float, np.ndarray]:
    """``(f, g)``: the measure on ``x (m * k, p)``, ``y (m * k, q)`` and each image's influence
    ``g (m,)``, so that ``f(w) ~ f + g . (w - 1)`` for image weights ``w`` (module notes).

    The influences sum to zero (see :func:`_centred`). Up to ``JACKKNIFE_MAX_IMAGES`` images,
    ``g_i = (m - 1) / m * (mean_j f_(-j) - f_(-i))`` from the ``m`` leave-one-image-out values: a
    finite difference at the scale of a bootstrap perturbation, which
    keeps the nonlinearity that few images bring (measured: coverage 91-99% where derivatives give
    57-87%, see docs/protocol.md). Above, ``g_i = df/dw_i`` at ``w = 1``: with rows centred by
    their mean, ``dG/dw_i = S_i``, so ``g_i = sum over image i's rows r of z_r^T Gamma z_r`` with
    ``Gamma = df/dG`` from one autograd pass through ``measure.from_grams``; two products over the
    rows, no per-image blocks. ``stats``: the pair's shared statistics (:mod:`~medtransfer.similarity.pairstats`),
    when several measures are resampled on the same rows."""
    import torch

    if measure.from_grams is None:
        raise MedtransferError(f"{measure.name} has no form on Gram matrices: no image bootstrap")
    stats = stats if stats is not None else PairStats(x, y, rows_per_image)
    tx, ty, m = stats.torch_rows()
    if m <= JACKKNIFE_MAX_IMAGES:
        # All images, then each left out, in one batch. As weightings, not as totals minus one
        # block: subtracting a dominant image's block leaves rounding noise where the data without
        # it have none (a constant neuron).
        values = weighted_values(stats.blocks(), np.vstack([np.ones((1, m)), 1.0 - np.eye(m)]), measure)
        value = float(values[0])
        return value, _centred((m - 1) / m * (values[1:].mean() - values[1:]))
    p = tx.shape[1]
    z = stats.centred()
    gram = stats.gram().detach().requires_grad_(True)  # a leaf of its own: the shared tensor stays as it is
    with torch.enable_grad():
        value = measure.from_grams(gram[None, :p, :p], gram[None, p:, p:], gram[None, :p, p:])
        if not bool(torch.isfinite(value).all()):
            return float("nan"), np.full(m, np.nan)
        (gamma,) = torch.autograd.grad(value.sum(), gram)
    per_row = ((z @ gamma) * z).sum(dim=1)
    return float(value.detach()[0]), _centred(per_row.reshape(m, -1).sum(dim=1).cpu().numpy())


def _centred(g: np.ndarray) -> np.ndarray:
    """Influences ``g (m,)`` shifted to sum to zero.

    Every measure with a Gram form is unchanged when all image weights are multiplied by one
    factor, so its exact first-order expansion has ``sum g = 0`` (Euler's theorem for functions
    homogeneous of degree 0). Raw jackknife differences ``f - f_(-i)`` do not sum to zero (their
    mean is the jackknife bias), and a resample whose weights do not total m - a repeat's images
    picked out of a larger pool's multinomial draw, whose count varies - would turn that mean into
    spurious spread: measured 0.0125 instead of 0.0041 for the resample SD of CCA at 16 images x
    200 positions x 64 channels from a pool of 400 (``exact``: 0.0045)."""
    return g - g.mean() if np.isfinite(g).all() else g


def resample_values(x: Any, y: Any, rows_per_image: int, weights: Any, measure: Measure,
                    method: str = DEFAULT_INTERVAL_METHOD, stats: PairStats | None = None) -> np.ndarray:
    """``measure``'s value for each image weighting ``weights (R, m)`` of ``x (m * k, p)``,
    ``y (m * k, q)``, numpy ``(R,)``: ``"linear"``, ``f + g . (w - 1)`` (:func:`influence`; the
    exact values where an influence is not finite), or ``"exact"`` (:func:`weighted_values`).
    ``stats``: the pair's shared statistics, as for :func:`influence`."""
    weights = np.asarray(weights, dtype=np.float64)
    stats = stats if stats is not None else PairStats(x, y, rows_per_image)
    if check_method(method) == "linear":
        value, grad = influence(x, y, rows_per_image, measure, stats)
        if not np.isfinite(value):
            return np.full(len(weights), np.nan)
        if np.isfinite(grad).all():
            return value + (weights - 1.0) @ grad
    return weighted_values(stats.blocks(), weights, measure)


def bootstrap_weights(images: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """``(resamples, images)`` multinomial counts: each row draws ``images`` images with replacement."""
    return rng.multinomial(images, np.full(images, 1.0 / images), size=int(resamples)).astype(np.float64)


def percentile_interval(values: np.ndarray, level: float, estimate: float | None = None) -> tuple[float, float]:
    """Percentile interval of the finite resampled ``values`` at ``level``; NaNs when fewer than 90%
    are finite.

    ``estimate``: the value on the data. The interval is then centred on it: shifted by
    ``estimate - mean(values)``, the bootstrap's own bias. CCA and CKA are biased upwards at finite
    sizes, and a resample (about 63% distinct images) is more biased than the data, so the plain
    percentile interval sits too high; centred, it is an interval for the estimator's mean over
    fresh stimulus draws of the same size (what the calibration test checks).
    """
    finite = values[np.isfinite(values)]
    if len(values) == 0 or len(finite) < 0.9 * len(values):
        return float("nan"), float("nan")
    tail = 50.0 * (1.0 - level)
    low, high = np.percentile(finite, [tail, 100.0 - tail])
    if estimate is not None:
        shift = float(estimate) - float(finite.mean())
        low, high = low + shift, high + shift
    return float(low), float(high)


def check_level(level: float) -> float:
    level = float(level)
    if not 0.0 < level < 1.0:
        raise MedtransferError(f"ci must be a confidence level in (0, 1), e.g. 0.95; got {level}")
    return level


@dataclass(frozen=True)
class Interval:
    """A bootstrap interval: ``low``, ``high`` and the resampled ``values (R,)``."""

    low: float
    high: float
    values: np.ndarray


def image_bootstrap(
    x: Any, y: Any, rows_per_image: int, measure: str = "cca", resamples: int = 1000, ci: float = 0.95, seed: int = 0,
    method: str = DEFAULT_INTERVAL_METHOD,
) -> Interval:
    """Centred percentile interval of ``measure`` over image resamples of ``x (m * k, p)``, ``y (m * k, q)``
    (:func:`percentile_interval`); ``method``: ``"linear"`` or ``"exact"`` resample values (module notes)."""
    level = check_level(ci)
    check_method(method)
    spec = get(measure)
    images = _split_images(x, y, rows_per_image)[2]
    weights = bootstrap_weights(images, resamples, np.random.default_rng(seed))
    values = resample_values(x, y, rows_per_image, weights, spec, method)
    estimate = spec(x, y)
    low, high = percentile_interval(values, level, estimate)
    if np.isfinite(low) and np.isfinite(high):  # the centring shift must not leave the measure's range
        low, high = float(np.clip(low, spec.low, spec.high)), float(np.clip(high, spec.low, spec.high))
    return Interval(low, high, values)


@dataclass(frozen=True)
class Null:
    """Permutation null: ``values (P,)``, their mean and 95th percentile, and the p-value of ``observed``."""

    values: np.ndarray
    mean: float
    p95: float
    p_value: float


def permutation_values(x: Any, y: Any, rows_per_image: int, measure: str, permutations: np.ndarray) -> np.ndarray:
    """``measure`` of x against y with y's images reordered by each row of ``permutations (P, m)``."""
    return permuter(x, y, rows_per_image, measure)(permutations)


def permuter(x: Any, y: Any, rows_per_image: int, measure: str,
             stats: PairStats | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """A function ``permutations (P, m) -> (P,)`` values of ``measure`` of x against y with y's
    images reordered by each row, for drawing a null in batches: the centring, the Gram matrices
    and (once a batch has more permutations than images) all image-pair cross blocks are computed
    once, on the first call that needs them, and kept in ``stats`` (the pair's shared statistics,
    :mod:`~medtransfer.similarity.pairstats`) for the nulls of other measures on the same rows."""
    import torch

    spec = get(measure)
    stats = stats if stats is not None else PairStats(x, y, rows_per_image)
    tx, ty, m = stats.torch_rows()
    k = int(rows_per_image)
    if spec.from_grams is None:
        yb_raw = ty.reshape(m, k, -1)

        def direct(permutations: np.ndarray) -> np.ndarray:
            perms = np.asarray(permutations, dtype=np.int64).reshape(-1, m)
            return np.array([spec(tx, yb_raw[torch.as_tensor(pi, device=ty.device)].reshape(m * k, -1))
                             for pi in perms])

        return direct
    p = tx.shape[1]
    gram = stats.gram()
    gxx, gyy = gram[:p, :p], gram[p:, p:]

    def values(permutations: np.ndarray) -> np.ndarray:
        cross = null_crosses(stats, permutations)
        count = cross.shape[0]
        return spec.from_grams(gxx.expand(count, -1, -1), gyy.expand(count, -1, -1), cross).cpu().numpy()

    return values


def null_route(stats: PairStats, count: int, chunked: bool = False) -> str:
    """How :func:`null_crosses` sums ``count`` permutations: ``"table"``, ``"images"`` or ``"direct"``."""
    tx, ty, m = stats.torch_rows()
    p, q = tx.shape[1], ty.shape[1]
    if stats.cached("pair_blocks") is not None or (count > m and 8 * m * m * p * q <= MAX_PAIR_BLOCK_BYTES):
        return "table"
    if chunked and count > m and stats.rows_per_image >= MIN_ROWS_FOR_CHUNKS:
        return "images"
    return "direct"


def null_crosses(stats: PairStats, permutations: np.ndarray, chunked: bool = False) -> Any:
    """The permutation null's cross blocks ``X^T Y_pi (P, p, q)``, torch float64, of the centred
    rows of ``stats`` with y's images reordered by each row of ``permutations (P, m)``.

    Three routes to the same sums (module notes), for more permutations than images: all the
    image-pair cross blocks ``X_i^T Y_j`` (the cost of m permutations) at once when they fit in
    ``MAX_PAIR_BLOCK_BYTES``, kept in ``stats`` for later batches and other measures, each
    permutation then a sum of m of them; where they do not fit and the call holds every
    permutation the pair's nulls will draw (``chunked``), the same blocks one x image at a time,
    each permutation taking its block of each, while each image has at least
    ``MIN_ROWS_FOR_CHUNKS`` rows (fewer: the products are too thin to pay). Otherwise one product
    ``x^T y_pi`` per permutation."""
    import torch

    tx, ty, m = stats.torch_rows()
    k, p, q = stats.rows_per_image, tx.shape[1], ty.shape[1]
    route = null_route(stats, len(permutations), chunked)
    z = stats.centred()
    xb, yb = z[:, :p].reshape(m, k, p), z[:, p:].reshape(m, k, q)
    perms = np.asarray(permutations, dtype=np.int64).reshape(-1, m)
    index = torch.as_tensor(perms, device=ty.device)
    count = len(perms)
    batch = max(1, MAX_BATCH_BYTES // (8 * p * q))
    table = stats.cached("pair_blocks")
    if route == "table" and table is None:
        # All image-pair cross blocks once, then each permutation is a sum of m of them: m p q
        # additions instead of n p q multiply-adds, summed by embedding_bag straight from the
        # blocks (no gathered copy).
        table = stats.keep("pair_blocks", torch.einsum("ikp,jkq->ijpq", xb, yb).reshape(m * m, p * q))
    if route == "table":
        rows = torch.arange(m, device=ty.device) * m
        return torch.cat([
            torch.nn.functional.embedding_bag(rows + index[start : start + batch], table, mode="sum")
            for start in range(0, count, batch)
        ]).reshape(-1, p, q)
    if route == "images":
        # One x image at a time: its blocks against every y image, X_i^T [Y_1 .. Y_m] (p, m, q),
        # from which each permutation takes block pi(i); no m x m table is held or transposed.
        y_wide = yb.permute(1, 0, 2).reshape(k, m * q)
        total = torch.zeros((p, count, q), dtype=z.dtype, device=z.device)
        for i in range(m):
            total += (xb[i].T @ y_wide).view(p, m, q).index_select(1, index[:, i])
        return total.permute(1, 0, 2).contiguous()
    batch = max(1, MAX_BATCH_BYTES // (8 * m * k * q))
    return torch.cat([  # (P, p, q): x^T y_pi for a batch of permutations per matrix product
        torch.matmul(xb.reshape(m * k, p).T, yb[index[start : start + batch]].reshape(-1, m * k, q))
        for start in range(0, count, batch)
    ])


def random_permutations(images: int, permutations: int, rng: np.random.Generator) -> np.ndarray:
    """``(permutations, images)`` uniform random permutations of the image indices."""
    return np.argsort(rng.random((int(permutations), images)), axis=1)


def null_summary(values: np.ndarray, observed: float, higher_is_similar: bool = True) -> Null:
    """Null mean, 95th percentile (5th for a distance: the similar end) and the permutation p-value."""
    finite = values[np.isfinite(values)]
    if len(finite) == 0 or not np.isfinite(observed):
        return Null(values, float("nan"), float("nan"), float("nan"))
    extreme = finite >= observed if higher_is_similar else finite <= observed
    p95 = np.percentile(finite, 95.0 if higher_is_similar else 5.0)
    return Null(values, float(finite.mean()), float(p95), float((1 + extreme.sum()) / (1 + len(finite))))


def permutation_null(
    x: Any, y: Any, rows_per_image: int, measure: str = "cca", permutations: int = 100, seed: int = 0
) -> Null:
    """The permutation null of ``measure`` for ``x (m * k, p)``, ``y (m * k, q)`` (image blocks of k rows)."""
    spec = get(measure)
    if int(permutations) < 1:
        raise MedtransferError(f"permutations must be at least 1, got {permutations}")
    m = x.shape[0] // int(rows_per_image)
    perms = random_permutations(m, permutations, np.random.default_rng(seed))
    values = permutation_values(x, y, rows_per_image, measure, perms)
    return null_summary(values, spec(x, y), spec.higher_is_similar)

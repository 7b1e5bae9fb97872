"""The paper's layer-wise similarity protocol: activations to rows, sampled images and channels,
repeats; with an image-bootstrap interval and a permutation null on request.

Activations of one layer for the same n stimulus images under two models, ``(n, C, h, w)`` for
convolutional layers or ``(n, C)`` for pooled ones, become matrices ``(m * k, c)``: ``k`` spatial
positions of each of ``m`` sampled images are rows (image-major), ``c`` sampled channels are the
columns. Two ways to spend a budget of ``rows`` rows (:data:`SAMPLINGS`):

- ``"paper"`` (default, the paper's protocol): every position of ``m = round(rows / (h * w))``
  images (k = h * w). At early layers this is 1-3 images per repeat.
- ``"spread"``: ``positions`` random positions, the same for each of ``m = round(rows / positions)``
  images of a repeat (fewer images when the pool is smaller); the same budget over many more
  images, which is what an image bootstrap and a permutation null need. The positions are shared
  within a repeat so that the permutation null, which pairs image i of x with image pi(i) of y
  row by row, pairs each position with itself: with positions drawn per image it paired different
  positions, and two independent networks that share a positional pattern (a padding border)
  were "significant" in every run. Fresh positions per repeat.

Each repeat draws fresh images (without replacement), fresh channels (``channels`` of them, the
same indices for both models when their channel counts agree) and, for ``"spread"``, fresh
positions (shared by the repeat's images); then measures any registered measure
(:mod:`medtransfer.similarity.registry`). ``mean``/``std`` are over repeats.

Interval (``ci``): image-bootstrap percentile interval of the repeat mean, centred on the estimate
(:func:`~medtransfer.similarity.bootstrap.percentile_interval`). Each resample draws the
n stimulus images with replacement (multinomial counts); a repeat's resampled value weights its own
images by their counts, so repeats that share images stay correlated as they are in the estimate.
Null (``permutations``): the images of y are shuffled against those of x, by one permutation of
the pool shared by all repeats (within groups of images drawn by the same repeats,
:func:`shared_permutations`), and the repeat mean recomputed; see
:mod:`medtransfer.similarity.bootstrap`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from medtransfer.errors import MedtransferError
from medtransfer.similarity import bootstrap as boot
from medtransfer.similarity._validation import is_tensor
from medtransfer.similarity.pairstats import PairStats
from medtransfer.similarity.registry import Measure, get

SAMPLINGS = ("paper", "spread")
#: Positions per image of the "spread" sampling when none are given.
DEFAULT_POSITIONS = 16


@dataclass(frozen=True)
class LayerSimilarity:
    """Similarity of one layer pair over repeats, with its uncertainty.

    Attributes:
        mean: mean over repeats, a python float.
        std: standard deviation over repeats (ddof=0), a python float.
        values: ``(repeats,)`` the per-repeat values.
        rows: rows per repeat (sampled images x positions); channels: channels per repeat.
        images: images per repeat.
        ci_low, ci_high: the *stimulus* interval: image-bootstrap interval of ``mean`` over fresh
            stimulus images, the channels and positions held at those drawn (NaN when not asked
            for, when the measure has no Gram form, or with fewer than 2 images per repeat).
        draws_ci_low, draws_ci_high: the stimulus interval widened by the channel and position
            draw: each half-width combined in quadrature with ``z * s / sqrt(R)``, ``s`` the SD
            of the R repeat values (ddof=1), ``z`` the normal quantile of the level (NaN with one
            repeat or without a stimulus interval). Both intervals lie in the measure's range.
        null_mean, null_p95: mean and 95% point (the similar end: 95th percentile of a
            similarity, 5th of a distance) of ``mean`` under the permutation null (NaN if not asked).
        p_value: permutation p-value of ``mean`` with the +1 correction (NaN if not asked).
        adjusted: the score corrected for chance against the null mean, ``(mean - null_mean) /
            (best - null_mean)`` with ``best`` the value of identical inputs (``high`` of a
            similarity, ``low`` of a distance, whose sign is flipped): 0 at the null, 1 for
            identical representations, at most 1 (NaN without a null). It removes the part of the
            finite-sample bias that the sampling geometry (images x positions) sets; see
            docs/protocol.md for when it is flat across layers.
        resamples: the bootstrap resample values of ``mean`` (empty when not asked).
    """

    mean: float
    std: float
    values: np.ndarray
    rows: int
    channels: int
    images: int = 0
    ci_low: float = float("nan")
    ci_high: float = float("nan")
    draws_ci_low: float = float("nan")
    draws_ci_high: float = float("nan")
    null_mean: float = float("nan")
    null_p95: float = float("nan")
    p_value: float = float("nan")
    adjusted: float = float("nan")
    resamples: np.ndarray = field(default_factory=lambda: np.zeros(0))


def layer_similarity(
    acts_a: Any,
    acts_b: Any,
    measure: str = "cca",
    rows: int | None = 20000,
    channels: int | None = 64,
    repeats: int = 5,
    seed: int = 0,
    *,
    sampling: str = "paper",
    positions: int | None = None,
    ci: float | None = None,
    resamples: int = 1000,
    ci_method: str = boot.DEFAULT_INTERVAL_METHOD,
    permutations: int = 0,
) -> LayerSimilarity:
    """Similarity of two models' activations of one layer on the same stimuli (paper protocol).

    Args:
        acts_a, acts_b: ``(n, C, h, w)`` or ``(n, C)`` activations of the same n images, in the same
            order (numpy or torch, any device). Spatial sizes must agree; channel counts may differ.
        measure: a registered measure name (``medtransfer.similarity.registry.NAMES``), e.g.
            ``"cca"`` (mean of all canonical correlations) or ``"cka"`` (linear CKA).
        rows: target number of rows per repeat; None uses every image (all positions, or
            ``positions`` of each).
        channels: channels drawn per repeat (all if None or if a layer has fewer).
        repeats: number of independent draws.
        seed: seed of every draw (numpy ``default_rng``); the same seed gives the same result.
        sampling: ``"paper"`` or ``"spread"`` (module notes).
        positions: positions per image for ``"spread"`` (default 16, at most h * w).
        ci: confidence level of the image-bootstrap interval (e.g. 0.95); None: no interval.
        resamples: bootstrap resamples.
        ci_method: ``"linear"`` (first-order resample values, cheap) or ``"exact"`` (each
            resample's own value); see :mod:`medtransfer.similarity.bootstrap`.
        permutations: permutations of the null (0: no null); the smallest p-value is
            1 / (permutations + 1): see :func:`~medtransfer.similarity.draws_for_holm`.
    """
    spec = get(measure)
    (xs, ys), images, k, n, rng = draw_repeats({"acts_a": acts_a, "acts_b": acts_b}, rows, channels, repeats, seed,
                                               sampling, positions)
    return score_repeats(xs, ys, images, k, spec.name, n_images=n, ci=ci, resamples=resamples,
                         ci_method=ci_method, permutations=permutations, seed=int(rng.integers(2**63)))


def draw_repeats(
    acts: dict[str, Any], rows: int | None, channels: int | None, repeats: int, seed: int,
    sampling: str = "paper", positions: int | None = None,
) -> tuple[list[list[Any]], list[np.ndarray], int, int, np.random.Generator]:
    """The protocol's draws for several networks' activations of one layer on the same images.

    ``acts``: name -> ``(n, C, h, w)`` or ``(n, C)`` (names appear in messages). Per repeat: images
    (sorted, without replacement), channels of the first network (the same indices for every
    network with as many channels, a draw of its own otherwise), and for ``"spread"`` one set of
    positions shared by the repeat's images. Returns ``(rows per network: [network][repeat]
    (m * k, c), images per repeat, k, n, the generator after the draws)``.
    """
    if int(repeats) < 1:
        raise MedtransferError(f"repeats must be at least 1, got {repeats}")
    if sampling not in SAMPLINGS:
        raise MedtransferError(f"sampling must be one of {', '.join(SAMPLINGS)}, got {sampling!r}")
    names = list(acts)
    arrays = [_as_activations(acts[name], name) for name in names]
    first = arrays[0]
    for name, a in zip(names[1:], arrays[1:]):
        if a.shape[0] != first.shape[0]:
            raise MedtransferError(
                f"{names[0]} and {name} must hold the same images: {first.shape[0]} and {a.shape[0]} images"
            )
        if a.shape[2:] != first.shape[2:]:
            raise MedtransferError(
                f"{names[0]} and {name} must have the same spatial size, got {tuple(first.shape[2:])} and "
                f"{tuple(a.shape[2:])}"
            )
    n, hw = first.shape[0], int(np.prod(first.shape[2:], dtype=np.int64))
    if rows is not None and int(rows) < 1:
        raise MedtransferError(f"rows must be positive, got {rows}")
    if channels is not None and int(channels) < 1:
        raise MedtransferError(f"channels must be positive, got {channels}")
    k = hw if sampling == "paper" else int(min(hw, DEFAULT_POSITIONS if positions is None else positions))
    if k < 1:
        raise MedtransferError(f"positions must be positive, got {positions}")
    m = n if rows is None else int(min(n, max(1, round(int(rows) / k))))
    counts = [a.shape[1] for a in arrays]
    c = min(counts) if channels is None else min(int(channels), *counts)
    rng = np.random.default_rng(seed)
    out: list[list[Any]] = [[] for _ in arrays]
    images = []
    for _ in range(int(repeats)):
        picked = np.sort(rng.choice(n, size=m, replace=False))
        first_channels = np.sort(rng.choice(counts[0], size=c, replace=False))
        chans = [first_channels] + [first_channels if cj == counts[0] else np.sort(rng.choice(cj, size=c, replace=False))
                                    for cj in counts[1:]]
        # One set of positions per repeat, shared by its images: the null's image permutation then
        # keeps position j paired with position j (module notes).
        where = None if k == hw else np.tile(np.sort(rng.choice(hw, size=k, replace=False)), (m, 1))
        for rows_of, a, ch in zip(out, arrays, chans):
            rows_of.append(activation_rows(a, picked, ch, where))
        images.append(picked)
    return out, images, k, n, rng


def score_repeats(
    xs: list[Any],
    ys: list[Any],
    images: list[np.ndarray],
    rows_per_image: int,
    measure: str,
    *,
    n_images: int | None = None,
    ci: float | None = None,
    resamples: int = 1000,
    ci_method: str = boot.DEFAULT_INTERVAL_METHOD,
    permutations: int = 0,
    seed: int = 0,
    shared: list[PairStats] | None = None,
) -> LayerSimilarity:
    """Score repeat matrices ``xs[r] (m_r * k, c_r)``, ``ys[r]`` (image-major, ``k`` rows per image)
    whose images are the pool indices ``images[r] (m_r,)``; interval and null as :func:`layer_similarity`.

    ``n_images``: size of the stimulus pool the images come from (default: the largest index + 1).
    A repeat whose measure fails (MedtransferError) raises; callers that tolerate it catch it.

    A measure with a row limit (``Measure.max_rows``: RSA, k-NN) gets each repeat subsampled
    first (:func:`limit_rows`): whole images, ``max_rows // k`` of them at random, and when one
    image alone has more than ``max_rows`` rows, ``max_rows`` of its positions (the same for
    both sides). ``rows`` and ``images`` of the result are what was measured.

    ``shared``: per repeat, the :class:`~medtransfer.similarity.pairstats.PairStats` of
    ``(xs[r], ys[r])``, when several measures are scored on the same repeats (:func:`shared_stats`):
    what they have in common (products over the rows, per-image blocks, the null's cross blocks)
    is then computed once. The result is the same up to rounding.
    """
    spec: Measure = get(measure)
    boot.check_method(ci_method)
    if spec.max_rows is not None:
        limited = limit_rows(xs, ys, images, rows_per_image, spec.max_rows, np.random.default_rng([seed, 1]))
        if limited[0] is not xs:
            shared = None  # other rows than the shared statistics describe
        xs, ys, images, rows_per_image = limited
    if shared is None:
        shared = shared_stats(xs, ys, rows_per_image)
    out = _point_values(spec, xs, ys, images, shared)
    rng = np.random.default_rng(seed)
    with boot.small_problem_threads(out["channels"] + int(ys[0].shape[1])):
        _interval(out, xs, ys, images, rows_per_image, spec, n_images, ci, resamples, ci_method, rng, shared)
        if int(permutations) > 0 and min(len(i) for i in images) >= 2:
            _add_null(out, spec, sequential_null(xs, ys, images, rows_per_image, spec, int(permutations), out["mean"],
                                                 rng, shared))
    return LayerSimilarity(**out)


def _point_values(spec: Measure, xs, ys, images, shared: list[PairStats]) -> dict[str, Any]:
    """The entries of :class:`LayerSimilarity` that the repeats' values give."""
    values = np.array([stats.point_value(spec) for stats in shared], dtype=np.float64)
    return {
        "mean": float(values.mean()), "std": float(values.std()), "values": values,
        "rows": int(xs[0].shape[0]), "channels": int(xs[0].shape[1]), "images": int(len(images[0])),
    }


#: :func:`score_measures` draws the nulls of its measures together up to this many permutations
#: each (their permutations and cross blocks are held at once); above, one measure after another.
MAX_JOINT_PERMUTATIONS = 1000


def score_measures(
    xs: list[Any],
    ys: list[Any],
    images: list[np.ndarray],
    rows_per_image: int,
    measures: list[str] | tuple[str, ...],
    seeds: list[int],
    *,
    n_images: int | None = None,
    ci: float | None = None,
    resamples: int = 1000,
    ci_method: str = boot.DEFAULT_INTERVAL_METHOD,
    permutations: int = 0,
) -> dict[str, LayerSimilarity | MedtransferError]:
    """:func:`score_repeats` of the same repeats by each of ``measures``, measure ``j`` with seed
    ``seeds[j]``: name -> its :class:`LayerSimilarity`, or the MedtransferError it raised.

    The same numbers (up to rounding) with less work: the repeats' shared statistics
    (:func:`shared_stats`) serve every measure, and the permutation nulls of the measures with a
    Gram form are drawn together. Each measure's permutations are those its own seed gives,
    every batch drawn up front (the sequential null's batches, in order; its early stop then reads
    them batch by batch); each repeat's null cross blocks for all of them come from one pass over
    the image-pair blocks (:func:`~medtransfer.similarity.bootstrap.null_crosses`), which pays
    once the measures' permutations together outnumber the images. Where they do not, or a
    measure draws more than ``MAX_JOINT_PERMUTATIONS``, each measure draws its null as
    :func:`score_repeats` does.
    """
    if len(seeds) != len(measures):
        raise MedtransferError(f"score_measures needs one seed per measure, got {len(seeds)} for {len(measures)}")
    k = int(rows_per_image)
    shared = shared_stats(xs, ys, k)
    settings = dict(n_images=n_images, ci=ci, resamples=resamples, ci_method=ci_method)
    results: dict[str, LayerSimilarity | MedtransferError] = {}
    permutations = int(permutations)
    joint_null = 0 < permutations <= MAX_JOINT_PERMUTATIONS and min(len(i) for i in images) >= 2
    pending = []
    for name, seed in zip(measures, seeds):
        spec = get(name)
        if not joint_null or spec.from_grams is None or spec.max_rows is not None:
            try:
                results[name] = score_repeats(xs, ys, images, k, name, permutations=permutations, seed=seed,
                                              shared=shared, **settings)
            except MedtransferError as error:
                results[name] = error
            continue
        boot.check_method(ci_method)
        try:
            out = _point_values(spec, xs, ys, images, shared)
            rng = np.random.default_rng(seed)
            with boot.small_problem_threads(out["channels"] + int(ys[0].shape[1])):
                _interval(out, xs, ys, images, k, spec, n_images, ci, resamples, ci_method, rng, shared)
        except MedtransferError as error:
            results[name] = error
            continue
        draws = [shared_permutations(images, size, rng) for size in null_batch_sizes(permutations)]
        pending.append((name, spec, out, draws, rng))
    if pending:
        with boot.small_problem_threads(int(xs[0].shape[1]) + int(ys[0].shape[1])):
            _joint_nulls(pending, results, xs, ys, images, k, permutations, shared)
    return {name: results[name] for name in measures}


def _joint_nulls(pending, results, xs, ys, images, k, permutations, shared) -> None:  # noqa: ANN001
    """The nulls of :func:`score_measures`' pending measures, together where that pays."""
    try:
        together = boot.null_route(shared[0], permutations * len(pending), chunked=True) != "direct"
        per_repeat = [_joint_null_values(stats, r, pending) for r, stats in enumerate(shared)] if together else None
    except MedtransferError as error:
        results.update({name: error for name, *_ in pending})
        return
    for j, (name, spec, out, draws, rng) in enumerate(pending):
        if per_repeat is None:  # one measure after another, each batch computed as the null goes
            try:
                summary = sequential_null(xs, ys, images, k, spec, permutations, out["mean"], rng, shared, draws)
            except MedtransferError as error:
                results[name] = error
                continue
        else:
            def batch(b: int, size: int, j: int = j) -> np.ndarray:
                return np.stack([values[j][b] for values in per_repeat]).mean(axis=0)

            summary = _sequential_summary(batch, permutations, out["mean"], spec)
        _add_null(out, spec, summary)
        results[name] = LayerSimilarity(**out)


def _joint_null_values(stats: PairStats, r: int, pending) -> list[list[np.ndarray]]:  # noqa: ANN001
    """Repeat ``r``'s null values ``[measure][batch] (size,)`` of every pending measure, from one
    pass over the image-pair cross blocks for all their permutations."""
    perms = np.concatenate([batch[r] for _, _, _, draws, _ in pending for batch in draws])
    cross = boot.null_crosses(stats, perms, chunked=True)
    stats.drop("pair_blocks")  # every permutation is summed: at most one repeat's blocks held at a time
    p = cross.shape[1]
    gram = stats.gram()
    gxx, gyy = gram[:p, :p], gram[p:, p:]
    out, start = [], 0
    for _, spec, _, draws, _ in pending:
        count = sum(len(batch[r]) for batch in draws)
        part = cross[start : start + count]
        start += count
        values = spec.from_grams(gxx.expand(count, -1, -1), gyy.expand(count, -1, -1), part).cpu().numpy()
        out.append(np.split(values, np.cumsum([len(batch[r]) for batch in draws])[:-1]))
    return out


def shared_stats(xs: list[Any], ys: list[Any], rows_per_image: int) -> list[PairStats]:
    """One :class:`~medtransfer.similarity.pairstats.PairStats` per repeat ``(xs[r], ys[r])``: pass
    them to :func:`score_repeats` for every measure of one pair and layer."""
    return [PairStats(x, y, rows_per_image) for x, y in zip(xs, ys)]


def limit_rows(xs: list[Any], ys: list[Any], images: list[np.ndarray], rows_per_image: int, max_rows: int,
               rng: np.random.Generator) -> tuple[list[Any], list[Any], list[np.ndarray], int]:
    """Repeats ``xs[r] (m_r * k, p)``, ``ys[r]`` (image-major) cut to at most ``max_rows`` rows each.

    Whole images are kept, ``max(1, max_rows // k)`` of each repeat's drawn at random (in their
    original order), so the rows stay per-image blocks and the image stays the unit of the null.
    If ``k > max_rows``, each kept image contributes ``max_rows`` of its rows (positions), drawn
    once for the call and shared by both sides and all repeats. Returns ``(xs, ys, images, k)``.
    """
    k = int(rows_per_image)
    if all(x.shape[0] <= max_rows for x in xs):
        return xs, ys, images, k
    keep_k = np.arange(k) if k <= max_rows else np.sort(rng.choice(k, size=int(max_rows), replace=False))
    per_repeat = max(1, int(max_rows) // len(keep_k))
    out_x, out_y, out_i = [], [], []
    for x, y, img in zip(xs, ys, images):
        m = len(img)
        kept = np.arange(m) if m <= per_repeat else np.sort(rng.choice(m, size=per_repeat, replace=False))
        rows = (kept[:, None] * k + keep_k[None, :]).reshape(-1)
        out_x.append(_take_rows(x, rows))
        out_y.append(_take_rows(y, rows))
        out_i.append(np.asarray(img)[kept])
    return out_x, out_y, out_i, len(keep_k)


def _take_rows(a: Any, rows: np.ndarray) -> Any:
    if is_tensor(a):
        import torch

        return a.index_select(0, torch.as_tensor(rows, device=a.device))
    return a[rows]


def _interval(out, xs, ys, images, rows_per_image, spec, n_images, ci, resamples, ci_method, rng, shared) -> None:
    """Add the interval entries of :func:`score_repeats` to ``out`` (drawing its weights from ``rng``)."""
    mean = out["mean"]
    if ci is None:
        return
    level = boot.check_level(ci)
    n_pool = int(n_images if n_images is not None else max(int(np.max(i)) for i in images) + 1)
    if spec.from_grams is not None and min(len(i) for i in images) >= boot.MIN_IMAGES:
        pool_weights = boot.bootstrap_weights(n_pool, resamples, rng)
        per_repeat = np.stack([
            boot.resample_values(x, y, rows_per_image, pool_weights[:, img], spec, ci_method, stats)
            for x, y, img, stats in zip(xs, ys, images, shared)
        ])
        means = per_repeat.mean(axis=0)
        low, high = boot.percentile_interval(means, level, mean)
        out["ci_low"], out["ci_high"] = _clip(low, spec), _clip(high, spec)
        out["resamples"] = means
        values = out["values"]
        if len(values) >= 2 and np.isfinite(low) and np.isfinite(high):
            spread = float(stats.norm.ppf(0.5 + level / 2)) * float(np.std(values, ddof=1)) / np.sqrt(len(values))
            out["draws_ci_low"] = _clip(mean - float(np.hypot(mean - low, spread)), spec)
            out["draws_ci_high"] = _clip(mean + float(np.hypot(high - mean, spread)), spec)


def _add_null(out: dict[str, Any], spec: Measure, summary: boot.Null) -> None:
    out.update(null_mean=summary.mean, null_p95=summary.p95, p_value=summary.p_value,
               adjusted=chance_corrected(out["mean"], summary.mean, spec))


#: The null's first batch of permutations; later batches double. A score whose null already has
#: ``STOP_AFTER`` values at least as similar stops there (Besag & Clifford 1991).
FIRST_BATCH = 99
STOP_AFTER = 10


def sequential_null(xs, ys, images, rows_per_image, spec: Measure, permutations: int, observed: float,
                    rng: np.random.Generator, shared: list[PairStats] | None = None,
                    draws: list[list[np.ndarray]] | None = None) -> boot.Null:
    """The permutation null of the repeat mean, at most ``permutations`` draws, stopping early.

    Each draw permutes the images (:func:`shared_permutations`: one permutation of the pool, the
    same for every repeat, within the groups of images that the same repeats drew) and averages the
    repeats. Draws come
    in batches (``FIRST_BATCH``, then doubling); once ``STOP_AFTER`` null values are at least as
    similar as ``observed`` before all ``permutations`` are drawn, the null stops and the p-value
    is Besag & Clifford's sequential one, ``STOP_AFTER / draws so far`` (valid: P(p <= a) <= a);
    otherwise ``(1 + #{at least as similar}) / (1 + permutations)``. A clearly unremarkable score
    so costs about ``STOP_AFTER / p`` draws, which makes a large, Holm-sized ``permutations``
    (:func:`~medtransfer.similarity.draws_for_holm`) affordable where it is not needed. With at
    most ``FIRST_BATCH`` permutations this is the fixed-size null. ``draws``: the batches'
    permutations drawn from ``rng`` already (:func:`null_batch_sizes`), used in their place."""
    shared = shared if shared is not None else shared_stats(xs, ys, rows_per_image)
    permuters = [boot.permuter(x, y, rows_per_image, spec.name, stats) for x, y, stats in zip(xs, ys, shared)]

    def batch(b: int, size: int) -> np.ndarray:
        drawn = draws[b] if draws is not None else shared_permutations(images, size, rng)
        return np.stack([values(perms) for values, perms in zip(permuters, drawn)]).mean(axis=0)

    return _sequential_summary(batch, permutations, observed, spec)


def null_batch_sizes(permutations: int) -> list[int]:
    """The sequential null's batches: ``FIRST_BATCH`` permutations, then doubling, ``permutations`` in all."""
    sizes, done, size = [], 0, FIRST_BATCH
    while done < permutations:
        size = min(size, permutations - done)
        sizes.append(size)
        done += size
        size *= 2
    return sizes


def _sequential_summary(batch: Callable[[int, int], np.ndarray], permutations: int, observed: float,
                        spec: Measure) -> boot.Null:
    """The null summary of :func:`sequential_null` from ``batch(b, size) -> (size,)``, the repeat
    means of batch b, asked for in order while the null goes on."""
    drawn: list[np.ndarray] = []
    done = 0
    for b, size in enumerate(null_batch_sizes(permutations)):
        drawn.append(batch(b, size))
        done += size
        values = np.concatenate(drawn)
        finite = values[np.isfinite(values)]
        extreme = int(np.sum(finite >= observed if spec.higher_is_similar else finite <= observed))
        if done < permutations and extreme >= STOP_AFTER and np.isfinite(observed):
            summary = boot.null_summary(values, observed, spec.higher_is_similar)
            return boot.Null(values, summary.mean, summary.p95, float(STOP_AFTER / len(finite)))
    return boot.null_summary(np.concatenate(drawn), observed, spec.higher_is_similar)


def shared_permutations(images: list[np.ndarray], count: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``count`` random permutations of the stimulus pool, each applied to every repeat:
    ``out[r] (count, m_r)``, row j holding for each of repeat r's images the position (within the
    repeat) of the image it is paired with in draw j.

    Repeats that share images must share the permutation: with the same image in two repeats, the
    observed mean pairs it with itself in both, and repeats permuted independently paired it with
    two different images, a null narrower than the statistic (measured: 11% of p <= 0.05 under
    independence with both repeats on all images). A pool permutation can only pair images that
    a repeat has rows for, so each draw permutes within the groups of images drawn by exactly the
    same repeats (one group for repeats on the whole pool, one per repeat for disjoint ones): under
    "no image-level relation" every such permutation leaves the data's distribution unchanged,
    which is what makes the test valid. ``images[r] (m_r,)``: pool indices of repeat r's images.
    """
    n_pool = max(int(np.max(i)) for i in images) + 1
    member = np.zeros((n_pool, len(images)), dtype=bool)
    for r, img in enumerate(images):
        member[np.asarray(img), r] = True
    drawn = np.flatnonzero(member.any(axis=1))
    _, group = np.unique(member[drawn], axis=0, return_inverse=True)
    sigma = np.broadcast_to(np.arange(n_pool), (int(count), n_pool)).copy()
    for g in range(int(group.max()) + 1):
        members = drawn[group.reshape(-1) == g]
        if len(members) > 1:
            sigma[:, members] = members[boot.random_permutations(len(members), count, rng)]
    out = []
    for img in images:
        img = np.asarray(img)
        position = np.full(n_pool, -1)
        position[img] = np.arange(len(img))
        out.append(position[sigma[:, img]])
    return out


def chance_corrected(score: float, null_mean: float, spec: Measure) -> float:
    """``(score - null_mean) / (best - null_mean)`` (signs flipped for a distance; see
    :class:`LayerSimilarity`); NaN when undefined (no null, or a null at the best value)."""
    best = spec.high if spec.higher_is_similar else spec.low
    room = best - null_mean
    if not (np.isfinite(score) and np.isfinite(null_mean)) or room == 0.0:
        return float("nan")
    return float((score - null_mean) / room)


def _clip(value: float, spec: Measure) -> float:
    """An interval end held inside the measure's range (NaN stays NaN)."""
    return float(np.clip(value, spec.low, spec.high)) if np.isfinite(value) else float(value)


def activation_rows(acts: Any, images: np.ndarray, channels: np.ndarray, positions: np.ndarray | None = None) -> Any:
    """Rows of ``acts (n, C, h, w)`` or ``(n, C)`` for the given images and channels.

    ``positions``: None for every position (``(len(images) * h * w, len(channels))``), or
    ``(len(images), k)`` flat position indices per image (``(len(images) * k, len(channels))``).
    Row order: image-major, then position (row-major over h, w, or the given order); a numpy array
    or a tensor on ``acts``' device, in its dtype.
    """
    if is_tensor(acts):
        import torch

        index_i = torch.as_tensor(images, device=acts.device)
        index_c = torch.as_tensor(channels, device=acts.device)
        picked = acts.index_select(0, index_i).index_select(1, index_c)
        if picked.ndim == 2:
            return picked
        flat = picked.reshape(picked.shape[0], picked.shape[1], -1).movedim(1, -1)  # (m, hw, c)
        if positions is not None:
            where = torch.as_tensor(np.asarray(positions), device=acts.device)
            flat = torch.gather(flat, 1, where[:, :, None].expand(-1, -1, flat.shape[-1]))
        return flat.reshape(-1, len(channels))
    picked = np.asarray(acts)[images][:, channels]
    if picked.ndim == 2:
        return picked
    flat = np.moveaxis(picked.reshape(picked.shape[0], picked.shape[1], -1), 1, -1)
    if positions is not None:
        flat = np.take_along_axis(flat, np.asarray(positions)[:, :, None], axis=1)
    return flat.reshape(-1, len(channels))


def _as_activations(acts: Any, name: str) -> Any:
    if not is_tensor(acts):
        acts = np.asarray(acts)
    if acts.ndim not in (2, 4):
        raise MedtransferError(f"{name} must be activations (n, C, h, w) or (n, C), got shape {tuple(acts.shape)}")
    if acts.shape[0] == 0 or acts.shape[1] == 0:
        raise MedtransferError(f"{name} is empty (shape {tuple(acts.shape)})")
    return acts

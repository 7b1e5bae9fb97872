"""Wall time of ``medtransfer.similarity.cca`` against a straightforward covariance-inverse reference.

    python benchmarks/similarity.py                      # the three sizes of issue 2, float64, CPU
    python benchmarks/similarity.py --sizes 20000x64 --repeats 7
    python benchmarks/similarity.py --device cuda        # also time cca on torch tensors on that device
    python benchmarks/similarity.py --bootstrap          # 1000 image resamples vs one estimate (issue 12's bar)
    python benchmarks/similarity.py --baselines --threads 1   # linear_cka vs plain numpy CKA, cca vs SVCCA's route

For each size n x p, x and y are both (n, p), y a noisy linear map of x (well conditioned, so the
reference is valid). Reference and cca run alternately in the same process, ``--repeats`` times;
medians are reported with their ratio, the time of the three products alone (x^T x, y^T y, x^T y
with the column sums, taken as cca takes them: its floor, so reference / products is the ceiling of
the ratio on this machine), the largest
difference between the two sets of canonical
correlations, and the peak memory cca allocates beyond its inputs (tracemalloc, numpy buffers).
Each timed call starts after ``--pause`` seconds of idle (default 0.3 s): numpy and scipy each
bundle an OpenBLAS whose idle threads spin for about 0.1 s after a call, so without the pause each
function is timed partly against the other one's spinning threads.
On a shared machine the times are noisy: compare ratios, not absolute numbers.

``--bootstrap``: for CCA and linear CKA at 10000 x 64 and 10000 x 256 (``--bootstrap-sizes``), the
median time of one estimate (``cca(x, y)`` / ``linear_cka(x, y)``) against the median time of
1000 image-bootstrap resample values (``bootstrap.resample_values``, weights drawn included) by
each interval method (``--methods``), and their ratio, for two layouts of the 10000 rows: 16 images
x 625 positions (the paper's sampling at a 25 x 25 layer) and 100 images x 100 positions (the
spread sampling). ``linear`` (the default): one influence per image (leave-one-image-out values
up to 32 images, derivatives above) and one matrix-vector product for all resamples. ``exact``: the
per-image blocks, one weighted sum for all resamples (about ``R m / n`` estimates: R resamples, m
images, n rows) and R batched c x c problems (for CCA an eigen-solve each, about 0.1 ms at c = 64).

``--baselines``: at 10000 x 64 and 20000 x 64 (``--baseline-sizes``), in one process and
alternating, the median time of ``linear_cka`` against a plain numpy CKA (centred copies, three
products, Frobenius norms) and of ``cca`` against google/svcca's route as its ``get_cca_similarity``
takes it (``np.cov`` of the stacked (neurons, points) activations, pseudo-inverses, symmetric
inverse square roots by eigendecomposition, an SVD) and against the whole of the work
``get_cca_similarity(x.T, y.T, epsilon=1e-12)`` does (the call the paper's authors made: the route plus
its cropping, coefficient scatter, neuron means and threshold), with the ratios baseline /
medtransfer; also
``cca(precision="float32")`` and the three float64 products alone (x^T x, y^T y, x^T y with the
column sums, as cca takes them: for narrow inputs in one pass over blocks of rows that stay in
cache; the floor of cca, and so the ceiling of the ratio; numpy's ``np.cov`` takes the same
number of multiply-adds through one syrk).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

from medtransfer.similarity import _linalg, cca
from medtransfer.similarity.canonical import MAX_MEAN_RATIO

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for tests/
from tests.similarity.reference import cca_covariance_inverse as reference_cca  # noqa: E402


def products_only(x: np.ndarray, y: np.ndarray) -> None:
    """The three products over the n rows that any exact CCA of this size needs (x^T x, y^T y by
    syrk, x^T y by gemm) and the column sums, as cca takes them (for narrow inputs block by block
    over the rows, :func:`medtransfer.similarity._linalg.centred_gram`): its floor, and so the
    ceiling of the ratio."""
    _linalg.centred_gram(x, y, MAX_MEAN_RATIO)


def make_data(n: int, p: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, p))
    y = x @ rng.standard_normal((p, p)) / np.sqrt(p) + rng.standard_normal((n, p))
    return x, y


PAUSE_S = 0.3


def timed(fn, *args):
    """(wall seconds, process CPU seconds, result), after PAUSE_S seconds of idle."""
    time.sleep(PAUSE_S)
    start, cpu = time.perf_counter(), time.process_time()
    out = fn(*args)
    return time.perf_counter() - start, time.process_time() - cpu, out


def peak_extra_bytes(fn, *args) -> int:
    tracemalloc.start()
    tracemalloc.reset_peak()
    fn(*args)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def bench_size(n: int, p: int, repeats: int, device: str | None) -> dict[str, float]:
    x, y = make_data(n, p)
    ref_times, our_times, ref_cpu, our_cpu, floor_times = [], [], [], [], []
    for _ in range(repeats):
        t, c, ref_rho = timed(reference_cca, x, y)
        ref_times.append(t)
        ref_cpu.append(c)
        t, c, result = timed(cca, x, y)
        our_times.append(t)
        our_cpu.append(c)
        floor_times.append(timed(products_only, x, y)[0])
    row = {
        "reference_s": float(np.median(ref_times)),
        "cca_s": float(np.median(our_times)),
        "cpu_ratio": float(np.median(ref_cpu) / np.median(our_cpu)),
        "max_abs_diff": float(np.max(np.abs(np.sort(ref_rho)[::-1] - result.rho))),
        "method": result.method,
        "peak_extra_over_inputs": peak_extra_bytes(cca, x, y) / (x.nbytes + y.nbytes),
    }
    row["speedup"] = row["reference_s"] / row["cca_s"]
    row["products_s"] = float(np.median(floor_times))
    row["ceiling"] = row["reference_s"] / row["products_s"]
    if device is not None:
        row.update(bench_device(x, y, result.rho, repeats, device))
    return row


def bench_device(x, y, rho_cpu, repeats, device):
    """Time cca on torch tensors on ``device``: float64 and float32 inputs (float64 inside), and
    float32 inputs with ``precision="float32"`` (float32 products); each with its max |drho| against
    the float64 CPU result."""
    import torch

    out = {}
    configs = (
        ("f64", torch.float64, "float64"),
        ("f32", torch.float32, "float64"),
        ("f32_precision32", torch.float32, "float32"),
    )
    for name, dtype, precision in configs:
        tx = torch.as_tensor(x, dtype=dtype, device=device)
        ty = torch.as_tensor(y, dtype=dtype, device=device)
        cca(tx, ty, precision=precision)  # warm-up (kernels, handles)
        times = []
        for _ in range(repeats):
            if tx.is_cuda:
                torch.cuda.synchronize()
            t, _, result = timed(lambda a, b: cca(a, b, precision=precision), tx, ty)
            times.append(t)
        out[f"{device}_{name}_s"] = float(np.median(times))
        out[f"{device}_{name}_max_abs_diff"] = float(np.max(np.abs(result.rho - rho_cpu)))
        out[f"{device}_{name}_path"] = result.method
        del tx, ty
    return out


def bench_bootstrap(n: int, c: int, images: int, resamples: int, repeats: int, methods: list[str]) -> dict[str, float]:
    """Median seconds of one estimate and of ``resamples`` image resamples (weights drawn, values
    by each interval method), per measure, same data."""
    from medtransfer.similarity import bootstrap, linear_cka
    from medtransfer.similarity.registry import get

    x, y = make_data(n, c)
    one = {"cca": lambda: cca(x, y), "cka": lambda: linear_cka(x, y)}

    def resampled(name, method, seed):
        weights = bootstrap.bootstrap_weights(images, resamples, np.random.default_rng(seed))
        with bootstrap.small_problem_threads(2 * c):
            return bootstrap.resample_values(x, y, n // images, weights, get(name), method)

    out = {}
    for name, estimate in one.items():
        times: dict[str, list[float]] = {"one": [], **{m: [] for m in methods}}
        for r in range(repeats):
            times["one"].append(timed(estimate)[0])
            for method in methods:
                times[method].append(timed(resampled, name, method, r)[0])
        out[f"{name}_one_s"] = float(np.median(times["one"]))
        for method in methods:
            out[f"{name}_{method}_s"] = float(np.median(times[method]))
            out[f"{name}_{method}_ratio"] = out[f"{name}_{method}_s"] / out[f"{name}_one_s"]
    return out


def report_bootstrap(args: argparse.Namespace) -> None:
    print(f"image bootstrap ({args.resamples} resamples) vs one estimate, median of {args.repeats}, same process")
    for size in args.bootstrap_sizes:
        n, c = (int(v) for v in size.lower().split("x"))
        for images in (16, 100):
            row = bench_bootstrap(n, c, images, args.resamples, args.repeats, args.methods)
            text = "   ".join(
                f"{m}: one {row[f'{m}_one_s'] * 1e3:6.1f} ms, "
                + ", ".join(f"{method} {row[f'{m}_{method}_s'] * 1e3:7.1f} ms = {row[f'{m}_{method}_ratio']:5.1f}x"
                            for method in args.methods)
                for m in ("cca", "cka")
            )
            print(f"{n:>6} x {c:<4} {images:>3} images x {n // images:>4} positions   {text}", flush=True)


def plain_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA the plain numpy way: centred copies, three products, Frobenius norms."""
    xc, yc = x - x.mean(axis=0), y - y.mean(axis=0)
    return float(np.linalg.norm(xc.T @ yc) ** 2 / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc)))


def svcca_route(x: np.ndarray, y: np.ndarray) -> float:
    """Mean canonical correlation by the steps google/svcca's get_cca_similarity takes (epsilon 0):
    covariance of the stacked (neurons, points) activations, each block scaled by its largest
    entry, pseudo-inverses, their symmetric square roots by eigendecomposition, an SVD."""
    p = x.shape[1]
    c = np.cov(x.T, y.T)
    sxx, syy, sxy = c[:p, :p], c[p:, p:], c[:p, p:]
    ax, ay = np.abs(sxx).max(), np.abs(syy).max()

    def inverse_sqrt(a: np.ndarray) -> np.ndarray:
        w, v = np.linalg.eigh(np.linalg.pinv(a))
        return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T

    arr = inverse_sqrt(sxx / ax) @ (sxy / np.sqrt(ax * ay)) @ inverse_sqrt(syy / ay)
    return float(np.linalg.svd(arr, compute_uv=False).mean())


def get_cca_similarity_steps(x: np.ndarray, y: np.ndarray, epsilon: float = 1e-12, threshold: float = 0.98) -> float:
    """The work google/svcca's ``get_cca_similarity(x.T, y.T, epsilon=1e-12)`` does with its other
    arguments at their defaults (``compute_coefs=True``, ``compute_dirns=False``; its progress
    prints left out), written out step by step for timing: the call the paper's authors made
    (docs/protocol.md). On top of :func:`svcca_route`: the (neurons, points) views are stacked by
    ``np.cov`` (a strided copy), neurons with variance below ``epsilon`` are cropped out, the full
    coefficient matrices are scattered into (neurons x neurons) zeros, the neuron means are taken,
    and the reported mean runs over the leading correlations that hold ``threshold`` of their sum."""
    acts1, acts2 = x.T, y.T
    p, q = acts1.shape[0], acts2.shape[0]
    c = np.cov(acts1, acts2)
    sxx, sxy, syy = c[:p, :p], c[:p, p:], c[p:, p:]
    ax, ay = np.max(np.abs(sxx)), np.max(np.abs(syy))
    sxx /= ax
    syy /= ay
    sxy /= np.sqrt(ax * ay)
    kx, ky = np.abs(np.diagonal(sxx)) >= epsilon, np.abs(np.diagonal(syy)) >= epsilon
    sxx, syy, sxy = sxx[kx][:, kx], syy[ky][:, ky], sxy[kx][:, ky]
    sxx += epsilon * np.eye(len(sxx))
    syy += epsilon * np.eye(len(syy))

    def matrix_sqrt(a: np.ndarray) -> np.ndarray:
        w, v = np.linalg.eigh(a)
        return v @ (np.diag(np.sqrt(w)) @ v.T)

    wx, wy = matrix_sqrt(np.linalg.pinv(sxx)), matrix_sqrt(np.linalg.pinv(syy))
    u, s, vt = np.linalg.svd(wx @ (sxy @ wy))
    s = np.abs(s)
    for keep, coef, white, size in ((kx, u.T, wx, p), (ky, vt, wy, q)):
        mask = np.outer(keep, keep)
        for values in (coef, white):
            full = np.zeros((size, size))
            np.place(full, mask, values)
    np.mean(acts1, axis=1, keepdims=True), np.mean(acts2, axis=1, keepdims=True)
    index = [next((i for i in range(len(s)) if np.sum(s[:i]) / np.sum(s) >= threshold), None) for _ in range(2)][0]
    return float(np.mean(s[:index]))


def report_baselines(args: argparse.Namespace) -> None:
    from medtransfer.similarity import linear_cka

    print(f"medtransfer vs plain baselines, float64, median of {args.repeats} (same process, alternating)")
    for size in args.baseline_sizes:
        n, p = (int(v) for v in size.lower().split("x"))
        x, y = make_data(n, p)
        pairs = {"cka": (lambda: linear_cka(x, y), lambda: plain_cka(x, y)),
                 "cca": (lambda: cca(x, y).mean, lambda: svcca_route(x, y)),
                 "cca vs get_cca_similarity": (lambda: cca(x, y).mean, lambda: get_cca_similarity_steps(x, y)),
                 "cca float32 products": (lambda: cca(x, y, precision="float32").mean, lambda: svcca_route(x, y)),
                 "the 3 products alone": (lambda: products_only(x, y), lambda: svcca_route(x, y))}
        text = []
        for name, (ours, theirs) in pairs.items():
            times = {"ours": [], "theirs": []}
            for _ in range(args.repeats):
                for key, fn in (("ours", ours), ("theirs", theirs)):
                    times[key].append(timed(fn)[0])
            a, b = np.median(times["ours"]), np.median(times["theirs"])
            # "the 3 products alone" against the svcca route: cca's float64 floor, the ceiling of its ratio
            base = {"cka": "plain numpy", "cca vs get_cca_similarity": "get_cca_similarity"}.get(name, "svcca route")
            text.append(f"{name} {a * 1e3:7.1f} ms vs {base} {b * 1e3:7.1f} ms = {b / a:4.2f}x")
        print(f"{n:>6} x {p:<4}\n    " + "\n    ".join(text), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["20000x64", "50000x512", "50000x2048"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default=None, help="also time torch tensors on this device (e.g. cuda)")
    parser.add_argument("--threads", type=int, default=None, help="limit BLAS threads (threadpoolctl)")
    parser.add_argument("--pause", type=float, default=0.3, help="idle seconds before each timed call")
    parser.add_argument("--bootstrap", action="store_true", help="time image-bootstrap resamples against one estimate")
    parser.add_argument("--bootstrap-sizes", nargs="+", default=["10000x64", "10000x256"])
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--methods", nargs="+", default=["linear", "exact"], help="interval methods to time")
    parser.add_argument("--baselines", action="store_true", help="linear_cka vs plain numpy, cca vs SVCCA's route")
    parser.add_argument("--baseline-sizes", nargs="+", default=["10000x64", "20000x64"])
    args = parser.parse_args()
    global PAUSE_S
    PAUSE_S = args.pause
    limit = contextlib.nullcontext()
    if args.threads is not None:
        from threadpoolctl import threadpool_limits

        limit = threadpool_limits(args.threads)
        import torch

        torch.set_num_threads(args.threads)
    with limit:
        if args.bootstrap:
            report_bootstrap(args)
            return
        if args.baselines:
            report_baselines(args)
            return
        print(f"cca vs covariance-inverse reference, float64, median of {args.repeats} (same process, alternating)")
        for size in args.sizes:
            report(size, args)


def report(size: str, args: argparse.Namespace) -> None:
    n, p = (int(v) for v in size.lower().split("x"))
    row = bench_size(n, p, args.repeats, args.device)
    extra = "".join(
        f"  {k}={v:.3g}" if isinstance(v, float) else f"  {k}={v}"
        for k, v in row.items()
        if k.startswith(f"{args.device}_f")
    )
    print(
        f"{n:>6} x {p:<5} reference {row['reference_s']:8.3f} s   cca {row['cca_s']:8.3f} s   "
        f"ratio {row['speedup']:5.2f}x (CPU time {row['cpu_ratio']:4.2f}x)   max|drho| {row['max_abs_diff']:.1e}   "
        f"path {row['method']}   peak extra {row['peak_extra_over_inputs']:.2f} x inputs   "
        f"products alone {row['products_s']:.3f} s (ceiling of the ratio {row['ceiling']:.2f}x){extra}",
        flush=True,
    )


if __name__ == "__main__":
    main()

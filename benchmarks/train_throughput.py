"""Training throughput: medtransfer's training step against a minimal plain PyTorch loop.

Both train the same ResNet50 on the same batches in the same process, interleaved, and report
the median images/s over several rounds (on the CPU per second of this process's CPU time, so
that other processes on shared cores do not bias the ratio; on a GPU per wall-clock second). "ours" is ``medtransfer.training.loop.train_epoch``:
uint8 pixels resident on the device, gathered per batch, normalised (caffe), KerasAdam, loss
accumulated on the device; "ours+augment" adds the Keras augmentation on the device. "plain" is
``x -> model -> cross_entropy -> backward -> Adam.step`` on a ready float batch.

    python benchmarks/train_throughput.py                  # CPU: 32 px, batch 16
    python benchmarks/train_throughput.py --size 112 --batch 128 --device cuda
    # a grid of settings in one process, one line per setting (each value list is crossed):
    python benchmarks/train_throughput.py --device cuda --size 224 112 --batch 128 \
        --amp off bf16 --channels-last on off --compile off on --budget-s 200

``--amp auto`` is bf16 on a GPU that supports it (as training does), ``--channels-last auto`` is
on for CUDA only; ``--compile on`` compiles ours (plain stays eager), so ``ours`` against the
same setting with ``--compile off`` shows what compilation gives. A setting that fails (out of
memory, a compiler missing) prints its error and the grid goes on; ``--budget-s`` starts no new
setting after that many seconds.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import statistics
import time

import torch
import torch.nn.functional as F

from medtransfer.data import KerasAugment
from medtransfer.models import Normalization, ResNet50
from medtransfer.training.loop import StepSetup, train_epoch
from medtransfer.training.optim import KerasAdam
from medtransfer.training.run import resolve_amp


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


CANDIDATES = ("plain", "ours", "ours+augment")


def bench(size: int, amp_mode: str, channels_last_mode: str, compiled: bool,
          args: argparse.Namespace) -> tuple[dict[str, float], str]:
    """Median images/s of each candidate for one setting, and a description of the setting."""
    device = torch.device(args.device)
    amp = resolve_amp(amp_mode, device) if amp_mode != "off" else None
    channels_last = device.type == "cuda" if channels_last_mode == "auto" else channels_last_mode == "on"
    memory = torch.channels_last if channels_last else torch.contiguous_format
    n = args.batch * args.steps
    g = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8).to(device)
    labels = torch.randint(0, 2, (n,), generator=g).to(device)
    rows = torch.arange(n, device=device)
    normalize = Normalization("caffe")

    ours_model = ResNet50(2).to(device, memory_format=memory).train()
    plain_model = ResNet50(2).to(device, memory_format=memory).train()
    plain_model.load_state_dict(ours_model.state_dict())
    forward = torch.compile(ours_model) if compiled else None
    setup = StepSetup(normalize, None, amp, channels_last, forward)
    augmented = StepSetup(normalize, KerasAugment(), amp, channels_last, forward)
    ours_opt = KerasAdam(ours_model.parameters(), lr=1e-5)
    plain_opt = torch.optim.Adam(plain_model.parameters(), lr=1e-5, eps=1e-7)
    plain_x = [normalize(pixels[i:i + args.batch].float()).contiguous(memory_format=memory)
               for i in range(0, n, args.batch)]
    plain_y = [labels[i:i + args.batch] for i in range(0, n, args.batch)]
    shuffle = torch.Generator().manual_seed(1)
    aug_rng = torch.Generator(device=device).manual_seed(2)

    def ours() -> None:
        train_epoch(ours_model, ours_opt, pixels, labels, rows, args.batch, setup, shuffle, None)

    def ours_augmented() -> None:
        train_epoch(ours_model, ours_opt, pixels, labels, rows, args.batch, augmented, shuffle, aug_rng)

    def plain() -> None:
        for x, y in zip(plain_x, plain_y):
            if amp is not None:
                with torch.autocast(device.type, dtype=amp):
                    loss = F.cross_entropy(plain_model(x).float(), y)
            else:
                loss = F.cross_entropy(plain_model(x), y)
            plain_opt.zero_grad(set_to_none=True)
            loss.backward()
            plain_opt.step()
        sync(device)

    every = {"plain": plain, "ours": ours, "ours+augment": ours_augmented}
    candidates = {name: every[name] for name in args.candidates}
    for fn in candidates.values():  # warm-up (and compilation)
        fn()
    rates: dict[str, list[float]] = {name: [] for name in candidates}
    # on the CPU, count this process's CPU seconds: robust to other processes sharing the cores
    clock = time.process_time if device.type == "cpu" else time.perf_counter
    names = list(candidates)
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:  # rotate the order each round
            fn = candidates[name]
            sync(device)
            began = clock()
            fn()
            sync(device)
            rates[name].append(n / (clock() - began))
    setting = (f"size={size} batch={args.batch} amp={amp} channels_last={channels_last} "
               f"compile={compiled}")
    return {name: statistics.median(values) for name, values in rates.items()}, setting


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs="+", default=[32])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=4, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--amp", nargs="+", choices=["auto", "bf16", "off"], default=["auto"])
    parser.add_argument("--channels-last", nargs="+", choices=["auto", "on", "off"], default=["auto"])
    parser.add_argument("--compile", nargs="*", choices=["off", "on"], default=["off"],
                        help="compile ours (no value: on)")
    parser.add_argument("--candidates", nargs="+", choices=CANDIDATES, default=list(CANDIDATES))
    parser.add_argument("--budget-s", type=float, default=None, help="start no new setting after this many seconds")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    compile_modes = args.compile or ["on"]
    grid = list(itertools.product(args.size, args.amp, args.channels_last, compile_modes))
    unit = "CPU" if device.type == "cpu" else "wall-clock"
    print(f"images/s per {unit} second (median of {args.rounds} rounds x {args.steps} steps); device={device} "
          f"threads={torch.get_num_threads()} candidates={' '.join(args.candidates)}", flush=True)
    began = time.perf_counter()
    failed = 0
    for size, amp_mode, cl_mode, compile_mode in grid:
        if args.budget_s is not None and time.perf_counter() - began > args.budget_s:
            print(f"  skipped size={size} amp={amp_mode} channels_last={cl_mode} compile={compile_mode}: "
                  f"over the {args.budget_s:.0f} s budget", flush=True)
            continue
        started = time.perf_counter()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        try:
            medians, setting = bench(size, amp_mode, cl_mode, compile_mode == "on", args)
        except Exception as error:  # noqa: BLE001 - one failed setting (memory, compiler) must not end the grid
            failed += 1
            print(f"  FAILED size={size} amp={amp_mode} channels_last={cl_mode} compile={compile_mode}: "
                  f"{error.__class__.__name__}: {str(error).splitlines()[0] if str(error) else ''}", flush=True)
            continue
        finally:
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
        rates = "  ".join(f"{name} {value:8.1f}" for name, value in medians.items())
        ratio = f"  ours/plain {medians['ours'] / medians['plain']:.3f}" if {"ours", "plain"} <= set(medians) else ""
        peak = (f"  peak {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB"
                if device.type == "cuda" else "")
        print(f"  {setting}: {rates} images/s{ratio}{peak}  ({time.perf_counter() - started:.0f} s)", flush=True)
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()

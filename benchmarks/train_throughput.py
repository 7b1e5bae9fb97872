"""Training throughput: medtransfer's training step against a minimal plain PyTorch loop.

Both train the same ResNet50 on the same batches in the same process, interleaved, and report
the median images/s over several rounds (on the CPU per second of this process's CPU time, so
that other processes on shared cores do not bias the ratio; on a GPU per wall-clock second). "ours" is ``medtransfer.training.loop.train_epoch``:
uint8 pixels resident on the device, gathered per batch, normalised (caffe), KerasAdam, loss
accumulated on the device; "ours+augment" adds the Keras augmentation on the device. "plain" is
``x -> model -> cross_entropy -> backward -> Adam.step`` on a ready float batch.

    python benchmarks/train_throughput.py                  # CPU: 32 px, batch 16
    python benchmarks/train_throughput.py --size 112 --batch 128 --device cuda
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=4, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    amp = resolve_amp("auto", device)
    channels_last = device.type == "cuda"
    memory = torch.channels_last if channels_last else torch.contiguous_format
    n = args.batch * args.steps
    g = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (n, 3, args.size, args.size), generator=g, dtype=torch.uint8).to(device)
    labels = torch.randint(0, 2, (n,), generator=g).to(device)
    rows = torch.arange(n, device=device)
    normalize = Normalization("caffe")

    ours_model = ResNet50(2).to(device, memory_format=memory).train()
    plain_model = ResNet50(2).to(device, memory_format=memory).train()
    plain_model.load_state_dict(ours_model.state_dict())
    forward = torch.compile(ours_model) if args.compile else None
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

    candidates = {"plain": plain, "ours": ours, "ours+augment": ours_augmented}
    for fn in candidates.values():  # warm-up
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
    medians = {name: statistics.median(values) for name, values in rates.items()}
    unit = "CPU" if device.type == "cpu" else "wall-clock"
    print(f"timing per {unit} second; device={device} size={args.size} batch={args.batch} amp={amp} channels_last={channels_last} "
          f"threads={torch.get_num_threads()} rounds={args.rounds} x {args.steps} steps")
    for name, value in medians.items():
        print(f"  {name:>13}: {value:8.1f} images/s (median)")
    print(f"  ratio ours/plain: {medians['ours'] / medians['plain']:.3f}")
    print(f"  ratio ours+augment/plain: {medians['ours+augment'] / medians['plain']:.3f}")


if __name__ == "__main__":
    main()

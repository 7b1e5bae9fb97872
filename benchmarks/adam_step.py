"""One KerasAdam step over ResNet50's 23.5 M parameters: the fused kernel (the default) against
PyTorch's per-tensor loop and its foreach loop, in the same process, median milliseconds.

    python benchmarks/adam_step.py                 # CPU, torch's default thread count
    python benchmarks/adam_step.py --threads 1 --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from medtransfer.models import ResNet50
from medtransfer.training.optim import KerasAdam

VARIANTS = {"fused (default)": {}, "per-tensor loop": {"fused": False, "foreach": False}, "foreach": {"foreach": True}}


def step_ms(device: torch.device, options: dict, rounds: int) -> float:
    """Median wall-clock milliseconds of one optimizer step after two warm-up steps."""
    torch.manual_seed(0)
    params = list(ResNet50(num_classes=2).to(device).parameters())
    for p in params:
        p.grad = torch.randn_like(p)
    optimizer = KerasAdam(params, lr=1e-4, **options)
    times = []
    for i in range(rounds + 2):
        if device.type == "cuda":
            torch.cuda.synchronize()
        began = time.perf_counter()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - began)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"KerasAdam step, ResNet50 parameters, {device}, {torch.get_num_threads()} threads")
    for name, options in VARIANTS.items():
        print(f"  {name:16s} {step_ms(device, options, args.rounds):7.1f} ms")


if __name__ == "__main__":
    main()

"""Cost of the corruption suite against clean evaluations of the same test part.

    python benchmarks/corruptions.py                          # 224 px, 100 images, auto device
    python benchmarks/corruptions.py --size 64 --images 32    # a quick CPU check

The whole suite (8 corruptions x 5 severities, :mod:`medtransfer.data.corruptions`) runs through
the path ``medtransfer evaluate`` uses (:func:`medtransfer.training.loop.predict` with the
corruption inside each batch, before normalisation, on the device); the baseline is forty clean
evaluations of the same images with the same network, batch size, autocast and memory format.
Both alternate in one process, ``--repeats`` times; the medians and their ratio are printed, and
the per-corruption medians (in units of one clean evaluation) say where the time goes. The
network is ResNet50 with random weights and a two-class head (the weights do not change the
cost). The target: ratio <= 1.3.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from medtransfer.data import corruptions
from medtransfer.models import Normalization
from medtransfer.models.registry import create
from medtransfer.training.loop import StepSetup, predict
from medtransfer.training.run import resolve_amp, resolve_device


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--images", type=int, default=100, help="test images (a fold's test part)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = resolve_device(args.device)
    channels_last = device.type == "cuda"
    model = create("resnet50", num_classes=2).to(device, memory_format=torch.channels_last if channels_last
                                                 else torch.contiguous_format).eval()
    pixels = torch.randint(0, 256, (args.images, 3, args.size, args.size), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0)).to(device)
    labels = torch.zeros(args.images, dtype=torch.int64, device=device)
    rows = torch.arange(args.images, device=device)
    amp = resolve_amp("auto", device)
    clean = StepSetup(Normalization("caffe"), None, amp, channels_last)

    def evaluate_clean() -> None:
        predict(model, pixels, labels, rows, args.batch, clean)

    def evaluate(name: str, severity: int) -> None:
        setup = StepSetup(Normalization("caffe"), lambda x, g: corruptions.corrupt(x, name, severity, g), amp,
                          channels_last)
        predict(model, pixels, labels, rows, args.batch, setup, torch.Generator(device=device).manual_seed(0))

    evaluate_clean()  # warm-up (kernels, allocator)
    suite_total, clean_total, per = [], [], {name: [] for name in corruptions.NAMES}
    for _ in range(args.repeats):
        sync(device)
        began = time.perf_counter()
        for _ in range(len(corruptions.NAMES) * len(corruptions.SEVERITIES)):
            evaluate_clean()
        sync(device)
        clean_total.append(time.perf_counter() - began)
        suite = 0.0
        for name in corruptions.NAMES:
            began = time.perf_counter()
            for severity in corruptions.SEVERITIES:
                evaluate(name, severity)
            sync(device)
            spent = time.perf_counter() - began
            per[name].append(spent)
            suite += spent
        suite_total.append(suite)
    one_clean = statistics.median(clean_total) / (len(corruptions.NAMES) * len(corruptions.SEVERITIES))
    print(f"device {device}, {args.images} images at {args.size} px, batch {args.batch}, amp {amp}, "
          f"{torch.get_num_threads()} threads, {args.repeats} repeats")
    print(f"40 clean evaluations: median {statistics.median(clean_total):.2f} s")
    print(f"the suite (8 x 5):    median {statistics.median(suite_total):.2f} s")
    print(f"ratio suite / clean:  {statistics.median(suite_total) / statistics.median(clean_total):.3f} (target <= 1.3)")
    for name, times in per.items():
        print(f"  {name:15s} {statistics.median(times) / (5 * one_clean):.3f} x a clean evaluation per severity")


if __name__ == "__main__":
    main()

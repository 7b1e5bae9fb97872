"""Epoch data cost: reading a batch from the pixel cache and augmenting it, against one ResNet50
training step on the same CPU (the Bar: under 10%).

A synthetic dataset is cached at ``--size`` px (uint8 memmap on disk); the data step reads a
random batch of ``--batch`` rows (``PixelCache.rows``), moves it to a tensor and runs
``KerasAugment`` (float64 sampling, float32 out). The training step is medtransfer's ResNet50
(2 classes) forward + cross-entropy + backward + Adam step on a batch of the same shape. Steps are
interleaved (data, train, data, ...) so load from other processes hits both alike; medians are
reported.

    python benchmarks/data.py --size 112 --batch 128 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import torch

from medtransfer.data import KerasAugment, PixelCache, load_manifest


def timed(fn) -> float:  # noqa: ANN001
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--images", type=int, default=1024, help="images in the cached dataset")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from medtransfer.models import ResNet50

    manifest = load_manifest("synthetic", None, n_patients=args.images // 4, images_per_patient=4, size=64)
    with tempfile.TemporaryDirectory() as cache_dir:
        build = time.perf_counter()
        cache = PixelCache.build(manifest, args.size, "nearest", cache_dir=cache_dir, workers=2)
        build = time.perf_counter() - build
        rng = np.random.default_rng(0)
        gen = torch.Generator().manual_seed(0)
        augment = KerasAugment()

        def data_step() -> torch.Tensor:
            ids = manifest.image_ids[rng.choice(len(manifest), args.batch, replace=False)]
            x = torch.from_numpy(cache.rows(ids)).permute(0, 3, 1, 2)
            return augment(x, gen)

        model = ResNet50(num_classes=2)
        model.train()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-5, eps=1e-7)
        x = data_step()
        y = torch.randint(0, 2, (args.batch,), generator=gen)

        def train_step() -> None:
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(x - 120.0), y)
            loss.backward()
            optimizer.step()

        train_step()  # warm-up
        data_times, train_times = [], []
        for _ in range(args.repeats):
            data_times += [timed(data_step) for _ in range(3)]
            train_times.append(timed(train_step))
    data_median, train_median = statistics.median(data_times), statistics.median(train_times)
    print(f"cpu threads: {torch.get_num_threads()}; cache build of {len(manifest)} images at "
          f"{args.size}px: {build:.2f} s")
    print(f"data step (cache read + KerasAugment), batch {args.batch} at {args.size}px: "
          f"median {data_median * 1000:.1f} ms over {len(data_times)}")
    print(f"ResNet50 training step, same batch: median {train_median * 1000:.1f} ms over {len(train_times)}")
    print(f"ratio data / train: {100 * data_median / train_median:.2f}% (bar: < 10%)")


if __name__ == "__main__":
    main()

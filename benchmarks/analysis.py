"""Benchmark: the layer-wise analysis of one fold on CPU - every pair of the paper's grid
(two pretrained sources + random, both strategies) x 5 layers x ``repeats``, CCA and CKA.

Networks are built in memory (Keras-initialised ResNet50s and perturbed copies standing in for
fine-tuned models); stimuli are synthetic images at ``--size`` px. Reports the time of each stage
and the number of forward passes per network.

    python benchmarks/analysis.py --size 112 --pool 256 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def fake_fold(root: Path) -> None:
    """Run directories (config + DONE) of one fold: alpha and beta x both strategies, random."""
    for source, strategies in (("alpha", ("no-freeze", "freeze")), ("beta", ("no-freeze", "freeze")), ("random", ("no-freeze",))):
        for strategy in strategies:
            run = root / "runs" / "bench" / f"{source}-{strategy}" / "fold0"
            run.mkdir(parents=True)
            (run / "config.json").write_text(json.dumps({"target": "bench", "source": source, "strategy": strategy,
                                                         "fold": 0, "seed": 0, "normalization": "caffe"}))
            (run / "DONE").write_text("")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--pool", type=int, default=256, help="stimulus images in the fold's test split")
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from medtransfer.analysis.activations import ForwardLog, Network, plan_sampling
    from medtransfer.analysis.inventory import read_study
    from medtransfer.analysis.layerwise import fold_similarity
    from medtransfer.analysis.pairs import distinct_models, fold_pairs, roles
    from medtransfer.data import load_manifest
    from medtransfer.models import PAPER_LAYERS, ResNet50, keras_init_
    from medtransfer.models.registry import layer_shapes

    with tempfile.TemporaryDirectory() as tmp:
        fake_fold(Path(tmp))
        study = read_study(tmp)
        pairs, _ = fold_pairs(study, "bench", 0, roles(study))
    models = distinct_models(pairs)

    t0 = time.perf_counter()
    networks: dict[str, ResNet50] = {}
    for i, (key, ref) in enumerate(models.items()):
        seed = {"alpha": 11, "beta": 12}.get(ref.load, ref.seed)
        model = keras_init_(ResNet50(), seed=seed)
        if ref.kind == "finetuned":
            g = torch.Generator().manual_seed(100 + i)
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(0.2 * p.abs().mean() * torch.randn(p.shape, generator=g))
        networks[key] = model.eval()
    t_build = time.perf_counter() - t0

    manifest = load_manifest("synthetic", None, n_patients=args.pool, images_per_patient=1, size=args.size, seed=0)
    pool = np.stack([manifest.read_image(i) for i in range(args.pool)])
    from medtransfer.models import Normalization

    norm = Normalization("caffe")

    t0, c0 = time.perf_counter(), time.process_time()
    layers = {v: k for k, v in PAPER_LAYERS.items()}
    plan = plan_sampling(len(pool), layer_shapes(args.size, list(layers)), args.rows, args.channels, args.repeats, 0)
    log = ForwardLog()
    forward_time = {"t": 0.0, "cpu": 0.0}

    def load(ref):
        net = networks[ref.key]

        def features(x, names):
            start, cpu = time.perf_counter(), time.process_time()
            out = net.features(x, names)
            forward_time["t"] += time.perf_counter() - start
            forward_time["cpu"] += time.process_time() - cpu
            return out

        return Network(features, norm)

    frame, problems = fold_similarity("bench", 0, pairs, pool, plan, load, layers, ("cca", "cka"),
                                      args.batch_size, "cpu", log)
    total, total_cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"pairs {len(pairs)}, distinct networks {len(models)}, layers {len(plan.layers)}, repeats {args.repeats}, "
          f"measures 2 -> {len(frame)} rows ({len(frame) * args.repeats} similarity values)")
    print(f"size {args.size}px, pool {args.pool} images, images run per network {len(plan.images)}, "
          f"threads {args.threads}")
    for name, p in plan.layers.items():
        print(f"  {layers[name]:7s} {p.shape}: {len(p.images[0])} images x {p.shape[1]}x{p.shape[2]} = {p.rows} rows, "
              f"{len(p.channels[0])} channels")
    print(f"forward passes per network: {sorted(set(log.passes.values()))} (networks: {len(log.passes)}); "
          f"sampled activations kept: {plan.nbytes(len(models)) / 2**20:.1f} MiB")
    print(f"wall time: analysis of the fold {total:.1f} s = forward {forward_time['t']:.1f} s + sampling/measures "
          f"{total - forward_time['t']:.1f} s (network build, not counted: {t_build:.1f} s)")
    print(f"CPU time (all threads): {total_cpu:.1f} s = forward {forward_time['cpu']:.1f} s + sampling/measures "
          f"{total_cpu - forward_time['cpu']:.1f} s; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    if problems:
        print("problems:", *problems, sep="\n  ")


if __name__ == "__main__":
    main()

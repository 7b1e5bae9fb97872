"""Benchmark: `medtransfer analyze` of a BUSI-sized study against the study's own training time.

Builds a study like the one of issue "the researcher's day" (a source pretrained by the study,
fine-tuned on a target against random init, both strategies, 3 folds: 9 runs, 64 px, 2 workers
of one thread) on the synthetic dataset, trains it, then analyses it with the default analysis
settings (or the ones given) and reports where the analysis' time goes: each stage of
`analyze` (Table 2, prediction similarity, per fold: activations, similarity with intervals and
nulls, paired differences; correlation and claims; figures; report), and inside the similarity
stages the time of the image-bootstrap resamples and of the permutation nulls. The bar: analysis
time <= 1/4 of the training time (pretraining included) on the same machine.

    python benchmarks/analysis.py --out /tmp/bench-study                     # BUSI-sized: 780 images
    python benchmarks/analysis.py --out /tmp/bench-study --images 300 --epochs 4   # quicker

A second call with the same --out reuses the trained study (its training time is read from the
runs' history) and only analyses it again.

``--synthetic-fold POOL``: no training; one fold's layer-wise similarity (``fold_similarity``, the
stage that dominates ``analyze``) on a stimulus pool of POOL images, with the pairs of the study
above (7: each fine-tuned network against its init, against random init, freeze vs no-freeze,
random vs random) between 6 synthetic networks whose activations at the ResNet50 layer shapes
of 64 px share a latent image signal; prints the process CPU time and wall time of the stage,
and of the resamples and nulls in it. Run it with ``PYTHONPATH`` pointing at two versions of
``src`` to compare them on the same data (POOL 20: the 60-image study's pool; 260: BUSI's).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from pathlib import Path


def study_yaml(images: int, size: int, epochs: int, pretrain_images: int, pretrain_epochs: int) -> dict:
    """The study: synthetic target (``images`` images, 2 per patient) at ``size`` px, one source
    pretrained by the study on another synthetic task, random init; 3 folds, both strategies."""
    return {
        "name": "bench-analysis",
        "targets": [{"name": "synthetic", "dataset": "synthetic",
                     "options": {"n_patients": images // 2, "images_per_patient": 2, "size": size, "task": "target",
                                 "seed": 0},
                     "size": size, "batch_size": 16}],
        "sources": [{"name": "synth_a", "pretrain": {
            "dataset": "synthetic", "size": size, "batch_size": 32, "epochs": pretrain_epochs, "lr": 1.0e-3,
            "options": {"n_patients": pretrain_images, "images_per_patient": 1, "size": size, "task": "source-a",
                        "n_classes": 4, "seed": 1},
            "training": {"bn_momentum": 0.3, "augment": False}}},
            {"name": "random"}],
        "strategies": ["no-freeze", "freeze"],
        "k_folds": 3,
        "seeds": [0],
        "training": {"split_fractions": [0.6666667, 0.0833333, 0.25], "lr": 1.0e-4, "epochs": epochs, "patience": epochs, "probe_epochs": max(1, epochs // 2),
                     "probe_patience": epochs, "threads": 1, "bn_momentum": 0.3, "checkpoint_every_s": 60},
        "executor": {"kind": "local", "workers": 2},
        "analysis": {"sources": ["synth_a"]},
    }


def history_seconds(out: Path) -> float:
    """Seconds of every epoch the study's runs recorded (pretraining included): its training
    time with one worker; the wall time with 2 workers is about half of it."""
    total = 0.0
    for history in list(out.glob("runs/**/history.csv")) + list(out.glob("sources/*-run/history.csv")):
        with open(history) as handle:
            total += sum(float(row["seconds"]) for row in csv.DictReader(handle) if row.get("seconds"))
    return total


def finetune_epoch_seconds(out: Path) -> tuple[int, float]:
    """Fine-tuning epochs a run recorded (the most of any run) and the seconds one such epoch of
    every run takes together (their mean epoch time times the number of runs)."""
    runs = list(out.glob("runs/**/history.csv"))
    seconds, count, most = 0.0, 0, 0
    for history in runs:
        with open(history) as handle:
            rows = [row for row in csv.DictReader(handle) if row.get("phase") == "finetune" and row.get("seconds")]
        seconds += sum(float(row["seconds"]) for row in rows)
        count += len(rows)
        most = max(most, len(rows))
    return most, (seconds / count * len(runs) if count else 0.0)


class Timer:
    """Wraps a function of a module and adds up the seconds spent in it (none where the module has
    no such function, e.g. an older version's)."""

    def __init__(self, module, name: str) -> None:  # noqa: ANN001
        self.module, self.name, self.seconds, self.calls = module, name, 0.0, 0
        self.original = getattr(module, name, None)
        if self.original is None:
            return

        def timed(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            began = time.perf_counter()
            try:
                return self.original(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - began
                self.calls += 1

        setattr(module, name, timed)

    def restore(self) -> None:
        if self.original is not None:
            setattr(self.module, self.name, self.original)


def synthetic_fold(pool_size: int, threads: int | None, settings: dict) -> dict:
    """Time ``fold_similarity`` on synthetic activations (module notes); returns the seconds."""
    import numpy as np
    import torch

    from medtransfer.analysis import layerwise
    from medtransfer.analysis.activations import Network, plan_sampling
    from medtransfer.analysis.pairs import ModelRef, Pair
    from medtransfer.similarity import bootstrap, sampling
    from medtransfer.study.analysis_settings import AnalysisSettings

    if threads is not None:
        torch.set_num_threads(threads)
    config = AnalysisSettings().override(**settings)
    shapes = {"conv1_relu": (64, 32, 32), "conv2_block3_out": (256, 16, 16), "conv3_block4_out": (512, 8, 8),
              "conv4_block6_out": (1024, 4, 4), "conv5_block3_out": (2048, 2, 2)}
    rng = np.random.default_rng(0)
    latent = {name: rng.standard_normal((pool_size, 16, h, w)).astype(np.float32) for name, (c, h, w) in shapes.items()}

    def network(seed: int, signal: float) -> Network:
        g = np.random.default_rng(seed)
        acts = {}
        for name, (c, h, w) in shapes.items():
            mix = g.standard_normal((c, 16)).astype(np.float32)
            noise = g.standard_normal((pool_size, c, h, w)).astype(np.float32)
            acts[name] = torch.from_numpy(np.maximum(signal * np.einsum("cl,nlhw->nchw", mix, latent[name]) + noise, 0))

        def features(x, names):  # noqa: ANN001, ANN202
            index = (x[:, 0, 0, 0] + 256 * x[:, 1, 0, 0]).long()
            return {name: acts[name][index] for name in names}

        return Network(features, lambda x: x)

    pixels = np.zeros((pool_size, 64, 64, 3), dtype=np.uint8)
    pixels[:, 0, 0, 0], pixels[:, 0, 0, 1] = np.arange(pool_size) % 256, np.arange(pool_size) // 256
    refs = {name: ModelRef("init", name, 0, None, None, name) for name in
            ("a-ft-nf", "a-ft-f", "a", "random", "random-ft", "random1")}
    signal = {"a-ft-nf": 1.0, "a-ft-f": 1.2, "a": 1.5, "random": 0.7, "random-ft": 0.5, "random1": 0.7}
    kinds = [("ft_vs_init", "a-ft-nf", "a"), ("ft_vs_init", "a-ft-f", "a"), ("ft_vs_random", "a-ft-nf", "random"),
             ("init_vs_random", "a", "random"), ("freeze_vs_no_freeze", "a-ft-f", "a-ft-nf"),
             ("ft_vs_init", "random-ft", "random"), ("random_vs_random", "random", "random1")]
    pairs = [Pair(kind, f"{a} vs {b}", "-", "", refs[a], refs[b]) for kind, a, b in kinds]
    seeds = {name: 10 + i for i, name in enumerate(refs)}
    plan = plan_sampling(pool_size, {k: v for k, v in shapes.items()}, config.rows, config.channels, config.repeats,
                         config.seed, config.sampling, config.positions)
    timers = [Timer(bootstrap, "resample_values"), Timer(sampling, "sequential_null"), Timer(sampling, "_joint_null_values")]
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        frame, problems = layerwise.fold_similarity(
            "synthetic", 0, pairs, pixels, plan, lambda ref: network(seeds[ref.load], signal[ref.load]),
            {k: k for k in shapes}, config.measures, config.batch_size, "cpu",
            uncertainty=layerwise.Uncertainty(config.ci, config.resamples, config.null_permutations(len(shapes)),
                                              config.seed, config.ci_method))
    finally:
        for timer in timers:
            timer.restore()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"pool": pool_size, "wall_s": wall, "cpu_s": cpu, "resamples_s": timers[0].seconds,
            "null_s": timers[1].seconds + timers[2].seconds, "rows": len(frame), "problems": len(problems),
            "mean_p": float(frame["p_value"].mean()), "checksum": float(frame[["mean", "ci_low", "null_mean"]].sum().sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="study directory (reused when it exists)")
    parser.add_argument("--images", type=int, default=780, help="target images (BUSI: 780)")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--pretrain-images", type=int, default=780)
    parser.add_argument("--pretrain-epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads of the analysis [default: torch's]")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an analysis setting (repeatable), e.g. --set resamples=200")
    parser.add_argument("--synthetic-fold", type=int, default=None, metavar="POOL",
                        help="time one fold's layer-wise similarity on POOL synthetic images, no training")
    args = parser.parse_args()
    os.environ.setdefault("MEDTRANSFER_QUIET", "1")
    if args.synthetic_fold is not None:
        import yaml

        settings = {key: yaml.safe_load(value) for key, value in (item.split("=", 1) for item in args.set)}
        print(json.dumps(synthetic_fold(args.synthetic_fold, args.threads, settings)))
        return
    if args.out is None:
        parser.error("--out is required (or --synthetic-fold)")

    import yaml

    from medtransfer.analysis import run as analysis_run
    from medtransfer.similarity import bootstrap, sampling
    from medtransfer.study.config import StudyConfig
    from medtransfer.study.runner import run_study

    out = args.out
    study = StudyConfig.parse(study_yaml(args.images, args.size, args.epochs, args.pretrain_images,
                                         args.pretrain_epochs))
    trained = None
    if not (out / "results" / "auc.csv").exists():
        began = time.perf_counter()
        report = run_study(study, out)
        trained = time.perf_counter() - began
        assert not report.failed, report.failed
    epochs_s = history_seconds(out)

    settings = {key: yaml.safe_load(value) for key, value in (item.split("=", 1) for item in args.set)}
    timers = [Timer(bootstrap, "resample_values"), Timer(sampling, "sequential_null"), Timer(sampling, "_joint_null_values")]
    timings: dict[str, float] = {}
    began, cpu = time.perf_counter(), time.process_time()
    try:
        analysis_run.analyze(out, threads=args.threads, timings=timings, formats=["png", "pdf", "svg"], **settings)
    finally:
        for timer in timers:
            timer.restore()
    analysed, cpu = time.perf_counter() - began, time.process_time() - cpu

    groups: dict[str, float] = {}
    for name, seconds in timings.items():
        key = name.split(": ", 1)[1] if " fold " in name else name
        groups[key] = groups.get(key, 0.0) + seconds
    made = f"{args.images} images at {args.size} px, {args.epochs} epochs" if trained is not None else \
        "trained earlier (its settings: study.resolved.yaml)"
    print(f"study {out}: 9 runs, {made}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    if trained is not None:
        print(f"training wall time (2 workers, pretraining included): {trained:.0f} s")
    print(f"training epochs recorded: {epochs_s:.0f} s in all (one worker's time; 2 workers: ~{epochs_s / 2:.0f} s wall)")
    print(f"analysis wall time: {analysed:.0f} s (process CPU time {cpu:.0f} s); settings {settings or 'defaults'}")
    for key, seconds in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"  {key:45s} {seconds:8.1f} s  {100 * seconds / analysed:5.1f}%")
    resamples, null, joint = timers
    null_s = null.seconds + joint.seconds
    print(f"  of which image-bootstrap resamples        {resamples.seconds:8.1f} s  ({resamples.calls} calls)")
    print(f"  of which permutation nulls                {null_s:8.1f} s  ({null.calls} one measure at a time, "
          f"{joint.calls} repeats with the measures together)")
    reference = trained if trained is not None else epochs_s / 2
    print(f"analysis / training = {analysed / reference:.2f} (bar: <= 0.25)")
    epochs, per_epoch = finetune_epoch_seconds(out)
    if epochs:
        wall_per_epoch = per_epoch / 2  # 2 workers
        needed = max(0.0, (4 * analysed - reference) / wall_per_epoch)
        print(f"each fine-tuning epoch of the 9 runs: {per_epoch:.0f} s of worker time (~{wall_per_epoch:.0f} s wall); "
              f"analysis <= 1/4 of training from about {epochs + needed:.1f} epochs a run "
              f"(the default training settings: at least patience + 1 = 31)")
    print(json.dumps({"analysis_s": analysed, "analysis_cpu_s": cpu, "training_s": trained, "epochs_s": epochs_s, "stages": groups,
                      "resamples_s": resamples.seconds, "null_s": null_s}))


if __name__ == "__main__":
    main()

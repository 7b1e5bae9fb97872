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


class Timer:
    """Wraps a function of a module and adds up the seconds spent in it."""

    def __init__(self, module, name: str) -> None:  # noqa: ANN001
        self.module, self.name, self.seconds, self.calls = module, name, 0.0, 0
        self.original = getattr(module, name)

        def timed(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            began = time.perf_counter()
            try:
                return self.original(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - began
                self.calls += 1

        setattr(module, name, timed)

    def restore(self) -> None:
        setattr(self.module, self.name, self.original)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="study directory (reused when it exists)")
    parser.add_argument("--images", type=int, default=780, help="target images (BUSI: 780)")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--pretrain-images", type=int, default=780)
    parser.add_argument("--pretrain-epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads of the analysis [default: torch's]")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an analysis setting (repeatable), e.g. --set resamples=200")
    args = parser.parse_args()
    os.environ.setdefault("MEDTRANSFER_QUIET", "1")

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
    timers = [Timer(bootstrap, "resample_values"), Timer(sampling, "sequential_null")]
    timings: dict[str, float] = {}
    began = time.perf_counter()
    try:
        analysis_run.analyze(out, threads=args.threads, timings=timings, formats=["png", "pdf", "svg"], **settings)
    finally:
        for timer in timers:
            timer.restore()
    analysed = time.perf_counter() - began

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
    print(f"analysis wall time: {analysed:.0f} s; settings {settings or 'defaults'}")
    for key, seconds in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"  {key:45s} {seconds:8.1f} s  {100 * seconds / analysed:5.1f}%")
    resamples, null = timers
    print(f"  of which image-bootstrap resamples        {resamples.seconds:8.1f} s  ({resamples.calls} calls)")
    print(f"  of which permutation nulls                {null.seconds:8.1f} s  ({null.calls} calls)")
    reference = trained if trained is not None else epochs_s / 2
    print(f"analysis / training = {analysed / reference:.2f} (bar: <= 0.25)")
    print(json.dumps({"analysis_s": analysed, "training_s": trained, "epochs_s": epochs_s, "stages": groups,
                      "resamples_s": resamples.seconds, "null_s": null.seconds}))


if __name__ == "__main__":
    main()

"""The status of a study read from its files alone, so it works whatever executes the runs
(local, SLURM, Ray): every run's state and progress, and the grid's ETA from measured epoch times."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from medtransfer.study.expand import expand
from medtransfer.study.pretrain import pretrain_config, source_file, source_run_dir
from medtransfer.study.store import RunStatus, count_states, read_study_file, run_dir, run_status
from medtransfer.training.config import RunConfig
from medtransfer.training.progress import read_progress, remaining_seconds, summarize
from medtransfer.training.record import Check, RunDir, sealed_file_problem
from medtransfer.training.run import phase_plan
from medtransfer.vocabulary import is_pretraining


def _pretraining(study, out: Path, check: Check) -> list[tuple[RunConfig, Path, RunStatus]]:  # noqa: ANN001
    """The pretraining run of every source the study makes itself, with its state: ``done`` once
    its source file is there intact (the run's ``best.pt`` has then moved to it)."""
    found = []
    for spec in study.sources:
        if spec.pretrain is None:
            continue
        config = pretrain_config(spec, study.training)
        directory = source_run_dir(spec, out)
        target = source_file(out, spec.name)
        status = run_status(directory, config.run_id, check=check)
        if target.is_file():
            problem = sealed_file_problem(target, check)
            status.state, status.error = ("done", "") if problem is None else ("damaged", problem)
        elif status.state == "done":  # DONE but the source file never published: the next run publishes it
            status.state = "interrupted"
        found.append((config, directory, status))
    return found


def study_progress(out: str | Path, check: Check = "quick") -> dict[str, Any]:
    """Every run of the study in ``out`` with its progress, and the grid's ETA.

    Per run: ``run_id, target, strategy, state`` (done, running, interrupted, failed, pending),
    ``phase, epoch, epochs`` (epoch k/N of the current phase), ``best_val_auc``,
    ``seconds_per_epoch`` (current phase), ``test_auc`` (done runs), ``eta_s`` (this run's time
    left, while it runs; None otherwise), ``eta_max_s`` (the same with every epoch limit reached: the
    bound the run's live line shows as ``ETA <=``), ``expected_s`` (its time left, also for a run that waits),
    ``task`` (``pretrain`` or ``finetune``). ``pretraining``: the same rows for the runs that make
    the sources the study pretrains itself (they run before every fine-tuning run); ``counts`` and
    ``runs`` are the fine-tuning grid's.
    ``check``: how a finished run's files are verified (:meth:`RunDir.check`: ``quick`` compares
    sizes and modification times and hashes a file only when its time changed, ``full`` hashes
    every file); a file that differs is ``damaged``.
    Grid: ``eta_s`` - seconds until every unfinished, not-failed run ends, each run expected to
    stop after the median epochs of finished runs of its target and strategy (its limit while none
    has finished) at its own measured s/epoch (else its target's median, else any run's), divided
    by the number of runs running now (at least 1); ``eta_max_s`` the same with every epoch limit
    reached; both None until an epoch of every phase still to run has been measured somewhere.
    The pretraining runs' time left is added before the grid's (they run first, as many at a time
    as run now).
    """
    out = Path(out)
    study = read_study_file(out)
    made = _pretraining(study, out, check)
    entries = [(config, run_dir(out, config), run_status(run_dir(out, config), config.run_id, check=check))
               for config in expand(study, out)]
    runs = []
    for config, directory, status in made + entries:
        plan = [{"phase": p.phase, "lr": p.lr, "epochs": p.epochs} for p in phase_plan(config)]
        saved = read_progress(directory)
        summary = summarize(RunDir(directory).read_history(), plan) if saved is None else saved
        task = "pretrain" if is_pretraining(config.source_name) else "finetune"
        runs.append({"config": config, "status": status, "plan": plan, "summary": summary, "task": task})

    speeds: dict[tuple[str, str], list[float]] = {}
    lengths: dict[tuple[str, str, str], list[int]] = {}
    for run in runs:
        config, summary = run["config"], run["summary"]
        for phase, speed in summary.get("seconds_per_epoch", {}).items():
            speeds.setdefault((config.target_label, phase), []).append(speed)
            speeds.setdefault(("", phase), []).append(speed)
        if run["status"].state == "done":
            for phase, n in summary.get("epochs_done", {}).items():
                lengths.setdefault((config.target_label, config.strategy, phase), []).append(n)

    running = sum(r["status"].state == "running" for r in runs)
    total = total_max = 0.0
    known = True
    rows, pretraining = [], []
    for run in runs:
        config, summary, plan, state = run["config"], run["summary"], run["plan"], run["status"].state
        phases = [p["phase"] for p in plan]
        fallback = {}
        for phase in phases:
            values = speeds.get((config.target_label, phase)) or speeds.get(("", phase))
            if values:
                fallback[phase] = statistics.median(values)
        expected = {phase: statistics.median(lengths[key]) for phase in phases
                    if (key := (config.target_label, config.strategy, phase)) in lengths}
        eta = eta_max = None
        if state not in ("done", "failed"):
            eta = remaining_seconds(summary, plan, expected, fallback)
            eta_max = remaining_seconds(summary, plan, None, fallback)
            if eta is None or eta_max is None:
                known = False
            else:
                total, total_max = total + eta, total_max + eta_max
        speed = summary.get("seconds_per_epoch", {}).get(summary.get("phase"))
        row = {"run_id": config.run_id, "task": run["task"], "target": config.target_label,
               "source": config.source_label, "strategy": config.strategy, "fold": config.fold, "seed": config.seed,
               "state": state, "phase": summary.get("phase", ""), "epoch": summary.get("epoch", 0),
               "epochs": summary.get("epochs", 0), "best_val_auc": summary.get("best_val_auc"),
               "seconds_per_epoch": speed, "test_auc": run["status"].auc,
               # a run that waits has no time left of its own yet: its expected duration counts in the grid's ETA
               "eta_s": eta if state == "running" else None, "expected_s": eta,
               # every epoch limit reached: what the run's live line shows as "ETA <="
               "eta_max_s": eta_max if state == "running" else None, "error": run["status"].error}
        (pretraining if run["task"] == "pretrain" else rows).append(row)
    parallel = max(1, running)
    grid = [r["status"] for r in runs if r["task"] == "finetune"]
    return {"study": str(out), "counts": count_states(grid), "runs": rows, "pretraining": pretraining,
            "running": running, "eta_s": total / parallel if known else None,
            "eta_max_s": total_max / parallel if known else None, "updated": time.time()}

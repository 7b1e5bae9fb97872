"""``run_study``: prepare a study directory, run the missing runs, write the results tables."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from medtransfer.console import write_line
from medtransfer.data import load_manifest, write_folds
from medtransfer.data.registry import dataset_folds
from medtransfer.errors import ConfigError
from medtransfer.models import PAPER_LAYERS
from medtransfer.models.registry import layer_shapes
from medtransfer.study import claims
from medtransfer.study.config import StudyConfig
from medtransfer.study.executors import Executor, Outcome, SlurmExecutor, Task, pin_threads
from medtransfer.study.evaluate import evaluate_study
from medtransfer.study.expand import expand, strategies_for
from medtransfer.study.datasets import study_datasets
from medtransfer.study.leakage import check_leakage
from medtransfer.study.extension import check_no_dropped_runs, check_sources_unchanged, check_unchanged
from medtransfer.study.pretrain import pretrain_config, publish_source, source_file, source_run_dir
from medtransfer.study.results import write_results
from medtransfer.study.store import check_out_dir, clear_claim, recorded_study_file, write_atomic
from medtransfer.tracking.mlflow_sink import close_study_tracking, open_study_tracking
from medtransfer.training.config import RunConfig
from medtransfer.training.record import STUDY_FILE, RunDir, study_folds_file


@dataclass
class StudyReport:
    """What one invocation did: runs in the study, skipped as done, finished now (by this driver),
    failed, finished meanwhile by another owner (another driver, an earlier driver's job), and the
    finished runs found damaged and run again (``recomputed``)."""

    total: int
    skipped: int
    finished: int
    failed: list[Outcome] = field(default_factory=list)
    elsewhere: int = 0
    recomputed: list[str] = field(default_factory=list)
    submitted: int = 0  # --detach: jobs submitted and left running


def _source_tasks(study: StudyConfig, out: Path) -> list[Task]:
    """A pretraining task for each source the study makes itself and has not made yet."""
    tasks = []
    for source in study.sources:
        if source.pretrain is None or publish_source(source_run_dir(source, out), source_file(out, source.name)):
            continue
        tasks.append(Task.make(pretrain_config(source, study.training), source_run_dir(source, out),
                               publish=str(source_file(out, source.name))))
    return tasks


def _submit_detached(executor, sources: list[Task], tasks: list[Task]) -> int:  # noqa: ANN001
    """Submit the pretraining jobs, then the fine-tuning array (started once every source job
    succeeded: ``afterok``); returns how many jobs were submitted. Runs already owned elsewhere
    (an earlier driver's jobs) are not submitted again."""
    if not isinstance(executor, SlurmExecutor):
        raise ConfigError("run --detach submits SLURM jobs and returns: use it with --executor slurm "
                          "(for local and ray the command line runs the whole driver in the background)")
    executor.check()
    submitted = 0
    if sources:
        mine, _ = executor.submit_claimed(sources)
        submitted += len(mine)
    jobs = sorted({str((claims.read(Path(t.directory)) or {}).get("job") or "").split("_")[0] for t in sources} - {""})
    if jobs and tasks:
        executor.parameters["slurm_dependency"] = "afterok:" + ":".join(jobs)
    if tasks:
        mine, _ = executor.submit_claimed(tasks)
        submitted += len(mine)
    return submitted


def report_unverifiable_claims(tasks: list[Task]) -> int:
    """Name on stderr, at once, every run in ``tasks`` held by a claim that this machine cannot
    check (another host, no scheduler to ask), and how to take them over; returns how many. Runs
    whose claim cannot be read are named too, with when they are taken over."""
    found = [(Path(t.directory), info) for t in tasks
             if (info := claims.read(Path(t.directory))) is not None and claims.unverifiable(info)]
    if found:
        lines = [claims.describe(directory, info) for directory, info in found[:5]]
        more = f"\n  ... and {len(found) - 5} more" if len(found) > 5 else ""
        write_line(sys.stderr, f"waiting for {len(found)} run(s) claimed by another host:\n  " + "\n  ".join(lines) + more
              + "\nIf no process there works on this study any more (it was copied from there, or that host is "
              "gone), stop this and rerun with `medtransfer run ... --steal-claims` to take those runs over.")
    unreadable = [RunDir(Path(t.directory)).running for t in tasks
                  if claims.read(Path(t.directory)) is None and RunDir(Path(t.directory)).running.exists()]
    if unreadable:
        write_line(sys.stderr, f"waiting for {len(unreadable)} run(s) whose claim is not readable (damaged, or being "
                               f"replaced), e.g. {unreadable[0]}: each is taken over once it has not changed for "
                               f"{claims.UNREADABLE_GRACE_S:.0f} s")
    return len(found)


def _execute(executor: Executor, tasks: list[Task]) -> tuple[list[Outcome], list[str]]:
    """Run ``tasks``; a run another live owner holds is waited for, and run here if that owner
    dies before finishing it. Returns this driver's outcomes and the ids of the runs others finished."""
    busy = [t for t in tasks if claims.held_elsewhere(Path(t.directory))]
    todo = [t for t in tasks if t not in busy]
    outcomes: list[Outcome] = []
    poll_s = min(getattr(executor, "poll_s", 1.0), 10.0)
    elsewhere: list[str] = []
    reported: set[str] = set()
    while todo or busy:
        got = executor.run(todo) if todo else []
        outcomes += [o for o in got if o.state != "busy"]
        elsewhere += [o.run_id for o in got if o.state == "skipped"]  # finished by another owner meanwhile
        busy += [t for t, o in zip(todo, got) if o.state == "busy"]
        report_unverifiable_claims([t for t in busy if t.directory not in reported])
        reported.update(t.directory for t in busy)
        orphans = {str(d) for d in claims.wait_for_owners([Path(t.directory) for t in busy], poll_s)}
        elsewhere += [t.run_id for t in busy if t.directory not in orphans]
        todo = [t for t in busy if t.directory in orphans]
        busy = []
    return outcomes, elsewhere


def prepare_folds(study: StudyConfig, out: Path) -> None:
    """Write ``folds/{target}.csv`` for every target that does not name its own folds file."""
    for target in study.targets:
        path = out / study_folds_file(target.name)
        if target.folds_file or path.exists():
            continue
        manifest = load_manifest(target.manifest_name, target.root, **target.options)
        folds = dataset_folds(manifest, study.fold_spec)
        write_folds(folds, path)  # atomic: a killed study never leaves a half-written fold table


def collapsed_stages(size: int) -> list[str]:
    """The paper's layers (conv1, block1..block4) that the Keras ResNet50 reduces to 1 x 1 at
    ``size`` px (block4 from 32 px down, block3 from 16 px)."""
    shapes = layer_shapes(size, PAPER_LAYERS.values())
    return [label for label, keras in PAPER_LAYERS.items() if shapes[keras][1:] == (1, 1)]


def warn_collapsed_stages(configs: list[RunConfig]) -> None:
    """One line on stderr per (target, size) at which a stage of the network collapses to 1 x 1."""
    for target, size in sorted({(c.target_label, c.size) for c in configs}):
        stages = collapsed_stages(size)
        if stages:
            write_line(sys.stderr, f"warning: target {target} at {size} px: the Keras ResNet50 stem leaves "
                                   f"{', '.join(stages)} at 1x1, so those layers see one position per image (no "
                                   "spatial structure; their CCA/CKA has one row per image); train at more than "
                                   "32 px for a spatial block4")


def planned_runs(study: StudyConfig, out: Path | None = None) -> list[RunConfig]:
    """The study's grid (:func:`expand`); ``ConfigError`` when it holds no run (e.g. only random
    init, which is trained no-freeze only, with ``strategies: [freeze]``), before anything is
    written: a study of no runs would end in an empty Table 2 and exit 0."""
    configs = expand(study, out)
    if not configs:
        sources = ", ".join(f"{s.name} ({', '.join(strategies_for(study, s)) or 'no strategy'})" for s in study.sources)
        raise ConfigError(f"study {study.name!r} has no run to make: its sources and their strategies are {sources} "
                          f"(random init is trained no-freeze only; strategies asked: {list(study.strategies)})")
    return configs


def open_study_dir(study: StudyConfig, out: Path, study_file: Path | None = None) -> StudyConfig:
    """Check that ``out`` may hold the study (:func:`medtransfer.study.store.check_out_dir`), create
    it, and record the resolved study there unless it records one already; returns the study with
    its threads pinned (:func:`pin_threads`)."""
    out = Path(out)
    check_out_dir(out, study_file)
    planned_runs(study)
    out.mkdir(parents=True, exist_ok=True)
    study = pin_threads(study, out)
    if recorded_study_file(out) is None:  # a new study: mark the folder as medtransfer's at once
        write_atomic(out / STUDY_FILE, study.to_yaml())
    return study


def run_study(study: StudyConfig, out: str | Path, executor: Executor | None = None, detach: bool = False,
              steal_claims: bool = False, study_file: Path | None = None) -> StudyReport:
    """Run every missing run of ``study`` into ``out`` and write ``results/``.

    Idempotent: finished runs (``DONE``, files intact) are skipped, interrupted ones resume, and
    damaged ones (a file differs from ``DONE``'s digests) are recomputed from scratch, runs another
    live owner holds (another driver, an earlier driver's SLURM jobs) are waited for, not redone.
    Pretrained sources are made first, by the executor like every run, and the runs that do not
    read one (random init, downloaded weights) train beside them; before them, the images
    the pretraining sets share with the targets, and those the folds share across their test parts,
    are looked for (``study.leakage``, :mod:`medtransfer.study.leakage`). ``detach`` (SLURM): submit
    the jobs and return; a later call collects. ``executor`` defaults to the study's ``executor``
    section. ``steal_claims``: take over runs claimed by another host that this machine cannot
    check (:func:`medtransfer.study.claims.steal`); without it they are named at once and waited
    for. ``study_file``: the YAML file the study was read from, the one file a non-empty ``out``
    may hold besides a study (:func:`medtransfer.study.store.check_out_dir`; it is never
    rewritten: the resolved study goes to ``DIR/study.resolved.yaml``). A study file with added grid
    entries extends a study directory: its runs are kept, the new ones run, and the resolved study
    is replaced. Raises ConfigError, before anything is written, when ``out`` holds runs or a
    pretrained source made with different settings, runs the study leaves out
    (:mod:`medtransfer.study.extension`), or files that medtransfer did not write.
    """
    out = Path(out)
    check_out_dir(out, study_file)  # before anything is read or written: a folder of the user's is refused
    study = pin_threads(study, out)
    configs = planned_runs(study, out)
    recomputed = []
    for config in configs:
        run = RunDir.in_study(out, config)
        if run.is_done() and run.check("full"):
            recomputed.append(config.run_id)  # a file differs from what the run wrote: run it again
            run.clear()
        check_unchanged(config, run, out)
    check_no_dropped_runs(configs, out)
    check_sources_unchanged(study, out)
    datasets = study_datasets(study, configs, out)  # every missing root named before anything is written
    study = open_study_dir(study, out, study_file)
    warn_collapsed_stages(configs)
    write_atomic(out / STUDY_FILE, study.to_yaml())
    prepare_folds(study, out)
    check_leakage(study, datasets, out)  # before any training: a refused study starts no run
    if executor is None:
        spec = study.executor
        executor = spec.build(out, study.training["threads"])
    tracking = ""
    if study.tracking is not None:
        tracking = open_study_tracking(study.tracking, out, study.name)
    tasks, sources_of = [], {}
    for config in configs:
        run = RunDir.in_study(out, config)
        if run.is_done():
            # DONE is written last; a process killed just after it leaves its RUNNING claim behind
            clear_claim(run.path)
        else:
            tasks.append(Task.make(config, run.path, tracking))
            sources_of[config.run_id] = (out / config.source).resolve()
    sources = _source_tasks(study, out)
    if steal_claims:
        for task in sources + tasks:
            claims.steal(Path(task.directory))
    if detach:
        submitted = _submit_detached(executor, sources, tasks)
        return StudyReport(len(configs), len(configs) - len(tasks), 0, [], 0, recomputed, submitted)
    # the runs that do not read a source made now (random init, downloaded weights) train beside
    # the pretraining, the others once every source is made
    made = {Path(t.publish).resolve() for t in sources}
    later = [t for t in tasks if sources_of[t.run_id] in made]
    first, first_elsewhere = _execute(executor, sources + [t for t in tasks if t not in later])
    pretraining = {t.run_id for t in sources}
    outcomes = [o for o in first if o.run_id not in pretraining]
    elsewhere = sum(run_id not in pretraining for run_id in first_elsewhere)
    if any(o.state == "failed" for o in first if o.run_id in pretraining):  # the later runs need their sources
        if tracking:
            close_study_tracking(tracking, False)
        return StudyReport(len(configs), len(configs) - len(tasks), sum(o.state == "done" for o in outcomes),
                           [o for o in first if o.state == "failed"], elsewhere, recomputed)
    rest, rest_elsewhere = _execute(executor, later)
    outcomes += rest
    elsewhere += len(rest_elsewhere)
    if tracking:
        close_study_tracking(tracking, all(o.state in ("done", "skipped") for o in outcomes))
    write_results(out, configs)
    if study.evaluate.corruptions or study.evaluate.targets:  # evaluations without retraining, in this process
        evaluate_study(out)
    failed = [o for o in outcomes if o.state == "failed"]
    finished = sum(o.state == "done" for o in outcomes)
    return StudyReport(len(configs), len(configs) - len(tasks), finished, failed, elsewhere, recomputed)

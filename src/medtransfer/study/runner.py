"""``run_study``: prepare a study directory, run the missing runs, write the results tables."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from medtransfer.errors import ConfigError
from medtransfer.study import claims
from medtransfer.study.config import StudyConfig
from medtransfer.study.executors import Outcome, Task, make_executor, pin_threads
from medtransfer.study.expand import expand
from medtransfer.study.pretrain import (EXECUTION_FIELDS, pretrain_config, publish_source, source_file,
                                        source_run_dir)
from medtransfer.study.results import write_results
from medtransfer.study.store import DONE, clear_claim, run_dir, write_atomic
from medtransfer.training.config import RunConfig

# fields that may change between two invocations without changing what a run computes
_FREE_FIELDS = set(EXECUTION_FIELDS) | {"keep_last", "classes", "eval_batch_size"}


@dataclass
class StudyReport:
    """What one invocation did: runs in the study, skipped as done, finished now (by this driver),
    failed, and finished meanwhile by another owner (another driver, an earlier driver's job)."""

    total: int
    skipped: int
    finished: int
    failed: list[Outcome] = field(default_factory=list)
    elsewhere: int = 0
    submitted: int = 0  # --detach: jobs submitted and left running


def _source_tasks(study: StudyConfig, out: Path) -> list[Task]:
    """A pretraining task for each source the study makes itself and has not made yet."""
    tasks = []
    for source in study.sources:
        if source.pretrain is None or publish_source(source_run_dir(source, out), source_file(source, out)):
            continue
        tasks.append(Task.make(pretrain_config(source, study.training), source_run_dir(source, out),
                               publish=str(source_file(source, out))))
    return tasks


def _submit_detached(executor, sources: list[Task], tasks: list[Task]) -> int:  # noqa: ANN001
    """Submit the pretraining jobs, then the fine-tuning array (started once every source job
    succeeded: ``afterok``); returns how many jobs were submitted. Runs already owned elsewhere
    (an earlier driver's jobs) are not submitted again."""
    from medtransfer.study.executors import SlurmExecutor

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


def _execute(executor, tasks: list[Task]) -> tuple[list[Outcome], int]:  # noqa: ANN001
    """Run ``tasks``; a run another live owner holds is waited for, and run here if that owner
    dies before finishing it. Returns this driver's outcomes and how many runs others finished."""
    busy = [t for t in tasks if claims.held_elsewhere(Path(t.directory))]
    todo = [t for t in tasks if t not in busy]
    outcomes: list[Outcome] = []
    poll_s = min(getattr(executor, "poll_s", 1.0), 10.0)
    elsewhere = 0
    while todo or busy:
        got = executor.run(todo) if todo else []
        outcomes += [o for o in got if o.state != "busy"]
        elsewhere += sum(o.state == "skipped" for o in got)  # finished by another owner meanwhile
        busy += [t for t, o in zip(todo, got) if o.state == "busy"]
        orphans = {str(d) for d in claims.wait_for_owners([Path(t.directory) for t in busy], DONE, poll_s)}
        elsewhere += len(busy) - len(orphans)
        todo = [t for t in busy if t.directory in orphans]
        busy = []
    return outcomes, elsewhere


def _check_unchanged(config: RunConfig, directory: Path) -> None:
    saved_path = directory / "config.json"
    if not saved_path.exists():
        return
    saved = json.loads(saved_path.read_text())
    planned = config.model_dump(mode="json")
    changed = sorted(key for key, value in planned.items()
                     if key not in _FREE_FIELDS and not (key == "normalization" and value is None)
                     and saved.get(key) != value)
    if changed:
        raise ConfigError(f"run {config.run_id} in {directory} was started with different settings "
                          f"({', '.join(f'{k}: {saved.get(k)!r} -> {planned[k]!r}' for k in changed)}); "
                          "use a new --out directory, or delete that run directory to redo it")


def prepare_folds(study: StudyConfig, out: Path) -> None:
    """Write ``folds/{target}.csv`` for every target that does not name its own folds file."""
    from medtransfer.data import load_manifest, write_folds
    from medtransfer.data.registry import dataset_folds

    fractions = tuple(study.training.get("split_fractions", (0.80, 0.05, 0.15)))
    for target in study.targets:
        path = out / "folds" / f"{target.name}.csv"
        if target.folds_file or path.exists():
            continue
        manifest = load_manifest(target.manifest_name, target.root, **target.options)
        folds = dataset_folds(manifest, study.k_folds, fractions, study.split_seed)
        write_folds(folds, path)  # atomic: a killed study never leaves a half-written fold table


def run_study(study: StudyConfig, out: str | Path, executor=None, detach: bool = False) -> StudyReport:  # noqa: ANN001
    """Run every missing run of ``study`` into ``out`` and write ``results/``.

    Idempotent: finished runs (``DONE``) are skipped, interrupted ones resume, runs another live
    owner holds (another driver, an earlier driver's SLURM jobs) are waited for, not redone.
    Pretrained sources are made first, by the executor like every run. ``executor`` defaults to
    the study's ``executor`` section. ``detach`` (SLURM): submit the jobs and return; a later
    call collects. Raises ConfigError when ``out`` holds runs made with different settings.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    study = pin_threads(study, out)
    configs = expand(study, out)
    for config in configs:
        _check_unchanged(config, run_dir(out, config))
    write_atomic(out / "study.yaml", study.to_yaml())
    prepare_folds(study, out)
    if executor is None:
        spec = study.executor
        executor = make_executor(spec.kind, out, spec.devices, spec.slurm, spec.ray_address, spec.gpus_per_run,
                                 study.training["threads"])
    tracking = ""
    if study.tracking is not None:
        from medtransfer.tracking.mlflow_sink import open_study_tracking

        tracking = open_study_tracking(study.tracking, out, study.name)
    tasks = []
    for config in configs:
        directory = run_dir(out, config)
        if (directory / DONE).exists():
            # DONE is written last; a process killed just after it leaves its RUNNING claim behind
            clear_claim(directory)
        else:
            tasks.append(Task.make(config, directory, tracking))
    sources = _source_tasks(study, out)
    if detach:
        submitted = _submit_detached(executor, sources, tasks)
        return StudyReport(len(configs), len(configs) - len(tasks), 0, [], 0, submitted)
    made, made_elsewhere = _execute(executor, sources)
    if any(o.state == "failed" for o in made):  # the runs need their sources
        if tracking:
            from medtransfer.tracking.mlflow_sink import close_study_tracking

            close_study_tracking(tracking, False)
        return StudyReport(len(configs), len(configs) - len(tasks), 0, [o for o in made if o.state == "failed"])
    outcomes, elsewhere = _execute(executor, tasks)
    if tracking:
        from medtransfer.tracking.mlflow_sink import close_study_tracking

        close_study_tracking(tracking, all(o.state in ("done", "skipped") for o in outcomes))
    write_results(out, configs)
    failed = [o for o in outcomes if o.state == "failed"]
    finished = sum(o.state == "done" for o in outcomes)
    return StudyReport(len(configs), len(configs) - len(tasks), finished, failed, elsewhere)

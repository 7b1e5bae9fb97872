"""Executors: run a list of fine-tuning runs locally, on SLURM (submitit) or on Ray.

Every executor calls :func:`execute_task` once per run, which is idempotent: a run with a
``DONE`` marker is skipped, an interrupted one resumes from its last checkpoint. So re-running
a study, a requeued SLURM job or a retried Ray task only does the missing work.
"""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medtransfer.errors import ConfigError
from medtransfer.progress import count_finished, run_view
from medtransfer.study.store import DONE, clear_running, mark_failed, mark_running
from medtransfer.training.config import RunConfig

# the most CPU threads a study pins by default (a GPU run needs few; more only oversubscribes nodes)
MAX_PINNED_THREADS = 8


def pin_threads(study, out: Path):  # noqa: ANN001, ANN201 - a StudyConfig in and out
    """The study with ``training.threads`` fixed, so that every engine computes the same numbers.

    CPU results depend on torch's thread count, and each engine sets a different one (Ray runs
    tasks under ``OMP_NUM_THREADS=1``, SLURM gives ``cpus_per_task``). A study that does not set
    ``threads`` gets the count already recorded in ``out/study.yaml`` (a rerun keeps it), else
    this machine's torch default capped at :data:`MAX_PINNED_THREADS`. The value is written to
    ``study.yaml`` and to every run's ``config.json``; SLURM's ``cpus_per_task`` and Ray's
    ``cpus_per_run`` default to it.
    """
    import torch
    import yaml

    if study.training.get("threads") is not None:
        return study
    threads = None
    recorded = Path(out) / "study.yaml"
    if recorded.exists():
        try:
            threads = (yaml.safe_load(recorded.read_text()).get("training") or {}).get("threads")
        except (OSError, yaml.YAMLError, AttributeError):
            threads = None
    if not isinstance(threads, int) or threads < 1:
        threads = min(torch.get_num_threads(), MAX_PINNED_THREADS)
    return study.model_copy(update={"training": {**study.training, "threads": threads}})


@dataclass(frozen=True)
class Task:
    """One run to execute: its id, config (as JSON, so that it pickles anywhere), directory, and
    where to track it (JSON of :func:`medtransfer.tracking.open_study_tracking`; empty: untracked)."""

    run_id: str
    config_json: str
    directory: str
    tracking: str = ""

    @classmethod
    def make(cls, config: RunConfig, directory: Path, tracking: str = "") -> "Task":
        """A task for ``config`` in ``directory``."""
        return cls(config.run_id, config.model_dump_json(), str(directory), tracking)


@dataclass
class Outcome:
    """What became of a task: ``state`` "done", "skipped" (already done) or "failed" (``error``)."""

    run_id: str
    state: str
    auc: float | None = None
    error: str = ""


def execute_task(task: Task, device: str | None = None) -> Outcome:
    """Run one task in this process (skip it when done); failures are recorded, not raised.

    ``device`` overrides the config's device when the config says ``auto`` (a worker's GPU).
    """
    from medtransfer.tracking.sinks import run_sinks
    from medtransfer.training.run import train_run

    directory = Path(task.directory)
    if (directory / DONE).exists():
        return Outcome(task.run_id, "skipped")
    config = RunConfig.model_validate_json(task.config_json)
    if device and config.device == "auto":
        config = config.model_copy(update={"device": device})
    directory.mkdir(parents=True, exist_ok=True)
    mark_running(directory)
    sinks = run_sinks(task.tracking)
    try:
        result = train_run(config, directory, sinks)
    except Exception as error:  # a failed run must not stop the others
        mark_failed(directory, traceback.format_exc())
        sinks.fail(f"{error.__class__.__name__}: {error}")
        return Outcome(task.run_id, "failed", error=f"{error.__class__.__name__}: {error}")
    except BaseException:  # interrupted: leave it resumable
        clear_running(directory)
        raise
    clear_running(directory)
    return Outcome(task.run_id, "done", auc=result.metrics.get("auc"))


# -- local --------------------------------------------------------------------------------------

_WORKER_DEVICE: str | None = None


def _claim_device(devices) -> None:  # noqa: ANN001 - a multiprocessing queue
    global _WORKER_DEVICE
    _WORKER_DEVICE = devices.get()


def _execute_on_worker_device(task: Task) -> Outcome:
    return execute_task(task, _WORKER_DEVICE)


class LocalExecutor:
    """Runs tasks on this machine: sequentially in this process, or with several ``devices``
    (default: every visible GPU when there are two or more) one worker process per device."""

    name = "local"

    def __init__(self, devices: list[str] | None = None) -> None:
        if devices is None:
            import torch

            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
            devices = [f"cuda:{i}" for i in range(count)] if count > 1 else []
        self.devices = list(devices)

    def run(self, tasks: list[Task]) -> list[Outcome]:
        """Execute ``tasks``; returns one outcome per task, in order."""
        if len(self.devices) <= 1 or len(tasks) <= 1:
            device = self.devices[0] if self.devices else None
            with run_view(len(tasks)):
                return [execute_task(task, device) for task in tasks]
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        context = mp.get_context("spawn")
        queue = context.Manager().Queue()
        for device in self.devices:
            queue.put(device)
        outcomes: dict[int, Outcome] = {}
        with ProcessPoolExecutor(len(self.devices), mp_context=context, initializer=_claim_device,
                                 initargs=(queue,)) as pool:
            futures = {pool.submit(_execute_on_worker_device, task): i for i, task in enumerate(tasks)}
            for future in count_finished(as_completed(futures), "fine-tuning", len(futures)):
                outcomes[futures[future]] = future.result()
        return [outcomes[i] for i in range(len(tasks))]


# -- SLURM through submitit --------------------------------------------------------------------


class _SubmititRun:
    """A submitit job body that requeues itself on preemption or timeout; the run then
    resumes from its last checkpoint (``checkpoint_every_s`` bounds the work lost)."""

    def __call__(self, task: Task) -> Outcome:
        return execute_task(task)

    def checkpoint(self, task: Task):  # noqa: ANN201 - submitit's DelayedSubmission
        import submitit

        return submitit.helpers.DelayedSubmission(_SubmititRun(), task)


class SlurmExecutor:
    """Submits the runs as one SLURM job array through submitit, one run per array task.

    ``cluster``: ``None``/"slurm" on a cluster; "local" (subprocesses) or "debug" (in-process)
    run the same code path without SLURM, for testing. ``parameters`` go to submitit's
    ``update_parameters`` (e.g. ``slurm_partition``, ``timeout_min``, ``gpus_per_node``,
    ``cpus_per_task``, ``mem_gb``, ``slurm_array_parallelism``).
    """

    name = "slurm"

    def __init__(self, folder: str | Path, cluster: str | None = None, **parameters: Any) -> None:
        self.folder = Path(folder)
        self.cluster = cluster
        defaults = {"timeout_min": 24 * 60, "cpus_per_task": 8, "slurm_array_parallelism": 32}
        if cluster in ("local", "debug"):
            defaults = {"timeout_min": 60}
        self.parameters = {**defaults, **parameters}

    def run(self, tasks: list[Task]) -> list[Outcome]:
        """Submit ``tasks`` as a job array and wait for every job."""
        import submitit

        if not tasks:
            return []
        executor = submitit.AutoExecutor(folder=self.folder / "%j", cluster=self.cluster)
        try:
            executor.update_parameters(**self.parameters)
        except (ValueError, TypeError) as error:
            raise ConfigError(f"slurm executor parameters: {error}") from None
        jobs = executor.map_array(_SubmititRun(), tasks)
        outcomes = []
        for task, job in count_finished(list(zip(tasks, jobs)), "SLURM jobs", len(jobs)):
            try:
                outcomes.append(job.result())
            except Exception as error:  # the job itself died (node failure, out of memory)
                outcomes.append(Outcome(task.run_id, "failed", error=f"job {job.job_id}: {error}"))
        return outcomes


# -- Ray ---------------------------------------------------------------------------------------


def _ray_body(task: Task) -> Outcome:
    import ray

    gpus = ray.get_gpu_ids()
    # Ray sets CUDA_VISIBLE_DEVICES for the task: its GPU is cuda:0 inside it
    return execute_task(task, "cuda:0" if gpus else None)


class RayExecutor:
    """Runs each fine-tuning run as a Ray task with ``gpus_per_run`` GPUs (default: 1 when the
    cluster has GPUs, else 0) and ``cpus_per_run`` CPUs. Connects to ``address`` (or starts a
    local instance with ``init_options``) unless Ray is already initialised."""

    name = "ray"

    def __init__(self, address: str | None = None, gpus_per_run: float | None = None, cpus_per_run: float = 1,
                 **init_options: Any) -> None:
        self.address, self.gpus_per_run, self.cpus_per_run = address, gpus_per_run, cpus_per_run
        self.init_options = init_options

    def run(self, tasks: list[Task]) -> list[Outcome]:
        """Submit every task, then collect outcomes as they finish."""
        import ray

        if not tasks:
            return []
        started = False
        if not ray.is_initialized():
            ray.init(address=self.address, **self.init_options)
            started = True
        try:
            gpus = self.gpus_per_run
            if gpus is None:
                gpus = 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0
            remote = ray.remote(num_gpus=gpus, num_cpus=self.cpus_per_run, max_retries=2)(_ray_body)
            refs = [remote.remote(task) for task in tasks]
            index = {ref: i for i, ref in enumerate(refs)}
            outcomes: dict[int, Outcome] = {}
            pending = list(refs)

            def finished():  # noqa: ANN202 - a generator of outcomes as they arrive
                nonlocal pending
                while pending:
                    ready, pending = ray.wait(pending, num_returns=1)
                    yield ready[0]

            for ref in count_finished(finished(), "fine-tuning on Ray", len(refs)):
                try:
                    outcomes[index[ref]] = ray.get(ref)
                except Exception as error:  # the worker died
                    outcomes[index[ref]] = Outcome(tasks[index[ref]].run_id, "failed", error=str(error))
            return [outcomes[i] for i in range(len(tasks))]
        finally:
            if started:
                ray.shutdown()


def make_executor(kind: str, out: Path, devices: list[str] | None = None, slurm: dict[str, Any] | None = None,
                  ray_address: str | None = None, gpus_per_run: float | None = None,
                  threads: int | None = None):  # noqa: ANN201
    """An executor by name: ``local``, ``slurm`` (logs under ``out/slurm``) or ``ray``.

    ``threads`` (the study's pinned thread count) is the default CPUs per run on SLURM and Ray.
    """
    if kind == "local":
        return LocalExecutor(devices)
    if kind == "slurm":
        options = dict(slurm or {})
        cluster = options.pop("cluster", None)
        if threads and "cpus_per_task" not in options:
            options["cpus_per_task"] = threads
        return SlurmExecutor(out / "slurm", cluster=cluster, **options)
    if kind == "ray":
        return RayExecutor(address=ray_address or os.environ.get("RAY_ADDRESS"), gpus_per_run=gpus_per_run,
                           cpus_per_run=threads or 1)
    raise ConfigError(f"executor {kind!r}: expected local, slurm or ray")

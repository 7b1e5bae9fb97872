"""Executors: run a list of fine-tuning runs locally, on SLURM (submitit) or on Ray.

Every executor calls :func:`execute_task` once per run, which is idempotent: a run with a
``DONE`` marker is skipped, an interrupted one resumes from its last checkpoint. So re-running
a study, a requeued SLURM job or a retried Ray task only does the missing work.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import queue as queue_module
import re
import signal
import socket
import subprocess
import sys
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass
from multiprocessing.managers import SyncManager
from pathlib import Path
from typing import Any, Protocol

import torch

from medtransfer import interrupts
from medtransfer.atomic import write_text_atomic
from medtransfer.console import count_finished, progress_enabled, quiet, send_lines_to, write_line
from medtransfer.errors import ConfigError, MedtransferError
from medtransfer.study import claims, slurm
from medtransfer.study.config import ExecutorSpec, read_study_yaml
from medtransfer.study.pretrain import publish_source
from medtransfer.study.store import clear_running, mark_failed, mark_running, recorded_study_file
from medtransfer.tracking.sinks import run_sinks
from medtransfer.training.config import RunConfig
from medtransfer.training.progress import run_view
from medtransfer.training.record import SLURM_DIR, RunDir
from medtransfer.training.run import train_run

# the most CPU threads a study pins by default (a GPU run needs few; more only oversubscribes nodes)
MAX_PINNED_THREADS = 8


def pin_threads(study, out: Path):  # noqa: ANN001, ANN201 - a StudyConfig in and out
    """The study with ``training.threads`` fixed, so that every engine computes the same numbers.

    CPU results depend on torch's thread count, and each engine sets a different one (Ray runs
    tasks under ``OMP_NUM_THREADS=1``, SLURM gives ``cpus_per_task``). A study that does not set
    ``threads`` gets the count already recorded in the study directory's resolved study (a rerun
    keeps it), else this machine's torch default capped at :data:`MAX_PINNED_THREADS`. The value
    is written to that file and to every run's ``config.json``; SLURM's ``cpus_per_task`` and Ray's
    ``cpus_per_run`` default to it.
    """
    if study.training.get("threads") is not None:
        return study
    threads = None
    recorded = recorded_study_file(Path(out))
    if recorded is not None:
        try:
            threads = (read_study_yaml(recorded).get("training") or {}).get("threads")
        except (ConfigError, AttributeError):
            threads = None
    if not isinstance(threads, int) or threads < 1:
        threads = min(torch.get_num_threads(), MAX_PINNED_THREADS)
    return study.model_copy(update={"training": {**study.training, "threads": threads}})


@dataclass(frozen=True)
class Task:
    """One run to execute: its id, config (as JSON, so that it pickles anywhere), directory, and
    where to track it (JSON of :func:`medtransfer.tracking.mlflow_sink.open_study_tracking`; empty: untracked)."""

    run_id: str
    config_json: str
    directory: str
    tracking: str = ""
    publish: str = ""  # a pretraining run: where its best.pt goes once DONE (a study's source file)

    @classmethod
    def make(cls, config: RunConfig, directory: Path, tracking: str = "", publish: str = "") -> "Task":
        """A task for ``config`` in ``directory``."""
        return cls(config.run_id, config.model_dump_json(), str(directory), tracking, publish)


@dataclass
class Outcome:
    """What became of a task: ``state`` "done", "skipped" (already done), "busy" (another live
    owner holds the run: see :mod:`medtransfer.study.claims`), "failed" (``error``), or
    "preempted" (a Ray task stopped by a preemption, left resumable: its executor requeues it)."""

    run_id: str
    state: str
    auc: float | None = None
    error: str = ""


class Executor(Protocol):
    """What runs a study's tasks (:class:`LocalExecutor`, :class:`SlurmExecutor`,
    :class:`RayExecutor`, by name in :data:`medtransfer.study.config.EXECUTORS`; the study's
    ``executor:`` section builds one with ``ExecutorSpec.build``, which calls ``from_spec``).

    ``run`` returns one :class:`Outcome` per task, in order; wherever a task runs, it runs through
    :func:`execute_task` (idempotent, so a rerun or a retried job only does the missing work)."""

    name: str

    @classmethod
    def from_spec(cls, spec: ExecutorSpec, out: Path, threads: int | None) -> Executor: ...

    def run(self, tasks: list[Task]) -> list[Outcome]: ...


def execute_task(task: Task, device: str | None = None) -> Outcome:
    """Run one task in this process (skip it when done); failures are recorded, not raised.

    ``device`` overrides the config's device when the config says ``auto`` (a worker's GPU).
    A run another live process or job owns is left alone ("busy"). An interrupted run (a signal,
    a preemption, even one that surfaces as an error from inside a write) is left resumable and
    never recorded as failed.
    """
    directory = Path(task.directory)
    run = RunDir(directory)
    if run.is_done():
        _publish(task)
        held = claims.read(directory)
        if held is not None and claims.is_mine(held):
            # this job's earlier incarnation finished the run and was preempted before it let go
            clear_running(directory)
            return Outcome(task.run_id, "done", auc=_auc(run))
        return Outcome(task.run_id, "skipped")
    config = RunConfig.model_validate_json(task.config_json)
    if device and config.device == "auto":
        config = config.model_copy(update={"device": device})
    directory.mkdir(parents=True, exist_ok=True)
    if not mark_running(directory):
        return Outcome(task.run_id, "busy")
    sinks = run_sinks(task.tracking)
    try:
        result = train_run(config, directory, sinks)
    except Exception as error:
        if interrupts.preempting():  # the preemption handler's exit, seen through torch's writer
            _leave_resumable(directory)
            raise
        mark_failed(directory, traceback.format_exc())  # a failed run must not stop the others
        sinks.fail(f"{error.__class__.__name__}: {error}")
        return Outcome(task.run_id, "failed", error=f"{error.__class__.__name__}: {error}")
    except BaseException:  # interrupted: leave it resumable
        _leave_resumable(directory)
        raise
    _publish(task)
    clear_running(directory)
    return Outcome(task.run_id, "done", auc=result.metrics.get("auc"))


def _auc(run: RunDir) -> float | None:
    try:
        return run.read_metrics().get("auc")
    except MedtransferError:
        return None


def _publish(task: Task) -> None:
    if task.publish:
        publish_source(Path(task.directory), Path(task.publish))


def _leave_resumable(directory: Path) -> None:
    # a SLURM job keeps its claim: while it is requeued SLURM lists it, and a rerun driver waits
    if not claims.own_job_ids():
        clear_running(directory)


# -- local --------------------------------------------------------------------------------------

_WORKER_DEVICE: str | None = None


def _start_worker(parent: int, devices, lines=None) -> None:  # noqa: ANN001 - multiprocessing queues
    """A local worker's start: it ends with its driver ``parent``, then takes a device."""
    # a worker that outlived a killed driver would train its run to the end, holding the claim,
    # and then wait forever for more work. SIGTERM ends it at once (after a checkpoint being
    # written, see interrupts.deferred_signals); its run resumes from the last checkpoint, and
    # the claim of a dead process is taken over by the next owner
    interrupts.stop_with_parent(parent)
    global _WORKER_DEVICE
    _WORKER_DEVICE = devices.get()
    if lines is not None:  # the parent shows a progress bar: its lines go above it, not onto it
        send_lines_to(_ParentLines(lines))


class _ParentLines:
    """The driver's queue of progress lines, for a worker's :func:`send_lines_to`: a line that no
    longer reaches the driver (its queue's manager process is gone) is dropped, never a failed run."""

    def __init__(self, queue) -> None:  # noqa: ANN001 - a multiprocessing queue proxy
        self.queue = queue

    def put(self, line: str) -> None:
        try:
            self.queue.put(line)
        except (OSError, EOFError):
            pass


def _execute_on_worker_device(task: Task) -> Outcome:
    return execute_task(task, _WORKER_DEVICE)


def _print_lines(lines) -> None:  # noqa: ANN001 - a multiprocessing queue or None
    """Print the workers' progress lines waiting in ``lines`` on this process's stderr, which the
    progress bar's display redirects above the bar."""
    while lines is not None:
        try:
            line = lines.get_nowait()
        except queue_module.Empty:
            return
        write_line(sys.stderr, line)


class LocalExecutor:
    """Runs tasks on this machine: sequentially in this process, or in ``workers`` worker
    processes, worker ``i`` on ``devices[i % len(devices)]`` (the run config's own device where
    ``devices`` is empty). Defaults: one worker per entry of ``devices``, which defaults to every
    visible GPU when there are two or more.

    On a CPU, several single-thread workers use the cores better than one multi-thread run: a
    small network's steps are too short for torch's threads (the demo runs 2 at 1 thread each).

    Worker processes end with the driver, even a SIGKILLed one (see :func:`_start_worker`): a
    rerun resumes their runs.
    """

    name = "local"

    @classmethod
    def from_spec(cls, spec: ExecutorSpec, out: Path, threads: int | None) -> LocalExecutor:  # noqa: ARG003
        return cls(spec.devices, spec.workers)

    def __init__(self, devices: list[str] | None = None, workers: int | None = None) -> None:
        if devices is None:
            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
            devices = [f"cuda:{i}" for i in range(count)] if count > 1 else []
        if workers is not None and workers < 1:
            raise ConfigError(f"executor workers {workers}: expected 1 or more")
        self.devices = list(devices)
        self.workers = workers if workers is not None else max(len(self.devices), 1)

    def slots(self) -> list[str | None]:
        """Each worker's device (None: the run config's own)."""
        return [self.devices[i % len(self.devices)] if self.devices else None for i in range(self.workers)]

    def run(self, tasks: list[Task]) -> list[Outcome]:
        """Execute ``tasks``; returns one outcome per task, in order."""
        slots = self.slots()
        if len(slots) <= 1 or len(tasks) <= 1:
            device = slots[0] if slots else None
            with run_view(len(tasks)):
                return [execute_task(task, device) for task in tasks]

        context = mp.get_context("spawn")
        manager = SyncManager(ctx=context)  # context.Manager(), with a server that ends with this process
        manager.start(interrupts.stop_with_parent, (os.getpid(),))
        queue = manager.Queue()
        for device in slots:
            queue.put(device)
        outcomes: dict[int, Outcome] = {}
        lines = manager.Queue() if progress_enabled() else None
        pool = ProcessPoolExecutor(len(slots), mp_context=context, initializer=_start_worker,
                                   initargs=(os.getpid(), queue, lines))
        # the workers start in submit(), from this thread, which outlives them (shutdown waits):
        # Linux's parent-death signal follows the thread that started a process
        queued = iter(enumerate(tasks))
        running: dict = {}  # future -> task index; a task is submitted only when a worker is free

        def submit_next() -> None:
            item = next(queued, None)
            if item is not None:
                running[pool.submit(_execute_on_worker_device, item[1])] = item[0]

        def finished():  # noqa: ANN202 - futures as they finish, each replaced by the next task
            for _ in slots:
                submit_next()
            while running:
                done, _ = wait(running, timeout=None if lines is None else 0.2, return_when=FIRST_COMPLETED)
                _print_lines(lines)
                for future in done:
                    yield future
                    submit_next()
            _print_lines(lines)

        try:
            made = sum(bool(t.publish) for t in tasks)  # the runs that read no made source train beside them
            work = "pretraining" if made == len(tasks) else "pretraining and fine-tuning" if made else "fine-tuning"
            for future in count_finished(finished(), work, len(tasks)):
                outcomes[running.pop(future)] = future.result()  # a worker's interrupt is raised here
        except BaseException:
            # an interrupt (here or in a worker): no further run starts; a worker that got the
            # signal has left its run resumable, one that did not finishes its run first
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        return [outcomes[i] for i in range(len(tasks))]


# -- SLURM through submitit --------------------------------------------------------------------


def write_outcome(task: Task, outcome: Outcome) -> None:
    """Record a job's outcome as JSON in its run directory (``outcome.json``), for the driver:
    submitit's own result files are pickles under the study folder, which the driver never reads."""
    write_text_atomic(RunDir(Path(task.directory)).outcome, json.dumps(asdict(outcome)))


def read_outcome(task: Task, job_id: str, log: Path | str, patience_s: float = 0.0) -> Outcome:
    """The outcome a job recorded with :func:`write_outcome`; a job that ended without one (killed,
    out of memory, its node lost) is a failed run whose ``log`` tells why. ``patience_s``: how long
    to look again for a file a shared filesystem has not shown yet."""
    import time

    path = RunDir(Path(task.directory)).outcome
    deadline = time.monotonic() + patience_s
    while True:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            break
        except (OSError, ValueError):
            data = None
        if time.monotonic() >= deadline:
            break
        time.sleep(1.0)
    if (not isinstance(data, dict) or data.get("run_id") != task.run_id
            or data.get("state") not in ("done", "skipped", "busy", "failed")):
        return Outcome(task.run_id, "failed", error=f"job {job_id} ended without recording an outcome in {path} "
                                                    f"(killed, out of memory or failed outside the run); log: {log}")
    auc = data.get("auc")
    return Outcome(task.run_id, data["state"], auc=float(auc) if isinstance(auc, (int, float)) else None,
                   error=str(data.get("error") or ""))


class _SubmititRun:
    """A submitit job body that requeues itself on preemption or timeout; the run then
    resumes from its last checkpoint (``checkpoint_every_s`` bounds the work lost)."""

    def __call__(self, task: Task) -> Outcome:
        from submitit import JobEnvironment  # optional dependency, imported where used (as ray below)
        from submitit.core.utils import UncompletedJobError

        preempt = JobEnvironment._usr_sig()
        handler = signal.getsignal(preempt)
        if callable(handler):
            signal.signal(preempt, interrupts.mark_preempting(handler))
        try:
            outcome = execute_task(task)
            write_outcome(task, outcome)
            return outcome
        except BaseException as error:
            chain = [error]
            while chain[-1].__context__ is not None and len(chain) < 20:
                chain.append(chain[-1].__context__)
            if not interrupts.preempting() or any(isinstance(e, UncompletedJobError) for e in chain):
                raise
            # requeued: exit (with the handler's own code) without a result, so that neither
            # submitit nor the driver sees a failure, even when the exit surfaced as torch's error
            code = next((e.code for e in chain if isinstance(e, SystemExit)), -1)
            raise SystemExit(code) from None

    def checkpoint(self, task: Task):  # noqa: ANN201 - submitit's DelayedSubmission
        import submitit

        return submitit.helpers.DelayedSubmission(_SubmititRun(), task)


class SlurmExecutor:
    """Submits the runs as one SLURM job array through submitit, one run per array task.

    ``cluster``: ``None``/"slurm" on a cluster; "local" (subprocesses) or "debug" (in-process)
    run the same code path without SLURM, for testing. ``parameters`` are the study's
    ``executor.slurm`` settings (see :func:`medtransfer.study.slurm.slurm_parameters` and
    docs/clusters.md); defaults: :data:`medtransfer.study.slurm.DEFAULTS` (no GPU request).
    Before submitting, the settings are checked against ``sinfo`` (a missing partition, more
    CPUs, memory, GPUs or time than any node offers are errors); while waiting, a job that SLURM
    says can never start is cancelled and reported.
    """

    name = "slurm"

    @classmethod
    def from_spec(cls, spec: ExecutorSpec, out: Path, threads: int | None) -> SlurmExecutor:
        """Logs under ``out/slurm``; ``executor.slurm`` gives the job settings, ``cluster`` and
        ``poll_s`` (how often the driver asks squeue, in seconds)."""
        options = dict(spec.slurm or {})
        cluster = options.pop("cluster", None)
        poll_s = float(options.pop("poll_s", 10.0))
        return cls(out / SLURM_DIR, cluster=cluster, poll_s=poll_s, default_cpus=threads, **options)

    def __init__(self, folder: str | Path, cluster: str | None = None, poll_s: float = 10.0,
                 default_cpus: int | None = None, **parameters: Any) -> None:
        self.folder = Path(folder)
        self.real = cluster in (None, "slurm")
        self.cluster = "slurm" if self.real else cluster
        self.poll_s = poll_s
        settings = slurm.slurm_parameters(parameters)
        self.explicit = set(settings)
        defaults = dict(slurm.DEFAULTS) if self.real else {"timeout_min": 60}
        if default_cpus:
            defaults["cpus_per_task"] = default_cpus
        self.parameters = {**defaults, **settings}

    def check(self) -> None:
        """Check the settings against the cluster (real SLURM only); see :func:`slurm.check_cluster`."""
        if not self.real:
            return
        if "cpus_per_task" not in self.explicit:  # the pinned thread count: fit it to the partition
            part = slurm.check_cluster({**self.parameters, "cpus_per_task": 1})
            if part.cpus:
                self.parameters["cpus_per_task"] = min(int(self.parameters["cpus_per_task"]), part.cpus)
        slurm.check_cluster(self.parameters)

    def submit(self, tasks: list[Task]) -> list:  # noqa: ANN201 - submitit jobs
        """Submit ``tasks`` as one job array; returns its jobs (one per task, in order)."""
        import submitit

        for task in tasks:  # an outcome left by an earlier job must not pass for this one's
            RunDir(Path(task.directory)).outcome.unlink(missing_ok=True)
        executor = submitit.AutoExecutor(folder=self.folder / "%j", cluster=self.cluster)
        try:
            executor.update_parameters(**self.parameters)
        except (ValueError, TypeError, NameError, AssertionError) as error:
            raise ConfigError(f"executor.slurm: {error}") from None
        try:
            return executor.map_array(_SubmititRun(), tasks)
        except subprocess.CalledProcessError as error:
            raise ConfigError(f"executor.slurm: sbatch refused the job array (exit status {error.returncode}, its "
                              "message is printed above); check partition, account, qos, gres and limits") from None

    def wait(self, tasks: list[Task], jobs: list) -> list[Outcome]:  # noqa: ANN001
        """Wait for every job; a job that can never start cancels the array (ConfigError)."""
        outcomes: dict[int, Outcome] = {}
        pending = dict(enumerate(jobs))
        missing: dict[int, int] = {}

        def result(i: int) -> Outcome:
            job = jobs[i]
            if not self.real:
                try:
                    job.wait()  # submitit's local jobs: wait for the process (debug: run it here)
                except Exception:  # noqa: BLE001 - the job's own failure: read_outcome reports it
                    pass
            return read_outcome(tasks[i], str(job.job_id), job.paths.stderr, patience_s=5.0 if self.real else 0.0)

        def finished():  # noqa: ANN202 - outcomes as the jobs end
            last_poll = 0.0
            while pending:
                if not self.real:  # submitit's own local/debug jobs
                    i = next(iter(pending))
                    del pending[i]
                    yield i
                    continue
                for i in [i for i, job in pending.items() if job.paths.result_pickle.exists()]:
                    del pending[i]
                    yield i
                if pending and time.monotonic() - last_poll >= self.poll_s:
                    last_poll = time.monotonic()
                    listed = slurm.queue([str(job.job_id) for job in pending.values()])
                    for i, job in list(pending.items()):
                        state, reason = slurm.lookup(listed, job.job_id) or ("", "")
                        if state == "PENDING" and reason in slurm.HOPELESS_REASONS:
                            slurm.cancel([str(j.job_id) for j in pending.values()])
                            raise ConfigError(f"executor.slurm: job {job.job_id} can never start (SLURM: {reason}); "
                                              "its partition, cpus_per_task, mem_gb, gpus_per_node or timeout_min "
                                              "exceed what the cluster allows; the array is cancelled")
                        if state:
                            missing.pop(i, None)
                        elif job.paths.result_pickle.exists():
                            continue
                        else:  # gone from the queue without a result: give a slow filesystem two polls
                            missing[i] = missing.get(i, 0) + 1
                            if missing[i] > 2:
                                del pending[i]
                                outcomes[i] = Outcome(tasks[i].run_id, "failed",
                                                      error=f"job {job.job_id} left the queue without a result "
                                                            f"(cancelled or killed); log: {job.paths.stderr}")
                time.sleep(min(1.0, self.poll_s))

        for i in count_finished(finished(), "SLURM jobs", len(jobs)):
            outcomes[i] = result(i)
        return [outcomes[i] for i in range(len(tasks))]

    def submit_claimed(self, tasks: list[Task]) -> tuple[list[Task], list]:
        """Claim each run for this driver, submit the claimed ones and hand each claim to its job
        (the claim records the job id, so a rerun driver waits for the job instead of resubmitting).
        Returns the submitted tasks and their jobs; runs another live owner holds are left out."""
        if not self.real:  # submitit's local/debug jobs have no job id that SLURM could vouch for
            return tasks, self.submit(tasks)
        mine = [t for t in tasks if claims.claim(Path(t.directory))]
        try:
            jobs = self.submit(mine) if mine else []
        except BaseException:
            for task in mine:
                claims.release(Path(task.directory))
            raise
        for task, job in zip(mine, jobs):
            claims.update(Path(task.directory), job=str(job.job_id))
        return mine, jobs

    def run(self, tasks: list[Task]) -> list[Outcome]:
        """Check the settings, submit ``tasks`` as a job array and wait for every job."""
        if not tasks:
            return []
        self.check()
        mine, jobs = self.submit_claimed(tasks)
        got = dict(zip((t.run_id for t in mine), self.wait(mine, jobs)))
        return [got.get(t.run_id) or Outcome(t.run_id, "busy") for t in tasks]


# -- Ray ---------------------------------------------------------------------------------------

RAY_CONNECT_TIMEOUT_S = 10.0
RAY_RETRIES = 2  # retries of a task whose worker died without being preempted
RAY_NICENESS_VARIABLE = "RAY_worker_niceness"  # Ray's own setting of its workers' niceness, left to the user when set


def _ray_body(task: Task) -> Outcome:
    """One run in a Ray worker of its own (``max_calls=1``). A SIGTERM (Ray's stop, a node drain)
    or USR2 (SLURM's) to the worker is a preemption: the run stops at once (a checkpoint being
    written is finished first) and is left resumable, and the outcome says "preempted"."""
    import ray

    interrupts.stop_on_preemption()
    gpus = ray.get_gpu_ids()
    try:
        # Ray sets CUDA_VISIBLE_DEVICES for the task: its GPU is cuda:0 inside it
        return execute_task(task, "cuda:0" if gpus else None)
    except BaseException:
        if not interrupts.preempting():
            raise
        _leave_resumable(Path(task.directory))  # also when the signal came before the run began
        return Outcome(task.run_id, "preempted")


def check_ray_address(address: str) -> None:
    """Raise ConfigError within :data:`RAY_CONNECT_TIMEOUT_S` when nothing listens at ``address``
    (``host:port`` or ``ray://host:port``; ``auto`` and ``local`` are left to Ray)."""
    match = re.fullmatch(r"(?:ray://)?\[?([^\]/]+?)\]?:(\d+)/?", address.strip())
    if address in ("auto", "local") or match is None:
        return
    try:
        socket.create_connection((match.group(1), int(match.group(2))), timeout=RAY_CONNECT_TIMEOUT_S).close()
    except OSError as error:
        raise ConfigError(f"executor.ray_address {address!r} (or RAY_ADDRESS): no Ray head answers there "
                          f"({error.strerror or error}); start one with `ray start --head` or fix the address") \
            from None


class RayExecutor:
    """Runs each fine-tuning run as a Ray task with ``gpus_per_run`` GPUs (default: 1 when the
    cluster has GPUs, else 0) and ``cpus_per_run`` CPUs (at most a node's). Connects to
    ``address`` (or starts a local instance with ``init_options``) unless Ray is already
    initialised. A request no node can meet (``gpus_per_run: 1`` on a CPU cluster) is an error,
    not a task waiting forever.

    Each task runs in a worker process of its own. A preempted task (see :func:`_ray_body`) is
    requeued, as often as it is preempted, and resumes; a worker that dies otherwise (killed,
    crashed, its node lost) is retried :data:`RAY_RETRIES` times by Ray."""

    name = "ray"

    @classmethod
    def from_spec(cls, spec: ExecutorSpec, out: Path, threads: int | None) -> RayExecutor:  # noqa: ARG003
        return cls(address=spec.ray_address or os.environ.get("RAY_ADDRESS"), gpus_per_run=spec.gpus_per_run,
                   cpus_per_run=threads or 1)

    def __init__(self, address: str | None = None, gpus_per_run: float | None = None, cpus_per_run: float = 1,
                 **init_options: Any) -> None:
        self.address, self.gpus_per_run, self.cpus_per_run = address, gpus_per_run, cpus_per_run
        self.init_options = init_options

    def connect(self) -> bool:
        """Initialise Ray unless it is; returns whether this call started it."""
        import ray

        if ray.is_initialized():
            return False
        if self.address:
            check_ray_address(self.address)
        options = dict(self.init_options)
        if not self.address and not os.environ.get("RAY_ADDRESS") and RAY_NICENESS_VARIABLE not in os.environ:
            # a local instance: its workers train at the driver's priority; Ray's default (nice 15)
            # leaves them almost no CPU beside any other busy process on the machine
            options["_system_config"] = {"worker_niceness": 0, **options.get("_system_config", {})}
        try:
            ray.init(address=self.address, **options)
        except (ConnectionError, TimeoutError, RuntimeError) as error:
            raise ConfigError(f"executor.ray_address {self.address!r}: cannot connect to Ray ({error})") from None
        return True

    def resources(self) -> tuple[float, float]:
        """``(gpus, cpus)`` per run, checked against the largest live node of the cluster."""
        import ray

        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        node_gpus = max((n.get("GPU", 0) for n in nodes), default=0)
        node_cpus = max((n.get("CPU", 0) for n in nodes), default=0)
        gpus = self.gpus_per_run
        if gpus is None:
            gpus = 1 if node_gpus > 0 else 0
        if gpus > node_gpus:
            has = f"at most {node_gpus:g} GPUs per node" if node_gpus else "no GPUs"
            raise ConfigError(f"executor.gpus_per_run: {gpus:g} GPU(s) per run, but the Ray cluster has {has} "
                              f"(cluster resources: {ray.cluster_resources()}); set gpus_per_run: 0 or add GPU nodes")
        cpus = min(self.cpus_per_run, node_cpus) if node_cpus else self.cpus_per_run
        return gpus, cpus

    def run(self, tasks: list[Task]) -> list[Outcome]:
        """Submit every task, then collect outcomes as they finish."""
        import ray

        if not tasks:
            return []
        started = self.connect()
        try:
            gpus, cpus = self.resources()
            # one worker process per run: the rest of a preemption (SIGTERM, then USR2) never reaches the next
            remote = ray.remote(num_gpus=gpus, num_cpus=cpus, max_retries=RAY_RETRIES, max_calls=1)(_ray_body)
            pending = {remote.remote(task): i for i, task in enumerate(tasks)}
            outcomes: dict[int, Outcome] = {}
            requeued = [0] * len(tasks)

            def finished():  # noqa: ANN202 - indices of the tasks as they end
                while pending:
                    ready, _ = ray.wait(list(pending), num_returns=1)
                    i = pending.pop(ready[0])
                    try:
                        outcome = ray.get(ready[0])
                    except Exception as error:  # the worker died, RAY_RETRIES times
                        outcome = Outcome(tasks[i].run_id, "failed", error=str(error))
                    if outcome.state == "preempted":
                        requeued[i] += 1
                        if not quiet():
                            write_line(sys.stderr, f"{tasks[i].run_id}: preempted; requeued on Ray "
                                                   f"({requeued[i]} so far)")
                        pending[remote.remote(tasks[i])] = i
                        continue
                    outcomes[i] = outcome
                    yield i

            for _ in count_finished(finished(), "fine-tuning on Ray", len(tasks)):
                pass
            return [outcomes[i] for i in range(len(tasks))]
        finally:
            if started:
                ray.shutdown()

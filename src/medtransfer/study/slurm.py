"""SLURM settings and the scheduler's answers, checked before a study submits anything.

A study's ``executor.slurm`` mapping takes submitit's names: the generic ones (``timeout_min``,
``cpus_per_task``, ``gpus_per_node``, ``mem_gb``, ...) and SLURM's own, with or without their
``slurm_`` prefix (``partition`` and ``slurm_partition`` are one setting). :func:`slurm_parameters`
turns them into what submitit accepts, naming a misspelt key and its close match.
:func:`check_cluster` asks ``sinfo`` whether the partition exists and whether any of its nodes
can ever run the job (CPUs, memory, GPUs, time limit), so a mistake is an error within seconds
instead of a job pending forever. All scheduler commands run with a timeout.
"""

from __future__ import annotations

import difflib
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any

from medtransfer.errors import ConfigError

WHERE = "executor.slurm"
COMMAND_TIMEOUT_S = 45.0  # sinfo/squeue give up on an unreachable controller after about MessageTimeout
# pending reasons that never resolve by waiting: the job cannot run as submitted
HOPELESS_REASONS = frozenset({"PartitionConfig", "PartitionNodeLimit", "PartitionTimeLimit", "BadConstraints",
                              "InvalidAccount", "InvalidQOS", "QOSMaxCpuPerJobLimit", "QOSMaxGRESPerJob",
                              "QOSMaxWallDurationPerJobLimit", "QOSMaxMemoryPerJob", "AssocMaxCpuPerJobLimit",
                              "AssocMaxWallDurationPerJobLimit"})
# the defaults of a bare `--executor slurm`: no GPU unless asked for (a CPU partition rejects a
# GPU request); cpus_per_task defaults to the study's pinned threads (see executors.pin_threads)
DEFAULTS: dict[str, Any] = {"timeout_min": 24 * 60, "cpus_per_task": 8, "slurm_array_parallelism": 32}


def _submitit_names() -> tuple[dict[str, type], set[str]]:
    from submitit import AutoExecutor, SlurmExecutor

    return AutoExecutor._typed_parameters(), set(SlurmExecutor._valid_parameters())


def slurm_parameters(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` in submitit's spelling (SLURM names prefixed ``slurm_``), validated.

    Raises ConfigError naming ``executor.slurm.KEY`` for an unknown key (with the closest valid
    one) or a value of the wrong type.
    """
    generic, specific = _submitit_names()
    names = sorted(set(generic) | specific | {f"slurm_{n}" for n in specific})
    out: dict[str, Any] = {}
    for key, value in settings.items():
        if key in generic:
            expected = (int, float) if generic[key] is float else generic[key]
            if value is not None and (not isinstance(value, expected) or isinstance(value, bool) != (expected is bool)):
                raise ConfigError(f"{WHERE}.{key}: expected {generic[key].__name__}, got {value!r}")
            out[key] = value
        elif key.startswith("slurm_") and key[6:] in specific:
            out[key] = value
        elif key in specific:
            out[f"slurm_{key}"] = value  # submitit warns about the unprefixed name: prefix it here
        else:
            close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{WHERE}.{key}: unknown SLURM setting{hint} (settings: see docs/clusters.md; "
                              f"submitit's generic ones are {', '.join(sorted(generic))})")
    return out


def _run(command: list[str], what: str, unknown_job_ok: bool = False) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise ConfigError(f"{WHERE}: `{' '.join(command)}` gave no answer in {COMMAND_TIMEOUT_S:.0f} s: "
                          f"is the SLURM controller (slurmctld) running? ({what})") from None
    except OSError as error:
        raise ConfigError(f"{WHERE}: cannot run {command[0]} ({error}); ({what})") from None
    if done.returncode != 0 and unknown_job_ok and "Invalid job id" in done.stderr:
        return ""  # every listed job has left the controller's memory
    if done.returncode != 0:
        message = (done.stderr or done.stdout).strip().splitlines()
        raise ConfigError(f"{WHERE}: `{' '.join(command)}` failed: {message[-1] if message else done.returncode}"
                          f" - is the SLURM controller (slurmctld) running and reachable? ({what})")
    return done.stdout


def require_slurm() -> None:
    """Raise unless ``sbatch`` is on PATH (without it submitit would quietly run jobs locally)."""
    if shutil.which("sbatch") is None or shutil.which("srun") is None:
        raise ConfigError("executor slurm: `sbatch`/`srun` are not on PATH, so this is not a SLURM login node; "
                          "run where sbatch works, or use --executor local (or ray)")


@dataclass
class Partition:
    """What the biggest node of a SLURM partition offers: CPUs, memory (MB), GPUs, time limit (min)."""

    name: str
    default: bool
    cpus: int
    memory_mb: int
    gpus: int
    time_limit_min: float  # inf: no limit
    up: bool


def _number(text: str) -> int:
    match = re.match(r"\d+", text.strip())
    return int(match.group()) if match else 0


def _gpus(gres: str) -> int:
    """GPUs in a gres string such as ``gpu:2``, ``gpu:a100:4(S:0-1),shard:8`` or ``(null)``."""
    total = 0
    for item in gres.split(","):
        parts = item.split("(")[0].split(":")
        if parts[0] == "gpu":
            total += _number(parts[-1]) if len(parts) > 1 else 1
    return total


def _minutes(limit: str) -> float:
    """A SLURM time limit (``infinite``, ``D-HH:MM:SS``, ``HH:MM:SS``, ``MM:SS``, ``MM``) in minutes."""
    limit = limit.strip()
    if limit.lower() in ("infinite", "unlimited", "n/a", ""):
        return float("inf")
    days, _, clock = limit.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    if len(parts) == 1:
        hours, minutes, seconds = 0, parts[0], 0
    elif len(parts) == 2:
        hours, (minutes, seconds) = 0, parts
    else:
        hours, minutes, seconds = parts[-3:]
    return (int(days) if days else 0) * 1440 + hours * 60 + minutes + seconds / 60


def partitions() -> dict[str, Partition]:
    """Every partition ``sinfo`` reports, with its largest node's resources."""
    text = _run(["sinfo", "--noheader", "--format=%P|%c|%m|%G|%l|%a"], "reading the partitions")
    found: dict[str, Partition] = {}
    for line in text.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 6:
            continue
        name, cpus, memory, gres, limit, avail = fields
        default = name.endswith("*")
        name = name.rstrip("*")
        part = Partition(name, default, _number(cpus), _number(memory), _gpus(gres), _minutes(limit), avail == "up")
        if name in found:  # one line per node configuration: keep the largest
            old = found[name]
            part = Partition(name, default or old.default, max(old.cpus, part.cpus),
                             max(old.memory_mb, part.memory_mb), max(old.gpus, part.gpus),
                             max(old.time_limit_min, part.time_limit_min), old.up or part.up)
        found[name] = part
    return found


def requested_gpus(parameters: dict[str, Any]) -> int:
    """GPUs per node that ``parameters`` ask for."""
    gres = str(parameters.get("slurm_gres") or "")
    return max(int(parameters.get("gpus_per_node") or parameters.get("slurm_gpus_per_node") or 0),
               int(parameters.get("slurm_gpus_per_task") or 0), _gpus(gres))


def check_cluster(parameters: dict[str, Any]) -> Partition:
    """Check ``parameters`` (submitit's names) against the cluster; return the partition used.

    Raises ConfigError naming the setting when the partition does not exist or when no node of
    it could run one task (CPUs, memory, GPUs, time limit).
    """
    require_slurm()
    found = partitions()
    if not found:
        raise ConfigError(f"{WHERE}: sinfo reports no partition on this cluster")
    name = parameters.get("slurm_partition")
    if name is None:
        defaults = [p for p in found.values() if p.default]
        if not defaults:
            raise ConfigError(f"{WHERE}.partition: this cluster has no default partition; set one of "
                              f"{', '.join(sorted(found))}")
        part = defaults[0]
    elif str(name) not in found:
        close = difflib.get_close_matches(str(name), list(found), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{WHERE}.partition: no partition {name!r} on this cluster{hint}; partitions: "
                          f"{', '.join(p.name + ('*' if p.default else '') for p in found.values())}")
    else:
        part = found[str(name)]
    where = f"partition {part.name!r}"
    cpus = int(parameters.get("cpus_per_task") or parameters.get("slurm_cpus_per_task") or 1)
    if part.cpus and cpus > part.cpus:
        raise ConfigError(f"{WHERE}.cpus_per_task: {cpus} CPUs per run, but the largest node of {where} has "
                          f"{part.cpus}; set cpus_per_task (or training.threads) to at most {part.cpus}")
    mem_gb = parameters.get("mem_gb")
    if mem_gb and part.memory_mb and mem_gb * 1024 > part.memory_mb:
        raise ConfigError(f"{WHERE}.mem_gb: {mem_gb} GB per run, but the largest node of {where} has "
                          f"{part.memory_mb / 1024:.1f} GB")
    gpus = requested_gpus(parameters)
    if gpus > part.gpus:
        has = f"{part.gpus} GPUs per node" if part.gpus else "no GPUs"
        raise ConfigError(f"{WHERE}.gpus_per_node: {gpus} GPU(s) per run, but {where} has {has}; "
                          "remove gpus_per_node to run on CPUs, or choose a GPU partition")
    minutes = parameters.get("timeout_min") or parameters.get("slurm_time")
    if isinstance(minutes, (int, float)) and minutes > part.time_limit_min:
        raise ConfigError(f"{WHERE}.timeout_min: {minutes} min, but {where} allows at most "
                          f"{part.time_limit_min:.0f} min")
    return part


def queue(job_ids: list[str]) -> dict[str, tuple[str, str]]:
    """``{job id: (state, reason)}`` of the listed jobs that SLURM still knows (queued or running).

    Array tasks appear as ``ARRAY_TASK`` ids (``123_4``); a pending array shows as ``123_[4-7]``,
    expanded here.
    """
    if not job_ids:
        return {}
    arrays = sorted({j.split("_")[0] for j in job_ids})
    text = _run(["squeue", "--noheader", "--array", f"--jobs={','.join(arrays)}", "--format=%i|%T|%r"],
                "reading the queue", unknown_job_ok=True)
    known: dict[str, tuple[str, str]] = {}
    for line in text.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 3:
            continue
        job, state, reason = fields
        match = re.fullmatch(r"(\d+)_\[(.+)\]", job)
        if match:
            for block in match.group(2).split("%")[0].split(","):
                low, _, high = block.partition("-")
                for i in range(int(low), int(high or low) + 1):
                    known[f"{match.group(1)}_{i}"] = (state, reason)
        else:
            known[job] = (state, reason)
    return known


def lookup(listed: dict[str, tuple[str, str]], job_id: str) -> tuple[str, str] | None:
    """``job_id``'s entry in a :func:`queue` answer (a one-task array may show as ``ID`` or ``ID_0``)."""
    job_id = str(job_id)
    for key in (job_id, job_id.split("_")[0], f"{job_id}_0"):
        if key in listed:
            return listed[key]
    return None


def job_listed(job_id: str) -> bool | None:
    """Whether SLURM still lists ``job_id`` (queued, running, requeued); None when squeue cannot say."""
    if shutil.which("squeue") is None:
        return None
    try:
        listed = queue([job_id])
    except ConfigError:
        return None
    return lookup(listed, job_id) is not None


def cancel(job_ids: list[str]) -> None:
    """``scancel`` the jobs (best effort)."""
    if job_ids and shutil.which("scancel"):
        subprocess.run(["scancel", *job_ids], capture_output=True, timeout=COMMAND_TIMEOUT_S)

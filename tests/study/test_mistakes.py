"""Cluster mistakes end in a medtransfer error naming the setting, within seconds: SLURM checked
with fake ``sinfo``/``sbatch``/``squeue`` on PATH, Ray with a real local instance."""

import os
import socket
import time
import warnings

import pytest

from medtransfer.errors import ConfigError
from medtransfer.study import slurm
from medtransfer.study.config import ExecutorSpec
from medtransfer.study.executors import RayExecutor, SlurmExecutor, Task

from .fake_slurm import fake_slurm

LIMIT_S = 60


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    """A fake SLURM whose only partition ``cpu`` (default) has 4 CPUs, 8000 MB and no GPU."""
    def make(**options):
        bin_dir = fake_slurm(tmp_path / "fake", **options)
        monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
        return tmp_path / "fake"
    return make


def _task(tmp_path):
    return Task("synth/random-no-freeze/fold0", "{}", str(tmp_path / "run"))


def _fails(executor, match, tasks=None):
    began = time.monotonic()
    with pytest.raises(ConfigError, match=match):
        executor.run(tasks or [_task(executor.folder)])
    assert time.monotonic() - began < LIMIT_S


def test_bare_slurm_asks_for_no_gpu(cluster, tmp_path):
    fake = cluster()
    executor = ExecutorSpec(kind="slurm", slurm={}).build(tmp_path, threads=2)
    executor.check()
    jobs = executor.submit([_task(tmp_path)])
    assert jobs[0].job_id.startswith("4242")
    script = (fake / "log" / "sbatch.sh").read_text()
    assert "--cpus-per-task=2" in script and "--time=1440" in script
    assert "gpu" not in script.lower() and "gres" not in script


def test_too_many_cpus_is_an_error_and_the_pinned_default_is_fitted(cluster, tmp_path):
    cluster()
    _fails(ExecutorSpec(kind="slurm", slurm={"cpus_per_task": 64}).build(tmp_path),
           r"executor.slurm.cpus_per_task: 64 CPUs per run, but the largest node of partition 'cpu' has 4")
    fitted = ExecutorSpec(kind="slurm", slurm={}).build(tmp_path, threads=16)
    fitted.check()
    assert fitted.parameters["cpus_per_task"] == 4
    _fails(ExecutorSpec(kind="slurm", slurm={"mem_gb": 64}).build(tmp_path), r"executor.slurm.mem_gb: 64 GB")
    _fails(ExecutorSpec(kind="slurm", slurm={"gpus_per_node": 1}).build(tmp_path),
           r"executor.slurm.gpus_per_node: 1 GPU\(s\) per run, but partition 'cpu' has no GPUs")


def test_time_limit_of_the_partition(cluster, tmp_path):
    cluster(partitions="short*|4|8000|gpu:2|1:00:00|up\nlong|4|8000|gpu:a100:2(S:0),shard:4|2-00:00:00|up")
    assert slurm.partitions()["long"].time_limit_min == 2 * 1440 and slurm.partitions()["long"].gpus == 2
    _fails(ExecutorSpec(kind="slurm", slurm={"timeout_min": 120}).build(tmp_path, threads=1),
           r"timeout_min: 120 min, but partition 'short' allows at most 60 min")
    ExecutorSpec(kind="slurm", slurm={"partition": "long", "gpus_per_node": 2}).build(tmp_path, threads=1).check()


def test_no_sbatch_is_an_error_not_a_local_run(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    _fails(ExecutorSpec(kind="slurm", slurm={}).build(tmp_path), r"sbatch.*not on PATH.*--executor local")


def test_wrong_partition(cluster, tmp_path):
    cluster(partitions="cpu*|4|8000|(null)|infinite|up\ngpu-a100|8|64000|gpu:4|infinite|up")
    _fails(ExecutorSpec(kind="slurm", slurm={"partition": "gpu"}).build(tmp_path),
           r"executor.slurm.partition: no partition 'gpu' on this cluster \(did you mean '.*'\?\); "
           r"partitions: cpu\*, gpu-a100")


def test_stopped_controller(cluster, tmp_path, monkeypatch):
    cluster(sinfo_body="echo 'slurm_load_partitions: Unable to contact slurm controller (connect failure)' >&2\n"
                       "exit 1\n")
    _fails(ExecutorSpec(kind="slurm", slurm={}).build(tmp_path), r"Unable to contact slurm controller.*slurmctld")
    cluster(sinfo_body="sleep 30\n")
    monkeypatch.setattr(slurm, "COMMAND_TIMEOUT_S", 1.0)
    _fails(ExecutorSpec(kind="slurm", slurm={}).build(tmp_path), r"gave no answer in 1 s.*slurmctld")


def test_misspelt_or_mistyped_setting(tmp_path):
    with pytest.raises(ConfigError, match=r"executor.slurm.partiton: unknown SLURM setting; did you mean 'partition'"):
        ExecutorSpec(kind="slurm", slurm={"partiton": "gpu"}).build(tmp_path)
    with pytest.raises(ConfigError, match=r"executor.slurm.timeout_min: expected int, got '12h'"):
        ExecutorSpec(kind="slurm", slurm={"timeout_min": "12h"}).build(tmp_path)


def test_the_readme_example_gives_no_deprecation_warning(cluster, tmp_path):
    fake = cluster(partitions="gpu*|8|64000|gpu:1|infinite|up")
    spec = ExecutorSpec(kind="slurm", slurm={"partition": "gpu", "timeout_min": 720, "gpus_per_node": 1})
    executor = spec.build(tmp_path)
    assert executor.parameters["slurm_partition"] == "gpu" and "partition" not in executor.parameters
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        executor.check()
        executor.submit([_task(tmp_path)])
    assert "--partition=gpu" in (fake / "log" / "sbatch.sh").read_text()


def test_a_job_that_can_never_start_is_cancelled(cluster, tmp_path):
    fake = cluster(queue="4242|PENDING|PartitionConfig")
    executor = SlurmExecutor(tmp_path / "slurm", poll_s=0.2, cpus_per_task=1)
    _fails(executor, r"job 4242 can never start \(SLURM: PartitionConfig\)")
    assert "4242" in (fake / "log" / "scancel.txt").read_text()


def test_a_job_that_leaves_the_queue_without_a_result_fails(cluster, tmp_path):
    cluster(queue="")
    began = time.monotonic()
    (outcome,) = SlurmExecutor(tmp_path / "slurm", poll_s=0.2, cpus_per_task=1).run([_task(tmp_path)])
    assert outcome.state == "failed" and "left the queue without a result" in outcome.error
    assert time.monotonic() - began < LIMIT_S


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_wrong_ray_address(tmp_path):
    address = f"127.0.0.1:{_free_port()}"
    began = time.monotonic()
    with pytest.raises(ConfigError, match=rf"executor.ray_address '{address}' \(or RAY_ADDRESS\): no Ray head"):
        RayExecutor(address=address).run([_task(tmp_path)])
    with pytest.raises(ConfigError, match="no Ray head"):
        ExecutorSpec(kind="ray", ray_address=f"ray://{address}").build(tmp_path).run([_task(tmp_path)])
    assert time.monotonic() - began < LIMIT_S


@pytest.mark.slow
def test_ray_gpus_on_a_cpu_cluster(tmp_path):
    began = time.monotonic()
    executor = RayExecutor(gpus_per_run=1, num_cpus=1, num_gpus=0, include_dashboard=False, log_to_driver=False)
    with pytest.raises(ConfigError, match=r"executor.gpus_per_run: 1 GPU\(s\) per run, but the Ray cluster has no GPUs"):
        executor.run([_task(tmp_path)])
    assert time.monotonic() - began < LIMIT_S


def test_detach_needs_slurm(tmp_path):
    from medtransfer.study.executors import LocalExecutor
    from medtransfer.study.runner import run_study

    from .conftest import tiny_study

    with pytest.raises(ConfigError, match=r"--detach .* --executor slurm"):
        run_study(tiny_study(tmp_path), tmp_path / "out", executor=LocalExecutor([]), detach=True)

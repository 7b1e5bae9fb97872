"""Fake SLURM commands on PATH (shell scripts), for the checks that need no real scheduler.

``sinfo`` prints the partition lines given, ``sbatch`` copies the script it is given to
``LOG/sbatch.sh`` and prints a job id, ``squeue`` prints the queue lines given, ``scancel``
records its arguments.
"""

from pathlib import Path


def _script(path: Path, body: str) -> None:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


def fake_slurm(directory: Path, partitions: str = "cpu*|4|8000|(null)|infinite|up", queue: str = "",
               sinfo_body: str | None = None) -> Path:
    """Write the fake commands into ``directory/bin``; returns that directory."""
    bin_dir = directory / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    log = directory / "log"
    log.mkdir(exist_ok=True)
    (directory / "partitions.txt").write_text(partitions + "\n")
    (directory / "queue.txt").write_text(queue + ("\n" if queue else ""))
    _script(bin_dir / "sinfo", sinfo_body or f"cat {directory / 'partitions.txt'}\n")
    _script(bin_dir / "sbatch", f'cp "$1" {log / "sbatch.sh"}\necho "Submitted batch job 4242"\n')
    _script(bin_dir / "squeue", f"cat {directory / 'queue.txt'}\n")
    _script(bin_dir / "scancel", f'echo "$@" >> {log / "scancel.txt"}\n')
    _script(bin_dir / "srun", "exit 0\n")
    return bin_dir

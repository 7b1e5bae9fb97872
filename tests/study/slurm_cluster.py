"""A real single-node SLURM for the tests: slurmctld and slurmd on this machine, loopback only.

Everything lives in a temporary directory (config, state, spool, logs); the daemons listen on
127.0.0.1 at free ports and use ``auth/none`` (no munge key to create; nothing leaves the
machine). Clients find the cluster through ``SLURM_CONF``. Needs Debian's ``slurm-wlm``
(slurmctld, slurmd, sbatch, squeue, scontrol in /usr/sbin and /usr/bin) and root, since slurmd
starts jobs as their user; :func:`unavailable` says why a machine cannot run it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scontrol", "sinfo", "scancel", "srun")


def unavailable() -> str | None:
    """Why a real SLURM cannot be started here, or None."""
    for name in DAEMONS:
        if shutil.which(name) is None and not Path("/usr/sbin", name).exists():
            return f"{name} is not installed (apt-get install slurm-wlm)"
    for name in CLIENTS:
        if shutil.which(name) is None:
            return f"{name} is not on PATH"
    if os.geteuid() != 0:
        return "slurmd must run as root to start jobs"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _daemon(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin") / name)


class SlurmCluster:
    """A started cluster: ``env`` (SLURM_CONF) for its clients, ``stop()``/``start_controller()``."""

    def __init__(self, root: Path, cpus: int | None = None) -> None:
        self.root = Path(root)
        for sub in ("state", "spool", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.host = socket.gethostname().split(".")[0]
        self.cpus = cpus or os.cpu_count() or 1
        self.conf = self.root / "slurm.conf"
        memory_mb = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20 * 0.5)
        self.conf.write_text(f"""\
ClusterName=medtransfer-test
SlurmctldHost={self.host}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/none
CredType=cred/none
StateSaveLocation={self.root / 'state'}
SlurmdSpoolDir={self.root / 'spool'}
SlurmctldPidFile={self.root / 'slurmctld.pid'}
SlurmdPidFile={self.root / 'slurmd.pid'}
SlurmctldLogFile={self.root / 'log' / 'slurmctld.log'}
SlurmdLogFile={self.root / 'log' / 'slurmd.log'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/builtin
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
MinJobAge=600
SlurmctldTimeout=30
MessageTimeout=5
KillWait=30
NodeName={self.host} NodeAddr=127.0.0.1 NodeHostname={self.host} CPUs={self.cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName=debug Nodes={self.host} Default=YES MaxTime=INFINITE State=UP
""")
        self.env = {"SLURM_CONF": str(self.conf)}
        self.processes: dict[str, subprocess.Popen] = {}

    def _start(self, name: str) -> None:
        log = open(self.root / "log" / f"{name}.out", "ab")
        env = {**os.environ, **self.env}
        self.processes[name] = subprocess.Popen([_daemon(name), "-D", "-f", str(self.conf)], env=env,
                                                stdout=log, stderr=subprocess.STDOUT)

    def start(self, timeout: float = 90.0) -> "SlurmCluster":
        """Start both daemons and wait until the node is idle."""
        self.start_controller()
        self._start("slurmd")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.run("sinfo", "--noheader", "--format=%T").stdout.strip()
            if state in ("idle", "mixed", "allocated"):
                return self
            if any(p.poll() is not None for p in self.processes.values()):
                break
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"SLURM did not start (node state {state!r}); see {self.root / 'log'}")

    def start_controller(self) -> None:
        """(Re)start slurmctld."""
        self._start("slurmctld")

    def stop_controller(self) -> None:
        """Stop slurmctld (a cluster whose controller is down)."""
        self._stop("slurmctld")

    def _stop(self, name: str) -> None:
        process = self.processes.pop(name, None)
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def run(self, *command: str) -> subprocess.CompletedProcess:
        """A SLURM client command against this cluster."""
        return subprocess.run(list(command), capture_output=True, text=True, timeout=60,
                              env={**os.environ, **self.env})

    def stop(self, timeout: float = 60.0) -> None:
        """Cancel every job, wait until none is left (a job still ending when its slurmd stops
        leaves its slurmstepd behind for good), and stop both daemons."""
        if "slurmctld" in self.processes:
            self.run("scancel", "--full", "--user=root")
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                listed = self.run("squeue", "--noheader", "--format=%i %T")
                if listed.returncode != 0 or not listed.stdout.strip():
                    break
                time.sleep(0.5)
        for name in reversed(DAEMONS):
            self._stop(name)

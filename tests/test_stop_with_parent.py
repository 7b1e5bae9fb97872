"""A worker process ends with the process that started it: on Linux by the kernel's parent-death
signal, elsewhere by a thread that watches the parent; a parent already gone counts too."""

import os
import signal
import subprocess
import sys
import time

import pytest

# the worker: makes itself end with its parent (the kernel's way, or the watching thread's), then
# says so and waits for good; a parent pid given on the command line replaces its real parent
_WORKER = """
import os, signal, sys, time
from medtransfer import interrupts
if sys.argv[1] == "thread":
    interrupts._kernel_signals_parent_death = lambda signum: False
if sys.argv[1] == "ignoring":  # as a process started by a parent that ignores SIGTERM
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
interrupts.stop_with_parent(int(sys.argv[2]) if len(sys.argv) > 2 else os.getppid())
print("ready", flush=True)
while True:
    time.sleep(60)
"""

# the parent: starts the worker, passes its pid and its "ready" on, and waits to be killed
_PARENT = """
import subprocess, sys, time
worker = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]], stdout=subprocess.PIPE, text=True)
print(worker.pid, worker.stdout.readline().strip(), flush=True)
while True:
    time.sleep(60)
"""


def _gone(pid: int, timeout_s: float = 120.0) -> bool:
    """Whether process ``pid`` ends (or is a zombie nobody reaped) within ``timeout_s``; a hang
    guard, generous for a loaded machine: the test waits on the process's observed state."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                state = stat.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state in ("Z", "X"):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="reads process states from /proc")


@pytest.mark.parametrize("how", ["kernel", "thread", "ignoring"])
def test_a_worker_ends_when_its_parent_is_sigkilled(how):
    parent = subprocess.Popen([sys.executable, "-c", _PARENT, _WORKER, how], stdout=subprocess.PIPE, text=True)
    worker = None
    try:
        pid, ready = parent.stdout.readline().split()
        worker = int(pid)
        assert ready == "ready"
        parent.kill()
        parent.wait()
        assert _gone(worker), f"the worker {worker} outlived its parent"
    finally:
        parent.kill()
        if worker is not None and not _gone(worker, 0):
            os.kill(worker, signal.SIGKILL)


@pytest.mark.parametrize("how", ["kernel", "thread"])
def test_a_worker_whose_parent_died_before_it_asked_ends_at_once(how):
    """The parent that started it is not ``parent`` (it died, and the worker was handed to another)."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    worker = subprocess.Popen([sys.executable, "-c", _WORKER, how, dead.stdout.strip()], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert worker.wait(timeout=120) == -signal.SIGTERM
        assert worker.stdout.read() in ("", "ready\n")
    finally:
        worker.kill()
        worker.wait()

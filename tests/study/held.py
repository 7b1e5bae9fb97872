"""``medtransfer run`` in a subprocess that stops at a barrier, so that a test acts on a run that
certainly still runs (a kill, a status) instead of racing it to its end.

The driver trains its runs in its own process (one worker). After ``_Run.<method>`` returns for
the first time in a run directory that matches ``pattern`` (``Path.match``: a glob matched from
the right, e.g. ``synth@*/*/fold0``), it writes that directory to ``BARRIER/held`` and waits
until ``BARRIER/release`` exists, or until it is killed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

_CODE = """
import sys, time
from pathlib import Path
from medtransfer.training import run as training
barrier, method, pattern = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
original = getattr(training._Run, method)
def held(self, *args, **kwargs):
    result = original(self, *args, **kwargs)
    if not (barrier / "held").exists() and Path(self.dir.path).match(pattern):
        (barrier / "held.tmp").write_text(str(self.dir.path))
        (barrier / "held.tmp").rename(barrier / "held")
        while not (barrier / "release").exists():
            time.sleep(0.01)
    return result
setattr(training._Run, method, held)
from medtransfer.cli import main
sys.argv = ["medtransfer", *sys.argv[4:]]
main()
"""


def start_held(study_file: Path, out: Path, barrier: Path, method: str = "checkpoint",
               pattern: str = "*", stdout: int = subprocess.DEVNULL) -> subprocess.Popen:
    """Start ``medtransfer run STUDY_FILE --out OUT`` held at ``barrier`` (stderr piped; stdout
    discarded, or ``subprocess.PIPE``: text)."""
    barrier.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MEDTRANSFER_QUIET": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    command = [sys.executable, "-c", _CODE, str(barrier), method, pattern, "run", str(study_file), "--out", str(out)]
    return subprocess.Popen(command, env=env, stdout=stdout, stderr=subprocess.PIPE)


def wait_held(process: subprocess.Popen, barrier: Path, timeout_s: float = 300.0) -> Path:
    """The run directory the driver is held in, once it is; fails if the driver exits first."""
    deadline = time.monotonic() + timeout_s
    while not (barrier / "held").exists():
        if process.poll() is not None:
            raise AssertionError("the driver exited before its barrier: " + process.stderr.read().decode()[-2000:])
        if time.monotonic() > deadline:
            raise AssertionError(f"the driver did not reach its barrier in {timeout_s:.0f} s")
        time.sleep(0.05)
    return Path((barrier / "held").read_text())


def release(barrier: Path) -> None:
    """Let a held driver go on."""
    (barrier / "release").touch()

"""Run states read from disk: done, running, interrupted, failed, pending."""

import json
import os
import socket
import subprocess
import sys

from medtransfer.study.store import count_states, mark_failed, mark_running, run_status
from medtransfer.training.record import RunDir


def test_states_from_markers(tmp_path):
    assert run_status(tmp_path / "none", "r").state == "pending"

    done = tmp_path / "done"
    done.mkdir()
    (done / "config.json").write_text("{}")
    (done / "metrics.json").write_text(json.dumps({"auc": 0.75}))
    (done / "history.csv").write_text("phase,epoch\nprobe,0\nfinetune,0\nfinetune,1\n")
    RunDir(done).write_done()
    status = run_status(done, "r")
    assert (status.state, status.auc, status.epochs_done, status.phase) == ("done", 0.75, 3, "finetune")

    running = tmp_path / "running"
    running.mkdir()
    mark_running(running)  # this very process: alive
    assert run_status(running, "r").state == "running"

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    gone = tmp_path / "gone"
    gone.mkdir()
    (gone / "RUNNING").write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout), "started": 0}))
    assert run_status(gone, "r").state == "interrupted"

    failed = tmp_path / "failed"
    failed.mkdir()
    mark_running(failed)
    mark_failed(failed, "Traceback ...\nDataError: no images in /x")
    status = run_status(failed, "r")
    assert status.state == "failed" and status.error == "DataError: no images in /x"
    assert not (failed / "RUNNING").exists()

    counts = count_states([run_status(d, "r") for d in (done, running, gone, failed, tmp_path / "x")])
    assert counts == {"done": 1, "damaged": 0, "running": 1, "queued": 0, "interrupted": 1, "failed": 1,
                      "pending": 1}
    assert os.getpid() > 0

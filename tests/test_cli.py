"""The ``medtransfer`` entry point: exit codes and one-line errors, never a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest


def medtransfer(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medtransfer.cli", *args], capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("no-such-command",), 2, "No such command"),
        (("data", "check", "chest", "--root", "/nonexistent/chest_xray"), 2, "/nonexistent/chest_xray"),
    ],
)
def test_errors_exit_nonzero_with_a_message_and_no_traceback(args, code, message):
    done = medtransfer(*args)
    assert done.returncode == code
    assert message in done.stderr + done.stdout
    assert "Traceback" not in done.stderr


def test_a_command_that_exits_1_makes_the_process_exit_1(tmp_path):
    not_weights = tmp_path / "notes.pth"
    not_weights.write_text("these are not weights")
    done = medtransfer("weights", "info", str(not_weights))
    assert done.returncode == 1
    assert "loads: no" in done.stdout
    assert "Traceback" not in done.stderr


def test_help_exits_0():
    done = medtransfer("--help")
    assert done.returncode == 0
    assert "demo" in done.stdout


def test_version():
    import medtransfer as package

    done = medtransfer("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"medtransfer {package.__version__}"


def test_an_error_keeps_long_words_and_brackets_whole(tmp_path):
    """A narrow terminal: the message is not broken inside a path (nor its [brackets] taken as markup)."""
    import os

    long_root = tmp_path / ("x" * 120) / "[chest]"
    done = subprocess.run([sys.executable, "-m", "medtransfer.cli", "data", "check", "chest", "--root", str(long_root)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "60"})
    assert done.returncode == 2
    assert str(long_root) in done.stderr

"""``medtransfer similarity`` checks its options before it loads or computes anything, and never
overwrites a file it did not write."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from medtransfer.analysis import compare
from medtransfer.analysis.compare import MAX_SIZE, OUT_HEADER, check_options
from medtransfer.cli import app
from medtransfer.errors import ConfigError

runner = CliRunner()


@pytest.fixture
def nothing_computed(monkeypatch):
    """compare_models fails the test if it is reached: the options must be refused before."""
    def computed(*args, **kwargs):
        raise AssertionError("compare_models ran before the options were checked")

    monkeypatch.setattr(compare, "compare_models", computed)


def _similarity(*options: str):
    return runner.invoke(app, ["similarity", "random", "random", "--target", "synthetic", *options])


@pytest.mark.parametrize("options, message", [
    (["--threads", "0"], "--threads 0: expected at least 1 thread"),
    (["--threads", "-2"], "--threads -2: expected at least 1 thread"),
    (["--images", "0"], "--images 0: expected at least 2 images"),
    (["--images", "1"], "--images 1: expected at least 2 images"),
    (["--size", "100000"], f"--size 100000: expected an image side of 8 to {MAX_SIZE} pixels"),
    (["--size", str(MAX_SIZE + 1)], f"--size {MAX_SIZE + 1}: expected an image side of 8 to {MAX_SIZE} pixels"),
    (["--size", "4"], "--size 4: expected an image side of 8 to"),
    (["--device", "bogus"], "device 'bogus' is not a device; expected auto, cpu, cuda, cuda:N"),
    (["--device", "cuda:x"], "device 'cuda:x' is not a device"),
])
def test_bad_options_are_refused_before_computing(nothing_computed, options, message):
    result = _similarity(*options)
    assert isinstance(result.exception, ConfigError), result.output
    assert str(result.exception).startswith(message), str(result.exception)


def test_cuda_without_cuda_is_refused_before_computing(nothing_computed, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device in ("cuda", "cuda:1"):
        result = _similarity("--device", device)
        assert isinstance(result.exception, ConfigError), result.output
        assert str(result.exception) == (f"device '{device}': CUDA is not available on this machine "
                                         "(torch.cuda.is_available() is False); expected cpu or auto")


def test_a_gpu_the_machine_lacks_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    check_options(device="cuda:1")
    with pytest.raises(ConfigError, match=r"device 'cuda:2': this machine has 2 GPU\(s\), cuda:0\.\.cuda:1"):
        check_options(device="cuda:2")


def test_out_never_overwrites_a_file_medtransfer_did_not_write(tmp_path, nothing_computed):
    mine = tmp_path / "notes.csv"
    mine.write_text("patient,comment\n1,keep me\n")
    result = _similarity("--out", str(mine))
    assert isinstance(result.exception, ConfigError), result.output
    assert str(result.exception).startswith(f"--out {mine}: exists and is not a similarity table medtransfer wrote")
    assert mine.read_text() == "patient,comment\n1,keep me\n"
    result = _similarity("--out", str(tmp_path))
    assert isinstance(result.exception, ConfigError) and "is a folder" in str(result.exception)


def test_out_may_replace_a_table_it_wrote_or_create_a_new_file(tmp_path):
    table = tmp_path / "similarity.csv"
    table.write_text(f"{OUT_HEADER},rows\nconv1,cca,0.5,0.1,10\n")
    check_options(out=table)
    check_options(out=tmp_path / "new" / "table.csv")

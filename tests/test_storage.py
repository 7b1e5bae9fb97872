"""A full disk, a read-only or unreadable folder: one sentence naming the path and the system's
reason ("No space left on device"), never a library's "unexpected pos" with no file named, and no
half-written file left where a reader would take it for the real one."""

from __future__ import annotations

import errno
import io
import os

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

import medtransfer.atomic as atomic
from medtransfer.analysis.figures import save_figure
from medtransfer.atomic import check_folder, temp_files, write_atomic, write_text_atomic
from medtransfer.cli import app
from medtransfer.data import PixelCache, load_manifest
from medtransfer.errors import StorageError

runner = CliRunner()


class _FullDisk(io.RawIOBase):
    """A file that accepts ``room`` bytes, then fails every write as a full disk does."""

    def __init__(self, real, room: int) -> None:
        self.real, self.room = real, room

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        data = bytes(data)
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.real.write(data)

    def fileno(self) -> int:
        return self.real.fileno()

    def close(self) -> None:
        self.real.close()
        super().close()


@pytest.fixture
def full_disk(monkeypatch):
    """Every file write_atomic opens from now on holds at most ``room`` bytes (default 100)."""
    real_fdopen = os.fdopen

    def install(room: int = 100) -> None:
        monkeypatch.setattr(atomic.os, "fdopen", lambda fd, mode="r", *a, **k: _FullDisk(real_fdopen(fd, mode), room))

    return install


WRITERS = {
    "torch.save (checkpoints, weights)": (lambda handle: torch.save({"w": torch.zeros(10_000)}, handle), "last.pt"),
    "text (json, csv, yaml)": (lambda handle: handle.write(b"x" * 5000), "auc.csv"),
    "numpy": (lambda handle: np.save(handle, np.zeros(10_000)), "array.npy"),
}


@pytest.mark.parametrize("writer", list(WRITERS))
def test_a_full_disk_names_the_file_and_keeps_the_old_one(tmp_path, full_disk, writer):
    write, name = WRITERS[writer]
    target = tmp_path / "study" / name
    write_text_atomic(target, "the finished file")
    full_disk()
    with pytest.raises(StorageError) as raised:
        write_atomic(target, write)
    message = str(raised.value)
    assert message.startswith(f"No space left on device: cannot write {target} (free some space"), message
    assert "unexpected pos" not in message
    assert target.read_text() == "the finished file" and temp_files(target.parent) == []


@pytest.mark.parametrize("fmt", ["png", "pdf", "svg"])
def test_figures_are_written_atomically(tmp_path, full_disk, monkeypatch, fmt):
    from medtransfer.analysis import figures

    monkeypatch.setattr(figures, "_formats", [fmt])
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    save_figure(fig, tmp_path, "curve")
    whole = (tmp_path / f"curve.{fmt}").read_bytes()
    assert len(whole) > 1000
    full_disk(room=500)
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    with pytest.raises(StorageError, match=rf"No space left on device: cannot write {tmp_path / f'curve.{fmt}'}"):
        save_figure(fig, tmp_path, "curve")
    assert (tmp_path / f"curve.{fmt}").read_bytes() == whole and temp_files(tmp_path) == []
    assert not plt.get_fignums()  # closed even when the save failed


def test_a_full_disk_while_building_the_pixel_cache_is_named(tmp_path, monkeypatch):
    manifest = load_manifest("synthetic", None, n_patients=4, images_per_patient=2, size=16)

    def no_room(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", no_room)
    with pytest.raises(StorageError, match=r"No space left on device: cannot write .*pixels\.npy \(free some space"):
        PixelCache.build(manifest, 16, cache_dir=tmp_path / "cache")
    assert not any((tmp_path / "cache").iterdir())  # the half-built cache is removed
    monkeypatch.undo()
    assert len(PixelCache.build(manifest, 16, cache_dir=tmp_path / "cache")) == 8


def _denied(monkeypatch, folder, modes: int) -> None:
    """Make ``folder`` refuse ``modes`` (os.R_OK, os.W_OK), also for root, who bypasses permission bits."""
    real = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, *a, **k: False if os.path.abspath(path) == str(folder)
                        and mode & modes else real(path, mode, *a, **k))


def test_check_folder(tmp_path, monkeypatch):
    check_folder(tmp_path / "new" / "deeper", write=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(StorageError, match=r"study folder .*file is a file; expected a folder"):
        check_folder(tmp_path / "file", write=False, what="study folder")
    _denied(monkeypatch, tmp_path, os.W_OK)
    with pytest.raises(StorageError, match=rf"Permission denied: out \(its parent {tmp_path} cannot be written\) "
                                           rf"cannot be written: {tmp_path / 'new'}"):
        check_folder(tmp_path / "new", write=True, what="out")
    check_folder(tmp_path, write=False)  # reading is allowed


def _study_file(tmp_path):
    study = {"name": "s", "targets": [{"name": "synth", "dataset": "synthetic", "options": {"n_patients": 12,
             "size": 16}, "size": 16}], "sources": [{"name": "random"}], "strategies": ["no-freeze"],
             "k_folds": 4, "training": {"epochs": 1, "split_fractions": [0.75, 0.1, 0.15],
                                              "cache_dir": str(tmp_path / "cache")}}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def test_run_into_a_read_only_folder_is_refused_before_any_work(tmp_path, monkeypatch):
    study = _study_file(tmp_path)
    out = tmp_path / "ro"
    out.mkdir()
    _denied(monkeypatch, out, os.W_OK)
    result = runner.invoke(app, ["run", str(study), "--out", str(out)])
    assert isinstance(result.exception, StorageError), result.output
    assert str(result.exception).startswith(f"Permission denied: the study folder (--out) cannot be written: {out}")
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("command", [["status"], ["analyze"]])
def test_an_unreadable_study_folder_is_named(tmp_path, monkeypatch, command):
    from medtransfer.study.store import read_study_file

    out = tmp_path / "study"
    out.mkdir()
    (out / "study.yaml").write_text("name: s\n")
    _denied(monkeypatch, out, os.R_OK)
    result = runner.invoke(app, [*command, str(out)])  # the command line's own check of its argument
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    assert "is not readable" in " ".join(result.output.replace("│", " ").split())
    with pytest.raises(StorageError, match=rf"^Permission denied: the study folder cannot be read: {out} "):
        read_study_file(out)  # what status, analyze and the report read first


def test_the_command_line_turns_a_stray_os_error_into_one_line(tmp_path, monkeypatch, capsys):
    from medtransfer import cli

    def fail(**_):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(tmp_path / "x.csv"))

    monkeypatch.setattr(cli, "app", fail)
    with pytest.raises(SystemExit) as exited:
        cli.main()
    assert exited.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert err == f"error: Read-only file system: {tmp_path / 'x.csv'} (choose a folder on a writable disk)"


def test_a_full_disk_while_unpacking_pcam_names_the_copy_not_the_download(tmp_path, monkeypatch):
    import shutil

    from medtransfer.data.datasets import pcam
    from tests.data.test_loaders_arrays import _pcam

    _pcam(tmp_path / "gz", n=8, gz=True)

    def full(src, dst, length=0):
        dst.write(src.read(100))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    real = shutil.copyfileobj
    monkeypatch.setattr(pcam.shutil, "copyfileobj", full)
    with pytest.raises(StorageError, match=rf"^No space left on device: cannot write {tmp_path / 'unpacked'}/"
                                           r"camelyonpatch_level_2_split_train_x-\d+-\d+\.h5 \(free some space"):
        load_manifest("pcam", tmp_path / "gz", unpack_dir=tmp_path / "unpacked")
    assert list((tmp_path / "unpacked").iterdir()) == []  # no half-unpacked file left
    monkeypatch.setattr(pcam.shutil, "copyfileobj", real)
    assert len(load_manifest("pcam", tmp_path / "gz", unpack_dir=tmp_path / "unpacked")) == 12


# Writes that do not go through medtransfer.atomic, each with the reason it is safe.
_NOT_ATOMIC = {
    ("study/claims.py", "fdopen"): "the RUNNING claim: created with O_EXCL, its existence is the lock",
    ("models/download.py", "fdopen"): "a download into its own temporary file, renamed once its md5 matches",
    ("data/datasets/pcam.py", "open"): "an unpacked HDF5 into its own temporary file, renamed once whole",
    ("study/cli.py", "open"): "the SLURM driver's log, appended to (a log, read as one)",
    ("data/cache.py", "save"): "ImageHashes.save: write_atomic inside",
    ("data/leakage.py", "save"): "ImageHashes.save: write_atomic inside",
}


def _direct_writes(tree) -> list[tuple[int, str]]:
    """Calls in ``tree`` that write a file in place: ``to_csv(path)``, ``np.save(path)``,
    ``savefig(path)``, ``torch.save(x, path)``, ``Image.save(path)``, ``write_text``/``write_bytes``,
    ``open``/``fdopen`` for writing. A first argument named ``handle`` is the atomic writer's file."""
    import ast

    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        args = node.args
        if name == "save" and not isinstance(node.func, ast.Attribute):
            continue  # a function of ours named save (figures.save), not a library's writer
        torch_save = name == "save" and getattr(node.func.value, "id", "") == "torch"
        target = (args[1] if len(args) > 1 else None) if torch_save else (args[0] if args else None)
        to_handle = isinstance(target, ast.Name) and target.id == "handle"
        if name in ("write_text", "write_bytes"):
            found.append((node.lineno, name))
        elif name in ("to_csv", "savefig", "savez", "save", "imwrite", "to_json", "to_parquet") and target is not None \
                and not to_handle:
            found.append((node.lineno, name))
        elif name in ("open", "fdopen"):
            modes = [a for a in args[1:2]] + [k.value for k in node.keywords if k.arg == "mode"]
            if any(isinstance(m, ast.Constant) and isinstance(m.value, str) and set(m.value) & set("wax")
                   for m in modes):
                found.append((node.lineno, name))
    return found


def test_every_output_goes_through_the_atomic_writer():
    """A grep the tree must pass: no output of medtransfer is written in place (a full disk or a
    kill would leave a half-written table, figure or array where a reader takes it for whole)."""
    import ast
    from pathlib import Path

    import medtransfer

    root = Path(medtransfer.__file__).parent
    offenders = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel == "atomic.py":
            continue
        for line, name in _direct_writes(ast.parse(path.read_text())):
            if (rel, name) not in _NOT_ATOMIC:
                offenders.append(f"{rel}:{line} {name}")
    assert offenders == []


def test_the_grep_finds_a_direct_write():
    import ast

    source = ("frame.to_csv(out / 'a.csv', index=False)\nnp.save(out / 'x.npy', a)\nfig.savefig(path)\n"
              "p.write_text('x')\nopen(p, 'w')\ntorch.save(obj, path)\n"
              "write_atomic(p, lambda handle: np.save(handle, a))\nframe.to_csv(index=False)\nopen(p)\n")
    assert [name for _, name in _direct_writes(ast.parse(source))] == \
        ["to_csv", "save", "savefig", "write_text", "open", "save"]


def test_a_full_disk_while_exporting_filters_names_the_file_and_leaves_none(tmp_path, full_disk):
    out = tmp_path / "filters"
    full_disk(room=100)
    result = runner.invoke(app, ["weights", "filters", "random", "--out", str(out)])
    assert isinstance(result.exception, StorageError), result.output
    assert str(result.exception).startswith(f"No space left on device: cannot write {out / 'random_conv1.npy'}")
    assert list(out.iterdir()) == []


def test_the_analysis_tables_are_written_atomically(tmp_path, full_disk):
    import pandas as pd

    from medtransfer.analysis.run import _write_csv

    frame = pd.DataFrame({"a": range(1000)})
    _write_csv(frame, tmp_path / "auc.csv")
    whole = (tmp_path / "auc.csv").read_text()
    full_disk(room=100)
    with pytest.raises(StorageError, match=rf"^No space left on device: cannot write {tmp_path / 'auc.csv'}"):
        _write_csv(frame.assign(b=1), tmp_path / "auc.csv")
    assert (tmp_path / "auc.csv").read_text() == whole and temp_files(tmp_path) == []

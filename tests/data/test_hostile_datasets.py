"""Datasets that used to give a silently wrong manifest: one file written two ways, ``1`` vs ``1.0``,
the same bytes in two classes, one class only, an empty class folder."""

from __future__ import annotations

import shutil

import pytest
from typer.testing import CliRunner

from medtransfer.cli import app
from medtransfer.data import load_manifest
from medtransfer.errors import DataError

from .helpers import write_image

runner = CliRunner()


def _csv(tmp_path, lines: list[str]):
    for i, name in enumerate(["a/b.png", "a/c.png", "d/e.png", "d/f.png"]):
        write_image(tmp_path / name, seed=i)
    (tmp_path / "list.csv").write_text("path,label\n" + "\n".join(lines) + "\n")
    return tmp_path / "list.csv"


def test_csv_path_written_two_ways_is_one_file_and_its_conflict_is_found(tmp_path):
    table = _csv(tmp_path, ["./a/b.png,0", "a/c.png,0", "d/e.png,1", "a/b.png,1", "d//f.png,1"])
    with pytest.raises(DataError, match=r"a/b\.png: conflicting labels '0' \(line 2\) and '1'"):
        load_manifest("csv", table)
    table = _csv(tmp_path, ["./a/b.png,0", "a/b.png,0", f"{tmp_path}/a/c.png,0", "d/e.png,1", "d/./f.png,1"])
    manifest = load_manifest("csv", table)
    assert sorted(manifest.image_ids) == sorted(["a/b.png", f"{tmp_path}/a/c.png", "d/e.png", "d/f.png"])
    # the same file relative and absolute is one file too
    table = _csv(tmp_path, ["a/b.png,0", f"{tmp_path}/a/b.png,1", "a/c.png,0", "d/e.png,1"])
    with pytest.raises(DataError, match="conflicting labels"):
        load_manifest("csv", table)


def test_csv_labels_1_and_1_0_are_one_class(tmp_path):
    table = _csv(tmp_path, ["a/b.png,0", "a/c.png,0.0", "d/e.png,1", "d/f.png,1.0"])
    manifest = load_manifest("csv", table)
    assert manifest.classes == ["0", "1"]
    assert manifest.class_counts() == {"0": 2, "1": 2}
    table = _csv(tmp_path, ["a/b.png,0", "a/c.png,0.5", "d/e.png,1", "d/f.png,1"])
    with pytest.raises(DataError, match=r"list\.csv:3.*label '0\.5' is a number that is not an integer"):
        load_manifest("csv", table)


def _folder(tmp_path):
    for c in ("cat", "dog"):
        for i in range(3):
            write_image(tmp_path / c / f"{c}{i}.png", seed=10 * (c == "dog") + i)
    return tmp_path


def test_identical_bytes_under_two_class_folders_are_reported(tmp_path):
    root = _folder(tmp_path)
    shutil.copy(root / "cat" / "cat0.png", root / "dog" / "copy.png")
    with pytest.raises(DataError, match=r"identical bytes to .*cat0\.png \(cat\), but labelled dog"):
        load_manifest("folder", root, verify=True)
    result = runner.invoke(app, ["data", "check", "folder", "--root", str(root)])
    assert result.exit_code == 1 and "the same image in two classes" in result.output
    # the same bytes twice in one class is not a labelling conflict
    shutil.copy(root / "cat" / "cat1.png", root / "cat" / "again.png")
    (root / "dog" / "copy.png").unlink()
    assert len(load_manifest("folder", root, verify=True)) == 7


def test_single_class_dataset_is_refused_at_data_check(tmp_path):
    table = _csv(tmp_path, ["a/b.png,x", "a/c.png,x", "d/e.png,x"])
    result = runner.invoke(app, ["data", "check", "csv", "--root", str(table)])
    assert isinstance(result.exception, DataError), result.output  # the command line prints it, exit 2
    assert "every image (3) is in class 'x'" in str(result.exception)
    assert "at least two classes" in str(result.exception)


def test_an_empty_class_folder_does_not_add_a_class(tmp_path):
    root = _folder(tmp_path)
    (root / "empty").mkdir()
    with pytest.raises(DataError, match=r"class\(es\) \['empty'\] have no images.*-o \"classes=\[cat, dog\]\""):
        load_manifest("folder", root)
    assert load_manifest("folder", root, classes=["cat", "dog"]).classes == ["cat", "dog"]

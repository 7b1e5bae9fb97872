"""``medtransfer data check`` and ``medtransfer data folds`` through the root app."""

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from medtransfer.cli import app

from .helpers import truncate, write_image

runner = CliRunner()


def _tree(root):
    for cls, n in (("a", 3), ("b", 2)):
        for i in range(n):
            write_image(root / cls / f"{i}.png", seed=i + 10 * (cls == "b"))  # no image in both classes
    return root


def test_check_json(tmp_path):
    _tree(tmp_path)
    result = runner.invoke(app, ["data", "check", "folder", "--root", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["images"] == 5 and report["classes"] == {"a": 3, "b": 2} and report["groups"] == 5
    assert report["skipped"] == [] and report["problems"] == []


def test_check_reports_bad_files(tmp_path):
    _tree(tmp_path)
    bad = truncate(tmp_path / "b" / "1.png", 0.3)
    result = runner.invoke(app, ["data", "check", "folder", "--root", str(tmp_path), "--json"])
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert report["images"] == 4 and report["problems"][0]["path"] == str(bad)
    result = runner.invoke(app, ["data", "check", "folder", "--root", str(tmp_path), "--skip-bad"])
    assert result.exit_code == 0 and "1.png" in result.output and "truncated" in result.output


def test_check_options_and_synthetic():
    result = runner.invoke(app, ["data", "check", "synthetic", "-o", "n_patients=6", "-o", "n_classes=3",
                                 "-o", "size=16", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["images"] == 24 and report["groups"] == 6 and len(report["classes"]) == 3


def test_folds_command(tmp_path):
    out = tmp_path / "folds.csv"
    result = runner.invoke(app, ["data", "folds", "synthetic", "--out", str(out), "-o", "n_patients=40",
                                 "-o", "size=8"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out)
    assert len(table) == 5 * 160 and set(table["split"]) == {"train", "val", "test"}
    # another k keeps train (k-1)/k and the default's validation : test proportion (it used to be refused)
    result = runner.invoke(app, ["data", "folds", "synthetic", "--out", str(out), "--k", "4", "-o", "n_patients=40",
                                 "-o", "size=8"])
    assert result.exit_code == 0, result.output
    share = pd.read_csv(out).groupby("split").size() / (4 * 160)
    assert share["train"] == pytest.approx(0.75) and share["test"] / share["val"] == pytest.approx(3, rel=0.5)


def test_cache_command(tmp_path):
    _tree(tmp_path / "images")
    result = runner.invoke(app, ["data", "cache", "folder", "--root", str(tmp_path / "images"), "--size", "12",
                                 "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    assert "5 images of 12x12 px" in result.output
    assert len(list((tmp_path / "cache").glob("folder-12px-nearest-*/pixels.npy"))) == 1


def test_folds_from_author_splits_check_labels_unless_told_not_to(tmp_path):
    from medtransfer.errors import DataError

    _tree(tmp_path / "images")
    splits = tmp_path / "splits"
    splits.mkdir()
    rows = {"train": [("a/0.png", "a"), ("a/1.png", "a"), ("b/0.png", "b")], "val": [("a/2.png", "a")],
            "test": [("b/1.png", "a")]}  # b/1.png is class b in the folder tree
    for split, entries in rows.items():
        pd.DataFrame(entries, columns=["path", "class"]).to_csv(splits / f"{split}_fold1.csv")
    base = ["data", "folds", "folder", "--root", str(tmp_path / "images"), "--authors", str(splits)]
    result = runner.invoke(app, [*base, "--out", str(tmp_path / "checked.csv")])
    assert isinstance(result.exception, DataError), result.output
    assert "test_fold1.csv" in str(result.exception) and "b/1.png" in str(result.exception)
    assert not (tmp_path / "checked.csv").exists()
    result = runner.invoke(app, [*base, "--out", str(tmp_path / "unchecked.csv"), "--no-check-labels"])
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(tmp_path / "unchecked.csv")) == 5


def test_skip_bad_as_an_option_merges_with_the_flag(tmp_path):
    """`-o skip_bad=true` (a study target's spelling, which the tool advises) is --skip-bad; a
    contradiction or a command flag given as -o is refused with a sentence, never a TypeError."""
    _tree(tmp_path)
    truncate(tmp_path / "b" / "1.png", 0.3)
    root = ["data", "check", "folder", "--root", str(tmp_path)]
    for extra in (["-o", "skip_bad=true"], ["-o", "skip_bad=true", "--skip-bad"], ["--skip-bad"]):
        result = runner.invoke(app, [*root, *extra])
        assert result.exit_code == 0 and "truncated" in result.output, (extra, result.output)
    assert runner.invoke(app, [*root, "-o", "skip_bad=false"]).exit_code == 1
    for extra, message in ((["-o", "skip_bad=false", "--skip-bad"], "disagree"),
                           (["-o", "skip_bad=maybe"], "expected true or false"),
                           (["-o", "workers=2"], "use --workers")):
        result = runner.invoke(app, [*root, *extra])
        assert not isinstance(result.exception, TypeError)
        assert message in str(result.exception), (extra, result.exception)
    write_image(tmp_path / "b" / "2.png", seed=12)  # class b keeps 2 images without the bad one: enough for 2 folds
    folds = runner.invoke(app, ["data", "folds", "folder", "--root", str(tmp_path), "--out", str(tmp_path / "f.csv"),
                                "--k", "2", "-o", "skip_bad=true"])
    assert folds.exit_code == 0 and "b/1.png" not in (tmp_path / "f.csv").read_text(), folds.output

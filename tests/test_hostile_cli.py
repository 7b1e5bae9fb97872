"""Hostile command lines and inputs, run through the real entry point (``medtransfer.cli.main``):
each must end in one ``error:`` line naming the file or option and what was expected (exit 2),
never a traceback, and must leave the user's files as they were."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import yaml
from PIL import Image

from medtransfer import cli


def _images(root, n=4):
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def _study(tmp_path, **changes):
    study = {"name": "s", "targets": [{"name": "synth", "dataset": "synthetic", "options": {"n_patients": 12,
             "size": 16}, "size": 16}], "sources": [{"name": "random"}], "strategies": ["no-freeze"],
             "k_folds": 4, "training": {"epochs": 1, "split_fractions": [0.75, 0.1, 0.15],
                                        "cache_dir": str(tmp_path / "cache")}}
    for key, value in changes.items():
        if key == "training":
            study["training"].update(value)
        elif key == "target":
            study["targets"][0].update(value)
        else:
            study[key] = value
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def _user_file(path, text="my own notes\n"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _bytes(path, data):
    path.write_bytes(data)
    return path


# (case id, setup(tmp_path) -> (argv, files that must keep their content), words the error line must hold)
CASES = [
    ("folder group_pattern not a regex",
     lambda t: (["data", "check", "folder", "--root", _images(t / "ds"), "-o", "group_pattern=(unclosed"], []),
     ["group_pattern '(unclosed'", "not a regular expression"]),
    ("loader option of the wrong type",
     lambda t: (["data", "check", "synthetic", "-o", "n_patients=abc"], []),
     ["option n_patients='abc'", "expected an integer"]),
    ("loader option a list where a number goes",
     lambda t: (["data", "check", "synthetic", "-o", "size=[1, 2]"], []),
     ["option size=[1, 2]", "expected an integer"]),
    ("data folds --k 0",
     lambda t: (["data", "folds", "synthetic", "--out", t / "f.csv", "--k", "0"], []),
     ["k=0", "expected k >= 2"]),
    ("data folds --out a folder",
     lambda t: (["data", "folds", "synthetic", "--out", t], []),
     ["--out", "is a folder"]),
    ("data folds --out a file of the user's",
     lambda t: (["data", "folds", "synthetic", "--out", _user_file(t / "mine.csv")], [t / "mine.csv"]),
     ["mine.csv", "is not a folds file", "never overwrites"]),
    ("weights export over a file of the user's",
     lambda t: (["weights", "export", "random", _user_file(t / "mine.pth")], [t / "mine.pth"]),
     ["mine.pth", "is not a port medtransfer wrote", "never overwrites"]),
    ("weights export over a folder",
     lambda t: (["weights", "export", "random", t], []),
     ["is a folder", "expected the path of the .pth file"]),
    ("weights filters --out a file",
     lambda t: (["weights", "filters", "random", "--out", _user_file(t / "f")], [t / "f"]),
     ["--out", "is a file; expected a folder"]),
    ("weights filters over a PNG of the user's",
     lambda t: (["weights", "filters", "random", "--out", t / "o"], [_user_file(t / "o" / "gabor_reference.png")]),
     ["gabor_reference.png exists and was not written by `medtransfer weights filters`"]),
    ("study file of binary garbage",
     lambda t: (["run", _bytes(t / "s.yaml", bytes(range(128, 256))), "--out", t / "out"], []),
     ["s.yaml", "not a text file"]),
    ("study lr 'inf'",
     lambda t: (["run", _study(t, training={"lr": "inf"}), "--out", t / "out"], []),
     ["lr", "finite number"]),
    ("study image size beyond the limit",
     lambda t: (["run", _study(t, target={"size": 100000}), "--out", t / "out"], []),
     ["size", "less than or equal to 1024"]),
    ("study training size beyond the limit",
     lambda t: (["run", _study(t, training={"size": 5000}), "--out", t / "out"], []),
     ["size", "less than or equal to 1024"]),
    ("study dataset option of the wrong type",
     lambda t: (["run", _study(t, target={"options": {"n_patients": "many"}}), "--out", t / "out"], []),
     ["option n_patients='many'", "expected an integer"]),
    ("study whose grid has no run",
     lambda t: (["run", _study(t, strategies=["freeze"]), "--out", t / "out"], []),
     ["no run", "random"]),
]


@pytest.mark.parametrize(("setup", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_case_ends_in_one_named_error(tmp_path, monkeypatch, capsys, setup, words):
    argv, kept = setup(tmp_path)
    before = {path: path.read_bytes() for path in kept}
    argv = [str(a) for a in argv]
    monkeypatch.setattr(sys, "argv", ["medtransfer", *argv])
    with pytest.raises(SystemExit) as exited:
        cli.main()  # anything but SystemExit (a traceback) fails the test here
    err = " ".join(capsys.readouterr().err.split())
    assert exited.value.code == 2 and err.startswith("error: "), err
    for word in words:
        assert word in err, err
    assert {path: path.read_bytes() for path in kept} == before


@pytest.mark.parametrize("name", ["folder.pt", "folder.h5"])
def test_weights_info_on_a_folder_says_it_is_a_folder(tmp_path, monkeypatch, capsys, name):
    (tmp_path / name).mkdir()
    monkeypatch.setattr(sys, "argv", ["medtransfer", "weights", "info", str(tmp_path / name)])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    out = " ".join(capsys.readouterr().out.split())
    assert exited.value.code == 1 and f"loads: no - weights file {tmp_path / name} is a folder; expected a file" in out


def test_weights_filters_may_replace_what_it_wrote(tmp_path, monkeypatch):
    for _ in range(2):
        monkeypatch.setattr(sys, "argv", ["medtransfer", "weights", "filters", "random", "--out", str(tmp_path)])
        cli.main()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gabor_reference.png", "random_conv1.npy", "random_conv1.png"]

"""Advice in messages can be run as written, and messages speak of what the user did."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import click
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

import medtransfer
from medtransfer.cli import app
from medtransfer.data import load_manifest
from medtransfer.data.folds import import_author_splits
from medtransfer.errors import DataError

from .helpers import truncate, write_image
from .test_loaders_files import _ddti_tree, _ddti_xml

runner = CliRunner()
SOURCE = Path(medtransfer.__file__).parent


def _commands() -> dict[str, set[str]]:
    """Every command path of the command line ("data folds", "run", ...) -> its option names."""
    found: dict[str, set[str]] = {}

    def walk(command: click.Command, path: str) -> None:
        found[path] = {name for p in command.params for name in (*p.opts, *p.secondary_opts)}
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, f"{path} {name}".strip())

    walk(typer.main.get_command(app), "")
    return found


def _message_texts(tree: ast.AST):
    """The string pieces of every message: arguments of ``raise ...Error(...)``, ``print`` and
    ``console.print`` calls (flags of other tools, e.g. SLURM's, appear elsewhere)."""
    for node in ast.walk(tree):
        call = node.exc if isinstance(node, ast.Raise) else node if isinstance(node, ast.Call) else None
        if not isinstance(call, ast.Call):
            continue
        func = call.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        if isinstance(node, ast.Raise) or name in ("print", "echo", "warn"):
            for piece in ast.walk(call):
                if isinstance(piece, ast.Constant) and isinstance(piece.value, str):
                    yield piece.value


def test_every_flag_and_command_named_in_a_message_exists():
    commands = _commands()
    flags = set().union(*commands.values()) | {"--help"}
    bad = []
    for file in SOURCE.rglob("*.py"):
        for text in _message_texts(ast.parse(file.read_text())):
            other_tools = re.sub(r"`(ray|sbatch|squeue|scancel|pip) [^`]*`", "", text)
            for match in re.finditer(r"(?<![\w-])(--[a-z][a-z0-9-]*)", other_tools):
                if match.group(1) not in flags:
                    bad.append(f"{file.relative_to(SOURCE)}: {match.group(1)}")
            for match in re.finditer(r"`medtransfer ([a-z][a-z-]*)(?: ([a-z][a-z-]*))?|medtransfer (study) (run)", text):
                one, two = match.group(1) or match.group(3), match.group(2) or match.group(4)
                if one in commands or f"{one} {two}" in commands:
                    continue
                bad.append(f"{file.relative_to(SOURCE)}: medtransfer {one} {two or ''}")
    assert not bad, bad


def test_thyroid_as_distributed_loads_with_one_documented_switch(tmp_path):
    root = _ddti_tree(tmp_path / "ddti")
    (root / "50.xml").write_text(_ddti_xml("50", "3", []))  # a case XML with no image beside it
    truncate(root / "11_1.jpg", 0.3)  # an unreadable image
    with pytest.raises(DataError, match=r"skip_bad: true.*--skip-bad") as info:
        load_manifest("thyroid", root, verify=True)
    assert "50.xml: no images" in str(info.value)
    manifest = load_manifest("thyroid", root, skip_bad=True)  # options: {skip_bad: true} in a study file
    assert "11_1.jpg" not in set(manifest.image_ids) and len(manifest) == 7
    assert {Path(s.path).name for s in manifest.skipped if s.problem} == {"50.xml", "11_1.jpg"}


def _busi(root):
    base = root / "Dataset_BUSI_with_GT"
    for folder, n in (("benign", 3), ("malignant", 2), ("normal", 40)):
        for i in range(1, n + 1):
            write_image(base / folder / f"{folder} ({i}).png", seed=100 * len(folder) + i)
    return base


def test_data_check_counts_files_left_out_by_an_option(tmp_path):
    _busi(tmp_path)
    result = runner.invoke(app, ["data", "check", "breast", "--root", str(tmp_path), "-o", "normal=exclude"])
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert output.count("left out") == 1
    assert "40 files left out: normal image (normal='exclude')" in output


def test_authors_import_says_the_option_left_a_file_out(tmp_path):
    _busi(tmp_path)
    manifest = load_manifest("breast", tmp_path, normal="exclude")
    authors = tmp_path / "authors"
    authors.mkdir()
    rows = {"train": ["benign (1).png", "malignant (1).png"], "val": ["benign (2).png"],
            "test": ["normal (3).png", "malignant (2).png"]}
    for split, names in rows.items():
        pd.DataFrame({"path": [f"x/{n}" for n in names]}).to_csv(authors / f"{split}_fold1.csv", index=False)
    with pytest.raises(DataError, match=r"normal \(3\)\.png': the local image exists but the loader left it out "
                                        r"\(.*normal image \(normal='exclude'\)\)"):
        import_author_splits(authors, manifest, check_labels=False)


def test_label_check_advice_names_the_real_flag(tmp_path):
    _busi(tmp_path)
    manifest = load_manifest("breast", tmp_path)
    authors = tmp_path / "authors"
    authors.mkdir()
    for split in ("train", "val", "test"):
        pd.DataFrame({"path": ["benign (1).png"]}).to_csv(authors / f"{split}_fold1.csv", index=False)
    with pytest.raises(DataError, match="--no-check-labels") as info:
        import_author_splits(authors, manifest)
    assert "check_labels=False" not in str(info.value)

"""``medtransfer data options NAME`` and what ``data check`` says each option did, as counts."""

import inspect
import json

import pytest

from typer.testing import CliRunner

from medtransfer.cli import app
from medtransfer.data import registry
from medtransfer.errors import DataError

from .test_loaders_files import _busi_tree

runner = CliRunner()


def test_every_loader_keyword_is_declared_once():
    """The declarations and the loaders' signatures cannot drift apart."""
    for name, (module_name, _) in registry.LOADERS.items():
        keywords = set(registry._keywords(registry._module(name)))
        assert keywords == set(registry.OPTIONS[module_name]), name
        for option in registry.loader_options(name):
            assert option.effect.strip(), (name, option.name)
    assert set(registry.OPTIONS) == {module for module, _ in registry.LOADERS.values()}


def test_options_lists_defaults_and_fixed_values():
    options = {o.name: o for o in registry.loader_options("pcam-small")}
    assert options["subset"].default == 10_000 and options["subset"].fixed
    assert options["seed"].default == 0 and not options["seed"].fixed
    module = registry._module("breast")
    assert {o.name: o.default for o in registry.loader_options("breast")} == {
        "normal": inspect.signature(module.load).parameters["normal"].default}


def test_options_command():
    result = runner.invoke(app, ["data", "options", "breast"])
    assert result.exit_code == 0, result.output
    assert "normal" in result.output and "benign" in result.output and "exclude" in result.output
    result = runner.invoke(app, ["data", "options", "pcam"])
    assert "[train, valid, test]" in result.output  # not eaten as markup
    result = runner.invoke(app, ["data", "options", "chest"])
    assert result.exit_code == 0 and "no options" in result.output
    result = runner.invoke(app, ["data", "options", "nope"])
    assert result.exit_code != 0


def test_unknown_option_points_to_the_options_command(tmp_path):
    _busi_tree(tmp_path)
    with pytest.raises(DataError, match="medtransfer data options breast"):
        registry.load_manifest("breast", tmp_path, normals="exclude")


def test_check_reports_merged_excluded_and_ignored_as_counts(tmp_path):
    _busi_tree(tmp_path)  # 3 benign, 2 malignant, 2 normal, each with a mask, plus one *_mask_1 per folder
    result = runner.invoke(app, ["data", "check", "breast", "--root", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["classes"] == {"benign": 5, "malignant": 2}
    assert report["notes"] == {"normal images merged into benign (normal='benign')": 2,
                               "segmentation mask files ignored (*_mask.png: not images of the dataset)": 10}
    result = runner.invoke(app, ["data", "check", "breast", "--root", str(tmp_path), "-o", "normal=exclude"])
    assert result.exit_code == 0, result.output
    assert "2 files left out: normal image (normal='exclude')" in result.output
    assert "10 segmentation mask files ignored" in result.output
    assert "merged into" not in result.output
    result = runner.invoke(app, ["data", "check", "breast", "--root", str(tmp_path), "-o", "normal=class"])
    assert "2 normal images as a third class (normal='class')" in result.output

"""A model factory `module:function` whose module cannot be imported: the error says why and
how to fix the import path (a file in the working directory is not on the command's sys.path)."""

import sys

import pytest

from medtransfer.models.resolve import _import_factory
from medtransfer.errors import ConfigError


def test_a_factory_in_the_working_directory_gets_a_pythonpath_hint(tmp_path, monkeypatch):
    (tmp_path / "mynets_f26.py").write_text("def make():\n    return None\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path), ".")])
    with pytest.raises(ConfigError, match=r"mynets_f26\.py is in the working directory.*PYTHONPATH=\. medtransfer"):
        _import_factory("mynets_f26:make")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert callable(_import_factory("mynets_f26:make"))


def test_a_missing_module_gets_the_general_hint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"no_such_module_f26.*install its package, or add the folder"):
        _import_factory("no_such_module_f26:make")

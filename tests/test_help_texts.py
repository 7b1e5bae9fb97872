"""Every command's --help shows every parameter's help text whole (rich markup eats a bare
``[word]``, leaving a stray " ."), and defaults the way typer shows them: ``[default: ...]``."""

import re

import pytest
import typer
from typer.testing import CliRunner

from medtransfer.cli import app

ROOT = typer.main.get_command(app)


def _commands(command, path=()):  # noqa: ANN001, ANN202 - click commands, typer may vendor click
    children = getattr(command, "commands", None)
    if isinstance(children, dict):
        for name, child in children.items():
            yield from _commands(child, (*path, name))
    else:
        yield path, command


COMMANDS = dict(_commands(ROOT))


def _plain(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[│╭╮╰╯─]", " ", text)).strip()


def _help(path) -> str:  # noqa: ANN001
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "400", "TERMINAL_WIDTH": "400"})
    assert result.exit_code == 0, result.output
    return _plain(result.output)


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=" ".join)
def test_help_texts_are_shown_whole(path):
    shown = _help(path)
    assert not re.search(r" \.( |$)", shown), shown
    for param in COMMANDS[path].params:
        text = getattr(param, "help", None)
        if text:
            assert _plain(text.replace("\\[", "[")) in shown, (param.name, text)


@pytest.mark.parametrize(("path", "option"), [(("analyze",), "--split"), (("analyze",), "--threads"),
                                              (("analyze",), "--device"), (("run",), "--track"),
                                              (("similarity",), "--rows")])
def test_defaults_shown(path, option):
    shown = _help(path)
    after = shown[shown.index(option):]
    assert re.match(rf"{option} <[^>]+> (?:(?!--)[^\[])*\[default: [^\]]+\]", after), after[:200]

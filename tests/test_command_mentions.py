"""Every command that medtransfer's own strings (messages, help, docstrings) tell a user to run,
written as `medtransfer ...` in backticks, exists: its words resolve through the command groups,
and ``--help`` on it succeeds through typer's CliRunner."""

import ast
import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import medtransfer
from medtransfer.cli import app

SRC = Path(medtransfer.__file__).resolve().parent
MENTION = re.compile(r"`+medtransfer ([^`]+)`")
WORD = re.compile(r"^[a-z][a-z0-9-]*$")


def _mentions() -> dict[str, list[str]]:
    """command words -> where they are mentioned (file:line)."""
    found: dict[str, list[str]] = {}
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                for match in MENTION.finditer(node.value):
                    words = []
                    for token in match.group(1).split():
                        if not WORD.match(token):
                            break
                        words.append(token)
                    where = f"{path.relative_to(SRC)}:{node.lineno}"
                    found.setdefault(" ".join(words), []).append(where)
    return found


MENTIONS = _mentions()
ROOT = typer.main.get_command(app)


def _is_group(command) -> bool:  # noqa: ANN001 - typer may vendor its own click: by interface
    return isinstance(getattr(command, "commands", None), dict)


def _names(command) -> set[str]:  # noqa: ANN001
    if not _is_group(command):
        return set()
    return set(command.commands) | {n for c in command.commands.values() for n in _names(c)}


def _resolve(words: list[str]) -> list[str]:
    """The command path of ``words`` (its leading words that name commands); AssertionError for
    a word that names no subcommand of a group, or a leaf command followed by the name of
    another command (``similarity layers``: ``layers`` is a command of ``weights``)."""
    node, path = ROOT, []
    every = _names(ROOT)
    for word in words:
        if _is_group(node):
            assert word in node.commands, f"`medtransfer {' '.join(path + [word])}`: no command {word!r} " \
                                          f"(commands of {' '.join(['medtransfer', *path])}: {sorted(node.commands)})"
            node = node.commands[word]
            path.append(word)
        else:
            assert word not in every, f"`medtransfer {' '.join(words)}`: {' '.join(path)} takes no subcommand " \
                                      f"{word!r} (a command of another group)"
    return path


def test_mentions_were_found():
    assert len(MENTIONS) >= 10 and "data options" in MENTIONS


@pytest.mark.parametrize("words", sorted(MENTIONS))
def test_every_mentioned_command_exists(words):
    try:
        path = _resolve(words.split())
    except AssertionError as error:
        raise AssertionError(f"{error}; mentioned at {', '.join(MENTIONS[words])}") from None
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, (words, MENTIONS[words], result.output)


def test_a_wrong_mention_is_caught():
    with pytest.raises(AssertionError, match="takes no subcommand 'layers'"):
        _resolve(["similarity", "layers"])
    with pytest.raises(AssertionError, match="no command 'nope'"):
        _resolve(["data", "nope"])

"""Commands of ``medtransfer.study`` for the command line (registered by ``medtransfer.cli``)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this package's commands to the root app (none yet)."""

"""The ``medtransfer`` command line: thin - parse, call the library, print.

Each package contributes its commands through a ``register(app)`` function in its own ``cli``
module, so that this file stays a list and heavy imports happen only inside the commands.
"""

from __future__ import annotations

import os

# OpenMP threads that spin while waiting make PyTorch on a shared CPU many times slower (measured:
# a ResNet50 step 12 s with 2 spinning threads, 2.6 s with passive ones, on 2 busy cores). torch
# reads the variable when it loads OpenMP, so it is set before any command imports torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import importlib  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402

import typer  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.markup import escape  # noqa: E402

from medtransfer.atomic import storage_error  # noqa: E402
from medtransfer.errors import MedtransferError  # noqa: E402

app = typer.Typer(
    name="medtransfer",
    help="Transfer learning for medical imaging: fine-tune ResNet50 from ImageNet, RadImageNet or "
    "random init, and compare hidden representations and mistakes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

COMMAND_MODULES = (
    "medtransfer.demo",
    "medtransfer.similarity.cli",
    "medtransfer.models.cli",
    "medtransfer.data.cli",
    "medtransfer.study.cli",
    "medtransfer.analysis.cli",
)

def _print_version(value: bool) -> None:
    if value:
        from medtransfer import __version__

        typer.echo(f"medtransfer {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print medtransfer's version and exit."),
) -> None:
    pass


for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)


def _format_warning(message, category, filename, lineno, line=None) -> str:  # noqa: ANN001
    """medtransfer's own warnings as one ``warning:`` line for the user; others as Python shows them."""
    if category.__module__.startswith("medtransfer"):
        return f"warning: {message}\n"
    return _python_format_warning(message, category, filename, lineno, line)


_python_format_warning = warnings.formatwarning


def main() -> None:
    """Entry point: run the app, turning medtransfer's input errors into one clear line."""
    warnings.formatwarning = _format_warning
    try:
        # Without standalone mode click returns (not raises) the code of a command's typer.Exit.
        result = app(standalone_mode=False)
    except MedtransferError as error:
        # soft_wrap: no line breaks inserted, so that a URL or a path in the message stays whole
        Console(stderr=True).print(f"[bold red]error:[/] {escape(str(error))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except typer.Abort:
        sys.exit(1)
    except OSError as error:  # a full disk, a read-only or foreign folder met where no code expected it
        message = storage_error(error.filename or "(no file named)", error, "")
        Console(stderr=True).print(f"[bold red]error:[/] {escape(str(message))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except Exception as error:
        # Usage errors (unknown command, bad option) arrive here in non-standalone mode; typer
        # vendors its own click, so they are recognised by their interface, not their class.
        if callable(getattr(error, "show", None)) and isinstance(getattr(error, "exit_code", None), int):
            error.show()
            sys.exit(error.exit_code)
        raise
    if isinstance(result, int) and result != 0:
        sys.exit(result)


if __name__ == "__main__":
    main()

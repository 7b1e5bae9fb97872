"""Commands of ``medtransfer.similarity`` for the command line (registered by ``medtransfer.cli``)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add ``medtransfer measures`` (the measure registry as a table) to the root app."""

    @app.command()
    def measures() -> None:
        """The similarity measures: name, kind, range, invariances, whether they get an image-bootstrap
        interval, and where each definition comes from."""
        from medtransfer.console import output_console
        from rich.table import Table

        from medtransfer.similarity.registry import MEASURES

        table = Table(title="similarity measures (docs/measures.md)")
        for column in ("name", "kind", "range", "invariances", "interval", "definition"):
            table.add_column(column)
        for m in MEASURES.values():
            table.add_row(m.name, m.kind, f"[{m.low:g}, {m.high:g}]", ", ".join(m.invariances),
                          "yes" if m.from_grams is not None else "no", m.reference)
        output_console().print(table)

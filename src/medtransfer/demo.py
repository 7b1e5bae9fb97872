"""``medtransfer demo``: what medtransfer does, offline, on embedded synthetic data with known answers.

Stage one shows the similarity core on activations related by known maps, where the right
answer is known in closed form. Later stages (the study on the synthetic dataset, the analysis and
the report) are added as those parts exist.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer
from rich.console import Console
from rich.table import Table


def similarity_showcase(seed: int = 0) -> list[tuple[str, str, float, float]]:
    """CCA and CKA on synthetic activations whose relation is known.

    Returns rows ``(case, expected, cca_mean, linear_cka)``.
    """
    from medtransfer.similarity import cca, linear_cka

    rng = np.random.default_rng(seed)
    n, p = 4000, 32
    x = rng.standard_normal((n, p))
    q, _ = np.linalg.qr(rng.standard_normal((p, p)))
    ill = rng.standard_normal((p, p)) @ np.diag(np.logspace(0, -10, p))  # condition ~1e10
    cases = [
        ("X vs X", "CCA 1, CKA 1", x),
        ("X vs X @ rotation", "CCA 1, CKA 1", x @ q),
        ("X vs X @ A, cond(A)=1e10", "CCA 1, CKA < 1", x @ ill),
        ("X vs 1e4 * X (scale)", "CCA 1, CKA 1", 1e4 * x),
        ("X vs independent noise", f"CCA ~ sqrt-ish of p/n, CKA ~ {p / n:.3f}", rng.standard_normal((n, p))),
    ]
    return [(name, expected, cca(x, y).mean, linear_cka(x, y)) for name, expected, y in cases]


def run_demo(out: Path, console: Console) -> None:
    """Run every stage of the demo that exists, writing results under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    table = Table(title="Similarity of synthetic activations with known answers")
    for column in ("case", "expected", "mean CCA", "linear CKA"):
        table.add_column(column)
    rows = similarity_showcase()
    for name, expected, cca_mean, cka in rows:
        table.add_row(name, expected, f"{cca_mean:.6f}", f"{cka:.6f}")
    console.print(table)
    with open(out / "similarity_showcase.csv", "w") as handle:
        handle.write("case,cca_mean,linear_cka\n")
        for name, _, cca_mean, cka in rows:
            handle.write(f'"{name}",{cca_mean:.10f},{cka:.10f}\n')


def register(app: typer.Typer) -> None:
    """Add ``medtransfer demo`` to the root app."""

    @app.command()
    def demo(
        out: Path = typer.Option(Path("demo-study"), "--out", help="Directory for the demo's results."),
    ) -> None:
        """Run medtransfer end to end on embedded synthetic data, fully offline."""
        run_demo(out, Console())

"""``medtransfer demo``: what medtransfer does, offline, on embedded synthetic data with known answers.

Stage one shows the similarity core on activations related by known maps, where the right
answer is known in closed form. Stage two runs the shipped ``configs/demo.yaml`` study on the
synthetic dataset: two sources pretrained on other synthetic tasks, random init, both strategies,
three folds, then the Table 2 summary. Stage three analyses the study (layer-wise CCA and CKA,
prediction similarity, Figure 6 statistics) and writes ``report.html``. Re-running the demo into
the same directory resumes it.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import typer
from rich import box
from rich.console import Console
from rich.table import Table

from medtransfer.atomic import write_text_atomic


def similarity_showcase(seed: int = 0) -> list[tuple[str, str, float, float]]:
    """CCA and CKA on synthetic activations whose relation is known.

    Returns rows ``(case, expected, cca_mean, linear_cka)``.
    """
    from medtransfer.similarity import cca, linear_cka

    rng = np.random.default_rng(seed)
    n, p = 4000, 32
    x = rng.standard_normal((n, p))
    q, _ = np.linalg.qr(rng.standard_normal((p, p)))
    v, _ = np.linalg.qr(rng.standard_normal((p, p)))
    ill = q @ np.diag(np.logspace(0, -10, p)) @ v.T  # condition number exactly 1e10, mixes neurons
    cases = [
        ("X vs X", "CCA 1, CKA 1", x),
        ("X vs X @ rotation", "CCA 1, CKA 1", x @ q),
        ("X vs X @ A, cond(A)=1e10", "CCA 1, CKA < 1", x @ ill),
        ("X vs 1e4 * X (scale)", "CCA 1, CKA 1", 1e4 * x),
        ("X vs independent noise", f"mean rho^2 ~ q/n = {p / n:.4f}", rng.standard_normal((n, p))),
    ]
    return [(name, expected, cca(x, y).mean, linear_cka(x, y)) for name, expected, y in cases]


def demo_study():  # noqa: ANN201 - a StudyConfig
    """The shipped demo study, with its pixel cache inside the study directory (``cache/``, a path
    relative to it, so that the demo directory can be moved or copied)."""
    from medtransfer.study.config import StudyConfig, shipped_config

    study = StudyConfig.from_yaml(shipped_config("demo"))
    return study.model_copy(update={"training": {**study.training, "cache_dir": "cache"}})


def study_stage(out: Path, console: Console) -> None:
    """Stage two: fine-tune every run of the demo study and print its Table 2."""
    from medtransfer.study.table2 import table2, table2_wide
    from medtransfer.study.runner import run_study
    from medtransfer.training.record import study_results_file

    study = demo_study()
    console.print(f"[bold]Fine-tuning[/]: {study.description}")
    began = time.perf_counter()
    report = run_study(study, out)
    elapsed = time.perf_counter() - began
    console.print(f"{report.total} runs ({report.skipped} already done, {report.finished} now, "
                  f"{len(report.failed)} failed) in {elapsed:.0f} s")
    for failure in report.failed:
        console.print(f"[red]failed[/] {failure.run_id}: {failure.error}", highlight=False)
    import pandas as pd

    table = table2_wide(table2(pd.read_csv(out / study_results_file("auc.csv"))), mark_best=False)
    # no vertical rules and no wrapping: five "78.0 ± 13.1" cells fit an 80-column terminal
    summary = Table(title="Test AUC x 100, mean ± std over folds (paper Table 2 layout)", box=box.SIMPLE_HEAD)
    summary.add_column("target", no_wrap=True)
    for column in table.columns:
        summary.add_column(str(column).replace(" / ", "\n", 1), no_wrap=True)
    for target, row in table.iterrows():
        summary.add_row(str(target), *row.tolist())
    console.print(summary)
    console.print(f"results: {out / study_results_file('auc.csv')}, {out / study_results_file('table2.md')}",
                  highlight=False)


def run_demo(out: Path, console: Console) -> None:
    """Run every stage of the demo that exists, writing results under ``out``."""
    table = Table(title="Similarity of synthetic activations with known answers")
    for column in ("case", "expected", "mean CCA", "linear CKA"):
        table.add_column(column)
    rows = similarity_showcase()
    for name, expected, cca_mean, cka in rows:
        table.add_row(name, expected, f"{cca_mean:.6f}", f"{cka:.6f}")
    console.print(table)
    study_stage(out, console)  # first: it refuses a folder of the user's own files before anything is written
    lines = ["case,cca_mean,linear_cka", *(f'"{name}",{cca_mean:.10f},{cka:.10f}' for name, _, cca_mean, cka in rows)]
    write_text_atomic(out / "similarity_showcase.csv", "\n".join(lines) + "\n")
    analysis_stage(out, console)


def analysis_stage(out: Path, console: Console) -> None:
    """Stage three: every table and figure of the paper from the demo's own runs, in one report."""
    from medtransfer.analysis import analyze

    console.print("[bold]Analysis[/]: layer-wise CCA and CKA, prediction similarity, figures")
    began = time.perf_counter()
    report = analyze(out)
    console.print(f"report: {report} ({time.perf_counter() - began:.0f} s)", highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``medtransfer demo`` to the root app."""

    @app.command()
    def demo(
        out: Path = typer.Option(Path("demo-study"), "--out", help="Directory for the demo's results."),
    ) -> None:
        """Run medtransfer end to end on embedded synthetic data, fully offline."""
        run_demo(out, Console())

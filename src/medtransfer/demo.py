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
from medtransfer.console import output_console
from medtransfer.vocabulary import RANDOM


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


def demo_study(name: str = "demo", corruptions: str | None = None):  # noqa: ANN201 - a StudyConfig
    """The shipped demo study ``name`` (``demo``, ``demo-feature-reuse``), with its pixel cache inside
    the study directory (``cache/``, a path relative to it, so that the demo directory can be moved
    or copied); ``corruptions`` ("all" or names) adds the evaluation under image corruptions after
    training (off by default: the whole suite on the demo's 15 runs costs about 35 s of one core per
    corruption on 2 busy cores)."""
    from medtransfer.study.config import EvaluateSpec, StudyConfig, shipped_config

    study = StudyConfig.from_yaml(shipped_config(name))
    update = {"training": {**study.training, "cache_dir": "cache"}}
    if corruptions:
        update["evaluate"] = EvaluateSpec(corruptions=corruptions, targets=study.evaluate.targets)
    return study.model_copy(update=update)


def study_stage(out: Path, console: Console, corruptions: str | None = None) -> None:
    """Stage two: fine-tune every run of the demo study and print its Table 2."""
    from medtransfer.study.table2 import table2, table2_wide
    from medtransfer.study.runner import run_study
    from medtransfer.training.record import AUC_TABLE, TABLE2_MD, study_results_file

    study = demo_study(corruptions=corruptions)
    console.print(f"[bold]Fine-tuning[/]: {study.description}"
                  + (f", then each run under corruptions ({', '.join(study.evaluate.corruptions)})" if corruptions else ""))
    began = time.perf_counter()
    report = run_study(study, out)
    elapsed = time.perf_counter() - began
    console.print(f"{report.total} runs ({report.skipped} already done, {report.finished} now, "
                  f"{len(report.failed)} failed) in {elapsed:.0f} s")
    for failure in report.failed:
        console.print(f"[red]failed[/] {failure.run_id}: {failure.error}", highlight=False)
    import pandas as pd

    table = table2_wide(table2(pd.read_csv(out / study_results_file(AUC_TABLE))), mark_best=False)
    # no vertical rules and no wrapping: five "78.0 ± 13.1" cells fit an 80-column terminal
    summary = Table(title="Test AUC x 100, mean ± std over folds (paper Table 2 layout)", box=box.SIMPLE_HEAD)
    summary.add_column("target", no_wrap=True)
    for column in table.columns:
        summary.add_column(str(column).replace(" / ", "\n", 1), no_wrap=True)
    for target, row in table.iterrows():
        summary.add_row(str(target), *row.tolist())
    console.print(summary)
    console.print(f"results: {out / study_results_file(AUC_TABLE)}, {out / study_results_file(TABLE2_MD)}",
                  highlight=False)


def run_demo(out: Path, console: Console, corruptions: str | None = None) -> None:
    """Run every stage of the demo that exists, writing results under ``out``."""
    table = Table(title="Similarity of synthetic activations with known answers")
    for column in ("case", "expected", "mean CCA", "linear CKA"):
        table.add_column(column)
    rows = similarity_showcase()
    for name, expected, cca_mean, cka in rows:
        table.add_row(name, expected, f"{cca_mean:.6f}", f"{cka:.6f}")
    console.print(table)
    study_stage(out, console, corruptions)  # first: it refuses a folder of the user's own files before anything is written
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


def feature_reuse_demo(out: Path, console: Console):  # noqa: ANN201 - a DataFrame
    """``demo --feature-reuse``: train ``configs/demo-feature-reuse.yaml`` into ``out``, then write
    its transfer-depth table (``analysis/transfer_depth.csv``) and figure, print them with the
    sentence saying where the AUC stops rising, and return the table (AUC x100)."""
    from medtransfer.analysis.figures import configure
    from medtransfer.analysis.inventory import read_study
    from medtransfer.analysis.tables import run_aucs
    from medtransfer.analysis.transfer_depth import depth_figure, depth_table, plateau_sentence
    from medtransfer.study.runner import run_study
    from medtransfer.training.record import ANALYSIS_DIR, FIGURES_DIR

    study = demo_study("demo-feature-reuse")
    console.print(f"[bold]Fine-tuning[/]: {study.description}")
    began = time.perf_counter()
    report = run_study(study, out)
    console.print(f"{report.total} runs ({report.skipped} already done, {report.finished} now, "
                  f"{len(report.failed)} failed) in {time.perf_counter() - began:.0f} s")
    for failure in report.failed:
        console.print(f"[red]failed[/] {failure.run_id}: {failure.error}", highlight=False)
    runs = read_study(out)
    aucs, _ = run_aucs(runs)
    table = depth_table(runs, aucs, RANDOM)
    figures = out / ANALYSIS_DIR / FIGURES_DIR
    figures.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / ANALYSIS_DIR / "transfer_depth.csv", table.to_csv(index=False))
    configure(["png"], ["synth_a", RANDOM])
    shown = Table(title="Test AUC x 100 against the stages transferred (mean, 95% t interval over folds)",
                  box=box.SIMPLE_HEAD)
    for column in ("source", "arm", "depth", "AUC", "interval"):
        shown.add_column(column, no_wrap=True)
    for row in table.itertuples(index=False):
        depth = "" if row.depth != row.depth else f"{row.depth:.0f}"
        shown.add_row(row.source, row.arm, depth, f"{row.mean:.1f}", f"[{row.low:.1f}, {row.high:.1f}]")
    console.print(shown)
    for target in dict.fromkeys(table["target"]):
        png = depth_figure(table, target, figures)
        console.print(plateau_sentence(table, target), highlight=False)
        console.print(f"figure: {png}", highlight=False)
    return table


def register(app: typer.Typer) -> None:
    """Add ``medtransfer demo`` to the root app."""

    @app.command()
    def demo(
        out: Path = typer.Option(None, "--out", help="Directory for the demo's results (default demo-study, "
                                 "or demo-feature-reuse with --feature-reuse)."),
        corruptions: str = typer.Option(None, "--corruptions", help="Also evaluate every run under image "
                                        "corruptions (all, or comma-separated names; each adds about half a "
                                        "minute) and report robustness. \\[default: none]"),
        feature_reuse: bool = typer.Option(False, "--feature-reuse", help="Instead: the transfer-depth curve "
                                           "(partial transfer, Mean-Var, random init) on the synthetic task."),
    ) -> None:
        """Run medtransfer end to end on embedded synthetic data, fully offline."""
        if feature_reuse:
            feature_reuse_demo(out or Path("demo-feature-reuse"), output_console())
        else:
            run_demo(out or Path("demo-study"), output_console(), corruptions)

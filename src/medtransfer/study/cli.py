"""Commands of ``medtransfer.study`` for the command line (registered by ``medtransfer.cli``):
``medtransfer run STUDY.yaml --out DIR`` and ``medtransfer status DIR``."""

from __future__ import annotations

from pathlib import Path

import typer


def _study_path(study: str) -> Path:
    from medtransfer.errors import ConfigError
    from medtransfer.study.config import shipped_config

    path = Path(study)
    if path.exists():
        return path
    if path.suffix == "" and "/" not in study:
        return shipped_config(study)
    raise ConfigError(f"study file {study} does not exist; give a YAML path or a shipped study "
                      "(paper, mei-replication, demo)")


def print_status(out: Path, console) -> dict[str, int]:  # noqa: ANN001 - a rich Console
    """Print a study's state: a bar of finished runs, counts per state, and every unfinished run."""
    from rich.table import Table

    from medtransfer.study.store import count_states, status

    statuses = status(out)
    counts = count_states(statuses)
    total = len(statuses)
    filled = round(40 * counts["done"] / max(total, 1))
    console.print(f"[bold]{out}[/]: {counts['done']}/{total} runs done", highlight=False)
    console.print(f"[green]{'█' * filled}[/][dim]{'░' * (40 - filled)}[/] {100 * counts['done'] / max(total, 1):.0f}%")
    console.print("  ".join(f"{state}: {n}" for state, n in counts.items()))
    unfinished = [s for s in statuses if s.state != "done"]
    if unfinished:
        table = Table("run", "state", "phase", "epochs", "error")
        for item in unfinished:
            table.add_row(item.run_id, item.state, item.phase, str(item.epochs_done), item.error[:80])
        console.print(table)
    return counts


def register(app: typer.Typer) -> None:
    """Add ``run`` and ``status`` to the root app."""

    @app.command("run")
    def run_command(
        study: str = typer.Argument(..., help="Study YAML file, or a shipped study: paper, mei-replication, demo."),
        out: Path = typer.Option(..., "--out", help="Study directory (created; re-running resumes it)."),
        executor: str = typer.Option(None, "--executor", help="local, slurm or ray (default: the study's)."),
        device: str = typer.Option(None, "--device", help="Override the runs' device (cpu, cuda, cuda:1)."),
    ) -> None:
        """Run a study: every missing fine-tuning run, then results/auc.csv and results/table2.md."""
        from rich.console import Console

        from medtransfer.study.config import StudyConfig
        from medtransfer.study.runner import run_study

        console = Console()
        config = StudyConfig.from_yaml(_study_path(study))
        if executor is not None:
            config = StudyConfig.parse({**config.model_dump(), "executor": {**config.executor.model_dump(),
                                                                          "kind": executor}}, "--executor")
        if device is not None:
            config = StudyConfig.parse({**config.model_dump(), "training": {**config.training, "device": device}},
                                       "--device")
        report = run_study(config, out)
        console.print(f"{report.total} runs: {report.skipped} already done, {report.finished} finished now, "
                      f"{len(report.failed)} failed, {report.elsewhere} finished by another owner", highlight=False)
        for failure in report.failed:
            console.print(f"[red]failed[/] {failure.run_id}: {failure.error}", highlight=False)
        table = (out / "results" / "table2.md").read_text()
        console.print(table, highlight=False)
        if report.failed:
            raise typer.Exit(1)

    @app.command("status")
    def status_command(out: Path = typer.Argument(..., help="Study directory.")) -> None:
        """Show which runs of a study are done, running, interrupted, failed or pending."""
        from rich.console import Console

        print_status(out, Console())

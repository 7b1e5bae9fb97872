"""Commands of ``medtransfer.study`` for the command line (registered by ``medtransfer.cli``):
``medtransfer run STUDY.yaml --out DIR``, ``medtransfer evaluate DIR`` and ``medtransfer status DIR``."""

from __future__ import annotations

from pathlib import Path

import typer

from medtransfer.study.config import EXECUTORS


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


def _fmt(value, pattern: str) -> str:  # noqa: ANN001
    return "-" if value is None else format(value, pattern)


def status_view(progress: dict, show_all: bool = False):  # noqa: ANN201 - a rich renderable
    """A study's state: a bar of finished runs, counts per state, the grid's ETA, and a table of
    the runs (unfinished ones; every run with ``show_all``)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    from medtransfer.console import clock

    counts, runs = progress["counts"], progress["runs"]
    total = len(runs)
    filled = round(40 * counts["done"] / max(total, 1))
    eta = progress["eta_s"]
    eta_text = (f"ETA {clock(eta)} (at most {clock(progress['eta_max_s'])}), {progress['running']} running"
                if eta is not None else "ETA unknown until an epoch of each phase is measured")
    parts = [
        Text.from_markup(f"[bold]{progress['study']}[/]: {counts['done']}/{total} runs done"),
        Text.from_markup(f"[green]{'█' * filled}[/][dim]{'░' * (40 - filled)}[/] "
                         f"{100 * counts['done'] / max(total, 1):.0f}%  {eta_text}"),
        Text("  ".join(f"{state}: {n}" for state, n in counts.items())),
    ]
    made = progress.get("pretraining", [])
    if made and (show_all or any(r["state"] != "done" for r in made)):
        parts.append(Text("pretraining: " + "; ".join(
            f"{r['source']} {r['state']}, epoch {r['epoch']}/{r['epochs']}"
            + (f", {_fmt(r['seconds_per_epoch'], '.1f')} s/epoch" if r["seconds_per_epoch"] is not None else "")
            + (f", ETA {clock(r['eta_s'])}" if r["eta_s"] is not None else "")
            + (f" ({r['error'][:60]})" if r["error"] else "") for r in made)
            + " (the runs fine-tuned from them start once every source is made)"))
    shown = [r for r in runs if show_all or r["state"] != "done"]
    if shown:
        errors = any(r["error"] for r in shown)
        table = Table()
        table.add_column("run", no_wrap=True)
        for column in ("state", "phase", "epoch", "best val AUC", "s/epoch", "ETA", "test AUC", *(["error"] * errors)):
            table.add_column(column)
        for r in shown:
            table.add_row(r["run_id"], r["state"], r["phase"], f"{r['epoch']}/{r['epochs']}",
                          _fmt(r["best_val_auc"], ".3f"), _fmt(r["seconds_per_epoch"], ".1f"),
                          f"{clock(r['eta_s'])} (<= {clock(r.get('eta_max_s'))})" if r["eta_s"] is not None else "-",
                          _fmt(r["test_auc"], ".3f"), *([(r["error"] or "")[:60]] * errors))
        parts.append(table)
    return Group(*parts)


def print_status(out: Path, console, show_all: bool = False, check: str = "quick") -> dict[str, int]:  # noqa: ANN001 - a rich Console
    """Print a study's state (see :func:`status_view`); returns the counts per state."""
    from medtransfer.study.status import study_progress

    progress = study_progress(out, check)
    console.print(status_view(progress, show_all), highlight=False)
    return progress["counts"]


def _detach_driver(study: str, out: Path, executor: str | None, device: str | None, track: str | None,
                   console, steal_claims: bool = False) -> None:  # noqa: ANN001 - a rich Console
    """Start this same `run` (without --detach) as a background process logging to ``out/driver.log``."""
    import subprocess
    import sys

    args = ["run", study, "--out", str(out)] + (["--steal-claims"] if steal_claims else [])
    for name, value in (("--executor", executor), ("--device", device), ("--track", track)):
        args += [name, value] if value else []
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "driver.log", "ab") as log:
        process = subprocess.Popen([sys.executable, "-c", "from medtransfer.cli import main; main()", *args],
                                   stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    console.print(f"driver started in the background (pid {process.pid}, log {out / 'driver.log'}); "
                  f"`medtransfer status {out}` shows progress", highlight=False)


# the --executor help, from the registry: "local, slurm or ray"
_EXECUTOR_NAMES = " or ".join(filter(None, (", ".join(list(EXECUTORS)[:-1]), list(EXECUTORS)[-1])))


def register(app: typer.Typer) -> None:
    """Add ``run``, ``evaluate`` and ``status`` to the root app."""

    @app.command("run")
    def run_command(
        study: str = typer.Argument(..., help="Study YAML file, or a shipped study: paper, mei-replication, demo."),
        out: Path = typer.Option(..., "--out", help="Study directory (created; re-running resumes it)."),
        executor: str = typer.Option(None, "--executor", help=f"{_EXECUTOR_NAMES}. \\[default: the study's executor.kind]"),
        device: str = typer.Option(None, "--device", help="Override the runs' device (cpu, cuda, cuda:1). "
                                     "\\[default: the study's training.device, else auto]"),
        track: str = typer.Option(None, "--track", help="mlflow: track the runs (the study's tracking: section, "
                                  "else a store in DIR/mlflow); off: do not track. "
                                  "\\[default: mlflow when the study has a tracking: section, else off]"),
        detach: bool = typer.Option(False, "--detach", help="Submit and return (SLURM); local/ray: run the "
                                    "driver in the background. `status` shows progress, a later `run` collects."),
        steal_claims: bool = typer.Option(False, "--steal-claims", help="Take over runs claimed by another host "
                                          "that this machine cannot check (a study copied from a cluster); only "
                                          "when nothing there works on this study any more."),
    ) -> None:
        """Run a study: every missing fine-tuning run, then results/auc.csv and results/table2.md."""
        from medtransfer.atomic import check_folder
        from medtransfer.console import output_console
        from medtransfer.study.config import StudyConfig
        from medtransfer.study.runner import open_study_dir, run_study
        from medtransfer.training.record import TABLE2_MD, study_results_file

        check_folder(out, write=True, what="the study folder (--out)")
        console = output_console()
        config = StudyConfig.from_yaml(_study_path(study)).with_overrides(executor=executor, device=device,
                                                                            track=track)
        study_file = _study_path(study)
        open_study_dir(config, out, study_file)  # before anything is written there (the background driver's log)
        if detach and config.executor.kind != "slurm":
            _detach_driver(study, out, executor, device, track, console, steal_claims)
            return
        report = run_study(config, out, detach=detach, steal_claims=steal_claims, study_file=study_file)
        if detach:
            console.print(f"{report.total} runs: {report.skipped} already done, {report.submitted} submitted as SLURM "
                          f"jobs; `medtransfer status {out}` shows them, `medtransfer run` with the same --out "
                          "collects the results", highlight=False)
            return
        for run_id in report.recomputed:
            console.print(f"[yellow]recomputed[/] {run_id}: its files differed from what it wrote", highlight=False)
        console.print(f"{report.total} runs: {report.skipped} already done, {report.finished} finished now, "
                      f"{len(report.failed)} failed, {report.elsewhere} finished by another owner", highlight=False)
        for failure in report.failed:
            console.print(f"[red]failed[/] {failure.run_id}: {failure.error}", highlight=False)
        table = out / study_results_file(TABLE2_MD)
        if table.is_file():  # not written when a source the study pretrains failed: no run could start
            console.print(table.read_text(), highlight=False)
        if report.failed:
            raise typer.Exit(1)

    @app.command("evaluate")
    def evaluate_command(
        out: Path = typer.Argument(..., help="Study directory (its finished runs are evaluated, none retrained)."),
        corruptions: str = typer.Option(None, "--corruptions", help="all, or comma-separated names: "
                                        "gaussian_noise, speckle_noise, gaussian_blur, motion_blur, contrast, "
                                        "brightness, jpeg, downsample. \\[default: the study's evaluate.corruptions]"),
        device: str = typer.Option(None, "--device", help="cpu, cuda, cuda:1. \\[default: each run's device setting]"),
    ) -> None:
        """Evaluate each finished run's test part under image corruptions at 5 severities (no retraining);
        resumable; `medtransfer analyze` then adds robustness tables, figures and claims."""
        from rich.console import Console

        from medtransfer.atomic import check_folder
        from medtransfer.study.evaluate import evaluate_study

        check_folder(out, write=True, what="the study folder")
        console = Console()
        report = evaluate_study(out, corruptions, device)
        console.print(f"{report.runs} runs: {len(report.evaluated)} evaluated now ({report.files} corruption files), "
                      f"{len(report.unfinished)} unfinished, {len(report.damaged)} damaged", highlight=False)
        for run_id in report.unfinished:
            console.print(f"[yellow]unfinished[/] {run_id}: `medtransfer run` finishes it, then evaluate again",
                          highlight=False)
        for problem in report.damaged:
            console.print(f"[red]damaged[/] {problem}", highlight=False)
        if report.damaged:
            raise typer.Exit(1)

    @app.command("status")
    def status_command(
        out: Path = typer.Argument(..., help="Study directory."),
        as_json: bool = typer.Option(False, "--json", help="Print the state as JSON (one document per refresh)."),
        watch: bool = typer.Option(False, "--watch", help="Refresh until every run is done (Ctrl-C stops)."),
        interval: float = typer.Option(5.0, "--interval", min=0.1, help="Seconds between refreshes with --watch."),
        show_all: bool = typer.Option(False, "--all", help="List finished runs too."),
        verify: bool = typer.Option(False, "--verify", help="Hash every file of every finished run (slow on "
                                    "many runs); without it a file is hashed only when its size or modification "
                                    "time differs from what the run recorded."),
    ) -> None:
        """Show the sources being pretrained and each run's state, phase, epoch k/N, best val AUC and
        s/epoch, and the grid's ETA. A finished run whose files differ from what it wrote is `damaged`."""
        import json
        import time

        from medtransfer.console import output_console
        from medtransfer.study.status import study_progress

        console = output_console()
        check = "full" if verify else "quick"

        def finished(progress: dict) -> bool:
            return progress["counts"]["running"] == 0 and progress["counts"]["done"] == len(progress["runs"])

        if as_json:
            while True:
                progress = study_progress(out, check)
                print(json.dumps(progress), flush=True)
                if not watch or finished(progress):
                    return
                time.sleep(interval)
        if not watch:
            print_status(out, console, show_all, check)
            return
        from rich.live import Live

        try:
            with Live(console=console, auto_refresh=False) as live:
                while True:
                    progress = study_progress(out, check)
                    live.update(status_view(progress, show_all), refresh=True)
                    if finished(progress):
                        return
                    time.sleep(interval)
        except KeyboardInterrupt:
            return

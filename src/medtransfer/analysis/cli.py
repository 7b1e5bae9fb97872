"""Commands of ``medtransfer.analysis`` for the command line (registered by ``medtransfer.cli``):
``medtransfer analyze DIR`` and ``medtransfer similarity MODEL_A MODEL_B``."""

from __future__ import annotations

from pathlib import Path

import typer


def _split(value: str | None) -> list[str] | None:
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


def register(app: typer.Typer) -> None:
    """Add ``analyze`` and ``similarity`` to the root app."""

    @app.command()
    def analyze(
        study_dir: Path = typer.Argument(..., help="A study directory (written by `medtransfer study run`)."),
        layers: str = typer.Option(None, help="Comma-separated layers (conv1,block1,...; Keras names; or 'all'). "
                                   "Default: study.yaml's analysis.layers, else the paper's five."),
        rows: int = typer.Option(None, help="Rows (images x positions) sampled per layer and repeat (default: 20000)."),
        channels: int = typer.Option(None, help="Channels sampled per layer and repeat (default: 64)."),
        repeats: int = typer.Option(None, help="Fresh samples per layer (default: 5)."),
        measures: str = typer.Option(None, help="Comma-separated: cca, cka (default: both)."),
        split: str = typer.Option(None, help="Stimulus pool of each fold: train, val, test or all (default: test)."),
        threads: int = typer.Option(None, help="torch CPU threads; 1 is fastest on a busy machine (default: torch's)."),
        device: str = typer.Option(None, help="torch device for the activations (default: cuda if available, else cpu)."),
    ) -> None:
        """Tables, figures and statistics of a study, in DIR/analysis/ and one DIR/report.html."""
        from rich.console import Console

        from medtransfer.analysis.run import analyze as run_analysis

        path = run_analysis(study_dir, layers=_split(layers), rows=rows, channels=channels, repeats=repeats,
                            measures=_split(measures), split=split, threads=threads, device=device)
        Console().print(f"report: {path}", highlight=False)

    @app.command()
    def similarity(
        model_a: str = typer.Argument(..., help="Checkpoint, .h5/.pth weights file, or imagenet/radimagenet/random."),
        model_b: str = typer.Argument(..., help="The other network, as MODEL_A."),
        target: str = typer.Option(..., help="Dataset name for the stimulus images (chest, knee, folder, synthetic, ...)."),
        root: Path = typer.Option(None, help="The dataset's directory (not needed for synthetic)."),
        size: int = typer.Option(None, help="Image size in pixels (default: the size the checkpoints were trained "
                                 "at, else 112)."),
        images: int = typer.Option(None, help="Use this many images of the dataset (default: all)."),
        layers: str = typer.Option(None, help="Comma-separated layers, or 'all' (default: the paper's five)."),
        rows: int = typer.Option(20000, help="Rows sampled per layer and repeat."),
        channels: int = typer.Option(64, help="Channels sampled per layer and repeat."),
        repeats: int = typer.Option(5, help="Fresh samples per layer."),
        measures: str = typer.Option("cca,cka", help="Comma-separated: cca, cka."),
        device: str = typer.Option(None, help="torch device (default: cuda if available, else cpu)."),
        threads: int = typer.Option(None, help="torch CPU threads (default: torch's)."),
        out: Path = typer.Option(None, help="Also write the table to this CSV file."),
        option: list[str] = typer.Option(None, "--option", "-o", help="loader option key=value of the dataset "
                                         "(repeatable; see `medtransfer data options NAME`)."),
    ) -> None:
        """Layer-wise CCA and CKA of two networks over a dataset's images."""
        from rich.console import Console
        from rich.table import Table

        import torch

        from medtransfer.analysis.compare import compare_models, resolve_size
        from medtransfer.analysis.settings import AnalysisSettings
        from medtransfer.data.cli import parse_options

        if threads is not None:
            torch.set_num_threads(threads)

        settings = AnalysisSettings().override(layers=_split(layers), rows=rows, channels=channels,
                                               repeats=repeats, measures=_split(measures))
        size, origin = resolve_size(size, model_a, model_b)
        frame, _ = compare_models(model_a, model_b, target, root, size=size, images=images, settings=settings,
                                  target_options=parse_options(option), device=device)
        table = Table(title=f"{model_a} vs {model_b} on {target} ({size} px: {origin})")
        for column in ("layer", "measure", "mean", "std", "rows", "channels", "repeats"):
            table.add_column(column)
        for r in frame.itertuples():
            table.add_row(r.layer, r.measure, f"{r.mean:.4f}", f"{r.std:.4f}", str(r.rows), str(r.channels), str(r.repeats))
        Console().print(table)
        if out is not None:
            frame.to_csv(out, index=False)

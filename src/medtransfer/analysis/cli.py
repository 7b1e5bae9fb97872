"""Commands of ``medtransfer.analysis`` for the command line (registered by ``medtransfer.cli``):
``medtransfer analyze DIR`` and ``medtransfer similarity MODEL_A MODEL_B``."""

from __future__ import annotations

from pathlib import Path

import typer

from medtransfer.similarity.bootstrap import INTERVAL_METHODS
from medtransfer.similarity.registry import NAMES as MEASURE_NAMES
from medtransfer.study.analysis_settings import PERMUTATIONS_HELP, AnalysisSettings

DEFAULTS = AnalysisSettings()  # the one owner of the analysis defaults; the help shows them


def _split(value: str | None) -> list[str] | None:
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


def _study_default(name: str, value: object) -> str:
    """The help's default of an ``analyze`` option: the study's setting, else AnalysisSettings'."""
    return f"\\[default: study.yaml's analysis.{name}, else {value}]"


def register(app: typer.Typer) -> None:
    """Add ``analyze`` and ``similarity`` to the root app."""

    @app.command()
    def analyze(
        study_dir: Path = typer.Argument(..., help="A study directory (written by `medtransfer run`)."),
        layers: str = typer.Option(None, help="Comma-separated layers (conv1,block1,...; Keras names; or 'all'). "
                                   "\\[default: study.yaml's analysis.layers, else the paper's five]"),
        rows: int = typer.Option(None, help="Rows (images x positions) sampled per layer and repeat. "
                                f"\\[default: study.yaml's analysis.rows, else {DEFAULTS.rows}]"),
        channels: int = typer.Option(None, help="Channels sampled per layer and repeat. "
                                    f"\\[default: study.yaml's analysis.channels, else {DEFAULTS.channels}]"),
        repeats: int = typer.Option(None, help="Fresh samples per layer. "
                                   f"\\[default: study.yaml's analysis.repeats, else {DEFAULTS.repeats}]"),
        measures: str = typer.Option(None, help=f"Comma-separated, of: {', '.join(MEASURE_NAMES)}. "
                                    f"\\[default: study.yaml's analysis.measures, else {','.join(DEFAULTS.measures)}]"),
        split: str = typer.Option(None, help="Stimulus pool of each fold: train, val, test or all. "
                                 f"\\[default: study.yaml's analysis.split, else {DEFAULTS.split}]"),
        threads: int = typer.Option(None, help="CPU threads: the forward passes use them all, the layer-wise "
                                   "similarity scores as many (pair, layer) problems side by side. "
                                   "\\[default: torch's, the machine's cores]"),
        device: str = typer.Option(None, help="torch device for the activations. \\[default: cuda if available, else cpu]"),
        formats: str = typer.Option("png,pdf,svg", "--format", help="Comma-separated figure formats: png, pdf, svg "
                                    "(PNG is always written: the report embeds it)."),
        partial: bool = typer.Option(False, "--partial", help="Write the tables although the study is not a "
                                     "complete, verified grid; the caption and report name the incomplete cells."),
        ci: float = typer.Option(None, help="Image-bootstrap interval level of each layer-wise score; 0 for none. "
                                 f"{_study_default('ci', DEFAULTS.ci)}"),
        resamples: int = typer.Option(None, help="Bootstrap resamples of that interval. "
                                      f"{_study_default('resamples', DEFAULTS.resamples)}"),
        ci_method: str = typer.Option(None, help=f"Resample values, one of {', '.join(INTERVAL_METHODS)}. "
                                      f"{_study_default('ci_method', DEFAULTS.ci_method)}"),
        permutations: int = typer.Option(None, help=PERMUTATIONS_HELP.replace(
            "\\[default: ", "\\[default: study.yaml's analysis.permutations, else ")),
        sampling: str = typer.Option(None, help="paper (all positions of few images) or spread (positions per image). "
                                     f"{_study_default('sampling', DEFAULTS.sampling)}"),
        positions: int = typer.Option(None, help="Positions per image of the spread sampling. "
                                      f"{_study_default('positions', DEFAULTS.positions)}"),
        batch_size: int = typer.Option(None, help="Images per forward batch. "
                                       f"{_study_default('batch_size', DEFAULTS.batch_size)}"),
        seed: int = typer.Option(None, help="Seed of the row and channel sampling. "
                                 f"{_study_default('seed', DEFAULTS.seed)}"),
        sources: str = typer.Option(None, help="Comma-separated: the two pretrained sources in the paper's roles. "
                                    "\\[default: study.yaml's analysis.sources, else the study's first two]"),
        auc_average: str = typer.Option(None, help="Multiclass AUC of Table 2: macro, weighted or micro. "
                                        f"{_study_default('auc_average', DEFAULTS.auc_average)}"),
        bootstrap: int = typer.Option(None, help="Resamples of the claims' bootstrap intervals and permutation tests. "
                                      f"{_study_default('bootstrap', DEFAULTS.bootstrap)}"),
        correlation_points: str = typer.Option(None, help="Figure 6's points: target (mean over folds) or fold. "
                                               f"{_study_default('correlation_points', DEFAULTS.correlation_points)}"),
    ) -> None:
        """Tables, figures and statistics of a study, in DIR/analysis/ and one DIR/report.html.

        The runs are first checked against the study's grid; a study with a missing, unfinished,
        damaged, mismatched or foreign run is refused, naming each, unless --partial is given."""
        from medtransfer.analysis.run import analyze as run_analysis
        from medtransfer.atomic import check_folder
        from medtransfer.console import output_console

        check_folder(study_dir, write=True, what="the study folder")
        path = run_analysis(study_dir, layers=_split(layers), rows=rows, channels=channels, repeats=repeats,
                            measures=_split(measures), split=split, threads=threads, device=device,
                            formats=_split(formats), partial=partial, ci=ci, resamples=resamples,
                            ci_method=ci_method, permutations=permutations, sampling=sampling,
                            positions=positions, batch_size=batch_size, seed=seed, sources=_split(sources),
                            auc_average=auc_average, bootstrap=bootstrap, correlation_points=correlation_points)
        output_console().print(f"report: {path}", highlight=False)

    @app.command()
    def similarity(
        model_a: str = typer.Argument(..., help="Checkpoint, .h5/.pth weights file, imagenet/radimagenet/random, "
                                      "a factory package.module:function, or a TorchScript file."),
        model_b: str = typer.Argument(..., help="The other network, as MODEL_A."),
        target: str = typer.Option(..., help="Dataset name for the stimulus images (chest, knee, folder, synthetic, ...)."),
        root: Path = typer.Option(None, help="The dataset's directory (not needed for synthetic)."),
        size: int = typer.Option(None, help="Image size in pixels, 8 to 1024. \\[default: the size the checkpoints "
                                 "were trained at, else 112]"),
        images: int = typer.Option(None, help="Use this many images of the dataset, at least 2. \\[default: all]"),
        layers: str = typer.Option(None, help="Comma-separated layers, or 'all'. \\[default: the paper's five]"),
        rows: int = typer.Option(DEFAULTS.rows, help="Rows sampled per layer and repeat."),
        channels: int = typer.Option(DEFAULTS.channels, help="Channels sampled per layer and repeat."),
        repeats: int = typer.Option(DEFAULTS.repeats, help="Fresh samples per layer."),
        measures: str = typer.Option(",".join(DEFAULTS.measures), help=f"Comma-separated, of: {', '.join(MEASURE_NAMES)}."),
        ci: float = typer.Option(DEFAULTS.ci, help="Image-bootstrap interval level; 0 for none."),
        resamples: int = typer.Option(DEFAULTS.resamples, help="Bootstrap resamples."),
        ci_method: str = typer.Option(DEFAULTS.ci_method, help=f"Resample values, one of {', '.join(INTERVAL_METHODS)}: "
                                      "linear (first order in the image weights, fast) or exact (each resample's own value)."),
        permutations: int = typer.Option(DEFAULTS.permutations, help=PERMUTATIONS_HELP),
        sampling: str = typer.Option(DEFAULTS.sampling, help="paper (all positions of few images) or spread."),
        device: str = typer.Option(None, help="torch device. \\[default: cuda if available, else cpu]"),
        threads: int = typer.Option(None, help="torch CPU threads. \\[default: torch's, the machine's cores]"),
        out: Path = typer.Option(None, help="Also write the table to this CSV file (a new file, or one this "
                                 "command wrote: no other file is overwritten)."),
        layers_b: str = typer.Option(None, help="MODEL_B's layers, paired with --layers by position. "
                                      "\\[default: the same names as --layers]"),
        state_dict_a: Path = typer.Option(None, help="State dict (.pth) for a factory MODEL_A."),
        state_dict_b: Path = typer.Option(None, help="State dict (.pth) for a factory MODEL_B."),
        sequence: str = typer.Option("tokens", help="3-D outputs: 'tokens' (n, T, C) or 'channels_first' (n, C, L)."),
        option: list[str] = typer.Option(None, "--option", "-o", help="loader option key=value of the dataset "
                                         "(repeatable; see `medtransfer data options NAME`)."),
    ) -> None:
        """Layer-wise CCA and CKA of two networks over a dataset's images."""
        from rich.table import Table

        import torch

        from dataclasses import replace

        from medtransfer.analysis.compare import check_options, compare_models, resolve_size
        from medtransfer.atomic import write_text_atomic
        from medtransfer.console import output_console
        from medtransfer.data.cli import parse_options

        check_options(size=size, images=images, threads=threads, device=device, out=out)
        if threads is not None:
            torch.set_num_threads(threads)

        settings = AnalysisSettings().override(layers=_split(layers), rows=rows, channels=channels,
                                               repeats=repeats, measures=_split(measures), resamples=resamples,
                                               ci_method=ci_method, permutations=permutations, sampling=sampling)
        settings = replace(settings, ci=ci if ci else None)
        size, origin = resolve_size(size, model_a, model_b)
        frame, _ = compare_models(model_a, model_b, target, root, size=size, images=images, settings=settings,
                                  target_options=parse_options(option),
                                  device=device, layers_b=_split(layers_b), state_dict_a=state_dict_a,
                                  state_dict_b=state_dict_b, sequence=sequence)
        table = Table(title=f"{model_a} vs {model_b} on {target} ({size} px: {origin})")
        table.caption = "mean ± std over repeats; image-bootstrap interval; permutation null mean / 95% point; p-value"
        for column in ("layer", "measure", "mean ± std", "CI", "null", "p", "rows x ch"):
            table.add_column(column, no_wrap=column in ("layer", "measure"))
        for r in frame.itertuples():
            table.add_row(r.layer, r.measure, f"{r.mean:.3f}±{r.std:.3f}", f"{r.ci_low:.3f}-{r.ci_high:.3f}",
                          f"{r.null_mean:.3f}/{r.null_p95:.3f}", f"{r.p_value:.2f}", f"{r.rows}x{r.channels}")
        output_console().print(table)
        if out is not None:
            write_text_atomic(out, frame.to_csv(index=False))

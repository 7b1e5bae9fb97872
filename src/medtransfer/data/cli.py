"""Commands of ``medtransfer.data`` for the command line (registered by ``medtransfer.cli``):
``medtransfer data check``, ``data folds`` and ``data cache``."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import typer

from medtransfer.data.folds import DEFAULT_FOLDS, EXCLUDED, FoldSpec
from medtransfer.errors import ConfigError

data_app = typer.Typer(help="Datasets: check a download, make patient-grouped folds, build the pixel cache.",
                       no_args_is_help=True)


def parse_options(items: list[str] | None) -> dict:
    """``["key=value", ...]`` -> dict, values read as YAML scalars/lists (``3``, ``true``, ``[a, b]``)."""
    import yaml

    options = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--option {item!r}: expected key=value")
        options[key.strip()] = yaml.safe_load(value)
    return options


# keywords of load_manifest that this command line sets by flags, not loader options
_FLAGS = {"verify": "--verify/--no-verify", "workers": "--workers"}


def command_options(items: list[str] | None, skip_bad: bool) -> tuple[dict, bool]:
    """The loader options of ``-o key=value`` and whether bad files are left out: ``--skip-bad``
    or ``-o skip_bad=true`` (the spelling of a study target's options), one merged setting.
    ``ConfigError`` when they disagree or ``-o`` names a flag (``verify``, ``workers``)."""
    options = parse_options(items)
    if "skip_bad" in options:
        value = options.pop("skip_bad")
        if not isinstance(value, bool):
            raise ConfigError(f"-o skip_bad={value!r}: expected true or false")
        if skip_bad and not value:
            raise ConfigError("--skip-bad and -o skip_bad=false disagree: give one of them")
        skip_bad = value
    for key in sorted(set(options) & set(_FLAGS)):
        raise ConfigError(f"-o {key}=...: {key} is a setting of this command, not a loader option; "
                          f"use {_FLAGS[key]}")
    return options, skip_bad


@data_app.command("check")
def check(
    name: str = typer.Argument(..., help="dataset: chest, breast, thyroid, mammograms, knee, pcam, pcam-small, "
                                         "isic, medmnist, folder, csv, synthetic"),
    root: Path = typer.Option(None, "--root", help="the dataset's folder (or file)"),
    as_json: bool = typer.Option(False, "--json", help="print JSON: images, classes, groups, skipped, problems"),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="accept bad files as skipped (exit 0)"),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="decode every image to find unreadable ones"),
    workers: int = typer.Option(4, help="threads decoding images"),
    option: list[str] = typer.Option(None, "--option", "-o", help="loader option key=value (repeatable)"),
) -> None:
    """What a loader finds: images per class, groups, files skipped and why, every problem.

    Exit status 1 when there are problems (bad input) and --skip-bad is not given."""
    from medtransfer.console import output_console
    from rich.table import Table

    from medtransfer.data.registry import load_manifest

    options, skip_bad = command_options(option, skip_bad)
    manifest = load_manifest(name, root, skip_bad=True, verify=verify, workers=workers, **options)
    report = manifest.summary()
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        console = output_console()
        console.print(f"{name}: {report['images']} images, {report['groups']} groups", highlight=False)
        table = Table()
        table.add_column("class")
        table.add_column("images", justify="right")
        for cls, count in report["classes"].items():
            table.add_row(cls, str(count))
        console.print(table)
        for what, count in manifest.notes.items():  # phrases in the plural: "mask files ignored"
            console.print(f"{count} {what}", highlight=False, markup=False)
        left_out = Counter(s.reason for s in manifest.skipped if not s.problem)  # one file's reason each
        for reason, count in left_out.items():
            console.print(f"{count} file{'s' if count != 1 else ''} left out: {reason}", highlight=False, markup=False)
        for entry in report["problems"]:  # files left out on purpose are counted in the notes above
            console.print(f"problem: {entry['path']}: {entry['reason']}", highlight=False, markup=False)
        if report["problems"] and not skip_bad:
            console.print(f"{len(report['problems'])} problem(s): training stops on these unless they are left "
                          "out: --skip-bad here, or `skip_bad: true` in the study target's options",
                          style="bold red")
    if report["problems"] and not skip_bad:
        raise typer.Exit(1)


def _as_yaml(value: object) -> str:
    """A default as one would write it after ``-o key=``."""
    import yaml

    plain = list(value) if isinstance(value, tuple) else value
    return yaml.safe_dump(plain, default_flow_style=True).strip().removesuffix("...").strip()


@data_app.command("options")
def options(
    name: str = typer.Argument(..., help="dataset name (see `medtransfer data check --help`)"),
) -> None:
    """Every option of a dataset's loader (give them as -o key=value or a target's options:), with
    its default and effect."""
    from medtransfer.console import output_console
    from rich.markup import escape
    from rich.table import Table

    from medtransfer.data.registry import loader_options

    listed = loader_options(name)
    if not listed:
        typer.echo(f"{name}: no options")
        return
    table = Table(title=f"options of {name}")
    for column in ("option", "default", "effect"):
        table.add_column(column)
    for item in listed:
        table.add_row(item.name, escape(_as_yaml(item.default)) + (" (fixed)" if item.fixed else ""),
                      escape(item.effect))
    output_console().print(table)


@data_app.command("folds")
def folds(
    name: str = typer.Argument(..., help="dataset name"),
    out: Path = typer.Option(..., "--out", help="CSV to write (image_id, fold, split)"),
    root: Path = typer.Option(None, "--root", help="the dataset's folder (or file)"),
    k: int = typer.Option(DEFAULT_FOLDS.k, help="number of folds"),
    seed: int = typer.Option(DEFAULT_FOLDS.seed, help="seed of the split"),
    authors: Path = typer.Option(None, "--authors", help="folder of the authors' {train,val,test}_fold<k>.csv "
                                                          "to import instead of making new folds"),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="leave bad files out"),
    option: list[str] = typer.Option(None, "--option", "-o", help="loader option key=value (repeatable)"),
    check_labels: bool = typer.Option(True, "--check-labels/--no-check-labels",
                                      help="with --authors: refuse splits whose class column disagrees with our "
                                           "labels (--no-check-labels imports them anyway, e.g. the authors' knee "
                                           "validation files, whose labels come from the wrong CSV)"),
) -> None:
    """Write patient-grouped, stratified folds of a dataset (the default fold spec of
    medtransfer.data.folds with k folds: train (k-1)/k, the held-out block split into validation
    and test in the default's proportion), or import the authors'."""
    from medtransfer.data.folds import check_folds_target, import_author_splits, write_folds
    from medtransfer.data.registry import dataset_folds, load_manifest

    check_folds_target(out)  # before the dataset is read: a file of the user's is never overwritten
    options, skip_bad = command_options(option, skip_bad)
    manifest = load_manifest(name, root, skip_bad=skip_bad, **options)
    if authors:
        table = import_author_splits(authors, manifest, check_labels=check_labels)
    else:
        spec = DEFAULT_FOLDS.with_k(k)
        table = dataset_folds(manifest, FoldSpec(spec.k, spec.fractions, seed))
    write_folds(table, out)
    counts = table.groupby(["fold", "split"]).size().unstack(fill_value=0)
    typer.echo(f"wrote {out}\n{counts.to_string()}")
    if EXCLUDED in counts:
        typer.echo(f"{int((counts[EXCLUDED] > 0).sum())} fold(s) leave images of {name} out (split '{EXCLUDED}': "
                   "in no part of that fold; the authors' files do not list them)")


@data_app.command("cache")
def cache(
    name: str = typer.Argument(..., help="dataset name"),
    size: int = typer.Option(..., "--size", help="side of the square images in pixels"),
    root: Path = typer.Option(None, "--root", help="the dataset's folder (or file)"),
    interpolation: str = typer.Option("nearest", help="nearest (the authors' loader), bilinear, bicubic, area, lanczos"),
    cache_dir: Path = typer.Option(None, "--cache-dir", help="Pixel cache folder. "
                                    "\\[default: $MEDTRANSFER_CACHE/pixels, else ~/.cache/medtransfer/pixels]"),
    workers: int = typer.Option(4, help="threads decoding images"),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="leave bad files out"),
    option: list[str] = typer.Option(None, "--option", "-o", help="loader option key=value (repeatable)"),
) -> None:
    """Decode and resize every image once into the pixel cache (training would do it on first use)."""
    from medtransfer.data.cache import PixelCache
    from medtransfer.data.registry import load_manifest

    options, skip_bad = command_options(option, skip_bad)
    manifest = load_manifest(name, root, skip_bad=skip_bad, verify=skip_bad, workers=workers, **options)
    built = PixelCache.build(manifest, size, interpolation, cache_dir=cache_dir, workers=workers)
    typer.echo(f"{built.path}: {len(built)} images of {size}x{size} px ({built.pixels.nbytes / 2**20:.1f} MiB)")


def register(app: typer.Typer) -> None:
    """Add ``medtransfer data ...`` to the root app."""
    app.add_typer(data_app, name="data")

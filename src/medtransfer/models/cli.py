"""Commands of ``medtransfer.models`` for the command line (registered by ``medtransfer.cli``).

``medtransfer weights fetch imagenet``, ``weights info FILE``, ``weights check SOURCE``,
``weights export SOURCE OUT.pth``, ``weights filters SOURCE`` and ``weights layers MODEL``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from medtransfer.console import output_console

from medtransfer.models import registry
from medtransfer.vocabulary import IMAGENET, RADIMAGENET

weights_app = typer.Typer(
    help="Weight sources: fetch ImageNet, inspect a weights file, check that it loads, export conv1 filters.",
    no_args_is_help=True,
)

CacheOption = typer.Option(None, "--cache-dir", help="Weights cache. "
                           "\\[default: $MEDTRANSFER_CACHE, else ~/.cache/medtransfer]")
BackboneOption = typer.Option(None, "--backbone", help=f"{', '.join(registry.names())}. "
                              "\\[default: resnet50 for source names; a file's own backbone for files]")


@weights_app.command("fetch")
def fetch(
    name: str = typer.Argument(..., help="Source to download: imagenet."),
    cache_dir: Optional[Path] = CacheOption,
    backbone: Optional[str] = BackboneOption,
) -> None:
    """Download Keras' ImageNet notop weights of a backbone into the cache once, checking the md5."""
    from medtransfer.errors import ConfigError
    from medtransfer.models.download import find_radimagenet, imagenet_file, imagenet_weights

    console = output_console(soft_wrap=True)
    spec = registry.get(backbone)
    if name == IMAGENET:
        path = imagenet_weights(cache_dir, backbone=spec.name)
        console.print(f"imagenet weights: {path} (md5 {imagenet_file(spec.name)[1]})", highlight=False)
    elif name == RADIMAGENET:
        console.print(f"radimagenet weights: {find_radimagenet(cache_dir, backbone=spec.name)}", highlight=False)
    else:
        raise ConfigError(f"cannot fetch {name!r}: expected {IMAGENET!r} (RadImageNet's file is handed out by its authors)")


@weights_app.command("info")
def info(file: Path = typer.Argument(..., help="A Keras .h5 / .weights.h5 or PyTorch .pth file.")) -> None:
    """Show what a weights file contains, which backbone it holds and whether it loads (exit 1 if not)."""
    from medtransfer.errors import MedtransferError
    from medtransfer.models.checkpoint import is_checkpoint, load_checkpoint
    from medtransfer.models.keras_h5 import read_keras_h5
    from medtransfer.models.sources import identify_backbone, load_weights_file
    from medtransfer.models.torch_port import read_port, read_state_dict
    from medtransfer.vocabulary import SourceRef

    console = output_console(soft_wrap=True)
    console.print(f"file: {file}", highlight=False)
    try:
        if SourceRef.of(file).format == "keras":
            weights = read_keras_h5(file)
            console.print(f"layout: {weights.layout}" + (f", Keras {weights.keras_version} ({weights.backend})" if weights.keras_version else ""), highlight=False)
            console.print(f"weight layers: {len(weights.layers)} ({sum(a.size for arrays in weights.layers.values() for a in arrays.values()):,} values)")
            for name, arrays in list(weights.layers.items())[:4]:
                console.print(f"  {name}: " + ", ".join(f"{v}{tuple(a.shape)}" for v, a in arrays.items()), highlight=False)
            if len(weights.layers) > 4:
                console.print(f"  ... {len(weights.layers) - 4} more")
        elif is_checkpoint(file):
            model, meta = load_checkpoint(file)
            console.print(f"backbone: {registry.backbone_of(model)}", highlight=False)
            console.print(f"layout: medtransfer checkpoint, head: {model.num_classes or 'none'}, normalization {meta['normalization']}, classes {meta['classes']}", highlight=False)
            console.print("loads: yes")
            return
        elif (port := read_port(file)) is not None:
            console.print(f"layout: medtransfer port, {len(port['state_dict'])} tensors, normalization "
                          f"{port['normalization']}, sha256 {port['sha256']}", highlight=False)
        else:
            state = read_state_dict(file)
            console.print(f"layout: PyTorch state dict, {len(state)} tensors")
        spec = registry.get(identify_backbone(file))
        console.print(f"backbone: {spec.name} (Keras {spec.keras_name})", highlight=False)
        model = spec.create()
        report = load_weights_file(file, model)
    except MedtransferError as error:
        console.print(f"loads: no - {error}", highlight=False)
        raise typer.Exit(1)
    console.print(f"loads: yes ({report.layers} {spec.keras_name} layers); head: {report.head}", highlight=False)
    for note in report.notes:
        console.print(f"note: {note}", highlight=False)


@weights_app.command("check")
def check(
    source: str = typer.Argument(..., help="imagenet, radimagenet, random, or a weights file / checkpoint."),
    cache_dir: Optional[Path] = CacheOption,
    normalization: Optional[str] = typer.Option(None, help="Override the normalisation: caffe, unit, symmetric, torch."),
    backbone: Optional[str] = BackboneOption,
) -> None:
    """Load a source as training would, and report what was loaded and its normalisation."""
    from medtransfer.models.sources import load_source

    loaded = load_source(source, cache_dir=cache_dir, normalization=normalization, backbone=backbone)
    console = output_console(soft_wrap=True)
    console.print(f"source: {loaded.name}\nbackbone: {loaded.backbone}\norigin: {loaded.origin}\n"
                  f"normalization: {loaded.normalize}", highlight=False)
    if loaded.report is not None:
        for line in loaded.report.lines()[1:]:
            console.print(line, highlight=False)


@weights_app.command("export")
def export(
    source: str = typer.Argument(..., help="imagenet, radimagenet, random, or a Keras .h5 / .pth / checkpoint file."),
    out: Path = typer.Argument(..., help="The .pth file to write."),
    cache_dir: Optional[Path] = CacheOption,
    backbone: Optional[str] = BackboneOption,
    seed: int = typer.Option(0, help="Seed of the random source."),
) -> None:
    """Write a source's backbone as a PyTorch .pth (state dict + backbone, normalisation, sha256)."""
    from medtransfer.models.sources import load_source
    from medtransfer.models.torch_port import check_port_target, export_port

    check_port_target(out)  # before the source is loaded: a file of the user's is never overwritten
    loaded = load_source(source, cache_dir=cache_dir, backbone=backbone, seed=seed)
    path, digest = export_port(out, loaded.model, normalization=str(loaded.normalize), origin=loaded.origin)
    output_console(soft_wrap=True).print(
        f"wrote {path}\nbackbone: {loaded.backbone}\nnormalization: {loaded.normalize}\nsha256: {digest}\n"
        f"load in PyTorch: torch.load(path, weights_only=True)['state_dict'] -> "
        f"medtransfer.models.create_model({loaded.backbone!r}).load_state_dict(...)", highlight=False)


@weights_app.command("filters")
def filters(
    source: str = typer.Argument(..., help="imagenet, radimagenet, random, or a weights file / checkpoint."),
    out: Path = typer.Option(Path("conv1_filters"), "--out", help="Output folder."),
    count: int = typer.Option(36, help="Number of filters in the grid."),
    cache_dir: Optional[Path] = CacheOption,
) -> None:
    """Export conv1 filters as an RGB grid (paper Figure 4) with a Gabor reference grid and scores."""
    import numpy as np

    from medtransfer.atomic import check_folder, write_atomic
    from medtransfer.models.filters import (check_outputs, conv1_filters, filter_grid, gabor_bank, gabor_similarity,
                                            save_grid_png)
    from medtransfer.models.sources import load_source

    check_folder(out, write=True, what="--out")  # a file, or a folder that cannot be written: named before loading
    loaded = load_source(source, cache_dir=cache_dir)
    check_outputs([out / f"{loaded.name}_conv1.npy", out / f"{loaded.name}_conv1.png", out / "gabor_reference.png"])
    kernels = conv1_filters(loaded.model)
    bgr = loaded.normalize.mode == "caffe"
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / f"{loaded.name}_conv1.npy", lambda handle: np.save(handle, kernels))
    grid = save_grid_png(filter_grid(kernels, count=count, bgr=bgr), out / f"{loaded.name}_conv1.png")
    bank = gabor_bank(size=kernels.shape[-1])
    reference = save_grid_png(filter_grid(bank, count=min(count, len(bank)), bgr=False), out / "gabor_reference.png")
    scores = gabor_similarity(kernels, bank)
    output_console(soft_wrap=True).print(
        f"{grid}\n{reference}\nGabor similarity of the {len(scores)} conv1 filters: median {np.median(scores):.3f}, "
        f"max {scores.max():.3f}",
        highlight=False,
    )


@weights_app.command("layers")
def layers(
    model: str = typer.Argument(..., help="A source name / weights file / checkpoint, a factory package.module:function, "
                                "or a TorchScript file."),
    size: int = typer.Option(None, help="Input side in pixels. \\[default: the backbone's, else 224]"),
    state_dict: Optional[Path] = typer.Option(None, help="State dict (.pth) for a factory."),
    backbone: Optional[str] = BackboneOption,
    sequence: str = typer.Option("tokens", help="3-D outputs: 'tokens' (n, T, C) or 'channels_first' (n, C, L)."),
) -> None:
    """List the layer names `medtransfer similarity` accepts for a model, with their output shapes."""
    import torch
    from rich.table import Table

    from medtransfer.models.resolve import resolve_model
    from medtransfer.models.hooks import list_layers

    resolved = resolve_model(model, state_dict=state_dict, backbone=backbone)
    if size is None:
        try:
            size = registry.get(registry.backbone_of(resolved.module)).input_size
        except Exception:
            size = 224
    x = resolved.normalize(torch.zeros(1, 3, size, size) + 128.0)
    table = Table(title=f"{resolved.origin} at {size} x {size}")
    for column in ("layer", "kind", "output shape", "compared as (C, h, w)"):
        table.add_column(column)
    for name, kind, shape, compared in list_layers(resolved.module.eval(), x, sequence):
        table.add_row(name, kind, str(shape), str(compared) if compared is not None else "refused")
    if resolved.default_layers:
        table.caption = f"stage names: {', '.join(resolved.default_layers)}"
    output_console(soft_wrap=True).print(table)


def register(app: typer.Typer) -> None:
    """Add the ``weights`` command group to the root app."""
    app.add_typer(weights_app, name="weights")

"""How far each fine-tuned run's weights moved from its initialisation, per stage (``weight_distance.csv``).

For a stage S (``conv1`` .. ``block4`` of the backbone, and the ``head``), with ``W`` the
concatenation of S's parameters (conv kernels and biases, BatchNorm gamma and beta; not the running
statistics, which are estimates rather than weights):

    distance(S) = ||W_ft - W_0||_F / ||W_0||_F

``W_0`` is the run's initialisation rebuilt exactly as the run built it (source, ``transfer`` and
seed, the head seeded by the run's seed: :func:`medtransfer.training.initial.initial_source` and
:func:`medtransfer.training.run.build_model`), ``W_ft`` its ``best.pt``. Neyshabur et al. (2020)
compare fine-tuned models in weight space this way: a small distance says the weights stayed in
the basin of their initialisation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import pandas as pd
import torch

from medtransfer.analysis.inventory import Study
from medtransfer.atomic import write_text_atomic
from medtransfer.analysis.loading import resolve_source
from medtransfer.errors import MedtransferError
from medtransfer.models import load_checkpoint, registry
from medtransfer.models.transfer import stage_partition
from medtransfer.training.initial import initial_source
from medtransfer.training.run import build_model

COLUMNS = ["target", "source", "strategy", "fold", "seed", "stage", "distance", "init_norm", "change_norm",
           "parameters"]


def relative_distances(init: Mapping[str, torch.Tensor], tuned: Mapping[str, torch.Tensor],
                       stage_of: Mapping[str, str]) -> dict[str, tuple[float, float, float, int]]:
    """Per stage, in first-seen order of ``stage_of``: ``(distance, ||W_0||, ||W_ft - W_0||, count)``
    over the keys of ``stage_of`` (float64 sums); ``distance`` is NaN where ``||W_0|| = 0``."""
    sums: dict[str, list[float]] = {}
    for key, stage in stage_of.items():
        w0 = init[key].detach().to("cpu", torch.float64)
        dw = tuned[key].detach().to("cpu", torch.float64) - w0
        acc = sums.setdefault(stage, [0.0, 0.0, 0])
        acc[0] += float((w0 * w0).sum())
        acc[1] += float((dw * dw).sum())
        acc[2] += w0.numel()
    out = {}
    for stage, (init_sq, change_sq, count) in sums.items():
        init_norm, change_norm = math.sqrt(init_sq), math.sqrt(change_sq)
        out[stage] = (change_norm / init_norm if init_norm > 0 else math.nan, init_norm, change_norm, int(count))
    return out


def weight_distances(study: Study) -> tuple[pd.DataFrame, list[str]]:
    """``weight_distance.csv``'s frame (:data:`COLUMNS`) for every finished run, and what could not
    be computed (a source that cannot be loaded here, named)."""
    rows, problems = [], []
    inits: dict[tuple, dict[str, torch.Tensor]] = {}
    for run in study.runs:
        config = run.resolved
        try:
            tuned, _ = load_checkpoint(run.checkpoint)
            transfer = config.transfer.model_dump_json() if config.transfer is not None else None
            key = (run.load_string, run.seed, transfer, run.normalization, tuned.num_classes)
            if key not in inits:
                load = resolve_source(run.load_string, study.root)
                source = initial_source(load, run.seed, config.transfer, run.normalization)
                inits[key] = build_model(config, source, tuned.num_classes).state_dict()
        except MedtransferError as error:
            problems.append(f"{run.run_id}: weight distance not computed ({error})")
            continue
        params = {name for name, _ in tuned.named_parameters()}
        partition = stage_partition(registry.backbone_of(tuned))
        stage_of = {k: s for k, s in partition.items() if k in params}
        for stage, (distance, init_norm, change_norm, count) in relative_distances(
                inits[key], tuned.state_dict(), stage_of).items():
            rows.append([run.target, run.source, run.strategy, run.fold, run.seed, stage, distance, init_norm,
                         change_norm, count])
    return pd.DataFrame(rows, columns=COLUMNS), problems


def write_weight_distances(frame: pd.DataFrame, out_dir: Path) -> Path:
    """Write ``weight_distance.csv`` into ``out_dir`` (beside ``similarity.csv``)."""
    return write_text_atomic(Path(out_dir) / "weight_distance.csv", frame.to_csv(index=False))

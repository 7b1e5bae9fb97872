"""The initialisation a run starts from: its source, or part of it (``transfer``), before the head.

One function rebuilds it for training, for the analysis' pairs and for the weight-space distance,
so that all three see the same network (same seed, same weights).
"""

from __future__ import annotations

from dataclasses import replace

from medtransfer.models.sources import Source, load_source, source_key
from medtransfer.models.transfer import transfer_init
from medtransfer.training.config import TransferSetting
from medtransfer.vocabulary import RANDOM


def initial_source(load: str, seed: int, transfer: TransferSetting | None = None,
                   normalization: str | None = None) -> Source:
    """``load_source(load, seed=seed)`` with ``transfer`` applied: stages ``conv1 .. up_to`` of the
    source (as weights, Mean-Var draws or shuffled) in a fresh Keras init of the same backbone
    seeded with ``seed`` (:func:`medtransfer.models.transfer.transfer_init`). The returned source keeps
    the pretrained source's normalisation and file (the run's input and digest are the source's)."""
    source = load_source(load, seed=seed, cache_dir=None, normalization=normalization)
    if transfer is None:
        return source
    fresh = load_source(source_key(RANDOM, source.backbone), seed=seed).model
    model = transfer_init(source.model, fresh, up_to=transfer.up_to, init=transfer.init, seed=seed).eval()
    what = f"{transfer.init} of stages up to {transfer.up_to}" if transfer.up_to else f"{transfer.init} of every stage"
    return replace(source, model=model, origin=f"{source.origin}, {what}, fresh init seed {seed}")

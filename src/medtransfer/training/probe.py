"""The phase-1 linear probe of a freeze run, stored as what differs from its source.

The probe is the source's backbone, frozen (BatchNorm in inference mode, so its running
statistics do not move either), plus a trained head. Storing it as a full ResNet50 would repeat
the source's ~95 MB in every freeze run; ``probe/head.pt`` instead holds

    {"format": "medtransfer-probe", "version": 1, "num_classes": k, "dropout": float,
     "source": {"load": str, "seed": int, "sha256": hex},
     "state_dict": {the head's tensors, plus any backbone tensor that differs from the source},
     "meta": {...}}

``source.load`` and ``source.seed`` rebuild the backbone with ``load_source``; ``source.sha256``
is the digest of that backbone's state (:func:`medtransfer.models.digests.state_digest`), checked on loading, so a probe is
either rebuilt bit for bit or refused. :func:`load_probe` returns the same ``(ResNet50, meta)``
as :func:`medtransfer.models.load_checkpoint`. Every hidden layer of a probe equals its source's, so comparing hidden
representations with the probe is comparing them with the source.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from medtransfer.atomic import write_atomic
from medtransfer.errors import WeightsError
from medtransfer.models import ResNet50, load_source, registry
from medtransfer.models.checkpoint import plain_meta, read_payload
from medtransfer.models.digests import combine_digests, state_digest, tensor_digests
from medtransfer.training.record import SOURCES, RunDir
from medtransfer.vocabulary import SourceRef

FORMAT = "medtransfer-probe"
VERSION = 1
HEAD_PREFIX = "head."


def save_probe(path: str | os.PathLike, model: ResNet50, meta: dict[str, Any], *, load: str, seed: int,
               source_digests: dict[str, str]) -> Path:
    """Write ``model`` (a ResNet50 with a head) as its difference from the source it started from.

    Args:
        path: the file to write (atomically, fsync'ed).
        model: the probe; its backbone should equal the source's.
        meta: at least ``normalization`` (mode string) and ``classes``; plain Python data.
        load, seed: what rebuilds the source: ``load_source(load, seed=seed)``.
        source_digests: :func:`tensor_digests` of that source's (headless) state, taken before
            training. Backbone tensors whose digest differs now are stored in full.

    Returns the path written.
    """
    meta = plain_meta(meta)
    state = model.state_dict()
    body = {name: t for name, t in state.items() if not name.startswith(HEAD_PREFIX)}
    if set(body) != set(source_digests):
        raise WeightsError(f"probe {path}: the model's backbone tensors do not match the source's "
                           f"({len(body)} vs {len(source_digests)} tensors)")
    now = tensor_digests(body)
    keep = [name for name in state if name.startswith(HEAD_PREFIX) or now.get(name) != source_digests[name]]
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "num_classes": model.num_classes,
        "dropout": float(model.dropout),
        "source": {"load": str(load), "seed": int(seed), "sha256": combine_digests(source_digests)},
        "state_dict": {name: state[name].detach().to("cpu").contiguous().clone() for name in keep},
        "meta": meta,
    }
    return write_atomic(Path(path), lambda handle: torch.save(payload, handle), fsync=True)


def _candidates(load: str, path: Path) -> list[str]:
    """``load`` itself, and for a file that is not there, ``sources/<name>`` beside any parent of
    ``path`` (a study directory that was moved)."""
    candidates = [load]
    if SourceRef.of(load).is_file and not Path(load).exists():
        candidates += [str(parent / SOURCES / Path(load).name) for parent in path.resolve().parents
                       if (parent / SOURCES / Path(load).name).is_file()]
    return candidates


def read_probe_file(path: str | os.PathLike) -> dict[str, Any]:
    """The raw payload of a ``head.pt`` (checked format and version)."""
    return read_payload(path, FORMAT, VERSION, "probe")


def load_probe(path: str | os.PathLike, *, source: str | os.PathLike | None = None,
               map_location: str | torch.device = "cpu") -> tuple[ResNet50, dict[str, Any]]:
    """Rebuild a run's phase-1 probe: ``(ResNet50 in eval mode, meta)``, bit for bit as trained.

    Args:
        path: ``probe/head.pt``, or a run directory (its ``probe/head.pt``).
        source: where the source weights are now, if not where the run found them (a name or a
            file path); by default the recorded one, or ``sources/<its file name>`` in a parent
            folder of ``path`` when the recorded file is gone.
        map_location: device of the returned model.

    Raises:
        WeightsError: no probe there, or no candidate source holds the weights the probe started
            from (content digest differs).
    """
    path = Path(path)
    if path.is_dir():  # a run directory, or its probe/ folder
        path = RunDir(path).probe_head if RunDir(path).probe.is_dir() else RunDir(path.parent).probe_head
    payload = read_probe_file(path)
    ref = payload["source"]
    tried = []
    for load in ([str(source)] if source is not None else _candidates(ref["load"], path)):
        try:
            backbone = load_source(load, seed=ref["seed"]).model
        except Exception as error:  # noqa: BLE001 - report every candidate tried
            tried.append(f"{load}: {error}")
            continue
        body = backbone.state_dict()
        digest = state_digest(body)
        if digest == ref["sha256"]:
            model = registry.create(registry.backbone_of(backbone), num_classes=payload["num_classes"],
                                    dropout=payload["dropout"])
            state = dict(body)
            state.update(payload["state_dict"])
            model.load_state_dict(state)
            return model.to(map_location).eval(), dict(payload["meta"])
        tried.append(f"{load}: different weights (sha256 {digest[:12]}..., expected {ref['sha256'][:12]}...)")
    raise WeightsError(f"probe {path}: cannot rebuild its backbone from source {ref['load']!r} (seed "
                       f"{ref['seed']}):\n  " + "\n  ".join(tried)
                       + "\n  pass source= the file holding the source weights the run was trained from")

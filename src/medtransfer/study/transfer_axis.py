"""A source's transfer axis: the runs a ``transfer:`` section adds to the source's own.

``transfer: {up_to: [conv1, block1, block2]}`` adds one run per depth (stages conv1 .. depth from
the source, the rest a fresh init with the run's seed), ``init: [mean-var, shuffled]`` one run per
re-drawn initialisation of the whole backbone (Raghu et al. 2019; Neyshabur et al. 2020; see
:mod:`medtransfer.models.transfer`). Up to the backbone's last stage is the whole backbone: that
depth is the source's own runs (full transfer), not a second copy of them. Each added run is
labelled ``{source}.to_{stage}``, ``{source}.meanvar``, ``{source}.shuffled`` and fine-tuned with
the no-freeze strategy only (a partly fresh backbone, like random init, is not frozen). A source
without ``transfer:`` expands to its own runs alone, with the run ids it always had.
"""

from __future__ import annotations

from collections.abc import Sequence

from medtransfer.errors import ConfigError
from medtransfer.models.registry import get as get_backbone
from medtransfer.training.config import TransferSetting


def transfer_variants(name: str, up_to: Sequence[str] | None, inits: Sequence[str] | None,
                      backbone: str) -> list[TransferSetting | None]:
    """``None`` (source ``name`` itself, full transfer) followed by each transfer run its ``transfer:``
    section (``up_to`` stages, ``inits``) makes on ``backbone``, in the order given; a stage that is
    not the backbone's raises ConfigError naming the source and the backbone's stages."""
    variants: list[TransferSetting | None] = [None]
    stages = list(get_backbone(backbone).paper_layers)
    for stage in up_to or []:
        if stage not in stages:
            raise ConfigError(f"source {name!r}: transfer up_to {stage!r} is not a stage of {backbone} "
                              f"(expected one of {', '.join(stages)})")
        if stage != stages[-1]:
            variants.append(TransferSetting(up_to=stage))
    variants += [TransferSetting(init=init) for init in inits or []]
    return variants


def variant_label(name: str, transfer: TransferSetting | None) -> str:
    """The source label of a run of source ``name`` with ``transfer`` (``None``: ``name`` itself)."""
    return name if transfer is None else transfer.label(name)

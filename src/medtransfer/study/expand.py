"""Expand a study into its runs: targets x backbones x sources x strategies x folds x seeds x settings.

A backbone other than ResNet50 is part of the run's target label (``thyroid@densenet121``), so
that run ids stay unique and every table, figure and pair of the analysis is per backbone; its
source string names it (``imagenet@densenet121``, see ``medtransfer.models.sources.source_key``).

Random init runs the no-freeze strategy only (freezing a random backbone trains a probe of
noise, which the paper does not run). The study's own files appear in the run configs relative
to the study directory (``folds/{target}.csv``, ``sources/{name}.pt``), so that a study directory
can be moved or copied; files the study file names (a target's ``folds_file``, a source's
``path``) are made absolute.

A sweep's settings (:mod:`medtransfer.study.sweep`) label the target too, by the settings in which a
cell differs from the study's own (``thyroid~lr=0.0001``); a study without a sweep keeps its run ids.
"""

from __future__ import annotations

from pathlib import Path

from medtransfer.data.registry import single_fold
from medtransfer.errors import ConfigError
from medtransfer.models.sources import source_key
from medtransfer.study import sweep as sweeps
from medtransfer.study.config import SourceSpec, StudyConfig, TargetSpec
from medtransfer.study.transfer_axis import variant_label
from medtransfer.training.config import RunConfig, TransferSetting
from medtransfer.training.record import study_folds_file, study_source_file
from medtransfer.vocabulary import NO_FREEZE


def _outside(path: str) -> str:
    return str(Path(path).expanduser().resolve())


def source_reference(source: SourceSpec, out: Path | None = None, backbone: str | None = None) -> str:
    """The string given to ``load_source``: a pretrained source's file relative to the study
    directory, a weights file (absolute), or the name (with its backbone,
    ``imagenet@densenet121``; a file holds its own). ``out`` is unused (kept for callers)."""
    if source.pretrain is not None:
        return study_source_file(source.name)
    return _outside(source.path) if source.path else source_key(source.name, backbone)


def backbones_for(study: StudyConfig, source: SourceSpec) -> list[str]:
    """A source's backbones: its own, else the study's axis."""
    return [source.backbone] if source.backbone else list(study.backbones)


def target_label(target: TargetSpec, backbone: str) -> str:
    """A target's label in run ids and tables: its name, ``name@backbone`` off ResNet50."""
    return target.name if backbone == "resnet50" else f"{target.name}@{backbone}"


def folds_path(target: TargetSpec, out: Path | None) -> str | None:
    """The folds file of a target: the study's ``folds/{target}.csv`` (relative to the study
    directory) unless the target names one; ``None`` without a study directory."""
    if target.folds_file:
        return _outside(target.folds_file)
    return None if out is None else study_folds_file(target.name)


def strategies_for(study: StudyConfig, source: SourceSpec, transfer: TransferSetting | None = None) -> list[str]:
    """A source's strategies: its own list, else the study's; random init and a source's transfer
    runs (``transfer``) no-freeze only."""
    wanted = list(source.strategies or study.strategies)
    fresh = source.is_random or transfer is not None
    return [NO_FREEZE] if fresh and NO_FREEZE in wanted else ([] if fresh else wanted)


def setting_label(values: dict, setting: dict, k_folds: int) -> str:
    """The label of a cell at ``setting`` (one of the sweep's) whose training values without the
    sweep are ``values``: the swept values that differ, as a run reads them, from ``values``
    (``""``: none; :func:`medtransfer.study.sweep.setting_label`)."""
    if not setting:
        return ""
    check = {"target": "check", "k_folds": k_folds}
    without = RunConfig.model_validate({**check, **values})
    within = RunConfig.model_validate({**check, **values, **setting})
    return sweeps.setting_label({k: getattr(within, k) for k in setting if getattr(within, k) != getattr(without, k)})


def run_config(study: StudyConfig, target: TargetSpec, source: SourceSpec, strategy: str, fold: int, seed: int,
               out: Path | None = None, backbone: str = "resnet50", setting: dict | None = None,
               transfer: TransferSetting | None = None) -> RunConfig:
    """The RunConfig of one grid cell; study-wide ``training`` constants, then the target's, then
    the source's, then ``setting`` (one of the sweep's, which labels the target); ``transfer`` (one
    of the source's transfer variants) labels the source."""
    values = dict(study.training)
    values.update(target.training)
    if target.size is not None:
        values["size"] = target.size
    if target.batch_size is not None:
        values["batch_size"] = target.batch_size
    if target.hflip is not None:
        values["hflip"] = target.hflip
    values.update(source.training)
    label = sweeps.labelled(target_label(target, backbone), setting_label(values, setting or {}, study.k_folds))
    values.update(setting or {})
    values.update(
        target=target.manifest_name, target_name=label, root=target.root,
        target_options=dict(target.options), source=source_reference(source, out, backbone), source_name=source.name, normalization=source.normalization,
        strategy=strategy, fold=fold, seed=seed, k_folds=study.k_folds, split_seed=study.split_seed,
        split_fractions=study.split_fractions, folds_file=folds_path(target, out),
    )
    if transfer is not None:  # absent otherwise: a study without transfer keeps its run configs
        values.update(transfer=transfer, source_name=variant_label(source.name, transfer))
    return RunConfig.parse(values, where=f"study run {label}/{values['source_name']}-{strategy}/fold{fold}")


def expand(study: StudyConfig, out: Path | None = None) -> list[RunConfig]:
    """Every run of the study, in a stable order (target, backbone, source, strategy, fold, seed, setting).

    With ``out`` (the study directory) the runs read the study's own folds files.
    """
    runs = []
    backbones = list(dict.fromkeys(b for source in study.sources for b in backbones_for(study, source)))
    for target in study.targets:
        folds = [0] if single_fold(target.manifest_name, target.options) else study.fold_list
        for backbone in backbones:
            for source in study.sources:
                if backbone not in backbones_for(study, source):
                    continue
                for transfer in source.transfers(backbone):
                    for strategy in strategies_for(study, source, transfer):
                        for fold in folds:
                            for seed in study.seeds:
                                runs += [run_config(study, target, source, strategy, fold, seed, out, backbone,
                                                    setting, transfer)
                                         for setting in sweeps.settings(study.sweep)]
    ids = [r.run_id for r in runs]
    twice = sorted({i for i in ids if ids.count(i) > 1}) if len(set(ids)) < len(ids) else []
    if twice:
        raise ConfigError(f"sweep: two settings give the same cell ({twice[0]}{' and more' if len(twice) > 1 else ''}): a "
                          "setting equal to the study's own (after its target's and source's settings) is the "
                          "unlabelled cell already; remove one of the two")
    return runs

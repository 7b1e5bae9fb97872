"""Expand a study into its runs: targets x sources x strategies x folds x seeds.

Random init runs the no-freeze strategy only (freezing a random backbone trains a probe of
noise, which the paper does not run). The study's own files appear in the run configs relative
to the study directory (``folds/{target}.csv``, ``sources/{name}.pt``), so that a study directory
can be moved or copied; files the study file names (a target's ``folds_file``, a source's
``path``) are made absolute.
"""

from __future__ import annotations

from pathlib import Path

from medtransfer.study.config import SourceSpec, StudyConfig, TargetSpec
from medtransfer.training.config import RunConfig
from medtransfer.vocabulary import NO_FREEZE


def _outside(path: str) -> str:
    return str(Path(path).expanduser().resolve())


def source_reference(source: SourceSpec, out: Path | None = None) -> str:
    """The string given to ``load_source``: a pretrained source's file relative to the study
    directory, a weights file (absolute), or the name. ``out`` is unused (kept for callers)."""
    if source.pretrain is not None:
        return f"sources/{source.name}.pt"
    return _outside(source.path) if source.path else source.name


def folds_path(target: TargetSpec, out: Path | None) -> str | None:
    """The folds file of a target: the study's ``folds/{target}.csv`` (relative to the study
    directory) unless the target names one; ``None`` without a study directory."""
    if target.folds_file:
        return _outside(target.folds_file)
    return None if out is None else f"folds/{target.name}.csv"


def strategies_for(study: StudyConfig, source: SourceSpec) -> list[str]:
    """A source's strategies: its own list, else the study's; random init no-freeze only."""
    wanted = list(source.strategies or study.strategies)
    return [NO_FREEZE] if source.is_random and NO_FREEZE in wanted else ([] if source.is_random else wanted)


def run_config(study: StudyConfig, target: TargetSpec, source: SourceSpec, strategy: str, fold: int, seed: int,
               out: Path | None = None) -> RunConfig:
    """The RunConfig of one grid cell; study-wide ``training`` constants, then the target's."""
    values = dict(study.training)
    values.update(target.training)
    if target.size is not None:
        values["size"] = target.size
    if target.batch_size is not None:
        values["batch_size"] = target.batch_size
    if target.hflip is not None:
        values["hflip"] = target.hflip
    values.update(
        target=target.manifest_name, target_name=target.name, root=target.root, target_options=dict(target.options),
        source=source_reference(source, out), source_name=source.name, normalization=source.normalization,
        strategy=strategy, fold=fold, seed=seed, k_folds=study.k_folds, split_seed=study.split_seed,
        split_fractions=study.split_fractions, folds_file=folds_path(target, out),
    )
    return RunConfig.parse(values, where=f"study run {target.name}/{source.name}-{strategy}/fold{fold}")


def expand(study: StudyConfig, out: Path | None = None) -> list[RunConfig]:
    """Every run of the study, in a stable order (target, source, strategy, fold, seed).

    With ``out`` (the study directory) the runs read the study's own folds files.
    """
    runs = []
    for target in study.targets:
        for source in study.sources:
            for strategy in strategies_for(study, source):
                for fold in study.fold_list:
                    for seed in study.seeds:
                        runs.append(run_config(study, target, source, strategy, fold, seed, out))
    return runs

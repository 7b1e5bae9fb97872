"""Expand a study into its runs: targets x sources x strategies x folds x seeds.

Random init runs the no-freeze strategy only (freezing a random backbone trains a probe of
noise, which the paper does not run).
"""

from __future__ import annotations

from pathlib import Path

from medtransfer.study.config import SourceSpec, StudyConfig, TargetSpec
from medtransfer.training.config import RunConfig


def source_reference(source: SourceSpec, out: Path | None) -> str:
    """The string given to ``load_source``: a path, a pretrained source's file, or the name."""
    if source.pretrain is not None:
        return str((out or Path(".")) / "sources" / f"{source.name}.pt")
    return source.path or source.name


def folds_path(target: TargetSpec, out: Path | None) -> str | None:
    """The folds file of a target: the study's ``folds/{target}.csv`` unless the target names one."""
    if target.folds_file:
        return target.folds_file
    return None if out is None else str(out / "folds" / f"{target.name}.csv")


def strategies_for(study: StudyConfig, source: SourceSpec) -> list[str]:
    """A source's strategies: its own list, else the study's; random init no-freeze only."""
    wanted = list(source.strategies or study.strategies)
    return ["no-freeze"] if source.is_random and "no-freeze" in wanted else ([] if source.is_random else wanted)


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
        folds_file=folds_path(target, out),
    )
    return RunConfig.parse(values, where=f"study run {target.name}/{source.name}-{strategy}/fold{fold}")


def expand(study: StudyConfig, out: Path | None = None) -> list[RunConfig]:
    """Every run of the study, in a stable order (target, source, strategy, fold, seed).

    ``out`` (the study directory) fixes the absolute paths of the study's own folds and
    pretrained sources.
    """
    out = Path(out).resolve() if out is not None else None  # absolute: analysis may run from elsewhere
    from medtransfer.data.registry import single_fold

    runs = []
    for target in study.targets:
        folds = [0] if single_fold(target.manifest_name, target.options) else study.fold_list
        for source in study.sources:
            for strategy in strategies_for(study, source):
                for fold in folds:
                    for seed in study.seeds:
                        runs.append(run_config(study, target, source, strategy, fold, seed, out))
    return runs

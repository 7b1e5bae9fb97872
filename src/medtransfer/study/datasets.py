"""The datasets of a study, loaded once by the driver before anything is written: every target
and every pretraining set (a source's ``pretrain:``), so that a missing root or a bad option is
reported for all of them at once, before a study directory is made."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medtransfer.data import Manifest, load_manifest
from medtransfer.errors import DataError, MedtransferError
from medtransfer.study.config import StudyConfig
from medtransfer.study.pretrain import pretrain_config, source_run_dir
from medtransfer.study.sweep import split_label
from medtransfer.training.config import RunConfig
from medtransfer.training.record import RunDir


@dataclass(frozen=True)
class StudyDataset:
    """One dataset of a study: ``label`` (``target busi``, ``source bm's pretraining set``), the
    first run that reads it (its size, interpolation, cache folder and folds file, with paths
    relative to the study directory resolved as the run resolves them) and its manifest."""

    label: str
    name: str  # the target's or source's name in the study
    config: RunConfig
    manifest: Manifest
    pretraining: bool = False


def study_datasets(study: StudyConfig, configs: list[RunConfig], out: Path) -> list[StudyDataset]:
    """The targets (one entry per target, whatever its backbones) then the pretraining sets of the
    study in directory ``out`` (which need not exist yet). Raises one ``DataError`` naming every
    dataset that cannot be loaded, and why."""
    wanted: list[tuple[str, str, RunConfig, bool]] = []
    seen: set[str] = set()
    for config in configs:
        name = split_label(config.target_name)[0].split("@")[0]  # one entry per target, whatever its backbone and setting
        if name not in seen:
            seen.add(name)
            wanted.append((f"target {name}", name, RunDir.in_study(out, config).resolve(config), False))
    for source in study.sources:
        if source.pretrain is not None:
            config = pretrain_config(source, study.training)
            wanted.append((f"source {source.name}'s pretraining set", source.name,
                           RunDir(source_run_dir(source, out)).resolve(config), True))
    loaded, problems = [], []
    for label, name, config, pretraining in wanted:
        try:
            manifest = load_manifest(config.target, config.root, **config.target_options)
        except MedtransferError as error:
            problems.append(f"  {label} ({config.target}): {error}")
            continue
        loaded.append(StudyDataset(label, name, config, manifest, pretraining))
    if problems:
        raise DataError(f"{len(problems)} of the study's {len(wanted)} datasets cannot be loaded (give each a "
                        "'root:' under its target, or under the source's 'pretrain:'; a relative root is read from the "
                        "working directory):\n" + "\n".join(problems))
    return loaded

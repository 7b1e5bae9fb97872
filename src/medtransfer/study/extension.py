"""What a rerun may change: a study directory grows by grid entries, and nothing it holds is redone.

``medtransfer run STUDY.yaml --out DIR`` on a study directory compares the study file with what
``DIR`` holds, before anything is written:

- a run the study plans whose ``config.json`` differs from the planned run in a setting that
  changes what it computes (:func:`changed_settings`; how runs execute - device, threads,
  checkpoint interval, ... - may change) is refused, naming the run and each field;
- a source the study pretrains whose pretraining run was made with other settings is refused,
  naming the source and each field (the fine-tuned runs read it from the same path, so their own
  configs cannot tell);
- a run directory in ``DIR`` that the study no longer plans is refused, naming it: the recorded
  study describes every run of its directory (``analyze`` checks the runs against it).

Anything else is an extension: new targets, sources, backbones, folds, seeds, sweep values
(:mod:`medtransfer.study.sweep`), transfer depths and inits (:mod:`medtransfer.study.transfer_axis`),
and the sections that do not change a run (``analysis:``, ``evaluate:``, ``executor:``,
``tracking:``, ``leakage:``, ``name``, ``description``). Each finished run keeps its run id,
directory and files, byte for byte; the new runs train; and the recorded study
(``DIR/study.resolved.yaml``) is replaced, atomically, by the new one once every check passed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medtransfer.errors import ConfigError, DataError
from medtransfer.study.config import EXECUTION_FIELDS, StudyConfig
from medtransfer.study.pretrain import pretrain_config, source_file, source_run_dir
from medtransfer.training.config import RunConfig
from medtransfer.training.record import RunDir, find_all_run_dirs

__all__ = ["changed_settings", "check_no_dropped_runs", "check_sources_unchanged", "check_unchanged"]

# fields that may change between two invocations without changing what a run computes
# (older runs also recorded the derived classes and normalisation in config.json)
_FREE_FIELDS = set(EXECUTION_FIELDS) | {"keep_last", "classes", "eval_batch_size"}
_PATH_FIELDS = ("folds_file", "source")
_SHOWN = 5


def _same(key: str, saved: Any, planned: Any, base: Path) -> bool:
    if saved == planned:
        return True
    if key not in _PATH_FIELDS or not isinstance(saved, str) or not isinstance(planned, str):
        return False
    where = {(base / p).resolve() if not Path(p).is_absolute() else Path(p).resolve() for p in (saved, planned)}
    return len(where) == 1


def changed_settings(config: RunConfig, saved: dict[str, Any], study_dir: Path) -> list[str]:
    """The settings that change what a run computes and differ between ``saved`` (its
    ``config.json``) and the planned ``config``, each as ``key: saved -> planned``."""
    planned = config.model_dump(mode="json")
    changed = sorted(key for key, value in planned.items()
                     if key not in _FREE_FIELDS and not (key == "normalization" and value is None)
                     and not _same(key, saved.get(key), value, study_dir))
    return [f"{k}: {saved.get(k)!r} -> {planned[k]!r}" for k in changed]


def _saved_config(directory: RunDir, what: str) -> dict[str, Any] | None:
    try:
        return directory.read_config_data()
    except DataError as error:  # names the file
        raise ConfigError(f"{what}: {error}; the run directory is damaged: delete that run "
                          f"directory ({directory.path}) to redo the run") from None


def check_unchanged(config: RunConfig, directory: RunDir | Path, study_dir: Path | None = None) -> None:
    """Refuse (ConfigError naming the run and each field) when the run in ``directory`` was started
    with settings other than ``config``'s; a directory without ``config.json`` is not started."""
    directory = directory if isinstance(directory, RunDir) else RunDir(directory)
    study_dir = Path(study_dir) if study_dir is not None else (directory.base or directory.path)
    saved = _saved_config(directory, f"run {config.run_id}")
    if saved is None:
        return
    changed = changed_settings(config, saved, study_dir)
    if changed:
        raise ConfigError(f"run {config.run_id} in {directory.path} was started with different settings "
                          f"({', '.join(changed)}); use a new --out directory, or delete that run directory to redo it")


def check_sources_unchanged(study: StudyConfig, out: Path) -> None:
    """Refuse (ConfigError naming the source and each field) when a source that ``study`` pretrains
    was made in ``out`` with other settings than its ``pretrain:`` section (and the study's
    ``training:``) give now."""
    out = Path(out)
    for source in study.sources:
        if source.pretrain is None:
            continue
        planned = pretrain_config(source, study.training)
        directory = RunDir(source_run_dir(source, out))
        saved = _saved_config(directory, f"source {source.name}")
        changed = [] if saved is None else changed_settings(planned, saved, out)
        if changed:
            raise ConfigError(
                f"source {source.name}: its pretraining run in {directory.path} was made with different settings "
                f"({', '.join(changed)}; the study file's sources.{source.name}.pretrain), and the runs "
                f"fine-tuned from it read {source_file(out, source.name)}; use a new --out directory, or delete "
                "that run directory, that file and the runs fine-tuned from it to redo them")


def check_no_dropped_runs(configs: list[RunConfig], out: Path) -> None:
    """Refuse (ConfigError naming them) when ``out`` holds run directories that are not among the
    planned ``configs``: a rerun may add runs to a study, not leave runs out."""
    planned = {config.run_id for config in configs}
    dropped = [run_id for run_id in find_all_run_dirs(out) if run_id not in planned]
    if dropped:
        shown = ", ".join(dropped[:_SHOWN]) + (f" and {len(dropped) - _SHOWN} more" if len(dropped) > _SHOWN else "")
        raise ConfigError(f"the study file leaves out {len(dropped)} run(s) that {out} holds ({shown}): a rerun may "
                          "add targets, sources, folds, seeds, sweep values or transfer depths to a study, not "
                          "remove any (the study recorded there must describe every run in it); put them back in "
                          "the study file, or use a new --out directory, or delete those run directories")

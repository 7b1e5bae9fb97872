"""The run directory: its layout, its markers and its typed record - the one owner of all three.

A run directory (``DIR/runs/{run id}/`` inside a study, any directory for a lone run) holds

====================================  ==========================================================
``config.json``                       the :class:`RunConfig` as given (never rewritten)
``facts.json``                        what the run learnt: :class:`RunFacts` (classes, ...)
``folds.csv``                         the fold's ``image_id, fold, split`` rows
``history.csv``                       one row per epoch (:data:`HISTORY_COLUMNS`)
``checkpoints/best.pt``               the fine-tuned model (``last.pt`` while unfinished, with the
                                      best-weights snapshot ``best.{phase}.{epoch}.pt`` it names)
``predictions.csv``, ``metrics.json``  test probabilities and metrics after fine-tuning
``probe/``                            freeze runs: ``head.pt``, ``predictions.csv``, ``metrics.json``
``corruptions/{name}.csv``            test probabilities under one corruption at severities 1..5
                                      (:mod:`medtransfer.training.robustness`; added after ``DONE``,
                                      whose digests then name it too)
``transfer/{name}.csv``               predictions on another dataset mapped to the run's classes
                                      (likewise added after ``DONE``)
``progress.json``                     the run's progress (:class:`medtransfer.training.progress.RunProgress`)
``mlflow.json``                       its MLflow run (:mod:`medtransfer.tracking.mlflow_sink`)
``outcome.json``                      what a SLURM job made of the run, for its driver
                                      (:mod:`medtransfer.study.executors`; never a pickle)
``RUNNING`` / ``FAILED``              a live claim (:mod:`medtransfer.study.claims`; ``RUNNING.break``
                                      while one is broken) / the error
``DONE``                              written last: finish time and the sha256 and size of every
                                      file in :data:`SEALED` that the run wrote
====================================  ==========================================================

Only this module names a run directory's files, joins its paths or parses its JSON: training
writes through :class:`RunDir`, the study's status and runner and the analysis read
:class:`RunRecord` via :func:`read_record`, and the per-run files of other modules (progress,
tracking, the ownership claim) take their paths from :class:`RunDir`. A new per-run file gets
its name here (and in :data:`LAYOUT`).

A study directory holds ``study.resolved.yaml`` (:data:`STUDY_FILE`: the resolved study, under a
name of its own so that ``run study.yaml --out .`` never rewrites the user's file; studies written
by earlier versions kept it in ``study.yaml``, :data:`LEGACY_STUDY_FILE`), ``folds/{target}.csv``
(:func:`study_folds_file`), ``sources/{name}.pt`` (:func:`study_source_file`, made by the
pretraining run in :func:`pretrain_run_dir`) and ``runs/{run id}/``; then what is made from them:
``results/`` (:func:`study_results_file`), ``analysis/`` with ``analysis/figures/``, ``report.html``
and, on SLURM, ``slurm/`` (:data:`RESULTS_DIR` and the names beside it). Paths in a study's run configs
are relative to the study directory, so a study can be moved or copied; :meth:`RunDir.base` is
that directory (``None`` outside a study: relative paths are then relative to the working directory).

Integrity: :meth:`RunDir.check` compares what is on disk with ``DONE``'s digests. ``quick``
checks presence and sizes, and hashes only the files whose modification time changed since the
digest (cheap enough for ``status`` on hundreds of runs, yet a file edited to the same size is
found), ``full`` hashes every file (``run``, ``analyze`` and ``status --verify``). A ``DONE`` that is exactly ``{"finished": time}`` (what runs
written before digests existed wrote) is accepted as *unverified* (:attr:`RunRecord.verified` is
``False``); any other marker without valid digests (empty, truncated, not JSON) is damaged.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from medtransfer.atomic import write_text_atomic
from medtransfer.errors import DataError
from medtransfer.training.config import RunConfig
from medtransfer.vocabulary import FREEZE, SourceRef

RUNS, STUDY_FILE, FOLDS_DIR, SOURCES = "runs", "study.resolved.yaml", "folds", "sources"
LEGACY_STUDY_FILE = "study.yaml"  # the resolved study of studies written before STUDY_FILE
# the study directory's outputs: the results tables, the analysis (its figures), the report, SLURM logs
RESULTS_DIR, ANALYSIS_DIR, FIGURES_DIR, REPORT_FILE, SLURM_DIR = "results", "analysis", "figures", "report.html", "slurm"
CONFIG, FACTS, FOLDS, HISTORY = "config.json", "facts.json", "folds.csv", "history.csv"
PREDICTIONS, METRICS = "predictions.csv", "metrics.json"
# the tables of results/ (AUC per run, Table 2) and of analysis/ (the same names, and the similarity)
AUC_TABLE, TABLE2_CSV, TABLE2_MD, SIMILARITY_TABLE = "auc.csv", "table2.csv", "table2.md", "similarity.csv"
CHECKPOINTS, BEST, LAST = "checkpoints", "best.pt", "last.pt"
PROBE, PROBE_HEAD = "probe", "head.pt"
DONE, RUNNING, FAILED = "DONE", "RUNNING", "FAILED"
CLAIM_LOCK = f"{RUNNING}.break"
PROGRESS, MLFLOW, OUTCOME = "progress.json", "mlflow.json", "outcome.json"
CORRUPTIONS = "corruptions"  # corruptions/{name}.csv, written after DONE and added to its digests
TRANSFER = "transfer"  # transfer/{name}.csv: predictions on another dataset, likewise
SNAPSHOT = "best.{phase}.{epoch:04d}.pt"  # in checkpoints/, named by last.pt
SNAPSHOT_GLOB = "best.*.pt"
# every name in a run directory (files, folders, markers): no other module spells one
LAYOUT = (CONFIG, FACTS, FOLDS, HISTORY, PREDICTIONS, METRICS, CHECKPOINTS, BEST, LAST, PROBE, PROBE_HEAD, DONE,
          RUNNING, FAILED, CLAIM_LOCK, PROGRESS, MLFLOW, OUTCOME, CORRUPTIONS, TRANSFER)
HISTORY_COLUMNS = ["phase", "epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_auc",
                   "seconds"]
# what a finished run wrote for good, relative to its directory (each digested in DONE if present)
SEALED = (CONFIG, FACTS, FOLDS, METRICS, PREDICTIONS, f"{CHECKPOINTS}/{BEST}",
          f"{PROBE}/{PROBE_HEAD}", f"{PROBE}/{PREDICTIONS}", f"{PROBE}/{METRICS}")
CHUNK = 1 << 20
Check = Literal["full", "quick", "none"]


def study_folds_file(target: str) -> str:
    """The folds table a study cuts for ``target``, relative to the study directory."""
    return f"{FOLDS_DIR}/{target}.csv"


def study_source_file(name: str) -> str:
    """The weights file of a source the study pretrains itself, relative to the study directory."""
    return f"{SOURCES}/{name}.pt"


def study_results_file(name: str) -> str:
    """A results table of the study (``auc.csv``, ``table2.csv``, ``table2.md``), relative to it."""
    return f"{RESULTS_DIR}/{name}"


def pretrain_run_dir(name: str) -> str:
    """The run directory of the pretraining run that makes source ``name``, relative to the study."""
    return f"{SOURCES}/{name}-run"


def _is_filled(text: str | None) -> bool:
    """Whether a history.csv field is present (a line cut short lacks its last fields)."""
    return isinstance(text, str) and bool(text.strip())


def file_digest(path: Path) -> dict[str, Any]:
    """``{"sha256": hex, "bytes": size, "mtime_ns": modification time}`` of a file, read in 1 MiB
    chunks (the time lets a quick check skip the hash of a file nobody has written since)."""
    h = hashlib.sha256()
    before = path.stat()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            h.update(chunk)
    return {"sha256": h.hexdigest(), "bytes": before.st_size, "mtime_ns": before.st_mtime_ns}


def file_problem(path: Path, expected: dict[str, Any], check: Check = "full") -> str | None:
    """Why ``path`` is not the file ``expected`` (:func:`file_digest`) describes, or ``None``.

    ``full`` compares the size and the sha256. ``quick`` compares the size, and the sha256 only
    when the modification time differs from the recorded one (a file edited in place, even to the
    same size, gets a new time; a copied study gets new times and is hashed once per check); a
    digest recorded without a time is hashed. ``none`` checks nothing."""
    if check == "none":
        return None
    if not path.is_file():
        return f"{path} is missing"
    stat = path.stat()
    if stat.st_size != expected.get("bytes"):
        return f"{path} has {stat.st_size} bytes, {expected.get('bytes')} were written"
    if check == "quick" and expected.get("mtime_ns") == stat.st_mtime_ns:
        return None
    if file_digest(path)["sha256"] != expected.get("sha256"):
        return f"{path} differs from what was written (sha256)"
    return None


def seal_file(path: Path) -> Path:
    """Record ``path``'s digest beside it (``{name}.sha256.json``); returns that file."""
    sidecar = path.with_name(path.name + ".sha256.json")
    write_text_atomic(sidecar, json.dumps(file_digest(path)))
    return sidecar


def sealed_file_problem(path: Path, check: Check = "full") -> str | None:
    """Why a file sealed by :func:`seal_file` is damaged, or ``None`` (also ``None`` if never sealed)."""
    sidecar = path.with_name(path.name + ".sha256.json")
    if not sidecar.is_file():
        return None
    try:
        expected = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return f"{sidecar} is not readable JSON"
    return file_problem(path, expected, check)


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise DataError(f"{path}: cannot read the run's {what} ({error.strerror or error})") from None
    except ValueError as error:
        raise DataError(f"{path}: the run's {what} is not valid JSON ({error})") from None


@dataclass(frozen=True)
class RunFacts:
    """What a run learns while it starts: the class names (label order), the input normalisation
    mode its source uses, the device it trained on, and the sha256 of the weights file its source
    was read from (``None`` for random init, and in runs written before it was recorded)."""

    classes: list[str]
    normalization: str | None
    device: str | None = None
    source_sha256: str | None = None

    def to_json(self) -> str:
        return json.dumps({"classes": list(self.classes), "normalization": self.normalization,
                           "device": self.device, "source_sha256": self.source_sha256}, indent=2)


class DamagedRunError(DataError):
    """A finished run whose files differ from what it wrote; ``problems`` names each file."""

    def __init__(self, directory: Path, problems: list[str]) -> None:
        self.directory = Path(directory)
        self.problems = problems
        super().__init__(f"run {directory} is damaged: " + "; ".join(problems)
                         + " - `medtransfer run` recomputes it")


_EVALUATION_FILE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\.csv")


def is_sealable(name: str) -> bool:
    """Whether ``name`` (relative to a run directory, as ``DONE`` lists it) is a file a run writes
    and seals: one of :data:`SEALED`, or one evaluation file ``corruptions/{name}.csv`` /
    ``transfer/{name}.csv`` added after ``DONE`` (never a path that leaves its folder)."""
    if name in SEALED:
        return True
    folder, _, file = name.partition("/")
    return folder in (CORRUPTIONS, TRANSFER) and _EVALUATION_FILE.fullmatch(file) is not None


@dataclass(frozen=True)
class RunDir:
    """The files of one run directory (nothing is read or created until asked)."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @classmethod
    def in_study(cls, study_dir: str | os.PathLike, config: RunConfig) -> RunDir:
        """The directory of ``config``'s run in a study directory: ``DIR/runs/{run id}``."""
        return cls(runs_folder(study_dir) / config.run_id)

    # -- layout -----------------------------------------------------------------------------

    def file(self, name: str) -> Path:
        """A file of the run by its name relative to the run directory (e.g. ``probe/head.pt``)."""
        return self.path / name

    config_file = property(lambda self: self.path / CONFIG)
    facts_file = property(lambda self: self.path / FACTS)
    folds = property(lambda self: self.path / FOLDS)
    history = property(lambda self: self.path / HISTORY)
    predictions = property(lambda self: self.path / PREDICTIONS)
    metrics = property(lambda self: self.path / METRICS)
    checkpoints = property(lambda self: self.path / CHECKPOINTS)
    best = property(lambda self: self.path / CHECKPOINTS / BEST)
    last = property(lambda self: self.path / CHECKPOINTS / LAST)
    probe = property(lambda self: self.path / PROBE)
    probe_head = property(lambda self: self.path / PROBE / PROBE_HEAD)
    probe_predictions = property(lambda self: self.path / PROBE / PREDICTIONS)
    probe_metrics = property(lambda self: self.path / PROBE / METRICS)
    done = property(lambda self: self.path / DONE)
    running = property(lambda self: self.path / RUNNING)
    claim_lock = property(lambda self: self.path / CLAIM_LOCK)
    failed = property(lambda self: self.path / FAILED)
    progress = property(lambda self: self.path / PROGRESS)
    mlflow = property(lambda self: self.path / MLFLOW)
    outcome = property(lambda self: self.path / OUTCOME)

    def corruption_file(self, name: str) -> Path:
        """The test predictions under corruption ``name`` (``corruptions/{name}.csv``)."""
        return self.path / CORRUPTIONS / f"{name}.csv"

    def corruption_files(self) -> dict[str, Path]:
        """The corruption files ``DONE`` records, by corruption name (a file on disk that ``DONE``
        does not name - written by an evaluation killed before it sealed it - is not among them)."""
        return self._sealed_in(CORRUPTIONS)

    def transfer_file(self, name: str) -> Path:
        """The predictions on another dataset ``name`` (``transfer/{name}.csv``)."""
        return self.path / TRANSFER / f"{name}.csv"

    def transfer_files(self) -> dict[str, Path]:
        """The cross-target files ``DONE`` records, by dataset name (see :meth:`corruption_files`)."""
        return self._sealed_in(TRANSFER)

    def _sealed_in(self, folder: str) -> dict[str, Path]:
        found = {}
        for name in sorted(self.digests() or {}):
            path = Path(name)
            if path.parent.as_posix() == folder and path.suffix == ".csv":
                found[path.stem] = self.path / path
        return found

    def snapshot(self, name: str) -> Path:
        """A best-weights snapshot under ``checkpoints/`` by its file name (as ``last.pt`` names it)."""
        return self.checkpoints / name

    @staticmethod
    def snapshot_name(phase: str, epoch: int) -> str:
        """The file name of the best-weights snapshot of ``phase`` taken before ``epoch``."""
        return SNAPSHOT.format(phase=phase, epoch=epoch)

    def snapshots(self) -> list[Path]:
        """Every best-weights snapshot under ``checkpoints/`` (normally one; more after a kill)."""
        return sorted(self.checkpoints.glob(SNAPSHOT_GLOB))

    def artifacts(self) -> list[Path]:
        """The files a run shares with a tracker, those that exist: test predictions and metrics,
        history, config (and the probe's predictions and metrics)."""
        files = (self.predictions, self.metrics, self.history, self.config_file, self.probe_predictions,
                 self.probe_metrics)
        return [p for p in files if p.is_file()]

    @property
    def id_in_study(self) -> str | None:
        """The run id this directory stands for inside its study (``None`` outside one)."""
        base = self.base
        return None if base is None else self.path.relative_to(runs_folder(base)).as_posix()

    def relative(self, path: Path) -> str:
        """``path`` relative to the run directory, as a POSIX string (``probe/metrics.json``)."""
        return Path(path).relative_to(self.path).as_posix()

    @property
    def base(self) -> Path | None:
        """The study directory this run lies in (``DIR`` of ``DIR/runs/{run id}``, or of a
        pretraining run's ``DIR/sources/{name}-run``), else ``None``."""
        if self.path.parent.name == SOURCES:
            return self.path.parent.parent
        for parent in self.path.parents:
            if parent.name == RUNS:
                return parent.parent
        return None

    def resolve(self, config: RunConfig) -> RunConfig:
        """``config`` with its study-relative paths (folds file, source file, pixel cache) made
        usable here (absolute, so that resolving twice or from another working directory is
        harmless)."""
        base = self.base
        if base is None:
            return config
        base = base.absolute()
        update: dict[str, Any] = {}
        for key in ("folds_file", "cache_dir"):
            value = getattr(config, key)
            if value and not Path(value).expanduser().is_absolute():
                update[key] = str(base / value)
        source = SourceRef.of(config.source)
        if source.is_file and not Path(source.text).is_absolute():
            update["source"] = source.resolve(base)
        return config.model_copy(update=update) if update else config

    # -- what the run writes ----------------------------------------------------------------

    def write_config(self, config: RunConfig) -> None:
        """Write ``config.json`` (the config as given)."""
        write_text_atomic(self.config_file, config.to_json())

    def read_config_data(self) -> dict[str, Any] | None:
        """``config.json`` as a mapping (``None`` when absent)."""
        if not self.config_file.exists():
            return None
        data = _read_json(self.config_file, "config")
        if not isinstance(data, dict):
            raise DataError(f"{self.config_file}: expected a JSON object with the run's config")
        return data

    def read_config(self) -> RunConfig:
        """The run's :class:`RunConfig`."""
        data = self.read_config_data()
        if data is None:
            raise DataError(f"{self.config_file}: missing (not a run directory)")
        return RunConfig.parse(data, where=str(self.config_file))

    def write_facts(self, facts: RunFacts) -> None:
        write_text_atomic(self.facts_file, facts.to_json())

    def read_facts(self, config: RunConfig) -> RunFacts:
        """``facts.json``; older runs recorded the same facts inside ``config.json``."""
        if not self.facts_file.exists():
            return RunFacts(list(config.classes or []), config.normalization)
        data = _read_json(self.facts_file, "facts")
        try:
            digest = data.get("source_sha256")
            return RunFacts([str(c) for c in data["classes"]], data.get("normalization"), data.get("device"),
                            str(digest) if digest is not None else None)
        except (KeyError, TypeError, AttributeError):
            raise DataError(f"{self.facts_file}: expected classes, normalization and device") from None

    def read_metrics(self, probe: bool = False) -> dict[str, Any]:
        """``metrics.json`` (or the probe's) as a mapping."""
        path = self.probe_metrics if probe else self.metrics
        data = _read_json(path, "metrics")
        if not isinstance(data, dict):
            raise DataError(f"{path}: expected a JSON object of metrics")
        return data

    def write_done(self) -> None:
        """Write ``DONE`` (last), with the digest of every sealed file the run wrote."""
        files = {name: file_digest(self.file(name)) for name in SEALED if self.file(name).is_file()}
        write_text_atomic(self.done, json.dumps({"finished": time.time(), "files": files}, indent=2))

    def seal(self, *paths: Path) -> None:
        """Add the digests of ``paths`` (files the run directory holds, written after ``DONE``) to
        ``DONE``, rewritten atomically; from then on :meth:`check` covers them. Refused (``DataError``)
        for a run whose ``DONE`` carries no digests: sealing would pass its other files unverified.
        One process at a time: two sealing at once may lose one of the additions (it is then
        recomputed, as if never written)."""
        state, _ = self.marker()
        if state != "verified":
            raise DataError(f"{self.done}: the run's marker carries no digests of its files ({state}); "
                            "run it again with this medtransfer before adding files to it")
        data = _read_json(self.done, "DONE marker")
        for path in paths:
            data["files"][self.relative(path)] = file_digest(Path(path))
        write_text_atomic(self.done, json.dumps(data, indent=2))

    # -- state ------------------------------------------------------------------------------

    def is_done(self) -> bool:
        return self.done.exists()

    def marker(self) -> tuple[str, dict[str, dict[str, Any]] | None]:
        """What ``DONE`` says: ``("verified", digests)``; ``("legacy", None)`` for the marker of
        runs written before digests (exactly ``{"finished": time}``); ``("damaged", None)`` for
        anything else - empty, unreadable, not JSON, digests missing or malformed."""
        try:
            data = json.loads(self.done.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return "damaged", None
        if not isinstance(data, dict):
            return "damaged", None
        files = data.get("files")
        if isinstance(files, dict) and files and all(
                isinstance(v, dict) and isinstance(v.get("sha256"), str) and isinstance(v.get("bytes"), int)
                for v in files.values()):
            return "verified", files
        if set(data) == {"finished"} and isinstance(data["finished"], (int, float)):
            return "legacy", None
        return "damaged", None

    def digests(self) -> dict[str, dict[str, Any]] | None:
        """The digests ``DONE`` recorded; ``None`` for a marker without them (see :meth:`marker`)."""
        return self.marker()[1]

    def check(self, check: Check = "full") -> list[str]:
        """Problems of a finished run's files (empty: intact, or a legacy marker - see
        :meth:`marker`); a damaged ``DONE`` is a problem itself."""
        if check == "none":
            return []
        state, digests = self.marker()
        if state == "damaged":
            return [f"{self.done} is damaged (empty, not JSON, or without the digests of the run's files)"]
        digests = digests or {}
        # a name no run writes (``../../x``: a file outside the run) is not read; a sealed file that is
        # there but not digested was put there after DONE
        problems = [f"{self.done} lists {name!r}, which is not a file a run writes" for name in digests
                    if not is_sealable(name)]
        if state == "verified":
            problems += [f"{self.file(name)} is not covered by the digests in {self.done} (written after it)"
                         for name in SEALED if name not in digests and self.file(name).is_file()]
        found = [file_problem(self.file(name), expected, check) for name, expected in digests.items()
                 if is_sealable(name)]
        problems += [p for p in found if p]
        if not self.config_file.is_file() and not any(str(self.config_file) in p for p in problems):
            problems.append(f"{self.config_file} is missing")
        return problems

    def write_failed(self, message: str) -> None:
        """Record why the run raised (``FAILED``); the claim itself belongs to :mod:`medtransfer.study.claims`."""
        write_text_atomic(self.failed, message, fsync=True)

    def read_history(self) -> list[dict[str, str]]:
        """``history.csv``'s rows, one dict per epoch keyed by its header (:data:`HISTORY_COLUMNS`),
        values as written (strings); empty if the file is absent or unreadable. A damaged line (cut
        short, overwritten) has no phase or no epoch number and is left out. The one reader of the
        file: the study status and the progress summary read it through here."""
        try:
            text = self.history.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return []
        return [row for row in csv.DictReader(io.StringIO(text))
                if _is_filled(row.get("phase")) and _is_filled(row.get("epoch"))]

    def failure(self) -> str:
        """The last line of ``FAILED`` (the error), or ``""``."""
        try:
            lines = self.failed.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return lines[-1] if lines else ""

    def clear(self) -> None:
        """Delete the run directory (to recompute it from scratch)."""
        shutil.rmtree(self.path, ignore_errors=True)


@dataclass(frozen=True)
class RunRecord:
    """A finished run, typed: its directory, its config as given and the facts it learnt.

    ``verified`` says whether ``DONE`` carried digests that the files matched when read.
    """

    dir: RunDir
    config: RunConfig = field(hash=False, compare=False)
    facts: RunFacts = field(hash=False, compare=False)
    verified: bool = True

    # grid coordinates
    target = property(lambda self: self.config.target_label)
    source = property(lambda self: self.config.source_label)
    strategy = property(lambda self: self.config.strategy)
    fold = property(lambda self: self.config.fold)
    seed = property(lambda self: self.config.seed)
    run_id = property(lambda self: self.config.run_id)
    path = property(lambda self: self.dir.path)
    # files
    checkpoint = property(lambda self: self.dir.best)
    predictions = property(lambda self: self.dir.predictions)
    probe_predictions = property(lambda self: self.dir.probe_predictions)

    @property
    def resolved(self) -> RunConfig:
        """The config with its study-relative paths resolved where the study now is."""
        return self.dir.resolve(self.config)

    @property
    def source_ref(self) -> SourceRef:
        """What the run started from, resolved (a name, or a file that exists here if it can)."""
        return SourceRef.of(self.resolved.source)

    @property
    def load_string(self) -> str:
        """The string that rebuilds the run's initialisation with ``load_source``."""
        return self.source_ref.text

    @property
    def is_random(self) -> bool:
        return self.source_ref.is_random

    @property
    def is_freeze(self) -> bool:
        return self.config.strategy == FREEZE

    @property
    def normalization(self) -> str | None:
        return self.facts.normalization

    @property
    def classes(self) -> list[str]:
        return self.facts.classes

    def metrics(self, probe: bool = False) -> dict[str, Any]:
        return self.dir.read_metrics(probe)


def read_record(directory: str | os.PathLike | RunDir, check: Check = "full") -> RunRecord:
    """The :class:`RunRecord` of a finished run directory.

    Raises:
        DataError: not finished (no ``DONE``), or its config is unreadable.
        DamagedRunError: a file differs from what the run wrote (names each file).
    """
    run = directory if isinstance(directory, RunDir) else RunDir(Path(directory))
    if not run.is_done():
        raise DataError(f"{run.path}: the run has not finished (no {DONE} marker)")
    problems = run.check(check)
    if problems:
        raise DamagedRunError(run.path, problems)
    config = run.read_config()
    return RunRecord(run, config, run.read_facts(config), verified=run.digests() is not None and check != "none")


def recorded_study_file(study_dir: str | os.PathLike) -> Path | None:
    """The resolved study a study directory records: ``DIR/study.resolved.yaml``, else (a study
    written by an earlier medtransfer) ``DIR/study.yaml`` when a ``runs/`` folder lies beside it;
    ``None`` when the folder is no study directory."""
    study_dir = Path(study_dir)
    if (study_dir / STUDY_FILE).is_file():
        return study_dir / STUDY_FILE
    legacy = study_dir / LEGACY_STUDY_FILE
    return legacy if legacy.is_file() and runs_folder(study_dir).is_dir() else None


def runs_folder(study_dir: str | os.PathLike) -> Path:
    """``DIR/runs``, the folder of a study's run directories."""
    return Path(study_dir) / RUNS


def find_all_run_dirs(study_dir: str | os.PathLike) -> dict[str, RunDir]:
    """Every run directory under ``DIR/runs/`` by run id: those with a ``config.json`` or a ``DONE``
    (a finished run whose config was deleted is found too)."""
    found = {}
    for marker in (DONE, CONFIG):
        for path in runs_folder(study_dir).glob(f"**/{marker}"):
            if path.parent.name != PROBE and path.is_file():
                run = RunDir(path.parent)
                found[run.id_in_study] = run
    return dict(sorted(found.items()))


def find_run_dirs(study_dir: str | os.PathLike) -> list[RunDir]:
    """Every run directory under ``DIR/runs/`` (those with a ``config.json``), sorted by path."""
    runs = runs_folder(study_dir)
    found = [p.parent for p in sorted(runs.glob(f"**/{CONFIG}")) if p.parent.name != PROBE]
    return [RunDir(p) for p in found]

"""What a study directory holds: its finished runs, its config, and which runs are missing.

Layout (docs/interfaces.md): ``study.yaml``, ``folds/{target}.csv``, ``runs/{run id}/`` (read
through :mod:`medtransfer.training.record`), ``results/auc.csv``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from medtransfer.errors import DataError
from medtransfer.study.config import read_study_yaml
from medtransfer.training.record import (SOURCES, RunRecord, find_run_dirs, read_record, recorded_study_file,
                                         runs_folder, sealed_file_problem)
from medtransfer.vocabulary import RANDOM, STRATEGIES

__all__ = ["RANDOM", "STRATEGIES", "Run", "Study", "read_study"]


Run = RunRecord  # one finished run, typed (medtransfer.training.record)


@dataclass
class Study:
    """A study directory read for analysis.

    ``runs`` holds finished runs (a ``DONE`` marker); ``incomplete`` the run ids found without one;
    ``config`` the parsed ``study.yaml`` (empty if absent); ``config_text`` its text;
    ``unverified`` the finished runs whose ``DONE`` carries no digests (older medtransfer).
    """

    root: Path
    config: dict[str, Any]
    config_text: str
    runs: list[Run]
    incomplete: list[str]
    unverified: list[str] = field(default_factory=list)
    grid: Any = None  # the analysis' GridCheck (medtransfer.analysis.grid), once checked

    @property
    def targets(self) -> list[str]:
        """Targets in first-seen order."""
        return list(dict.fromkeys(r.target for r in self.runs))

    def folds(self, target: str) -> list[int]:
        """Folds of ``target`` that have at least one finished run, ascending."""
        return sorted({r.fold for r in self.runs if r.target == target})

    def run(self, target: str, source: str, strategy: str, fold: int, seed: int | None = None) -> Run | None:
        """The finished run of this grid cell (of ``seed``, else the lowest seed), or ``None``."""
        found = [
            r for r in self.runs
            if (r.target, r.source, r.strategy, r.fold) == (target, source, strategy, fold)
            and (seed is None or r.seed == seed)
        ]
        return min(found, key=lambda r: r.seed) if found else None

    def seeds(self, target: str, fold: int) -> list[int]:
        """Seeds with a finished run in this target and fold, ascending."""
        return sorted({r.seed for r in self.runs if r.target == target and r.fold == fold})

    @property
    def sources(self) -> list[str]:
        """Source names in first-seen order (study.yaml's order where it lists them)."""
        seen = list(dict.fromkeys(r.source for r in self.runs))
        listed = _listed_sources(self.config)
        order = [s for s in listed if s in seen] + [s for s in seen if s not in listed]
        return order


def _listed_sources(config: dict[str, Any]) -> list[str]:
    sources = config.get("sources") if isinstance(config, dict) else None
    if isinstance(sources, dict):
        return [str(k) for k in sources]
    if isinstance(sources, list):
        names = []
        for s in sources:
            if isinstance(s, dict) and "name" in s:
                names.append(str(s["name"]))
            elif isinstance(s, str):
                names.append(s)
        return names
    return []


def require_study_dir(root: str | Path) -> Path:
    """``root`` as a Path, after checking that it is a folder with a ``runs/`` folder (DataError)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a study directory (it does not exist)")
    if not runs_folder(root).is_dir():
        raise DataError(f"{root}: no runs/ folder: expected a study directory written by `medtransfer run`")
    return root


def read_study(root: str | Path, skip: set[str] = frozenset(), verified: set[str] = frozenset()) -> Study:
    """Read a study directory: its recorded study and every run under ``runs/``.

    ``skip``: run ids left out (runs :func:`medtransfer.analysis.grid.check_grid` found damaged,
    foreign or mismatched); ``verified``: run ids whose digests that check already matched (not
    hashed again).

    Raises:
        DataError: ``root`` is not a directory or holds no ``runs/`` folder.
        DamagedRunError: a finished run's files differ from the digests its ``DONE`` recorded.
    """
    root = require_study_dir(root)
    config: dict[str, Any] = {}
    text = ""
    yaml_path = recorded_study_file(root)
    if yaml_path is not None:
        text = yaml_path.read_text()
        loaded = read_study_yaml(yaml_path)
        config = loaded if isinstance(loaded, dict) else {}
    for made in sorted((root / SOURCES).glob("*.pt")):
        problem = sealed_file_problem(made)
        if problem:
            raise DataError(f"source {made.stem} of the study is damaged: {problem} - `medtransfer run` makes it again")
    runs: list[Run] = []
    incomplete: list[str] = []
    for run_dir in find_run_dirs(root):
        if run_dir.id_in_study in skip:
            continue
        if not run_dir.is_done():
            incomplete.append(run_dir.id_in_study)
            continue
        if run_dir.id_in_study in verified:
            runs.append(replace(read_record(run_dir, check="none"), verified=True))
            continue
        runs.append(read_record(run_dir))  # a damaged run is refused here, naming its files
    unverified = [r.run_id for r in runs if not r.verified]
    return Study(root=root, config=config, config_text=text, runs=runs, incomplete=incomplete, unverified=unverified)

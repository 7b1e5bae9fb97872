"""What a study directory holds: its finished runs, its config, and which runs are missing.

Layout (docs/interfaces.md): ``study.yaml``, ``folds/{target}.csv``, ``runs/{target}/{source}-{strategy}/fold{k}/``
with ``config.json``, ``predictions.csv``, ``probe/predictions.csv`` (freeze runs),
``checkpoints/best.pt`` and ``DONE`` written last; ``results/auc.csv``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medtransfer.errors import ConfigError, DataError

STRATEGIES = ("no-freeze", "freeze")
RANDOM = "random"


@dataclass(frozen=True)
class Run:
    """One finished fine-tuning run.

    ``source`` is the source's name in the run id (e.g. ``imagenet``); ``config["source"]`` is the
    string given to ``load_source`` (a name or a file path), from which the init is rebuilt.
    """

    target: str
    source: str
    strategy: str
    fold: int
    seed: int
    path: Path
    config: dict[str, Any] = field(hash=False, compare=False)

    @property
    def load_string(self) -> str:
        """The string that rebuilds the run's initialisation with ``load_source``."""
        return str(self.config.get("source", self.source))

    @property
    def is_random(self) -> bool:
        """Whether the run started from a random initialisation."""
        return self.load_string == RANDOM or self.source == RANDOM

    @property
    def checkpoint(self) -> Path:
        """The fine-tuned weights (``checkpoints/best.pt``)."""
        return self.path / "checkpoints" / "best.pt"

    @property
    def predictions(self) -> Path:
        """Test-set probabilities after fine-tuning."""
        return self.path / "predictions.csv"

    @property
    def probe_predictions(self) -> Path:
        """Test-set probabilities of the phase-1 linear probe (freeze runs only)."""
        return self.path / "probe" / "predictions.csv"

    @property
    def run_id(self) -> str:
        """``{target}/{source}-{strategy}/fold{k}`` (``-seed{s}`` appended for seeds other than 0)."""
        suffix = "" if self.seed == 0 else f"-seed{self.seed}"
        return f"{self.target}/{self.source}-{self.strategy}/fold{self.fold}{suffix}"


@dataclass
class Study:
    """A study directory read for analysis.

    ``runs`` holds finished runs (a ``DONE`` marker); ``incomplete`` the run ids found without one;
    ``config`` the parsed ``study.yaml`` (empty if absent); ``config_text`` its text.
    """

    root: Path
    config: dict[str, Any]
    config_text: str
    runs: list[Run]
    incomplete: list[str]

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


def _read_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise DataError(f"{path}: not a readable JSON run config ({error})") from error
    if not isinstance(config, dict):
        raise DataError(f"{path}: expected a JSON object with the run's config")
    for key in ("target", "strategy", "fold"):
        if key not in config:
            raise DataError(f"{path}: run config lacks {key!r}")
    if config["strategy"] not in STRATEGIES:
        raise DataError(f"{path}: strategy {config['strategy']!r} is not one of {STRATEGIES}")
    return config


def _source_name(run_dir: Path, config: dict[str, Any]) -> str:
    """The source's name: ``source_name`` of the config, else from the run id ``{source}-{strategy}``."""
    if config.get("source_name"):
        return str(config["source_name"])
    name = run_dir.parent.name
    suffix = "-" + str(config["strategy"])
    if name.endswith(suffix) and len(name) > len(suffix):
        return name[: -len(suffix)]
    return Path(str(config.get("source", name))).stem


def read_study(root: str | Path) -> Study:
    """Read a study directory: its ``study.yaml`` and every run under ``runs/``.

    Raises:
        DataError: ``root`` is not a directory or holds no ``runs/`` folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a study directory (it does not exist)")
    config: dict[str, Any] = {}
    text = ""
    yaml_path = root / "study.yaml"
    if yaml_path.is_file():
        text = yaml_path.read_text()
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ConfigError(f"{yaml_path}: not valid YAML ({error})") from error
        config = loaded if isinstance(loaded, dict) else {}
    runs_dir = root / "runs"
    if not runs_dir.is_dir():
        raise DataError(f"{root}: no runs/ folder: expected a study directory written by `medtransfer run`")
    runs: list[Run] = []
    incomplete: list[str] = []
    for config_path in sorted(runs_dir.glob("**/config.json")):
        run_dir = config_path.parent
        if run_dir.parent.name == "probe":
            continue
        rel = run_dir.relative_to(runs_dir).as_posix()
        if not (run_dir / "DONE").exists():
            incomplete.append(rel)
            continue
        cfg = _read_config(config_path)
        runs.append(
            Run(
                target=str(cfg.get("target_name") or cfg["target"]),
                source=_source_name(run_dir, cfg),
                strategy=str(cfg["strategy"]),
                fold=int(cfg["fold"]),
                seed=int(cfg.get("seed", 0)),
                path=run_dir,
                config=cfg,
            )
        )
    return Study(root=root, config=config, config_text=text, runs=runs, incomplete=incomplete)

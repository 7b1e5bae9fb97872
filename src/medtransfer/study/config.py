"""``StudyConfig``: a grid of fine-tuning runs described in YAML, validated with clear errors.

A study names its targets (dataset, size, batch size), its sources (a name or weights file that
``load_source`` understands, or a source the study pretrains itself), strategies, folds and
seeds, and shared training constants (any ``RunConfig`` field). Unknown keys are errors.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from medtransfer.data.folds import DEFAULT_FOLDS, FoldSpec
from medtransfer.errors import ConfigError
from medtransfer.models import registry
from medtransfer.study import sweep as sweeps
from medtransfer.study.analysis_settings import AnalysisSettings
from medtransfer.study.transfer_axis import transfer_variants, variant_label
from medtransfer.training.config import (MAX_IMAGE_SIDE, MIN_IMAGE_SIDE, RunConfig, StrictModel, check_device, check_label,
                                         describe_validation_error)
from medtransfer.vocabulary import RANDOM, STRATEGIES, NormalizationMode, Strategy
# fields set by the grid itself; a study may not override them through `training:`
GRID_FIELDS = frozenset({"target", "target_name", "root", "target_options", "classes", "source", "source_name",
                         "strategy", "fold", "seed", "k_folds", "split_seed", "folds_file", "normalization"})
# study-wide constants: the folds are cut once per target for the whole study
STUDY_FIELDS = frozenset({"split_fractions"})
# set by a pretraining source's own keys (size, batch_size, epochs, lr, seed)
PRETRAIN_FIELDS = frozenset({"size", "batch_size", "epochs", "lr"})
# the freeze strategy's phase 1: a pretraining run (no-freeze) has none
PROBE_FIELDS = frozenset({"probe_lr", "probe_epochs", "probe_patience"})
# a target's own keys that a target's `training:` would repeat
TARGET_FIELDS = ("size", "batch_size", "hflip")
_WHOLE_STUDY = "a study-wide setting: give it under the study's 'training'"
# settings of a pretraining run alone (it starts from random init): refused in the study's and a target's `training:`
PRETRAINING_FIELDS = frozenset({"conv1_init_scale"})
# how a run executes, not what it computes (a pretraining run takes them from the study's `training:`)
EXECUTION_FIELDS = ("device", "amp", "channels_last", "compile", "threads", "deterministic", "cache_dir", "checkpoint_every_s")
# what a sweep may not vary: the folds (cut once per study) and how runs execute (cells would be duplicates)
_NOT_SWEPT = {**dict.fromkeys(STUDY_FIELDS, "the folds are cut once for the whole study"),
              **dict.fromkeys((*EXECUTION_FIELDS, "keep_last", "eval_batch_size"),
                              "it changes how a run executes, not what it computes")}


def _check_training(values: dict[str, Any], refused: dict[str, str] | None = None,
                    k_folds: int = DEFAULT_FOLDS.k, pretraining: bool = False) -> dict[str, Any]:
    """``values`` of a ``training:`` mapping, checked as RunConfig fields; ``refused`` maps the
    fields that would be ignored here to why. ``pretraining``: the mapping of a pretraining run
    (from random init), the only one that may set :data:`PRETRAINING_FIELDS`."""
    only = sorted(set(values) & PRETRAINING_FIELDS) if not pretraining else []
    if only:
        raise ValueError(f"{only} set a pretraining run's random initialisation: give them under a source's "
                         "'pretrain: training:', not here")
    clash = sorted(set(values) & GRID_FIELDS)
    if clash:
        raise ValueError(f"{clash} are set by the grid (targets/sources/strategies/folds/seeds), "
                         "not under 'training'")
    ignored = sorted(set(values) & set(refused or {}))
    if ignored:
        why = "; ".join(dict.fromkeys(refused[key] for key in ignored))
        raise ValueError(f"{ignored} cannot be set here ({why}); it would be ignored")
    unknown = sorted(set(values) - set(RunConfig.model_fields))
    if unknown:
        raise ValueError(f"unknown training constant(s) {unknown}; expected RunConfig fields such as lr, "
                         "epochs, patience, batch_size, size")
    try:
        source = {"source": RANDOM} if pretraining else {}
        RunConfig.model_validate({"target": "check", "k_folds": k_folds, **source, **values})
    except ValidationError as error:
        problems = [(f"{'.'.join(str(p) for p in item['loc'])}: {item['msg'].removeprefix('Value error, ')}"
                     + ("" if item["type"] == "value_error" else f" (got {item.get('input')!r})"))
                    if item["loc"] else item["msg"].removeprefix("Value error, ") for item in error.errors()]
        raise ValueError("; ".join(problems)) from None
    return values


def _backbone_name(value: str) -> str:
    try:
        return registry.canonical(value)
    except ConfigError as error:
        raise ValueError(str(error)) from None


_Strict = StrictModel


def _unique(values: list[Any] | None, what: str) -> list[Any] | None:
    repeated = sorted({v for v in values or [] if values.count(v) > 1}, key=str)
    if repeated:
        raise ValueError(f"{what} must not repeat (a run would be counted twice), repeated: {repeated}")
    return values


def _dir_name(name: str) -> str:
    return check_label(name, "name")


class TargetSpec(_Strict):
    """One target dataset of the grid. ``name`` identifies it in run ids and tables;
    ``dataset`` is the ``load_manifest`` name (default: ``name``)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    dataset: str | None = None
    root: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    size: int | None = Field(None, ge=MIN_IMAGE_SIDE, le=MAX_IMAGE_SIDE)
    batch_size: int | None = Field(None, ge=1)
    hflip: bool | None = None
    folds_file: str | None = None
    training: dict[str, Any] = Field(default_factory=dict)

    _name = field_validator("name")(_dir_name)

    @field_validator("training")
    @classmethod
    def _training(cls, values: dict[str, Any]) -> dict[str, Any]:
        return _check_training(values, dict.fromkeys(STUDY_FIELDS, _WHOLE_STUDY))

    @model_validator(mode="after")
    def _given_once(self) -> "TargetSpec":
        twice = [key for key in TARGET_FIELDS if getattr(self, key) is not None and key in self.training]
        if twice:
            raise ValueError(f"{twice} given both as the target's own key and under its 'training' (the own key "
                             "would win, the other be ignored): give each once")
        return self

    @property
    def manifest_name(self) -> str:
        """The dataset name given to ``load_manifest``."""
        return self.dataset or self.name


class PretrainSpec(_Strict):
    """A source the study makes itself: a short training run from random init on a dataset,
    saved as a medtransfer checkpoint under ``DIR/sources/{name}.pt``."""

    dataset: str
    root: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    size: int = Field(32, ge=MIN_IMAGE_SIDE, le=MAX_IMAGE_SIDE)
    batch_size: int = Field(32, ge=1)
    epochs: int = Field(2, ge=1)
    lr: float = Field(1e-3, gt=0)
    seed: int = 0
    training: dict[str, Any] = Field(default_factory=dict)

    @field_validator("training")
    @classmethod
    def _training(cls, values: dict[str, Any]) -> dict[str, Any]:
        own = "set by the pretrain section's own size, batch_size, epochs and lr"
        refused = {**dict.fromkeys(PRETRAIN_FIELDS, own),
                   **dict.fromkeys(STUDY_FIELDS, "a pretraining run trains on fold 0 of the default fold spec"),
                   **dict.fromkeys(PROBE_FIELDS, "a pretraining run is no-freeze: it has no probe phase")}
        return _check_training(values, refused, pretraining=True)


def _one_or_list(value: Any) -> list[Any] | None:
    return None if value is None else _unique(list(value) if isinstance(value, list) else [value], "transfer values")


class SourceTransfer(_Strict):
    """A source's transfer axis (``medtransfer.study.transfer_axis``): ``up_to`` one stage or a list
    (one run per depth: stages conv1 .. it from the source, the rest a fresh init), ``init`` one or a
    list of ``mean-var`` / ``shuffled`` (the whole backbone re-drawn from the source's weights)."""

    up_to: list[str] | None = None
    init: list[Literal["mean-var", "shuffled"]] | None = None

    _lists = field_validator("up_to", "init", mode="before")(_one_or_list)

    @model_validator(mode="after")
    def _something(self) -> "SourceTransfer":
        if not self.up_to and not self.init:
            raise ValueError("give up_to (a stage or a list of stages) and/or init (mean-var, shuffled)")
        return self


class SourceSpec(_Strict):
    """One initialisation: ``imagenet``, ``radimagenet``, ``random``, a weights file (``path``),
    or a source pretrained by the study (``pretrain``)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.]+$")
    path: str | None = None
    normalization: NormalizationMode | None = None
    pretrain: PretrainSpec | None = None
    strategies: list[Strategy] | None = None
    backbone: str | None = None  # this source's backbone only (registry name); default: the study's backbones
    # this source's own fine-tuning settings (RunConfig fields), over the study's and its target's
    training: dict[str, Any] = Field(default_factory=dict)
    transfer: SourceTransfer | None = None  # partial transfer / re-drawn inits as extra runs of this source

    _name = field_validator("name")(_dir_name)
    _strategies = field_validator("strategies")(lambda v: _unique(v, "strategies"))
    _backbone = field_validator("backbone")(lambda v: None if v is None else _backbone_name(v))

    @field_validator("training")
    @classmethod
    def _training(cls, values: dict[str, Any]) -> dict[str, Any]:
        return _check_training(values, dict.fromkeys(STUDY_FIELDS, _WHOLE_STUDY))

    @model_validator(mode="after")
    def _one_origin(self) -> "SourceSpec":
        if self.path and self.pretrain:
            raise ValueError(f"source {self.name!r}: give either 'path' or 'pretrain', not both")
        if self.transfer is not None and self.is_random:
            raise ValueError(f"source {self.name!r} is random init: it has nothing to transfer (drop 'transfer')")
        return self

    @property
    def is_random(self) -> bool:
        """Random init: run with the no-freeze strategy only (a frozen random backbone is meaningless)."""
        return self.name == RANDOM and not self.path and not self.pretrain

    def transfers(self, backbone: str) -> list:
        """``None`` (this source, full transfer), then each run its ``transfer:`` adds on ``backbone``
        (:func:`medtransfer.study.transfer_axis.transfer_variants`)."""
        given = self.transfer
        return transfer_variants(self.name, given.up_to if given else None, given.init if given else None, backbone)


EXECUTORS: dict[str, str] = {
    "local": "executors:LocalExecutor",
    "slurm": "executors:SlurmExecutor",
    "ray": "executors:RayExecutor",
}
"""The executors by name (``executor.kind``, ``--executor``): ``module:Class`` under
``medtransfer.study``, a class that implements :class:`medtransfer.study.executors.Executor` and
builds itself from this section (``from_spec(spec, out, threads)``). Imported when a study runs
(an executor loads torch and the training loop; the study file is read without them)."""


class ExecutorSpec(_Strict):
    """How the runs are executed; the command line's ``--executor`` overrides ``kind`` (a name of
    :data:`EXECUTORS`).

    ``devices`` and ``workers`` are the local executor's: the devices its worker processes use
    (default: every GPU when there are two or more) and how many runs it trains at a time
    (default: one per device; ``workers: 2`` with ``training: {threads: 1}`` on a 2-core CPU
    trains two runs side by side). SLURM and Ray schedule runs themselves and ignore both.
    """

    kind: str = "local"
    devices: list[str] | None = None
    workers: int | None = Field(None, ge=1)
    slurm: dict[str, Any] = Field(default_factory=dict)
    ray_address: str | None = None
    gpus_per_run: float | None = Field(None, ge=0)

    @field_validator("kind")
    @classmethod
    def _kind(cls, value: str) -> str:
        if value not in EXECUTORS:
            raise ValueError(f"unknown executor {value!r}: expected one of {', '.join(EXECUTORS)}")
        return value

    @field_validator("devices")
    @classmethod
    def _devices(cls, values: list[str] | None) -> list[str] | None:
        return None if values is None else [check_device(v) for v in values]

    def build(self, out: Path, threads: int | None = None) -> Any:  # noqa: ANN401 - an executors.Executor
        """The executor this section describes (a :class:`medtransfer.study.executors.Executor`), for
        the study in ``out``; ``threads`` is the study's pinned thread count (the default CPUs per
        run on SLURM and Ray)."""
        module, _, name = EXECUTORS[self.kind].partition(":")
        return getattr(importlib.import_module(f"medtransfer.study.{module}"), name).from_spec(self, out, threads)


class TrackingSpec(_Strict):
    """Experiment tracking of the study's runs (medtransfer.tracking.mlflow_sink). ``uri``: an MLflow
    tracking URI (default: a SQLite store inside the study directory); ``experiment``: its name
    (default: the study's name); ``log_weights``: also upload each run's best.pt (95 MB);
    ``log_model``: also log each run's best model with ``mlflow.pytorch.log_model`` (loadable with
    ``mlflow.pytorch.load_model``; about the size of best.pt again)."""

    kind: Literal["mlflow"] = "mlflow"
    uri: str | None = None
    experiment: str | None = None
    log_weights: bool = False
    log_model: bool = False


class CrossTargetSpec(_Strict):
    """Another dataset the fine-tuned networks are evaluated on (every image of it, no training):
    ``name`` labels it in files and tables, ``dataset`` is its loader (default: ``name``), ``root``
    and ``options`` as for a target; ``classes`` maps its class names to the networks' class names
    (images of unmapped classes are left out); ``networks``: the study targets whose runs are
    evaluated (default: every target)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    dataset: str | None = None
    root: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    classes: dict[str, str] = Field(min_length=1)
    networks: list[str] | None = None

    _name = field_validator("name")(_dir_name)

    @property
    def manifest_name(self) -> str:
        return self.dataset or self.name


class EvaluateSpec(_Strict):
    """What ``run`` evaluates after training, and ``medtransfer evaluate`` by default, without
    retraining: ``corruptions`` ("all" or names of :data:`medtransfer.data.corruptions.NAMES`),
    each at severities 1..5 on every finished run's test part (:mod:`medtransfer.training.robustness`);
    ``targets``: other datasets with the same label set (:class:`CrossTargetSpec`). A list given
    as ``evaluate:`` is its ``targets``."""

    corruptions: list[str] = Field(default_factory=list)
    targets: list[CrossTargetSpec] = Field(default_factory=list)

    @field_validator("corruptions", mode="before")
    @classmethod
    def _corruptions(cls, value: Any) -> list[str]:
        if value is None or value == []:
            return []
        if not isinstance(value, (str, list)):
            raise ValueError("expected 'all' or a list of corruption names")
        # the corruption table brings torch; a study file is read without it (status, load_study)
        from medtransfer.data.corruptions import parse_names as corruption_names
        try:
            return corruption_names(value)
        except ConfigError as error:
            raise ValueError(str(error)) from None


class StudyConfig(_Strict):
    """A whole study: targets x sources x strategies x folds x seeds, plus shared constants."""

    name: str = "study"
    description: str = ""
    targets: list[TargetSpec] = Field(min_length=1)
    sources: list[SourceSpec] = Field(min_length=1)
    strategies: list[Strategy] = Field(default_factory=lambda: list(STRATEGIES), min_length=1)
    k_folds: int = Field(DEFAULT_FOLDS.k, ge=2)
    folds: list[int] | None = None
    split_seed: int = DEFAULT_FOLDS.seed
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    # the grid's backbone axis (registry names); a source's own `backbone` replaces it for that source
    backbones: list[str] = Field(default_factory=lambda: [registry.DEFAULT], min_length=1)
    training: dict[str, Any] = Field(default_factory=dict)
    executor: ExecutorSpec = Field(default_factory=ExecutorSpec)
    tracking: TrackingSpec | None = None  # off unless given
    # settings of `medtransfer analyze` for this study (medtransfer.study.analysis_settings), checked here
    analysis: dict[str, Any] = Field(default_factory=dict)
    # images shared by a pretraining set and a target, or across a target's test parts
    # (medtransfer.study.leakage): warn, error (refuse to run) or off (no check)
    leakage: Literal["warn", "error", "off"] = "warn"
    # setting axes (medtransfer.study.sweep): {field: [values]} (every combination) or [{field: value}, ...]
    sweep: Any = Field(default_factory=dict)
    # `val`: per target, source and strategy, the analysis picks the setting of best mean validation AUC
    select: Literal["val"] | None = None
    # evaluations of the finished runs without retraining (corruptions), run after training
    evaluate: EvaluateSpec = Field(default_factory=EvaluateSpec)

    @field_validator("evaluate", mode="before")
    @classmethod
    def _evaluate(cls, value: Any) -> Any:
        return {"targets": value} if isinstance(value, list) else value

    _strategies = field_validator("strategies")(lambda v: _unique(v, "strategies"))
    _folds = field_validator("folds")(lambda v: _unique(v, "folds"))
    _seeds = field_validator("seeds")(lambda v: _unique(v, "seeds"))
    _backbones = field_validator("backbones")(lambda v: list(dict.fromkeys(_backbone_name(b) for b in v)))

    @field_validator("training")
    @classmethod
    def _training(cls, values: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        # k_folds is validated first (declared first): given split_fractions must fit it (the default
        # fractions with another k_folds are refused by _check, naming k_folds)
        k = info.data.get("k_folds", DEFAULT_FOLDS.k) if "split_fractions" in values else DEFAULT_FOLDS.k
        return _check_training(values, k_folds=k)

    @field_validator("sweep")
    @classmethod
    def _sweep(cls, value: Any) -> Any:
        seen: dict[tuple, int] = {}
        for i, setting in enumerate(sweeps.check_shape(value)):
            shown = sweeps.setting_label(setting) or "the study's own"
            try:
                _check_training(setting, _NOT_SWEPT)
            except ValueError as error:
                raise ValueError(f"setting {i} ({shown}): {error}") from None
            read = RunConfig.model_validate({"target": "check", **setting})  # numbers as the runs read them
            key = tuple(sorted((k, repr(getattr(read, k))) for k in setting))
            if key in seen:
                raise ValueError(f"settings {seen[key]} and {i} are the same ({shown}): a cell would be run twice")
            seen[key] = i
        return value

    @field_validator("analysis")
    @classmethod
    def _analysis(cls, values: dict[str, Any]) -> dict[str, Any]:
        try:
            AnalysisSettings.from_mapping(values, "analysis")
        except ConfigError as error:
            raise ValueError(str(error).removeprefix("analysis: ")) from None
        return values

    @model_validator(mode="after")
    def _check(self) -> "StudyConfig":
        for source in self.sources:
            if source.pretrain is not None and source.backbone is None and len(self.backbones) > 1:
                raise ValueError(f"source {source.name!r} is pretrained by the study on one backbone: give it "
                                 f"'backbone:' (one of {self.backbones})")
        swept = set(sweeps.swept_fields(self.sweep))
        for source in self.sources:
            both = sorted(swept & set(source.training))
            if both:
                raise ValueError(f"source {source.name!r}: its training sets {both}, which the sweep varies: a source's "
                                 "own setting would replace every swept value; remove one of the two")
        labels: list[str] = []
        for source in self.sources:
            found = set()
            for backbone in [source.backbone] if source.backbone else self.backbones:
                try:
                    found |= {variant_label(source.name, t) for t in source.transfers(backbone)[1:]}
                except ConfigError as error:
                    raise ValueError(str(error)) from None
            labels += sorted(found)
        for kind, names in (("target", [t.name for t in self.targets]), ("source", [s.name for s in self.sources]),
                            ("source and transfer run label", [s.name for s in self.sources] + labels)):
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                raise ValueError(f"{kind} names must be unique, repeated: {duplicates}")
        names = [t.name for t in self.targets]
        for other in self.evaluate.targets:
            unknown = sorted(set(other.networks or []) - set(names))
            if unknown:
                raise ValueError(f"evaluate target {other.name!r}: networks {unknown} are not targets of the study "
                                 f"({names})")
        bad = [f for f in self.folds or [] if not 0 <= f < self.k_folds]
        if bad:
            raise ValueError(f"folds {bad} are outside 0..{self.k_folds - 1} (k_folds={self.k_folds})")
        problem = self.fold_spec.problem()
        if problem:  # the default fractions with another k_folds (given fractions are checked under training)
            raise ValueError(f"k_folds: {problem}; give training.split_fractions that fit k_folds={self.k_folds}, "
                             f"e.g. {[round(f, 7) for f in DEFAULT_FOLDS.with_k(self.k_folds).fractions]}")
        return self

    @property
    def fold_spec(self) -> FoldSpec:
        """How every target is cut into folds, once for the whole study: ``k_folds``, ``split_seed``
        and ``training.split_fractions`` (else the default fractions)."""
        fractions = tuple(self.training.get("split_fractions", DEFAULT_FOLDS.fractions))
        return FoldSpec(self.k_folds, fractions, self.split_seed)

    @property
    def split_fractions(self) -> tuple[float, float, float]:
        """(train, val, test) fractions of every fold (:attr:`fold_spec`)."""
        return self.fold_spec.fractions

    def with_overrides(self, *, executor: str | None = None, device: str | None = None,
                       track: str | None = None) -> "StudyConfig":
        """A copy with the command line's choices (``None`` keeps the study's), validated again.
        ``track``: ``mlflow`` (the study's ``tracking:`` section, else the defaults) or ``off``."""
        data = self.model_dump(mode="json")
        if executor is not None:
            data["executor"]["kind"] = executor
        if device is not None:
            data["training"]["device"] = device
        if track is not None:
            if track not in ("mlflow", "off"):
                raise ConfigError(f"--track {track!r}: expected mlflow or off")
            data["tracking"] = None if track == "off" else (self.tracking or TrackingSpec()).model_dump(mode="json")
        return StudyConfig.parse(data, where="command line")

    @property
    def fold_list(self) -> list[int]:
        """The folds that are run (all ``k_folds`` unless ``folds`` picks some)."""
        return list(self.folds) if self.folds is not None else list(range(self.k_folds))

    @classmethod
    def parse(cls, data: Any, where: str = "study") -> "StudyConfig":
        """Validate a mapping; a wrong key or value raises ConfigError naming ``where`` and the field."""
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a mapping of study settings, got {type(data).__name__}")
        try:
            return cls.model_validate(data)
        except ValidationError as error:
            raise ConfigError(describe_validation_error(error, where)) from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> "StudyConfig":
        """Read and validate a study YAML file."""
        return cls.parse(read_study_yaml(path), where=str(path))

    def to_yaml(self) -> str:
        """The resolved study, as written to ``DIR/study.yaml``."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def read_study_yaml(path: str | Path) -> Any:
    """The YAML content of a study file, not yet validated (the one reader of study files; a file
    that cannot be read or is not YAML raises ConfigError naming it)."""
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not a text file ({error.reason} at byte {error.start}); expected a study "
                          "YAML file") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the study file ({error.strerror})") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({error})") from None


def shipped_config(name: str) -> Path:
    """Path of a study shipped with medtransfer (``paper``, ``mei-replication``, ``demo``)."""
    path = Path(__file__).resolve().parent.parent / "configs" / f"{name}.yaml"
    if not path.exists():
        raise ConfigError(f"no shipped study named {name!r}; expected paper, mei-replication, feature-reuse, demo or demo-feature-reuse")
    return path

"""``RunConfig``: every constant of one fine-tuning run, validated, with the paper's defaults.

Defaults follow protocol.md "Training": Adam with Keras' constants (betas 0.9/0.999, eps 1e-7),
lr 1e-5, at most 200 epochs, early stopping on validation loss with patience 30; the freeze
strategy's phase 1 trains the head on a frozen backbone with lr 1e-3 and early stopping on
validation accuracy with patience 10.
"""

from __future__ import annotations

import re
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from medtransfer.data.folds import DEFAULT_FOLDS, FoldSpec
from medtransfer.errors import ConfigError
from medtransfer.vocabulary import IMAGENET, NO_FREEZE, AucAverage, NormalizationMode, SourceRef, Strategy


def describe_validation_error(error: ValidationError, where: str) -> str:
    """One readable line per problem: ``where: field.path: message (got value)``."""
    lines = []
    for item in error.errors():
        path = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key (check its spelling)"
        got = item.get("input")
        shown = "" if item["type"] in ("extra_forbidden", "missing", "value_error") else f" (got {got!r})"
        lines.append(f"{where}: {path}: {message}{shown}")
    return "\n".join(lines)


def _leaf_types(annotation: Any) -> set[Any]:
    args = get_args(annotation)
    if not args or get_origin(annotation) is Literal:
        return {annotation}
    return set().union(*(_leaf_types(a) for a in args))


def _has_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return True
    return isinstance(value, (list, tuple)) and any(isinstance(v, bool) for v in value)


def run_id(target: str, source: str, strategy: str, fold: int, seed: int) -> str:
    """``{target}/{source}-{strategy}/fold{k}``, with ``-seed{s}`` appended for seeds other than 0."""
    suffix = "" if seed == 0 else f"-seed{seed}"
    return f"{target}/{source}-{strategy}/fold{fold}{suffix}"


class StrictModel(BaseModel):
    """A settings model: unknown keys are errors, and a boolean is not taken for a number
    (pydantic would read ``epochs: true`` as 1)."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        if info.field_name is not None and _has_bool(value):
            leaves = _leaf_types(cls.model_fields[info.field_name].annotation)
            if leaves & {int, float} and bool not in leaves:
                raise ValueError(f"expected a number, got {value!r}")
        return value


#: The longest target or source name, in bytes of UTF-8: a name is part of a directory name of the
#: run store (``{source}-{strategy}``), and file systems allow 255 bytes per name.
MAX_LABEL_BYTES = 100

#: The devices a run or a command may name: auto (CUDA when there is one, else the CPU), cpu,
#: cuda, cuda:N (GPU N) or mps (Apple).
DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def check_label(label: str, what: str) -> str:
    """A name used as a directory of the run store: not empty, no ``/``, not ``.`` or ``..``, at
    most :data:`MAX_LABEL_BYTES` bytes."""
    if not label or "/" in label or "\\" in label or set(label) == {"."}:
        raise ValueError(f"{what} {label!r} cannot name a directory (no '/', not '.' or '..')")
    size = len(label.encode("utf-8", "surrogateescape"))
    if size > MAX_LABEL_BYTES:
        raise ValueError(f"{what} {label[:40]!r}... is {size} bytes long; expected at most {MAX_LABEL_BYTES} "
                         "(it names a folder of the study directory; give a shorter name)")
    return label


def check_device(name: str) -> str:
    """``name`` if it is a device :data:`DEVICE_PATTERN` accepts, else ``ValueError`` saying which are."""
    if not isinstance(name, str) or not DEVICE_PATTERN.match(name):
        raise ValueError(f"{name!r} is not a device; expected auto, cpu, cuda, cuda:N (N: a GPU's index) "
                         "or mps")
    return name


#: The image sides (pixels) a run or a comparison accepts: the paper trains at 112-224 px, and a
#: ResNet50's first stage alone holds 64 x (side/2)^2 floats per image (256 MiB at 1024 px).
MIN_IMAGE_SIDE, MAX_IMAGE_SIDE = 8, 1024


#: How a partially transferred or re-drawn source's stages are initialised (medtransfer.models.transfer).
TransferInit = Literal["weights", "mean-var", "shuffled"]
_INIT_LABELS = {"weights": "", "mean-var": "meanvar", "shuffled": "shuffled"}


class TransferSetting(StrictModel):
    """What a run takes from its source (``medtransfer.models.transfer.transfer_init``): stages
    ``conv1 .. up_to`` (``None``: the whole backbone), as the source's ``weights``, as ``mean-var``
    draws or ``shuffled``; every other stage and the head are a fresh init with the run's seed,
    which also seeds the draws."""

    up_to: str | None = None
    init: TransferInit = "weights"

    @model_validator(mode="after")
    def _something(self) -> "TransferSetting":
        if self.up_to is None and self.init == "weights":
            raise ValueError("transfer of the whole backbone as its weights is the source itself: give up_to or "
                             "init: mean-var / shuffled")
        return self

    def label(self, source: str) -> str:
        """The run's source label: ``imagenet.to_block2``, ``imagenet.meanvar``, ``imagenet.meanvar_to_block2``."""
        parts = [p for p in (_INIT_LABELS[self.init], f"to_{self.up_to}" if self.up_to else "") if p]
        return f"{source}.{'_'.join(parts)}"


class RunConfig(StrictModel):
    """One fine-tuning run: target data, source, strategy, fold, seed and every training constant.

    Sizes in pixels, learning rates per step, ``checkpoint_every_s`` in seconds.
    """

    # allow_inf_nan=False: an lr of "inf" passes gt=0 but is written to config.json as null
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    # what to train on
    target: str = Field(description="dataset name for load_manifest (chest, thyroid, synthetic, ...)")
    target_name: str | None = None  # label in run ids and tables (a study's target name); default target
    root: str | None = None
    target_options: dict[str, Any] = Field(default_factory=dict)
    classes: list[str] | None = None
    # where to start from
    source: str = IMAGENET
    source_name: str | None = None  # label in run ids and tables; default source
    normalization: NormalizationMode | None = None
    strategy: Strategy = NO_FREEZE
    transfer: TransferSetting | None = None  # part of the source only, or re-drawn (None: the whole source)
    # which images
    fold: int = Field(0, ge=0)
    k_folds: int = Field(DEFAULT_FOLDS.k, ge=2)
    split_fractions: tuple[float, float, float] = DEFAULT_FOLDS.fractions
    split_seed: int = DEFAULT_FOLDS.seed
    folds_file: str | None = None
    seed: int = 0
    size: int = Field(112, ge=MIN_IMAGE_SIDE, le=MAX_IMAGE_SIDE)
    interpolation: Literal["nearest", "bilinear", "area", "bicubic", "lanczos"] = "nearest"
    # optimisation (phase 2 / no-freeze)
    batch_size: int = Field(128, ge=1)
    eval_batch_size: int | None = Field(None, ge=1)
    lr: float = Field(1e-5, gt=0)
    epochs: int = Field(200, ge=1)
    patience: int = Field(30, ge=1)
    min_delta: float = Field(0.0, ge=0)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.999, ge=0, lt=1)
    eps: float = Field(1e-7, gt=0)
    dropout: float = Field(0.5, ge=0, lt=1)
    # BatchNorm running-statistics momentum in PyTorch's convention; None keeps Keras' 0.01
    # (= Keras momentum 0.99). Very short runs (the demo) need a larger value, or the running
    # statistics used at evaluation barely move from their initial values.
    bn_momentum: float | None = Field(None, gt=0, le=1)
    # factor on the first conv's random initialisation (only for a random-init source). That conv
    # feeds BatchNorm, so the scale leaves the network's function unchanged; what a short
    # pretraining learns then outweighs the random filters (docs/training-settings.md, demo sources)
    conv1_init_scale: float = Field(1.0, gt=0, le=1)
    # freeze phase 1: linear probe
    probe_lr: float = Field(1e-3, gt=0)
    probe_epochs: int = Field(200, ge=1)
    probe_patience: int = Field(10, ge=1)
    # augmentation (Keras ImageDataGenerator ranges); hflip None = off for chest, on otherwise
    augment: bool = True
    rotation: float = Field(10.0, ge=0)
    shift: float = Field(0.1, ge=0, lt=1)
    shear: float = Field(0.1, ge=0)
    zoom: float = Field(0.1, ge=0, lt=1)
    hflip: bool | None = None
    # evaluation
    auc_average: AucAverage = "macro"
    # execution
    device: str = "auto"
    amp: Literal["auto", "bf16", "off"] = "auto"
    channels_last: bool | None = None  # None: on for CUDA (tensor cores), off on the CPU (slower there)
    compile: bool = False
    # torch CPU threads (None: torch's default). CPU results depend on it: a study pins it for every
    # engine (local, SLURM, Ray), see medtransfer.study.executors.pin_threads
    threads: int | None = Field(None, ge=1)
    deterministic: bool = False  # torch.use_deterministic_algorithms: identical GPU results, slower
    cache_dir: str | None = None
    checkpoint_every_s: float = Field(120.0, ge=0)
    keep_last: bool = False

    _device = field_validator("device")(check_device)

    @model_validator(mode="after")
    def _check(self) -> "RunConfig":
        if self.fold >= self.k_folds:
            raise ValueError(f"fold {self.fold} is outside 0..{self.k_folds - 1} (k_folds={self.k_folds})")
        problem = self.fold_spec.problem()
        if problem:
            raise ValueError(f"k_folds/split_fractions: {problem}")
        if min(self.split_fractions) <= 0:
            raise ValueError(f"split_fractions {self.split_fractions}: a run needs a train, a validation and a "
                             "test part (each > 0)")
        if self.conv1_init_scale != 1.0 and not SourceRef.of(self.source).is_random:
            raise ValueError(f"conv1_init_scale {self.conv1_init_scale} scales a random initialisation: the "
                             f"source must be random init, not {self.source!r}")
        if self.transfer is not None and SourceRef.of(self.source).is_random:
            raise ValueError("transfer: a random-init source has nothing to transfer")
        if self.transfer is not None and self.strategy != NO_FREEZE:
            raise ValueError(f"transfer with strategy {self.strategy!r}: a partly fresh backbone is fine-tuned "
                             f"whole (strategy {NO_FREEZE!r}), as random init is")
        check_label(self.target_label, "target name")
        check_label(self.source_label, "source name")
        return self

    @property
    def fold_spec(self) -> FoldSpec:
        """How the run's dataset is cut into folds when no ``folds_file`` is given."""
        return FoldSpec(self.k_folds, self.split_fractions, self.split_seed)

    @property
    def target_label(self) -> str:
        """The target's name in run ids and tables."""
        return self.target_name or self.target

    @property
    def source_label(self) -> str:
        """The source's name in run ids and tables (a weights path's file stem if unnamed)."""
        if self.source_name:
            return self.source_name
        return SourceRef.of(self.source).label

    @property
    def run_id(self) -> str:
        """``{target}/{source}-{strategy}/fold{k}``, with ``-seed{s}`` appended for seeds other than 0."""
        return run_id(self.target_label, self.source_label, self.strategy, self.fold, self.seed)

    @property
    def use_hflip(self) -> bool:
        """Horizontal flip: as configured, else off for chest (the paper) and on otherwise."""
        return self.hflip if self.hflip is not None else self.target != "chest"

    @classmethod
    def parse(cls, data: dict[str, Any], where: str = "run config") -> "RunConfig":
        """Validate ``data``; a wrong key or value raises ConfigError naming ``where`` and the field."""
        try:
            return cls.model_validate(data)
        except ValidationError as error:
            raise ConfigError(describe_validation_error(error, where)) from None

    def to_json(self) -> str:
        """Every field as JSON (what the run record writes; :meth:`RunDir.read_config` reads it back)."""
        return self.model_dump_json(indent=2)

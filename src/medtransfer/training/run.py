"""``train_run``: one fine-tuning run from a RunConfig to a finished run directory.

The directory's layout belongs to :mod:`medtransfer.training.record` (``config.json`` as given,
``facts.json``, ``folds.csv``, ``history.csv``, ``checkpoints/best.pt``, ``predictions.csv``,
``metrics.json``, ``probe/`` for freeze runs, and ``DONE`` with the digests, written last). A run
killed at any moment resumes from ``checkpoints/last.pt`` and, on the CPU, ends with the same
metrics as an uninterrupted run.

Read top to bottom, :meth:`_Run.train` is the training script: build the phases from the config,
then for each phase train to early stopping, keeping a :class:`BestSnapshot`; evaluate; write.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch

from medtransfer.atomic import write_text_atomic
from medtransfer.data import KerasAugment
from medtransfer.models import save_checkpoint
from medtransfer.models.digests import tensor_digests
from medtransfer.models.filters import first_conv
from medtransfer.training import checkpoints as ckpt
from medtransfer.training.checkpoints import BestSnapshot
from medtransfer.errors import ConfigError
from medtransfer.training.config import RunConfig, check_device
from medtransfer.training.data import RunData, load_run_data
from medtransfer.training.early_stopping import EarlyStopping
from medtransfer.training.initial import initial_source
from medtransfer.training.loop import StepSetup, predict, train_epoch
from medtransfer.training.metrics import classification_metrics
from medtransfer.training.observers import PhasePlan, RunStart, Sinks
from medtransfer.training.optim import KerasAdam
from medtransfer.training.probe import save_probe
from medtransfer.training.record import HISTORY_COLUMNS, RunDir, RunFacts, file_digest, read_record
from medtransfer.vocabulary import FINETUNE, FREEZE, PROBE, Phase

__all__ = ["RunResult", "TrainingPhase", "build_model", "phase_plan", "resolve_amp",
           "resolve_device", "train_run"]

BATCH_NORMS = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d, torch.nn.SyncBatchNorm)


@dataclass
class RunResult:
    """A finished run: its directory, test metrics, and the probe's test metrics (freeze strategy)."""

    directory: Path
    metrics: dict[str, Any]
    probe_metrics: dict[str, Any] | None = None
    resumed: bool = False
    skipped: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def read(cls, directory: Path) -> "RunResult":
        """Read a finished run directory (its digests checked)."""
        record = read_record(directory)
        probe = record.metrics(probe=True) if record.dir.probe_metrics.exists() else None
        return cls(record.path, record.metrics(), probe, skipped=True)


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """``auto`` (or ``None``) -> the first CUDA device when there is one, else the CPU. A name that
    is not a device (:data:`~medtransfer.training.config.DEVICE_PATTERN`), or a GPU this machine
    does not have, raises ``ConfigError`` before any work starts."""
    if isinstance(name, torch.device):
        return name
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        check_device(name)
    except ValueError as error:
        raise ConfigError(f"device {error}") from None
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"device {name!r}: CUDA is not available on this machine (torch.cuda.is_available() "
                              "is False); expected cpu or auto")
        if device.index is not None and device.index >= count:
            raise ConfigError(f"device {name!r}: this machine has {count} GPU(s), cuda:0..cuda:{count - 1}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {name!r}: MPS (Apple GPU) is not available on this machine; expected cpu or auto")
    return device


def resolve_amp(mode: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast for ``bf16``, or for ``auto`` on a CUDA device that supports it."""
    if mode == "bf16" or (mode == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return None


@dataclass(frozen=True)
class TrainingPhase:
    """One phase of a run, fixed by the config: the freeze strategy's ``probe`` (head only, lr
    ``probe_lr``, early stopping on validation accuracy) or ``finetune`` (every layer, lr ``lr``,
    early stopping on validation loss)."""

    name: Phase
    lr: float
    epochs: int
    monitor: Literal["val_accuracy", "val_loss"]
    patience: int
    min_delta: float

    @property
    def head_only(self) -> bool:
        return self.name == PROBE

    @classmethod
    def plan(cls, config: RunConfig) -> list["TrainingPhase"]:
        """The phases of ``config``'s strategy, in order."""
        finetune = cls(FINETUNE, config.lr, config.epochs, "val_loss", config.patience, config.min_delta)
        if config.strategy != FREEZE:
            return [finetune]
        probe = cls(PROBE, config.probe_lr, config.probe_epochs, "val_accuracy", config.probe_patience,
                    config.min_delta)
        return [probe, finetune]

    def stopper(self) -> EarlyStopping:
        return EarlyStopping("max" if self.monitor == "val_accuracy" else "min", self.patience, self.min_delta)

    def trainable(self, model: torch.nn.Module) -> list[torch.nn.Parameter]:
        """Freeze or unfreeze the backbone; the parameters the optimizer updates."""
        for param in model.backbone_parameters():
            param.requires_grad_(not self.head_only)
        return list(model.head.parameters()) if self.head_only else list(model.parameters())

    def train_mode(self, model: torch.nn.Module) -> None:
        """Training modes: a frozen backbone keeps BatchNorm in inference mode."""
        if self.head_only:
            model.eval()
            model.head.train()
        else:
            model.train()


def phase_plan(config: RunConfig) -> list[PhasePlan]:
    """The phases of a run in order, each with its learning rate and epoch limit (for sinks)."""
    return [PhasePlan(p.name, p.lr, p.epochs) for p in TrainingPhase.plan(config)]


def build_model(config: RunConfig, source, num_classes: int) -> torch.nn.Module:  # noqa: ANN001 - a Source
    """The source's network with a fresh seeded head of ``num_classes`` outputs, the config's
    dropout, BatchNorm momentum and first-conv init scale (on the CPU; dropout is set before the
    head is made)."""
    model = source.model
    if config.conv1_init_scale != 1.0:
        with torch.no_grad():
            first_conv(model).weight.mul_(config.conv1_init_scale)
    model.dropout = config.dropout
    model.reset_head(num_classes, seed=config.seed)
    if config.bn_momentum is not None:
        for module in model.modules():
            if isinstance(module, BATCH_NORMS):
                module.momentum = config.bn_momentum
    return model


def _predictions_frame(data: RunData, rows: torch.Tensor, probs: torch.Tensor) -> pd.DataFrame:
    rows_np = rows.cpu().numpy()
    frame = pd.DataFrame({"image_id": data.image_ids[rows_np], "label": data.labels[rows].cpu().numpy()})
    for c in range(probs.shape[1]):
        frame[f"p_{c}"] = probs[:, c].numpy()
    return frame


def _json_safe(values: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in values.items()}


class _Run:
    """The state of one run while it trains (see :func:`train_run`)."""

    def __init__(self, config: RunConfig, directory: RunDir, sinks: Sinks | None = None) -> None:
        self.dir = directory
        self.sinks = sinks if sinks is not None else Sinks()
        self.given = config                   # written to config.json as it is
        self.config = c = directory.resolve(config)  # study-relative paths made usable
        self.device = resolve_device(c.device)
        self.data = load_run_data(c, self.device)
        source = initial_source(c.source, c.seed, c.transfer, c.normalization)
        # the probe is stored as its difference from the source: digest the source before training
        self.source_digests = tensor_digests(source.model.state_dict()) if c.strategy == FREEZE else None
        self.normalize = source.normalize
        # the source file's digest: the analysis checks that the init it rebuilds is the one trained from
        digest = file_digest(source.file)["sha256"] if source.file is not None else None
        self.facts = RunFacts(self.data.classes, str(source.normalize), str(self.device), digest)
        channels_last = c.channels_last if c.channels_last is not None else self.device.type == "cuda"
        memory = torch.channels_last if channels_last else torch.contiguous_format
        self.model = build_model(c, source, self.data.num_classes).to(self.device, memory_format=memory)
        augment = None
        if c.augment:
            augment = KerasAugment(rotation=c.rotation, shift=c.shift, shear=c.shear, zoom=c.zoom, hflip=c.use_hflip)
        forward = torch.compile(self.model) if c.compile else None
        self.setup = StepSetup(self.normalize, augment, resolve_amp(c.amp, self.device), channels_last, forward)
        self.eval_batch = c.eval_batch_size or 2 * c.batch_size
        self.shuffle = torch.Generator().manual_seed(c.seed)
        self.augment_rng = torch.Generator(device=self.device).manual_seed(c.seed + 1) if augment else None
        torch.manual_seed(c.seed)
        self.history: list[dict[str, Any]] = []
        self.resumed = False

    # -- files ------------------------------------------------------------------------------

    def write_inputs(self) -> None:
        self.dir.write_config(self.given)
        self.dir.write_facts(self.facts)
        write_text_atomic(self.dir.folds, self.data.folds.to_csv(index=False))

    def write_history(self) -> None:
        write_text_atomic(self.dir.history, pd.DataFrame(self.history, columns=HISTORY_COLUMNS).to_csv(index=False))

    def meta(self, **extra: Any) -> dict[str, Any]:
        c = self.config
        return {"normalization": str(self.normalize), "classes": self.data.classes, "source": self.given.source,
                "target": c.target, "strategy": c.strategy, "fold": c.fold, "seed": c.seed, "size": c.size,
                "interpolation": c.interpolation, **extra}

    def checkpoint(self, phase: Phase, epoch: int, optimizer: torch.optim.Optimizer | None = None,
                   stopper: EarlyStopping | None = None, best: BestSnapshot | None = None) -> None:
        """Write ``last.pt`` (and the best snapshot it names, if it changed)."""
        state = {"phase": phase, "epoch": epoch, "model": ckpt.cpu_state(self.model.state_dict()),
                 "optimizer": optimizer.state_dict() if optimizer is not None else None,
                 "stopper": stopper.state_dict() if stopper is not None else None,
                 "history": list(self.history), "rng": ckpt.rng_states(self.shuffle, self.augment_rng)}
        ckpt.write_checkpoint(self.dir, state, best if best is not None else BestSnapshot())

    # -- evaluation -------------------------------------------------------------------------

    def validate(self) -> tuple[float, float, float]:
        """``(val_loss, val_accuracy, val_auc)`` of the model now."""
        self.model.eval()
        rows = self.data.index["val"]
        probs, loss = predict(self.model, self.data.pixels, self.data.labels, rows, self.eval_batch, self.setup)
        labels = self.data.labels[rows].cpu()
        accuracy = float((probs.argmax(1) == labels).float().mean())
        auc = classification_metrics(labels.numpy(), probs.numpy().astype(np.float64), self.config.auc_average)["auc"]
        return loss, accuracy, auc

    def evaluate_test(self) -> tuple[pd.DataFrame, dict[str, Any]]:
        """Test predictions (``image_id, label, p_0..``) and metrics of the model now."""
        self.model.eval()
        rows = self.data.index["test"]
        probs, loss = predict(self.model, self.data.pixels, self.data.labels, rows, self.eval_batch, self.setup)
        frame = _predictions_frame(self.data, rows, probs)
        metrics = classification_metrics(frame["label"].to_numpy(), probs.numpy().astype(np.float64),
                                         self.config.auc_average)
        metrics["loss"] = loss
        return frame, metrics

    # -- one phase --------------------------------------------------------------------------

    def run_phase(self, phase: TrainingPhase, resume: dict[str, Any] | None, best: BestSnapshot) -> int:
        """Train one phase to early stopping; leave the best weights in the model. Returns best epoch."""
        c = self.config
        optimizer = KerasAdam(phase.trainable(self.model), lr=phase.lr, betas=(c.beta1, c.beta2), eps=c.eps)
        stopper, start = phase.stopper(), 0
        if resume is not None:
            optimizer.load_state_dict(resume["optimizer"])
            stopper = EarlyStopping.from_state(resume["stopper"])
            start = resume["epoch"]
        last_save = time.monotonic()
        for epoch in range(start, phase.epochs):
            if stopper.should_stop:
                break
            began = time.perf_counter()
            phase.train_mode(self.model)
            train_loss, train_acc = train_epoch(self.model, optimizer, self.data.pixels, self.data.labels,
                                                self.data.index["train"], c.batch_size, self.setup, self.shuffle,
                                                self.augment_rng, head_only=phase.head_only)
            val_loss, val_acc, val_auc = self.validate()
            if stopper.step(val_acc if phase.monitor == "val_accuracy" else val_loss):
                best.take(self.model)
            self.history.append({"phase": phase.name, "epoch": epoch, "train_loss": train_loss,
                                 "train_accuracy": train_acc, "val_loss": val_loss, "val_accuracy": val_acc,
                                 "val_auc": val_auc, "seconds": time.perf_counter() - began})
            self.write_history()
            self.sinks.epoch(dict(self.history[-1]))
            finished = stopper.should_stop or epoch + 1 == phase.epochs
            due = time.monotonic() - last_save >= c.checkpoint_every_s
            # a finished probe is recorded by the phase transition; a finished fine-tune by DONE
            if (due and not finished) or (finished and phase.name == FINETUNE and c.keep_last):
                self.checkpoint(phase.name, epoch + 1, optimizer, stopper, best)
                last_save = time.monotonic()
        if best.state is not None:
            self.model.load_state_dict(best.state)
        return stopper.best_epoch

    def finish_probe(self, best_epoch: int) -> dict[str, Any]:
        """Write the probe's predictions, head and metrics; its test metrics."""
        frame, metrics = self.evaluate_test()
        metrics["best_epoch"] = best_epoch
        write_text_atomic(self.dir.probe_predictions, frame.to_csv(index=False))
        save_probe(self.dir.probe_head, self.model, self.meta(phase=PROBE, best_epoch=best_epoch),
                   load=self.given.source, seed=self.config.seed, source_digests=self.source_digests)
        write_text_atomic(self.dir.probe_metrics, json.dumps(_json_safe(metrics), indent=2))
        return metrics

    # -- the whole run ----------------------------------------------------------------------

    def train(self) -> RunResult:
        began = time.perf_counter()
        self.write_inputs()
        phases = TrainingPhase.plan(self.config)
        names = [p.name for p in phases]
        start, resume, best = 0, None, BestSnapshot()
        found = ckpt.read_checkpoint(self.dir)
        if found is not None:
            state, best = found
            self.model.load_state_dict(state["model"])
            ckpt.restore_rng(state["rng"], self.shuffle, self.augment_rng)
            self.history = list(state["history"])
            self.write_history()
            start = names.index(state["phase"])
            resume = state if state["optimizer"] is not None else None
            self.resumed = True
        self.sinks.start(RunStart(self.config.run_id, self.dir.path, self.given.model_dump(mode="json"),
                                  phase_plan(self.config), [dict(r) for r in self.history], self.resumed))
        probe_metrics, best_epoch = None, -1
        for i, phase in enumerate(phases[start:], start):
            best_epoch = self.run_phase(phase, resume if i == start else None, best if i == start else BestSnapshot())
            if phase.name == PROBE:
                probe_metrics = self.finish_probe(best_epoch)
                self.checkpoint(FINETUNE, 0)  # phase 2 starts from the probe: a kill does not redo phase 1
        if probe_metrics is None and self.dir.probe_metrics.exists():
            probe_metrics = self.dir.read_metrics(probe=True)
        frame, metrics = self.evaluate_test()
        epochs = sum(row["phase"] == FINETUNE for row in self.history)
        metrics.update(best_epoch=best_epoch, epochs=epochs, seconds=time.perf_counter() - began,
                       resumed=self.resumed, device=str(self.device), threads=torch.get_num_threads())
        write_text_atomic(self.dir.predictions, frame.to_csv(index=False))
        write_text_atomic(self.dir.metrics, json.dumps(_json_safe(metrics), indent=2))
        save_checkpoint(self.dir.best, self.model, self.meta(phase=FINETUNE, best_epoch=best_epoch))
        self.sinks.finish(_json_safe(metrics), probe_metrics)
        self.dir.write_done()
        if not self.config.keep_last:
            self.dir.last.unlink(missing_ok=True)
        ckpt.remove_stale_snapshots(self.dir, keep=None)
        return RunResult(self.dir.path, metrics, probe_metrics, self.resumed, history=self.history)


def train_run(config: RunConfig, out_dir: str | Path, sinks: Sinks | None = None) -> RunResult:
    """Train (or resume, or read if ``DONE``) one run into ``out_dir``; returns its test metrics.

    ``sinks`` (:class:`medtransfer.training.observers.Sinks`) observe the run: its start, each history row,
    its end; they cannot change or fail it.

    Seeds the run's own generators and the global torch RNG (dropout) from ``config.seed``
    inside ``torch.random.fork_rng``, so the caller's random state is left untouched. Relative
    paths of ``config`` are relative to the study directory when ``out_dir`` lies in one
    (:attr:`RunDir.base`), else to the working directory.
    """
    directory = RunDir(Path(out_dir))
    if directory.is_done():
        return RunResult.read(directory.path)
    directory.path.mkdir(parents=True, exist_ok=True)
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with run_settings(config), torch.random.fork_rng(devices=devices):
        return _Run(config, directory, sinks).train()


@contextlib.contextmanager
def run_settings(config: RunConfig) -> Iterator[None]:
    """Torch's thread count and determinism as ``config`` asks (its ``threads`` and
    ``deterministic``), restored on exit: CPU sums are reproduced only at one thread count."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    if config.threads:
        torch.set_num_threads(config.threads)
    if config.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS' deterministic workspace
        torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)

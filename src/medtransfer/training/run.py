"""``train_run``: one fine-tuning run from a RunConfig to a finished run directory.

Run directory (docs/interfaces.md): ``config.json``, ``folds.csv``, ``history.csv``,
``checkpoints/best.pt`` (and ``last.pt`` while running, or kept with ``keep_last``),
``predictions.csv`` (``image_id, label, p_0..p_{k-1}`` on the test split), ``probe/`` (freeze
strategy: the phase-1 linear probe ``head.pt`` - its head and a reference to the source it was
started from, see :mod:`medtransfer.training.probe` - ``predictions.csv``, ``metrics.json``),
``metrics.json``, and ``DONE`` written last. A run killed at any moment resumes from
``checkpoints/last.pt`` and, on the CPU, ends with the same metrics as an uninterrupted run.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from medtransfer.atomic import write_text_atomic
from medtransfer.training import checkpoints as ckpt
from medtransfer.training.config import RunConfig
from medtransfer.training.data import RunData, load_run_data
from medtransfer.training.early_stopping import EarlyStopping
from medtransfer.training.loop import StepSetup, predict, train_epoch
from medtransfer.training.metrics import classification_metrics
from medtransfer.training.optim import KerasAdam
from medtransfer.training.probe import FILE as PROBE_FILE
from medtransfer.training.probe import save_probe, tensor_digests
from medtransfer.tracking import PhasePlan, RunStart, Sinks

DONE = "DONE"
HISTORY_COLUMNS = ["phase", "epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_auc",
                   "seconds"]


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
        """Read a finished run directory."""
        directory = Path(directory)
        metrics = json.loads((directory / "metrics.json").read_text())
        probe = directory / "probe" / "metrics.json"
        return cls(directory, metrics, json.loads(probe.read_text()) if probe.exists() else None, skipped=True)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> the first CUDA device when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_amp(mode: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast for ``bf16``, or for ``auto`` on a CUDA device that supports it."""
    if mode == "bf16" or (mode == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return None


def phase_plan(config: RunConfig) -> list[PhasePlan]:
    """The phases of a run in order, each with its learning rate and epoch limit."""
    finetune = PhasePlan("finetune", config.lr, config.epochs)
    if config.strategy == "freeze":
        return [PhasePlan("probe", config.probe_lr, config.probe_epochs), finetune]
    return [finetune]


def _write_text(path: Path, text: str) -> None:
    write_text_atomic(path, text)


def _predictions_frame(data: RunData, rows: torch.Tensor, probs: torch.Tensor) -> pd.DataFrame:
    rows_np = rows.cpu().numpy()
    frame = pd.DataFrame({"image_id": data.image_ids[rows_np], "label": data.labels[rows].cpu().numpy()})
    for c in range(probs.shape[1]):
        frame[f"p_{c}"] = probs[:, c].numpy()
    return frame


def _json_safe(values: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in values.items()}


def _evaluate_test(model: torch.nn.Module, data: RunData, setup: StepSetup, batch: int,
                   config: RunConfig) -> tuple[pd.DataFrame, dict[str, Any]]:
    model.eval()
    rows = data.index["test"]
    probs, loss = predict(model, data.pixels, data.labels, rows, batch, setup)
    frame = _predictions_frame(data, rows, probs)
    metrics = classification_metrics(frame["label"].to_numpy(), probs.numpy().astype(np.float64),
                                     config.auc_average)
    metrics["loss"] = loss
    return frame, metrics


class _Run:
    """The state of one run while it trains (see :func:`train_run`)."""

    def __init__(self, config: RunConfig, directory: Path, sinks: Sinks | None = None) -> None:
        from medtransfer.data import KerasAugment
        from medtransfer.models import load_source

        self.directory = directory
        self.sinks = sinks if sinks is not None else Sinks()
        self.checkpoints = directory / "checkpoints"
        self.device = resolve_device(config.device)
        self.data = load_run_data(config, self.device)
        source = load_source(config.source, seed=config.seed, cache_dir=None, normalization=config.normalization)
        # the probe is stored as its difference from the source: digest the source before training
        self.source_digests = tensor_digests(source.model.state_dict()) if config.strategy == "freeze" else None
        self.config = config.model_copy(update={"classes": self.data.classes,
                                                "normalization": str(source.normalize)})
        model = source.model
        model.dropout = self.config.dropout
        model.reset_head(self.data.num_classes, seed=self.config.seed)
        if self.config.bn_momentum is not None:
            for module in model.modules():
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                    module.momentum = self.config.bn_momentum
        channels_last = self.config.channels_last
        if channels_last is None:
            channels_last = self.device.type == "cuda"
        memory = torch.channels_last if channels_last else torch.contiguous_format
        self.model = model.to(self.device, memory_format=memory)
        self.normalize = source.normalize
        augment = None
        if self.config.augment:
            augment = KerasAugment(rotation=self.config.rotation, shift=self.config.shift, shear=self.config.shear,
                                   zoom=self.config.zoom, hflip=self.config.use_hflip)
        forward = torch.compile(self.model) if self.config.compile else None
        self.setup = StepSetup(self.normalize, augment, resolve_amp(self.config.amp, self.device),
                               channels_last, forward)
        self.eval_batch = self.config.eval_batch_size or 2 * self.config.batch_size
        self.shuffle = torch.Generator().manual_seed(self.config.seed)
        self.augment_rng = torch.Generator(device=self.device).manual_seed(self.config.seed + 1) if augment else None
        torch.manual_seed(self.config.seed)
        self.history: list[dict[str, Any]] = []
        self.resumed = False

    # -- files ------------------------------------------------------------------------------

    def write_inputs(self) -> None:
        _write_text(self.directory / "config.json", self.config.to_json())
        _write_text(self.directory / "folds.csv", self.data.folds.to_csv(index=False))

    def write_history(self) -> None:
        _write_text(self.directory / "history.csv",
                    pd.DataFrame(self.history, columns=HISTORY_COLUMNS).to_csv(index=False))

    def meta(self, **extra: Any) -> dict[str, Any]:
        return {"normalization": str(self.normalize), "classes": self.data.classes, "source": self.config.source,
                "target": self.config.target, "strategy": self.config.strategy, "fold": self.config.fold,
                "seed": self.config.seed, "size": self.config.size, "interpolation": self.config.interpolation,
                **extra}

    # -- phases -----------------------------------------------------------------------------

    def phases(self) -> list[str]:
        return [p.phase for p in phase_plan(self.config)]

    def set_trainable(self, phase: str) -> list[torch.nn.Parameter]:
        head_only = phase == "probe"
        for param in self.model.backbone_parameters():
            param.requires_grad_(not head_only)
        return list(self.model.head.parameters()) if head_only else list(self.model.parameters())

    def set_modes(self, phase: str) -> None:
        if phase == "probe":
            self.model.eval()  # frozen backbone: BatchNorm in inference mode
            self.model.head.train()
        else:
            self.model.train()

    def run_phase(self, phase: str, resume: dict[str, Any] | None, best: dict | None) -> int:
        """Train one phase to early stopping; leave the best weights in the model. Returns best epoch."""
        c = self.config
        params = self.set_trainable(phase)
        lr, epochs = next((p.lr, p.epochs) for p in phase_plan(c) if p.phase == phase)
        optimizer = KerasAdam(params, lr=lr, betas=(c.beta1, c.beta2), eps=c.eps)
        if phase == "probe":
            stopper = EarlyStopping("max", c.probe_patience, c.min_delta)
        else:
            stopper = EarlyStopping("min", c.patience, c.min_delta)
        start, best_name, best_dirty = 0, None, False
        if resume is not None:
            optimizer.load_state_dict(resume["optimizer"])
            stopper = EarlyStopping.from_state(resume["stopper"])
            start, best_name = resume["epoch"], resume.get("best_file")
        last_save = time.monotonic()
        epoch = start
        for epoch in range(start, epochs):
            if stopper.should_stop:
                break
            began = time.perf_counter()
            self.set_modes(phase)
            train_loss, train_acc = train_epoch(self.model, optimizer, self.data.pixels, self.data.labels,
                                                self.data.index["train"], c.batch_size, self.setup, self.shuffle,
                                                self.augment_rng, head_only=phase == "probe")
            self.model.eval()
            val_rows = self.data.index["val"]
            probs, val_loss = predict(self.model, self.data.pixels, self.data.labels, val_rows, self.eval_batch,
                                      self.setup)
            val_labels = self.data.labels[val_rows].cpu()
            val_acc = float((probs.argmax(1) == val_labels).float().mean())
            val_auc = classification_metrics(val_labels.numpy(), probs.numpy().astype(np.float64),
                                             c.auc_average)["auc"]
            if stopper.step(val_acc if phase == "probe" else val_loss):
                best = ckpt.cpu_state(self.model.state_dict())
                best_dirty = True
            self.history.append({"phase": phase, "epoch": epoch, "train_loss": train_loss,
                                 "train_accuracy": train_acc, "val_loss": val_loss, "val_accuracy": val_acc,
                                 "val_auc": val_auc, "seconds": time.perf_counter() - began})
            self.write_history()
            self.sinks.epoch(dict(self.history[-1]))
            finished = stopper.should_stop or epoch + 1 == epochs
            due = time.monotonic() - last_save >= c.checkpoint_every_s
            # a finished probe is recorded by the phase transition; a finished fine-tune by DONE
            if (due and not finished) or (finished and phase == "finetune" and c.keep_last):
                best_name = self.checkpoint(phase, epoch + 1, optimizer, stopper, best, best_name, best_dirty)
                best_dirty, last_save = False, time.monotonic()
        if best is not None:
            self.model.load_state_dict(best)
        return stopper.best_epoch

    def checkpoint(self, phase: str, epoch: int, optimizer: torch.optim.Optimizer | None,
                   stopper: EarlyStopping | None, best: dict | None, best_name: str | None, best_dirty: bool) -> str | None:
        state = {"phase": phase, "epoch": epoch, "model": ckpt.cpu_state(self.model.state_dict()),
                 "optimizer": optimizer.state_dict() if optimizer is not None else None,
                 "stopper": stopper.state_dict() if stopper is not None else None,
                 "history": list(self.history), "rng": ckpt.rng_states(self.shuffle, self.augment_rng)}
        return ckpt.write_checkpoint(self.checkpoints, state, best, best_name, best_dirty)

    def finish_probe(self, best_epoch: int) -> dict[str, Any]:
        frame, metrics = _evaluate_test(self.model, self.data, self.setup, self.eval_batch, self.config)
        metrics["best_epoch"] = best_epoch
        probe = self.directory / "probe"
        _write_text(probe / "predictions.csv", frame.to_csv(index=False))
        save_probe(probe / PROBE_FILE, self.model, self.meta(phase="probe", best_epoch=best_epoch),
                   load=self.config.source, seed=self.config.seed, source_digests=self.source_digests)
        _write_text(probe / "metrics.json", json.dumps(_json_safe(metrics), indent=2))
        return metrics

    # -- the whole run ----------------------------------------------------------------------

    def train(self) -> RunResult:
        from medtransfer.models import save_checkpoint

        began = time.perf_counter()
        self.write_inputs()
        found = ckpt.read_checkpoint(self.checkpoints)
        phases = self.phases()
        start_phase, resume, best = 0, None, None
        if found is not None:
            state, best = found
            self.model.load_state_dict(state["model"])
            ckpt.restore_rng(state["rng"], self.shuffle, self.augment_rng)
            self.history = list(state["history"])
            self.write_history()
            start_phase = phases.index(state["phase"])
            resume = state if state["optimizer"] is not None else None
            self.resumed = True
        self.sinks.start(RunStart(self.config.run_id, self.directory, self.config.model_dump(mode="json"),
                                  phase_plan(self.config), [dict(r) for r in self.history], self.resumed))
        probe_metrics = None
        best_epoch = -1
        for i in range(start_phase, len(phases)):
            phase = phases[i]
            best_epoch = self.run_phase(phase, resume if i == start_phase else None, best if i == start_phase else None)
            if phase == "probe":
                probe_metrics = self.finish_probe(best_epoch)
                # phase 2 starts from the probe: record that, so a kill does not redo phase 1
                self.checkpoint("finetune", 0, None, None, None, None, False)
        if probe_metrics is None and (self.directory / "probe" / "metrics.json").exists():
            probe_metrics = json.loads((self.directory / "probe" / "metrics.json").read_text())
        frame, metrics = _evaluate_test(self.model, self.data, self.setup, self.eval_batch, self.config)
        finetune = [row for row in self.history if row["phase"] == "finetune"]
        metrics.update(best_epoch=best_epoch, epochs=len(finetune), seconds=time.perf_counter() - began,
                       resumed=self.resumed, device=str(self.device), threads=torch.get_num_threads())
        _write_text(self.directory / "predictions.csv", frame.to_csv(index=False))
        _write_text(self.directory / "metrics.json", json.dumps(_json_safe(metrics), indent=2))
        save_checkpoint(self.checkpoints / "best.pt", self.model, self.meta(phase="finetune", best_epoch=best_epoch))
        self.sinks.finish(_json_safe(metrics), probe_metrics)
        _write_text(self.directory / DONE, json.dumps({"finished": time.time()}))
        if not self.config.keep_last:
            (self.checkpoints / ckpt.LAST).unlink(missing_ok=True)
        ckpt.remove_stale_snapshots(self.checkpoints, keep=None)
        return RunResult(self.directory, metrics, probe_metrics, self.resumed, history=self.history)


def train_run(config: RunConfig, out_dir: str | Path, sinks: Sinks | None = None) -> RunResult:
    """Train (or resume, or skip if ``DONE``) one run into ``out_dir``; returns its test metrics.

    ``sinks`` (:class:`medtransfer.tracking.Sinks`) observe the run: its start, each history row,
    its end; they cannot change or fail it.

    Seeds the run's own generators and the global torch RNG (dropout) from ``config.seed``
    inside ``torch.random.fork_rng``, so the caller's random state is left untouched.
    """
    directory = Path(out_dir)
    if (directory / DONE).exists():
        return RunResult.read(directory)
    directory.mkdir(parents=True, exist_ok=True)
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    if config.threads:
        torch.set_num_threads(config.threads)
    if config.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS' deterministic workspace
        torch.use_deterministic_algorithms(True)
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    try:
        with torch.random.fork_rng(devices=devices):
            return _Run(config, directory, sinks).train()
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def clear_run(directory: str | Path) -> None:
    """Delete a run directory (to redo it from scratch)."""
    shutil.rmtree(directory, ignore_errors=True)

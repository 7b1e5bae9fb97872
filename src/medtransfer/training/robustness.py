"""A finished run's test part under image corruptions, without retraining.

For each corruption of :data:`medtransfer.data.corruptions.CORRUPTIONS`, the fine-tuned network
(``checkpoints/best.pt``) predicts the run's test images corrupted at severities 1..5 on the
device, inside each batch, before normalisation (the same :func:`~medtransfer.training.loop.predict`
path, batch size, autocast and thread count that wrote ``predictions.csv``, so severity 0 gives
its probabilities bit for bit). One file per corruption, ``corruptions/{name}.csv``:
``image_id, label, severity, p_0..p_{k-1}`` (float64 softmax probabilities), written atomically
and then sealed into ``DONE``'s digests (:meth:`RunDir.seal`): a killed evaluation resumes with
the corruptions ``DONE`` does not record yet, and ``analyze`` refuses a corruption file changed
since.

Seeds: every severity of corruption ``name`` draws from ``corruption_seed(run seed, name)``, so
the noise field grows with the severity, and the runs of one fold and seed (every source, both
strategies) see the same corrupted images: the comparison of sources is paired.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from medtransfer.atomic import write_text_atomic
from medtransfer.data import Manifest, PixelCache, corruptions
from medtransfer.errors import ConfigError, DataError
from medtransfer.models import Normalization
from medtransfer.models.checkpoint import load_checkpoint
from medtransfer.training.data import RunData, load_run_data
from medtransfer.training.loop import StepSetup, Transform, predict
from medtransfer.training.record import RunDir, RunRecord, read_record
from medtransfer.training.run import resolve_amp, resolve_device, run_settings

__all__ = ["CorruptionEvaluator", "RunNetwork", "evaluate_on_dataset", "corruption_seed", "evaluate_corruptions", "read_corruption_file", "run_settings"]

SEVERITY = "severity"


def corruption_seed(run_seed: int, name: str) -> int:
    """The seed of corruption ``name``'s random draws in a run of seed ``run_seed`` (stable across
    Python processes: a CRC of the name, not ``hash``)."""
    return (zlib.crc32(name.encode()) + 1_000_003 * int(run_seed)) % (2 ** 63)


@dataclass
class RunNetwork:
    """A finished run's fine-tuned network on the device, with the run's normalisation, autocast,
    memory format and evaluation batch size."""

    record: RunRecord
    device: torch.device
    model: torch.nn.Module
    normalize: Normalization
    amp: torch.dtype | None
    channels_last: bool
    batch: int

    @classmethod
    def open(cls, record: RunRecord, device: str | torch.device | None = None) -> RunNetwork:
        """Load ``best.pt`` onto ``device`` (default: the run's own device setting)."""
        config = record.resolved
        device = resolve_device(device if device is not None else config.device)
        if record.normalization is None:
            raise DataError(f"{record.path}: the run records no input normalisation; cannot evaluate it")
        model, _ = load_checkpoint(record.checkpoint)
        channels_last = config.channels_last if config.channels_last is not None else device.type == "cuda"
        memory = torch.channels_last if channels_last else torch.contiguous_format
        model = model.to(device, memory_format=memory).eval()
        return cls(record, device, model, Normalization(record.normalization), resolve_amp(config.amp, device),
                   channels_last, config.eval_batch_size or 2 * config.batch_size)

    def predict(self, pixels: torch.Tensor, labels: torch.Tensor, rows: torch.Tensor,
                transform: Transform | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Probabilities ``(len(rows), k)`` float64 on the CPU of ``pixels[rows]`` (uint8 (N, 3, h, w)
        on the device), each batch through ``transform(x, generator)`` first when given."""
        setup = StepSetup(self.normalize, transform, self.amp, self.channels_last)
        probs, _ = predict(self.model, pixels, labels, rows, self.batch, setup, generator)
        return probs


def _frame(image_ids: np.ndarray, labels: np.ndarray, probs: torch.Tensor) -> pd.DataFrame:
    frame = pd.DataFrame({"image_id": image_ids, "label": labels})
    for c in range(probs.shape[1]):
        frame[f"p_{c}"] = probs[:, c].numpy()
    return frame


@dataclass
class CorruptionEvaluator:
    """A finished run's network and its fold's test images on the device."""

    network: RunNetwork
    data: RunData

    @classmethod
    def open(cls, record: RunRecord, device: str | torch.device | None = None) -> CorruptionEvaluator:
        """Load ``record``'s network and its fold's pixels (from the cache) onto ``device``."""
        network = RunNetwork.open(record, device)
        return cls(network, load_run_data(record.resolved, network.device))

    def predict(self, name: str, severity: int) -> pd.DataFrame:
        """The test part under ``name`` at ``severity`` (0: clean): ``image_id, label, p_0..``."""
        seed = corruption_seed(self.network.record.seed, name)
        generator = torch.Generator(device=self.network.device).manual_seed(seed)

        def transform(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
            return corruptions.corrupt(x, name, severity, g)

        rows = self.data.index["test"]
        probs = self.network.predict(self.data.pixels, self.data.labels, rows, transform, generator)
        return _frame(self.data.image_ids[rows.cpu().numpy()], self.data.labels[rows].cpu().numpy(), probs)

    def corruption_frame(self, name: str, severities: Sequence[int] = corruptions.SEVERITIES) -> pd.DataFrame:
        """Every severity of ``name``, stacked: ``image_id, label, severity, p_0..``."""
        frames = []
        for severity in severities:
            frame = self.predict(name, severity)
            frame.insert(2, SEVERITY, severity)
            frames.append(frame)
        return pd.concat(frames, ignore_index=True)


def evaluate_corruptions(run: str | os.PathLike | RunDir, names: Sequence[str] = corruptions.NAMES, *,
                         device: str | torch.device | None = None,
                         on_file: Callable[[str], None] | None = None) -> list[str]:
    """Write and seal ``corruptions/{name}.csv`` of a finished run for each of ``names`` that its
    ``DONE`` does not record yet; returns the names computed (empty: nothing to do).

    The run's files are verified (sha256) first. Runs at the run's thread count (``threads``) and
    determinism settings, as training did. ``on_file(name)`` is called after each sealed file.

    Raises:
        DataError: the run is unfinished or damaged, or its marker carries no digests.
    """
    record = read_record(run, check="full")
    names = corruptions.parse_names(list(names))
    todo = [name for name in names if name not in record.dir.corruption_files()]
    if not todo:
        return []
    with run_settings(record.config):
        evaluator = CorruptionEvaluator.open(record, device)
        for name in todo:
            path = record.dir.corruption_file(name)
            write_text_atomic(path, evaluator.corruption_frame(name).to_csv(index=False))
            record.dir.seal(path)
            if on_file is not None:
                on_file(name)
    return todo


def read_corruption_file(path: Path) -> pd.DataFrame:
    """A ``corruptions/{name}.csv``: columns ``image_id`` (str), ``label``, ``severity`` (int) and
    ``p_0..p_{k-1}`` (float64).

    Raises:
        DataError: missing, or without those columns, or with severities outside 1..5.
    """
    try:
        frame = pd.read_csv(path, dtype={"image_id": str})
    except FileNotFoundError:
        raise DataError(f"{path}: corruption predictions not found") from None
    except (OSError, ValueError) as error:
        raise DataError(f"{path}: cannot read the corruption predictions ({error})") from None
    probs = [c for c in frame.columns if c.startswith("p_")]
    expected = ["image_id", "label", SEVERITY] + [f"p_{i}" for i in range(len(probs))]
    if list(frame.columns) != expected or len(probs) < 2:
        raise DataError(f"{path}: expected columns image_id, label, severity, p_0..p_(k-1); "
                        f"found {list(frame.columns)}")
    severity = frame[SEVERITY]
    if not np.issubdtype(severity.dtype, np.integer) or not severity.isin(corruptions.SEVERITIES).all():
        raise DataError(f"{path}: severities must be integers in {list(corruptions.SEVERITIES)}")
    return frame


def evaluate_on_dataset(run: str | os.PathLike | RunDir, name: str, manifest: Manifest, classes: dict[str, str], *,
                        device: str | torch.device | None = None) -> bool:
    """Write and seal ``transfer/{name}.csv`` (``image_id, label, p_0..``) of a finished run: its
    network on every image of ``manifest`` (another dataset) whose class ``classes`` maps to one of
    the run's classes (``{dataset class: run class}``; images of unmapped classes are left out),
    resized like the run's own images (its ``size`` and ``interpolation``, through the pixel
    cache), labels in the run's class order. Returns ``False`` when ``DONE`` records it already.

    Raises:
        ConfigError: ``classes`` names a class the dataset or the run does not have, or maps none.
    """
    record = read_record(run, check="full")
    if name in record.dir.transfer_files():
        return False
    where = f"evaluate target {name!r}: classes"
    unknown = sorted(set(classes) - set(manifest.classes))
    if unknown:
        raise ConfigError(f"{where}: {unknown} are not classes of its dataset (it has {manifest.classes})")
    foreign = sorted(set(classes.values()) - set(record.classes))
    if foreign:
        raise ConfigError(f"{where}: {foreign} are not classes of the network of {record.run_id} "
                          f"(it has {record.classes})")
    to_run = {i: record.classes.index(classes[c]) for i, c in enumerate(manifest.classes) if c in classes}
    kept = np.flatnonzero(np.isin(manifest.labels, list(to_run)))
    if kept.size == 0:
        raise ConfigError(f"{where}: no image of the dataset has a mapped class")
    config = record.resolved
    with run_settings(record.config):
        network = RunNetwork.open(record, device)
        cache = PixelCache.build(manifest, config.size, interpolation=config.interpolation, cache_dir=config.cache_dir)
        pixels = torch.from_numpy(np.ascontiguousarray(cache.pixels[kept])).to(network.device).permute(0, 3, 1, 2)
        labels_np = np.array([to_run[int(y)] for y in manifest.labels[kept]], dtype=np.int64)
        labels = torch.from_numpy(labels_np).to(network.device)
        rows = torch.arange(kept.size, device=network.device)
        probs = network.predict(pixels.contiguous(), labels, rows)
    path = record.dir.transfer_file(name)
    write_text_atomic(path, _frame(manifest.frame["image_id"].to_numpy()[kept], labels_np, probs).to_csv(index=False))
    record.dir.seal(path)
    return True

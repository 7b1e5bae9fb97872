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

import contextlib
import os
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from medtransfer.atomic import write_text_atomic
from medtransfer.data import corruptions
from medtransfer.errors import DataError
from medtransfer.models import Normalization
from medtransfer.models.checkpoint import load_checkpoint
from medtransfer.training.data import RunData, load_run_data
from medtransfer.training.loop import StepSetup, predict
from medtransfer.training.record import RunDir, RunRecord, read_record
from medtransfer.training.run import resolve_amp, resolve_device

__all__ = ["CorruptionEvaluator", "corruption_seed", "evaluate_corruptions", "read_corruption_file", "run_settings"]

SEVERITY = "severity"


def corruption_seed(run_seed: int, name: str) -> int:
    """The seed of corruption ``name``'s random draws in a run of seed ``run_seed`` (stable across
    Python processes: a CRC of the name, not ``hash``)."""
    return (zlib.crc32(name.encode()) + 1_000_003 * int(run_seed)) % (2 ** 63)


@dataclass
class CorruptionEvaluator:
    """A finished run's network and test images on the device, ready to predict corrupted batches."""

    record: RunRecord
    device: torch.device
    model: torch.nn.Module
    data: RunData
    normalize: Normalization
    amp: torch.dtype | None
    channels_last: bool
    batch: int

    @classmethod
    def open(cls, record: RunRecord, device: str | torch.device | None = None) -> CorruptionEvaluator:
        """Load ``record``'s data (its fold's pixels from the cache) and ``best.pt`` onto ``device``
        (default: the run's own device setting)."""
        config = record.resolved
        device = resolve_device(device if device is not None else config.device)
        data = load_run_data(config, device)
        model, _ = load_checkpoint(record.checkpoint)
        channels_last = config.channels_last if config.channels_last is not None else device.type == "cuda"
        memory = torch.channels_last if channels_last else torch.contiguous_format
        model = model.to(device, memory_format=memory).eval()
        if record.normalization is None:
            raise DataError(f"{record.path}: the run records no input normalisation; cannot evaluate it")
        return cls(record, device, model, data, Normalization(record.normalization), resolve_amp(config.amp, device),
                   channels_last, config.eval_batch_size or 2 * config.batch_size)

    def predict(self, name: str, severity: int) -> pd.DataFrame:
        """The test part under ``name`` at ``severity`` (0: clean): ``image_id, label, p_0..``."""
        seed = corruption_seed(self.record.seed, name)
        generator = torch.Generator(device=self.device).manual_seed(seed)

        def transform(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
            return corruptions.corrupt(x, name, severity, g)

        setup = StepSetup(self.normalize, transform, self.amp, self.channels_last)
        rows = self.data.index["test"]
        probs, _ = predict(self.model, self.data.pixels, self.data.labels, rows, self.batch, setup, generator)
        frame = pd.DataFrame({"image_id": self.data.image_ids[rows.cpu().numpy()],
                              "label": self.data.labels[rows].cpu().numpy()})
        for c in range(probs.shape[1]):
            frame[f"p_{c}"] = probs[:, c].numpy()
        return frame

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
    with run_settings(record):
        evaluator = CorruptionEvaluator.open(record, device)
        for name in todo:
            path = record.dir.corruption_file(name)
            write_text_atomic(path, evaluator.corruption_frame(name).to_csv(index=False))
            record.dir.seal(path)
            if on_file is not None:
                on_file(name)
    return todo


@contextlib.contextmanager
def run_settings(record: RunRecord) -> Iterator[None]:
    """Torch's thread count and determinism as the run trained with (its ``threads`` and
    ``deterministic``), restored on exit: CPU sums are reproduced only at one thread count."""
    config = record.config
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

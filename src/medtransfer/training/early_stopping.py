"""Early stopping with Keras' semantics, as a small serialisable state machine."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from medtransfer.errors import ConfigError


@dataclass
class EarlyStopping:
    """Stop after ``patience`` epochs without improvement of a monitored value.

    ``mode`` "min" (validation loss) or "max" (validation accuracy). An epoch improves when its
    value beats the best so far by more than ``min_delta`` (Keras' rule); the first finite value
    always improves. ``step(value)`` returns True when the epoch improved; ``should_stop`` turns
    True once ``wait >= patience``.
    """

    mode: str = "min"
    patience: int = 30
    min_delta: float = 0.0
    best: float = math.nan
    best_epoch: int = -1
    wait: int = 0
    epochs_seen: int = 0

    def __post_init__(self) -> None:
        if self.mode not in ("min", "max"):
            raise ConfigError(f"early stopping mode: expected 'min' or 'max', got {self.mode!r}")
        if self.patience < 1:
            raise ConfigError(f"early stopping patience: expected >= 1, got {self.patience}")

    def _improves(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if math.isnan(self.best):
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def step(self, value: float) -> bool:
        """Record one epoch's monitored value; True if it is the new best."""
        epoch = self.epochs_seen
        self.epochs_seen += 1
        if self._improves(value):
            self.best, self.best_epoch, self.wait = float(value), epoch, 0
            return True
        self.wait += 1
        return False

    @property
    def should_stop(self) -> bool:
        """True when the last ``patience`` epochs brought no improvement."""
        return self.wait >= self.patience

    def state_dict(self) -> dict:
        """Everything needed to continue exactly where this left off."""
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict) -> "EarlyStopping":
        """Rebuild from :meth:`state_dict`."""
        return cls(**state)

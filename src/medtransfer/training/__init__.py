"""One fine-tuning run: the paper's protocol (phases, early stopping, checkpoints, metrics).

Knows nothing of grids or clusters; ``medtransfer.study`` builds on :func:`train_run`.
"""

from medtransfer.training.config import RunConfig
from medtransfer.training.early_stopping import EarlyStopping
from medtransfer.training.metrics import classification_metrics
from medtransfer.training.optim import KerasAdam
from medtransfer.training.probe import load_probe
from medtransfer.training.run import RunResult, train_run

__all__ = ["EarlyStopping", "KerasAdam", "RunConfig", "RunResult", "classification_metrics", "load_probe",
           "train_run"]

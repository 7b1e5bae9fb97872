"""One fine-tuning run: the paper's protocol (phases, early stopping, checkpoints, metrics).

Knows nothing of grids or clusters; ``medtransfer.study`` builds on :func:`train_run`.
"""

from medtransfer.lazy import lazy_exports

# public name -> the module that defines it, imported on first use (a light module of the package
# does not load the heavy ones)
_EXPORTS = {
    "RunConfig": "config",
    "EarlyStopping": "early_stopping",
    "classification_metrics": "metrics",
    "KerasAdam": "optim",
    "load_probe": "probe",
    "RunResult": "run",
    "train_run": "run",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

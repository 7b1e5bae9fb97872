"""One fine-tuning run: the paper's protocol (phases, early stopping, checkpoints, metrics).

Knows nothing of grids or clusters; ``medtransfer.study`` builds on :func:`train_run`.
"""

from medtransfer.lazy import lazy_exports

# module -> the public names it defines, imported on first use (a light module of the package does
# not load the heavy ones)
_EXPORTS = {
    "config": ("RunConfig",),
    "early_stopping": ("EarlyStopping",),
    "metrics": ("classification_metrics",),
    "optim": ("KerasAdam",),
    "probe": ("load_probe",),
    "run": ("RunResult", "train_run"),
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

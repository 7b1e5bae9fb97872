"""medtransfer: transfer learning for medical image classification, and the tools to study it.

Subpackages: ``similarity`` (CCA, CKA, prediction similarity), ``models`` (Keras-layout ResNet50,
weight sources), ``data`` (datasets, folds, pixel cache, augmentation), ``training`` (one run),
``study`` (grids of runs, executors), ``analysis`` (tables, figures, report).
"""

__version__ = "0.1.0"


# The notebook entry points, loaded on first use: ``import medtransfer`` stays light, and the
# package root (above every layer, like the command line) only points down into ``analysis``.
_API = {"load_study": "medtransfer.analysis.notebook", "compare_models": "medtransfer.analysis.compare",
        "analyze": "medtransfer.analysis.run", "read_study": "medtransfer.analysis.inventory"}

__all__ = ["__version__", *_API]


def __getattr__(name: str):  # noqa: ANN202 - the attribute named
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'medtransfer' has no attribute {name!r}")

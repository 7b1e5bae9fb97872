"""medtransfer: transfer learning for medical image classification, and the tools to study it.

Subpackages: ``similarity`` (CCA, CKA, prediction similarity), ``models`` (Keras-layout ResNet50,
weight sources), ``data`` (datasets, folds, pixel cache, augmentation), ``training`` (one run),
``study`` (grids of runs, executors), ``analysis`` (tables, figures, report).
"""

__version__ = "0.1.0"


from medtransfer.lazy import lazy_exports

# The notebook entry points, loaded on first use: ``import medtransfer`` stays light, and the
# package root (above every layer, like the command line) only points down into ``analysis``.
_API = {"analysis.notebook": ("load_study",), "analysis.compare": ("compare_models",),
        "analysis.run": ("analyze",), "analysis.inventory": ("read_study",)}
_names, __getattr__, __dir__ = lazy_exports(__name__, _API)
__all__ = ["__version__", *_names]

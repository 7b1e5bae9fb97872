"""medtransfer: transfer learning for medical image classification, and the tools to study it.

Subpackages: ``similarity`` (CCA, CKA, prediction similarity), ``models`` (Keras-layout ResNet50,
weight sources), ``data`` (datasets, folds, pixel cache, augmentation), ``training`` (one run),
``study`` (grids of runs, executors), ``analysis`` (tables, figures, report).
"""

__version__ = "0.1.0"

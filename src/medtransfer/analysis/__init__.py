"""Analysis of a study directory: Table 2, layer-wise similarity (CCA, CKA) of the paper's model
pairs, prediction similarity, AUC gain vs CCA statistics, the paper's figures and one HTML report.

Public entry: :func:`analyze` (``medtransfer analyze DIR``), imported lazily so that the command
line starts without loading torch or matplotlib.
"""

from __future__ import annotations

from typing import Any

__all__ = ["analyze"]


def __getattr__(name: str) -> Any:
    if name == "analyze":
        from medtransfer.analysis.run import analyze

        return analyze
    raise AttributeError(f"module 'medtransfer.analysis' has no attribute {name!r}")

"""Analysis of a study directory: Table 2, layer-wise similarity (CCA, CKA) of the paper's model
pairs, prediction similarity, AUC gain vs CCA statistics, the paper's figures and one HTML report.

Public entries: :func:`analyze` (``medtransfer analyze DIR``), :func:`compare_models`
(``medtransfer similarity``), :func:`read_study` (a study directory's runs), :func:`load_study`
(its results as DataFrames, for a notebook), :func:`check_grid` (the runs on disk against the
study's grid). ``analyze`` and ``compare_models`` load torch: they
are imported on first use, so that the command line and ``load_study`` start without it.
"""

from __future__ import annotations

from typing import Any

from medtransfer.analysis.inventory import Study, read_study
from medtransfer.analysis.notebook import StudyResults, load_study

__all__ = ["Study", "StudyResults", "analyze", "check_grid", "compare_models", "load_study", "read_study"]


def __getattr__(name: str) -> Any:
    if name == "analyze":
        from medtransfer.analysis.run import analyze

        return analyze
    if name == "compare_models":
        from medtransfer.analysis.compare import compare_models

        return compare_models
    if name == "check_grid":
        from medtransfer.analysis.grid import check_grid

        return check_grid
    raise AttributeError(f"module 'medtransfer.analysis' has no attribute {name!r}")

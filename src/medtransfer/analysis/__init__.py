"""Analysis of a study directory: Table 2, layer-wise similarity (CCA, CKA) of the paper's model
pairs, prediction similarity, AUC gain vs CCA statistics, the paper's figures and one HTML report.

Public entries: :func:`analyze` (``medtransfer analyze DIR``), :func:`compare_models`
(``medtransfer similarity``), :func:`read_study` (a study directory's runs), :func:`load_study`
(its results as DataFrames, for a notebook), :func:`check_grid` (the runs on disk against the
study's grid). Each is imported on first use: ``analyze`` and
``compare_models`` load torch, the command line and ``load_study`` start without it.
"""

from medtransfer.lazy import lazy_exports

# module -> the public names it defines, imported on first use (``analyze`` and ``compare_models``
# load torch; ``read_study`` and ``load_study`` do not)
_EXPORTS = {
    "inventory": ("Study", "read_study"),
    "notebook": ("StudyResults", "load_study"),
    "run": ("analyze",),
    "compare": ("compare_models",),
    "grid": ("check_grid",),
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

"""Studies: a YAML grid of runs, expanded, executed (local, SLURM, Ray), resumable, tabulated."""

from medtransfer.lazy import lazy_exports

# module -> the public names it defines, imported on first use (a light module of the package does
# not load the heavy ones)
_EXPORTS = {
    "config": ("StudyConfig", "shipped_config"),
    "executors": ("LocalExecutor", "RayExecutor", "SlurmExecutor", "Task"),
    "expand": ("expand",),
    "results": ("write_results",),
    "runner": ("StudyReport", "run_study"),
    "store": ("count_states",),
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

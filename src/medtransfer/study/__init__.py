"""Studies: a YAML grid of runs, expanded, executed (local, SLURM, Ray), resumable, tabulated."""

from medtransfer.lazy import lazy_exports

# public name -> the module that defines it, imported on first use (a light module of the package
# does not load the heavy ones)
_EXPORTS = {
    "StudyConfig": "config",
    "shipped_config": "config",
    "LocalExecutor": "executors",
    "RayExecutor": "executors",
    "SlurmExecutor": "executors",
    "Task": "executors",
    "make_executor": "executors",
    "expand": "expand",
    "write_results": "results",
    "StudyReport": "runner",
    "run_study": "runner",
    "count_states": "store",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

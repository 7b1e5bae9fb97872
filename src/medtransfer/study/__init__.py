"""Studies: a YAML grid of runs, expanded, executed (local, SLURM, Ray), resumable, tabulated."""

from medtransfer.study.config import StudyConfig, shipped_config
from medtransfer.study.executors import LocalExecutor, RayExecutor, SlurmExecutor, Task, make_executor
from medtransfer.study.expand import expand
from medtransfer.study.results import write_results
from medtransfer.study.table2 import table2
from medtransfer.study.runner import StudyReport, run_study
from medtransfer.study.store import count_states, status

__all__ = ["LocalExecutor", "RayExecutor", "SlurmExecutor", "StudyConfig", "StudyReport", "Task", "count_states",
           "expand", "make_executor", "run_study", "shipped_config", "status", "table2", "write_results"]

"""Before any number is computed: the runs on disk against the grid the study records.

Every run of the grid (``expand`` of the recorded study) is looked up under ``runs/``:

- *missing*: no run directory; *unfinished*: no ``DONE`` (its state: running, queued,
  interrupted, failed, pending - so ``analyze`` during ``run`` never passes for complete);
- *damaged*: ``DONE`` is damaged, or a file differs from its digest (``RunDir.check``), or its
  ``config.json`` or ``predictions.csv`` cannot be read;
- *config mismatch*: its ``config.json`` differs from the planned run in a setting that changes
  what it computes (``medtransfer.study.extension.changed_settings``);
- *source changed*: the weights file its source is read from now is not the file it trained from
  (the sha256 it recorded in ``facts.json``); a file that is not there at all is left to the
  analysis, which fetches the official ImageNet file or names the init it cannot load;
- and every run directory on disk that is not in the grid is *foreign*.

A study whose record cannot be read has no grid to check against: that is a problem itself.
Runs whose ``DONE`` is the marker of runs written before digests (``{"finished": time}``) are
*legacy*: usable, listed, never silently taken for verified.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from medtransfer.analysis.loading import resolve_source
from medtransfer.analysis.tables import read_predictions
from medtransfer.errors import MedtransferError
from medtransfer.models.sources import source_weights_file
from medtransfer.study.config import StudyConfig
from medtransfer.study.expand import expand
from medtransfer.study.extension import changed_settings
from medtransfer.study.store import run_status
from medtransfer.training.config import RunConfig
from medtransfer.training.record import STUDY_FILE, RunDir, file_digest, find_all_run_dirs, recorded_study_file

PARTIAL_HINT = "`medtransfer analyze --partial DIR` writes them anyway, saying which cells are incomplete"


class IncompleteStudyError(MedtransferError):
    """The study is not a complete, verified grid (and ``--partial`` was not given)."""


@dataclass
class GridCheck:
    """What :func:`check_grid` found; each list names runs by id (``target/source-strategy/foldK``)."""

    root: Path
    grid_error: str | None = None
    cells: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # run id -> (target, source, strategy)
    missing: list[str] = field(default_factory=list)
    unfinished: list[tuple[str, str]] = field(default_factory=list)  # (run id, state)
    damaged: list[tuple[str, str]] = field(default_factory=list)  # (run id, what)
    mismatched: list[tuple[str, str]] = field(default_factory=list)
    source_changed: list[tuple[str, str]] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)
    legacy: list[str] = field(default_factory=list)
    verified: set[str] = field(default_factory=set)  # finished runs whose files matched their digests

    @property
    def excluded(self) -> set[str]:
        """Finished runs that must not enter a table."""
        return {r for r, _ in self.damaged + self.mismatched + self.source_changed} | set(self.foreign)

    @property
    def complete(self) -> bool:
        return self.grid_error is None and not (self.missing or self.unfinished or self.excluded)

    def problems(self) -> list[str]:
        """One line per problem, each naming its run."""
        lines = [f"no grid to check against: {self.grid_error}"] if self.grid_error else []
        lines += [f"missing: {r} (no run directory)" for r in self.missing]
        lines += [f"unfinished: {r} ({state})" for r, state in self.unfinished]
        lines += [f"damaged: {r}: {what}" for r, what in self.damaged]
        lines += [f"config mismatch: {r}: {what}" for r, what in self.mismatched]
        lines += [f"source changed: {r}: {what}" for r, what in self.source_changed]
        lines += [f"foreign: {r} (a run directory that is not in the study's grid)" for r in self.foreign]
        return lines

    def incomplete_cells(self) -> list[str]:
        """The table cells that lack a usable run of the grid, each with why and how many runs:
        ``"synth mine-no-freeze (source changed: 2 runs)"``."""
        why: dict[str, str] = {r: "missing" for r in self.missing}
        why.update({r: "unfinished" for r, _ in self.unfinished})
        why.update({r: "damaged" for r, _ in self.damaged})
        why.update({r: "config mismatch" for r, _ in self.mismatched})
        why.update({r: "source changed" for r, _ in self.source_changed})
        cells: dict[str, dict[str, int]] = {}
        for run_id, (t, s, g) in self.cells.items():
            if run_id in why:
                counts = cells.setdefault(f"{t} {s}-{g}", {})
                counts[why[run_id]] = counts.get(why[run_id], 0) + 1
        def runs(n: int) -> str:
            return f"{n} run" + ("s" if n > 1 else "")

        return [f"{cell} ({', '.join(f'{kind}: {runs(n)}' for kind, n in counts.items())})"
                for cell, counts in sorted(cells.items())]

    def refusal(self) -> str:
        """The message of :class:`IncompleteStudyError`."""
        lines = self.problems()
        shown = lines[:40] + ([f"... and {len(lines) - 40} more"] if len(lines) > 40 else [])
        return (f"study {self.root} is not a complete, verified grid, so no table is written ({PARTIAL_HINT}):\n  "
                + "\n  ".join(shown))


def _source_problem(run: RunDir, config: RunConfig, root: Path, digests: dict[Path, str],
                    paths: dict[str, Path | None]) -> str | None:
    """Why the weights file of the run's source is not the one it trained from, or ``None``
    (``digests`` and ``paths`` cache the files' sha256 and where each source string points)."""
    facts = run.read_facts(config)
    if facts.source_sha256 is None:
        return None
    load = run.resolve(config).source
    if load not in paths:
        try:
            paths[load] = source_weights_file(resolve_source(load, root))
        except MedtransferError:  # gone (another machine's cache): loading it later says so, or fetches
            paths[load] = None    # the md5-checked official file
    path = paths[load]
    if path is None:
        return None
    if path not in digests:
        digests[path] = file_digest(path)["sha256"]
    if digests[path] != facts.source_sha256:
        return (f"{path} has sha256 {digests[path][:12]}..., the run trained from {facts.source_sha256[:12]}...: "
                "the file was replaced after training, so 'fine-tuned vs init' would compare with other weights")
    return None


def check_grid(root: str | Path) -> GridCheck:
    """Check every run of the study in ``root`` (see the module docstring); reads, never writes."""
    root = Path(root)
    check = GridCheck(root)
    on_disk = find_all_run_dirs(root)
    configs = []
    path = recorded_study_file(root)
    if path is None:
        check.grid_error = f"{root / STUDY_FILE} is missing, so the runs cannot be checked against the study's grid"
    else:
        try:
            configs = expand(StudyConfig.from_yaml(path), root)
        except MedtransferError as error:
            check.grid_error = f"{path} cannot be read as a study ({error})"
    digests: dict[Path, str] = {}
    paths: dict[str, Path | None] = {}
    planned = {c.run_id: c for c in configs}
    for run_id, config in planned.items():
        check.cells[run_id] = (config.target_label, config.source_label, config.strategy)
        run = RunDir.in_study(root, config)
        if not run.path.is_dir():
            check.missing.append(run_id)
        elif not run.is_done():
            check.unfinished.append((run_id, run_status(run.path, run_id, check="none").state))
    for run_id, run in sorted(on_disk.items()):
        if run_id not in planned and configs:
            check.foreign.append(run_id)
            continue
        if not run.is_done():
            continue
        problems = run.check("full")
        try:  # sealed but unreadable (resealed by hand, or written so by a faulty version): no AUC to take
            read_predictions(run.predictions)
        except MedtransferError as error:
            problems.append(str(error))
        if problems:
            check.damaged.append((run_id, "; ".join(problems)))
            continue
        state, _ = run.marker()
        if state == "legacy":
            check.legacy.append(run_id)
        else:
            check.verified.add(run_id)
        config = planned.get(run_id)
        if config is None:
            continue
        try:
            changes = changed_settings(config, run.read_config_data() or {}, root)
            source = _source_problem(run, run.read_config(), root, digests, paths)
        except MedtransferError as error:
            check.damaged.append((run_id, str(error)))
            continue
        if changes:
            check.mismatched.append((run_id, ", ".join(changes)))
        if source:
            check.source_changed.append((run_id, source))
    return check


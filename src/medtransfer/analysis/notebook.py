"""A study's results for a notebook: ``load_study(dir)`` -> :class:`StudyResults`, numbers as
DataFrames.

Reads the study directory only (no torch): the finished runs, their test AUCs from
``predictions.csv`` (checked against ``results/auc.csv``), Table 2, and the tables
``medtransfer analyze`` wrote under ``analysis/``. Example::

    from medtransfer import load_study
    s = load_study("demo-study")
    s.table2()                 # target, source, strategy, mean, std, n, runs, best (AUC x 100)
    s.aucs.groupby("source")["auc"].mean()
    s.similarity()             # analysis/similarity.csv, after `medtransfer analyze demo-study`
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import pandas as pd

from medtransfer.analysis.inventory import Run, Study, read_study
from medtransfer.analysis.pairs import Roles, roles
from medtransfer.study.analysis_settings import AnalysisSettings
from medtransfer.analysis.tables import run_aucs
from medtransfer.errors import DataError
from medtransfer.study.table2 import table2, table2_wide
from medtransfer.training.record import ANALYSIS_DIR, SIMILARITY_TABLE, STUDY_FILE


class StudyResults:
    """The results of one study directory (read once; call :func:`load_study` again after
    more runs finish or after ``medtransfer analyze``)."""

    def __init__(self, study: Study) -> None:
        self.study = study
        self.root = study.root

    def __repr__(self) -> str:
        return (f"StudyResults({str(self.root)!r}: {len(self.runs)} finished runs of targets {self.study.targets}, "
                f"sources {self.study.sources})")

    @property
    def runs(self) -> list[Run]:
        """The finished runs (``medtransfer.training.record.RunRecord``: run_id, target, source,
        strategy, fold, seed, config, paths of predictions.csv and history.csv, ...)."""
        return self.study.runs

    @cached_property
    def _aucs(self) -> tuple[pd.DataFrame, list[str]]:
        settings = AnalysisSettings.from_mapping(self.study.config.get("analysis"), str(self.root / STUDY_FILE))
        return run_aucs(self.study, settings.auc_average)

    @property
    def aucs(self) -> pd.DataFrame:
        """One row per finished run: target, source, strategy, fold, auc (test AUC in 0..1; NaN when
        the test fold holds one class), n_classes (and auc_stored, from results/auc.csv)."""
        return self._aucs[0]

    @property
    def problems(self) -> list[str]:
        """What reading the AUCs found: runs without predictions, stored AUCs that disagree."""
        return self._aucs[1]

    @cached_property
    def roles(self) -> Roles:
        """The pretrained sources in Table 2's order and the random-init source (``analysis.sources``
        of study.yaml decides the order, as in ``medtransfer analyze``)."""
        settings = AnalysisSettings.from_mapping(self.study.config.get("analysis"), str(self.root / STUDY_FILE))
        return roles(self.study, settings.sources)

    def table2(self, wide: bool = False) -> pd.DataFrame:
        """Table 2: mean and std (ddof 1) over folds of the test AUC x 100 per target and (source,
        strategy), numbers: columns target, source, strategy, mean, std, n (runs with an AUC),
        runs, best. ``wide=True``: the table as printed (targets x "source / strategy" cells of
        text, best in ``**``)."""
        table = table2(self.aucs, self.roles.pretrained, self.roles.random)
        return table2_wide(table) if wide else table

    def _analysis_table(self, name: str, what: str) -> pd.DataFrame:
        path = self.root / ANALYSIS_DIR / name
        if not path.is_file():
            raise DataError(f"{path} does not exist: {what} is computed by the analysis; run "
                            f"`medtransfer analyze {self.root}` (or medtransfer.analysis.analyze) first")
        try:
            return pd.read_csv(path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
            raise DataError(f"{path}: not a CSV table ({error}); run `medtransfer analyze {self.root}` again") \
                from error

    def similarity(self) -> pd.DataFrame:
        """The layer-wise similarity of the model pairs (``analysis/similarity.csv``: target, fold,
        pair, strategy, layer, measure, mean, std, ...); ``DataError`` before the analysis ran."""
        return self._analysis_table(SIMILARITY_TABLE, "the layer-wise similarity")

    def prediction_similarity(self) -> pd.DataFrame:
        """``analysis/prediction_similarity.csv``; ``DataError`` before the analysis ran."""
        return self._analysis_table("prediction_similarity.csv", "the prediction similarity")

    def prediction_pairs(self) -> pd.DataFrame:
        """``analysis/prediction_pairs.csv``: every pair of fine-tuned networks of each target, random
        init included, with the agreement excess, its interval and test; ``DataError`` before the
        analysis ran."""
        return self._analysis_table("prediction_pairs.csv", "the prediction similarity of every pair")

    def claims(self) -> pd.DataFrame:
        """The paper's claims checked on this study (``analysis/claims.csv``); ``DataError`` before
        an analysis that writes it ran."""
        return self._analysis_table("claims.csv", "the check of the paper's claims")


def load_study(root: str | Path) -> StudyResults:
    """Read a study directory (see :class:`StudyResults`). Raises ``DataError`` when ``root`` is
    not a study directory, ``DamagedRunError`` when a finished run's files were changed."""
    return StudyResults(read_study(root))

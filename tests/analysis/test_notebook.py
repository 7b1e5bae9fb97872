"""The notebook API: load_study(dir) gives numbers as DataFrames, each equal to what the tables
module computes, and the analysis' tables once `analyze` wrote them; every documented name
imports from where the docs say."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medtransfer.errors import DataError

from .fake_study import make_study

DOCS = Path(__file__).resolve().parents[2] / "docs" / "interfaces.md"


def test_load_study_numbers(tmp_path):
    from medtransfer import load_study

    root = make_study(tmp_path / "study", targets={"chest": 2, "knee": 3}, folds=3)
    s = load_study(root)
    assert len(s.runs) == 2 * 5 * 3 and repr(s).startswith("StudyResults(")
    aucs = s.aucs
    assert len(aucs) == len(s.runs) and aucs["auc"].between(0, 1).all()
    table = s.table2()
    assert list(table.columns) == ["target", "source", "strategy", "mean", "std", "low", "high", "n", "runs", "best"]
    assert table["mean"].dtype == np.float64
    # each cell is the mean and sample std of its folds' AUC x 100
    for row in table.itertuples():
        values = 100 * aucs[(aucs.target == row.target) & (aucs.source == row.source)
                            & (aucs.strategy == row.strategy)]["auc"].to_numpy()
        assert row.mean == pytest.approx(values.mean()) and row.std == pytest.approx(values.std(ddof=1))
    wide = s.table2(wide=True)
    assert list(wide.index) == ["chest", "knee"] and all(isinstance(v, str) for v in wide.to_numpy().ravel())


def test_analysis_tables_need_the_analysis(tmp_path):
    from medtransfer import load_study

    root = make_study(tmp_path / "study", targets={"chest": 2}, folds=2)
    s = load_study(root)
    for method in (s.similarity, s.claims, s.prediction_similarity):
        with pytest.raises(DataError, match=r"run `medtransfer analyze .*` \(or medtransfer.analysis.analyze\) first"):
            method()
    (root / "analysis").mkdir()
    pd.DataFrame({"layer": ["conv1"], "measure": ["cca"], "mean": [0.5]}).to_csv(root / "analysis" / "similarity.csv",
                                                                                 index=False)
    pd.DataFrame({"claim": ["gain"], "holds": [True]}).to_csv(root / "analysis" / "claims.csv", index=False)
    assert s.similarity()["mean"].tolist() == [0.5]
    assert s.claims()["claim"].tolist() == ["gain"]


def test_not_a_study(tmp_path):
    from medtransfer import load_study

    with pytest.raises(DataError, match="not a study directory"):
        load_study(tmp_path / "nowhere")


def test_import_medtransfer_stays_light():
    code = ("import sys, medtransfer; heavy = [m for m in ('torch', 'pandas', 'matplotlib') if m in sys.modules]; "
            "print(heavy); from medtransfer import load_study, compare_models, read_study, analyze")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("entry", ["import medtransfer.analysis.notebook", "from medtransfer import load_study",
                                   "import medtransfer.training.record, medtransfer.study.config"])
def test_load_study_does_not_import_torch(entry):
    """The notebook reader, the run record and the study file need no torch: each package loads its
    heavy modules only when one of their names is used."""
    code = f"import sys; {entry}; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_documented_analysis_entries_import_from_medtransfer_analysis():
    """Each bullet of docs/interfaces.md's analysis section that starts with a call
    (`- `name(...)``) names a function of medtransfer.analysis."""
    import medtransfer.analysis as analysis

    section = DOCS.read_text().split("## analysis (`medtransfer.analysis`)")[1].split("\n## ")[0]
    names = re.findall(r"^- `([A-Za-z_]\w*)\(", section, flags=re.M)
    assert {"read_study", "analyze", "load_study", "compare_models"} <= set(names)
    for name in names:
        assert callable(getattr(analysis, name)), name
    for name in analysis.__all__:
        getattr(analysis, name)

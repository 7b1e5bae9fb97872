import numpy as np
import pandas as pd
import pytest

from medtransfer.analysis.inventory import read_study
from medtransfer.analysis.tables import auc_from_probs, read_predictions, run_aucs
from medtransfer.study.table2 import table2, table2_wide, write_table2
from tests.analysis.fake_study import make_study


def rank_auc(labels, scores):
    """Independent reference: P(score_pos > score_neg) + 0.5 P(tie), over all pairs."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


def test_table2_numbers_equal_those_recomputed_from_stored_probabilities(tmp_path):
    root = make_study(tmp_path, targets={"knee": 2, "thyroid": 2}, folds=3)
    study = read_study(root)
    aucs, problems = run_aucs(study)
    assert problems == []  # results/auc.csv agrees with predictions.csv
    table = table2(aucs, ("imagenet", "radimagenet"), "random")
    assert len(table) == 2 * 5
    for row in table.itertuples():
        values = []
        for fold in range(3):
            path = root / "runs" / row.target / f"{row.source}-{row.strategy}" / f"fold{fold}" / "predictions.csv"
            frame = pd.read_csv(path)
            values.append(100 * rank_auc(frame["label"].to_numpy(), frame["p_1"].to_numpy()))
        assert row.mean == pytest.approx(np.mean(values), abs=1e-9)
        assert row.std == pytest.approx(np.std(values, ddof=1), abs=1e-9)
        assert row.n == 3
    for target, sub in table.groupby("target"):
        assert sub["best"].sum() == 1 and sub.loc[sub["best"], "mean"].item() == sub["mean"].max()
    # column order of Table 2: imagenet nf, f, radimagenet nf, f, random nf
    assert list(table2_wide(table).columns) == [
        "imagenet / no-freeze", "imagenet / freeze", "radimagenet / no-freeze", "radimagenet / freeze", "random / no-freeze"]
    csv_path, md_path = write_table2(table, tmp_path / "out")
    assert pd.read_csv(csv_path)["mean"].to_numpy() == pytest.approx(table["mean"].to_numpy())
    assert md_path.read_text().count("**") == 2 * 2


def test_stored_auc_that_disagrees_with_probabilities_is_reported(tmp_path):
    root = make_study(tmp_path, folds=2)
    stored = pd.read_csv(root / "results" / "auc.csv")
    stored.loc[0, "auc"] += 0.01
    stored.to_csv(root / "results" / "auc.csv", index=False)
    _, problems = run_aucs(read_study(root))
    assert len(problems) == 1 and "results/auc.csv says" in problems[0]


def test_multiclass_auc_is_one_vs_rest(tmp_path):
    rng = np.random.default_rng(1)
    labels = np.arange(60) % 3
    probs = rng.dirichlet(np.ones(3), size=60) + np.eye(3)[labels]
    probs /= probs.sum(axis=1, keepdims=True)
    per_class = [rank_auc((labels == c).astype(int), probs[:, c]) for c in range(3)]
    assert auc_from_probs(labels, probs, "macro") == pytest.approx(np.mean(per_class))
    weights = np.bincount(labels) / len(labels)
    assert auc_from_probs(labels, probs, "weighted") == pytest.approx(np.dot(weights, per_class))
    assert np.isnan(auc_from_probs(np.zeros(5, int), probs[:5]))


def test_bad_predictions_file_names_the_file(tmp_path):
    path = tmp_path / "predictions.csv"
    path.write_text("image_id,label,q\na,0,0.5\n")
    with pytest.raises(ValueError, match="predictions.csv"):
        read_predictions(path)

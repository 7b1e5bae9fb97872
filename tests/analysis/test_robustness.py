"""Robustness tables, the robustness claim and its figure, on fake runs whose corrupted
predictions degrade at known rates."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from medtransfer import stats
from medtransfer.analysis import claims as C
from medtransfer.analysis import robustness as R
from medtransfer.analysis.inventory import read_study
from medtransfer.analysis.pairs import Roles
from medtransfer.analysis.tables import read_predictions
from medtransfer.training.metrics import expected_calibration_error
from medtransfer.training.record import DamagedRunError, read_record
from tests.analysis.fake_study import make_study, noisy_probs

SOURCES = ("synth_a", "synth_b", "random")
# signal left at each severity 1..5, as a fraction of the clean signal: synth_a degrades slowly
KEEP = {"synth_a": 0.9, "synth_b": 0.5, "random": 0.7}


def _corrupt_runs(root, names=("contrast", "jpeg"), seed=1):
    rng = np.random.default_rng(seed)
    study = read_study(root)
    for run in study.runs:
        ids, labels, _ = read_predictions(run.predictions)
        for name in names:
            frames = []
            for severity in range(1, 6):
                signal = 3.0 * KEEP[run.source] ** severity
                probs = noisy_probs(rng, labels, 2, signal)
                frame = pd.DataFrame({"image_id": ids, "label": labels, "severity": severity})
                for j in range(2):
                    frame[f"p_{j}"] = probs[:, j]
                frames.append(frame)
            path = run.dir.corruption_file(name)
            path.parent.mkdir(parents=True, exist_ok=True)
            pd.concat(frames).to_csv(path, index=False)
            run.dir.seal(path)
    return read_study(root)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = make_study(tmp_path_factory.mktemp("robust"), targets={"knee": 2, "thyroid": 2}, sources=SOURCES,
                      folds=5, n_test=200)
    return _corrupt_runs(root)


def test_metrics_are_the_runs_auc_and_ece_per_severity(study):
    metrics, missing = R.corruption_metrics(study)
    assert missing == []
    runs = len(study.runs)
    assert len(metrics) == runs * 2 * 6 and set(metrics["severity"]) == set(range(6))
    run = study.runs[3]
    row = metrics[(metrics["target"] == run.target) & (metrics["source"] == run.source)
                  & (metrics["strategy"] == run.strategy) & (metrics["fold"] == run.fold)
                  & (metrics["corruption"] == "jpeg")].set_index("severity")
    frame = pd.read_csv(run.dir.corruption_file("jpeg"))
    part = frame[frame["severity"] == 4]
    p = part[["p_0", "p_1"]].to_numpy()
    assert row.loc[4, "auc"] == pytest.approx(roc_auc_score(part["label"], p[:, 1]), abs=1e-12)
    assert row.loc[4, "ece"] == pytest.approx(expected_calibration_error(part["label"].to_numpy(), p), abs=1e-12)
    ids, labels, probs = read_predictions(run.predictions)
    assert row.loc[0, "auc"] == pytest.approx(roc_auc_score(labels, probs[:, 1]), abs=1e-12)


def test_mca_is_the_mean_over_corruptions_and_severities_and_the_drop_relative_to_clean(study):
    metrics, _ = R.corruption_metrics(study)
    runs = R.mca_runs(metrics)
    one = runs.iloc[0]
    part = metrics[(metrics[R.KEYS] == one[R.KEYS]).all(axis=1)]
    assert one["mca"] == pytest.approx(part.loc[part["severity"] > 0, "auc"].mean())
    assert one["drop"] == pytest.approx(100 * (one["clean_auc"] - one["mca"]) / one["clean_auc"])
    table = R.mca_table(runs, lambda target: C.fold_test_train_ratio(study, target))
    assert len(table) == 2 * 5  # targets x (two pretrained sources x 2 strategies + random)
    assert ((table["mca_low"] <= table["mca"]) & (table["mca"] <= table["mca_high"])).all()
    assert ((0 <= table["mca_low"]) & (table["mca_high"] <= 1)).all()
    by = table.set_index(["target", "source", "strategy"])["drop"]
    assert (by.xs("synth_a", level="source") < by.xs("synth_b", level="source")).all()


def test_summary_interval_is_the_logit_t_interval_over_folds(study):
    metrics, _ = R.corruption_metrics(study)
    summary = R.severity_summary(metrics)
    row = summary[(summary["target"] == "knee") & (summary["source"] == "synth_b") & (summary["strategy"] == "freeze")
                  & (summary["corruption"] == "contrast") & (summary["severity"] == 2)].iloc[0]
    folds = metrics[(metrics["target"] == "knee") & (metrics["source"] == "synth_b") & (metrics["strategy"] == "freeze")
                    & (metrics["corruption"] == "contrast") & (metrics["severity"] == 2)]["auc"]
    assert row["folds"] == 5 and row["auc"] == pytest.approx(folds.mean())
    assert (row["auc_low"], row["auc_high"]) == pytest.approx(stats.logit_t_interval(folds.to_numpy()))


def test_the_robustness_claim_finds_the_slower_degrading_source_more_robust(study):
    metrics, _ = R.corruption_metrics(study)
    runs = R.mca_runs(metrics)
    rows = C.robustness_claim(study, runs, "synth_a", "synth_b")
    per_target = [r for r in rows if r["target"] != C.ALL_TARGETS]
    assert len(per_target) == 4 and all(r["test"].startswith("Nadeau-Bengio") for r in per_target)
    for r in per_target:
        sub = runs[(runs["target"] == r["target"]) & (runs["strategy"] == r["strategy"])].set_index(["source", "fold"])
        diff = sub.loc["synth_a", "drop"].to_numpy() - sub.loc["synth_b", "drop"].to_numpy()
        expected = stats.corrected_resampled_t(diff, C.fold_test_train_ratio(study, r["target"]))
        assert r["statistic"] == pytest.approx(expected.statistic) and r["p_value"] == pytest.approx(expected.p_value)
        assert r["statistic"] < 0
    table, missing = C.claims_table(study, Roles(("synth_a", "synth_b"), "random"), pd.DataFrame(), pd.DataFrame(columns=["source_a", "source_b", "target", "comparison",
                                                                          "strategy", "correct_a", "correct_b", "fold",
                                                                          "label"]),
                                    pd.DataFrame(columns=["target", "strategy", "layer", "measure", "difference", "low",
                                                          "high", "p_value", "folds"]),
                                    pd.DataFrame(columns=["source", "strategy", "n", "layer", "spearman_rho"]),
                                    robustness=runs)
    robust = table[table["claim"] == "robustness"]
    assert len(robust) == 6  # 2 targets x 2 strategies + one across-target row per strategy
    verdicts = robust[robust["target"] != C.ALL_TARGETS]["verdict"]
    assert set(verdicts) <= {"supported", "inconclusive"} and (verdicts == "supported").any()
    assert robust["sentence"].str.contains("synth_a is more robust").all()
    assert not any("robustness" in m for m in missing)


def test_no_corruption_files_no_rows_and_no_complaint(tmp_path):
    study = read_study(make_study(tmp_path, sources=SOURCES, folds=3))
    metrics, missing = R.corruption_metrics(study)
    assert metrics.empty and missing == []
    assert R.mca_table(R.mca_runs(metrics), lambda t: 0.2).empty


def test_a_changed_corruption_file_is_damage(tmp_path):
    root = make_study(tmp_path, sources=SOURCES, folds=2)
    study = _corrupt_runs(root, names=("jpeg",))
    path = study.runs[0].dir.corruption_file("jpeg")
    path.write_text(path.read_text().replace("1,", "0,", 1))
    with pytest.raises(DamagedRunError, match="jpeg.csv"):
        read_record(study.runs[0].path)


def test_figure_per_target_has_a_panel_per_corruption(study, tmp_path):
    from medtransfer.analysis import figures

    figures.configure(["png"], list(SOURCES))
    metrics, _ = R.corruption_metrics(study)
    png = R.robustness_figure(R.severity_summary(metrics), "knee", tmp_path)
    assert png is not None and png.name == "robustness_knee.png" and png.stat().st_size > 10_000
    assert R.robustness_figure(R.severity_summary(metrics), "absent", tmp_path) is None

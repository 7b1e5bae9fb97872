"""The sensitivity analysis of a swept study: Table 2 per setting, rankings and Kendall's tau,
"a beats b" per setting, the stable / reverses sentence, and ``select: val``, which never reads a
test prediction."""

import json
from itertools import combinations

import numpy as np
import pandas as pd
import pytest
import yaml

from medtransfer.analysis import sensitivity as sens
from medtransfer.analysis.inventory import read_study
from medtransfer.training.record import RunDir
from tests.analysis.fake_study import write_predictions

SETTINGS = {"": 1e-4, "lr=0.003": 3e-3}  # run-id label -> lr
N_TEST = 60


def _probs(labels: np.ndarray, quality: float, rng: np.random.Generator) -> np.ndarray:
    """Scores whose AUC rises with ``quality`` (0: chance)."""
    score = rng.standard_normal(len(labels)) + quality * labels
    p1 = 1 / (1 + np.exp(-score))
    return np.column_stack([1 - p1, p1])


def make_swept_study(root, quality, val_auc, folds=4, select="val", seed=0, targets=("knee",)):
    """Runs for every label of SETTINGS, source and fold (no-freeze): test predictions of
    ``quality[(label, source)]`` (plus fold noise), and a history whose kept epoch (best_epoch 1)
    has ``val_auc[(label, source)][fold]``."""
    rng = np.random.default_rng(seed)
    sources = list(dict.fromkeys(s for _, s in quality))
    for (label, lr), name in ((item, name) for item in SETTINGS.items() for name in targets):
        target = name + (f"~{label}" if label else "")
        for fold in range(folds):
            labels = np.arange(N_TEST) % 2
            ids = [f"{name}{fold}-{i}" for i in range(N_TEST)]
            for source in sources:
                run = RunDir(root / "runs" / target / f"{source}-no-freeze" / f"fold{fold}")
                run.path.mkdir(parents=True)
                config = {"target": "synthetic", "target_name": target, "source": "random", "source_name": source,
                          "strategy": "no-freeze", "fold": fold, "seed": 0, "size": 32, "lr": lr, "k_folds": 5}
                run.config_file.write_text(json.dumps(config))
                write_predictions(run.predictions, ids, labels, _probs(labels, quality[(label, source)], rng))
                run.metrics.write_text(json.dumps({"best_epoch": 1}))
                v = val_auc[(label, source)][fold]
                run.history.write_text("phase,epoch,train_loss,train_accuracy,val_loss,val_accuracy,val_auc,seconds\n"
                                       f"finetune,0,1,0.5,1,0.5,0.99,1\nfinetune,1,1,0.5,0.9,0.5,{v},1\n"
                                       "finetune,2,1,0.5,1.1,0.5,0.01,1\n")
                run.write_done()
    study = {"name": "swept", "targets": [{"name": name} for name in targets], "sources": [{"name": s} for s in sources],
             "training": {"lr": 1e-4}, "sweep": {"lr": [1e-4, 3e-3]}, "select": select}
    (root / "study.yaml").write_text(yaml.safe_dump(study))
    return root


def _analyse(root, tmp_path):
    study = read_study(root)
    return sens.sensitivity(study, tuple(s for s in study.sources if s != "random"),
                            "random" if "random" in study.sources else None, "macro", tmp_path / "figures")


VAL = {("", "imagenet"): [0.9, 0.8, 0.7, 0.9], ("lr=0.003", "imagenet"): [0.6, 0.7, 0.6, 0.5],
       ("", "radimagenet"): [0.5, 0.6, 0.5, 0.4], ("lr=0.003", "radimagenet"): [0.9, 0.9, 0.8, float("nan")]}


def test_select_val_picks_the_best_mean_validation_auc_whatever_the_test_predictions(tmp_path):
    # test quality opposite to validation: a choice on test would pick the other setting
    quality = {("", "imagenet"): 0.2, ("lr=0.003", "imagenet"): 3.0, ("", "radimagenet"): 3.0,
               ("lr=0.003", "radimagenet"): 0.2}
    root = make_swept_study(tmp_path / "study", quality, VAL)
    first = _analyse(root, tmp_path).selected.set_index("source")
    assert first.loc["imagenet", "setting"] == "lr=0.0001" and first.loc["radimagenet", "setting"] == "lr=0.003"
    assert first.loc["imagenet", "val_auc"] == pytest.approx(100 * np.mean(VAL[("", "imagenet")]))
    assert first.loc["radimagenet", "val_auc"] == pytest.approx(100 * np.nanmean(VAL[("lr=0.003", "radimagenet")]))
    assert (first["settings"] == 2).all()
    table = _analyse(root, tmp_path).table
    chosen = table[(table["setting"] == "lr=0.0001") & (table["source"] == "imagenet")].iloc[0]
    assert first.loc["imagenet", "mean"] == pytest.approx(chosen["mean"])  # the chosen setting's test AUC
    # now every test prediction changes (perfect where the choice was worse on validation, chance elsewhere)
    rng = np.random.default_rng(7)
    for path in root.glob("runs/**/predictions.csv"):
        frame = pd.read_csv(path)
        perfect = ("lr=0.003" in str(path)) == ("imagenet" in str(path))
        labels = frame["label"].to_numpy()
        write_predictions(path, frame["image_id"].tolist(), labels, np.eye(2)[labels] if perfect else _probs(labels, 0.0, rng))
        RunDir(path.parent).write_done()  # sealed again: these are the runs' test predictions now
    second = _analyse(root, tmp_path).selected.set_index("source")
    assert second["setting"].to_dict() == first["setting"].to_dict()
    assert second["val_auc"].to_dict() == first["val_auc"].to_dict()
    assert not np.allclose(second["mean"], first["mean"])  # the test AUCs reported did change


def test_kept_val_auc_is_the_best_epochs_row():
    class Run:
        def __init__(self, best, rows):
            self._best, self.dir = best, type("D", (), {"read_history": lambda _self: rows})()

        def metrics(self):
            return {"best_epoch": self._best}

    rows = [{"phase": "probe", "epoch": "1", "val_auc": "0.1"}, {"phase": "finetune", "epoch": "0", "val_auc": "0.4"},
            {"phase": "finetune", "epoch": "1", "val_auc": "0.7"}]
    assert sens.kept_val_auc(Run(1, rows)) == 0.7
    assert np.isnan(sens.kept_val_auc(Run(5, rows)))


def _quality(first_ahead: bool) -> dict:
    # imagenet and radimagenet far apart, random at chance: the order of the first two flips
    # between the settings when first_ahead is False
    hi, lo = 3.0, 1.0
    return {("", "imagenet"): hi, ("", "radimagenet"): lo, ("", "random"): 0.0,
            ("lr=0.003", "imagenet"): hi if first_ahead else lo, ("lr=0.003", "radimagenet"): lo if first_ahead else hi,
            ("lr=0.003", "random"): 0.0}


def _val(sources):
    return {(label, s): [0.7] * 4 for label in SETTINGS for s in sources}


def _kendall(x, y):
    """Kendall's tau-a (no ties) by counting concordant and discordant pairs."""
    pairs = list(combinations(range(len(x)), 2))
    sign = [np.sign(x[i] - x[j]) * np.sign(y[i] - y[j]) for i, j in pairs]
    return sum(sign) / len(pairs)


def test_a_reversal_is_found_with_kendalls_tau_and_the_claims_test(tmp_path):
    sources = ("imagenet", "radimagenet", "random")
    root = make_swept_study(tmp_path / "study", _quality(False), _val(sources), select=None)
    result = _analyse(root, tmp_path)
    assert result.selected is None
    table = result.table
    assert set(table["setting"]) == {"lr=0.0001", "lr=0.003"} and set(table["target"]) == {"knee"}
    means = table.pivot(index="setting", columns="source", values="mean")
    tau = result.tau.iloc[0]
    assert tau["tau"] == pytest.approx(_kendall(means.loc["lr=0.0001"].to_numpy(), means.loc["lr=0.003"].to_numpy()))
    assert tau["tau"] == pytest.approx(1 / 3)
    assert tau["ranking_a"] == "imagenet > radimagenet > random"
    assert tau["ranking_b"] == "radimagenet > imagenet > random"
    pairs = result.pairs.set_index(["source_a", "source_b", "setting"])
    assert pairs.loc[("imagenet", "radimagenet", "lr=0.0001"), "difference"] > 0
    assert pairs.loc[("imagenet", "radimagenet", "lr=0.003"), "difference"] < 0
    assert set(result.pairs["n"]) == {4}
    summary = result.summary.set_index(["source_a", "source_b"])
    row = summary.loc[("imagenet", "radimagenet")]
    assert (row["settings"], row["a_ahead"], row["b_ahead"], row["fraction_a_ahead"]) == (2, 1, 1, 0.5)
    assert summary.loc[("imagenet", "random"), "fraction_a_ahead"] == 1.0
    for r in summary.itertuples():  # "holds" counts are within the settings where the source is ahead
        assert r.a_beats_b <= r.a_ahead and r.b_beats_a <= r.b_ahead
    sentence = result.sentences["knee"]
    assert sentence.startswith("knee: the ranking of sources reverses")
    assert "imagenet ahead of radimagenet (no-freeze) at lr=0.003" in sentence or \
        "radimagenet ahead of imagenet (no-freeze) at lr=0.003" in sentence
    assert "random" not in sentence.split(":", 1)[1].split(";")[0]  # random keeps its place


def test_the_same_order_in_every_setting_is_stable(tmp_path):
    sources = ("imagenet", "radimagenet", "random")
    root = make_swept_study(tmp_path / "study", _quality(True), _val(sources), select=None)
    result = _analyse(root, tmp_path)
    assert result.tau["tau"].tolist() == [1.0]
    assert result.sentences["knee"].startswith("knee: stable: every pair of sources keeps its order in all 2 settings")
    assert "imagenet > radimagenet > random" in result.sentences["knee"]
    assert result.figures and result.figures[0].png.is_file()
    html = "\n".join(sens.report_html(result))
    assert "Sensitivity to training settings" in html and "lr=0.003" in html and "tau" in html


def test_a_study_without_a_sweep_has_no_sensitivity_analysis(tmp_path):
    from tests.analysis.fake_study import make_study

    root = make_study(tmp_path / "plain")
    assert sens.sensitivity(read_study(root), ("imagenet", "radimagenet"), "random", "macro", tmp_path) is None


def test_across_targets_a_target_at_two_settings_is_one_unit(tmp_path):
    from medtransfer.analysis.claims import source_claim
    from medtransfer.analysis.correlation import target_means
    from medtransfer.analysis.tables import run_aucs

    sources = ("imagenet", "radimagenet", "random")
    root = make_swept_study(tmp_path / "study", _quality(False), _val(sources), select=None,
                            targets=("knee", "thyroid", "breast"))
    study = read_study(root)
    aucs, _ = run_aucs(study)
    rows = [r for r in source_claim(study, aucs, "imagenet", "radimagenet")
            if r["target"].startswith("all targets") and r["strategy"] == "no-freeze"]
    # the exact Wilcoxon per setting over the 3 targets (not over 6 target-settings), per strategy
    assert sorted(r["target"] for r in rows) == ["all targets", "all targets~lr=0.003"]
    assert {r["n"] for r in rows} == {3}
    by_setting = {r["target"]: r["statistic"] for r in rows}
    assert by_setting["all targets"] > 0 > by_setting["all targets~lr=0.003"]  # the reversal, per setting
    points = pd.DataFrame({"target": ["knee", "knee~lr=0.003", "thyroid"], "source": ["a"] * 3,
                           "strategy": ["no-freeze"] * 3, "layer": ["conv1"] * 3, "cca": [0.2, 0.4, 0.9],
                           "gain": [1.0, 3.0, 5.0]})
    means = target_means(points).set_index("target")
    assert list(means.index) == ["knee", "thyroid"] and means.loc["knee", "cca"] == pytest.approx(0.3)

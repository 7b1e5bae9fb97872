"""The paper's claims as tests (analysis/claims.py, analysis/divergence.py) on small fake studies:
each number against an independent computation, at its unit; nothing networks are needed for."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from sklearn.metrics import roc_auc_score

from medtransfer import stats
from medtransfer.analysis.activations import LayerPlan, SamplingPlan
from medtransfer.analysis.claims import ALL_TARGETS, CLAIMS, claims_table, verdict
from medtransfer.analysis.correlation import correlation_table
from medtransfer.analysis.divergence import combine, fold_divergence
from medtransfer.analysis.inventory import read_study
from medtransfer.analysis.pairs import ModelRef, Pair, roles
from medtransfer.analysis.predictions import mistake_images
from medtransfer.analysis.tables import run_aucs
from medtransfer.similarity import linear_cka
from tests.analysis.fake_study import make_study

TARGETS = {"knee": 2, "thyroid": 2, "chest": 2, "breast": 2}


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    root = make_study(tmp_path_factory.mktemp("claims"), targets=TARGETS, sources=("synth_a", "synth_b", "random"),
                      folds=3, n_test=30, seed=4)
    study = read_study(root)
    role_map = roles(study, ("synth_b", "synth_a"))  # the analysis' sources setting picks the pair and its order
    aucs, _ = run_aucs(study)
    images, _ = mistake_images(study, role_map)
    rng = np.random.default_rng(0)
    points = pd.DataFrame([{"target": t, "fold": f, "source": s, "strategy": st, "layer": "conv1",
                            "cca": rng.random(), "gain": rng.random()}
                           for t in TARGETS for f in range(3) for s in ("synth_a", "synth_b")
                           for st in ("no-freeze", "freeze")])
    corr = correlation_table(points, permutations=99)
    claims, missing = claims_table(study, role_map, aucs, images, combine([]), corr, resamples=300, permutations=300)
    return root, study, aucs, claims, missing


def _aucs_from_files(root: Path, target: str, source: str, strategy: str) -> np.ndarray:
    values = []
    for fold in range(3):
        frame = pd.read_csv(root / "runs" / target / f"{source}-{strategy}" / f"fold{fold}" / "predictions.csv")
        values.append(roc_auc_score(frame["label"], frame["p_1"]))
    return np.array(values)


def test_claim_one_per_target_is_the_corrected_t_of_fold_differences_and_delong_on_pooled_predictions(fake):
    root, _, _, claims, _ = fake
    rows = claims[(claims["claim"] == CLAIMS[1]) & (claims["strategy"] == "freeze")]
    nb = rows[rows["test"].str.startswith("Nadeau")].set_index("target")
    assert set(nb.index) == set(TARGETS) and (nb["source_a"] == "synth_b").all()
    d = 100 * (_aucs_from_files(root, "knee", "synth_b", "freeze") - _aucs_from_files(root, "knee", "synth_a", "freeze"))
    expected = stats.corrected_resampled_t(d, 0.15 / 0.80)  # the fold spec's n_test / n_train (80/5/15)
    assert nb.loc["knee", "statistic"] == pytest.approx(d.mean())
    assert nb.loc["knee", "p_value"] == pytest.approx(expected.p_value)
    assert (nb["p_adjusted"] >= nb["p_value"]).all() and nb["correction"].eq("Holm over 4 tests").all()
    delong = rows[rows["test"].str.startswith("DeLong")].set_index("target")
    pooled = {s: pd.concat([pd.read_csv(root / "runs" / "knee" / f"{s}-freeze" / f"fold{f}" / "predictions.csv")
                            for f in range(3)]) for s in ("synth_a", "synth_b")}
    diff = roc_auc_score(pooled["synth_b"]["label"], pooled["synth_b"]["p_1"]) - roc_auc_score(
        pooled["synth_a"]["label"], pooled["synth_a"]["p_1"])
    assert delong.loc["knee", "statistic"] == pytest.approx(100 * diff)
    assert delong.loc["knee", "n"] == 90


def test_claim_one_across_targets_is_an_exact_wilcoxon_of_per_target_means(fake):
    _, _, _, claims, _ = fake
    rows = claims[claims["claim"] == CLAIMS[1]]
    for strategy in ("no-freeze", "freeze"):
        per_target = rows[(rows["strategy"] == strategy) & rows["test"].str.startswith("Nadeau")]["statistic"]
        across = rows[(rows["strategy"] == strategy) & (rows["target"] == ALL_TARGETS)].iloc[0]
        assert across["n"] == 4
        assert across["p_value"] == pytest.approx(sps.wilcoxon(per_target.to_numpy(), method="exact").pvalue)
        assert across["verdict"] == "inconclusive"  # 4 targets: no sign pattern is rarer than 1/8


def test_every_claim_has_rows_and_no_p_value_is_zero_or_interval_out_of_range(fake):
    _, _, _, claims, missing = fake
    assert set(claims["claim"]) == {CLAIMS[1], CLAIMS[3], CLAIMS[4]}  # no networks: no layer-wise claim
    assert any("5.2" in m for m in missing)
    p = claims[["p_value", "p_adjusted"]].to_numpy(float)
    assert (p[np.isfinite(p)] > 0).all()
    ranges = {CLAIMS[1]: 100, CLAIMS[3]: 1, CLAIMS[4]: 1}
    for r in claims.itertuples():
        if np.isfinite(r.low):
            assert -ranges[r.claim] <= r.low <= r.high <= ranges[r.claim]
    mistakes = claims[claims["claim"] == CLAIMS[3]]
    assert set(mistakes["target"]) == set(TARGETS) and len(mistakes) == 3 * 4  # two strategies and the probes
    gains = claims[claims["claim"] == CLAIMS[4]]
    assert (gains["n"] == 4).all() and gains["sentence"].str.contains("absence").any()
    assert claims["verdict"].isin(["supported", "contradicted", "inconclusive", "n too small"]).all()


def test_one_target_says_n_too_small_for_the_across_target_tests(tmp_path):
    root = make_study(tmp_path, targets={"knee": 2}, sources=("synth_a", "synth_b", "random"), folds=3)
    study = read_study(root)
    role_map = roles(study)
    aucs, _ = run_aucs(study)
    images, _ = mistake_images(study, role_map)
    points = pd.DataFrame([{"target": "knee", "fold": f, "source": "synth_a", "strategy": "no-freeze",
                            "layer": "conv1", "cca": 0.1 * f, "gain": 0.2 * f} for f in range(3)])
    claims, _ = claims_table(study, role_map, aucs, images, combine([]), correlation_table(points, permutations=99))
    across = claims[claims["target"] == ALL_TARGETS]
    assert len(across) and across["verdict"].eq("n too small").all()
    assert across["sentence"].str.contains("not tested").all()


def test_verdicts():
    assert verdict(2.0, 0.01, 1) == "supported" and verdict(-2.0, 0.01, 1) == "contradicted"
    assert verdict(2.0, 0.2, 1) == "inconclusive" and verdict(np.nan, np.nan, 1, "n too small") == "n too small"


def _ref(name: str) -> ModelRef:
    return ModelRef("init", name, 0, None, None, name)


def test_divergence_is_a_paired_bootstrap_on_shared_stimuli():
    rng = np.random.default_rng(1)
    k, images = 4, 12
    layer = LayerPlan("conv1_relu", (3, 2, 2), (np.arange(images),), (np.arange(3),))
    plan = SamplingPlan(images, {"conv1_relu": layer})
    base = rng.standard_normal((images * k, 3))
    acts = {_ref(name).key: {"conv1_relu": [base + s * rng.standard_normal(base.shape)]}
            for name, s in (("a", 0.3), ("b", 0.6), ("aft", 0.3), ("bft", 1.5))}
    pairs = [Pair("init_vs_init", "a vs b", "-", "", _ref("a"), _ref("b")),
             Pair("ft_vs_ft", "a-FT vs b-FT", "freeze", "", _ref("aft"), _ref("bft"))]
    folds = fold_divergence("t", 0, pairs, acts, plan, {"conv1_relu": "conv1"}, ("cka",), 400, seed=3)
    assert len(folds) == 1
    f = folds[0]
    x = {name: acts[_ref(name).key]["conv1_relu"][0] for name in ("a", "b", "aft", "bft")}
    after, before = linear_cka(x["aft"], x["bft"]), linear_cka(x["a"], x["b"])
    assert f.difference == pytest.approx(after - before)
    # the same pair on both sides: every resample's difference is exactly 0 (shared image weights)
    same = fold_divergence("t", 0, [pairs[0], Pair("ft_vs_ft", "x", "freeze", "", _ref("a"), _ref("b"))], acts, plan,
                           {"conv1_relu": "conv1"}, ("cka",), 50, seed=3)
    np.testing.assert_allclose(same[0].resamples, 0.0, atol=1e-12)
    table = combine(folds + [f.__class__("t", 1, "freeze", "conv1", "cka", f.after, f.before, f.resamples[::-1])])
    row = table.iloc[0]
    assert row["folds"] == 2 and row["low"] <= row["difference"] <= row["high"] and -1 <= row["low"]
    assert row["difference"] < 0 and row["p_value"] < 0.05 and row["p_value"] > 0  # b-FT is much noisier

"""End to end: a small study directory with real checkpoints and synthetic images -> report.html."""

import numpy as np
import pandas as pd
import pytest
import torch

from medtransfer.analysis import run as run_module
from medtransfer.analysis.run import analyze
from medtransfer.study.analysis_settings import AnalysisSettings
from tests.analysis.fake_study import make_study

SIZE = 32
N_FOLDS = 1
pytestmark = pytest.mark.slow


def _perturbed(model, scale, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * p.abs().mean() * torch.randn(p.shape, generator=g))
    return model


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    from medtransfer.models import ResNet50, keras_init_, load_source, save_checkpoint

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("study")
    sources = root / "sources"
    sources.mkdir()
    paths = {}
    for name, seed in (("alpha", 11), ("beta", 12)):
        paths[name] = str(save_checkpoint(sources / f"{name}.pt", keras_init_(ResNet50(), seed=seed), {"normalization": "caffe", "classes": []}))

    inits = {}

    def checkpoint(run_dir, config):
        key = (config["source"], config["seed"])
        if key not in inits:
            inits[key] = load_source(config["source"], seed=config["seed"], normalization=config["normalization"]).model
        init = inits[key]
        model = ResNet50(num_classes=2)
        model.load_state_dict(init.state_dict(), strict=False)
        # alpha's freeze run leaves the backbone untouched: CCA and CKA with its init are exactly 1
        if not (config["source_name"] == "alpha" and config["strategy"] == "freeze"):
            _perturbed(model, 0.3, hash((config["source_name"], config["strategy"], config["fold"])) % 1000)
        save_checkpoint(run_dir / "checkpoints" / "best.pt", model, {"normalization": "caffe", "classes": ["c0", "c1"]})

    extra = {"target": "synthetic", "target_name": "knee", "size": SIZE, "k_folds": 5, "cache_dir": str(root / "cache"),
             "target_options": {"n_patients": 40, "images_per_patient": 3, "size": SIZE, "seed": 0}}
    return make_study(root, sources=("alpha", "beta", "random"), folds=N_FOLDS, checkpoint=checkpoint,
                      config_extra=extra, source_paths=paths)


@pytest.fixture(scope="module")
def analysed(study_dir, tmp_path_factory):
    loads = []
    original = run_module.load_network

    def counting(ref, device, root):
        net = original(ref, device, root)
        seen = {"images": 0, "calls": 0}
        features = net.features

        def wrapped(x, names):
            seen["images"] += len(x)
            seen["calls"] += 1
            return features(x, names)

        net.features = wrapped
        loads.append((ref.key, seen))
        return net

    run_module.load_network = counting
    try:
        report = analyze(study_dir, rows=300, channels=8, repeats=2, threads=1, device="cpu", partial=True)
    finally:
        run_module.load_network = original
    return report, loads


def test_each_distinct_network_runs_once_per_fold_over_the_sampled_images(analysed):
    _, loads = analysed
    keys = [k for k, _ in loads]
    assert len(keys) == N_FOLDS * 9  # 2 pretrained inits, 2 random inits, 5 fine-tuned per fold
    fold_keys = [keys[i * 9 : (i + 1) * 9] for i in range(N_FOLDS)]
    assert all(len(set(k)) == 9 for k in fold_keys)
    images = {seen["images"] for _, seen in loads[:9]}
    assert len(images) == 1  # every network of a fold sees the same images, each once


def test_similarity_csv_has_every_pair_layer_and_measure_with_closed_form_checks(analysed, study_dir):
    sim = pd.read_csv(study_dir / "analysis" / "similarity.csv")
    assert set(sim.columns) >= {"target", "fold", "pair", "strategy", "layer", "measure", "mean", "std"}
    assert len(sim) == N_FOLDS * 15 * 5 * 2
    assert set(sim["layer"]) == {"conv1", "block1", "block2", "block3", "block4"}
    same = sim[(sim["pair"] == "alpha-FT vs alpha") & (sim["strategy"] == "freeze")]
    assert np.allclose(same["mean"], 1.0, atol=1e-6)  # unchanged backbone
    ok = sim[sim["mean"].notna()]
    assert ((ok["mean"] >= -1e-9) & (ok["mean"] <= 1 + 1e-9)).all()
    ft = sim[(sim["pair"] == "beta-FT vs beta") & (sim["strategy"] == "no-freeze") & (sim["measure"] == "cka")]
    rr = sim[(sim["pair"] == "random vs random") & (sim["measure"] == "cka")]
    assert ft.groupby("layer")["mean"].mean()["conv1"] > rr.groupby("layer")["mean"].mean()["conv1"]


def test_report_holds_every_table_and_figure_and_matches_stored_probabilities(analysed, study_dir):
    report, _ = analysed
    text = report.read_text()
    assert report == study_dir / "report.html"
    # 2 layer-wise (CCA, CKA) + conv1 filters + prediction similarity + AUC gain
    assert text.count("data:image/png;base64,") == 5
    for name in ("layerwise_knee_cca", "layerwise_knee_cka", "conv1_filters", "prediction_similarity", "auc_gain_vs_cca"):
        for suffix in ("png", "pdf", "svg"):
            assert (study_dir / "analysis" / "figures" / f"{name}.{suffix}").is_file()
    pred = pd.read_csv(study_dir / "analysis" / "prediction_similarity.csv")
    assert len(pred) == N_FOLDS * 3
    for r in pred.itertuples():
        strategy_dir = f"{r.strategy}"
        sub = "probe/predictions.csv" if r.comparison == "before fine-tuning" else "predictions.csv"
        a = pd.read_csv(study_dir / "runs" / "knee" / f"{r.source_a}-{strategy_dir}" / f"fold{r.fold}" / sub)
        b = pd.read_csv(study_dir / "runs" / "knee" / f"{r.source_b}-{strategy_dir}" / f"fold{r.fold}" / sub)
        err_a = a[["p_0", "p_1"]].to_numpy().argmax(1) != a["label"].to_numpy()
        err_b = b[["p_0", "p_1"]].to_numpy().argmax(1) != b["label"].to_numpy()
        acc_a, acc_b = 1 - err_a.mean(), 1 - err_b.mean()
        assert r.observed == pytest.approx((err_a == err_b).mean())
        assert r.baseline == pytest.approx(acc_a * acc_b + (1 - acc_a) * (1 - acc_b))
    table = pd.read_csv(study_dir / "analysis" / "table2.csv")
    for r in table.itertuples():
        assert f"{r.mean:.1f}" in text
    stats = pd.read_csv(study_dir / "analysis" / "correlation.csv")
    assert set(stats["source"]) == {"alpha", "beta"}
    assert "What was missing" in text


def test_similarity_csv_and_report_carry_intervals_and_the_null(analysed, study_dir):
    report, _ = analysed
    sim = pd.read_csv(study_dir / "analysis" / "similarity.csv")
    assert {"ci_low", "ci_high", "null_mean", "null_p95", "p_value", "images"} <= set(sim.columns)
    many = sim[sim["images"] >= 2]
    assert many["p_value"].notna().all() and many["ci_low"].notna().all()
    assert ((many["ci_low"] <= many["mean"] + 1e-9) & (many["mean"] <= many["ci_high"] + 1e-9)).all()
    same = many[(many["pair"] == "alpha-FT vs alpha") & (many["strategy"] == "freeze")]
    assert np.allclose(same["ci_low"], 1.0, atol=1e-6) and np.allclose(same["ci_high"], 1.0, atol=1e-6)
    # the default null: enough permutations (199) that the floor 1 / 200 passes Holm at 0.05 over the
    # pair's 5 layers x 2 measures. Where a layer's rows come from many images no permutation reaches
    # an identical network's 1, so every one is drawn; from a handful of images (block1 here: 5,
    # permuted within the groups of images the repeats share) a permutation that leaves the pairing
    # as it is has a real chance, and the exact p-value cannot be that small
    draws = AnalysisSettings().null_permutations(5)
    assert draws == 199 and 1 / (draws + 1) <= 0.05 / 10
    assert (same["p_value"] >= 1 / (draws + 1) - 1e-12).all()
    assert np.allclose(same.loc[same["images"] >= 18, "p_value"], 1 / (draws + 1))
    assert (same["images"] >= 18).sum() >= 4
    text = report.read_text()
    assert text.count("pair-layer scores exceed their permutation null") == 4  # one sentence per layer-wise figure (alt text + caption)
    assert "image-bootstrap intervals" in text


def test_claims_csv_has_the_four_claims_inside_their_ranges_and_opens_the_report(analysed, study_dir):
    from medtransfer.analysis.claims import CLAIMS

    report, _ = analysed
    claims = pd.read_csv(study_dir / "analysis" / "claims.csv")
    assert set(claims["claim"]) == set(CLAIMS.values())
    p = claims[["p_value", "p_adjusted"]].to_numpy(float)
    assert (p[np.isfinite(p)] > 0).all() and (p[np.isfinite(p)] <= 1).all()
    for r in claims.itertuples():
        if np.isfinite(r.low):
            assert r.low <= r.high
        bound = {"5.1 sources": 100.0, "5.3 similar mistakes": 1.0, "5.4 similarity vs gain": 1.0}.get(r.claim, 1.0)
        assert -bound <= r.low <= bound or np.isnan(r.low)
        assert -bound <= r.high <= bound or np.isnan(r.high)
    # one target and one fold: the across-target and over-fold tests say so instead of computing
    assert claims.loc[claims["target"] == "all targets", "verdict"].eq("n too small").all()
    assert (claims["verdict"] != "").all() and claims["sentence"].str.len().gt(10).all()
    text = report.read_text()
    assert text.index("<h2>Claims</h2>") < text.index("<h2>Table 2") == text.index("<h2>", text.index("<h2>Claims") + 1)

import re

import numpy as np
import pandas as pd
import pytest

from medtransfer.analysis import figures as figs
from medtransfer.analysis.correlation import correlation_table
from medtransfer.analysis.report import Figure, ReportContent, render, write_report
from medtransfer.study.table2 import table2

LAYERS = ["conv1", "block1", "block2", "block3", "block4"]


def similarity_frame(folds=3, seed=0):
    rng = np.random.default_rng(seed)
    pairs = [("ft_vs_init", "a-FT vs a", "no-freeze", "a"), ("ft_vs_init", "a-FT vs a", "freeze", "a"),
             ("ft_vs_ft", "a-FT vs b-FT", "no-freeze", ""), ("random_vs_random", "random vs random", "-", "")]
    rows = []
    for fold in range(folds):
        for kind, pair, strategy, source in pairs:
            for i, layer in enumerate(LAYERS):
                for m in ("cca", "cka"):
                    rows.append(dict(target="knee", fold=fold, pair=pair, strategy=strategy, layer=layer, measure=m,
                                     mean=float(np.clip(0.9 - 0.1 * i + 0.02 * rng.standard_normal(), 0, 1)), std=0.01,
                                     kind=kind, source=source))
    return pd.DataFrame(rows)


def test_fold_summary_is_mean_and_std_over_folds():
    sim = similarity_frame()
    summary = figs.fold_summary(sim)
    one = summary[(summary["pair"] == "a-FT vs a") & (summary["strategy"] == "freeze") & (summary["layer"] == "block2")
                  & (summary["measure"] == "cca")]
    values = sim[(sim["pair"] == "a-FT vs a") & (sim["strategy"] == "freeze") & (sim["layer"] == "block2")
                 & (sim["measure"] == "cca")]["mean"]
    assert one["mean"].item() == pytest.approx(values.mean()) and one["std"].item() == pytest.approx(np.std(values))
    assert one["folds"].item() == 3


def test_every_figure_is_written_as_png_and_pdf_and_embedded_in_one_self_contained_report(tmp_path):
    sim = similarity_frame()
    pred = pd.DataFrame([dict(target="knee", fold=f, source_a="a", source_b="b", comparison=c, strategy=s,
                              observed=0.8 + 0.01 * f, baseline=0.6, accuracy_a=0.8, accuracy_b=0.7, n=40)
                         for f in range(3) for c, s in (("fine-tuned", "no-freeze"), ("fine-tuned", "freeze"),
                                                        ("before fine-tuning", "freeze"))])
    points = pd.DataFrame([dict(target="knee", fold=f, source="a", strategy="no-freeze", layer=layer,
                                cca=0.5 + 0.1 * f + 0.01 * i, gain=0.05 * f) for f in range(3) for i, layer in enumerate(LAYERS)])
    stats = correlation_table(points, permutations=50, by="fold")
    fig_dir = tmp_path / "figures"
    pngs = [
        figs.layerwise_figure(sim, "knee", "cca", fig_dir, LAYERS),
        figs.layerwise_figure(sim, "knee", "cka", fig_dir, LAYERS),
        figs.filters_figure({"a": (np.random.default_rng(0).standard_normal((64, 3, 7, 7)), True)}, fig_dir),
        figs.prediction_figure(pred, fig_dir),
        figs.gain_figure(points, stats, fig_dir, LAYERS),
    ]
    assert figs.layerwise_figure(sim, "chest", "cca", fig_dir, LAYERS) is None
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.with_suffix(".pdf").read_bytes()[:5] == b"%PDF-"
        assert b"<svg" in png.with_suffix(".svg").read_bytes()[:2000]
    aucs = pd.DataFrame(dict(target="knee", source=["a", "a", "b", "b"], strategy="no-freeze", fold=[0, 1, 0, 1],
                             auc=[0.9, 0.8, 0.7, 0.75]))
    t2 = table2(aucs, ("a", "b"), None)
    content = ReportContent(
        title="t <script>", config_text="name: x & y", settings={"rows": 20000}, table2=t2,
        figures=[Figure(p, f"caption {i}") for i, p in enumerate(pngs)],
        sections=[("Correlation", "note", stats)], missing=["radimagenet not run"], notes=["a note"],
    )
    path = write_report(content, tmp_path / "report.html")
    text = path.read_text()
    assert text.count("<img") == len(pngs) == text.count("data:image/png;base64,")
    assert not re.search(r'src="(?!data:)', text)  # nothing to fetch: opens offline
    links = re.findall(r'href="([^"]+)"', text)  # each figure links its files, relative to the report
    assert len(links) == 3 * len(pngs) and all((tmp_path / link).is_file() for link in links)
    assert "radimagenet not run" in text and "name: x &amp; y" in text and "<script>" not in text
    assert text.count('class="best"') == 1 and "85.0 ± 7.1" in text  # best mean of knee is a: (90+80)/2
    assert render(content, tmp_path) == text


def with_uncertainty(sim: pd.DataFrame) -> pd.DataFrame:
    """Per-fold intervals around each score: stimulus +- 0.02, draws +- 0.05, a null at 0.1-0.2."""
    return sim.assign(ci_low=sim["mean"] - 0.02, ci_high=sim["mean"] + 0.02, draws_ci_low=sim["mean"] - 0.05,
                      draws_ci_high=sim["mean"] + 0.05, null_mean=0.1, null_p95=0.2, p_value=0.005,
                      adjusted=(sim["mean"] - 0.1) / 0.9)


def test_summary_and_figure_show_both_intervals_and_the_chance_corrected_score(tmp_path):
    sim = with_uncertainty(similarity_frame())
    summary = figs.summary_with_uncertainty(sim)
    assert list(figs.UNCERTAINTY_SHOWN) == [c for c in summary.columns if c in figs.UNCERTAINTY_SHOWN]
    one = summary[(summary["pair"] == "a-FT vs a") & (summary["strategy"] == "freeze") & (summary["layer"] == "block2")
                  & (summary["measure"] == "cca")].iloc[0]
    rows = sim[(sim["pair"] == "a-FT vs a") & (sim["strategy"] == "freeze") & (sim["layer"] == "block2")
               & (sim["measure"] == "cca")]
    for column in figs.UNCERTAINTY_SHOWN:
        assert one[column] == pytest.approx(rows[column].mean())
    captured = {}
    real_save = figs.save

    def keep(fig, out_dir, name):
        captured[name] = fig
        return real_save(fig, out_dir, name)

    figs.save = keep
    try:
        figs.layerwise_figure(sim, "knee", "cca", tmp_path, LAYERS)
        figs.layerwise_figure(similarity_frame(), "knee", "cka", tmp_path, LAYERS)  # a csv without intervals
    finally:
        figs.save = real_save
    fig = captured["layerwise_knee_cca"]
    dotted = [line.get_ydata() for line in fig.axes[0].lines if line.get_linestyle() == ":"]
    means = sim[(sim["kind"] == "ft_vs_init") & (sim["measure"] == "cca")].groupby(["strategy", "layer"])
    expected = {tuple(np.round(g.set_index("layer").reindex(LAYERS)[end].to_numpy(), 9))
                for end in ("draws_ci_low", "draws_ci_high")
                for _, g in means[["draws_ci_low", "draws_ci_high"]].mean().reset_index().groupby("strategy")}
    assert {tuple(np.round(np.asarray(d, float), 9)) for d in dotted} == expected
    assert "stimulus interval" in fig._suptitle.get_text() and "draws interval" in fig._suptitle.get_text()
    assert not [line for ax in captured["layerwise_knee_cka"].axes for line in ax.lines if line.get_linestyle() == ":"]

"""Figure files and colours: every format of --format, one colour per source in every figure."""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex

from medtransfer.analysis import figures as figs
from medtransfer.errors import ConfigError
from medtransfer.similarity.registry import MEASURES

from .test_report import LAYERS, similarity_frame


@pytest.fixture(autouse=True)
def _reset():
    yield
    figs.configure()


def test_save_figure_writes_the_configured_formats(tmp_path):
    figs.configure(["svg"])
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    png = figs.save_figure(fig, tmp_path, "line")
    assert png == tmp_path / "line.png" and png.read_bytes()[:4] == b"\x89PNG"
    assert b"<svg" in (tmp_path / "line.svg").read_bytes()[:2000]
    assert not (tmp_path / "line.pdf").exists()  # not asked for
    assert figs.check_formats(None) == ("png", "pdf", "svg")
    assert figs.check_formats(["PDF", "png"]) == ("png", "pdf")
    with pytest.raises(ConfigError, match="eps"):
        figs.check_formats(["eps"])


def test_a_source_keeps_its_colour_across_figures(tmp_path):
    figs.configure(sources=["b", "a", "random"])
    colours = {s: figs.source_color(s) for s in ("a", "b", "random")}
    assert len(set(colours.values())) == 3 and colours["random"] == figs.KNOWN_COLORS["random"]
    figs.configure(sources=["imagenet", "radimagenet"])
    assert figs.source_color("imagenet") == figs.KNOWN_COLORS["imagenet"]
    figs.configure(sources=["a", "b"])
    sim = similarity_frame()
    captured = {}
    real_save = figs.save_figure

    def keep(fig, out_dir, name):
        captured[name] = fig
        return real_save(fig, out_dir, name)

    figs.save = keep  # the figure functions save through figs.save
    try:
        figs.layerwise_figure(sim, "knee", "cca", tmp_path, LAYERS)
        points = pd.DataFrame([dict(target="knee", fold=f, source="a", strategy="no-freeze", layer=layer,
                                    cca=0.5 + 0.1 * f, gain=0.05 * f) for f in range(3) for layer in LAYERS])
        figs.gain_figure(points, pd.DataFrame(), tmp_path, LAYERS)
        figs.filters_figure({"a": (np.random.default_rng(0).standard_normal((64, 3, 7, 7)), True)}, tmp_path)
    finally:
        figs.save = real_save
    want = figs.source_color("a")
    lines = {bars.get_label(): to_hex(bars.lines[0].get_color()) for ax in captured["layerwise_knee_cca"].axes
             for bars in ax.containers}
    assert lines["a-FT vs a (no-freeze)"] == lines["a-FT vs a (freeze)"] == want
    assert lines["a-FT vs b-FT (no-freeze)"] == figs.NEUTRAL  # a pair of two sources
    assert to_hex(captured["auc_gain_vs_cca"].axes[0].title.get_color()) == want
    assert to_hex(captured["conv1_filters"].axes[0].title.get_color()) == want


@pytest.mark.parametrize("name", sorted(MEASURES))
def test_a_layerwise_figure_takes_its_range_and_kind_from_the_registry(tmp_path, name):
    """Every value a measure can take (its registry range) lies inside the figure, whose label says
    the measure's kind: a distance such as Procrustes (0..2) is neither clipped at 1 nor called a
    similarity."""
    spec = MEASURES[name]
    sim = similarity_frame()
    sim = sim[sim["measure"] == "cca"].assign(measure=name)
    # values spread over the whole declared range, both ends included
    sim["mean"] = np.linspace(spec.low, spec.high, len(sim))
    captured = {}
    real_save = figs.save

    def keep(fig, out_dir, figure_name):
        captured[figure_name] = (fig.axes[0].get_ylim(), fig.axes[0].get_ylabel())
        return real_save(fig, out_dir, figure_name)

    figs.save = keep
    try:
        figs.layerwise_figure(sim, "knee", name, tmp_path, LAYERS)
    finally:
        figs.save = real_save
    (low, high), label = captured[f"layerwise_knee_{name}"]
    assert low <= spec.low and high >= spec.high
    assert high - low <= 1.05 * (spec.high - spec.low)  # the range, not a fixed 0..1
    assert spec.kind in label and spec.title in label
    assert ("lower = more alike" in label) == (spec.kind == "distance")

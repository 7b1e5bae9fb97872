"""The paper's figures from the analysis tables, each saved as PNG, PDF and SVG (matplotlib, Agg).

Every figure goes through :func:`save_figure` (the formats of :func:`configure`; PNG always, the
report embeds it), and every source keeps one colour across all figures (:func:`source_color`,
the palette set from the study's sources by :func:`configure`).

- :func:`layerwise_figure` - Figures 3 and 7-12: per target and measure, (a) each network against
  itself before and after fine-tuning, (b) pretrained sources against each other and the random
  baselines; mean +- std over folds.
- :func:`filters_figure` - Figure 4: the first 36 conv1 filters of each source, and Gabor filters.
- :func:`prediction_figure` - Figure 5: box plots of prediction similarity per target.
- :func:`gain_figure` - Figure 6: relative AUC gain over random init vs CCA(fine-tuned, init).
- :func:`setting_figure` - a swept study: test AUC against one swept training setting, per source.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from medtransfer.atomic import write_atomic  # noqa: E402
from medtransfer.errors import ConfigError  # noqa: E402
from medtransfer.models.filters import filter_grid, gabor_bank  # noqa: E402
from medtransfer.similarity.registry import Measure  # noqa: E402
from medtransfer.similarity.registry import get as get_measure  # noqa: E402
from medtransfer.study.sweep import format_value, setting_label  # noqa: E402
from medtransfer.vocabulary import FREEZE, IMAGENET, NO_FREEZE, RADIMAGENET, RANDOM, STRATEGIES  # noqa: E402

PANEL_A = ("ft_vs_init",)
PANEL_B = ("ft_vs_ft", "init_vs_init", "random_vs_random", "init_vs_random", "ft_vs_random", "freeze_vs_no_freeze")


FORMATS = ("png", "pdf", "svg")
# fixed colours for the paper's sources; other sources take the next free tab10 colour in study order
KNOWN_COLORS = {IMAGENET: "#1f77b4", RADIMAGENET: "#d62728", RANDOM: "#7f7f7f"}
_FREE_COLORS = ("#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf")
NEUTRAL = "#333333"  # lines that belong to no single source (A vs B, random baselines)

_formats: tuple[str, ...] = FORMATS
_palette: dict[str, str] = {}


def check_formats(formats: list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """The figure formats to write (PNG first and always); None: all of :data:`FORMATS`."""
    if formats is None:
        return FORMATS
    wanted = [f.strip().lower().lstrip(".") for f in formats if f.strip()]
    bad = sorted(set(wanted) - set(FORMATS))
    if bad:
        raise ConfigError(f"figure format(s) {bad}: expected some of {list(FORMATS)}")
    return ("png", *[f for f in FORMATS[1:] if f in wanted])


def configure(formats: list[str] | tuple[str, ...] | None = None, sources: list[str] | tuple[str, ...] = ()) -> None:
    """Set the formats :func:`save_figure` writes and the palette of ``sources`` (in study order)."""
    global _formats, _palette
    _formats = check_formats(formats)
    _palette = {}
    for source in sources:
        source_color(source)


def source_color(source: str) -> str:
    """The colour of ``source`` in every figure (assigned on first use when not configured)."""
    if source not in _palette:
        used = set(_palette.values())
        free = [c for c in _FREE_COLORS if c not in used]
        _palette[source] = KNOWN_COLORS.get(source) or (free[0] if free else _FREE_COLORS[len(_palette) % 7])
    return _palette[source]


def pair_style(kind: str, source: str, strategy: str) -> dict[str, str]:
    """Line style of a layer-wise pair: its source's colour (neutral for pairs of two sources and
    baselines), dashed for the freeze strategy, one marker per kind."""
    markers = {"ft_vs_init": "o", "ft_vs_random": "s", "init_vs_random": "^", "freeze_vs_no_freeze": "D",
               "ft_vs_ft": "v", "init_vs_init": "P", "random_vs_random": "x"}
    return {"color": source_color(source) if source else NEUTRAL, "marker": markers.get(kind, "o"),
            "linestyle": "--" if strategy == FREEZE else "-"}


def save_figure(fig: plt.Figure, out_dir: Path, name: str) -> Path:
    """Save ``fig`` as ``name.png`` (150 dpi) and the other configured formats (vector PDF and SVG)
    in ``out_dir``, each atomically (a killed or failed save never leaves a truncated figure); close
    it; return the PNG path."""
    png = out_dir / f"{name}.png"
    try:
        for fmt in _formats:
            write_atomic(out_dir / f"{name}.{fmt}", lambda handle, fmt=fmt: fig.savefig(
                handle, format=fmt, dpi=150 if fmt == "png" else None, bbox_inches="tight"))
    finally:
        plt.close(fig)
    return png


save = save_figure  # the name the figure functions use


def fold_summary(similarity: pd.DataFrame) -> pd.DataFrame:
    """Mean and std (ddof=0) over folds of each (target, kind, pair, strategy, layer, measure)."""
    keys = ["target", "kind", "pair", "strategy", "layer", "measure"]
    grouped = similarity.groupby(keys, sort=False)["mean"]
    return grouped.agg(mean="mean", std=lambda v: float(np.std(v)), folds="count").reset_index()


#: The uncertainty columns of similarity.csv the summary averages over folds, in the report's order:
#: the stimulus interval, the draws interval (stimulus + channel/position draw), the permutation
#: null and the chance-corrected ``adjusted`` score (docs/protocol.md, docs/measures.md).
UNCERTAINTY_SHOWN = ("ci_low", "ci_high", "draws_ci_low", "draws_ci_high", "null_mean", "null_p95", "p_value", "adjusted")


def summary_with_uncertainty(similarity: pd.DataFrame) -> pd.DataFrame:
    """:func:`fold_summary` plus the fold means of the interval and null columns (where present)."""
    keys = ["target", "kind", "pair", "strategy", "layer", "measure"]
    summary = fold_summary(similarity)
    extra = [c for c in UNCERTAINTY_SHOWN if c in similarity]
    if not extra:
        return summary
    return summary.merge(similarity.groupby(keys, sort=False)[extra].mean().reset_index(), on=keys, how="left")


def _pair_source(similarity: pd.DataFrame, pair: str) -> str:
    """The single source a pair belongs to ('' for pairs of two sources and baselines)."""
    if "source" not in similarity.columns:
        return ""
    values = similarity.loc[similarity["pair"] == pair, "source"].dropna().astype(str)
    return values.iloc[0] if len(values) else ""


def layerwise_figure(similarity: pd.DataFrame, target: str, measure: str, out_dir: Path, layers: list[str]) -> Path | None:
    """Figure 3 / 7-12 for one target and measure; ``None`` if there are no rows."""
    sub = similarity[(similarity["target"] == target) & (similarity["measure"] == measure)]
    if sub.empty:
        return None
    summary = fold_summary(sub)
    spec = get_measure(measure)
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), sharey=True)
    x = np.arange(len(layers))
    for ax, kinds, title in (
        (axes[0], PANEL_A, "(a) each network before vs after fine-tuning"),
        (axes[1], PANEL_B, "(b) between networks, with random baselines"),
    ):
        part = summary[summary["kind"].isin(kinds)]
        part = part.assign(_order=part["kind"].map(kinds.index)).sort_values("_order", kind="stable")
        for (pair, strategy), line in part.groupby(["pair", "strategy"], sort=False):
            style = pair_style(line["kind"].iloc[0], _pair_source(sub, pair), strategy)
            line = line.set_index("layer").reindex(layers)
            label = pair if strategy == "-" else f"{pair} ({strategy})"
            ax.errorbar(x, line["mean"], yerr=line["std"], label=label, capsize=3, **style)
            uncertainty = uncertainty_line(sub, pair, strategy, layers)
            interval_band(ax, x, uncertainty, style.get("color"))
            draws_outline(ax, x, uncertainty, style.get("color"))
        null_band(ax, x, sub[sub["kind"].isin(kinds)], layers)
        ax.set_xticks(x, layers, rotation=30 if len(layers) > 6 else 0)
        ax.set_title(title, fontsize=10)
        ax.set_ylim(*measure_ylim(spec))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2)
    axes[0].set_ylabel(measure_label(spec))
    folds = sub["fold"].nunique()
    fig.suptitle(f"Layer-wise {measure.upper()} {spec.kind} on {target} (mean ± std over {folds} fold(s); "
                 "shaded: 95% stimulus interval; dotted: 95% draws interval, with the channel and position draw;\n"
                 "grey: permutation null, mean to 95% point)")
    return save(fig, out_dir, f"layerwise_{target}_{measure}")


def measure_ylim(spec: Measure) -> tuple[float | None, float | None]:
    """The y-range of a measure's figure: its declared range (registry), 2% headroom above; an
    unbounded end (``inf``) is left to matplotlib (``None``)."""
    low = spec.low if np.isfinite(spec.low) else None
    if not np.isfinite(spec.high):
        return low, None
    return low, spec.high + 0.02 * (spec.high - (spec.low if low is not None else 0.0))


def measure_label(spec: Measure) -> str:
    """The y-axis label of a measure: its title and kind, and which direction means more alike."""
    return f"{spec.title} ({spec.kind}; {'higher' if spec.higher_is_similar else 'lower'} = more alike)"


def uncertainty_line(similarity: pd.DataFrame, pair: str, strategy: str, layers: list[str]) -> pd.DataFrame:
    """Per layer (in ``layers`` order) of one pair: fold means of ``ci_low``, ``ci_high``,
    ``draws_ci_low``, ``draws_ci_high``, ``null_mean``, ``null_p95`` (NaN where a fold lacks them,
    or a column is absent: similarity.csv of earlier versions has no draws interval)."""
    columns = ["ci_low", "ci_high", "draws_ci_low", "draws_ci_high", "null_mean", "null_p95"]
    sub = similarity[(similarity["pair"] == pair) & (similarity["strategy"] == strategy)]
    present = [c for c in columns if c in sub.columns]
    if sub.empty or not present:
        return pd.DataFrame(index=layers, columns=columns, dtype=float)
    return sub.groupby("layer")[present].mean().reindex(index=layers, columns=columns)


def interval_band(ax: plt.Axes, x: np.ndarray, line: pd.DataFrame, color) -> None:
    """Shade one line's image-bootstrap interval (fold means of its ends) in its own colour."""
    if line["ci_low"].notna().any():
        ax.fill_between(x, line["ci_low"].to_numpy(float), line["ci_high"].to_numpy(float), color=color, alpha=0.18,
                        linewidth=0)


def draws_outline(ax: plt.Axes, x: np.ndarray, line: pd.DataFrame, color) -> None:
    """Dotted lines at the ends of one line's draws interval (fold means), in its own colour."""
    if line["draws_ci_low"].notna().any():
        for end in ("draws_ci_low", "draws_ci_high"):
            ax.plot(x, line[end].to_numpy(float), color=color, linestyle=":", linewidth=0.9, alpha=0.8)


def null_band(ax: plt.Axes, x: np.ndarray, part: pd.DataFrame, layers: list[str]) -> None:
    """Grey band per layer from the lowest null mean to the highest null 95% point of the panel's pairs."""
    if part.empty or "null_p95" not in part or not part["null_p95"].notna().any():
        return
    by_layer = part.groupby("layer").agg(low=("null_mean", "min"), high=("null_p95", "max")).reindex(layers)
    ax.fill_between(x, by_layer["low"].to_numpy(float), by_layer["high"].to_numpy(float), color="0.5", alpha=0.25,
                    hatch="//", linewidth=0, label="permutation null (mean to 95% point)")


def filters_figure(filters: dict[str, tuple[np.ndarray, bool]], out_dir: Path) -> Path | None:
    """Figure 4: ``filters`` maps source name -> (conv1 kernels ``(64, 3, 7, 7)`` in the network's
    input channel order, whether that order is BGR); a Gabor reference panel is added."""
    if not filters:
        return None
    panels = [(name, filter_grid(w, bgr=bgr)) for name, (w, bgr) in filters.items()]
    panels.append(("Gabor filters", filter_grid(gabor_bank(), bgr=False)))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.6))
    for i, (ax, (name, grid)) in enumerate(zip(np.atleast_1d(axes), panels)):
        ax.imshow(grid, interpolation="nearest")
        ax.set_title(f"({chr(97 + i)}) {name}", fontsize=10, color=source_color(name) if name in filters else NEUTRAL)
        ax.axis("off")
    fig.suptitle("First 36 conv1 filters")
    return save(fig, out_dir, "conv1_filters")


def prediction_figure(pred: pd.DataFrame, out_dir: Path) -> Path | None:
    """Figure 5: per strategy panel, per target boxes of fine-tuned, before fine-tuning, independent."""
    if pred.empty:
        return None
    targets = list(dict.fromkeys(pred["target"]))
    strategies = [s for s in STRATEGIES if ((pred["comparison"] == "fine-tuned") & (pred["strategy"] == s)).any()]
    if not strategies:
        strategies = [NO_FREEZE]
    before = pred[pred["comparison"] == "before fine-tuning"]
    fig, axes = plt.subplots(1, len(strategies), figsize=(max(5, 2.4 * len(targets)) * len(strategies), 4.2), squeeze=False)
    colors = ("#444444", "#9e9e9e", "#e6e6e6")  # comparisons, not sources: greys, no source colour
    for ax, strategy in zip(axes[0], strategies):
        ft = pred[(pred["comparison"] == "fine-tuned") & (pred["strategy"] == strategy)]
        for t, target in enumerate(targets):
            groups = [
                ft[ft["target"] == target]["observed"].to_numpy(),
                before[before["target"] == target]["observed"].to_numpy(),
                ft[ft["target"] == target]["baseline"].to_numpy(),
            ]
            for g, (values, color) in enumerate(zip(groups, colors)):
                if len(values) == 0:
                    continue
                box = ax.boxplot(values, positions=[t * 4 + g], widths=0.8, patch_artist=True,
                                 medianprops={"color": "black"}, showfliers=False)
                for patch in box["boxes"]:
                    patch.set_facecolor(color)
                    patch.set_alpha(0.6)
                ax.scatter(np.full(len(values), t * 4 + g), values, color=color, edgecolor="black", s=18, zorder=3)
        ax.set_xticks([t * 4 + 1 for t in range(len(targets))], targets)
        ax.set_title(f"fine-tuned: {strategy}", fontsize=10)
        ax.set_ylabel("prediction similarity")
        ax.grid(alpha=0.3, axis="y")
    a, b = pred["source_a"].iloc[0], pred["source_b"].iloc[0]
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colors]
    fig.legend(handles, [f"{a}-FT vs {b}-FT", f"{a} vs {b} before fine-tuning (probes)", "independent mistakes"],
               loc="lower center", ncol=3, frameon=False, bbox_to_anchor=(0.5, -0.06))
    return save(fig, out_dir, "prediction_similarity")


def _coef(value: float) -> str:
    """A correlation coefficient for a figure label; 'n/a' where undefined."""
    return f"{value:+.2f}" if np.isfinite(value) else "n/a"


def correlation_label(r) -> str:
    """``block1: r=+0.12 [-0.40, +0.58] ρ=... (n=7)``: both coefficients with their 95% intervals
    (``n/a`` below the number of points that has one, analysis/correlation.py)."""
    return (f"{r.layer}: r={_coef(r.pearson_r)} [{_coef(r.pearson_low)}, {_coef(r.pearson_high)}] "
            f"ρ={_coef(r.spearman_rho)} [{_coef(r.spearman_low)}, {_coef(r.spearman_high)}] (n={r.n})")


def point_intervals(ax: plt.Axes, points: pd.DataFrame, color) -> None:
    """Horizontal bars: each point's image-bootstrap interval of its CCA (where known)."""
    if "ci_low" not in points or not points["ci_low"].notna().any():
        return
    x = points["cca"].to_numpy(float)
    err = np.vstack([x - points["ci_low"].to_numpy(float), points["ci_high"].to_numpy(float) - x])
    ax.errorbar(x, points["gain"], xerr=np.clip(np.nan_to_num(err), 0, None), fmt="none", ecolor=color, alpha=0.5,
                lw=0.8)


def gain_figure(points: pd.DataFrame, stats: pd.DataFrame, out_dir: Path, layers: list[str]) -> Path | None:
    """Figure 6: a panel per pretrained source; colour = layer, marker = strategy."""
    if points.empty:
        return None
    sources = list(dict.fromkeys(points["source"]))
    fig, axes = plt.subplots(1, len(sources), figsize=(5.5 * len(sources), 4.4), squeeze=False)
    cmap = plt.get_cmap("viridis", max(2, len(layers)))
    markers = {NO_FREEZE: "o", FREEZE: "^"}
    for i, (ax, source) in enumerate(zip(axes[0], sources)):
        sub = points[points["source"] == source]
        for j, layer in enumerate(layers):
            for strategy, marker in markers.items():
                p = sub[(sub["layer"] == layer) & (sub["strategy"] == strategy)]
                if p.empty:
                    continue
                ax.scatter(p["cca"], p["gain"], color=cmap(j), marker=marker, s=28,
                           label=f"{layer} ({strategy})", alpha=0.85)
                point_intervals(ax, p, cmap(j))
        pooled = stats[(stats["source"] == source) & (stats["strategy"] == "all")] if not stats.empty else stats
        if pooled.empty and not stats.empty:
            pooled = stats[stats["source"] == source]
        text = "\n".join(correlation_label(r) for r in pooled.itertuples())
        if text:
            ax.text(0.02, 0.98, text, transform=ax.transAxes, va="top", fontsize=7, family="monospace")
        ax.axhline(0, color="gray", lw=0.8)
        ax.set_title(f"({chr(97 + i)}) {source}", fontsize=10, color=source_color(source))
        for spine in ax.spines.values():
            spine.set_edgecolor(source_color(source))
        ax.set_xlabel(f"CCA({source}, {source}-FT)")
        ax.set_ylabel("relative AUC gain over random init")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, frameon=False, loc="lower right")
    fig.suptitle("AUC gain vs representation similarity before/after fine-tuning (one point per target and fold)")
    return save(fig, out_dir, "auc_gain_vs_cca")


def _numeric(values: list) -> bool:
    return all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
               for v in values)


def setting_figure(runs: pd.DataFrame, target: str, name: str, fields: list[str], out_dir: Path) -> Path | None:
    """Test AUC x100 against swept field ``name`` on ``target``: per source and strategy (its
    colour; dashed for freeze) and per value of the other swept ``fields``, the mean ± std over
    folds (seeds averaged within a fold) at each value; a log axis for positive numbers spanning a
    factor of 10 or more. ``runs``: one row per run with ``target, setting, source, strategy, fold,
    auc`` and a column per swept field (:func:`medtransfer.analysis.sensitivity.setting_runs`).
    ``None`` when the field takes fewer than two values there."""
    sub = runs[runs["target"] == target]
    sub = sub.groupby(["setting", "source", "strategy", "fold", *fields], sort=False, as_index=False,
                      dropna=False)["auc"].mean()
    values = list(dict.fromkeys(sub[name]))
    if len(values) < 2:
        return None
    numeric = _numeric(values)
    positions = {v: (float(v) if numeric else i) for i, v in enumerate(values)}
    others = [f for f in fields if f != name]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for key, group in sub.groupby(["source", "strategy", *others], sort=False, dropna=False):
        source, strategy, rest = key[0], key[1], key[2:]
        cells = group.groupby(name, sort=False, dropna=False)["auc"].agg(["mean", "std"]).reset_index()
        cells["x"] = cells[name].map(positions)
        cells = cells.sort_values("x")
        extra = setting_label(dict(zip(others, rest)))
        ax.errorbar(cells["x"], 100 * cells["mean"], yerr=100 * cells["std"].fillna(0.0), marker="o", capsize=3,
                    color=source_color(source), linestyle="--" if strategy == FREEZE else "-",
                    label=f"{source} / {strategy}" + (f" ({extra})" if extra else ""))
    xs = [positions[v] for v in values]
    if numeric and min(xs) > 0 and max(xs) / min(xs) >= 10:
        ax.set_xscale("log")
    if not numeric:
        ax.set_xticks(xs, [format_value(v) for v in values])
    ax.set_xlabel(name)
    ax.set_ylabel("test AUC x100 (mean ± std over folds)")
    ax.set_title(f"{target}: test AUC against {name}")
    ax.legend(fontsize=7)
    return save_figure(fig, out_dir, f"sensitivity_{target}_{name}")

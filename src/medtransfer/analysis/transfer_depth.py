"""The transfer-depth curve (Raghu et al. 2019): test AUC against how many stages came from a source.

Per target and pretrained source, the arms in order: ``random`` (the study's random-init runs,
depth 0), each stage ``conv1 .. block3`` transferred (the source's ``transfer: {up_to: ...}`` runs),
and ``full`` (the source's own no-freeze runs: every stage transferred, depth = the number of
stages); then the re-drawn inits ``mean-var`` and ``shuffled`` beside the curve (no depth). Each
arm's cell is Table 2's: mean and sample std (ddof=1) over folds of the test AUC x100 and the 95%
Student-t interval over folds on the logit scale (:func:`medtransfer.study.table2.table2`; unit:
the fold).

Where the curve stops rising (:func:`plateau`): the shallowest depth whose interval holds the mean
of every deeper depth, i.e. no deeper transfer is better by more than that depth's own interval.
It reads the intervals, not a paired test: a plateau says "no resolved gain beyond", not "equal".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medtransfer.analysis.figures import plt, save_figure, source_color
from medtransfer.analysis.inventory import Run, Study
from medtransfer.models.sources import backbone_of_source
from medtransfer.models.transfer import stages as backbone_stages
from medtransfer.study.table2 import table2
from medtransfer.vocabulary import NO_FREEZE, RANDOM

COLUMNS = ["target", "source", "arm", "depth", "mean", "std", "low", "high", "n", "runs"]
RANDOM_ARM, FULL_ARM = RANDOM, "full"
REDRAWN = ("mean-var", "shuffled")


def base_source(run: Run) -> str | None:
    """The source a transfer run was made from (``imagenet`` of ``imagenet.to_block2``), or ``None``
    for a run without ``transfer``."""
    transfer = run.config.transfer
    if transfer is None:
        return None
    suffix = transfer.label("")  # ".to_block2"
    return run.source[: -len(suffix)] if run.source.endswith(suffix) else run.source


def arms(study: Study) -> pd.DataFrame:
    """One row per (target, source label) that belongs to a transfer-depth curve: ``target, label,
    source`` (the base source), ``arm`` (a stage, ``full``, ``mean-var``, ``shuffled``) and ``depth``
    (stages transferred; NaN for the re-drawn arms). Sources with no transfer run have no curve."""
    rows = []
    bases = {(r.target, base_source(r)) for r in study.runs if r.config.transfer is not None}
    for run in study.runs:
        if run.strategy != NO_FREEZE:
            continue
        transfer = run.config.transfer
        base = base_source(run) if transfer is not None else run.source
        if (run.target, base) not in bases:
            continue
        names = backbone_stages(backbone_of_source(run.load_string))
        if transfer is None:
            arm, depth = FULL_ARM, float(len(names))
        elif transfer.init != "weights":
            arm, depth = transfer.init if transfer.up_to is None else f"{transfer.init} to {transfer.up_to}", np.nan
        else:
            arm, depth = transfer.up_to, float(names.index(transfer.up_to) + 1)
        rows.append({"target": run.target, "label": run.source, "source": base, "arm": arm, "depth": depth})
    return pd.DataFrame(rows, columns=["target", "label", "source", "arm", "depth"]).drop_duplicates()


def depth_table(study: Study, aucs: pd.DataFrame, random: str | None) -> pd.DataFrame:
    """The transfer-depth table (:data:`COLUMNS`, AUC x100): per target and source, random init
    (depth 0), the depths in order, full transfer, then the re-drawn arms. ``aucs``: ``run_aucs``'
    frame (``target, source, strategy, fold, auc``)."""
    mapping = arms(study)
    if mapping.empty or aucs.empty:
        return pd.DataFrame(columns=COLUMNS)
    cells = table2(aucs[aucs["strategy"] == NO_FREEZE])
    rows = []
    for (target, source), sub in mapping.groupby(["target", "source"], sort=False):
        wanted = [(RANDOM_ARM, random, 0.0)] if random is not None else []
        ordered = sub.assign(_redrawn=sub["depth"].isna()).sort_values(["_redrawn", "depth"], kind="stable")
        wanted += [(r.arm, r.label, r.depth) for r in ordered.itertuples()]
        for arm, label, depth in wanted:
            cell = cells[(cells["target"] == target) & (cells["source"] == label)]
            if cell.empty:
                continue
            c = cell.iloc[0]
            rows.append([target, source, arm, depth, c["mean"], c["std"], c["low"], c["high"], c["n"], c["runs"]])
    return pd.DataFrame(rows, columns=COLUMNS)


def plateau(curve: pd.DataFrame) -> pd.Series | None:
    """The row of ``curve`` (one target and source, :data:`COLUMNS`) where the AUC stops rising:
    the shallowest depth whose interval ``[low, high]`` holds (or lies above) the mean of every
    deeper depth; ``None`` without two depths with intervals."""
    line = curve[curve["depth"].notna()].sort_values("depth")
    if len(line) < 2:
        return None
    means = line["mean"].to_numpy()
    for i, row in enumerate(line.itertuples(index=False)):
        if not np.isfinite(row.high):
            continue
        if (means[i + 1:] <= row.high).all():
            return line.iloc[i]
    return None


def plateau_sentence(table: pd.DataFrame, target: str) -> str:
    """One sentence per source of ``target``: where the AUC curve stops rising, with its interval."""
    parts = []
    for source, curve in table[table["target"] == target].groupby("source", sort=False):
        stop = plateau(curve)
        line = curve[curve["depth"].notna()].sort_values("depth")
        if stop is None:
            parts.append(f"with {source}, too few depths with intervals to say where the AUC stops rising")
            continue
        last = line.iloc[-1]
        where = ("does not stop rising before full transfer" if stop["arm"] == FULL_ARM
                 else f"stops rising at {stop['arm']}")
        parts.append(f"with {source} the test AUC {where}: {stop['mean']:.1f} [{stop['low']:.1f}, {stop['high']:.1f}] "
                     f"(random init {line.iloc[0]['mean']:.1f}, full transfer {last['mean']:.1f} "
                     f"[{last['low']:.1f}, {last['high']:.1f}])")
    return f"{target}: " + "; ".join(parts) + "." if parts else ""


def _intervals(ax, x: np.ndarray, rows: pd.DataFrame, color: str) -> None:  # noqa: ANN001 - a matplotlib Axes
    """Each row's interval ``[low, high]`` as a capped bar at ``x``, drawn from its own ends: the
    interval is a t interval on the logit scale, so the mean (drawn by the caller) may lie outside it
    (folds at AUC 0 or 1 give a degenerate interval beside the mean)."""
    low, high = rows["low"].to_numpy(dtype=float), rows["high"].to_numpy(dtype=float)
    ax.errorbar(x, (low + high) / 2, yerr=(high - low) / 2, fmt="none", ecolor=color, capsize=3)


def depth_figure(table: pd.DataFrame, target: str, out_dir: Path) -> Path | None:
    """Test AUC against transferred depth, one panel per source of ``target``: the curve from random
    init to full transfer with its intervals, and the re-drawn arms beside it."""
    sub = table[table["target"] == target]
    if sub.empty:
        return None
    sources = list(dict.fromkeys(sub["source"]))
    fig, axes = plt.subplots(1, len(sources), figsize=(5.5 * len(sources), 4.0), squeeze=False)
    for ax, source in zip(axes[0], sources):
        curve = sub[sub["source"] == source]
        line = curve[curve["depth"].notna()].sort_values("depth")
        side = curve[curve["depth"].isna()]
        color = source_color(source)
        x = line["depth"].to_numpy()  # stages transferred: a skipped depth leaves its gap
        _intervals(ax, x, line, color)
        ax.plot(x, line["mean"], color=color, marker="o", label=f"{source}: stages transferred")
        xs = (x.max() if len(x) else 0.0) + 1.5 + np.arange(len(side))
        if len(side):
            _intervals(ax, xs, side, color)
            ax.plot(xs, side["mean"], color=color, marker="D", linestyle="none", mfc="white", label="re-drawn inits")
        ax.set_xticks(list(x) + list(xs), list(line["arm"]) + list(side["arm"]), rotation=30, fontsize=8)
        stop = plateau(curve)
        if stop is not None:
            ax.axvline(stop["depth"], color="gray", ls=":", lw=1, label="stops rising")
        ax.set_ylabel("test AUC x100 (mean, 95% interval over folds)")
        ax.set_title(f"{target}: {source}", fontsize=10, color=color)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, frameon=False, loc="lower right")
    return save_figure(fig, out_dir, f"transfer_depth_{target}")

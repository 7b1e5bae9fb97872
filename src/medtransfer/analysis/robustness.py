"""Robustness to image corruptions (``medtransfer evaluate``'s files): tables and a figure per target.

From each finished run's ``corruptions/{name}.csv`` (sealed in its ``DONE``) and its clean
``predictions.csv`` (severity 0):

- ``robustness.csv`` (:func:`corruption_metrics`): per run, corruption and severity 0..5 the
  headline AUC (the runs' own rule, :func:`medtransfer.training.metrics.headline_auc`), the
  top-label ECE and n.
- ``robustness_summary.csv`` (:func:`severity_summary`): per target, source, strategy, corruption
  and severity the mean AUC over folds with a logit-t 95% interval over folds
  (:func:`medtransfer.stats.logit_t_interval`; unit: the fold, seeds averaged within a fold first)
  and the mean ECE.
- ``mca.csv`` (:func:`mca_table`): the mean corruption AUC (mCA: the mean AUC over every
  corruption and severity 1..5 that all runs of the target have) and the relative drop from clean,
  ``100 (clean - mCA) / clean`` (% of the clean AUC), per run (``mca_runs``) and per target,
  source and strategy over folds: mCA with its logit-t interval, the drop with the Nadeau-Bengio
  corrected t interval (unit: the fold; :func:`medtransfer.stats.corrected_resampled_t`).

- ``cross_target.csv`` (:func:`cross_target_table`): the networks' AUC on other datasets with the
  same label set (the study's ``evaluate.targets``, ``transfer/{name}.csv``).

Which source is more robust (the paired comparison of two sources' drops per fold) is claim
"robustness" of :mod:`medtransfer.analysis.claims`.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from medtransfer import stats  # noqa: E402
from medtransfer.analysis.figures import save_figure, source_color  # noqa: E402
from medtransfer.analysis.inventory import Study  # noqa: E402
from medtransfer.analysis.tables import read_predictions  # noqa: E402
from medtransfer.data.corruptions import NAMES, SEVERITIES  # noqa: E402
from medtransfer.errors import DataError  # noqa: E402
from medtransfer.training.metrics import expected_calibration_error, headline_auc  # noqa: E402
from medtransfer.training.robustness import read_corruption_file  # noqa: E402
from medtransfer.vocabulary import FREEZE  # noqa: E402

KEYS = ["target", "source", "strategy", "fold", "seed"]
COLUMNS = [*KEYS, "corruption", "severity", "auc", "ece", "n"]
SUMMARY_COLUMNS = ["target", "source", "strategy", "corruption", "severity", "auc", "auc_low", "auc_high", "ece",
                   "folds"]
MCA_COLUMNS = ["target", "source", "strategy", "clean_auc", "mca", "mca_low", "mca_high", "drop", "drop_low",
               "drop_high", "folds", "corruptions"]


def corruption_metrics(study: Study, average: str = "macro") -> tuple[pd.DataFrame, list[str]]:
    """Per run, corruption and severity (0: the clean ``predictions.csv``) the AUC, ECE and n
    (:data:`COLUMNS`); and what could not be read. Runs without corruption files add no rows."""
    rows, missing = [], []
    for run in study.runs:
        files = run.dir.corruption_files()
        if not files:
            continue
        key = dict(zip(KEYS, (run.target, run.source, run.strategy, run.fold, run.seed)))
        try:
            ids, labels, probs = read_predictions(run.predictions)
        except DataError as error:
            missing.append(f"robustness of {run.run_id}: {error}")
            continue
        clean = {"auc": headline_auc(labels, probs, average), "ece": expected_calibration_error(labels, probs),
                 "n": len(labels)}
        for name, path in files.items():
            try:
                frame = read_corruption_file(path)
            except DataError as error:
                missing.append(f"robustness of {run.run_id}: {error}")
                continue
            rows.append({**key, "corruption": name, "severity": 0, **clean})
            for severity, part in frame.groupby("severity", sort=True):
                if sorted(part["image_id"]) != sorted(ids):
                    missing.append(f"robustness of {run.run_id}: {path} at severity {severity} covers other images "
                                   f"than predictions.csv")
                    continue
                p = part.filter(like="p_").to_numpy(np.float64)
                y = part["label"].to_numpy(np.int64)
                rows.append({**key, "corruption": name, "severity": int(severity), "auc": headline_auc(y, p, average),
                             "ece": expected_calibration_error(y, p), "n": len(y)})
    frame = pd.DataFrame(rows, columns=COLUMNS)
    order = {name: i for i, name in enumerate(NAMES)}
    if not frame.empty:
        frame = frame.sort_values(KEYS + ["corruption", "severity"], key=lambda s: s.map(order)
                                  if s.name == "corruption" else s, kind="stable").reset_index(drop=True)
    return frame, missing


def _fold_means(frame: pd.DataFrame, keys: list[str], values: list[str]) -> pd.DataFrame:
    """Seeds averaged within each fold (the fold is the unit of the intervals)."""
    return frame.groupby(keys + ["fold"], as_index=False, sort=False)[values].mean()


def severity_summary(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per target, source, strategy, corruption and severity: mean AUC over folds with its logit-t
    95% interval, mean ECE, number of folds (:data:`SUMMARY_COLUMNS`)."""
    keys = ["target", "source", "strategy", "corruption", "severity"]
    if metrics.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    folds = _fold_means(metrics, keys, ["auc", "ece"])
    rows = []
    for values, part in folds.groupby(keys, sort=False):
        low, high = stats.logit_t_interval(part["auc"].to_numpy(np.float64))
        rows.append({**dict(zip(keys, values)), "auc": float(part["auc"].mean()), "auc_low": low, "auc_high": high,
                     "ece": float(part["ece"].mean()), "folds": len(part)})
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def mca_runs(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per run: ``clean_auc``, ``mca`` (mean AUC over the target's common corruptions at severities
    1..5), ``drop`` (100 (clean - mCA) / clean) and ``corruptions`` (how many were averaged)."""
    columns = [*KEYS, "clean_auc", "mca", "drop", "corruptions"]
    if metrics.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for target, part in metrics.groupby("target", sort=False):
        per_run = part.groupby(KEYS, sort=False)["corruption"].agg(lambda s: frozenset(s))
        common = frozenset.intersection(*per_run.to_list())
        for key, run in part[part["corruption"].isin(common)].groupby(KEYS, sort=False):
            clean = float(run.loc[run["severity"] == 0, "auc"].iloc[0])
            corrupted = run.loc[run["severity"] > 0, "auc"].to_numpy(np.float64)
            mca = float(np.mean(corrupted)) if corrupted.size else math.nan
            drop = 100.0 * (clean - mca) / clean if clean > 0 else math.nan
            rows.append({**dict(zip(KEYS, key)), "clean_auc": clean, "mca": mca, "drop": drop,
                         "corruptions": len(common)})
    return pd.DataFrame(rows, columns=columns)


def mca_table(runs: pd.DataFrame, test_train_ratio) -> pd.DataFrame:  # noqa: ANN001 - target -> n_test / n_train
    """Per target, source and strategy over folds (:data:`MCA_COLUMNS`): mean clean AUC, mCA with
    its logit-t interval, and the relative drop with its Nadeau-Bengio corrected t interval
    (``test_train_ratio(target)``: a fold's n_test / n_train)."""
    if runs.empty:
        return pd.DataFrame(columns=MCA_COLUMNS)
    keys = ["target", "source", "strategy"]
    folds = _fold_means(runs, keys, ["clean_auc", "mca", "drop", "corruptions"])
    rows = []
    for values, part in folds.groupby(keys, sort=False):
        low, high = stats.logit_t_interval(part["mca"].to_numpy(np.float64))
        drop = stats.corrected_resampled_t(part["drop"].to_numpy(np.float64), test_train_ratio(values[0]),
                                           bounds=(-math.inf, 100.0))
        rows.append({**dict(zip(keys, values)), "clean_auc": float(part["clean_auc"].mean()),
                     "mca": float(part["mca"].mean()), "mca_low": low, "mca_high": high, "drop": drop.statistic,
                     "drop_low": drop.low, "drop_high": drop.high, "folds": len(part),
                     "corruptions": int(part["corruptions"].min())})
    return pd.DataFrame(rows, columns=MCA_COLUMNS)


def robustness_figure(summary: pd.DataFrame, target: str, out_dir: Path) -> Path | None:
    """AUC against severity (0 = clean), one panel per corruption, one colour per source (the
    figures' palette), solid for no-freeze and dashed for freeze; bands: the logit-t 95% interval
    over folds. ``None`` when ``target`` has no corruption rows."""
    part = summary[summary["target"] == target]
    if part.empty:
        return None
    names = [n for n in NAMES if n in set(part["corruption"])]
    cols = min(4, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.8 * rows), squeeze=False, sharey=True)
    for ax, name in zip(axes.flat, names):
        for (source, strategy), line in part[part["corruption"] == name].groupby(["source", "strategy"], sort=False):
            line = line.sort_values("severity")
            color = source_color(source)
            ax.plot(line["severity"], line["auc"], color=color, marker="o", markersize=3,
                    linestyle="--" if strategy == FREEZE else "-", label=f"{source} ({strategy})")
            ax.fill_between(line["severity"], line["auc_low"], line["auc_high"], color=color, alpha=0.12, linewidth=0)
        ax.set_title(name.replace("_", " "), fontsize=10)
        ax.set_xticks([0, *SEVERITIES])
        ax.set_xlabel("severity (0: clean)", fontsize=8)
        ax.axhline(0.5, color="#999999", linewidth=0.6, linestyle=":")
        ax.set_ylim(0.0, 1.0)
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("test AUC")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=8, bbox_to_anchor=(0.5, -0.02))
    fig.suptitle(f"{target}: test AUC under corruptions (mean over folds, 95% logit-t band)", fontsize=11)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return save_figure(fig, out_dir, f"robustness_{target}")


CROSS_COLUMNS = ["target", "source", "strategy", "evaluated_on", "auc", "auc_low", "auc_high", "own_auc", "folds", "n"]


def cross_target_table(study: Study, average: str = "macro") -> tuple[pd.DataFrame, list[str]]:
    """Per target, source, strategy and other dataset (the study's ``evaluate.targets``): the mean
    over folds of the fine-tuned networks' AUC on every image of that dataset, with its logit-t 95%
    interval over folds (unit: the fold's network; the images are the same for every fold), beside
    the mean AUC on the own test parts (``own_auc``), and n images (:data:`CROSS_COLUMNS`)."""
    rows, missing = [], []
    for run in study.runs:
        files = run.dir.transfer_files()
        if not files:
            continue
        try:
            _, labels, probs = read_predictions(run.predictions)
        except DataError as error:
            missing.append(f"cross-target evaluation of {run.run_id}: {error}")
            continue
        own = headline_auc(labels, probs, average)
        for name, path in files.items():
            try:
                _, y, p = read_predictions(path)
            except DataError as error:
                missing.append(f"cross-target evaluation of {run.run_id}: {error}")
                continue
            rows.append({"target": run.target, "source": run.source, "strategy": run.strategy, "fold": run.fold,
                         "evaluated_on": name, "auc": headline_auc(y, p, average), "own_auc": own, "n": len(y)})
    if not rows:
        return pd.DataFrame(columns=CROSS_COLUMNS), missing
    keys = ["target", "source", "strategy", "evaluated_on"]
    folds = _fold_means(pd.DataFrame(rows), keys, ["auc", "own_auc", "n"])
    out = []
    for values, part in folds.groupby(keys, sort=False):
        low, high = stats.logit_t_interval(part["auc"].to_numpy(np.float64))
        out.append({**dict(zip(keys, values)), "auc": float(part["auc"].mean()), "auc_low": low, "auc_high": high,
                    "own_auc": float(part["own_auc"].mean()), "folds": len(part), "n": int(part["n"].max())})
    return pd.DataFrame(out, columns=CROSS_COLUMNS), missing

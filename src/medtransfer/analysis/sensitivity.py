"""Is the ranking of sources stable across training settings? The sensitivity analysis of a study
with a ``sweep:`` (:mod:`medtransfer.study.sweep`), and ``select: val``.

Per target (its label without the setting: ``thyroid``, ``thyroid@densenet121``):

- **Table 2 per setting** (``sensitivity_table2.csv``): :func:`medtransfer.study.table2.table2`
  with one row per setting, the setting written as all its swept values (``lr=0.0001``, also for
  the cell at the study's own settings, whose runs carry no label).
- **Ranking per setting** and **Kendall's tau** between every two settings (``sensitivity_tau.csv``):
  per strategy, the sources ordered by mean test AUC; tau-b (scipy) of the sources' means in two
  settings. Descriptive: a handful of sources is no sample, so no p-value is given.
- **"a beats b" per setting** (``sensitivity_pairs.csv``): per strategy and pair of sources, the
  claims test of :mod:`medtransfer.analysis.claims` (claim 5.1): mean over folds of the paired AUC
  difference x100 with the Nadeau-Bengio corrected resampled t-test (unit: the fold; several
  seeds averaged per fold first), Holm across the settings of the pair. ``sensitivity_summary.csv``:
  per pair, in how many settings each source is ahead (mean difference) and in how many the test
  supports it at :data:`~medtransfer.analysis.claims.ALPHA`. The settings share folds and test
  images, so these counts describe, they are no test across settings.
- **One sentence**: stable, or reverses at ... (:func:`sentences`).
- **A figure per swept field**: mean test AUC ± std over folds against the field's value, one line
  per source and strategy (and per value of the other swept fields).

``select: val`` (``selected.csv``): per target, source and strategy, the setting with the highest
mean over folds of the validation AUC of the model each run kept (the epoch of lowest validation
loss; ``history.csv``), and that setting's test AUC. Only validation AUCs enter the choice: test
predictions never do, so the reported test AUC is not chosen on the test folds. Ties go to the
setting listed first; a setting without a defined validation AUC in any fold is not a candidate.
"""

from __future__ import annotations

import html
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import kendalltau

from medtransfer import stats
from medtransfer.analysis import figures as figs
from medtransfer.analysis.claims import ALPHA, fold_test_train_ratio, verdict
from medtransfer.analysis.inventory import Study
from medtransfer.analysis.report import Figure, frame_html, table2_html
from medtransfer.analysis.tables import auc_from_probs, read_predictions
from medtransfer.atomic import write_text_atomic
from medtransfer.errors import MedtransferError
from medtransfer.study import sweep as sweeps
from medtransfer.study.table2 import format_cell, table2
from medtransfer.vocabulary import FINETUNE

RUN_COLUMNS = ["target", "setting", "label", "source", "strategy", "fold", "seed", "auc", "val_auc"]


@dataclass
class Sensitivity:
    """What :func:`sensitivity` found; frames as written to ``analysis/`` (AUC x100)."""

    fields: list[str]
    runs: pd.DataFrame  # RUN_COLUMNS and one column per swept field; AUC in [0, 1]
    table: pd.DataFrame  # Table 2 per setting: target, setting, then Table 2's columns
    tau: pd.DataFrame
    pairs: pd.DataFrame
    summary: pd.DataFrame
    selected: pd.DataFrame | None
    sentences: dict[str, str]
    figures: list[Figure] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def kept_val_auc(run) -> float:  # noqa: ANN001 - a RunRecord
    """The validation AUC of the model a finished run kept: its fine-tuning phase's row of
    ``history.csv`` at the run's ``best_epoch`` (``metrics.json``); NaN when not recorded."""
    try:
        best = int(run.metrics()["best_epoch"])
    except (MedtransferError, KeyError, TypeError, ValueError):
        return math.nan
    for row in run.dir.read_history():
        if row.get("phase") == FINETUNE and str(row.get("epoch")).strip() == str(best):
            try:
                return float(row.get("val_auc"))
            except (TypeError, ValueError):
                return math.nan
    return math.nan


def setting_runs(study: Study, fields: list[str], average: str = "macro") -> tuple[pd.DataFrame, list[str]]:
    """One row per finished run (:data:`RUN_COLUMNS` and the swept fields' values): its target
    without the setting, the setting (every swept field's value, :func:`medtransfer.study.sweep.setting_label`),
    the run-id label, the test AUC recomputed from ``predictions.csv`` and the kept model's
    validation AUC (:func:`kept_val_auc`). Also the runs that could not be read."""
    rows, problems = [], []
    for run in study.runs:
        try:
            _, labels, probs = read_predictions(run.predictions)
        except MedtransferError as error:
            problems.append(f"sensitivity: {run.run_id}: {error}")
            continue
        target, label = sweeps.split_label(run.target)
        values = {f: getattr(run.config, f) for f in fields}
        rows.append({"target": target, "setting": sweeps.setting_label(values), "label": run.target,
                     "source": run.source, "strategy": run.strategy, "fold": run.fold, "seed": run.seed,
                     "auc": auc_from_probs(labels, probs, average), "val_auc": kept_val_auc(run), **values})
    return pd.DataFrame(rows, columns=RUN_COLUMNS + fields), problems


def per_fold(runs: pd.DataFrame) -> pd.DataFrame:
    """Test and validation AUC per (target, setting, source, strategy, fold): the mean over seeds."""
    keys = ["target", "setting", "label", "source", "strategy", "fold"]
    return runs.groupby(keys, sort=False, as_index=False)[["auc", "val_auc"]].mean()


def settings_table(folds: pd.DataFrame, pretrained: tuple[str, ...] | None, random: str | None) -> pd.DataFrame:
    """Table 2 per setting: per target, :func:`table2` with the settings as its rows."""
    parts = []
    for target, sub in folds.groupby("target", sort=False):
        t = table2(sub.assign(target=sub["setting"])[["target", "source", "strategy", "fold", "auc"]], pretrained, random)
        parts.append(t.rename(columns={"target": "setting"}).assign(target=target))
    if not parts:
        return pd.DataFrame()
    table = pd.concat(parts, ignore_index=True)
    return table[["target", *[c for c in table.columns if c != "target"]]]


def ranking(means: pd.Series) -> str:
    """Sources by mean, best first: ``a > b = c``."""
    means = means.dropna().sort_values(ascending=False, kind="stable")
    text = ""
    for i, (source, value) in enumerate(means.items()):
        text += source if i == 0 else (" = " if np.isclose(value, prev, rtol=0, atol=1e-9) else " > ") + source
        prev = value
    return text


def tau_table(table: pd.DataFrame) -> pd.DataFrame:
    """Per target and strategy, Kendall's tau-b between the sources' mean test AUCs in every two
    settings (over the sources with a mean in both), with each setting's ranking."""
    rows = []
    for (target, strategy), sub in table.groupby(["target", "strategy"], sort=False):
        wide = sub.pivot(index="setting", columns="source", values="mean")
        order = list(dict.fromkeys(sub["setting"]))
        for a, b in itertools.combinations(order, 2):
            both = wide.loc[[a, b]].dropna(axis=1)
            n = both.shape[1]
            tau = float(kendalltau(both.loc[a], both.loc[b])[0]) if n >= 2 else math.nan
            rows.append({"target": target, "strategy": strategy, "setting_a": a, "setting_b": b, "tau": tau,
                         "sources": n, "ranking_a": ranking(wide.loc[a]), "ranking_b": ranking(wide.loc[b])})
    return pd.DataFrame(rows, columns=["target", "strategy", "setting_a", "setting_b", "tau", "sources", "ranking_a",
                                       "ranking_b"])


def pair_tests(study: Study, folds: pd.DataFrame, sources: list[str]) -> pd.DataFrame:
    """Per target, strategy, pair of sources (in ``sources`` order) and setting: the claims test of
    "a beats b" (module notes), Holm across the settings of the pair."""
    rows = []
    for (target, strategy), sub in folds.groupby(["target", "strategy"], sort=False):
        present = [s for s in sources if s in set(sub["source"])]
        for a, b in itertools.combinations(present, 2):
            family = []
            for setting, part in sub.groupby("setting", sort=False):
                pair = part[part["source"] == a].merge(part[part["source"] == b], on="fold", suffixes=("_a", "_b"))
                if pair.empty:
                    continue
                diff = 100.0 * (pair["auc_a"] - pair["auc_b"]).to_numpy(np.float64)
                ratio = fold_test_train_ratio(study, part["label"].iloc[0])
                result = stats.corrected_resampled_t(diff, ratio, bounds=(-100.0, 100.0))
                family.append({"target": target, "strategy": strategy, "source_a": a, "source_b": b,
                               "setting": setting, "difference": result.statistic, "low": result.low,
                               "high": result.high, "p_value": result.p_value, "n": result.n, "test": result.test,
                               "note": result.note})
            adjusted = stats.holm([r["p_value"] for r in family]) if family else []
            for r, p in zip(family, adjusted):
                r["p_adjusted"] = float(p)
                r["verdict"] = verdict(r["difference"], float(p), 1, r["note"])
            rows += family
    return pd.DataFrame(rows, columns=["target", "strategy", "source_a", "source_b", "setting", "difference", "low",
                                       "high", "p_value", "p_adjusted", "n", "test", "verdict", "note"])


def pair_summary(pairs: pd.DataFrame) -> pd.DataFrame:
    """Per target, strategy and pair: in how many settings a (b) is ahead, and in how many the
    test supports a (b) at alpha, as counts and fractions of the settings tested."""
    rows = []
    for (target, strategy, a, b), sub in pairs.groupby(["target", "strategy", "source_a", "source_b"], sort=False):
        d = sub["difference"].to_numpy(np.float64)
        k = int(np.isfinite(d).sum())
        counts = {"a_ahead": int((d > 0).sum()), "b_ahead": int((d < 0).sum()),
                  "a_beats_b": int((sub["verdict"] == "supported").sum()),
                  "b_beats_a": int((sub["verdict"] == "contradicted").sum())}
        rows.append({"target": target, "strategy": strategy, "source_a": a, "source_b": b, "settings": k, **counts,
                     **{f"fraction_{key}": (v / k if k else math.nan) for key, v in counts.items()}})
    return pd.DataFrame(rows)


def _listing(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def sentences(pairs: pd.DataFrame, table: pd.DataFrame) -> dict[str, str]:
    """One sentence per target: the ranking of sources is stable across its settings (every pair
    of sources in the same order in every setting, per strategy), or it reverses at the settings
    where a pair's order differs from its first setting's, with what the claims test says there."""
    out = {}
    for target, sub in table.groupby("target", sort=False):
        n = sub["setting"].nunique()
        if n < 2:
            out[target] = f"{target}: one setting only, nothing to compare."
            continue
        reversals = []
        for (strategy, a, b), rows in pairs[pairs["target"] == target].groupby(["strategy", "source_a", "source_b"],
                                                                                sort=False):
            signs = np.sign(rows["difference"].to_numpy(np.float64))
            nonzero = [s for s in signs if np.isfinite(s) and s != 0]
            if not nonzero or all(s == nonzero[0] for s in nonzero):
                continue
            first = nonzero[0]
            reference = _listing(rows[np.sign(rows["difference"]) == first]["setting"].tolist())
            flipped = rows[np.sign(rows["difference"]) == -first]
            leader, other = (a, b) if first > 0 else (b, a)
            won = [f"{a if r.verdict == 'supported' else b} at {r.setting}" for r in rows.itertuples()
                   if r.verdict in ("supported", "contradicted")]
            test = (f"the claims test (alpha {ALPHA}, Holm over settings) supports {_listing(won)}" if won
                    else f"the claims test (alpha {ALPHA}, Holm over settings) finds no difference in any setting")
            reversals.append(f"{other} ahead of {leader} ({strategy}) at {_listing(flipped['setting'].tolist())}, "
                             f"{leader} ahead at {reference}; {test}")
        if reversals:
            out[target] = f"{target}: the ranking of sources reverses across its {n} settings: " + "; ".join(reversals) + "."
        else:
            order = "; ".join(f"{strategy}: {ranking(g.groupby('source', sort=False)['mean'].mean())}"
                              for strategy, g in sub.groupby("strategy", sort=False))
            out[target] = (f"{target}: stable: every pair of sources keeps its order in all {n} settings "
                           f"({order}, by mean over settings).")
    return out


def select_by_validation(folds: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """``select: val``: per target, source and strategy, the setting with the highest mean over
    folds of the kept models' validation AUC, and its test AUC from ``table`` (Table 2 per setting).
    ``val_auc`` x100; ``settings``: how many settings were candidates."""
    rows = []
    for (target, source, strategy), sub in folds.groupby(["target", "source", "strategy"], sort=False):
        val = sub.groupby("setting", sort=False)["val_auc"].mean()  # NaN folds skipped; all-NaN: NaN
        candidates = val.dropna()
        if candidates.empty:
            rows.append({"target": target, "source": source, "strategy": strategy, "setting": "", "val_auc": math.nan,
                         "settings": 0, "note": "no validation AUC recorded in any setting"})
            continue
        chosen = candidates.index[int(np.argmax(candidates.to_numpy()))]  # the first of equal maxima
        cell = table[(table["target"] == target) & (table["setting"] == chosen) & (table["source"] == source)
                     & (table["strategy"] == strategy)]
        row = {"target": target, "source": source, "strategy": strategy, "setting": chosen,
               "val_auc": 100.0 * float(candidates[chosen]), "settings": len(candidates), "note": ""}
        if len(cell):
            row.update({k: cell.iloc[0][k] for k in ("mean", "std", "low", "high", "n")})
        rows.append(row)
    frame = pd.DataFrame(rows, columns=["target", "source", "strategy", "setting", "val_auc", "settings", "mean", "std",
                                        "low", "high", "n", "note"])
    order = {cell: i for i, cell in enumerate(dict.fromkeys(zip(table["source"], table["strategy"])))}
    targets = {t: i for i, t in enumerate(dict.fromkeys(frame["target"]))}
    rank = [(targets[r.target], order.get((r.source, r.strategy), len(order))) for r in frame.itertuples()]
    frame = frame.assign(_rank=rank).sort_values("_rank", kind="stable")
    return frame.drop(columns="_rank").reset_index(drop=True)


def setting_figures(runs: pd.DataFrame, fields: list[str], out_dir: Path) -> list[Figure]:
    """Per target and swept field with two or more values, :func:`figs.setting_figure`."""
    figures = []
    for target in dict.fromkeys(runs["target"]):
        for name in fields:
            png = figs.setting_figure(runs, target, name, fields, out_dir)
            if png is not None:
                figures.append(Figure(png, f"{target}: mean test AUC (x100) ± std over folds against {name}, per "
                                           "source and strategy (dashed: freeze); each setting is one point."))
    return figures


def sensitivity(study: Study, pretrained: tuple[str, ...], random: str | None, average: str,
                fig_dir: Path) -> Sensitivity | None:
    """The sensitivity analysis of ``study`` (module notes); ``None`` when the study has no sweep
    and no ``select: val``."""
    config = study.config if isinstance(study.config, dict) else {}
    sweep, select = config.get("sweep"), config.get("select")
    if not sweep and select != "val":
        return None
    fields = sweeps.swept_fields(sweep)
    runs, problems = setting_runs(study, fields, average)
    folds = per_fold(runs)
    table = settings_table(folds, pretrained, random)
    if table.empty:
        return Sensitivity(fields, runs, table, tau_table(pd.DataFrame(columns=["target", "strategy"])), pd.DataFrame(),
                           pd.DataFrame(), None, {}, problems=problems + ["sensitivity: no finished run with predictions"])
    order = [*pretrained, *([random] if random else [])]
    order += [s for s in dict.fromkeys(folds["source"]) if s not in order]
    pairs = pair_tests(study, folds, order)
    selected = select_by_validation(folds, table) if select == "val" else None
    figures = setting_figures(runs, fields, fig_dir) if fields else []
    return Sensitivity(fields, runs, table, tau_table(table), pairs, pair_summary(pairs), selected,
                       sentences(pairs, table), figures, problems)


def write_tables(result: Sensitivity, out_dir: Path) -> list[Path]:
    """``sensitivity_table2.csv``, ``sensitivity_tau.csv``, ``sensitivity_pairs.csv``,
    ``sensitivity_summary.csv`` and (``select: val``) ``selected.csv`` in ``out_dir``."""
    frames = {"sensitivity_table2.csv": result.table, "sensitivity_tau.csv": result.tau,
              "sensitivity_pairs.csv": result.pairs, "sensitivity_summary.csv": result.summary}
    if result.selected is not None:
        frames["selected.csv"] = result.selected
    return [write_text_atomic(Path(out_dir) / name, frame.to_csv(index=False)) for name, frame in frames.items()]


def report_html(result: Sensitivity) -> list[str]:
    """The report's section: per target its sentence, Table 2 per setting, the rankings with
    Kendall's tau, the pair counts; then the selected settings (``select: val``)."""
    parts = ["<h2>Sensitivity to training settings</h2>",
             '<p class="note">Per target: Table 2 with one row per setting (every swept value, '
             f"{html.escape(', '.join(result.fields) or 'no field swept')}); the ranking of sources per setting and "
             "strategy with Kendall's tau-b between every two settings (descriptive); and per pair of sources how "
             "many settings put each ahead, and in how many the claims test (Nadeau-Bengio corrected t over folds, "
             f"Holm over the settings) supports it at alpha {ALPHA}. The settings share folds and test images: "
             "these counts describe, they test nothing across settings. Files: analysis/sensitivity_*.csv.</p>"]
    for target, sentence in result.sentences.items():
        parts.append(f"<h3>{html.escape(target)}</h3><p>{html.escape(sentence)}</p>")
        parts.append(table2_html(result.table[result.table["target"] == target].drop(columns="target")
                                 .rename(columns={"setting": "target"})).replace("<th rowspan=2>target</th>",
                                                                                 "<th rowspan=2>setting</th>", 1))
        tau = result.tau[result.tau["target"] == target].drop(columns="target")
        if len(tau):
            parts.append(frame_html(tau, digits=2))
        summary = result.summary[result.summary["target"] == target] if len(result.summary) else result.summary
        if len(summary):
            parts.append(frame_html(summary.drop(columns="target"), digits=2))
    if result.selected is not None:
        shown = result.selected.copy()
        shown["test AUC"] = [format_cell(r.mean, r.std, r.low, r.high) if np.isfinite(r.mean) else "–"
                             for r in shown.itertuples()]
        parts.append("<h3>Selected settings (select: val)</h3>")
        parts.append('<p class="note">Per target, source and strategy, the setting with the highest mean validation '
                     "AUC (x100) of the models the runs kept, and its test AUC: mean ± std over folds [95% t interval "
                     "on the logit scale]. Test predictions play no part in the choice (docs/protocol.md). "
                     "File: analysis/selected.csv.</p>")
        parts.append(frame_html(shown[["target", "source", "strategy", "setting", "val_auc", "settings", "test AUC",
                                       "note"]], digits=1))
    return parts


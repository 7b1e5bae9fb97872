"""``analyze(study_dir)``: every table, figure and statistic of the paper for one study directory.

Writes under ``DIR/analysis/``: ``claims.csv`` (the paper's four claims as tests,
:mod:`medtransfer.analysis.claims`), ``auc.csv`` (per run, recomputed from probabilities),
``table2.csv`` and ``table2.md``, ``similarity.csv``, ``divergence.csv`` (claim 5.2's paired
differences), ``prediction_similarity.csv``, ``prediction_pairs.csv`` (every pair of fine-tuned
networks, random init included), ``gain_points.csv``, ``correlation.csv``,
``figures/*.{png,pdf,svg}``; for a study evaluated under corruptions (``medtransfer evaluate``)
``robustness.csv``, ``robustness_summary.csv``, ``mca.csv`` and a figure per target, and
``cross_target.csv`` for one evaluated on other datasets
(:mod:`medtransfer.analysis.robustness`); and ``DIR/report.html``, which opens with the claims. A
study with a ``sweep:`` (or ``select: val``) also gets its sensitivity analysis,
``sensitivity_*.csv`` and ``selected.csv`` (:mod:`medtransfer.analysis.sensitivity`).
"""

from __future__ import annotations

import time
from dataclasses import asdict, fields, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from medtransfer.analysis import figures as figs
from medtransfer.analysis.activations import ForwardLog, Network, plan_sampling
from medtransfer.analysis.claims import claims_table, fold_test_train_ratio
from medtransfer.analysis.correlation import correlation_table, gain_points
from medtransfer.analysis.divergence import FoldDivergence, combine, fold_divergence
from medtransfer.analysis.grid import IncompleteStudyError, check_grid
from medtransfer.analysis.inventory import Study, read_study, require_study_dir
from medtransfer.analysis.layerwise import COLUMNS as SIM_COLUMNS
from medtransfer.analysis.layerwise import Uncertainty, fold_similarity
from medtransfer.analysis.loading import load_network, source_conv1, stimulus_pool
from medtransfer.analysis.pairs import ModelRef, Roles, fold_pairs, init_ref, roles
from medtransfer.analysis.predictions import fine_tuned_pairs, mistake_images, prediction_table
from medtransfer.analysis.report import Figure, ReportContent, check_report_path, layerwise_findings, write_report
from medtransfer.analysis.sensitivity import report_html as sensitivity_html
from medtransfer.analysis.sensitivity import sensitivity
from medtransfer.analysis.sensitivity import write_tables as write_sensitivity
from medtransfer.analysis.robustness import (corruption_metrics, cross_target_table, mca_runs, mca_table,
                                             robustness_figure, severity_summary)
from medtransfer.analysis.tables import run_aucs
from medtransfer.analysis.transfer_depth import depth_figure, depth_table, plateau_sentence
from medtransfer.analysis.weight_distance import weight_distances, write_weight_distances
from medtransfer.console import stages
from medtransfer.atomic import write_text_atomic
from medtransfer.errors import MedtransferError
from medtransfer.models.filters import gabor_similarity
from medtransfer.models.registry import layer_shapes
from medtransfer.models.sources import backbone_of_source
from medtransfer.similarity.paired import draws_for_holm
from medtransfer.similarity.registry import get as get_measure
from medtransfer.study.analysis_settings import AnalysisSettings
from medtransfer.study.table2 import table2, write_table2
from medtransfer.tracking.mlflow_sink import log_analysis
from medtransfer.training.record import ANALYSIS_DIR, AUC_TABLE, FIGURES_DIR, REPORT_FILE, SIMILARITY_TABLE, STUDY_FILE
from medtransfer.training.run import resolve_device
from medtransfer.vocabulary import STRATEGIES

FEW_ROWS_PER_CHANNEL = 10
# the stages of one fold's layer-wise analysis, as progress lines name them
STAGE_NAMES = {"activations": "activations", "measures": "similarity, intervals and nulls",
               "divergence": "paired differences (claim 5.2)"}


def settings_for(study: Study, **overrides) -> AnalysisSettings:
    """The study's ``analysis:`` settings (if any) with non-``None`` ``overrides`` applied."""
    base = AnalysisSettings.from_mapping(study.config.get("analysis"), str(study.root / STUDY_FILE))
    return base.override(**overrides)


def layerwise_similarity(
    study: Study,
    role_map: Roles,
    settings: AnalysisSettings,
    device: torch.device,
    log: ForwardLog,
    stage=lambda name: None,  # noqa: ANN001
) -> tuple[pd.DataFrame, list[str], list[str], list[FoldDivergence]]:
    """similarity.csv's frame for every target and fold, the missing pieces, notes, and claim 5.2's
    per-fold paired differences (:func:`medtransfer.analysis.divergence.fold_divergence`).
    ``stage(name)`` is called as each fold's activations, measures and paired differences begin."""
    layers = settings.resolved_layers()
    labels = {keras: label for label, keras in layers.items()}
    frames, missing, notes = [], [], []
    divergences: list[FoldDivergence] = []
    few: dict[tuple[str, str], tuple[int, int]] = {}
    shapes_by_size: dict[tuple[int, str], dict] = {}
    inits: dict[str, Network] = {}  # initialisations are the same networks in every fold: load once

    def load(ref: ModelRef) -> Network:
        if ref.kind != "init":
            return load_network(ref, device, study.root)
        if ref.key not in inits:
            inits[ref.key] = load_network(ref, device, study.root)
        return inits[ref.key]

    for target in study.targets:
        for fold in study.folds(target):
            pairs, lacking = fold_pairs(study, target, fold, role_map)
            missing.extend(lacking)
            run = next(r for r in study.runs if r.target == target and r.fold == fold)
            try:
                pool, _ = stimulus_pool(run, settings.split)
            except MedtransferError as error:
                missing.append(f"{target} fold {fold}: no stimulus images ({error}); layer-wise similarity skipped")
                continue
            size = run.config.size

            backbone = backbone_of_source(run.load_string)  # one per target label
            if (size, backbone) not in shapes_by_size:
                shapes_by_size[(size, backbone)] = layer_shapes(size, list(layers.values()), backbone)
            plan = plan_sampling(len(pool), shapes_by_size[(size, backbone)], settings.rows, settings.channels,
                                 settings.repeats, settings.seed + 1000 * fold, settings.sampling, settings.positions)
            for name, layer in plan.layers.items():
                if layer.rows < FEW_ROWS_PER_CHANNEL * len(layer.channels[0]):
                    key, seen = (target, labels[name]), few.get((target, labels[name]), (layer.rows, 0))
                    few[key] = (min(seen[0], layer.rows), len(layer.channels[0]))
            kept: dict = {}
            frame, problems = fold_similarity(
                target, fold, pairs, pool, plan,
                load,
                labels, settings.measures, settings.batch_size, device, log,
                Uncertainty(settings.ci, settings.resamples, settings.null_permutations(len(layers)), settings.seed,
                            settings.ci_method),
                keep=kept, stage=lambda name: stage(f"{target} fold {fold}: {STAGE_NAMES[name]}"),
            )
            # claim 5.2's family (Holm within a target): strategies x layers x measures; enough
            # resamples that its smallest p-value, 1 / (draws + 1), can pass that correction
            stage(f"{target} fold {fold}: {STAGE_NAMES['divergence']}")
            draws = max(settings.resamples,
                        draws_for_holm(len(STRATEGIES) * len(plan.layers) * len(settings.measures)))
            divergences += fold_divergence(target, fold, pairs, kept, plan, labels, settings.measures,
                                           draws, settings.seed + 6007 * fold, settings.ci_method)
            del kept
            missing.extend(problems)
            frames.append(frame)
    for (target, label), (n_rows, n_channels) in few.items():
        notes.append(f"{target}, {label}: as few as {n_rows} rows for {n_channels} channels (the stimulus pool is small); "
                     "CCA is biased towards 1 when rows are few per channel - read this layer with care")
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=SIM_COLUMNS)
    return frame, missing, notes, divergences


def conv1_filters(study: Study, role_map: Roles) -> tuple[dict[str, tuple[np.ndarray, bool]], pd.DataFrame, list[str]]:
    """Each pretrained source's conv1 kernels ``(64, 3, 7, 7)`` and whether its input is BGR
    (Figure 4), with a table of how Gabor-like they are, and what could not be loaded."""
    out, rows, missing = {}, [], []
    for source in role_map.pretrained:
        run = next(r for r in study.runs if r.source == source)
        try:
            weight, mode = source_conv1(init_ref(run), study.root)
        except MedtransferError as error:
            missing.append(f"conv1 filters of {source}: could not load ({error})")
            continue
        out[source] = (weight, mode == "caffe")
        best = gabor_similarity(weight)
        rows.append({"source": source, "filters": len(best), "gabor_similarity_mean": float(best.mean()),
                     "gabor_similarity_median": float(np.median(best)), "first36_mean": float(best[:36].mean())})
    return out, pd.DataFrame(rows), missing


def analyze(
    study_dir: str | Path,
    *,
    layers: list[str] | None = None,
    repeats: int | None = None,
    rows: int | None = None,
    channels: int | None = None,
    measures: list[str] | None = None,
    split: str | None = None,
    threads: int | None = None,
    device: str | None = None,
    formats: list[str] | None = None,
    partial: bool = False,
    timings: dict[str, float] | None = None,
    **settings: object,
) -> Path:
    """Analyse a study directory and write ``DIR/report.html`` (returned) and ``DIR/analysis/``.

    ``None`` settings come from ``study.yaml``'s ``analysis:`` section, else the paper's
    (layers conv1, block1-4; 20000 rows; 64 channels; 5 repeats; CCA and CKA). ``layers=["all"]``
    takes the 16 block outputs and conv1. ``split`` picks the stimulus pool of each fold (``test``,
    or ``all`` images of the target for tiny datasets). ``threads`` sets torch's CPU threads for the
    analysis (restored afterwards). ``device`` defaults to CUDA when available. ``formats``: figure
    files besides PNG (``pdf``, ``svg``; default both).

    First the runs on disk are checked against the study's grid (:func:`check_grid`): unless it is
    complete and verified, nothing is written and :class:`IncompleteStudyError` names every
    missing, unfinished, damaged, mismatched, foreign run and changed source. ``partial`` writes
    the tables from the usable runs instead; their caption, ``table2.md`` and the report name the
    incomplete cells.

    ``settings``: any other field of :class:`AnalysisSettings` (``resamples``, ``permutations``,
    ``ci``, ...); ``None`` keeps the study's value; ``ci=0`` asks for no interval.

    Each stage is reported on stderr as it ends (:func:`medtransfer.console.stages`); ``timings``,
    if given, receives the seconds of each stage (stage name -> seconds).
    """
    started = time.perf_counter()
    check_report_path(Path(study_dir) / REPORT_FILE)  # before any work: a file of the user's is never replaced
    require_study_dir(study_dir)
    grid = check_grid(study_dir)
    if not grid.complete and not partial:
        raise IncompleteStudyError(grid.refusal())
    study = read_study(study_dir, skip=grid.excluded, verified=grid.verified)
    study.grid = grid
    unknown = sorted(set(settings) - {f.name for f in fields(AnalysisSettings)})
    if unknown:
        raise TypeError(f"analyze() got unknown analysis setting(s) {unknown}")
    no_ci = settings.get("ci") == 0
    if no_ci:
        settings = {k: v for k, v in settings.items() if k != "ci"}
    settings = settings_for(study, layers=layers, repeats=repeats, rows=rows, channels=channels, measures=measures,
                            split=split, threads=threads, **settings)
    if no_ci:
        settings = replace(settings, ci=None)
    previous_threads = torch.get_num_threads()
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    try:
        with stages("analyze") as stage:
            report = _analyze(study, settings, device, started, formats, stage)
            stage("tracking")
            log_analysis(study.root)  # a tracked study's MLflow parent run gets Table 2 and the report
        if timings is not None:
            timings.update(stage.seconds)
    finally:
        torch.set_num_threads(previous_threads)
    return report


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    """``frame`` as a CSV without its index, written atomically (a full disk names ``path`` and
    leaves the previous file whole)."""
    write_text_atomic(path, frame.to_csv(index=False))


def _analyze(study: Study, settings: AnalysisSettings, device: str | None, started: float,
             formats: list[str] | None = None, stage=lambda name: None) -> Path:  # noqa: ANN001
    """:func:`analyze` once the settings are resolved; ``stage(name)`` is called as each stage begins."""
    dev = resolve_device(device)
    out = study.root / ANALYSIS_DIR
    fig_dir = out / FIGURES_DIR
    out.mkdir(parents=True, exist_ok=True)
    role_map = roles(study, settings.sources)
    figs.configure(formats, [*role_map.pretrained, *([role_map.random] if role_map.random else [])])
    grid = study.grid
    missing = [f"incomplete study (--partial): {line}" for line in grid.problems()] if grid is not None else []
    cells = grid.incomplete_cells() if grid is not None else []
    caption = (f"Incomplete cells (--partial; the runs they lack are listed under 'What was missing'): "
               f"{', '.join(cells)}." if cells else "")
    listed = {r for r, _ in grid.unfinished} if grid is not None else set()
    missing += [f"run {rid} has not finished (no DONE marker)" for rid in study.incomplete if rid not in listed]
    if study.unverified:
        missing.append(f"{len(study.unverified)} finished run(s) carry no digests (written by an older medtransfer), "
                       f"so their files could not be checked, e.g. {study.unverified[0]}")
    notes: list[str] = []

    stage("Table 2 (AUC from predictions.csv)")
    aucs, auc_problems = run_aucs(study, settings.auc_average)
    missing.extend(auc_problems)
    _write_csv(aucs, out / AUC_TABLE)
    t2 = table2(aucs, role_map.pretrained, role_map.random)
    write_table2(t2, out, caption)
    swept = sensitivity(study, role_map.pretrained, role_map.random, settings.auc_average, fig_dir)
    if swept is not None:  # a study with a sweep (or select: val): Table 2 per setting, rankings, selection
        write_sensitivity(swept, out)
        missing.extend(swept.problems)

    stage("prediction similarity")
    images, lacking = mistake_images(study, role_map)
    missing.extend(lacking)
    pred = prediction_table(images, settings.bootstrap, settings.bootstrap, settings.seed)
    _write_csv(pred, out / "prediction_similarity.csv")
    pairs, lacking = fine_tuned_pairs(study, settings.bootstrap, settings.bootstrap, settings.seed)
    missing.extend(lacking)
    _write_csv(pairs, out / "prediction_pairs.csv")

    log = ForwardLog()
    sim, lacking, sim_notes, fold_divergences = layerwise_similarity(study, role_map, settings, dev, log, stage)
    missing.extend(lacking)
    notes.extend(sim_notes)
    _write_csv(sim, out / SIMILARITY_TABLE)
    divergence = combine(fold_divergences)
    _write_csv(divergence, out / "divergence.csv")
    distances, lacking = weight_distances(study)
    missing.extend(lacking)
    write_weight_distances(distances, out)
    depths = depth_table(study, aucs, role_map.random)
    if not depths.empty:
        _write_csv(depths, out / "transfer_depth.csv")

    stage("correlation and claims")
    # Figure 6 is the paper's sources' figure: the transfer runs have their own (transfer depth)
    points = gain_points(sim[~sim["source"].isin(role_map.transfers)] if not sim.empty else sim, aucs, role_map.random)
    stats = correlation_table(points, settings.bootstrap, settings.seed, settings.correlation_points)
    _write_csv(points, out / "gain_points.csv")
    _write_csv(stats, out / "correlation.csv")
    if role_map.random is None:
        missing.append("no random-init runs: no AUC gain over random init (Figure 6)")

    robustness, lacking = corruption_metrics(study, settings.auc_average)  # `medtransfer evaluate`'s files
    missing.extend(lacking)
    robustness_summary, robustness_runs = severity_summary(robustness), mca_runs(robustness)
    mca = mca_table(robustness_runs, lambda target: fold_test_train_ratio(study, target))
    if not robustness.empty:
        _write_csv(robustness, out / "robustness.csv")
        _write_csv(robustness_summary, out / "robustness_summary.csv")
        _write_csv(mca, out / "mca.csv")
    cross, lacking = cross_target_table(study, settings.auc_average)
    missing.extend(lacking)
    if not cross.empty:
        _write_csv(cross, out / "cross_target.csv")

    claims, lacking = claims_table(study, role_map, aucs, images, divergence, stats, settings.bootstrap,
                                   settings.bootstrap, settings.seed, robustness=robustness_runs)
    missing.extend(lacking)
    _write_csv(claims, out / "claims.csv")

    stage("figures")
    layer_labels = list(settings.resolved_layers())
    figures: list[Figure] = list(swept.figures) if swept is not None else []
    for target in study.targets:
        for m in settings.measures:
            png = figs.layerwise_figure(sim, target, m, fig_dir, layer_labels)
            if png is not None:
                figures.append(Figure(png, f"Layer-wise {m.upper()} similarity on {target} (paper Figures 3, 7-12): "
                                      "(a) each network before vs after fine-tuning; (b) between networks and random baselines. "
                                      "Mean ± std over folds; shaded: 95% stimulus interval (image bootstrap, channels and "
                                      "positions held); dotted: 95% draws interval (with the channel and position draw); "
                                      "grey: permutation null. "
                                      + layerwise_findings(sim, target, m, get_measure(m).higher_is_similar)))
    filters, gabor, lacking = conv1_filters(study, role_map)
    missing.extend(lacking)
    png = figs.filters_figure(filters, fig_dir)
    if png is not None:
        figures.append(Figure(png, "First 36 conv1 filters of each pretrained source and reference Gabor filters (paper Figure 4)."))
    png = figs.prediction_figure(pred, fig_dir)
    if png is not None:
        figures.append(Figure(png, "Prediction similarity P(err_a = err_b) on the test folds (paper Figure 5): fine-tuned "
                              "models, the linear probes before fine-tuning, and the independent-mistakes baseline."))
    png = figs.gain_figure(points, stats, fig_dir, layer_labels)
    if png is not None:
        figures.append(Figure(png, "Relative AUC gain over random init vs CCA between each fine-tuned model and its "
                              "initialisation (paper Figure 6); r = Pearson, ρ = Spearman, both strategies pooled."))

    depth_sentences = [plateau_sentence(depths, target) for target in dict.fromkeys(depths["target"])]
    for target in dict.fromkeys(depths["target"]):
        png = depth_figure(depths, target, fig_dir)
        if png is not None:
            figures.append(Figure(png, f"Transfer depth on {target} (Raghu et al. 2019): no-freeze test AUC x100 "
                                  "against the stages taken from the source, from random init to full transfer, "
                                  "and the re-drawn inits (Mean-Var, shuffled) beside them; mean and 95% t interval "
                                  "over folds on the logit scale. " + plateau_sentence(depths, target)))

    for target in study.targets:
        png = robustness_figure(robustness_summary, target, fig_dir)
        if png is not None:
            figures.append(Figure(png, f"Test AUC on {target} under image corruptions at severities 1-5 (0: clean; "
                                  "medtransfer evaluate, no retraining): mean over folds, band: logit-t 95% interval "
                                  "over folds; solid no-freeze, dashed freeze. Corruptions and severities: "
                                  "medtransfer.data.corruptions."))
    robustness_sections = [] if mca.empty else [
        ("Robustness to image corruptions: mean corruption AUC (mCA)",
         "Per target, source and strategy over folds: clean AUC, mCA (mean AUC over every corruption and severity "
         "1-5 that all runs of the target were evaluated under; logit-t 95% interval over folds) and the relative "
         "drop 100 (clean - mCA) / clean with its Nadeau-Bengio corrected t interval (unit: the fold). Per corruption "
         "and severity: analysis/robustness_summary.csv (AUC and ECE), per run: analysis/robustness.csv.", mca)]
    if not cross.empty:
        robustness_sections.append((
            "Cross-target evaluation: the fine-tuned networks on other datasets with the same label set",
            "Per network target, source and strategy, the AUC on every image of the other dataset (the study's "
            "evaluate: targets, classes mapped to the networks'), mean over folds with a logit-t 95% interval over "
            "folds, beside the mean AUC on the own test parts (own_auc).", cross))

    stage("report")
    passes = pd.Series(log.passes)
    notes.append(
        f"{len(passes)} network-fold activation passes, each network run at most "
        f"{int(passes.max()) if len(passes) else 0} time(s) per fold over {sum(log.images.values())} images in all; "
        f"analysis took {time.perf_counter() - started:.1f} s on {dev}."
    )
    summary = figs.summary_with_uncertainty(sim) if not sim.empty else pd.DataFrame()
    pred_summary = (
        pred.groupby(["target", "comparison", "strategy"], sort=False)[["observed", "baseline"]]
        .agg(["mean", "std", "count"]).reset_index() if not pred.empty else pd.DataFrame()
    )
    if not pred_summary.empty:
        pred_summary.columns = [" ".join(c).strip() if isinstance(c, tuple) else c for c in pred_summary.columns]
    content = ReportContent(
        title=f"medtransfer analysis: {study.config.get('name', study.root.name)}",
        config_text=study.config_text,
        settings={**asdict(settings), "permutations per layer-wise score": settings.null_permutations(len(layer_labels)),
                  "device": str(dev), "roles": f"pretrained {list(role_map.pretrained)}, random {role_map.random}"},
        table2=t2,
        claims=claims,
        table2_caption=caption,
        sensitivity_html=sensitivity_html(swept) if swept is not None else [],
        figures=figures,
        sections=[
            *([("Transfer depth: where the AUC stops rising",
                " ".join(depth_sentences) + " A curve stops rising at the shallowest depth whose 95% interval holds "
                "the mean AUC of every deeper depth (analysis/transfer_depth.csv; unit: the fold).", depths)]
              if not depths.empty else []),
            ("Weight-space distance to the initialisation, per stage",
             "||W_ft - W_0||_F / ||W_0||_F over each stage's parameters, mean over folds "
             "(analysis/weight_distance.csv has every run).",
             distances.groupby(["target", "source", "strategy", "stage"], sort=False)["distance"].mean()
             .unstack("stage").reset_index() if not distances.empty else distances),
            ("Correlation of AUC gain with CCA(fine-tuned, init) (Figure 6)",
             "Pearson r and Spearman ρ across targets with two-sided permutation p-values (exact up to 10 points) and "
             "Fisher-z 95% intervals from 10 points on; the unit column says what a point is (by default one target: "
             "its means over folds). strategy 'all' averages both strategies per target.", stats),
            ("Prediction similarity (Figure 5), over folds",
             "observed = P(err_a = err_b); baseline = a1·a2 + (1−a1)(1−a2) with each model's own accuracy; "
             "prediction_similarity.csv has per fold the excess over the baseline with its image-bootstrap interval "
             "and a permutation p-value (b's correctness permuted within class).", pred_summary),
            ("Prediction similarity of every pair of fine-tuned networks",
             "Per target, each pair of fine-tuned networks (random init included), pooled over folds: observed "
             "P(err_a = err_b), the independent baseline, and excess = observed - baseline with its 95% image-bootstrap "
             "interval (stratified by fold) and one-sided permutation p-value (b's correctness permuted within fold "
             "and class), Holm-adjusted over the target's pairs (p_holm). Unit: the test image; the models are fixed.",
             pairs),
            ("conv1 filters: resemblance to Gabor filters (Figure 4)",
             "Per filter, the best absolute cosine similarity with a bank of 36 Gabor filters (7x7, 6 orientations, "
             "3 wavelengths, 2 phases), after removing each filter's mean; summarised per source.", gabor),
            ("Layer-wise similarity, over folds", "mean and std (ddof=0) over folds of the per-fold means over repeats; "
             "the rest are fold means (similarity.csv has them per fold): ci_low/ci_high, the stimulus interval "
             "(image bootstrap: fresh stimulus images, the drawn channels and positions held; it covers the "
             "estimate's mean at this size, not a population value); draws_ci_low/draws_ci_high, the draws "
             "interval (the stimulus interval widened by the channel and position draw, for scores on "
             "independently drawn channels); null_mean/null_p95 and p_value, the permutation null (images "
             "mismatched); adjusted, the score corrected for chance, (mean - null_mean) / (best - null_mean), "
             "for comparing layers read at different geometries (docs/protocol.md).", summary),
            ("Per-run test AUC recomputed from predictions.csv", "", aucs),
            *robustness_sections,
        ],
        missing=missing,
        notes=notes,
    )
    return write_report(content, study.root / REPORT_FILE)

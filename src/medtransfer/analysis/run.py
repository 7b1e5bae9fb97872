"""``analyze(study_dir)``: every table, figure and statistic of the paper for one study directory.

Writes under ``DIR/analysis/``: ``claims.csv`` (the paper's four claims as tests,
:mod:`medtransfer.analysis.claims`), ``auc.csv`` (per run, recomputed from probabilities),
``table2.csv`` and ``table2.md``, ``similarity.csv``, ``divergence.csv`` (claim 5.2's paired
differences), ``prediction_similarity.csv``, ``gain_points.csv``, ``correlation.csv``,
``figures/*.{png,pdf,svg}``; and ``DIR/report.html``, which opens with the claims.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from medtransfer.analysis import figures as figs
from medtransfer.analysis.activations import ForwardLog, Network, plan_sampling
from medtransfer.analysis.claims import claims_table
from medtransfer.analysis.correlation import correlation_table, gain_points
from medtransfer.analysis.divergence import FoldDivergence, combine, fold_divergence
from medtransfer.analysis.grid import IncompleteStudyError, check_grid
from medtransfer.analysis.inventory import Study, read_study, require_study_dir
from medtransfer.analysis.layerwise import COLUMNS as SIM_COLUMNS
from medtransfer.analysis.layerwise import Uncertainty, fold_similarity
from medtransfer.analysis.loading import load_network, source_conv1, stimulus_pool
from medtransfer.analysis.pairs import ModelRef, Roles, fold_pairs, init_ref, roles
from medtransfer.analysis.predictions import mistake_images, prediction_table
from medtransfer.analysis.report import Figure, ReportContent, check_report_path, layerwise_findings, write_report
from medtransfer.analysis.tables import run_aucs
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
from medtransfer.training.record import ANALYSIS_DIR, FIGURES_DIR, REPORT_FILE, STUDY_FILE
from medtransfer.training.run import resolve_device
from medtransfer.vocabulary import STRATEGIES

FEW_ROWS_PER_CHANNEL = 10


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
) -> tuple[pd.DataFrame, list[str], list[str], list[FoldDivergence]]:
    """similarity.csv's frame for every target and fold, the missing pieces, notes, and claim 5.2's
    per-fold paired differences (:func:`medtransfer.analysis.divergence.fold_divergence`)."""
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
                Uncertainty(settings.ci, settings.resamples, settings.permutations, settings.seed, settings.ci_method),
                keep=kept,
            )
            # claim 5.2's family (Holm within a target): strategies x layers x measures; enough
            # resamples that its smallest p-value, 1 / (draws + 1), can pass that correction
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
    """
    started = time.perf_counter()
    check_report_path(Path(study_dir) / REPORT_FILE)  # before any work: a file of the user's is never replaced
    require_study_dir(study_dir)
    grid = check_grid(study_dir)
    if not grid.complete and not partial:
        raise IncompleteStudyError(grid.refusal())
    study = read_study(study_dir, skip=grid.excluded, verified=grid.verified)
    study.grid = grid
    settings = settings_for(study, layers=layers, repeats=repeats, rows=rows, channels=channels, measures=measures,
                            split=split, threads=threads)
    previous_threads = torch.get_num_threads()
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    try:
        report = _analyze(study, settings, device, started, formats)
    finally:
        torch.set_num_threads(previous_threads)
    log_analysis(study.root)  # a tracked study's MLflow parent run gets Table 2 and the report
    return report


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    """``frame`` as a CSV without its index, written atomically (a full disk names ``path`` and
    leaves the previous file whole)."""
    write_text_atomic(path, frame.to_csv(index=False))


def _analyze(study: Study, settings: AnalysisSettings, device: str | None, started: float,
             formats: list[str] | None = None) -> Path:
    """:func:`analyze` once the settings are resolved."""
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

    aucs, auc_problems = run_aucs(study, settings.auc_average)
    missing.extend(auc_problems)
    _write_csv(aucs, out / "auc.csv")
    t2 = table2(aucs, role_map.pretrained, role_map.random)
    write_table2(t2, out, caption)

    images, lacking = mistake_images(study, role_map)
    missing.extend(lacking)
    pred = prediction_table(images, settings.bootstrap, settings.bootstrap, settings.seed)
    _write_csv(pred, out / "prediction_similarity.csv")

    log = ForwardLog()
    sim, lacking, sim_notes, fold_divergences = layerwise_similarity(study, role_map, settings, dev, log)
    missing.extend(lacking)
    notes.extend(sim_notes)
    _write_csv(sim, out / "similarity.csv")
    divergence = combine(fold_divergences)
    _write_csv(divergence, out / "divergence.csv")

    points = gain_points(sim, aucs, role_map.random)
    stats = correlation_table(points, settings.bootstrap, settings.seed, settings.correlation_points)
    _write_csv(points, out / "gain_points.csv")
    _write_csv(stats, out / "correlation.csv")
    if role_map.random is None:
        missing.append("no random-init runs: no AUC gain over random init (Figure 6)")

    claims, lacking = claims_table(study, role_map, aucs, images, divergence, stats, settings.bootstrap,
                                   settings.bootstrap, settings.seed)
    missing.extend(lacking)
    _write_csv(claims, out / "claims.csv")

    layer_labels = list(settings.resolved_layers())
    figures: list[Figure] = []
    for target in study.targets:
        for m in settings.measures:
            png = figs.layerwise_figure(sim, target, m, fig_dir, layer_labels)
            if png is not None:
                figures.append(Figure(png, f"Layer-wise {m.upper()} similarity on {target} (paper Figures 3, 7-12): "
                                      "(a) each network before vs after fine-tuning; (b) between networks and random baselines. "
                                      "Mean ± std over folds; shaded: 95% image-bootstrap interval; grey: permutation null. "
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
        settings={**asdict(settings), "device": str(dev), "roles": f"pretrained {list(role_map.pretrained)}, random {role_map.random}"},
        table2=t2,
        claims=claims,
        table2_caption=caption,
        figures=figures,
        sections=[
            ("Correlation of AUC gain with CCA(fine-tuned, init) (Figure 6)",
             "Pearson r and Spearman ρ across targets with two-sided permutation p-values (exact up to 10 points) and "
             "Fisher-z 95% intervals from 10 points on; the unit column says what a point is (by default one target: "
             "its means over folds). strategy 'all' averages both strategies per target.", stats),
            ("Prediction similarity (Figure 5), over folds",
             "observed = P(err_a = err_b); baseline = a1·a2 + (1−a1)(1−a2) with each model's own accuracy; "
             "prediction_similarity.csv has per fold the excess over the baseline with its image-bootstrap interval "
             "and a permutation p-value (b's correctness permuted within class).", pred_summary),
            ("conv1 filters: resemblance to Gabor filters (Figure 4)",
             "Per filter, the best absolute cosine similarity with a bank of 36 Gabor filters (7x7, 6 orientations, "
             "3 wavelengths, 2 phases), after removing each filter's mean; summarised per source.", gabor),
            ("Layer-wise similarity, over folds", "mean and std (ddof=0) over folds of the per-fold means over repeats; "
             "ci_low/ci_high, null_mean/null_p95 and p_value: fold means of the image-bootstrap interval and "
             "permutation null (similarity.csv has them per fold).", summary),
            ("Per-run test AUC recomputed from predictions.csv", "", aucs),
        ],
        missing=missing,
        notes=notes,
    )
    return write_report(content, study.root / REPORT_FILE)

"""The study's leakage check, run by ``run_study`` before any training.

Two kinds of overlap inflate a study's numbers: a pretraining set (a source's ``pretrain:``
dataset) holding images of a target (e.g. BreastMNIST, made from BUSI's images, as the source of
a BUSI study), and a target whose folds put copies of one image on both sides of a test part
(one copy in ``test``, another in ``train`` or ``val``). Both are found by the image hashes of
:mod:`medtransfer.data.leakage` (identical pixels, or near duplicates), which are made with the
pixel caches the runs read, so that the check decodes nothing the training would not.

Every overlapping pair is written to ``DIR/leakage.csv`` (a header alone when there is none).
The study's ``leakage`` setting says what a finding does: ``warn`` (the default) prints one
warning per finding with counts and examples, ``error`` refuses the study (``DataError``) before
any run starts, ``off`` skips the check.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from medtransfer.data import PixelCache, read_folds
from medtransfer.data.cache import default_cache_dir
from medtransfer.data.leakage import (MIN_CORRELATION, NEAR_DISTANCE, ImageHashes, dataset_hashes, fold_overlaps,
                                      overlaps)
from medtransfer.console import write_line
from medtransfer.errors import DataError
from medtransfer.study.config import StudyConfig
from medtransfer.study.datasets import StudyDataset
from medtransfer.study.store import write_atomic
from medtransfer.training.config import RunConfig

LEAKAGE_FILE = "leakage.csv"
COLUMNS = ("check", "dataset_a", "image_a", "dataset_b", "image_b", "match", "distance", "correlation", "fold",
           "split_a", "split_b")
EXAMPLES = 3  # pairs named in a warning


@dataclass
class Finding:
    """One overlap: ``what`` says between which datasets (or which fold), ``pairs`` the rows of
    ``leakage.csv``, ``images`` how many images of the target (or of the test part) are affected."""

    what: str
    pairs: pd.DataFrame
    images: int

    def message(self, out: Path) -> str:
        exact = int((self.pairs["match"] == "exact").sum())
        near = len(self.pairs) - exact
        examples = "; ".join(f"{a} = {b}" for a, b in self.pairs[["image_a", "image_b"]].head(EXAMPLES).itertuples(
            index=False))
        more = f" and {len(self.pairs) - EXAMPLES} more" if len(self.pairs) > EXAMPLES else ""
        return (f"leakage: {self.what}: {self.images} image{'s' if self.images != 1 else ''} in common "
                f"({exact} pair{'s' if exact != 1 else ''} of identical pixels, {near} near duplicate"
                f"{'s' if near != 1 else ''}), e.g. {examples}{more}; every pair: {out / LEAKAGE_FILE}")


def _hashes(dataset: StudyDataset) -> ImageHashes:
    """The hashes of a dataset's images; the pixel cache its runs read is built on the way."""
    config = dataset.config
    PixelCache.build(dataset.manifest, config.size, interpolation=config.interpolation, cache_dir=config.cache_dir)
    return dataset_hashes(dataset.manifest, Path(config.cache_dir) if config.cache_dir else default_cache_dir())


def _folds_of(config: RunConfig, out: Path) -> pd.DataFrame:
    path = Path(config.folds_file)
    return read_folds(path if path.is_absolute() else out / path)


def find_leakage(datasets: list[StudyDataset], out: Path) -> list[Finding]:
    """Every overlap between each pretraining set and each target, and across each target's test
    parts (the folds files must exist: ``prepare_folds`` first)."""
    hashes: dict[str, ImageHashes] = {}

    def of(dataset: StudyDataset) -> ImageHashes:
        key = json.dumps([dataset.config.target, dataset.config.root, dataset.config.target_options],
                         sort_keys=True, default=str)
        if key not in hashes:  # a dataset that is both target and pretraining set is hashed once
            hashes[key] = _hashes(dataset)
        return hashes[key]

    targets = [d for d in datasets if not d.pretraining]
    findings: list[Finding] = []
    for source in (d for d in datasets if d.pretraining):
        for target in targets:
            pairs = overlaps(of(source), of(target))
            if len(pairs):
                pairs = pairs.assign(check="pretraining", dataset_a=source.label, dataset_b=target.label)
                findings.append(Finding(f"{source.label} ({source.config.target}) and {target.label} "
                                        f"({target.config.target})", pairs, pairs["image_b"].nunique()))
    for target in targets:
        if not target.config.folds_file:
            continue
        leaks = fold_overlaps(overlaps(of(target)), _folds_of(target.config, out))
        for fold, pairs in leaks.groupby("fold", sort=True):
            test = pd.concat([pairs.loc[pairs["split_a"] == "test", "image_a"],
                              pairs.loc[pairs["split_b"] == "test", "image_b"]])
            pairs = pairs.assign(check="folds", dataset_a=target.label, dataset_b=target.label)
            findings.append(Finding(f"{target.label}, fold {fold}: test images with a copy in train or val",
                                    pairs, test.nunique()))
    return findings


def record(findings: list[Finding], out: Path) -> Path:
    """Write every pair to ``out/leakage.csv`` (a header alone when there is none)."""
    frames = [f.pairs for f in findings]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    table = table.reindex(columns=list(COLUMNS))
    write_atomic(out / LEAKAGE_FILE, table.to_csv(index=False))
    return out / LEAKAGE_FILE


def check_leakage(study: StudyConfig, datasets: list[StudyDataset], out: Path) -> list[Finding]:
    """Run the check the study's ``leakage`` setting asks for: record every pair in
    ``DIR/leakage.csv``, print a warning per finding on stderr (``warn``) or raise ``DataError``
    naming them all (``error``). Returns the findings (none with ``off``)."""
    if study.leakage == "off":
        return []
    findings = find_leakage(datasets, Path(out))
    record(findings, Path(out))
    if not findings:
        return []
    criterion = (f"identical pixels, or near duplicates: perceptual hashes at most {NEAR_DISTANCE} of 63 bits "
                 f"apart and 32x32 grey thumbnails correlated at {MIN_CORRELATION} or more")
    lines = [f.message(Path(out)) for f in findings]
    if study.leakage == "error":
        raise DataError("\n".join([*lines, f"(same image: {criterion}.) The study refuses to run with "
                                   "'leakage: error'; remove the shared images from one of the datasets, or set "
                                   "'leakage: warn' in the study file to run anyway."]))
    for line in lines:
        write_line(sys.stderr, f"warning: {line}")
    write_line(sys.stderr, f"warning: (same image: {criterion}.) Numbers measured on images the network has seen "
               "are inflated; set 'leakage: error' in the study file to refuse such a study, 'leakage: off' to "
               "skip the check.")
    return findings

"""MedMNIST npz files: the official split as one fold, and damaged files refused by name."""

import zipfile

import numpy as np
import pandas as pd
import pytest

from medtransfer.data import load_manifest
from medtransfer.data.folds import FoldSpec
from medtransfer.data.registry import dataset_folds, single_fold
from medtransfer.errors import DataError

from .helpers import truncate

SIZES = {"train": 12, "val": 4, "test": 8}


def _npz(path, **replace):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in SIZES.items():
        arrays[f"{split}_images"] = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(n, 1).astype(np.uint8)
    arrays.update(replace)
    np.savez_compressed(path, **arrays)
    return path


def test_official_split_is_one_fold(tmp_path):
    path = _npz(tmp_path / "breastmnist.npz")
    m = load_manifest("medmnist", path, split="official")
    assert single_fold("medmnist", {"split": "official"}) and not single_fold("medmnist", {})
    folds = dataset_folds(m, FoldSpec(5, (0.8, 0.05, 0.15), 0))
    assert set(folds["fold"]) == {0} and len(folds) == len(m) == 24
    counts = folds["split"].value_counts().to_dict()
    assert counts == SIZES
    assert folds.loc[folds["split"] == "test", "image_id"].str.startswith("test_").all()
    # k-fold (the default) cuts its own folds over all images
    kfold = dataset_folds(load_manifest("medmnist", path), FoldSpec(4, (0.75, 0.1, 0.15), 0))
    assert set(kfold["fold"]) == {0, 1, 2, 3}


def test_official_split_needs_every_part(tmp_path):
    path = _npz(tmp_path / "breastmnist.npz")
    with pytest.raises(DataError, match="split='official'"):
        load_manifest("medmnist", path, split="official", splits=["train", "test"])
    with pytest.raises(DataError, match="split='nope'"):
        load_manifest("medmnist", path, split="nope")


@pytest.mark.parametrize("labels, match", [
    (np.array([[0.5], [1.5]] * 6), r"train_labels holds 12 non-integer value\(s\), e\.g\. 0\.5 at row 0"),
    (np.array([[0.0], [np.nan]] * 6), r"train_labels holds 6 non-integer"),
    (-np.ones((12, 1), int), r"train_labels holds negative label"),
])
def test_bad_labels_named(tmp_path, labels, match):
    path = _npz(tmp_path / "x.npz", train_labels=labels)
    with pytest.raises(DataError, match=match) as info:
        load_manifest("medmnist", path)
    assert str(path) in str(info.value)


def test_integral_float_labels_are_accepted(tmp_path):
    path = _npz(tmp_path / "x.npz", train_labels=(np.arange(12) % 2).astype(float).reshape(12, 1))
    assert load_manifest("medmnist", path).class_counts() == {"0": 12, "1": 12}


def test_truncated_file_named(tmp_path):
    path = truncate(_npz(tmp_path / "breastmnist.npz"), 0.6)
    with pytest.raises(DataError, match="breastmnist.npz") as info:
        load_manifest("medmnist", path)
    assert "truncated" in str(info.value) or "not a readable npz" in str(info.value)


def test_damaged_member_named(tmp_path):
    """A zip whose directory is intact but one member's bytes are corrupt: the array is named."""
    path = _npz(tmp_path / "breastmnist.npz")
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    damaged = tmp_path / "damaged.npz"
    with zipfile.ZipFile(damaged, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    raw = bytearray(damaged.read_bytes())
    with zipfile.ZipFile(damaged) as z:
        info = z.getinfo("val_images.npy")
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    raw[start + 10: start + 40] = bytes(30)
    damaged.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"damaged.npz: val_images cannot be read"):
        load_manifest("medmnist", damaged)


def test_empty_split_named(tmp_path):
    path = _npz(tmp_path / "x.npz", test_images=np.zeros((0, 28, 28), np.uint8), test_labels=np.zeros((0, 1), int))
    with pytest.raises(DataError, match=r"x.npz: test_images and test_labels are empty"):
        load_manifest("medmnist", path)
    assert len(load_manifest("medmnist", path, splits=["train", "val"])) == 16
    with pytest.raises(DataError, match=r"splits=\[\]"):
        load_manifest("medmnist", path, splits=[])


def test_object_arrays_named(tmp_path):
    objects = np.empty(12, dtype=object)
    objects[:] = [[0]] * 12
    path = _npz(tmp_path / "x.npz", train_labels=objects)
    with pytest.raises(DataError, match=r"x.npz: train_labels is an object array"):
        load_manifest("medmnist", path)


def test_study_with_official_split_trains_and_tests_on_the_official_parts(tmp_path):
    from medtransfer.study.config import StudyConfig
    from medtransfer.study.expand import expand
    from medtransfer.study.runner import run_study

    path = _npz(tmp_path / "breastmnist.npz")
    study = StudyConfig.parse({
        "name": "official",
        "targets": [{"name": "breastmnist", "dataset": "medmnist", "root": str(path),
                     "options": {"split": "official"}, "size": 32, "batch_size": 8}],
        "sources": [{"name": "random"}],
        "strategies": ["no-freeze"],
        "k_folds": 5,
        "training": {"epochs": 1, "lr": 1e-4, "threads": 1, "checkpoint_every_s": 0,
                     "cache_dir": str(tmp_path / "cache")},
    })
    assert [c.fold for c in expand(study)] == [0]
    out = tmp_path / "study"
    report = run_study(study, out)
    assert report.total == 1 and report.finished == 1 and not report.failed
    run = out / "runs" / "breastmnist" / "random-no-freeze" / "fold0"
    predictions = pd.read_csv(run / "predictions.csv")
    assert sorted(predictions["image_id"]) == [f"test_{i:06d}" for i in range(SIZES["test"])]
    folds = pd.read_csv(run / "folds.csv")
    assert folds.groupby("split").size().to_dict() == SIZES
    from medtransfer.models.checkpoint import checkpoint_meta

    meta = checkpoint_meta(run / "checkpoints" / "best.pt")
    assert meta["size"] == 32 and meta["interpolation"] == "nearest" and meta["normalization"] == "caffe"


def test_collapsed_stage_warning(capsys):
    from medtransfer.study.runner import collapsed_stages, warn_collapsed_stages
    from medtransfer.training.config import RunConfig

    assert collapsed_stages(28) == ["block4"] and collapsed_stages(32) == ["block4"]
    assert collapsed_stages(33) == [] and collapsed_stages(16) == ["block3", "block4"]
    configs = [RunConfig(target="medmnist", size=28, fold=f) for f in range(3)] + [RunConfig(target="chest", size=64)]
    warn_collapsed_stages(configs)
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "medmnist at 28 px" in err and "block4" in err

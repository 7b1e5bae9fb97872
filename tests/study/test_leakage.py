"""The study's leakage check: a pretraining set holding target images, and copies across a
fold's test part, are found before any run starts; a clean study (the demo) finds nothing."""

import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medtransfer.data.datasets.synthetic import generate
from medtransfer.errors import DataError
from medtransfer.study.config import StudyConfig, shipped_config
from medtransfer.study.datasets import study_datasets
from medtransfer.study.expand import expand
from medtransfer.study.leakage import LEAKAGE_FILE, check_leakage, find_leakage
from medtransfer.study.runner import prepare_folds, run_study


def _save(pixels, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def _jpeg(pixels, size):
    buffer = io.BytesIO()
    Image.fromarray(pixels).resize((size, size), Image.BILINEAR).save(buffer, format="JPEG", quality=70)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


@pytest.fixture
def leaky(tmp_path):
    """A target of 40 images and a pretraining set of 60 other images plus 5 of the target's
    (three PNG copies, one BMP, one JPEG re-encoded at 48 px)."""
    images, labels, _ = generate(n_patients=40, images_per_patient=1, size=64, seed=0, task="target")
    for i, (pixels, label) in enumerate(zip(images, labels)):
        _save(pixels, tmp_path / "target" / f"c{label}" / f"t{i:02d}.png")
    other, other_labels, _ = generate(n_patients=60, images_per_patient=1, size=64, seed=7, task="source-b",
                                      n_classes=4)
    for i, (pixels, label) in enumerate(zip(other, other_labels)):
        _save(pixels, tmp_path / "pre" / f"k{label}" / f"p{i:02d}.png")
    for k, i in enumerate([1, 5, 9]):
        _save(images[i], tmp_path / "pre" / "k0" / f"copy{k}.png")
    _save(images[20], tmp_path / "pre" / "k1" / "copy.bmp")
    _save(_jpeg(images[33], 48), tmp_path / "pre" / "k2" / "lossy.jpg")
    shared = sorted(f"c{labels[i]}/t{i:02d}.png" for i in (1, 5, 9, 20, 33))

    def study(**overrides):
        data = {"name": "leaky",
                "targets": [{"name": "mine", "dataset": "folder", "root": str(tmp_path / "target"), "size": 32}],
                "sources": [{"name": "pre", "pretrain": {"dataset": "folder", "root": str(tmp_path / "pre"),
                                                          "size": 32, "epochs": 1}},
                            {"name": "random"}],
                "k_folds": 3, "training": {"epochs": 1, "threads": 1, "cache_dir": str(tmp_path / "cache"),
                                           "split_fractions": [0.6666667, 0.0833333, 0.25]},
                **overrides}
        return StudyConfig.parse(data)

    return study, shared


def test_five_shared_images_found_and_recorded(leaky, tmp_path, capsys):
    make, shared = leaky
    study, out = make(), tmp_path / "study"
    out.mkdir()
    prepare_folds(study, out)
    findings = check_leakage(study, study_datasets(study, expand(study, out), out), out)
    assert len(findings) == 1 and findings[0].images == 5
    assert sorted(findings[0].pairs["image_b"]) == shared
    err = capsys.readouterr().err
    assert "source pre's pretraining set (folder) and target mine (folder): 5 images in common" in err
    assert "4 pairs of identical pixels, 1 near duplicate" in err and "leakage: error" in err
    table = pd.read_csv(out / LEAKAGE_FILE)
    assert len(table) == 5 and set(table["check"]) == {"pretraining"}
    assert sorted(table["image_b"]) == shared


def test_leakage_error_refuses_the_study_before_any_run(leaky, tmp_path):
    make, _ = leaky
    out = tmp_path / "study"
    with pytest.raises(DataError, match=r"(?s)5 images in common.*refuses to run with 'leakage: error'"):
        run_study(make(leakage="error"), out)
    assert (out / LEAKAGE_FILE).is_file()
    assert not (out / "runs").exists() and not (out / "sources").exists()


def test_leakage_off_checks_nothing(leaky, tmp_path):
    make, _ = leaky
    study, out = make(leakage="off"), tmp_path / "study"
    out.mkdir()
    prepare_folds(study, out)
    assert check_leakage(study, study_datasets(study, expand(study, out), out), out) == []
    assert not (out / LEAKAGE_FILE).exists()


def test_copies_across_a_test_part(tmp_path):
    """Two files of one image (other names, so other groups), one in a fold's test part and
    one in its training part: found for that fold only."""
    images, labels, _ = generate(n_patients=24, images_per_patient=1, size=48, seed=2, task="target")
    names = [f"c{label}/t{i:02d}.png" for i, label in enumerate(labels)]
    for name, pixels in zip(names, images):
        _save(pixels, tmp_path / "data" / name)
    copy = f"c{labels[0]}/copy.png"
    _save(images[0], tmp_path / "data" / copy)
    ids = [*names, copy]
    test = {0: set(ids[0:8]), 1: set(ids[8:16]) | {copy}, 2: set(ids[16:24])}
    rows = [(i, f, "test" if i in test[f] else ("val" if i == ids[(8 * f + 9) % 24] else "train"))
            for f in range(3) for i in ids]
    pd.DataFrame(rows, columns=["image_id", "fold", "split"]).to_csv(tmp_path / "folds.csv", index=False)
    study = StudyConfig.parse({
        "targets": [{"name": "mine", "dataset": "folder", "root": str(tmp_path / "data"), "size": 32,
                     "folds_file": str(tmp_path / "folds.csv")}],
        "sources": [{"name": "random"}], "k_folds": 3,
        "training": {"cache_dir": str(tmp_path / "cache"), "split_fractions": [0.6666667, 0.0833333, 0.25]}})
    findings = find_leakage(study_datasets(study, expand(study, tmp_path), tmp_path), tmp_path)
    # fold 0: the original is tested, its copy trained on; fold 1: the reverse; fold 2: both train
    assert [(f.what, f.images) for f in findings] == [
        ("target mine, fold 0: test images with a copy in train or val", 1),
        ("target mine, fold 1: test images with a copy in train or val", 1)]
    assert set(findings[0].pairs["match"]) == {"exact"}


def test_the_demo_study_has_no_leakage(tmp_path, monkeypatch):
    """The demo's two synthetic pretraining sets (2000 images) and its target: no false positive.
    Its pixel cache (``cache_dir: cache``, relative to the study directory) and the hashes made
    with it are where the runs read them, not in the working directory."""
    from medtransfer.demo import demo_study

    study, out = demo_study(), tmp_path / "study"
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    out.mkdir()
    prepare_folds(study, out)
    assert find_leakage(study_datasets(study, expand(study, out), out), out) == []
    assert list((tmp_path / "elsewhere").iterdir()) == []
    assert len(list((out / "cache" / "hashes").glob("synthetic-*.npz"))) == 3


def test_every_missing_root_named_before_anything_is_written(tmp_path):
    study = StudyConfig.parse({
        "targets": [{"name": "one", "dataset": "folder", "root": str(tmp_path / "nowhere")},
                    {"name": "two", "dataset": "breast"},
                    {"name": "fine", "dataset": "synthetic", "options": {"n_patients": 8}}],
        "sources": [{"name": "pre", "pretrain": {"dataset": "chest", "root": str(tmp_path / "gone")}}]})
    out = tmp_path / "study"
    with pytest.raises(DataError) as caught:
        run_study(study, out)
    message = str(caught.value)
    assert message.startswith("3 of the study's 4 datasets cannot be loaded")
    for part in ("target one (folder)", "nowhere", "target two (breast)", "--root",
                 "source pre's pretraining set (chest)", "gone"):
        assert part in message
    assert not out.exists()

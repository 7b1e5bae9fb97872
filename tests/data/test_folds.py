"""Folds: grouped, stratified, 80/5/15, seeded; CSV round trip; the authors' split CSVs."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from medtransfer.data import (
    import_author_splits,
    load_manifest,
    make_folds,
    read_folds,
    write_folds,
)
from medtransfer.data.folds import _grouped_blocks, validate_folds
from medtransfer.errors import ConfigError, DataError

from .helpers import manifest_from


@st.composite
def grouped_data(draw):
    n_groups = draw(st.integers(12, 60))
    n_classes = draw(st.integers(2, 4))
    sizes = draw(st.lists(st.integers(1, 5), min_size=n_groups, max_size=n_groups))
    group_label = draw(st.lists(st.integers(0, n_classes - 1), min_size=n_groups, max_size=n_groups))
    groups = np.repeat(np.arange(n_groups), sizes)
    labels = np.repeat(group_label, sizes)
    # some groups mix classes (e.g. a patient with a normal and an abnormal image)
    flip = draw(st.lists(st.booleans(), min_size=len(labels), max_size=len(labels)))
    labels = np.where(np.array(flip) & (np.arange(len(labels)) % 7 == 0), (labels + 1) % n_classes, labels)
    labels[:n_classes] = np.arange(n_classes)  # every class present
    return labels, groups, draw(st.integers(0, 1000))


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(grouped_data())
def test_fold_properties(data):
    labels, groups, seed = data
    m = manifest_from(labels, groups)
    holders = pd.Series(groups).groupby(labels).nunique()
    if holders.min() < 5:  # a class too small to stratify 5 folds is refused, naming it and its count
        with pytest.raises(DataError, match="too few to stratify 5 folds") as refused:
            make_folds(m, k=5, seed=seed)
        for c, g in holders.items():
            named = f"class 'c{c}' has {int((labels == c).sum())} image(s) in {g} group(s)" in str(refused.value)
            assert named == (g < 5), str(refused.value)
        return
    folds = make_folds(m, k=5, seed=seed)
    validate_folds(folds, m)  # ids known, one split per image and fold, groups unsplit, tests disjoint
    assert len(folds) == 5 * len(m)
    assert sorted(folds["fold"].unique()) == [0, 1, 2, 3, 4]
    held = folds[folds["split"] != "train"]
    # every image is held out (val or test) in exactly one fold
    assert held["image_id"].value_counts().reindex(m.image_ids).eq(1).all()
    group_of = dict(zip(m.image_ids, m.groups))
    for f in range(5):
        part = folds[folds["fold"] == f]
        for a in ("train", "val", "test"):
            assert (part["split"] == a).any(), f"fold {f} has no {a} images"
        spans = part.assign(g=part["image_id"].map(group_of)).groupby("g")["split"].nunique()
        assert spans.max() == 1
    assert make_folds(m, k=5, seed=seed).equals(folds)  # seeded


def test_fractions_and_stratification_on_singletons():
    rng = np.random.default_rng(0)
    labels = (rng.random(2000) < 0.3).astype(int)
    m = manifest_from(labels, np.arange(2000))
    folds = make_folds(m, seed=1)
    share = folds.groupby("split").size() / len(folds)
    assert share["train"] == pytest.approx(0.80, abs=0.002)
    assert share["val"] == pytest.approx(0.05, abs=0.005)
    assert share["test"] == pytest.approx(0.15, abs=0.005)
    # class balance in every test fold close to the whole
    lab = dict(zip(m.image_ids, labels))
    for f in range(5):
        test = folds[(folds["fold"] == f) & (folds["split"] == "test")]["image_id"].map(lab)
        assert test.mean() == pytest.approx(labels.mean(), abs=0.02)
    assert not make_folds(m, seed=2).equals(folds)


def test_grouped_fractions_on_synthetic():
    m = load_manifest("synthetic", None, n_patients=200, images_per_patient=3, size=8)
    folds = make_folds(m)
    share = folds.groupby("split").size() / len(folds)
    assert share["test"] == pytest.approx(0.15, abs=0.02)
    assert share["val"] == pytest.approx(0.05, abs=0.02)


def test_bad_settings():
    m = manifest_from([0, 1] * 4, range(8))
    with pytest.raises(ConfigError, match="train fraction"):
        make_folds(m, fractions=(0.7, 0.1, 0.2))
    with pytest.raises(DataError, match="groups"):
        make_folds(m, k=5)


def test_csv_round_trip_and_validation(tmp_path):
    m = manifest_from([0, 1] * 30, np.arange(60) // 2)
    folds = make_folds(m, seed=3)
    path = write_folds(folds, tmp_path / "folds" / "toy.csv")
    back = read_folds(path, m)
    pd.testing.assert_frame_equal(back, folds)
    broken = folds.copy()
    broken.loc[broken.index[0], "split"] = "test" if broken["split"].iat[0] != "test" else "train"
    write_folds(broken, tmp_path / "bad.csv")
    with pytest.raises(DataError, match="group"):
        read_folds(tmp_path / "bad.csv", m)
    other = manifest_from([0, 1] * 10, range(20))
    with pytest.raises(DataError, match="not in dataset"):
        read_folds(path, other.subset(range(5)))


def _author_files(directory, rows_by_fold):
    directory.mkdir(parents=True, exist_ok=True)
    for k, splits in rows_by_fold.items():
        for split, rows in splits.items():
            pd.DataFrame(rows, columns=["path", "class", "pid"]).to_csv(directory / f"{split}_fold{k}.csv")


def test_import_author_splits(tmp_path):
    refs = [f"/data/chest_xray/train/{c}/IM-{i:04d}-0001.jpeg" for i, c in enumerate(["NORMAL", "PNEUMONIA"] * 5)]
    refs[9] = "/data/chest_xray/test/PNEUMONIA/IM-0001-0001.jpeg"  # same file name as row 1, other folder
    m = replace(manifest_from([0, 1] * 5, range(10), refs=refs), classes=["normal", "pneumonia"])
    home = "/home/author/data/chest_xray"
    rows = {
        1: {"train": [(f"{home}/train/NORMAL/IM-0000-0001.jpeg", "NORMAL", "0"),
                      (f"{home}/train/NORMAL/IM-0000-0001.jpeg", "NORMAL", "0")],  # duplicate row
            "val": [(f"{home}/test/PNEUMONIA/IM-0001-0001.jpeg", "PNEUMONIA", "9")],
            "test": [(f"{home}/train/PNEUMONIA/IM-0001-0001.jpeg", "PNEUMONIA", "1")]},
        2: {"train": [(f"{home}/train/PNEUMONIA/IM-0001-0001.jpeg", "PNEUMONIA", "1")],
            "val": [("C:\\data\\chest_xray\\train\\NORMAL\\IM-0002-0001.jpeg", "NORMAL", "2")],
            "test": [(f"{home}/train/NORMAL/IM-0000-0001.jpeg", "NORMAL", "0")]},
    }
    _author_files(tmp_path / "splits", rows)
    folds = import_author_splits(tmp_path / "splits", m)
    got = {(r.fold, r.split): sorted(folds[(folds.fold == r.fold) & (folds.split == r.split)].image_id)
           for r in folds.itertuples()}
    assert got[(0, "train")] == ["img00000"]
    assert got[(0, "val")] == ["img00009"]  # matched by the parent folders
    assert got[(0, "test")] == ["img00001"]
    assert got[(1, "val")] == ["img00002"]  # Windows path
    assert got[(1, "test")] == ["img00000"]

    rows[2]["test"].append(("/x/IM-9999-0001.jpeg", "NORMAL", "5"))
    _author_files(tmp_path / "bad", rows)
    with pytest.raises(DataError, match=r"(?s)test_fold2.csv: 1 of 2 rows.*IM-9999"):
        import_author_splits(tmp_path / "bad", m)

    rows[2]["test"].pop()
    rows[2]["val"].append((f"{home}/train/PNEUMONIA/IM-0001-0001.jpeg", "PNEUMONIA", "1"))
    _author_files(tmp_path / "leak", rows)
    with pytest.raises(DataError, match="img00001.*fold 1"):
        import_author_splits(tmp_path / "leak", m)
    fixed = import_author_splits(tmp_path / "leak", m, conflicts="test-wins")
    assert fixed[(fixed.fold == 1) & (fixed.image_id == "img00001")]["split"].tolist() == ["val"]
    with pytest.raises(DataError, match="no files"):
        import_author_splits(tmp_path, m)


def _one_fold(directory, train, val, test, columns=("path", "class")):
    directory.mkdir(parents=True, exist_ok=True)
    for split, rows in (("train", train), ("val", val), ("test", test)):
        pd.DataFrame(rows, columns=list(columns)).to_csv(directory / f"{split}_fold1.csv")
    return directory


def test_author_classes_are_checked_against_our_labels(tmp_path):
    refs = [f"/d/{c}/{i}.png" for i, c in enumerate(["benign", "malignant"] * 4)]
    m = replace(manifest_from([0, 1] * 4, range(8), refs=refs), classes=["benign", "malignant"])
    rows = [(f"../../data/breast/{c}/{i}.png", c.upper() if i % 3 else c) for i, c in
            enumerate(["benign", "malignant"] * 4)]  # names in any case
    ok = _one_fold(tmp_path / "ok", rows[:4], rows[4:6], rows[6:])
    assert len(import_author_splits(ok, m)) == 8

    flipped = list(rows)
    flipped[5] = (flipped[5][0], "benign")  # image 5 is malignant here
    bad = _one_fold(tmp_path / "flip", rows[:4], flipped[4:6], rows[6:])
    with pytest.raises(DataError, match=r"(?s)val_fold1\.csv: the authors' class disagrees.*1 of 2 images.*"
                                        r"line 3 '\.\./\.\./data/breast/malignant/5\.png'.*authors' class 'benign', "
                                        r"ours 'malignant'.*--no-check-labels"):
        import_author_splits(bad, m)
    assert len(import_author_splits(bad, m, check_labels=False)) == 8  # imported unchecked on request

    many = [(p, "malignant" if c.lower() == "benign" else "benign") for p, c in rows]  # every label flipped
    wrong = _one_fold(tmp_path / "many", many, rows[4:6], rows[6:])
    with pytest.raises(DataError, match=r"(?s)train_fold1\.csv.*8 of 8 images") as error:
        import_author_splits(wrong, m)
    assert str(error.value).count("\n  line ") == 5 and "\n  ... and 3 more\n" in str(error.value)

    unknown = _one_fold(tmp_path / "unknown", rows[:4], [(rows[4][0], "cancer"), (rows[5][0], None)], rows[6:])
    with pytest.raises(DataError, match=r"val_fold1\.csv: class values 'cancer', \(empty\) cannot be mapped to "
                                        r"the classes \['benign', 'malignant'\]"):
        import_author_splits(unknown, m)

    no_class = _one_fold(tmp_path / "noclass", [(p,) for p, _ in rows[:4]], [(p,) for p, _ in rows[4:6]],
                         [(p,) for p, _ in rows[6:]], columns=("path",))
    with pytest.raises(DataError, match=r"train_fold1\.csv: no 'class' column"):
        import_author_splits(no_class, m)
    assert len(import_author_splits(no_class, m, check_labels=False)) == 8


def test_author_class_aliases_indices_and_duplicated_rows(tmp_path):
    refs = [f"/d/{i}.png" for i in range(6)]
    pcam = replace(manifest_from([0, 1, 0, 1, 0, 1], range(6), name="pcam", refs=refs), classes=["normal", "tumor"])
    yes_no = [(f"x/{i}.png", "yes" if i % 2 else "no") for i in range(6)]
    assert len(import_author_splits(_one_fold(tmp_path / "pcam", yes_no[:4], yes_no[4:5], yes_no[5:]), pcam)) == 6
    indices = [(f"x/{i}.png", f"{i % 2}.0" if i < 3 else str(i % 2)) for i in range(6)]  # 0/1 and 0.0/1.0
    assert len(import_author_splits(_one_fold(tmp_path / "idx", indices[:4], indices[4:5], indices[5:]), pcam)) == 6
    too_big = [(p, "2") if i == 5 else (p, c) for i, (p, c) in enumerate(indices)]
    with pytest.raises(DataError, match="class values '2' cannot be mapped.*index 0..1"):
        import_author_splits(_one_fold(tmp_path / "big", too_big[:4], too_big[4:5], too_big[5:]), pcam)

    # CBIS-DDSM: rows are abnormalities; an image with a BENIGN and a MALIGNANT row is malignant for us
    mammo = replace(manifest_from([0, 1, 0, 1, 0, 1], range(6), name="mammograms", refs=refs),
                    classes=["benign", "malignant"])
    rows = [("a/0.png", "BENIGN_WITHOUT_CALLBACK"), ("a/1.png", "BENIGN"), ("a/1.png", "MALIGNANT"),
            ("a/2.png", "BENIGN"), ("a/3.png", "MALIGNANT")]
    assert len(import_author_splits(_one_fold(tmp_path / "mammo", rows, [("a/4.png", "BENIGN")],
                                              [("a/5.png", "MALIGNANT")]), mammo)) == 6
    rows[1:3] = [("a/1.png", "BENIGN"), ("a/1.png", "BENIGN")]  # no row of image 1 says malignant
    with pytest.raises(DataError, match=r"(?s)1 of 4 images:\n  line 3 'a/1.png' \(image img00001\): authors' "
                                        r"class 'BENIGN', ours 'malignant'\n\(a different"):
        import_author_splits(_one_fold(tmp_path / "mammo2", rows, [("a/4.png", "BENIGN")],
                                       [("a/5.png", "MALIGNANT")]), mammo)


def test_one_large_group_does_not_fill_a_fold_alone():
    # found by test_fold_properties: 12 groups, one of 3 images; StratifiedGroupKFold put it alone in a fold
    # (these labels: block 0 gets one group from StratifiedGroupKFold, as the original [0, 1] + [0] * 12
    # did, whose single image of class 1 is now refused as too small to stratify)
    labels = np.array([0, 0, 0, 0, 1, 1, 0, 1, 1, 0, 1, 1, 0, 0])
    groups = np.array(list(range(12)) + [11, 11])
    blocks = _grouped_blocks(labels, groups, 5, 0)
    assert min(len(np.unique(groups[blocks == f])) for f in range(5)) == 1  # the case the fix is for
    m = manifest_from(labels, groups)
    folds = make_folds(m, k=5, seed=0)
    validate_folds(folds, m)
    for f in range(5):
        assert {"train", "val", "test"} <= set(folds.loc[folds["fold"] == f, "split"])


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(grouped_data())
def test_a_smaller_train_fraction_trains_each_fold_on_whole_groups_of_the_other_blocks(data):
    labels, groups, seed = data
    m = manifest_from(labels, groups)
    try:
        full = make_folds(m, k=3, fractions=(2 / 3, 1 / 18, 5 / 18), seed=seed)
    except DataError:
        assume(False)  # a class too small to stratify 3 folds is refused (test_fold_properties)
    sub = make_folds(m, k=3, fractions=(1 / 6, 1 / 18, 5 / 18), seed=seed)
    validate_folds(sub, m)
    # the held-out parts are those of the full folds; the rest of each fold trains in part, the
    # remaining images are "excluded" from that fold
    held = [t[t["split"].isin(["val", "test"])].reset_index(drop=True) for t in (full, sub)]
    pd.testing.assert_frame_equal(held[0], held[1])
    group_of = pd.Series(m.groups, index=m.image_ids)
    for f in range(3):
        trained_full = set(full.loc[(full["fold"] == f) & (full["split"] == "train"), "image_id"])
        trained = set(sub.loc[(sub["fold"] == f) & (sub["split"] == "train"), "image_id"])
        assert trained and trained < trained_full
        left_out = trained_full - trained
        # whole groups: no group has images both trained on and left out
        assert not set(group_of[list(trained)]) & set(group_of[list(left_out)])
    assert make_folds(m, k=3, fractions=(1 / 6, 1 / 18, 5 / 18), seed=seed).equals(sub)  # seeded


def test_a_smaller_train_fraction_keeps_its_share_and_the_class_balance():
    rng = np.random.default_rng(0)
    labels = (rng.random(1800) < 0.3).astype(int)
    m = manifest_from(labels, np.arange(1800))
    folds = make_folds(m, k=3, fractions=(1 / 6, 1 / 18, 5 / 18), seed=1)
    share = folds.groupby(["fold", "split"]).size().unstack() / len(m)
    assert np.allclose(share["train"], 1 / 6, atol=0.002) and np.allclose(share["test"], 5 / 18, atol=0.002)
    lab = pd.Series(labels, index=m.image_ids)
    for f in range(3):
        train = folds[(folds["fold"] == f) & (folds["split"] == "train")]["image_id"]
        assert lab[train].mean() == pytest.approx(labels.mean(), abs=0.02)


@pytest.mark.parametrize("fractions, why", [
    ((0.7, 0.1, 0.2), "train fraction 0.7 with k=5"),  # validation + test is not the held-out 1/k
    ((0.8, 0.1, 0.15), "sum to at most 1"),
    ((0.9, 0.05, 0.05), "train fraction 0.9 with k=5"),  # more than the other k-1 blocks
])
def test_fractions_that_cannot_cut_folds_are_refused(fractions, why):
    m = manifest_from([0, 1] * 20, range(40))
    with pytest.raises(ConfigError, match=why):
        make_folds(m, fractions=fractions)

"""Loaders of image-file datasets on miniature raw trees in the official layouts."""

import pandas as pd
import pytest

from medtransfer.data import load_manifest
from medtransfer.errors import DataError

from .helpers import truncate, write_image


# ---------------------------------------------------------------- chest (Kermany)
def _chest_tree(root):
    base = root / "chest_xray"
    files = {
        "train/NORMAL": ["IM-0115-0001.jpeg", "IM-0115-0002.jpeg", "NORMAL2-IM-0115-0001.jpeg"],
        "train/PNEUMONIA": ["person1_bacteria_1.jpeg", "person1_virus_6.jpeg", "person22_virus_1.jpeg"],
        "val/NORMAL": ["IM-0200-0001.jpeg"],
        "val/PNEUMONIA": ["person1_bacteria_2.jpeg"],
        "test/NORMAL": ["IM-0115-0001.jpeg"],
        "test/PNEUMONIA": ["person1_virus_1.jpeg"],
    }
    for i, (folder, names) in enumerate(files.items()):
        for j, name in enumerate(names):
            write_image(base / folder / name.replace(".jpeg", ".png"), seed=10 * i + j,
                        mode="L" if j % 2 else "RGB").rename(base / folder / name)
    # Kaggle junk: resource forks, .DS_Store, nested duplicate, __MACOSX
    (base / "train/NORMAL/._IM-0115-0001.jpeg").write_bytes(b"\x00\x05\x16\x07junk")
    (base / "train/NORMAL/.DS_Store").write_bytes(b"junk")
    write_image(base / "chest_xray/train/NORMAL/IM-9999-0001.png")
    write_image(base / "__MACOSX/chest_xray/train/NORMAL/._IM-0115-0001.png")
    return base


def test_chest(tmp_path):
    _chest_tree(tmp_path)
    for root in (tmp_path, tmp_path / "chest_xray"):
        m = load_manifest("chest", root)
        assert m.class_counts() == {"normal": 5, "pneumonia": 5}
        assert not m.skipped
    groups = dict(zip(m.image_ids, m.groups))
    assert groups["train/NORMAL/IM-0115-0001.jpeg"] == groups["train/NORMAL/IM-0115-0002.jpeg"] == "IM-0115"
    assert groups["train/NORMAL/NORMAL2-IM-0115-0001.jpeg"] == "NORMAL2-IM-0115"
    assert groups["test/NORMAL/IM-0115-0001.jpeg"] == "test/IM-0115"
    assert groups["val/PNEUMONIA/person1_bacteria_2.jpeg"] == "person1"  # train and val share numbering
    assert m.frame["group"].nunique() == 7  # IM-0115, NORMAL2-IM-0115, IM-0200, person1, person22, test/x2
    assert m.read_image(0).shape == (16, 20, 3)


def test_chest_truncated_image_named_and_skippable(tmp_path):
    base = _chest_tree(tmp_path)
    bad = truncate(base / "train/PNEUMONIA/person22_virus_1.jpeg", 0.4)
    with pytest.raises(DataError, match="person22_virus_1.jpeg"):
        load_manifest("chest", tmp_path, verify=True)
    m = load_manifest("chest", tmp_path, verify=True, skip_bad=True)
    assert len(m) == 9 and [s.path for s in m.skipped] == [str(bad)]
    assert "truncated" in m.skipped[0].reason


# ---------------------------------------------------------------- breast (BUSI)
def _busi_tree(root):
    base = root / "Dataset_BUSI_with_GT"
    for k, (folder, n) in enumerate((("benign", 3), ("malignant", 2), ("normal", 2))):
        for i in range(1, n + 1):
            write_image(base / folder / f"{folder} ({i}).png", seed=10 * k + i)  # no image in two classes
            write_image(base / folder / f"{folder} ({i})_mask.png", value=0)
        write_image(base / folder / f"{folder} (1)_mask_1.png", value=0)
    return base


def test_breast_rules(tmp_path):
    _busi_tree(tmp_path)
    m = load_manifest("breast", tmp_path)
    assert m.classes == ["benign", "malignant"]
    assert m.class_counts() == {"benign": 5, "malignant": 2}  # normal -> benign (paper)
    assert m.frame["group"].nunique() == 7 and not m.skipped
    m = load_manifest("breast", tmp_path, normal="exclude")
    assert m.class_counts() == {"benign": 3, "malignant": 2}
    assert len(m.skipped) == 2 and not any(s.problem for s in m.skipped)
    m = load_manifest("breast", tmp_path, normal="class")
    assert m.class_counts() == {"benign": 3, "malignant": 2, "normal": 2}
    with pytest.raises(DataError, match="normal="):
        load_manifest("breast", tmp_path, normal="maybe")


# ---------------------------------------------------------------- thyroid (DDTI)
def _ddti_xml(case, tirads, marks=(1,), truncated_svg=False):
    svg = '[{"points": [{"x": 1, "y": 2}' + ("" if truncated_svg else "]}]")
    mark = "".join(f"<mark><image>{k}</image><svg>{svg}</svg></mark>" for k in marks)
    return (f'<?xml version="1.0" encoding="UTF-8"?><case><number>{case}</number><age>50</age><sex>F</sex>'
            f"<composition>solid</composition><echogenicity>hypo</echogenicity><margins>x</margins>"
            f"<calcifications>none</calcifications><tirads>{tirads}</tirads><reportbacaf/><reporteco/>{mark}</case>")


def _ddti_tree(root, extra=None):
    cases = {"1": ("2", [1]), "10": ("4a", [1, 2]), "11": ("5", [1]), "2": ("", [1, 2]),
             "197": ("4b", [1]), "3": ("3", [1])}
    cases.update(extra or {})
    for case, (tirads, images) in cases.items():
        (root / f"{case}.xml").parent.mkdir(parents=True, exist_ok=True)
        (root / f"{case}.xml").write_text(_ddti_xml(case, tirads, images, truncated_svg=case == "197"))
        for k in images:
            write_image(root / f"{case}_{k}.jpg", seed=int(case) + k)
    return root


def test_thyroid_rules(tmp_path):
    root = _ddti_tree(tmp_path / "ddti")
    m = load_manifest("thyroid", root)
    assert m.class_counts() == {"benign": 4, "malignant": 4}  # empty tirads -> benign
    groups = dict(zip(m.image_ids, m.groups))
    assert groups["10_1.jpg"] == groups["10_2.jpg"] == "case10" and groups["1_1.jpg"] == "case1"
    assert m.frame["group"].nunique() == 6
    m = load_manifest("thyroid", root, empty_tirads="exclude")
    assert m.class_counts() == {"benign": 2, "malignant": 4}
    assert sorted(s.path.rsplit("/", 1)[1] for s in m.skipped) == ["2_1.jpg", "2_2.jpg"]


def test_thyroid_problems(tmp_path):
    root = _ddti_tree(tmp_path / "ddti", extra={"7": ("6", [1])})
    write_image(root / "99_1.jpg")  # no XML
    (root / "50.xml").write_text(_ddti_xml("50", "3", []))  # XML without images
    with pytest.raises(DataError) as info:
        load_manifest("thyroid", root)
    message = str(info.value)
    assert "7.xml: unknown TI-RADS value '6'" in message
    assert "99_1.jpg: no 99.xml" in message
    assert "50.xml: no images" in message
    m = load_manifest("thyroid", root, skip_bad=True)
    assert len(m) == 8 and len([s for s in m.skipped if s.problem]) == 3


# ---------------------------------------------------------------- isic
def _isic_tree(root, groupings=True):
    images = root / "ISIC2018_Task3_Training_Input"
    classes = ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
    labels = {"ISIC_0000001": "NV", "ISIC_0000002": "NV", "ISIC_0000003": "MEL", "ISIC_0000004": "DF",
              "ISIC_0000005": "VASC"}
    rows = []
    for i, (image, label) in enumerate(labels.items()):
        write_image(images / f"{image}.jpg", seed=i)
        rows.append([image] + ["1.0" if c == label else "0.0" for c in classes])
    (images / "ATTRIBUTION.txt").write_text("x")
    (images / "LICENSE.txt").write_text("x")
    gt = root / "ISIC2018_Task3_Training_GroundTruth" / "ISIC2018_Task3_Training_GroundTruth.csv"
    gt.parent.mkdir(parents=True)
    pd.DataFrame(rows, columns=["image", *classes]).to_csv(gt, index=False)
    if groupings:
        pd.DataFrame({"image": list(labels), "lesion_id": ["L1", "L1", "L2", "L3", "L4"],
                      "diagnosis_confirm_type": "histo"}).to_csv(
            root / "ISIC2018_Task3_Training_LesionGroupings.csv", index=False)
    return gt


def test_isic(tmp_path):
    _isic_tree(tmp_path)
    m = load_manifest("isic", tmp_path)
    counts = m.class_counts()
    assert counts["NV"] == 2 and counts["MEL"] == 1 and counts["DF"] == 1 and counts["VASC"] == 1
    assert sum(counts.values()) == 5 and m.frame["group"].nunique() == 4
    assert all(not s.problem for s in m.skipped) and len(m.skipped) == 2  # the two .txt files
    assert load_manifest("isic", tmp_path, lesion_groups=False).frame["group"].nunique() == 5


def test_isic_bad_rows(tmp_path):
    gt = _isic_tree(tmp_path, groupings=False)
    table = pd.read_csv(gt, dtype=str)
    table.loc[0, "MEL"] = "1.0"  # two ones
    table.to_csv(gt, index=False)
    (tmp_path / "ISIC2018_Task3_Training_Input" / "ISIC_0000005.jpg").unlink()
    with pytest.raises(DataError, match=r"(?s)2 classes marked 1.*ISIC_0000005.jpg: listed"):
        load_manifest("isic", tmp_path)
    m = load_manifest("isic", tmp_path, skip_bad=True)
    assert len(m) == 3


# ---------------------------------------------------------------- folder and csv
def test_folder(tmp_path):
    for cls, n in (("cats", 2), ("dogs", 3)):
        for i in range(n):
            write_image(tmp_path / cls / f"patient{i % 2}" / f"{i}.png", seed=i)
    (tmp_path / "dogs" / "notes.txt").write_text("hello")
    m = load_manifest("folder", tmp_path)
    assert m.class_counts() == {"cats": 2, "dogs": 3} and m.frame["group"].nunique() == 5
    assert [s.path.endswith("notes.txt") for s in m.skipped] == [True]
    m = load_manifest("folder", tmp_path, group_pattern=r"^([^/]+/patient\d+)/")
    assert m.frame["group"].nunique() == 4


def test_csv(tmp_path):
    for i in range(4):
        write_image(tmp_path / "img" / f"{i}.png", seed=i)
    (tmp_path / "list.csv").write_text(
        "path,label,group\nimg/0.png,sick,p1\nimg/1.png,well,p1\nimg/2.png,sick,p2\nimg/2.png,sick,p2\n"
        f"{tmp_path}/img/3.png,well,\n")
    m = load_manifest("csv", tmp_path / "list.csv")
    assert m.classes == ["sick", "well"] and m.class_counts() == {"sick": 2, "well": 2}
    assert sorted(m.groups) == sorted(["p1", "p1", "p2", f"{tmp_path}/img/3.png"])
    (tmp_path / "bad.csv").write_text("path,label\nimg/0.png,1\nimg/0.png,0\nimg/9.png,1\nimg/1.png,0\n")
    with pytest.raises(DataError, match=r"(?s)conflicting labels '1'.*'0'.*9.png.*not found"):
        load_manifest("csv", tmp_path / "bad.csv")
    # what is left once the bad lines are skipped is one class: refused, not a one-output model
    with pytest.raises(DataError, match=r"every image \(1\) is in class '0'"):
        load_manifest("csv", tmp_path / "bad.csv", skip_bad=True)


def test_unknown_dataset_and_root(tmp_path):
    with pytest.raises(DataError, match="expected one of"):
        load_manifest("nope", tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        load_manifest("chest", tmp_path / "missing")
    with pytest.raises(DataError, match="expected chest_xray"):
        load_manifest("chest", tmp_path)


def test_unknown_option_named():
    with pytest.raises(DataError, match=r"unknown option\(s\) \['n_patient'\]"):
        load_manifest("synthetic", None, n_patient=3)

"""Loaders of CBIS-DDSM (DICOM, Kaggle JPEG, converted PNG), MRNet, PCam and MedMNIST on miniature
trees in the official layouts."""

import gzip
import shutil

import h5py
import numpy as np
import pytest

from medtransfer.data import PixelCache, load_manifest
from medtransfer.errors import DataError

from .helpers import write_image

# ---------------------------------------------------------------- mammograms (CBIS-DDSM)
MASS_HEADER = ("patient_id,breast_density,left or right breast,image view,abnormality id,abnormality type,"
               "mass shape,mass margins,assessment,pathology,subtlety,image file path,cropped image file path,"
               "ROI mask file path")
CALC_HEADER = MASS_HEADER.replace("breast_density", "breast density").replace("mass shape", "calc type") \
    .replace("mass margins", "calc distribution")


def _row(patient, series, abnormality, pathology):
    uid = "1.3.6.1.4.1.9590.100.1.2.1"
    return (f"{patient},3,LEFT,CC,{abnormality},mass,OVAL,N/A,4,{pathology},4,"
            f"{series}/{uid}/{uid}2/000000.dcm,{series}_{abnormality}/{uid}/{uid}3/000000.dcm,"
            f'"{series}_{abnormality}/{uid}/{uid}4/000001.dcm\n"')


def _cbis_csvs(root):
    rows = {
        "mass_case_description_train_set.csv": (MASS_HEADER, [
            _row("P_00001", "Mass-Training_P_00001_LEFT_CC", 1, "MALIGNANT"),
            _row("P_00001", "Mass-Training_P_00001_LEFT_MLO", 1, "BENIGN"),
            _row("P_00004", "Mass-Training_P_00004_LEFT_CC", 1, "BENIGN"),  # conflicting rows:
            _row("P_00004", "Mass-Training_P_00004_LEFT_CC", 2, "MALIGNANT"),  # malignant wins
            _row("P_00004", "Mass-Training_P_00004_LEFT_CC", 3, "BENIGN_WITHOUT_CALLBACK")]),
        "mass_case_description_test_set.csv": (MASS_HEADER, [
            _row("P_00016", "Mass-Test_P_00016_LEFT_CC", 1, "BENIGN")]),
        "calc_case_description_train_set.csv": (CALC_HEADER, [
            _row("P_00005", "Calc-Training_P_00005_RIGHT_CC", 1, "MALIGNANT"),
            _row("P_00005", "Calc-Training_P_00005_RIGHT_CC", 2, "MALIGNANT")]),
        "calc_case_description_test_set.csv": (CALC_HEADER, [
            _row("P_00038", "Calc-Test_P_00038_LEFT_CC", 1, "BENIGN_WITHOUT_CALLBACK")]),
    }
    root.mkdir(parents=True, exist_ok=True)
    for name, (header, lines) in rows.items():
        (root / name).write_bytes(("\r\n".join([header, *lines]) + "\r\n").encode())
    return ["Mass-Training_P_00001_LEFT_CC", "Mass-Training_P_00001_LEFT_MLO", "Mass-Training_P_00004_LEFT_CC",
            "Mass-Test_P_00016_LEFT_CC", "Calc-Training_P_00005_RIGHT_CC", "Calc-Test_P_00038_LEFT_CC"]


def write_dicom(path, pixels, description="full mammogram images", patient="x", monochrome1=False):
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.PatientID, ds.SeriesDescription = patient, description
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 16, 16, 15
    ds.PixelRepresentation = 0
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def test_mammograms_tcia_dicom_tree(tmp_path):
    series = _cbis_csvs(tmp_path)
    base = tmp_path / "manifest-ZkhPvrLo5216730872708713142" / "CBIS-DDSM"
    rng = np.random.default_rng(0)
    for i, s in enumerate(series):
        folder = "1.000000-full mammogram images-2" if i % 2 else "1-full mammogram images-24515"
        name = "1-1.dcm" if i % 2 else "000000.dcm"
        write_dicom(base / s / f"07-20-2016-DDSM-NA-{i:05d}" / folder / name,
                    rng.integers(0, 4096, (12, 10)), patient=s, monochrome1=i == 0)
        # ROI and cropped series of the same image: never matched
        write_dicom(base / f"{s}_1" / "08-07-2016-DDSM-NA-1" / "1.000000-ROI mask images-1" / "1-1.dcm",
                    np.zeros((12, 10)), "ROI mask images")
    m = load_manifest("mammograms", tmp_path)
    assert len(m) == 6 and m.class_counts() == {"benign": 3, "malignant": 3}
    labels = dict(zip(m.image_ids, m.labels))
    assert labels["Mass-Training_P_00004_LEFT_CC"] == 1 and labels["Mass-Training_P_00001_LEFT_MLO"] == 0
    assert m.frame["group"].nunique() == 5
    assert m.options["conflicting_rows"] == ["Mass-Training_P_00004_LEFT_CC"]
    image = m.read_image(int(np.flatnonzero(m.image_ids == series[1])[0]))
    assert image.shape == (12, 10, 3) and image.dtype == np.uint8 and image.max() == 255 and image.min() == 0
    cache = PixelCache.build(m, 8, cache_dir=tmp_path / "cache")
    assert cache.pixels.shape == (6, 8, 8, 3)


def test_mammograms_converted_and_kaggle(tmp_path):
    series = _cbis_csvs(tmp_path / "csv")
    for k, s in enumerate(series[:3]):
        write_image(tmp_path / "png" / f"{s}.png", mode="L", seed=k)
    info = ["file_path,image_path,PatientID,SeriesDescription"]
    for i, s in enumerate(series[3:]):
        uid = f"1.3.6.1.4.1.9590.100.1.2.{i}"
        write_image(tmp_path / "jpeg" / uid / f"1-{i}.jpg", seed=10 + i)
        write_image(tmp_path / "jpeg" / (uid + "9") / "2-1.jpg", seed=20 + i)
        info.append(f"x,CBIS-DDSM/jpeg/{uid}/1-{i}.jpg,{s},full mammogram images")
        info.append(f"x,CBIS-DDSM/jpeg/{uid}9/2-1.jpg,{s},cropped images")
    (tmp_path / "csv" / "dicom_info.csv").write_text("\n".join(info) + "\n")
    m = load_manifest("mammograms", tmp_path)
    assert len(m) == 6 and all("/jpeg/" in r or "/png/" in r for r in m.frame["ref"])
    assert not any("2-1.jpg" in r for r in m.frame["ref"])
    (tmp_path / "png" / f"{series[0]}.png").unlink()
    with pytest.raises(DataError, match=f"image {series[0]}: no file"):
        load_manifest("mammograms", tmp_path)
    assert len(load_manifest("mammograms", tmp_path, skip_bad=True)) == 5


def test_mammograms_bad_pathology(tmp_path):
    _cbis_csvs(tmp_path)
    path = tmp_path / "calc_case_description_test_set.csv"
    path.write_bytes(path.read_bytes().replace(b"BENIGN_WITHOUT_CALLBACK", b"UNSURE"))
    with pytest.raises(DataError, match=r"calc_case_description_test_set.csv:2: pathology 'UNSURE'"):
        load_manifest("mammograms", tmp_path)


# ---------------------------------------------------------------- knee (MRNet)
def _mrnet_csvs(root, acl, meniscus):
    root.mkdir(parents=True, exist_ok=True)
    for split, cases in (("train", ["0000", "0001", "0002", "0003"]), ("valid", ["1130", "1131"])):
        for task, table in (("acl", acl), ("meniscus", meniscus), ("abnormal", {c: 1 for c in cases})):
            (root / f"{split}-{task}.csv").write_text("".join(f"{c},{table.get(c, 0)}\n" for c in cases))


ACL = {"0001": 1, "0003": 1, "1130": 1}
MENISCUS = {"0002": 1, "0003": 1, "1131": 1}


def test_knee_slices(tmp_path):
    _mrnet_csvs(tmp_path / "MRNet-v1.0", ACL, MENISCUS)
    images = tmp_path / "knee" / "images"
    for case in ("0000", "0001", "1130"):
        for k in (10, 11):
            write_image(images / "acl" / f"{case}_sagittal_{k}.000000.png")
    for case in ("0002", "1131", "0000", "1130"):
        write_image(images / "meniscus" / f"{case}_sagittal_5.000000.png")
    write_image(images / "meniscus" / "0001_sagittal_10.000000.png")  # also in acl/: counted once, acl
    m = load_manifest("knee", tmp_path)
    assert m.classes == ["normal", "acl", "meniscus"]
    assert m.class_counts() == {"normal": 4, "acl": 4, "meniscus": 2}
    labels = dict(zip(m.image_ids, m.labels))
    assert labels["0001_sagittal_10.000000.png"] == 1
    assert m.frame["group"].nunique() == 5
    # validation meniscus labels come from valid-meniscus.csv, not valid-abnormal.csv (all 1 here)
    assert labels["1131_sagittal_5.000000.png"] == 2 and labels["1130_sagittal_5.000000.png"] == 0
    # RadImageNet's folder alone, with the MRNet label CSVs elsewhere
    alone = load_manifest("knee", tmp_path / "knee", labels_dir=tmp_path / "MRNet-v1.0")
    assert alone.class_counts() == m.class_counts()
    with pytest.raises(DataError, match="missing label files"):
        load_manifest("knee", tmp_path / "knee")


def test_knee_volumes(tmp_path):
    root = tmp_path / "MRNet-v1.0"
    _mrnet_csvs(root, ACL, MENISCUS)
    rng = np.random.default_rng(0)
    for split, cases in (("train", ["0000", "0001", "0002", "0003"]), ("valid", ["1130", "1131"])):
        for case in cases:
            (root / split / "sagittal").mkdir(parents=True, exist_ok=True)
            np.save(root / split / "sagittal" / f"{case}.npy", rng.integers(0, 256, (7 + int(case) % 3, 16, 16), dtype=np.uint8))
    m = load_manifest("knee", tmp_path, slices=3)
    assert len(m) == 18 and m.frame["group"].nunique() == 6
    assert m.class_counts() == {"normal": 3, "acl": 9, "meniscus": 6}  # 0003 has both tears: acl
    volume = np.load(root / "train" / "sagittal" / "0001.npy")
    row = int(np.flatnonzero(m.image_ids == "0001_sagittal_4")[0])  # 8 slices: central 3 start at 3
    np.testing.assert_array_equal(m.read_image(row)[:, :, 0], volume[4])
    assert load_manifest("knee", tmp_path, both="meniscus").class_counts()["meniscus"] == 9
    excluded = load_manifest("knee", tmp_path, both="exclude")
    assert len(excluded) == 15 and len(excluded.skipped) == 1
    (root / "valid-acl.csv").write_text("1130,1\n1131,x\n")
    with pytest.raises(DataError, match="valid-acl.csv: line 2"):
        load_manifest("knee", tmp_path)


# ---------------------------------------------------------------- pcam
def _pcam(root, n=40, gz=False):
    rng = np.random.default_rng(1)
    root.mkdir(parents=True, exist_ok=True)
    stored = {}
    for split, size in (("train", n), ("valid", n // 4), ("test", n // 4)):
        x = rng.integers(0, 256, (size, 96, 96, 3), dtype=np.uint8)
        y = (rng.random(size) < 0.5).astype(np.uint8).reshape(size, 1, 1, 1)
        stored[split] = (x, y)
        for kind, data in (("x", x), ("y", y)):
            path = root / f"camelyonpatch_level_2_split_{split}_{kind}.h5"
            with h5py.File(path, "w") as f:
                f.create_dataset(kind, data=data)
            if gz:
                with open(path, "rb") as src, gzip.open(str(path) + ".gz", "wb") as dst:
                    shutil.copyfileobj(src, dst)
                path.unlink()
    wsi = [f"camelyon16_train_normal_{i % 5:03d}" for i in range(n)]
    (root / "camelyonpatch_level_2_split_train_meta.csv").write_text(
        ",coord_y,coord_x,tumor_patch,center_tumor_patch,wsi\n"
        + "".join(f"{i},1,2,False,False,{w}\n" for i, w in enumerate(wsi)))
    return stored


def test_pcam_h5_and_gz(tmp_path):
    stored = _pcam(tmp_path / "plain")
    m = load_manifest("pcam", tmp_path / "plain")
    assert len(m) == 60
    ys = np.concatenate([stored[s][1].reshape(-1) for s in ("train", "valid", "test")])
    assert m.class_counts() == {"normal": int((ys == 0).sum()), "tumor": int((ys == 1).sum())}
    assert m.frame["group"].nunique() == 5 + 20  # train patches grouped by slide, others alone
    row = int(np.flatnonzero(m.image_ids == "valid_000003")[0])
    np.testing.assert_array_equal(m.read_image(row), stored["valid"][0][3])
    _pcam(tmp_path / "gz", gz=True)
    g = load_manifest("pcam", tmp_path / "gz", unpack_dir=tmp_path / "unpacked")
    assert len(g) == 60 and g.class_counts() == m.class_counts()
    np.testing.assert_array_equal(g.read_image(row), stored["valid"][0][3])


def test_pcam_small_is_a_seeded_subset(tmp_path):
    _pcam(tmp_path, n=80)
    a = load_manifest("pcam", tmp_path, subset=30, seed=3)
    b = load_manifest("pcam", tmp_path, subset=30, seed=3)
    c = load_manifest("pcam", tmp_path, subset=30, seed=4)
    assert len(a) == 30 and a.frame.equals(b.frame) and not a.frame.equals(c.frame)
    with pytest.raises(DataError, match="subset=10000"):
        load_manifest("pcam-small", tmp_path)


# ---------------------------------------------------------------- medmnist
def test_medmnist(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 10), ("val", 3), ("test", 4)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(n, 1)
    np.savez(tmp_path / "breastmnist.npz", **arrays)
    m = load_manifest("medmnist", tmp_path / "breastmnist.npz")
    assert m.classes == ["malignant", "normal, benign"] and len(m) == 17
    assert m.class_counts() == {"malignant": 9, "normal, benign": 8}
    np.testing.assert_array_equal(m.read_image(11)[:, :, 2], arrays["val_images"][1])
    rgb = {k: (np.repeat(v[..., None], 3, -1) if k.endswith("images") else v.reshape(-1))
           for k, v in arrays.items()}
    np.savez(tmp_path / "dermamnist_64.npz", **rgb)
    d = load_manifest("medmnist", tmp_path, flag="dermamnist", size=64, splits=("test",))
    assert len(d) == 4 and len(d.classes) == 7
    multi = dict(arrays, train_labels=np.zeros((10, 14), int))
    np.savez(tmp_path / "chestmnist.npz", **multi)
    with pytest.raises(DataError, match="multi-label"):
        load_manifest("medmnist", tmp_path / "chestmnist.npz")

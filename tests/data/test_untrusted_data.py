"""Data that used to train silently or end in a raw traceback: a fold file that leaves images out,
copies of an image within a class, a class too small to stratify, MedMNIST labels outside the
declared classes, non-finite pixels, images above the pixel limit."""

from __future__ import annotations

import re
import shutil
from dataclasses import replace
import struct
import threading
import zlib

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from medtransfer.cli import app
from medtransfer.data import load_manifest, make_folds, read_folds, write_folds
from medtransfer.data.copies import GROUPED_NOTE
from medtransfer.data.folds import EXCLUDED, FoldSpec, import_author_splits
from medtransfer.data.images import MAX_PIXELS, decode_file
from medtransfer.data.registry import dataset_folds
from medtransfer.errors import DataError
from medtransfer.training.config import RunConfig
from medtransfer.training.data import fold_table

from .helpers import manifest_from, write_image

runner = CliRunner()


# -- a folds file covers the manifest -----------------------------------------------------------


def test_folds_file_that_leaves_images_out_is_refused_naming_them(tmp_path):
    m = manifest_from([0, 1] * 20, range(40))
    folds = make_folds(m, seed=0)
    gone = ["img00003", "img00017"]
    holey = folds[~((folds["fold"] == 2) & folds["image_id"].isin(gone))]
    path = write_folds(holey, tmp_path / "holey.csv")
    with pytest.raises(DataError, match=r"holey\.csv: fold 2 leaves out 2 of the 40 images of dataset 'toy' "
                                        r"\('img00003', 'img00017'\); expected every image in every fold.*'excluded'"):
        read_folds(path, m)
    # said explicitly, the same images are left out of that fold and of its run alone
    said = pd.concat([holey, pd.DataFrame({"image_id": gone, "fold": 2, "split": EXCLUDED})], ignore_index=True)
    path = write_folds(said, tmp_path / "said.csv")
    assert len(read_folds(path, m)) == 5 * 40
    run = fold_table(RunConfig(target="toy", folds_file=str(path), fold=2), m)
    assert len(run) == 38 and not run["image_id"].isin(gone).any()
    assert len(fold_table(RunConfig(target="toy", folds_file=str(path), fold=1), m)) == 40


def test_many_left_out_images_are_counted(tmp_path):
    m = manifest_from([0, 1] * 20, range(40))
    folds = make_folds(m, seed=0)
    path = write_folds(folds[folds["image_id"] < "img00025"], tmp_path / "short.csv")
    with pytest.raises(DataError, match=r"fold 0 leaves out 15 of the 40 images .*'img00034' and 5 more\)"):
        read_folds(path, m)


def test_author_splits_say_which_images_they_leave_out(tmp_path):
    refs = [f"/d/{c}/{i}.png" for i, c in enumerate(["benign", "malignant"] * 4)]
    m = replace(manifest_from([0, 1] * 4, range(8), refs=refs), classes=["benign", "malignant"])
    (tmp_path / "a").mkdir()
    for split, rows in (("train", [0, 1, 2, 3]), ("val", [4]), ("test", [5])):  # images 6 and 7 in no file
        pd.DataFrame({"path": [f"x/{i}.png" for i in rows],
                      "class": [m.classes[i % 2] for i in rows]}).to_csv(tmp_path / "a" / f"{split}_fold1.csv")
    folds = import_author_splits(tmp_path / "a", m)
    assert sorted(folds.loc[folds["split"] == EXCLUDED, "image_id"]) == ["img00006", "img00007"]
    read_folds(write_folds(folds, tmp_path / "f.csv"), m)  # a complete table: it reads back


# -- identical images within a class ------------------------------------------------------------


def _folder(root, per_class=8):
    for c in ("cat", "dog"):
        for i in range(per_class):
            write_image(root / c / f"{c}{i}.png", seed=100 * (c == "dog") + i)
    return root


def test_copies_within_a_class_are_found_and_kept_in_one_part_of_each_fold(tmp_path):
    root = _folder(tmp_path)
    copies = {"cat/cat0.png": ["cat/a.png", "cat/b.png"], "dog/dog3.png": ["dog/c.png"]}
    for original, names in copies.items():
        for name in names:
            shutil.copy(root / original, root / name)
    checked = load_manifest("folder", root, verify=True)
    assert checked.notes[GROUPED_NOTE] == 3
    group = dict(zip(checked.image_ids, checked.groups))
    for original, names in copies.items():
        assert {group[n] for n in names} == {group[original]}
    result = runner.invoke(app, ["data", "check", "folder", "--root", str(root)])
    assert result.exit_code == 0 and f"3 {GROUPED_NOTE}" in " ".join(result.output.split())
    # the folds of the plain (unverified) manifest group them as well, whatever the seed
    plain = load_manifest("folder", root)
    assert len(set(plain.groups)) == len(plain)
    for seed in range(6):
        folds = dataset_folds(plain, FoldSpec(seed=seed))
        split = folds.set_index(["fold", "image_id"])["split"]
        for original, names in copies.items():
            for f in range(5):
                assert {split[(f, n)] for n in names} == {split[(f, original)]}, (seed, f, original)


def test_copies_in_an_array_dataset_are_grouped(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(30, 28, 28), dtype=np.uint8)
    images[7] = images[3]  # the same picture twice, both labelled 1
    labels = (np.arange(30) % 2).reshape(-1, 1)
    np.savez(tmp_path / "x.npz", train_images=images, train_labels=labels)
    m = load_manifest("medmnist", tmp_path / "x.npz", splits=["train"])
    for seed in range(6):
        folds = dataset_folds(m, FoldSpec(seed=seed)).set_index(["fold", "image_id"])["split"]
        assert all(folds[(f, "train_000003")] == folds[(f, "train_000007")] for f in range(5))


# -- a class too small to stratify ---------------------------------------------------------------


def test_a_class_too_small_to_stratify_is_refused_with_its_count(tmp_path):
    root = _folder(tmp_path)
    for i in range(1, 8):
        (root / "dog" / f"dog{i}.png").unlink()  # dog keeps one image
    result = runner.invoke(app, ["data", "folds", "folder", "--root", str(root), "--out", str(tmp_path / "f.csv")])
    assert isinstance(result.exception, DataError), result.output
    assert "class 'dog' has 1 image(s) in 1 group(s): too few to stratify 5 folds" in str(result.exception)
    assert not (tmp_path / "f.csv").exists()
    fewer = runner.invoke(app, ["data", "folds", "folder", "--root", str(root), "--out", str(tmp_path / "f.csv"),
                                "--k", "2"])
    assert isinstance(fewer.exception, DataError) and "too few to stratify 2 folds" in str(fewer.exception)


# -- MedMNIST labels against the declared classes ------------------------------------------------


def _npz(path, labels, images=None):
    n = len(labels)
    images = np.zeros((n, 28, 28), np.uint8) + np.arange(n, dtype=np.uint8)[:, None, None] if images is None else images
    np.savez(path, train_images=images, train_labels=np.asarray(labels).reshape(n, 1))
    return path


@pytest.mark.parametrize("name, labels, match", [
    ("breastmnist.npz", [0, 1, 2, 0, 1], r"breastmnist\.npz: label 2 of image train_000002 is outside the 2 classes "
                                         r"MedMNIST declares for breastmnist .*expected labels 0\.\.1"),
    ("pneumoniamnist_64.npz", [0, 1, 1, 5], r"label 5 of image train_000003 is outside the 2 classes"),
    ("mine.npz", [0, 1, 7, 1], r"mine\.npz: labels run up to 7 but only 3 distinct value\(s\) occur \(\[0, 1, 7\]\); "
                               r"no image has label \[2, 3, 4, 5, 6\];.*option classes"),
    ("mine.npz", [0, 1, 1000, 1], r"labels run up to 1000 but only 3 distinct.*\[2, 3, 4, 5, 6\] \.\.\."),
    ("mine.npz", [0, 1, 10**15, 1], r"train_labels holds label 1000000000000000 at row 2; expected class indices "
                                    r"0\.\.k-1 with k at most 100,000"),
    ("mine.npz", np.array([0, 1, 2**64 - 1, 1], np.uint64), r"holds label 18446744073709551615 at row 2"),
])
def test_medmnist_labels_outside_the_declared_classes_are_refused(tmp_path, name, labels, match):
    path = _npz(tmp_path / name, labels)
    outcome: dict = {}

    def check() -> None:  # in a thread: a hang fails the test instead of stopping the suite
        outcome["result"] = runner.invoke(app, ["data", "check", "medmnist", "--root", str(path), "-o",
                                                "splits=[train]"])

    worker = threading.Thread(target=check, daemon=True)
    worker.start()
    worker.join(timeout=600)  # a hang guard, not a speed limit: the check is quick even on a loaded machine
    assert not worker.is_alive(), "data check hangs on this label file"
    result = outcome["result"]
    assert isinstance(result.exception, DataError), result.output
    assert re.search(match, str(result.exception)), str(result.exception)


def test_medmnist_classes_option_is_checked_too(tmp_path):
    path = _npz(tmp_path / "mine.npz", [0, 1, 2, 1])
    with pytest.raises(DataError, match=r"label 2 of image train_000002 is outside the 2 classes given with the "
                                        r"option classes"):
        load_manifest("medmnist", path, splits=["train"], classes=["a", "b"])
    assert load_manifest("medmnist", path, splits=["train"]).classes == ["0", "1", "2"]


# -- non-finite pixels ----------------------------------------------------------------------------


def test_nan_or_inf_in_a_float_tiff_is_refused_naming_the_image(tmp_path):
    pixels = np.linspace(0, 1, 20 * 16, dtype=np.float32).reshape(16, 20)
    good = tmp_path / "a" / "good.tif"
    good.parent.mkdir()
    Image.fromarray(pixels, "F").save(good)
    assert decode_file(good).max() == 255
    (tmp_path / "b").mkdir()
    Image.fromarray(pixels[::-1].copy(), "F").save(tmp_path / "b" / "good.tif")
    for value, name in ((np.nan, "nan.tif"), (np.inf, "inf.tif"), (-np.inf, "minus.tif")):
        bad = pixels.copy()
        bad[3, 4] = value
        Image.fromarray(bad, "F").save(tmp_path / "b" / name)
        with pytest.raises(DataError, match=rf"{name}: 1 of 320 pixel values are not finite \(NaN or infinity\)"):
            decode_file(tmp_path / "b" / name)
    result = runner.invoke(app, ["data", "check", "folder", "--root", str(tmp_path), "--json"])
    assert result.exit_code == 1
    assert "not finite" in result.output and "nan.tif" in result.output


def test_nan_in_a_medmnist_float_array_is_refused_naming_the_image(tmp_path):
    images = np.ones((6, 28, 28), np.float32)
    images[4, 2, 2] = np.nan
    images[5, 0, 0] = np.inf
    path = _npz(tmp_path / "mine.npz", [0, 1, 0, 1, 0, 1], images=images)
    with pytest.raises(DataError, match=r"mine\.npz: train_images holds NaN or infinite pixel values in 2 image\(s\): "
                                        r"train_000004, train_000005; expected finite pixels"):
        load_manifest("medmnist", path, splits=["train"])


# -- images above the pixel limit ------------------------------------------------------------------


def _png_header_only(path, width: int, height: int):
    """A PNG claiming ``width`` x ``height`` 1-bit pixels, with a few bytes of data (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("width, height", [(8193, 8192), (9500, 9500), (20000, 20000)])
def test_images_above_the_pixel_limit_are_refused_before_decoding(tmp_path, width, height):
    assert width * height > MAX_PIXELS
    bomb = _png_header_only(tmp_path / "b" / "bomb.png", width, height)
    with pytest.raises(DataError, match=r"bomb\.png: the image has .*more than the limit of 67,108,864"):
        decode_file(bomb)
    write_image(tmp_path / "a" / "fine.png")
    write_image(tmp_path / "b" / "fine.png", seed=1)
    result = runner.invoke(app, ["data", "check", "folder", "--root", str(tmp_path), "--json"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert "67,108,864" in result.output and "bomb.png" in result.output

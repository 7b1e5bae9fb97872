"""Label tables and volumes that used to end in a raw pandas/numpy traceback: ragged ISIC and MRNet
CSVs, one-hot values that are not numbers, .npy files that hold no volume."""

from __future__ import annotations

import re

import numpy as np
import pytest
from typer.testing import CliRunner

from medtransfer.cli import app
from medtransfer.data import load_manifest
from medtransfer.errors import DataError

from .helpers import write_image

runner = CliRunner()
ISIC_HEADER = "image,MEL,NV,BCC,AKIEC,BKL,DF,VASC"


def _isic(root, lines: list[str]):
    for i in range(4):
        write_image(root / "ISIC2018_Task3_Training_Input" / f"ISIC_{i:07d}.jpg", seed=i)
    truth = root / "ISIC2018_Task3_Training_GroundTruth" / "ISIC2018_Task3_Training_GroundTruth.csv"
    truth.parent.mkdir(parents=True)
    truth.write_text("\n".join([ISIC_HEADER, *lines]) + "\n")
    return truth


GOOD = ["ISIC_0000000,1.0,0.0,0.0,0.0,0.0,0.0,0.0", "ISIC_0000001,0.0,1.0,0.0,0.0,0.0,0.0,0.0",
        "ISIC_0000002,1.0,0.0,0.0,0.0,0.0,0.0,0.0", "ISIC_0000003,0.0,1.0,0.0,0.0,0.0,0.0,0.0"]


def test_the_isic_fixture_loads(tmp_path):
    _isic(tmp_path, GOOD)
    assert load_manifest("isic", tmp_path).class_counts()["NV"] == 2


def test_ragged_isic_ground_truth_is_named_with_its_line(tmp_path):
    truth = _isic(tmp_path, [*GOOD[:2], GOOD[2] + ",1.0,extra", GOOD[3]])
    result = runner.invoke(app, ["data", "check", "isic", "--root", str(tmp_path)])
    assert isinstance(result.exception, DataError), result.output
    message = str(result.exception)
    assert message.startswith(f"{truth}: not a readable CSV table (Expected 8 fields in line 4, saw 10)")
    assert "expected image,MEL,NV,BCC,AKIEC,BKL,DF,VASC with one 1.0 per row" in message


def test_isic_one_hot_values_that_are_not_numbers_are_named(tmp_path):
    truth = _isic(tmp_path, [GOOD[0], "ISIC_0000001,0.0,yes,0.0,0.0,0.0,0.0,0.0", *GOOD[2:]])
    with pytest.raises(DataError, match=rf"{truth}:3: image ISIC_0000001: NV='yes' not a number; "
                                        r"expected 1\.0 or 0\.0"):
        load_manifest("isic", tmp_path)
    manifest = load_manifest("isic", tmp_path, skip_bad=True)
    assert "ISIC_0000001" not in set(manifest.image_ids) and len(manifest) == 3


def test_ragged_lesion_groupings_are_named(tmp_path):
    _isic(tmp_path, GOOD)
    grouping = tmp_path / "ISIC2018_Task3_Training_LesionGroupings.csv"
    grouping.write_text("image,lesion_id\nISIC_0000000,L1\nISIC_0000001,L2,x,y\n")
    with pytest.raises(DataError, match=rf"{grouping}: not a readable CSV table \(Expected 2 fields in line 3, "
                                        r"saw 4\); "
                                        "expected columns image,lesion_id"):
        load_manifest("isic", tmp_path)


def _mrnet(root, volumes: dict[str, object], acl_lines: str | None = None):
    for case, volume in volumes.items():
        path = root / "train" / "sagittal" / f"{case}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, volume)
    cases = sorted(volumes)
    (root / "train-acl.csv").write_text(acl_lines or "".join(f"{c},{i % 2}\n" for i, c in enumerate(cases)))
    (root / "train-meniscus.csv").write_text("".join(f"{c},0\n" for c in cases))
    return root


def test_ragged_mrnet_label_csv_is_named(tmp_path):
    volume = np.zeros((5, 16, 16), np.uint8)
    _mrnet(tmp_path, {"0000": volume, "0001": volume}, acl_lines="0000,0\n0001,1,7\n")
    with pytest.raises(DataError, match=r"train-acl\.csv: not a readable CSV table \(Expected 2 fields in line 2, "
                                        r"saw 3\); expected MRNet's header-less 'case,label' lines"):
        load_manifest("knee", tmp_path)


@pytest.mark.parametrize("bad, shape", [(np.float32(3.0), r"\(\)"), (np.zeros(7, np.uint8), r"\(7,\)"),
                                        (np.zeros((0, 16, 16), np.uint8), r"\(0, 16, 16\)")])
def test_an_npy_that_holds_no_volume_is_named(tmp_path, bad, shape):
    rng = np.random.default_rng(0)
    good = {f"{i:04d}": rng.integers(0, 255, (5, 16, 16), dtype=np.uint8) for i in range(4)}
    _mrnet(tmp_path, {**good, "0004": bad})
    result = runner.invoke(app, ["data", "check", "knee", "--root", str(tmp_path), "--json"])
    assert result.exit_code == 1 and result.exception is not None and isinstance(result.exception, SystemExit)
    assert "0004.npy" in result.output
    assert re.search(rf"holds an array of shape {shape}; expected a volume", result.output)
    with pytest.raises(DataError, match=rf"0004\.npy: holds an array of shape {shape}; expected a volume"):
        load_manifest("knee", tmp_path)


@pytest.mark.parametrize(("rows", "message"), [
    (["ds/a.png,a,extra,more", "ds/b.png,b"], "line 2 has 4 fields, the header 2"),  # pandas would shift the columns
    (["ds/a.png,a", "ds/b.png,b,extra"], "Expected 2 fields in line 3, saw 3"),
])
def test_a_user_csv_with_a_row_longer_than_its_header_is_named(tmp_path, rows, message):
    table = tmp_path / "labels.csv"
    table.write_text("\n".join(["path,label", *rows]) + "\n")
    result = runner.invoke(app, ["data", "check", "csv", "--root", str(table)])
    assert isinstance(result.exception, DataError), result.output
    assert str(result.exception).startswith(f"{table}: ") and message in str(result.exception)

"""Damaged study files give a message naming the file, not a traceback."""

from __future__ import annotations

import pytest

from medtransfer.data.folds import read_folds
from medtransfer.errors import ConfigError, DataError
from medtransfer.study.extension import check_unchanged
from medtransfer.study.store import run_status
from medtransfer.training.config import RunConfig


def test_truncated_fold_file_is_named_with_its_line(tmp_path):
    path = tmp_path / "thyroid.csv"
    path.write_text("image_id,fold,split\na.png,0,train\nb.png,0,test\nc.png,")
    with pytest.raises(DataError, match=r"thyroid\.csv:4: fold empty is not an integer \(a truncated"):
        read_folds(path)
    path.write_text("image_id,fold,split\na.png,0,train\nb.png,1")
    with pytest.raises(DataError, match=r"thyroid\.csv:3: empty split \(a truncated"):
        read_folds(path)
    path.write_text("image_id,fold,split\na.png,0.5,train\n")
    with pytest.raises(DataError, match=r"thyroid\.csv:2: fold '0\.5' is not an integer"):
        read_folds(path)


def test_truncated_config_json_is_named(tmp_path):
    config = RunConfig(target="thyroid")
    text = config.to_json()
    (tmp_path / "config.json").write_text(text[: len(text) // 2])
    with pytest.raises(ConfigError, match=r"config\.json: the run's config is not valid JSON .*damaged: delete that "
                                          r"run directory"):
        check_unchanged(config, tmp_path)
    (tmp_path / "config.json").write_text(text)
    check_unchanged(config, tmp_path)  # intact and unchanged: nothing to say


def test_status_reads_a_history_with_bad_bytes(tmp_path):
    (tmp_path / "history.csv").write_bytes(b"phase,epoch\nfinetune,1\nfinetune,\xff\xfe2\n")
    status = run_status(tmp_path, "r")
    assert status.epochs_done == 2 and status.phase == "finetune"


def test_a_pretraining_source_that_cannot_make_its_folds_is_named(tmp_path):
    """The study's pretraining run fails with the fold error, under a run id that names the source,
    and nothing is trained on the missing source."""
    from medtransfer.study.executors import LocalExecutor
    from medtransfer.study.runner import run_study
    from tests.study.conftest import tiny_study

    pretrain = {"dataset": "synthetic", "options": {"n_patients": 2, "size": 8}, "size": 8, "batch_size": 2,
                "epochs": 1}
    study = tiny_study(tmp_path, folds=[0], strategies=["no-freeze"], training={"epochs": 1},
                       sources=[{"name": "tiny", "pretrain": pretrain}])
    report = run_study(study, tmp_path / "out", executor=LocalExecutor([]))
    assert [f.run_id for f in report.failed] == ["synthetic/pretrain-tiny-no-freeze/fold0"]
    assert report.failed[0].error.startswith("DataError: synthetic:") and "fold" in report.failed[0].error
    assert report.finished == 0 and not (tmp_path / "out" / "sources" / "tiny.pt").exists()

"""One run end to end on tiny synthetic data: files, determinism, resume after an interruption."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from medtransfer.models import load_checkpoint
from medtransfer.training import run as run_module
from medtransfer.training.config import RunConfig
from medtransfer.training.probe import load_probe
from medtransfer.training.record import read_record
from medtransfer.training.run import train_run


def test_freeze_run_writes_every_file_and_keeps_the_probe(tiny, tmp_path, monkeypatch):
    config = tiny(strategy="freeze", epochs=1, probe_epochs=2)
    out = tmp_path / "run"
    trained = {}
    real_finish = run_module._Run.finish_probe

    def keep_probe_state(self, best_epoch):
        trained.update({k: v.detach().clone() for k, v in self.model.state_dict().items()})
        return real_finish(self, best_epoch)

    monkeypatch.setattr(run_module._Run, "finish_probe", keep_probe_state)
    result = train_run(config, out)
    for name in ("config.json", "folds.csv", "history.csv", "predictions.csv", "metrics.json", "DONE",
                 "checkpoints/best.pt", "probe/head.pt", "probe/predictions.csv", "probe/metrics.json"):
        assert (out / name).exists(), name
    assert not (out / "checkpoints" / "last.pt").exists()  # removed once DONE unless keep_last
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["best.pt"]
    assert (out / "probe" / "head.pt").stat().st_size < 100_000  # the head, not a second ResNet50
    saved = json.loads((out / "config.json").read_text())
    assert saved == json.loads(config.model_dump_json())  # the config as given, no derived values
    record = read_record(out)
    assert record.classes == ["class0", "class1"] and record.normalization == "caffe" and record.verified
    assert record.facts.device == "cpu"
    assert saved["source"] == "random" and saved["strategy"] == "freeze"

    folds = pd.read_csv(out / "folds.csv")
    test_ids = set(folds.loc[folds["split"] == "test", "image_id"])
    preds = pd.read_csv(out / "predictions.csv")
    assert set(preds["image_id"]) == test_ids  # AUC on the test split, never the val split
    assert list(preds.columns) == ["image_id", "label", "p_0", "p_1"]
    np.testing.assert_allclose(preds[["p_0", "p_1"]].sum(axis=1), 1.0, atol=1e-5)
    probe = pd.read_csv(out / "probe" / "predictions.csv")
    assert list(probe["image_id"]) == list(preds["image_id"])

    history = pd.read_csv(out / "history.csv")
    assert list(history["phase"]) == ["probe", "probe", "finetune"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["auc"] == result.metrics["auc"] and metrics["best_epoch"] == 0
    assert 0 <= metrics["auc"] <= 1 and metrics["n"] == len(test_ids)

    # the probe only trained the head: its backbone is the (random) source, bit for bit
    from medtransfer.models import load_source

    source = load_source("random", seed=config.seed)
    probe_model, meta = load_probe(out)
    assert meta["classes"] == ["class0", "class1"] and meta["phase"] == "probe"
    for name, tensor in source.model.state_dict().items():
        assert torch.equal(probe_model.state_dict()[name], tensor), name
    # rebuilt bit for bit: every tensor equals the trained probe's, head included
    assert set(probe_model.state_dict()) == set(trained)
    for name, tensor in trained.items():
        assert torch.equal(probe_model.state_dict()[name], tensor), name
    best, _ = load_checkpoint(out / "checkpoints" / "best.pt")
    assert not torch.equal(best.conv1.weight, source.model.conv1.weight)  # phase 2 trained everything

    again = train_run(config, out)  # DONE: nothing is redone
    assert again.skipped and again.metrics["auc"] == metrics["auc"]


def test_resume_after_interruption_equals_uninterrupted_run(tiny, tmp_path, monkeypatch):
    # same seed, same metrics: an uninterrupted run and one killed and resumed agree bit for bit
    # (tests/study/test_kill.py also compares runs made in different processes)
    config = tiny(epochs=2)
    first = train_run(config, tmp_path / "a").metrics

    calls = {"n": 0}
    real = run_module.train_epoch

    def dies_in_second_epoch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated kill")
        return real(*args, **kwargs)

    monkeypatch.setattr(run_module, "train_epoch", dies_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_run(config, tmp_path / "c")
    assert (tmp_path / "c" / "checkpoints" / "last.pt").exists()
    assert not (tmp_path / "c" / "DONE").exists()
    monkeypatch.setattr(run_module, "train_epoch", real)
    resumed = train_run(config, tmp_path / "c")
    assert resumed.resumed
    assert resumed.metrics["loss"] == first["loss"] and resumed.metrics["brier"] == first["brier"]
    history = pd.read_csv(tmp_path / "c" / "history.csv")
    assert list(history["epoch"]) == [0, 1]
    pd.testing.assert_frame_equal(history.drop(columns="seconds"),
                                  pd.read_csv(tmp_path / "a" / "history.csv").drop(columns="seconds"))


def _dies_at_call(n, real):
    """``real``, except that its n-th call raises KeyboardInterrupt (a simulated kill)."""
    calls = {"n": 0}

    def dies(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt("simulated kill")
        return real(*args, **kwargs)

    return dies


def test_freeze_run_resumed_keeps_the_same_probe(tiny, tmp_path, monkeypatch):
    config = tiny(strategy="freeze", epochs=1, probe_epochs=2)
    first = train_run(config, tmp_path / "a")
    a, _ = load_probe(tmp_path / "a")
    real = run_module.train_epoch
    for dies_at in (2, 3):  # in the probe phase; in the fine-tuning phase
        out = tmp_path / f"killed{dies_at}"
        monkeypatch.setattr(run_module, "train_epoch", _dies_at_call(dies_at, real))
        with pytest.raises(KeyboardInterrupt):
            train_run(config, out)
        assert (out / "probe" / "head.pt").exists() == (dies_at == 3)
        monkeypatch.setattr(run_module, "train_epoch", real)
        resumed = train_run(config, out)
        assert resumed.resumed and resumed.metrics["loss"] == first.metrics["loss"]
        assert resumed.probe_metrics == first.probe_metrics
        b, _ = load_probe(out)
        for name, tensor in a.state_dict().items():
            assert torch.equal(b.state_dict()[name], tensor), name
        assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["best.pt"]


def test_conv1_init_scale_scales_the_first_conv_alone():
    from medtransfer.models import load_source
    from medtransfer.training.run import build_model

    plain = build_model(RunConfig(target="x", source="random"), load_source("random", seed=0), 2).state_dict()
    scaled = build_model(RunConfig(target="x", source="random", conv1_init_scale=0.1),
                         load_source("random", seed=0), 2).state_dict()
    assert torch.allclose(scaled["conv1.weight"], 0.1 * plain["conv1.weight"])
    assert plain["conv1.weight"].abs().max() > 0.01
    others = [k for k in plain if k != "conv1.weight"]
    assert len(others) > 100 and all(torch.equal(plain[k], scaled[k]) for k in others)

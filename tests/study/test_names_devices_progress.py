"""Study settings that used to fail deep inside a run, and a damaged progress.json in ``status``."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from typer.testing import CliRunner

from medtransfer.cli import app
from medtransfer.errors import ConfigError
from medtransfer.study.config import StudyConfig
from medtransfer.study.expand import expand
from medtransfer.study.store import run_dir
from medtransfer.training.config import MAX_LABEL_BYTES, RunConfig
from medtransfer.training.run import resolve_device

runner = CliRunner()
BASE = {"name": "s", "targets": [{"name": "synth", "dataset": "synthetic", "options": {"n_patients": 12, "size": 16},
                                  "size": 16}],
        "sources": [{"name": "random"}], "strategies": ["no-freeze"], "k_folds": 4,
        "training": {"epochs": 1, "split_fractions": [0.75, 0.1, 0.15]}}


@pytest.mark.parametrize("change, message", [
    ({"sources": [{"name": "s" * 300, "path": "weights.h5"}]},
     rf"sources\.0\.name: name 's{{40}}'\.\.\. is 300 bytes long; expected at most {MAX_LABEL_BYTES}"),
    ({"sources": [{"name": "x", "path": "w.h5"}], "targets": [{"name": "t" * 101, "dataset": "synthetic"}]},
     r"targets\.0\.name: name 't{40}'\.\.\. is 101 bytes long"),
    ({"training": {**BASE["training"], "device": "bogus"}},
     r"training: device: 'bogus' is not a device; expected auto, cpu, cuda, cuda:N \(N: a GPU's index\) or mps"),
    ({"executor": {"devices": ["cuda:0", "gpu1"]}}, r"executor\.devices: 'gpu1' is not a device"),
])
def test_names_and_devices_are_checked_with_the_study(change, message):
    with pytest.raises(ConfigError, match=message):
        StudyConfig.parse({**BASE, **change})


def test_a_long_weights_file_name_is_refused_as_a_source_name():
    with pytest.raises(ValueError, match=r"source name '.{40}'\.\.\. is 200 bytes long"):
        RunConfig(target="synthetic", source="/weights/" + "w" * 200 + ".pt")
    assert RunConfig(target="synthetic", source="/weights/" + "w" * 97 + ".pt").source_label == "w" * 97


def test_device_bogus_on_the_command_line(tmp_path):
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump(BASE))
    result = runner.invoke(app, ["run", str(study), "--out", str(tmp_path / "out"), "--device", "bogus"])
    assert isinstance(result.exception, ConfigError), result.output
    assert "device: 'bogus' is not a device" in str(result.exception)
    assert not (tmp_path / "out" / "study.yaml").exists()


def test_resolve_device(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu") and resolve_device(torch.device("cpu")).type == "cpu"
    with pytest.raises(ConfigError, match="device 'bogus' is not a device"):
        resolve_device("bogus")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ConfigError, match=r"device 'cuda': CUDA is not available on this machine"):
        resolve_device("cuda")


# what RunProgress writes; its numbers differ from the history's below, so a test sees which was used
VALID = {"plan": [{"phase": "finetune", "lr": 1e-5, "epochs": 3}], "phase": "finetune", "phase_index": 0, "epoch": 2,
         "epochs": 3, "epochs_done": {"finetune": 2}, "seconds_per_epoch": {"finetune": 2.0}, "best_val_auc": 0.7,
         "last": {"val_auc": 0.7}}
DAMAGED = [{"phase_index": 5}, {"phase_index": "one"}, {"phase_index": True}, {"epoch": -1}, {"epochs": 2.5},
           {"best_val_auc": "high"}, {"best_val_auc": float("nan")}, {"seconds_per_epoch": 5},
           {"seconds_per_epoch": {"finetune": "slow"}}, {"epochs_done": {"finetune": 2.5}}, {"last": [1]},
           {"phase": 3}, {"plan": "finetune"}]
GARBAGE = ["not json at all", "[1, 2, 3]", "null", "{}", json.dumps({k: v for k, v in VALID.items() if k != "plan"}),
           *(json.dumps({**VALID, **damage}) for damage in DAMAGED)]


@pytest.mark.parametrize("garbage", GARBAGE)
def test_status_with_a_garbage_progress_file(tmp_path, garbage):
    out = tmp_path / "study"
    study = StudyConfig.parse({**BASE, "training": {**BASE["training"], "epochs": 3, "threads": 1}})
    out.mkdir()
    (out / "study.yaml").write_text(study.to_yaml())
    config = expand(study, out)[0]
    directory = run_dir(out, config)
    directory.mkdir(parents=True)
    (directory / "progress.json").write_text(garbage)
    (directory / "history.csv").write_text("phase,epoch,seconds,val_auc\nfinetune,1,2.0,0.6\nbroken line\n")
    result = runner.invoke(app, ["status", str(out), "--json"])
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    row = json.loads(result.output)["runs"][0]
    assert row["run_id"] == config.run_id and row["phase"] == "finetune" and row["epoch"] == 1
    assert row["best_val_auc"] == pytest.approx(0.6)
    plain = runner.invoke(app, ["status", str(out)])
    assert plain.exit_code == 0 and config.run_id in " ".join(plain.output.split())


def test_a_valid_progress_file_is_used(tmp_path):
    from medtransfer.training.progress import read_progress

    (tmp_path / "progress.json").write_text(json.dumps(VALID))
    assert read_progress(tmp_path) == VALID  # the checks do not refuse what RunProgress writes

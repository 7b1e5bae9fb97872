"""Study YAML: shipped studies validate and expand; wrong keys and values give clear errors."""

import pytest
import yaml

from medtransfer.errors import ConfigError
from medtransfer.study.config import StudyConfig, shipped_config
from medtransfer.study.expand import expand


def test_paper_expands_to_175_runs_with_table1_sizes():
    study = StudyConfig.from_yaml(shipped_config("paper"))
    runs = expand(study)
    assert len(runs) == 175
    assert not any(r.source == "random" and r.strategy == "freeze" for r in runs)
    assert len({r.run_id for r in runs}) == 175
    sizes = {r.target_label: (r.size, r.batch_size) for r in runs}
    assert sizes == {"thyroid": (256, 16), "breast": (256, 16), "chest": (112, 128), "mammograms": (224, 32),
                     "knee": (112, 128), "isic": (112, 128), "pcam-small": (96, 128)}
    chest = next(r for r in runs if r.target_label == "chest")
    assert not chest.use_hflip and (chest.lr, chest.epochs, chest.patience) == (1e-5, 200, 30)
    assert chest.run_id == "chest/imagenet-no-freeze/fold0"


def test_mei_replication_and_demo_validate():
    mei = expand(StudyConfig.from_yaml(shipped_config("mei-replication")))
    # 2 targets x 2 sources x 5 folds x 4 backbones, at the paper's settings and Mei et al.'s
    assert {(r.lr, r.epochs) for r in mei} == {(1e-5, 200), (1e-4, 30)} and len(mei) == 2 * 80
    assert {r.target_label for r in mei} >= {"thyroid", "thyroid@densenet121", "thyroid-subset@inception_resnet_v2"}
    assert {r.source for r in mei} == {"imagenet", "radimagenet", "imagenet@densenet121", "radimagenet@densenet121",
                                       "imagenet@inception_v3", "radimagenet@inception_v3",
                                       "imagenet@inception_resnet_v2", "radimagenet@inception_resnet_v2"}
    assert {r.target_options.get("empty_tirads") for r in mei} == {"exclude", None}
    demo = StudyConfig.from_yaml(shipped_config("demo"))
    assert any(s.pretrain for s in demo.sources)
    from medtransfer.study.pretrain import pretrain_config

    # the demo's pretraining runs (and only they) start conv1 at 0.3x its random init
    assert {pretrain_config(s, {}).conv1_init_scale for s in demo.sources if s.pretrain} == {0.3}
    assert {r.conv1_init_scale for r in expand(demo)} == {1.0}


def _write(tmp_path, data):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


BASE = {"targets": [{"name": "chest", "root": "x"}], "sources": [{"name": "imagenet"}]}


@pytest.mark.parametrize("change, message", [
    ({"target": []}, r"target: unknown key"),
    ({"targets": [{"name": "chest", "sise": 112}]}, r"targets\.0\.sise: unknown key"),
    ({"strategies": ["frozen"]}, r"strategies\.0: .*'no-freeze'"),
    ({"training": {"learning_rate": 1}}, r"training: .*unknown training constant.*learning_rate"),
    ({"training": {"fold": 1}}, r"set by the grid"),
    ({"folds": [7]}, r"folds \[7\] are outside"),
    ({"sources": [{"name": "imagenet"}, {"name": "imagenet"}]}, r"source names must be unique"),
    ({"training": {"lr": "fast"}}, r"lr"),
])
def test_wrong_key_or_value_names_file_and_field(tmp_path, change, message):
    path = _write(tmp_path, {**BASE, **change})
    with pytest.raises(ConfigError, match=message) as info:
        StudyConfig.from_yaml(path)
    assert str(path) in str(info.value)


def test_unreadable_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        StudyConfig.from_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("targets: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        StudyConfig.from_yaml(bad)
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        StudyConfig.from_yaml(bad)


def test_bad_training_value_names_the_constant():
    with pytest.raises(ConfigError, match=r"study: training: .*lr: Input should be greater than 0 \(got -1.0\)$"):
        StudyConfig.parse({**BASE, "training": {"lr": -1.0}})


def test_seeds_and_yaml_roundtrip(tmp_path):
    study = StudyConfig.parse({**BASE, "seeds": [0, 1], "folds": [2]})
    ids = [r.run_id for r in expand(study)]
    assert "chest/imagenet-no-freeze/fold2" in ids and "chest/imagenet-freeze/fold2-seed1" in ids
    assert StudyConfig.parse(yaml.safe_load(study.to_yaml())) == study


@pytest.mark.parametrize(("change", "path", "words"), [
    ({"seeds": [0, 0]}, "seeds", "repeated: [0]"),
    ({"folds": [1, 1]}, "folds", "repeated: [1]"),
    ({"strategies": ["freeze", "freeze"]}, "strategies", "repeated: ['freeze']"),
    ({"sources": [{"name": "imagenet", "strategies": ["no-freeze", "no-freeze"]}]}, "sources.0.strategies", "repeated"),
    ({"targets": [{"name": "chest", "training": {"split_fractions": [0.7, 0.1, 0.2]}}]}, "targets.0.training",
     "split_fractions"),
    ({"sources": [{"name": "own", "pretrain": {"dataset": "synthetic", "training": {"epochs": 9}}}]},
     "sources.0.pretrain.training", "epochs"),
    ({"sources": [{"name": "own", "pretrain": {"dataset": "synthetic", "training": {"probe_lr": 1e-3}}}]},
     "sources.0.pretrain.training", "no probe phase"),
    ({"training": {"conv1_init_scale": 0.1}}, "training", "under a source's 'pretrain: training:'"),
    ({"targets": [{"name": "chest", "training": {"conv1_init_scale": 0.1}}]}, "targets.0.training",
     "conv1_init_scale"),
    ({"targets": [{"name": "chest", "size": 64, "training": {"size": 32}}]}, "targets.0", "['size'] given both"),
    ({"targets": [{"name": "chest", "hflip": True, "training": {"hflip": False}}]}, "targets.0", "['hflip']"),
    ({"training": {"target_name": "x"}}, "training", "set by the grid"),
    ({"analysis": {"rowz": 100}}, "analysis", "rowz"),
    ({"analysis": {"auc_average": "median"}}, "analysis", "auc_average"),
    ({"targets": [{"name": ".."}]}, "targets.0.name", "cannot name a directory"),
    ({"sources": [{"name": "."}]}, "sources.0.name", "cannot name a directory"),
    ({"training": {"epochs": True}}, "training", "epochs"),
    ({"targets": [{"name": "chest", "size": True}]}, "targets.0.size", "expected a number"),
    ({"seeds": [True]}, "seeds", "expected a number"),
])
def test_run_refuses_a_setting_that_would_be_ignored_or_miscounted(tmp_path, change, path, words):
    from typer.testing import CliRunner

    from medtransfer.cli import app

    study = _write(tmp_path, {**BASE, **change})
    result = CliRunner().invoke(app, ["run", str(study), "--out", str(tmp_path / "out")])
    assert isinstance(result.exception, ConfigError), result.output
    message = str(result.exception)
    assert f"{study}: {path}:" in message and words in message
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_micro_auc_is_one_vocabulary_for_runs_and_analysis():
    study = StudyConfig.parse({**BASE, "training": {"auc_average": "micro"}, "analysis": {"auc_average": "micro"}})
    assert {r.auc_average for r in expand(study)} == {"micro"}


def test_with_overrides_changes_only_what_the_command_line_gives():
    study = StudyConfig.parse({**BASE, "training": {"lr": 1e-4}})
    same = study.with_overrides()
    assert same == study
    changed = study.with_overrides(executor="ray", device="cpu")
    assert changed.executor.kind == "ray" and changed.training == {"lr": 1e-4, "device": "cpu"}
    assert study.training == {"lr": 1e-4}
    with pytest.raises(ConfigError, match="executor.kind"):
        study.with_overrides(executor="mpi")
    tracked = study.with_overrides(track="mlflow")
    assert tracked.tracking is not None and tracked.tracking.kind == "mlflow" and study.tracking is None
    assert tracked.with_overrides(track="off").tracking is None
    assert tracked.with_overrides().tracking == tracked.tracking
    with pytest.raises(ConfigError, match="--track 'neptune'"):
        study.with_overrides(track="neptune")

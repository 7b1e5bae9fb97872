"""RunConfig: the paper's defaults, and clear errors for wrong keys and values."""

import pytest

from medtransfer.errors import ConfigError, DataError
from medtransfer.training.config import RunConfig
from medtransfer.training.record import RunDir


def test_paper_defaults():
    c = RunConfig(target="thyroid")
    assert (c.lr, c.epochs, c.patience, c.beta1, c.beta2, c.eps) == (1e-5, 200, 30, 0.9, 0.999, 1e-7)
    assert (c.probe_lr, c.probe_patience, c.dropout) == (1e-3, 10, 0.5)
    assert c.use_hflip and not RunConfig(target="chest").use_hflip
    assert RunConfig(target="chest", hflip=True).use_hflip


def test_unknown_key_and_bad_value_name_the_field(tmp_path):
    with pytest.raises(ConfigError, match=r"here: learning_rate: unknown key"):
        RunConfig.parse({"target": "x", "learning_rate": 1e-4}, where="here")
    with pytest.raises(ConfigError, match=r"strategy: .*'no-freeze'.*got 'frozen'"):
        RunConfig.parse({"target": "x", "strategy": "frozen"})
    with pytest.raises(ConfigError, match="fold 5 is outside"):
        RunConfig.parse({"target": "x", "fold": 5})
    with pytest.raises(ConfigError, match="lr"):
        RunConfig.parse({"target": "x", "lr": -1})


def test_json_roundtrip(tmp_path):
    c = RunConfig(target="synthetic", target_options={"task": "target"}, strategy="freeze", lr=1e-4)
    run = RunDir(tmp_path)
    run.write_config(c)
    assert run.read_config() == c
    (tmp_path / "config.json").write_text("{")
    with pytest.raises(DataError, match="config.json"):
        run.read_config()


def test_conv1_init_scale_is_for_random_init_only():
    assert RunConfig(target="x").conv1_init_scale == 1.0
    assert RunConfig(target="x", source="random@densenet121", conv1_init_scale=0.1).conv1_init_scale == 0.1
    with pytest.raises(ConfigError, match=r"conv1_init_scale 0.1 .*random init, not 'imagenet'"):
        RunConfig.parse({"target": "x", "source": "imagenet", "conv1_init_scale": 0.1})
    with pytest.raises(ConfigError, match="conv1_init_scale"):
        RunConfig.parse({"target": "x", "source": "random", "conv1_init_scale": 0})

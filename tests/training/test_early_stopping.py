"""Early stopping follows Keras' rule: stop after `patience` epochs without improvement."""

import pytest

from medtransfer.errors import ConfigError
from medtransfer.training.early_stopping import EarlyStopping


def test_min_mode_stops_after_patience_and_keeps_best_epoch():
    stop = EarlyStopping("min", patience=3)
    values = [1.0, 0.8, 0.9, 0.85, 0.81]
    improved = [stop.step(v) for v in values]
    assert improved == [True, True, False, False, False]
    assert stop.should_stop and stop.best == 0.8 and stop.best_epoch == 1


def test_max_mode_and_ties_do_not_improve():
    stop = EarlyStopping("max", patience=2)
    assert stop.step(0.5) and not stop.step(0.5)
    assert not stop.should_stop
    assert stop.step(0.6) and stop.wait == 0
    assert not stop.step(0.6) and not stop.step(0.1) and stop.should_stop


def test_nan_never_improves_and_state_roundtrip():
    stop = EarlyStopping("min", patience=5)
    assert not stop.step(float("nan"))
    stop.step(2.0)
    clone = EarlyStopping.from_state(stop.state_dict())
    for value in (1.0, 3.0, 3.0):
        assert clone.step(value) == stop.step(value)
    assert clone == stop


def test_bad_settings():
    with pytest.raises(ConfigError, match="mode"):
        EarlyStopping("lowest")
    with pytest.raises(ConfigError, match="patience"):
        EarlyStopping("min", patience=0)

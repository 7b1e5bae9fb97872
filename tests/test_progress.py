"""Progress of a run and of a study: the progress file, the per-epoch lines, the grid's ETA."""

import io
import json
import warnings

import pandas as pd
import pytest

from medtransfer.training.progress import LineView, RunProgress, read_progress, remaining_seconds, summarize
from medtransfer.training.observers import Sinks, TrackingWarning
from medtransfer.training.run import train_run
from tests.training.conftest import tiny_config

PLAN = [{"phase": "probe", "lr": 1e-3, "epochs": 4}, {"phase": "finetune", "lr": 1e-5, "epochs": 10}]


def _row(phase, epoch, seconds, auc):
    return {"phase": phase, "epoch": epoch, "train_loss": 1.0, "val_loss": 0.5, "val_accuracy": 0.5,
            "val_auc": auc, "seconds": seconds}


def test_summary_and_remaining_time_of_a_freeze_run():
    history = [_row("probe", 0, 1.0, 0.6), _row("probe", 1, 3.0, float("nan")), _row("probe", 2, 2.0, 0.7),
               _row("finetune", 0, 10.0, 0.65)]
    s = summarize(history, PLAN)
    assert (s["phase"], s["phase_index"], s["epoch"], s["epochs"]) == ("finetune", 1, 1, 10)
    assert s["epochs_done"] == {"probe": 3, "finetune": 1}
    assert s["seconds_per_epoch"] == {"probe": 2.0, "finetune": 10.0}
    assert s["best_val_auc"] == 0.7  # NaN rows are ignored
    assert remaining_seconds(s, PLAN) == 9 * 10.0  # the probe phase is over
    assert remaining_seconds(s, PLAN, expected={"finetune": 4}) == 3 * 10.0
    # nothing measured yet: unknown, unless another run's speed is given
    fresh = summarize([], PLAN)
    assert (fresh["phase"], fresh["epoch"], fresh["epochs"]) == ("probe", 0, 4)
    assert remaining_seconds(fresh, PLAN) is None
    assert remaining_seconds(fresh, PLAN, seconds_per_epoch={"probe": 1.0, "finetune": 5.0}) == 4 * 1.0 + 10 * 5.0


def test_a_run_writes_its_progress_and_one_line_per_epoch(tmp_path):
    config = tiny_config(tmp_path, strategy="freeze", epochs=2, probe_epochs=2)
    stream = io.StringIO()
    out = tmp_path / "run"
    result = train_run(config, out, Sinks([RunProgress(LineView(stream))]))
    lines = stream.getvalue().splitlines()
    history = pd.read_csv(out / "history.csv")
    assert len(history) == 4 and history["val_auc"].notna().all()
    assert lines[0].endswith("started")
    epoch_lines = [line for line in lines if " epoch " in line]
    assert len(epoch_lines) == len(history)
    assert "probe epoch 1/2" in epoch_lines[0] and "finetune epoch 2/2" in epoch_lines[-1]
    assert "finished, test AUC" in lines[-1] and len(lines) == len(history) + 2
    progress = read_progress(out)
    assert progress["state"] == "finished" and progress["epochs_done"] == {"probe": 2, "finetune": 2}
    assert progress["best_val_auc"] == pytest.approx(history["val_auc"].max())
    assert progress["test_auc"] == pytest.approx(result.metrics["auc"])
    assert progress["seconds_per_epoch"]["finetune"] == pytest.approx(
        history[history["phase"] == "finetune"]["seconds"].median())


class _Broken:
    def __init__(self):
        self.calls = 0

    def epoch(self, row):
        self.calls += 1
        raise ConnectionError("server down")


def test_a_failing_sink_warns_once_and_never_changes_the_run(tmp_path):
    config = tiny_config(tmp_path, epochs=2)
    plain = train_run(config, tmp_path / "plain")
    broken = _Broken()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        observed = train_run(config, tmp_path / "observed", Sinks([broken]))
    assert broken.calls == 1  # dropped after its first failure
    assert sum(issubclass(w.category, TrackingWarning) for w in caught) == 1
    for name in ("predictions.csv",):
        assert (tmp_path / "plain" / name).read_bytes() == (tmp_path / "observed" / name).read_bytes()
    assert plain.metrics["auc"] == observed.metrics["auc"]
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "plain" / "history.csv").drop(columns="seconds"),
                                  pd.read_csv(tmp_path / "observed" / "history.csv").drop(columns="seconds"))
    assert json.loads((tmp_path / "observed" / "metrics.json").read_text())["epochs"] == 2


def test_a_run_that_fails_before_it_starts_leaves_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Sinks([RunProgress(LineView(io.StringIO()))]).fail("OSError: no data")

"""A tiny study end to end: results tables, status, re-running does nothing, changed settings refused."""

import pandas as pd
import pytest
from typer.testing import CliRunner

from medtransfer.cli import app
from medtransfer.errors import ConfigError
from medtransfer.study.results import AUC_COLUMNS
from medtransfer.study.runner import run_study
from medtransfer.study.status import study_progress

from .conftest import tiny_study, write_yaml


def test_results_tables(finished_study):
    _, out = finished_study
    auc = pd.read_csv(out / "results" / "auc.csv")
    assert list(auc.columns) == AUC_COLUMNS
    assert len(auc) == 2 and set(auc["fold"]) == {0, 1} and set(auc["strategy"]) == {"no-freeze"}
    assert auc["auc"].between(0, 1).all()
    assert (out / "folds" / "synth.csv").exists() and (out / "study.resolved.yaml").exists()
    md = (out / "results" / "table2.md").read_text()
    mean = 100 * auc["auc"].mean()
    assert f"{mean:.1f} ± {100 * auc['auc'].std():.1f}" in md


def test_rerun_does_nothing_and_status(finished_study):
    study, out = finished_study
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("runs/**/metrics.json")}
    report = run_study(study, out)
    assert (report.skipped, report.finished) == (2, 0)
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/**/metrics.json")} == stamps
    assert [s["state"] for s in study_progress(out)["runs"]] == ["done", "done"]
    result = CliRunner().invoke(app, ["status", str(out)])
    assert result.exit_code == 0 and "2/2 runs done" in " ".join(result.output.split())  # rich wraps long paths


def test_rerun_clears_a_claim_left_by_a_kill_after_done(finished_study):
    import json

    study, out = finished_study
    marker = next(out.glob("runs/**/DONE")).parent / "RUNNING"
    marker.write_text(json.dumps({"host": "gone", "pid": 1, "started": 0.0}))  # killed just after DONE
    report = run_study(study, out)
    assert (report.skipped, report.finished) == (2, 0)
    assert not marker.exists()


def test_changed_settings_are_refused(finished_study, tmp_path):
    study, out = finished_study
    changed = tiny_study(tmp_path, training={"lr": 1e-3})
    with pytest.raises(ConfigError, match=r"synth/random-no-freeze/fold0 .*lr: 0.0001 -> 0.001"):
        run_study(changed.model_copy(update={"training": {**study.training, "lr": 1e-3}}), out)


def test_cli_run_reports_a_bad_study_clearly(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("targets: [{name: chest, sise: 3}]\nsources: [{name: imagenet}]\n")
    result = CliRunner().invoke(app, ["run", str(bad), "--out", str(tmp_path / "out")])
    assert isinstance(result.exception, ConfigError)
    assert "targets.0.sise: unknown key" in str(result.exception) and str(bad) in str(result.exception)
    result = CliRunner().invoke(app, ["run", "no-such-study", "--out", str(tmp_path / "out")])
    assert isinstance(result.exception, ConfigError) and "no shipped study" in str(result.exception)


def test_cli_run_names_a_failed_source_and_exits_1(tmp_path):
    # 4 classes of 4 images cannot be cut into the pretraining's 5 folds: the source fails at once
    pretrain = {"dataset": "synthetic", "options": {"n_patients": 16, "images_per_patient": 1, "size": 32,
                                                    "task": "source-a", "n_classes": 4, "seed": 1},
                "size": 32, "batch_size": 8, "epochs": 1}
    study = tiny_study(tmp_path, folds=[0], strategies=["no-freeze"], sources=[{"name": "mine", "pretrain": pretrain}])
    study_file = write_yaml(tmp_path / "study.yaml", study)
    result = CliRunner().invoke(app, ["run", str(study_file), "--out", str(tmp_path / "out")])
    output = " ".join(result.output.split())
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), output
    assert "1 failed" in output and "failed synthetic/pretrain-mine-no-freeze/fold0: DataError" in output, output
    assert "too few to stratify 5 folds" in output


@pytest.mark.slow
def test_pretraining_runs_through_the_executor_and_is_not_redone(tmp_path):
    from medtransfer.study.executors import LocalExecutor

    pretrain = {"dataset": "synthetic", "options": {"n_patients": 12, "images_per_patient": 2, "size": 32,
                                                    "task": "source-a", "seed": 1},
                "size": 32, "batch_size": 8, "epochs": 1}
    study = tiny_study(tmp_path, folds=[0], strategies=["no-freeze"], training={"epochs": 1},
                       sources=[{"name": "mine", "pretrain": pretrain}, {"name": "random"}])
    seen = []

    class Recording(LocalExecutor):
        def run(self, tasks):
            seen.append([t.run_id for t in tasks])
            return super().run(tasks)

    out = tmp_path / "out"
    report = run_study(study, out, executor=Recording([]))
    assert report.finished == 2 and not report.failed
    # random init reads no source: it trains beside the pretraining, the run fine-tuned from it after
    assert seen == [["synthetic/pretrain-mine-no-freeze/fold0", "synth/random-no-freeze/fold0"],
                    ["synth/mine-no-freeze/fold0"]]
    assert (out / "sources" / "mine.pt").exists() and (out / "sources" / "mine-run" / "DONE").exists()
    seen.clear()
    assert run_study(study, out, executor=Recording([])).skipped == 2 and seen == []


@pytest.mark.slow
def test_detach_on_local_runs_the_driver_in_the_background(finished_study, tmp_path):
    import os
    import re
    import signal
    import time

    study, out = finished_study
    study_file = tmp_path / "study.yaml"
    study_file.write_text(study.to_yaml())
    log = out / "driver.log"
    log.unlink(missing_ok=True)
    result = CliRunner().invoke(app, ["run", str(study_file), "--out", str(out), "--detach"])
    assert result.exit_code == 0 and "driver started in the background" in result.output, result.output
    # the background driver is this process's child: wait for it to end (a hang guard, not a
    # speed limit), so that its log is complete and nothing of it outlives the test
    pid = int(re.search(r"pid (\d+)", result.output).group(1))
    deadline = time.monotonic() + 900

    def ended() -> int | None:  # its exit code once it ended (0 if subprocess's own cleanup reaped it)
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return 0
        return os.waitstatus_to_exitcode(status) if done else None

    while (code := ended()) is None and time.monotonic() < deadline:
        time.sleep(0.2)
    if code is None:
        os.kill(pid, signal.SIGKILL)
    assert code == 0, log.read_text()[-2000:]
    assert "2 runs: 2 already done, 0 finished now" in log.read_text()

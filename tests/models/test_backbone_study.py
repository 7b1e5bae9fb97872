"""Every backbone through the study runner: a study with a backbone axis on the synthetic target
(one short run per backbone), killed while training and run again, then analysed into the report."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pandas as pd
import pytest

from medtransfer.models import registry
from medtransfer.study.config import StudyConfig
from medtransfer.study.expand import expand
from tests.study.held import start_held, wait_held

STUDY = {
    "name": "backbones",
    "targets": [{"name": "synth", "dataset": "synthetic",
                 "options": {"n_patients": 12, "images_per_patient": 2, "size": 75}, "size": 75, "batch_size": 8}],
    "sources": [{"name": "random"}],
    "backbones": list(registry.names()),
    "strategies": ["no-freeze"],
    "k_folds": 4,
    "folds": [0],
    "training": {"epochs": 1, "lr": 1e-4, "threads": 1, "checkpoint_every_s": 0, "bn_momentum": 0.3,
                 "split_fractions": [0.75, 0.1, 0.15]},
    "analysis": {"sources": ["random", "random"], "channels": 4, "rows": 200, "repeats": 1, "bootstrap": 20,
                 "split": "all"},
}
LABELS = ["synth", "synth@densenet121", "synth@inception_v3", "synth@inception_resnet_v2"]


def test_backbone_axis_expands_to_labelled_runs(tmp_path):
    runs = expand(StudyConfig.parse(STUDY))
    assert [r.target_label for r in runs] == LABELS
    assert [r.source for r in runs] == ["random", "random@densenet121", "random@inception_v3",
                                        "random@inception_resnet_v2"]
    assert runs[1].run_id == "synth@densenet121/random-no-freeze/fold0"
    one = StudyConfig.parse({**STUDY, "backbones": ["resnet50"],
                             "sources": [{"name": "random"}, {"name": "imagenet", "backbone": "inception_v3"}]})
    assert [(r.target_label, r.source) for r in expand(one)] == [("synth", "random"),
                                                                ("synth@inception_v3", "imagenet@inception_v3")]
    with pytest.raises(Exception, match="unknown backbone 'vgg'"):
        StudyConfig.parse({**STUDY, "backbones": ["vgg"]})


def _start(study_file, out):
    env = {**os.environ, "MEDTRANSFER_QUIET": "1"}
    code = "from medtransfer.cli import main; main()"
    return subprocess.Popen([sys.executable, "-c", code, "run", str(study_file), "--out", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.mark.slow
def test_each_backbone_fine_tunes_resumes_after_a_kill_and_reaches_the_report(tmp_path):
    study = StudyConfig.parse({**STUDY, "training": {**STUDY["training"], "cache_dir": str(tmp_path / "cache")}})
    study_file = tmp_path / "study.yaml"
    study_file.write_text(study.to_yaml())
    out = tmp_path / "study"
    # held once a run of a graph backbone has trained its epoch (history written, not DONE): killed there
    process = start_held(study_file, out, tmp_path / "barrier", method="write_history", pattern="synth@*/*/fold0")
    wait_held(process, tmp_path / "barrier", timeout_s=600)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done_before = {m: m.stat().st_mtime_ns for m in out.glob("runs/**/DONE")}
    final = _start(study_file, out)
    _, err = final.communicate(timeout=600)
    assert final.returncode == 0, err.decode()[-3000:]
    for marker, stamp in done_before.items():
        assert marker.stat().st_mtime_ns == stamp, f"{marker} was redone"
    auc = pd.read_csv(out / "results" / "auc.csv")
    assert sorted(auc["target"].unique()) == sorted(LABELS) and auc["auc"].between(0, 1).all()
    for label, name in zip(LABELS, registry.names()):
        from medtransfer.models import load_checkpoint

        run = out / "runs" / label / "random-no-freeze" / "fold0"
        model, _ = load_checkpoint(next(run.glob("*.pt")) if list(run.glob("*.pt")) else next(run.glob("**/best.pt")))
        assert registry.backbone_of(model) == name
    from typer.testing import CliRunner

    from medtransfer.cli import app

    result = CliRunner().invoke(app, ["analyze", str(out), "--threads", "1", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    report = (out / "report.html").read_text()
    for label in LABELS:
        assert label in report

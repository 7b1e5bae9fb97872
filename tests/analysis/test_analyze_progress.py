"""`medtransfer analyze` through the command line to a pipe: the analysis settings as options,
and one plain progress line per stage on stderr."""

import math
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch

from tests.analysis.fake_study import make_study

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    from medtransfer.models import ResNet50, keras_init_, save_checkpoint

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("study")
    (root / "sources").mkdir()
    paths = {"alpha": str(save_checkpoint(root / "sources" / "alpha.pt", keras_init_(ResNet50(), seed=11),
                                          {"normalization": "caffe", "classes": []}))}

    def checkpoint(run_dir, config):
        model = keras_init_(ResNet50(num_classes=2), seed=hash((config["source_name"], config["strategy"])) % 1000)
        save_checkpoint(run_dir / "checkpoints" / "best.pt", model, {"normalization": "caffe", "classes": ["c0", "c1"]})

    extra = {"target": "synthetic", "target_name": "knee", "size": 32, "k_folds": 5, "cache_dir": str(root / "cache"),
             "target_options": {"n_patients": 30, "images_per_patient": 2, "size": 32, "seed": 0}}
    return make_study(root, sources=("alpha", "random"), folds=1, checkpoint=checkpoint, config_extra=extra,
                      source_paths=paths)


def test_analyze_takes_the_analysis_settings_as_options_and_reports_each_stage_on_a_pipe(study_dir):
    env = {**os.environ, "MEDTRANSFER_PROGRESS": "0", "COLUMNS": "80"}
    env.pop("MEDTRANSFER_QUIET", None)
    done = subprocess.run(
        [sys.executable, "-c", "from medtransfer.cli import main; main()", "analyze", str(study_dir), "--partial",
         "--rows", "200", "--channels", "4", "--repeats", "2", "--measures", "cka", "--layers", "conv1,block1",
         "--resamples", "7", "--permutations", "0", "--ci", "0.8", "--threads", "1", "--device", "cpu",
         "--format", "png", "--bootstrap", "50"],
        capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    for stage in ("Table 2", "prediction similarity", "knee fold 0: activations",
                  "knee fold 0: similarity, intervals and nulls", "figures", "report"):
        assert any(line.startswith("analyze: " + stage) and " done in " in line for line in lines), (stage, lines)
    assert done.stdout.strip().startswith("report: ")
    sim = pd.read_csv(study_dir / "analysis" / "similarity.csv")
    assert set(sim["measure"]) == {"cka"} and set(sim["layer"]) == {"conv1", "block1"}
    assert (sim["repeats"] == 2).all() and (sim["channels"] == 4).all()
    assert sim["null_mean"].isna().all() and sim["p_value"].isna().all()  # --permutations 0: no null
    finite = sim.dropna(subset=["ci_low"])
    assert len(finite) > 0 and all(lo <= hi for lo, hi in zip(finite["ci_low"], finite["ci_high"]))
    report = (study_dir / "report.html").read_text()
    assert "0.8" in report and all(math.isfinite(v) for v in sim["mean"])

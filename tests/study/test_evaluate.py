"""`evaluate:` in the study file and `medtransfer evaluate`: corruption and cross-target files for
every finished run, nothing retrained, nothing recomputed that is sealed."""

from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

from medtransfer.analysis.inventory import read_study
from medtransfer.analysis.robustness import cross_target_table
from medtransfer.cli import app
from medtransfer.data import load_manifest
from medtransfer.errors import ConfigError
from medtransfer.study.config import StudyConfig
from medtransfer.study.runner import run_study
from medtransfer.training.record import RunDir, find_run_dirs, read_record
from medtransfer.training.robustness import evaluate_on_dataset

from .conftest import TINY, tiny_study

OTHER = {"name": "other", "dataset": "synthetic", "classes": {"class0": "class0", "class1": "class1"},
         "options": {"n_patients": 6, "images_per_patient": 2, "size": 32, "seed": 9}}


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    base = tmp_path_factory.mktemp("evaluated")
    study = tiny_study(base, evaluate={"corruptions": ["contrast"], "targets": [OTHER]})
    out = base / "study"
    report = run_study(study, out)
    assert report.finished == 2
    return out


def test_run_evaluates_what_the_study_file_asks(evaluated):
    runs = find_run_dirs(evaluated)
    assert len(runs) == 2
    for run in runs:
        assert sorted(run.corruption_files()) == ["contrast"] and sorted(run.transfer_files()) == ["other"]
        record = read_record(run.path)  # every added file verified against DONE
        frame = pd.read_csv(run.transfer_file("other"))
        assert list(frame.columns) == ["image_id", "label", "p_0", "p_1"] and len(frame) == 12
        assert record.classes == ["class0", "class1"]


def test_evaluate_command_adds_corruptions_without_recomputing_sealed_files(evaluated):
    run = find_run_dirs(evaluated)[0]
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in [run.corruption_file("contrast"),
                                                                  run.transfer_file("other")]}
    result = CliRunner().invoke(app, ["evaluate", str(evaluated), "--corruptions", "jpeg,contrast"])
    assert result.exit_code == 0, result.output
    assert "2 evaluated now (2 corruption files)" in " ".join(result.output.split())
    assert sorted(run.corruption_files()) == ["contrast", "jpeg"]
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in before} == before
    again = CliRunner().invoke(app, ["evaluate", str(evaluated), "--corruptions", "jpeg"])
    assert again.exit_code == 0 and "0 evaluated now" in " ".join(again.output.split())


def test_cross_target_table_from_the_transfer_files(evaluated):
    table, missing = cross_target_table(read_study(evaluated))
    assert missing == [] and len(table) == 1
    row = table.iloc[0]
    assert (row["evaluated_on"], row["folds"], row["n"]) == ("other", 2, 12)
    assert 0 <= row["auc_low"] <= row["auc"] <= row["auc_high"] <= 1


def test_a_swapped_class_map_swaps_the_labels_only(evaluated, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(find_run_dirs(evaluated)[0].path, run)
    manifest = load_manifest("synthetic", None, **OTHER["options"])
    assert evaluate_on_dataset(run, "swapped", manifest, {"class0": "class1", "class1": "class0"})
    assert not evaluate_on_dataset(run, "swapped", manifest, {"class0": "class1", "class1": "class0"})
    straight = pd.read_csv(RunDir(run).transfer_file("other"))
    swapped = pd.read_csv(RunDir(run).transfer_file("swapped"))
    assert (swapped["label"] == 1 - straight["label"]).all()
    assert swapped[["p_0", "p_1"]].equals(straight[["p_0", "p_1"]])
    with pytest.raises(ConfigError, match=r"\['tumour'\] are not classes of its dataset"):
        evaluate_on_dataset(run, "bad", manifest, {"tumour": "class0"})
    with pytest.raises(ConfigError, match=r"\['lesion'\] are not classes of the network"):
        evaluate_on_dataset(run, "bad", manifest, {"class0": "lesion"})


def test_the_evaluate_section_is_checked_at_parse():
    with pytest.raises(ConfigError, match="fog"):
        StudyConfig.parse({**TINY, "evaluate": {"corruptions": ["fog"]}})
    with pytest.raises(ConfigError, match="networks.*'knee'"):
        StudyConfig.parse({**TINY, "evaluate": [{**OTHER, "networks": ["knee"]}]})
    listed = StudyConfig.parse({**TINY, "evaluate": [OTHER]})
    assert [t.name for t in listed.evaluate.targets] == ["other"] and listed.evaluate.corruptions == []
    assert StudyConfig.parse({**TINY, "evaluate": {"corruptions": "all"}}).evaluate.corruptions[0] == "gaussian_noise"


def test_nothing_to_evaluate_is_a_clear_error(tmp_path):
    out = tmp_path / "study"
    out.mkdir()
    (out / "study.resolved.yaml").write_text(tiny_study(tmp_path).to_yaml())
    result = CliRunner().invoke(app, ["evaluate", str(out)])
    assert result.exit_code != 0
    assert isinstance(result.exception, ConfigError) and "nothing to evaluate" in str(result.exception)

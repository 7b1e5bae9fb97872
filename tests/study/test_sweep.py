"""Setting axes (``sweep:``, a source's ``training:``): cells, labels, clear errors, and a study
that gains an axis value keeps its finished runs."""

import signal

import pytest
import yaml

from medtransfer.errors import ConfigError
from medtransfer.study.config import StudyConfig, shipped_config
from medtransfer.study.expand import expand
from medtransfer.study.sweep import labelled, setting_label, settings, split_label

from .conftest import TINY, tiny_study, write_yaml
from .held import start_held, wait_held


def _study(**changes) -> StudyConfig:
    return StudyConfig.parse({**TINY, **changes})


def test_no_sweep_keeps_todays_run_ids_and_a_sweep_of_the_studys_own_value_too():
    plain = [c.run_id for c in expand(_study())]
    assert plain == ["synth/random-no-freeze/fold0", "synth/random-no-freeze/fold1"]
    assert [c.run_id for c in expand(_study(sweep={}))] == plain
    assert [c.run_id for c in expand(_study(sweep={"lr": [1e-4]}))] == plain  # the study's own lr
    assert [c.run_id for c in expand(_study(sweep={"lr": [0.0001], "epochs": [2]}))] == plain


def test_a_mapping_expands_into_every_combination_labelled_by_its_non_default_settings():
    runs = expand(_study(sweep={"lr": [1e-4, 3e-3], "epochs": [2, 1]}))
    assert len(runs) == 4 * 2
    by_label = {c.target_label: (c.lr, c.epochs) for c in runs}
    assert by_label == {"synth": (1e-4, 2), "synth~epochs=1": (1e-4, 1), "synth~lr=0.003": (3e-3, 2),
                        "synth~epochs=1,lr=0.003": (3e-3, 1)}
    assert "synth~epochs=1,lr=0.003/random-no-freeze/fold1" in {c.run_id for c in runs}
    assert len({c.run_id for c in runs}) == len(runs)
    # every cell reads the same folds file: the settings compare on the same images
    assert {c.folds_file for c in expand(_study(sweep={"lr": [1e-4, 3e-3]}), out=None)} == {None}


def test_adding_an_axis_value_or_an_axis_keeps_every_earlier_cell():
    before = {c.run_id: c for c in expand(_study(sweep={"lr": [3e-4, 3e-3]}))}
    after = {c.run_id: c for c in expand(_study(sweep={"lr": [3e-4, 3e-3, 1e-2]}))}
    assert set(before) < set(after) and all(after[i] == before[i] for i in before)
    more = {c.run_id for c in expand(_study(sweep={"lr": [3e-4, 3e-3, 1e-2], "epochs": [2, 1]}))}
    assert set(after) < more  # epochs 2 is the study's own: the earlier cells keep their labels


def test_a_list_of_settings_runs_those_settings_only():
    runs = expand(_study(sweep=[{}, {"lr": 1e-3, "epochs": 1}], folds=[0]))
    assert [(c.target_label, c.lr, c.epochs) for c in runs] == [("synth", 1e-4, 2), ("synth~epochs=1,lr=0.001", 1e-3, 1)]


def test_the_label_is_relative_to_the_targets_own_settings():
    study = _study(targets=[{**TINY["targets"][0]}, {**TINY["targets"][0], "name": "big", "batch_size": 16}],
                   sweep={"batch_size": [8, 16]})
    labels = sorted({c.target_label for c in expand(study)})
    assert labels == ["big", "big~batch_size=8", "synth", "synth~batch_size=16"]


def test_a_sources_own_settings_apply_to_its_cells_only():
    study = _study(sources=[{"name": "random"}, {"name": "imagenet", "training": {"lr": 1e-3, "patience": 5}}],
                   strategies=["no-freeze"], folds=[0])
    runs = {c.source_label: c for c in expand(study)}
    assert (runs["random"].lr, runs["random"].patience) == (1e-4, 30)
    assert (runs["imagenet"].lr, runs["imagenet"].patience) == (1e-3, 5)
    assert runs["imagenet"].run_id == "synth/imagenet-no-freeze/fold0"  # its name identifies it


@pytest.mark.parametrize("change, message", [
    ({"sweep": {"lr": 1e-4}}, r"sweep: lr: expected a non-empty list"),
    ({"sweep": {"lr": []}}, r"sweep: lr: expected a non-empty list"),
    ({"sweep": {"learning_rate": [1e-4]}}, r"sweep: setting 0 .*unknown training constant.*learning_rate"),
    ({"sweep": {"lr": ["fast"]}}, r"sweep: setting 0 \(lr=fast\): lr: .*number"),
    ({"sweep": {"lr": [-1.0]}}, r"sweep: setting 0 .*lr: .*greater than 0"),
    ({"sweep": {"epochs": [True]}}, r"sweep: setting 0 .*epochs: expected a number"),
    ({"sweep": {"fold": [0, 1]}}, r"set by the grid"),
    ({"sweep": {"threads": [1, 2]}}, r"how a run executes"),
    ({"sweep": {"split_fractions": [[0.75, 0.1, 0.15]]}}, r"cut once for the whole study"),
    ({"sweep": {"lr": [1e-4, 0.0001]}}, r"settings 0 and 1 are the same"),
    ({"sweep": [{}, 3]}, r"item\(s\) \[1\] are not mappings"),
    ({"sweep": "lr"}, r"expected a mapping"),
    ({"sources": [{"name": "random", "training": {"lr": 1e-3}}], "sweep": {"lr": [1e-4, 1e-3]}},
     r"source 'random': its training sets \['lr'\], which the sweep varies"),
    ({"sources": [{"name": "random", "training": {"split_fractions": [0.75, 0.1, 0.15]}}]}, r"sources\.0\.training: .*a study-wide setting"),
    ({"sources": [{"name": "random", "training": {"lrr": 1}}]}, r"sources\.0\.training: unknown training constant"),
    ({"select": "test"}, r"select: .*'val'"),
])
def test_bad_sweeps_name_the_field_and_what_was_expected(tmp_path, change, message):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({**TINY, **change}))
    with pytest.raises(ConfigError, match=message) as caught:
        StudyConfig.from_yaml(path)
    assert str(path) in str(caught.value)


def test_two_settings_that_make_the_same_cell_are_refused():
    with pytest.raises(ConfigError, match="two settings give the same cell"):
        expand(_study(sweep=[{}, {"lr": 1e-4}]))  # lr 1e-4 is the study's own


def test_labels_split_back_and_settings_are_ordered():
    assert split_label(labelled("thyroid@densenet121", "lr=0.0001")) == ("thyroid@densenet121", "lr=0.0001")
    assert split_label("thyroid") == ("thyroid", "")
    assert setting_label({"lr": 1e-5, "epochs": 30, "hflip": None}) == "epochs=30,hflip=none,lr=1e-05"
    assert settings({"a": [1, 2], "b": [3]}) == [{"a": 1, "b": 3}, {"a": 2, "b": 3}]
    assert settings({}) == [{}] and settings(None) == [{}]


def test_the_resolved_study_keeps_the_sweep(tmp_path):
    study = _study(sweep={"lr": [3e-4, 3e-3]}, select="val")
    again = StudyConfig.from_yaml(write_yaml(tmp_path / "s.yaml", study))
    assert again.sweep == {"lr": [3e-4, 3e-3]} and again.select == "val"
    assert [c.run_id for c in expand(again)] == [c.run_id for c in expand(study)]


def test_mei_replication_runs_the_papers_and_mei_et_als_settings():
    runs = expand(StudyConfig.from_yaml(shipped_config("mei-replication")))
    assert {(r.lr, r.epochs, r.patience) for r in runs} == {(1e-5, 200, 30), (1e-4, 30, 30)}
    assert {r.target_label for r in runs} >= {"thyroid", "thyroid~epochs=30,lr=0.0001",
                                              "thyroid-subset@densenet121~epochs=30,lr=0.0001"}
    assert len(runs) == 2 * 80  # 2 targets x 2 sources x 4 backbones x 5 folds, per setting


def _one_epoch(tmp_path, **changes):
    return tiny_study(tmp_path, folds=[0], strategies=["no-freeze"], training={"epochs": 1}, **changes)


def test_adding_an_axis_value_to_a_finished_study_trains_only_the_new_cells(tmp_path):
    from medtransfer.study.runner import run_study

    out = tmp_path / "study"
    first = run_study(_one_epoch(tmp_path), out)
    assert (first.total, first.finished) == (1, 1)
    done = {p: p.stat().st_mtime_ns for p in out.glob("runs/**/DONE")}
    second = run_study(_one_epoch(tmp_path, sweep={"lr": [1e-4, 3e-3]}), out)  # 1e-4: the study's own lr
    assert (second.total, second.skipped, second.finished) == (2, 1, 1)
    assert all(p.stat().st_mtime_ns == t for p, t in done.items())
    assert (out / "runs" / "synth~lr=0.003" / "random-no-freeze" / "fold0" / "DONE").is_file()
    third = run_study(_one_epoch(tmp_path, sweep={"lr": [1e-4, 3e-3, 1e-3]}), out)
    assert (third.total, third.skipped, third.finished) == (3, 2, 1)
    from medtransfer.study.status import study_progress

    rows = study_progress(out)["runs"]
    assert [(r["target"], r["state"]) for r in rows] == [("synth", "done"), ("synth~lr=0.003", "done"),
                                                         ("synth~lr=0.001", "done")]


@pytest.mark.slow
def test_a_swept_study_killed_in_a_run_resumes_to_the_end(tmp_path):
    study = tiny_study(tmp_path, folds=[0], strategies=["no-freeze"], sweep={"lr": [3e-4, 3e-3]})
    study_file = write_yaml(tmp_path / "study.yaml", study)
    out = tmp_path / "study"
    # held after the first checkpoint of the second setting's run, then killed: one run finished,
    # one interrupted after an epoch
    process = start_held(study_file, out, tmp_path / "barrier", method="checkpoint", pattern="synth~lr=0.003/*/fold0")
    try:
        held = wait_held(process, tmp_path / "barrier")
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert (held / "checkpoints" / "last.pt").is_file() and not (held / "DONE").exists()
    finished = {p: p.stat().st_mtime_ns for p in out.glob("runs/**/DONE")}
    from medtransfer.study.runner import run_study

    report = run_study(StudyConfig.from_yaml(study_file), out)
    assert report.total == 2 and report.skipped == len(finished) and not report.failed
    assert all(p.stat().st_mtime_ns == t for p, t in finished.items())
    assert {p.parent.parent.parent.name for p in out.glob("runs/**/DONE")} == {"synth~lr=0.0003", "synth~lr=0.003"}

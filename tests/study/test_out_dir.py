"""``--out`` never overwrites what medtransfer did not write: a folder of the user's own files is
refused before anything is written, the user's study file is never rewritten (the resolved study
has a name of its own), studies written with ``study.yaml`` stay readable, and a report.html of the
user's is never replaced."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
from typer.testing import CliRunner

from medtransfer.cli import app
from medtransfer.errors import ConfigError
from medtransfer.study.runner import run_study
from medtransfer.study.status import study_progress
from medtransfer.study.store import check_out_dir, read_study_file
from medtransfer.training.record import LEGACY_STUDY_FILE, STUDY_FILE, recorded_study_file

from .conftest import tiny_study

USER_YAML = "# my study, with my comments\n"


def _snapshot(folder):  # noqa: ANN001, ANN202
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("files", [
    {"results/auc.csv": "mine\n"},  # the case of the issue: a colliding output file
    {"notes.txt": "x"},
    {"study.yaml": USER_YAML, "data/a.png": "x"},  # the user's study file beside other files
    {".hidden": "x"},
])
def test_a_folder_of_the_users_files_is_refused_untouched(tmp_path, files):
    out = tmp_path / "mine"
    for name, text in files.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(text)
    before = _snapshot(out)
    with pytest.raises(ConfigError, match="not empty .* not a medtransfer study") as caught:
        run_study(tiny_study(tmp_path), out)
    assert str(out) in str(caught.value)
    assert _snapshot(out) == before


def test_the_cli_refuses_before_the_background_driver_writes_its_log(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    study_file = tmp_path / "s.yaml"
    study_file.write_text(tiny_study(tmp_path).to_yaml())
    result = CliRunner().invoke(app, ["run", str(study_file), "--out", str(out), "--detach"])
    assert isinstance(result.exception, ConfigError) and "not a medtransfer study" in str(result.exception)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_run_study_yaml_out_dot_keeps_the_users_file(tmp_path, monkeypatch):
    out = tmp_path / "project"
    out.mkdir()
    user_text = USER_YAML + tiny_study(tmp_path).to_yaml()
    (out / "study.yaml").write_text(user_text)
    monkeypatch.chdir(out)
    for _ in range(2):  # a first run, then a rerun in what is now a study
        result = CliRunner().invoke(app, ["run", "study.yaml", "--out", "."])
        assert result.exit_code == 0, result.output
        assert (out / "study.yaml").read_text() == user_text
    assert recorded_study_file(out) == out / STUDY_FILE
    assert read_study_file(out).name == "tiny" and all(s["state"] == "done" for s in study_progress(out)["runs"])


def test_a_relative_out_runs_and_reruns(tmp_path, monkeypatch):
    """``--out study`` relative to the working directory: the study's own folds file is found
    (it was once looked for under study/study/folds/)."""
    (tmp_path / "s.yaml").write_text(tiny_study(tmp_path).to_yaml())
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        result = CliRunner().invoke(app, ["run", "s.yaml", "--out", "study"])
        assert result.exit_code == 0, result.output
    assert all(s["state"] == "done" for s in study_progress(tmp_path / "study")["runs"])


def test_a_study_written_with_study_yaml_stays_readable(finished_study, tmp_path):
    _, reference = finished_study
    old = tmp_path / "old"
    shutil.copytree(reference, old)
    (old / STUDY_FILE).rename(old / LEGACY_STUDY_FILE)  # the layout earlier versions wrote
    legacy_text = (old / LEGACY_STUDY_FILE).read_text()
    assert recorded_study_file(old) == old / LEGACY_STUDY_FILE
    assert [s["state"] for s in study_progress(old)["runs"]] == ["done", "done"]
    check_out_dir(old)  # a study: accepted
    report = run_study(tiny_study(tmp_path), old)
    assert report.skipped == 2 and (old / LEGACY_STUDY_FILE).read_text() == legacy_text
    # a study.yaml without runs/ beside it is the user's, not a record
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / LEGACY_STUDY_FILE).write_text(legacy_text)
    assert recorded_study_file(fresh) is None


def test_analyze_never_replaces_a_report_of_the_users(tmp_path):
    from medtransfer.analysis import analyze
    from medtransfer.analysis.report import ReportContent, write_report

    (tmp_path / "runs").mkdir()
    mine = tmp_path / "report.html"
    mine.write_text("<html>my own report</html>")
    with pytest.raises(ConfigError, match="not written by medtransfer"):
        analyze(tmp_path)
    def content(title):  # noqa: ANN001, ANN202
        return ReportContent(title=title, config_text="", settings={}, table2=pd.DataFrame(), figures=[])

    with pytest.raises(ConfigError, match=str(mine)):
        write_report(content("t"), mine)
    assert mine.read_text() == "<html>my own report</html>"
    assert not (tmp_path / "analysis").exists()
    mine.unlink()  # a report medtransfer wrote is replaced
    write_report(content("medtransfer analysis: t"), mine)
    first = mine.read_text()
    write_report(content("medtransfer analysis: u"), mine)
    assert mine.read_text() != first

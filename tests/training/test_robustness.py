"""A finished run under corruptions: severity 0 is predictions.csv, seeded files, sealed in DONE,
resumed after a kill without recomputing what was sealed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from medtransfer.data import corruptions
from medtransfer.errors import DataError
from medtransfer.training.record import DamagedRunError, RunDir, read_record
from medtransfer.training.robustness import CorruptionEvaluator, evaluate_corruptions, read_corruption_file
from medtransfer.training.run import run_settings, train_run


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One finished tiny run (module-wide: training is the slow part); tests copy it."""
    from tests.training.conftest import tiny_config

    base = tmp_path_factory.mktemp("robust")
    out = base / "run"
    train_run(tiny_config(base, epochs=1), out)
    return out


@pytest.fixture
def run(finished, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(finished, copy)
    return copy


def test_severity_zero_reproduces_the_clean_predictions_byte_for_byte(run):
    record = read_record(run)
    with run_settings(record.config):
        evaluator = CorruptionEvaluator.open(record)
        for name in ("gaussian_noise", "jpeg"):
            assert evaluator.predict(name, 0).to_csv(index=False) == RunDir(run).predictions.read_text()


def test_files_are_sealed_in_done_and_a_changed_file_is_damage(run):
    assert evaluate_corruptions(run, ["contrast", "gaussian_noise"]) == ["gaussian_noise", "contrast"]
    files = RunDir(run).corruption_files()
    assert sorted(files) == ["contrast", "gaussian_noise"]
    frame = read_corruption_file(files["contrast"])
    clean = read_record(run)  # full check passes, the new files included
    n = clean.metrics()["n"]
    assert len(frame) == 5 * n and sorted(set(frame["severity"])) == [1, 2, 3, 4, 5]
    assert (frame.groupby("severity")["image_id"].apply(list).map(len) == n).all()
    assert evaluate_corruptions(run, ["contrast"]) == []  # nothing left to do
    text = files["contrast"].read_text()
    files["contrast"].write_text(text.replace("0.", "1.", 1))
    with pytest.raises(DamagedRunError, match="contrast.csv"):
        read_record(run)


def test_seeded_corruptions_are_identical_run_to_run(run, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(run, other)
    names = [n for n in corruptions.NAMES if corruptions.CORRUPTIONS[n].random]
    evaluate_corruptions(run, names)
    evaluate_corruptions(other, names)
    for name in names:
        a, b = RunDir(run).corruption_file(name), RunDir(other).corruption_file(name)
        assert a.read_bytes() == b.read_bytes(), name
    # and the severities differ from each other and from the clean predictions
    frame = read_corruption_file(RunDir(run).corruption_file("gaussian_noise"))
    by = {s: f.filter(like="p_").to_numpy() for s, f in frame.groupby("severity")}
    assert not (by[1] == by[5]).all()


def test_a_killed_evaluation_resumes_without_recomputing_sealed_files(run):
    """A child evaluates, says when the first file is sealed and then blocks; it is killed there.
    The parent synchronises on that line (no sleeps)."""
    script = textwrap.dedent(f"""
        import sys
        from medtransfer.training.robustness import evaluate_corruptions

        def on_file(name):
            print(name, flush=True)
            sys.stdin.read()  # blocks: the parent kills this process here

        evaluate_corruptions({str(run)!r}, ["brightness", "contrast", "jpeg"], on_file=on_file)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True, env=dict(os.environ))
    try:
        first = child.stdout.readline().strip()
    finally:
        child.kill()
        child.wait()
    assert first == "contrast"  # table order: contrast comes before brightness
    sealed = RunDir(run).corruption_file(first)
    before = (sealed.stat().st_mtime_ns, sealed.stat().st_ino, sealed.read_bytes())
    # a file written but not sealed (killed between the two) is not taken for finished
    stray = RunDir(run).corruption_file("jpeg")
    stray.write_text("not a finished file\n")
    done = evaluate_corruptions(run, ["brightness", "contrast", "jpeg"])
    assert done == ["brightness", "jpeg"]
    assert (sealed.stat().st_mtime_ns, sealed.stat().st_ino, sealed.read_bytes()) == before
    assert read_corruption_file(stray)["severity"].max() == 5
    read_record(run)


def test_unfinished_or_legacy_runs_are_refused_by_name(run):
    (run / "DONE").write_text(json.dumps({"finished": 1.0}))
    with pytest.raises(DataError, match="DONE.*no digests"):
        evaluate_corruptions(run, ["contrast"])
    (run / "DONE").unlink()
    with pytest.raises(DataError, match="not finished"):
        evaluate_corruptions(run, ["contrast"])

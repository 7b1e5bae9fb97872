import pandas as pd
import pytest
from typer.testing import CliRunner

from medtransfer.cli import app
from medtransfer.errors import DataError


def test_analyze_names_a_directory_that_is_not_a_study(tmp_path):
    result = CliRunner().invoke(app, ["analyze", str(tmp_path / "nowhere")])
    assert isinstance(result.exception, DataError) and "nowhere" in str(result.exception)
    result = CliRunner().invoke(app, ["analyze", str(tmp_path)])
    assert isinstance(result.exception, DataError) and "runs/" in str(result.exception)


@pytest.mark.slow
def test_similarity_of_a_network_with_itself_is_one_at_every_layer(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # the pixel cache goes under ~/.cache
    out = tmp_path / "sim.csv"
    result = CliRunner().invoke(app, [
        "similarity", "random", "random", "--target", "synthetic", "--size", "32", "--images", "30", "--layers", "conv1,block1,block3",
        "--rows", "400", "--channels", "8", "--repeats", "2", "--out", str(out), "--device", "cpu", "--threads", "1",
    ])
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(out)
    assert list(frame["layer"]) == ["conv1", "conv1", "block1", "block1", "block3", "block3"]
    assert frame["mean"].to_numpy() == pytest.approx(1.0, abs=1e-6)
    assert (frame["channels"] == 8).all() and "conv1" in result.output

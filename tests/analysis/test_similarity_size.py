"""``medtransfer similarity`` compares checkpoints at the size they were trained at, and takes -o."""

import pytest
from typer.testing import CliRunner

from medtransfer.analysis.compare import DEFAULT_SIZE, resolve_size
from medtransfer.cli import app
from medtransfer.errors import ConfigError
from medtransfer.models import load_source, save_checkpoint
from medtransfer.models.checkpoint import checkpoint_meta


def _checkpoint(path, size):
    model = load_source("random", seed=0).model
    meta = {"normalization": "unit", "classes": []}
    if size is not None:
        meta["size"] = size
    return save_checkpoint(path, model, meta)


def test_resolve_size(tmp_path):
    a, b, old = _checkpoint(tmp_path / "a.pt", 24), _checkpoint(tmp_path / "b.pt", 40), _checkpoint(tmp_path / "c.pt", None)
    assert checkpoint_meta(a)["size"] == 24 and checkpoint_meta(tmp_path / "nothing.pt") is None
    assert resolve_size(None, str(a), "random") == (24, "the checkpoints' training size")
    assert resolve_size(None, str(a), str(a))[0] == 24
    assert resolve_size(64, str(a), str(b)) == (64, "given")
    assert resolve_size(None, str(old), "random")[0] == DEFAULT_SIZE
    with pytest.raises(ConfigError, match="24 px.*40 px.*--size"):
        resolve_size(None, str(a), str(b))


@pytest.mark.slow
def test_similarity_uses_the_checkpoint_size_and_loader_options(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # the pixel cache goes under ~/.cache
    a = _checkpoint(tmp_path / "a.pt", 24)
    result = CliRunner().invoke(app, [
        "similarity", str(a), "random", "--target", "synthetic", "-o", "n_patients=8", "-o", "images_per_patient=2",
        "-o", "size=24", "--layers", "conv1", "--rows", "200", "--channels", "4", "--repeats", "1",
        "--device", "cpu", "--threads", "1",
    ])
    assert result.exit_code == 0, result.output
    assert "24 px: the checkpoints' training size" in " ".join(result.output.split())
    result = CliRunner().invoke(app, ["similarity", str(a), "random", "--target", "synthetic", "-o", "nope=1"])
    assert result.exit_code != 0 and "nope" in str(result.exception)

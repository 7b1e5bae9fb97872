"""Any PyTorch model in similarity: hook extraction, the shape rules, and comparisons of foreign modules."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from medtransfer.analysis.modules import compare_modules
from medtransfer.models.resolve import Model, resolve_model
from medtransfer.study.analysis_settings import AnalysisSettings
from medtransfer.cli import app
from medtransfer.errors import ConfigError, WeightsError
from medtransfer.models import Normalization, ResNet50, keras_init_, registry
from medtransfer.models.hooks import LayerTap, ScriptTap, as_nchw, list_layers, tap

torch.set_num_threads(1)


class Plain(nn.Module):
    """A small network of another architecture than ResNet50 (the 'user's own module')."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 5, stride=2, padding=2), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(16, 24, 3, padding=1))
        self.act = nn.ReLU()
        self.fc = nn.Linear(24, 2)

    def forward(self, x):
        return self.fc(self.act(self.body(self.stem(x))).mean(dim=(2, 3)))


def make_plain() -> Plain:
    torch.manual_seed(0)
    return Plain()


class Tokens(nn.Module):
    """A ViT-like module: patches -> tokens (n, T, C) with a class token -> a transformer layer."""

    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, 16, 8, stride=8)
        self.cls = nn.Parameter(torch.zeros(1, 1, 16))
        self.block = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)
        return self.block(torch.cat([self.cls.expand(len(t), -1, -1), t], dim=1))


@pytest.fixture(scope="module")
def resnet() -> ResNet50:
    return keras_init_(ResNet50(), seed=0).eval()


@pytest.fixture(scope="module")
def pool() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (24, 32, 32, 3), dtype=np.uint8)


SETTINGS = AnalysisSettings(rows=300, channels=8, repeats=2, batch_size=8)


def test_hook_extraction_of_resnet50_equals_own_extraction_exactly(resnet):
    x = torch.randn(2, 3, 64, 64)
    modules = ["relu", "maxpool", "blocks.conv2_block3", "blocks.conv4_block1", "blocks.conv5_block3"]
    keras = ["conv1_relu", "pool1_pool", "conv2_block3_out", "conv4_block1_out", "conv5_block3_out"]
    with torch.no_grad():
        hooked = LayerTap(resnet, modules)(x)
        own = resnet.features(x, keras)
    for m, k in zip(modules, keras):
        assert torch.equal(hooked[m], own[k]), m
    # a block's last ReLU is shared by its three calls: the hook keeps the last, the block's output
    with torch.no_grad():
        shared = LayerTap(resnet, ["blocks.conv2_block3.relu"])(x)["blocks.conv2_block3.relu"]
    assert torch.equal(shared, own["conv2_block3_out"])
    # own names and module names mix in one pass
    with torch.no_grad():
        mixed = LayerTap(resnet, ["block1", "blocks.conv3_block1.bn3"])(x)
    assert torch.equal(mixed["block1"], own["conv2_block3_out"])
    assert mixed["blocks.conv3_block1.bn3"].shape == (2, 512, 8, 8)


def test_hooks_on_graph_backbones_and_unknown_names():
    model = registry.create("densenet121").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out = LayerTap(model, ["block2", "layers.pool3_conv"])(x)
    assert out["block2"].shape == (1, 512, 8, 8) and out["layers.pool3_conv"].shape == (1, 256, 8, 8)
    with pytest.raises(ConfigError, match="no module named 'layer9'.*named_modules"):
        LayerTap(Plain(), ["layer9"])


def test_shape_rules():
    n, t, c = 2, 5, 7
    tokens = torch.randn(n, t, c)
    assert torch.equal(as_nchw(tokens, "x")[:, :, :, 0], tokens.transpose(1, 2))
    assert torch.equal(as_nchw(tokens, "x", "channels_first")[:, :, :, 0], tokens)
    assert as_nchw(torch.randn(n, c), "x").shape == (n, c, 1, 1)
    assert as_nchw(torch.randn(n, c, 2, 3, 4), "x").shape == (n, c, 24, 1)
    assert as_nchw((torch.randn(n, c), torch.randn(n, 1)), "x").shape == (n, c, 1, 1)
    with pytest.raises(ConfigError, match="layer 'x' outputs shape \\(2,\\)"):
        as_nchw(torch.randn(n), "x")
    with pytest.raises(ConfigError, match="not a tensor"):
        as_nchw(None, "x")


def test_listing_shows_names_and_shapes(resnet):
    rows = list_layers(Tokens().eval(), torch.randn(1, 3, 32, 32))
    by_name = {r[0]: r for r in rows}
    assert by_name["patch"][2] == (1, 16, 4, 4) and by_name["block"][2] == (1, 17, 16)
    assert by_name["block"][3] == (16, 17, 1)  # tokens are positions, the class token included
    own = {r[0]: r for r in list_layers(resnet, torch.randn(1, 3, 64, 64))}
    assert own["conv2_block3_out"][1] == "keras layer" and own["blocks.conv2_block3"][2] == (1, 256, 16, 16)


def test_cca_of_a_module_with_itself_is_one_at_every_layer(pool):
    model = make_plain().eval()
    layers = ["stem", "stem.0", "body.1", "body", "act", "fc"]
    frame, log = compare_modules(model, model, pool, layers, settings=SETTINGS, device="cpu")
    assert list(frame["layer"].unique()) == layers
    np.testing.assert_allclose(frame["mean"], 1.0, atol=1e-6)
    assert log.passes == {"0:Plain": 1, "1:Plain": 1}


def test_resnet50_vs_plain_module_from_the_library(resnet, pool):
    a = Model(resnet, Normalization("caffe"), "resnet50")
    frame, log = compare_modules(a, make_plain().eval(), pool, ["conv1", "block1", "block3"],
                                 ["stem", "body.1", "body"], settings=SETTINGS, device="cpu")
    assert list(frame["layer"].unique()) == ["conv1~stem", "block1~body.1", "block3~body"]
    assert frame["mean"].between(0, 1 + 1e-9).all() and (frame["mean"] < 0.999).all()
    # conv1 (16 x 16) and stem (16 x 16) share a grid; block3 (2 x 2) and body (8 x 8) are pooled to 2 x 2
    assert frame.loc[frame.layer == "block3~body", "rows"].iloc[0] == 24 * 2 * 2
    assert all(v == 1 for v in log.passes.values())


def test_tokens_module_compares_with_itself(pool):
    model = Tokens().eval()
    frame, _ = compare_modules(model, model, pool, ["patch", "block"], settings=SETTINGS, device="cpu")
    np.testing.assert_allclose(frame["mean"], 1.0, atol=1e-6)


def test_torchscript_children_and_output(pool, tmp_path):
    model = make_plain().eval()
    path = tmp_path / "plain.pt"
    torch.jit.save(torch.jit.script(model), str(path))
    loaded = resolve_model(str(path))
    assert isinstance(tap(loaded.module, ["body"]), ScriptTap)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        got = tap(loaded.module, ["stem", "body", "output"])(x)
        ref = LayerTap(model, ["stem", "body"])(x)
        torch.testing.assert_close(got["body"], ref["body"])
        torch.testing.assert_close(got["output"][:, :, 0, 0], model(x))
    with pytest.raises(ConfigError, match="direct child 'stem.0'.*stem, body, act, fc"):
        tap(loaded.module, ["stem.0"])
    frame, _ = compare_modules(loaded, Model(model, loaded.normalize, "eager"), pool, ["stem", "body"],
                               settings=SETTINGS, device="cpu")
    np.testing.assert_allclose(frame["mean"], 1.0, atol=1e-5)


def test_factory_with_state_dict(tmp_path):
    state = make_plain().state_dict()
    torch.save(state, tmp_path / "plain.pth")
    resolved = resolve_model("tests.models.test_hooks:make_plain", state_dict=tmp_path / "plain.pth")
    assert torch.equal(resolved.module.fc.weight, state["fc.weight"]) and resolved.normalize.mode == "torch"
    del state["fc.bias"]
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(WeightsError, match="partial.pth does not fit.*fc.bias"):
        resolve_model("tests.models.test_hooks:make_plain", state_dict=tmp_path / "partial.pth")
    with pytest.raises(ConfigError, match="no attribute 'nope'"):
        resolve_model("tests.models.test_hooks:nope")
    with pytest.raises(ConfigError, match="cannot import"):
        resolve_model("no_such_package.mod:f")


@pytest.mark.slow
def test_similarity_cli_with_factory_torchscript_and_listing(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # the pixel cache goes under ~/.cache
    torch.save(make_plain().state_dict(), tmp_path / "plain.pth")
    torch.jit.save(torch.jit.script(make_plain().eval()), str(tmp_path / "plain.pt"))
    runner = CliRunner()
    common = ["--target", "synthetic", "--size", "32", "--images", "20", "--rows", "200", "--channels", "8",
              "--repeats", "2", "--device", "cpu", "--threads", "1"]
    out = tmp_path / "sim.csv"
    result = runner.invoke(app, ["similarity", "random", "tests.models.test_hooks:make_plain", "--layers", "conv1,block1",
                                 "--layers-b", "stem,body", "--state-dict-b", str(tmp_path / "plain.pth"),
                                 "--out", str(out), *common])
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(out)
    assert list(frame["layer"]) == ["conv1~stem"] * 2 + ["block1~body"] * 2 and frame["mean"].between(0, 1).all()
    result = runner.invoke(app, ["similarity", str(tmp_path / "plain.pt"), "tests.models.test_hooks:make_plain",
                                 "--layers", "stem,body", "--out", str(out), *common])
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(pd.read_csv(out)["mean"], 1.0, atol=1e-5)
    result = runner.invoke(app, ["weights", "layers", "tests.models.test_hooks:make_plain", "--size", "32"])
    assert result.exit_code == 0, result.output
    assert "body.1" in result.output and "(1, 16, 8, 8)" in result.output


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_comparison_on_cuda_matches_cpu(resnet, pool):
    import copy

    a = Model(copy.deepcopy(resnet), Normalization("caffe"), "resnet50")
    b = make_plain().eval()
    cpu, _ = compare_modules(a, b, pool, ["conv1", "block1"], ["stem", "body"], settings=SETTINGS, device="cpu")
    gpu, _ = compare_modules(a, b, pool, ["conv1", "block1"], ["stem", "body"], settings=SETTINGS, device="cuda")
    np.testing.assert_allclose(gpu["mean"], cpu["mean"], atol=5e-3)  # cuDNN may run convs in TF32
    for backbone in ("densenet121", "inception_v3"):
        model = registry.create(backbone).eval()
        x = torch.randn(2, 3, 80, 80)
        with torch.no_grad():
            ref = model.features(x)
            got = model.cuda().features(x.cuda())
        for name in ref:
            scale = ref[name].abs().max().item()
            assert (got[name].cpu() - ref[name]).abs().max().item() <= 2e-2 * scale, (backbone, name)

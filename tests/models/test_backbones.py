"""The registry and the three graph backbones without Keras: sizes, names, heads, checkpoints, .pth ports."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medtransfer.errors import ConfigError, WeightsError
from medtransfer.models import (
    ResNet50,
    export_port,
    identify_backbone,
    keras_init_,
    load_checkpoint,
    load_source,
    load_torch_port,
    read_port,
    registry,
    save_checkpoint,
)
from medtransfer.models.keras_graph import same_padding

torch.set_num_threads(1)

# keras.applications.X(include_top=False, weights=None).count_params(), moving statistics included
KERAS_PARAMS = {"densenet121": 7_037_504, "inception_v3": 21_802_784, "inception_resnet_v2": 54_336_736}
GRAPHS = list(KERAS_PARAMS)
# InceptionResNetV2 (54 M parameters) takes ~20 s through a checkpoint and a port on a busy CPU
GRAPHS_SLOW_LAST = GRAPHS[:2] + [pytest.param(GRAPHS[2], marks=pytest.mark.slow)]


@pytest.fixture(scope="module")
def models():
    return {name: keras_init_(registry.create(name), seed=1).eval() for name in GRAPHS}


def test_registry_names_and_lookup():
    assert registry.names() == ("resnet50", "densenet121", "inception_v3", "inception_resnet_v2")
    assert registry.get(None).name == "resnet50" and registry.get("InceptionV3").name == "inception_v3"
    assert registry.get("inception-resnet-v2").name == "inception_resnet_v2"
    assert isinstance(registry.create("resnet50"), ResNet50)
    with pytest.raises(ConfigError, match="unknown backbone 'vgg16'.*densenet121"):
        registry.get("vgg16")
    with pytest.raises(ConfigError, match="not a registered backbone"):
        registry.backbone_of(nn.Linear(2, 2))
    for spec in registry.registry().values():
        model = spec.create()
        assert registry.backbone_of(model) == spec.name
        assert len(model.keras_layers()) == spec.keras_layers
        assert set(spec.paper_layers) == {"conv1", "block1", "block2", "block3", "block4"}


@pytest.mark.parametrize("name", GRAPHS)
def test_keras_parameter_counts_and_constants(models, name):
    model = models[name]
    params = sum(p.numel() for p in model.parameters())
    moving = sum(b.numel() for n, b in model.named_buffers() if "running" in n)
    assert params + moving == KERAS_PARAMS[name]
    eps = 1.001e-5 if name == "densenet121" else 1e-3
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert m.eps == pytest.approx(eps) and m.momentum == pytest.approx(0.01)
        if isinstance(m, nn.Conv2d):
            # only Inception-ResNet's residual 1x1 convs (named blockX_i_conv) carry a bias
            assert (m.bias is not None) == (name == "inception_resnet_v2" and m.kernel_size == (1, 1)
                                            and any(mod is m for k, mod in model.keras_layers().items()
                                                    if k.startswith("block")))
    if name != "densenet121":  # scale=False: gamma is a fixed 1, not trained
        bn = model.keras_layers()["batch_normalization"]
        assert "weight" not in dict(bn.named_parameters()) and torch.equal(bn.weight, torch.ones(32))


@pytest.mark.parametrize("name", GRAPHS)
def test_stage_outputs_shapes_strides_and_copies(models, name):
    model = models[name]
    spec = registry.get(name)
    size = spec.min_size if name != "densenet121" else 64
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        feats = model.features(x)
        assert list(feats) == list(spec.paper_layers.values())
        widths = [t.shape[-1] for t in feats.values()]
        assert widths == sorted(widths, reverse=True) and feats[spec.paper_layers["block4"]].shape[1] == spec.features
        short = model.features(x, ["block2", "conv1"])
        assert list(short) == [spec.paper_layers["conv1"], spec.paper_layers["block2"]]
        torch.testing.assert_close(short[spec.paper_layers["block2"]], feats[spec.paper_layers["block2"]])
        pooled = model.features(x, ["avg_pool"])["avg_pool"]
        torch.testing.assert_close(pooled, feats[spec.paper_layers["block4"]].mean(dim=(2, 3)))
        torch.testing.assert_close(model.embed(x), pooled)
        every = model.features(x, spec.block_layers)
        assert list(every) == list(spec.block_layers)
    with pytest.raises(ConfigError, match="unknown .* layer 'nope'"):
        model.features(x, ["nope"])


def test_same_padding_rule():
    assert same_padding(8, 3, 1) == (1, 1) and same_padding(8, 3, 2) == (0, 1)  # TF: the extra pixel after
    assert same_padding(7, 3, 2) == (1, 1) and same_padding(5, 1, 1) == (0, 0)


@pytest.mark.parametrize("name", GRAPHS_SLOW_LAST)
def test_head_checkpoint_and_port_roundtrip(models, name, tmp_path):
    spec = registry.get(name)
    model = spec.create(num_classes=3)
    missing, unexpected = model.load_state_dict(models[name].state_dict(), strict=False)
    assert sorted(missing) == ["head.1.bias", "head.1.weight"] and not unexpected
    model.eval()
    x = torch.randn(1, 3, 80, 80)
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (1, 3) and model.head[1].in_features == spec.features
    loaded, meta = load_checkpoint(save_checkpoint(tmp_path / "c.pt", model, {"normalization": "unit", "classes": ["a", "b", "c"]}))
    assert registry.backbone_of(loaded) == name and meta["classes"] == ["a", "b", "c"]
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), logits)
    path, digest = export_port(tmp_path / f"{name}.pth", model, origin="test")
    payload = torch.load(path, weights_only=True)
    assert payload["backbone"] == name and payload["sha256"] == digest and len(digest) == 64
    assert not any(k.startswith("head.") for k in payload["state_dict"])
    fresh = spec.create()
    fresh.load_state_dict(payload["state_dict"])  # a plain state dict for users: no medtransfer needed
    again = spec.create()
    report = load_torch_port(path, again)
    assert report.layout == "torch-port" and f"sha256 {digest}" in report.notes[0]
    with torch.no_grad():
        torch.testing.assert_close(again.eval().embed(x), model.embed(x))
    assert identify_backbone(path) == name
    source = load_source(path)
    assert source.backbone == name and source.normalize.mode == spec.normalization
    with pytest.raises(WeightsError, match=f"holds a {name} backbone, the model is a resnet50"):
        load_torch_port(path, ResNet50())
    with pytest.raises(WeightsError, match="holds a .*not a resnet50|resnet50"):
        load_source(path, backbone="resnet50")


def test_tampered_or_truncated_port_refused(models, tmp_path):
    path, _ = export_port(tmp_path / "d.pth", models["densenet121"])
    payload = torch.load(path, weights_only=True)
    payload["state_dict"]["layers.conv1_conv.weight"][0, 0, 0, 0] += 1.0
    torch.save(payload, tmp_path / "edited.pth")
    with pytest.raises(WeightsError, match="edited.pth.*digest.*refused"):
        read_port(tmp_path / "edited.pth")
    plain = {k: v for k, v in models["densenet121"].state_dict().items() if k != "layers.relu.weight"}
    plain.pop("layers.bn.weight")
    torch.save(plain, tmp_path / "plain.pth")
    model = registry.create("densenet121")
    before = model.layers["conv1_conv"].weight.clone()
    with pytest.raises(WeightsError, match="layers.bn.weight is missing"):
        load_torch_port(tmp_path / "plain.pth", model)
    assert torch.equal(model.layers["conv1_conv"].weight, before)
    nan = dict(models["densenet121"].state_dict())
    nan["layers.conv2_block1_1_conv.weight"] = nan["layers.conv2_block1_1_conv.weight"].clone()
    nan["layers.conv2_block1_1_conv.weight"][0, 0, 0, 0] = float("nan")
    export_port(tmp_path / "nan.pth", _with(models["densenet121"], nan))
    with pytest.raises(WeightsError, match="nan.pth.*conv2_block1_1_conv.*NaN"):
        load_torch_port(tmp_path / "nan.pth", model)
    assert torch.equal(model.layers["conv1_conv"].weight, before)
    data = path.read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="cut.pth"):
        load_torch_port(tmp_path / "cut.pth", model)


def _with(model, state):
    clone = registry.create(registry.backbone_of(model))
    clone.load_state_dict(state)
    return clone


@pytest.mark.parametrize("name", GRAPHS)
def test_random_source_per_backbone(name):
    a, b = load_source("random", seed=3, backbone=name), load_source("random", seed=3, backbone=name)
    assert a.backbone == name and registry.backbone_of(a.model) == name and not a.model.training
    assert a.normalize.mode == registry.get(name).normalization
    for (k, va), vb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(va, vb), k


def test_export_command_and_info(tmp_path):
    from typer.testing import CliRunner

    from medtransfer.cli import app

    runner = CliRunner()
    out = tmp_path / "iv3.pth"
    result = runner.invoke(app, ["weights", "export", "random", str(out), "--backbone", "inception_v3", "--seed", "2"])
    assert result.exit_code == 0, result.output
    digest = read_port(out)["sha256"]
    assert f"sha256: {digest}" in result.output and "backbone: inception_v3" in result.output
    result = runner.invoke(app, ["weights", "info", str(out)])
    assert result.exit_code == 0, result.output
    assert "backbone: inception_v3 (Keras InceptionV3)" in result.output and f"sha256 {digest}" in result.output
    assert "loads: yes (188 InceptionV3 layers)" in result.output
    ours = load_source("random", seed=2, backbone="inception_v3").model
    theirs = load_source(out).model
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), theirs.state_dict().values()))


def test_each_backbone_is_defined_by_its_module_alone():
    """The registry lists a module per name; the module's SPEC holds every fact of the backbone,
    its published weights included (what the download reads), and names are checked without it."""
    import importlib
    import subprocess
    import sys

    from medtransfer.models import download

    for name, (module, _) in registry.BACKBONES.items():
        spec = importlib.import_module(f"medtransfer.models.{module}").SPEC
        assert registry.get(name) is spec and spec.name == name and registry.canonical(spec.keras_name) == name
        weights = spec.imagenet
        assert download.imagenet_file(name) == (weights.url, weights.md5, weights.file)
        assert weights.file.endswith("_notop.h5") and len(weights.md5) == 32 and spec.radimagenet
    code = ("import sys; from medtransfer.models import registry; "
            "print(registry.names(), registry.canonical('Inception-V3'), 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert done.stdout.split()[-2:] == ["inception_v3", "False"]

"""ResNet50 structure, named features, head, Keras constants, init and checkpoints."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from medtransfer.errors import ConfigError, WeightsError
from medtransfer.models import (
    BLOCK_LAYERS,
    PAPER_LAYERS,
    TAP_LAYERS,
    Normalization,
    ResNet50,
    keras_init_,
    load_checkpoint,
    save_checkpoint,
)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model() -> ResNet50:
    net = ResNet50(num_classes=3)
    keras_init_(net, seed=1)
    # non-trivial BatchNorm statistics so eval mode is not an identity
    gen = torch.Generator().manual_seed(0)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    return net.eval()


def test_keras_parameter_count_and_layer_names(model):
    # keras.applications.ResNet50(include_top=False).count_params() = 23,587,712 incl. BN moving stats
    trainable = sum(p.numel() for p in model.backbone_parameters())
    assert trainable == 23_534_592
    moving = sum(b.numel() for n, b in model.named_buffers() if "running" in n)
    assert trainable + moving == 23_587_712
    layers = model.keras_layers()
    assert len(layers) == 2 + 2 * (16 * 3 + 4)  # stem + 3 convs per block + 4 shortcuts, conv+bn each
    assert "conv2_block1_0_conv" in layers and "conv2_block2_0_conv" not in layers
    assert all(isinstance(m, nn.BatchNorm2d) for n, m in layers.items() if n.endswith("_bn"))


def test_v1_layout_and_keras_constants(model):
    blocks = dict(model.blocks.items())
    for s, stride in ((2, 1), (3, 2), (4, 2), (5, 2)):
        first = blocks[f"conv{s}_block1"]
        assert first.conv1.stride == (stride, stride) and first.conv0.stride == (stride, stride)
        assert first.conv2.stride == (1, 1)  # v1: no stride on the 3x3 conv
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            assert m.bias is not None
        if isinstance(m, nn.BatchNorm2d):
            assert m.eps == pytest.approx(1.001e-5) and m.momentum == pytest.approx(0.01)
    assert model.conv1.kernel_size == (7, 7) and model.conv1.padding == (3, 3)


def test_features_names_shapes_and_copies(model):
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats = model.features(x, BLOCK_LAYERS)
        assert list(feats) == list(BLOCK_LAYERS)
        assert feats["conv1_relu"].shape == (2, 64, 32, 32)
        assert feats["conv2_block3_out"].shape == (2, 256, 16, 16)
        assert feats["conv5_block3_out"].shape == (2, 2048, 2, 2)
        paper = model.features(x)
        assert list(paper) == list(PAPER_LAYERS.values())
        # short names are accepted, order follows the forward pass
        short = model.features(x, ["block2", "conv1"])
        assert list(short) == ["conv1_relu", "conv3_block4_out"]
        torch.testing.assert_close(short["conv3_block4_out"], feats["conv3_block4_out"])
        # copies: distinct storage, and equal to what a hook on the module output sees
        assert feats["conv1_relu"].data_ptr() != paper["conv1_relu"].data_ptr()
        pooled = model.features(x, ["avg_pool"])["avg_pool"]
        torch.testing.assert_close(pooled, feats["conv5_block3_out"].mean(dim=(2, 3)))
        torch.testing.assert_close(model.embed(x), pooled)
        assert (feats["conv1_relu"] >= 0).all()
    with pytest.raises(ConfigError, match="conv9_block1_out"):
        model.features(x, ["conv9_block1_out"])


def test_features_stop_early(model):
    calls = []
    handle = model.blocks["conv3_block1"].register_forward_hook(lambda *a: calls.append(1))
    try:
        model.features(torch.randn(1, 3, 64, 64), ["conv2_block3_out"])
        assert calls == []
        model.features(torch.randn(1, 3, 64, 64), ["conv3_block1_out"])
        assert calls == [1]
    finally:
        handle.remove()


def test_head_forward_and_reset(model):
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (2, 3)
    backbone = ResNet50()
    assert backbone.head is None and backbone.num_classes is None
    with pytest.raises(ConfigError, match="head"):
        backbone(x)
    backbone.reset_head(5, seed=3)
    w = backbone.head[1].weight
    assert w.shape == (5, 2048) and backbone.head[0].p == 0.5
    assert w.abs().max() <= math.sqrt(6 / (2048 + 5)) and (backbone.head[1].bias == 0).all()
    other = ResNet50()
    other.reset_head(5, seed=3)
    torch.testing.assert_close(other.head[1].weight, w)
    n_head = sum(p.numel() for p in backbone.head.parameters())
    assert sum(p.numel() for p in backbone.parameters()) - n_head == sum(
        p.numel() for p in backbone.backbone_parameters()
    )


def test_keras_init_is_glorot_uniform_and_seeded():
    a, b, c = ResNet50(), ResNet50(), ResNet50()
    keras_init_(a, 7), keras_init_(b, 7), keras_init_(c, 8)
    torch.testing.assert_close(a.conv1.weight, b.conv1.weight)
    assert not torch.equal(a.conv1.weight, c.conv1.weight)
    w = a.blocks["conv4_block2"].conv2.weight  # (256, 256, 3, 3): fans 2304 each
    limit = math.sqrt(6 / (2 * 256 * 9))
    assert w.abs().max() <= limit and w.abs().max() > 0.99 * limit
    assert w.var().item() == pytest.approx(limit**2 / 3, rel=0.02)  # variance of U(-l, l)
    assert (a.blocks["conv4_block2"].conv2.bias == 0).all()
    assert (a.bn1.weight == 1).all() and (a.bn1.running_var == 1).all()


def test_channels_last_and_autocast(model):
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model.features(x, ["block4"])["conv5_block3_out"]
        cl = model.to(memory_format=torch.channels_last)
        out = cl.features(x.to(memory_format=torch.channels_last), ["block4"])["conv5_block3_out"]
        torch.testing.assert_close(out, ref, atol=1e-4 * ref.abs().max().item(), rtol=0)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = cl(x)
        assert low.dtype == torch.bfloat16 and torch.isfinite(low.float()).all()
    model.to(memory_format=torch.contiguous_format)


def test_checkpoint_roundtrip(tmp_path, model):
    path = save_checkpoint(tmp_path / "sub" / "best.pt", model, {"normalization": Normalization("unit"), "classes": ["a", "b", "c"], "epoch": 4})
    assert path.is_file() and not list(path.parent.glob("*.tmp"))
    loaded, meta = load_checkpoint(path)
    assert meta == {"normalization": "unit", "classes": ["a", "b", "c"], "epoch": 4}
    assert loaded.num_classes == 3 and not loaded.training
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    backbone = ResNet50()
    loaded_b, _ = load_checkpoint(save_checkpoint(tmp_path / "b.pt", backbone, {"normalization": "caffe", "classes": []}))
    assert loaded_b.head is None


def test_checkpoint_errors(tmp_path, model):
    with pytest.raises(WeightsError, match="classes"):
        save_checkpoint(tmp_path / "x.pt", model, {"normalization": "caffe"})
    with pytest.raises(WeightsError, match="2 classes but the head has 3"):
        save_checkpoint(tmp_path / "x.pt", model, {"normalization": "caffe", "classes": ["a", "b"]})
    with pytest.raises(ConfigError, match="normalization 'bgr'"):
        save_checkpoint(tmp_path / "x.pt", model, {"normalization": "bgr", "classes": []})
    torch.save({"a": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(WeightsError, match="not a medtransfer checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(WeightsError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(WeightsError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_tap_layers_cover_paper_and_blocks():
    assert set(PAPER_LAYERS.values()) <= set(BLOCK_LAYERS) <= set(TAP_LAYERS)
    assert len(BLOCK_LAYERS) == 17

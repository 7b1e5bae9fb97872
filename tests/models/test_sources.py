"""PyTorch port loading, the source registry, the weights cache and the ImageNet download."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch

from medtransfer.errors import WeightsError
from medtransfer.models import (
    Normalization,
    ResNet50,
    load_source,
    load_torch_port,
    save_checkpoint,
)
from medtransfer.models import download, resnet
from medtransfer.models.registry import Weights
from medtransfer.paths import cache_dir
from tests.models.test_keras_h5 import max_rel_error, paper_features

torch.set_num_threads(1)


def port_state(arrays: dict[str, list[np.ndarray]]) -> dict[str, torch.Tensor]:
    """Keras arrays under the PyTorch port's key names (Warvito/radimagenet-models), built directly."""
    def conv(prefix, name):
        kernel, bias = arrays[name]
        return {f"{prefix}.weight": torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy()), f"{prefix}.bias": torch.from_numpy(bias.copy())}

    def bn(prefix, name):
        gamma, beta, mean, var = (torch.from_numpy(a.copy()) for a in arrays[name])  # copies: callers damage them
        return {f"{prefix}.weight": gamma, f"{prefix}.bias": beta, f"{prefix}.running_mean": mean,
                f"{prefix}.running_var": var, f"{prefix}.num_batches_tracked": torch.tensor(0)}

    state = {**conv("conv1", "conv1_conv"), **bn("bn1", "conv1_bn")}
    for stage, blocks in zip((1, 2, 3, 4), (3, 4, 6, 3)):
        for i in range(blocks):
            keras = f"conv{stage + 1}_block{i + 1}"
            for j in (1, 2, 3):
                state.update(conv(f"layer{stage}.{i}.conv{j}", f"{keras}_{j}_conv"))
                state.update(bn(f"layer{stage}.{i}.bn{j}", f"{keras}_{j}_bn"))
            if i == 0:
                state.update(conv(f"layer{stage}.0.downsample.0", f"{keras}_0_conv"))
                state.update(bn(f"layer{stage}.0.downsample.1", f"{keras}_0_bn"))
    return state


@pytest.fixture(scope="module")
def port_file(keras_reference, tmp_path_factory):
    path = tmp_path_factory.mktemp("port") / "RadImageNet-ResNet50_notop.pth"
    torch.save(port_state(keras_reference.arrays), path)
    return path


def test_torch_port_parity_with_keras(keras_reference, port_file):
    model = ResNet50()
    report = load_torch_port(port_file, model)
    assert report.layout == "torch-port" and report.head == "none in file"
    errors = max_rel_error(paper_features(model, keras_reference.x), keras_reference.outputs)
    assert max(errors.values()) <= 1e-4, errors


def test_torch_port_wrappers_head_and_errors(keras_reference, tmp_path):
    state = port_state(keras_reference.arrays)
    wrapped = {"state_dict": {"module." + k: v for k, v in state.items()}}
    wrapped["state_dict"]["module.fc.weight"] = torch.randn(4, 2048)
    wrapped["state_dict"]["module.fc.bias"] = torch.randn(4)
    torch.save(wrapped, tmp_path / "wrapped.pth")
    model = ResNet50(num_classes=4)
    assert load_torch_port(tmp_path / "wrapped.pth", model).head == "loaded (2048 -> 4)"
    torch.testing.assert_close(model.head[1].weight, wrapped["state_dict"]["module.fc.weight"])
    assert "not loaded" in load_torch_port(tmp_path / "wrapped.pth", ResNet50(num_classes=2)).head

    broken = dict(state)
    broken["layer3.2.conv2.weight"] = torch.zeros(256, 256, 1, 1)
    torch.save(broken, tmp_path / "broken.pth")
    model = ResNet50()
    before = model.conv1.weight.clone()
    with pytest.raises(WeightsError, match=r"blocks.conv4_block3.conv2.weight has shape \(256, 256, 1, 1\), expected \(256, 256, 3, 3\)"):
        load_torch_port(tmp_path / "broken.pth", model)
    assert torch.equal(model.conv1.weight, before)  # nothing loaded
    del broken["layer3.2.conv2.weight"]
    torch.save(broken, tmp_path / "missing.pth")
    with pytest.raises(WeightsError, match="blocks.conv4_block3.conv2.weight is missing"):
        load_torch_port(tmp_path / "missing.pth", ResNet50())
    torch.save({"encoder.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(WeightsError, match="not a ResNet50 state dict"):
        load_torch_port(tmp_path / "other.pth", ResNet50())
    (tmp_path / "cut.pth").write_bytes((tmp_path / "missing.pth").read_bytes()[:1000])
    with pytest.raises(WeightsError, match="cut.pth"):
        load_torch_port(tmp_path / "cut.pth", ResNet50())


def test_random_source_is_seeded_and_keras_initialised():
    a, b, c = load_source("random", seed=1), load_source("random", seed=1), load_source("random", seed=2)
    assert a.name == "random" and a.normalize == Normalization("caffe") and "seed 1" in a.origin
    assert a.model.head is None and not a.model.training
    torch.testing.assert_close(a.model.blocks["conv5_block3"].conv3.weight, b.model.blocks["conv5_block3"].conv3.weight)
    assert not torch.equal(a.model.conv1.weight, c.model.conv1.weight)
    assert (a.model.conv1.bias == 0).all()
    assert load_source("random", normalization="symmetric").normalize == Normalization("symmetric")


def test_file_sources_and_radimagenet_from_cache(keras_reference, port_file, tmp_path):
    h5 = load_source(keras_reference.files["full"])
    assert h5.name == "full" and h5.report.layout == "full-model" and h5.normalize.mode == "caffe"
    with pytest.raises(WeightsError, match="RadImageNet-ResNet50_notop.h5.*" + str(tmp_path)):
        load_source("radimagenet", cache_dir=tmp_path)
    shutil.copy(port_file, tmp_path / port_file.name)
    rad = load_source("radimagenet", cache_dir=tmp_path, normalization="unit")
    assert rad.name == "radimagenet" and rad.report.layout == "torch-port" and rad.normalize.mode == "unit"
    torch.testing.assert_close(rad.model.conv1.weight, h5.model.conv1.weight)
    with pytest.raises(WeightsError, match="unknown source 'imagnet'.*imagenet, radimagenet, random"):
        load_source("imagnet")
    (tmp_path / "w.npz").write_bytes(b"x")
    with pytest.raises(WeightsError, match="unknown weights format '.npz'"):
        load_source(tmp_path / "w.npz")


def test_checkpoint_source_keeps_its_normalization(tmp_path):
    model = ResNet50(num_classes=2)
    path = save_checkpoint(tmp_path / "best.pt", model, {"normalization": "torch", "classes": ["no", "yes"]})
    source = load_source(path)
    assert source.model.head is None and source.normalize.mode == "torch" and "checkpoint" in source.origin
    torch.testing.assert_close(source.model.conv1.weight, model.conv1.weight)
    assert load_source(path, normalization="caffe").normalize.mode == "caffe"


def test_cache_dir_env_and_default(monkeypatch, tmp_path):
    monkeypatch.setenv("MEDTRANSFER_CACHE", str(tmp_path / "env"))
    assert cache_dir() == tmp_path / "env" and cache_dir(tmp_path / "x") == tmp_path / "x"
    monkeypatch.delenv("MEDTRANSFER_CACHE")
    assert str(cache_dir()).endswith(".cache/medtransfer")


def _offline(*args, **kwargs):
    raise urllib.error.URLError("network is unreachable")


def test_imagenet_offline_error_says_what_to_fetch_and_where(monkeypatch, tmp_path):
    monkeypatch.setattr(urllib.request, "urlopen", _offline)
    with pytest.raises(WeightsError) as info:
        load_source("imagenet", cache_dir=tmp_path)
    message = str(info.value)
    weights = resnet.SPEC.imagenet
    assert weights.url in message and str(tmp_path / weights.file) in message and weights.md5 in message
    assert list(tmp_path.iterdir()) == []  # no partial file left behind


def _publish(monkeypatch, url, md5=None):
    """ResNet50's ImageNet weights published at ``url`` (with ``md5``, else Keras' md5) for one test."""
    weights = Weights(url, md5 or resnet.SPEC.imagenet.md5)
    monkeypatch.setattr(resnet, "SPEC", dataclasses.replace(resnet.SPEC, imagenet=weights))


def test_imagenet_download_once_checked_by_md5(keras_reference, monkeypatch, tmp_path):
    served = keras_reference.files["weights"]
    md5 = hashlib.md5(served.read_bytes()).hexdigest()
    _publish(monkeypatch, served.as_uri(), md5)
    source = load_source("imagenet", cache_dir=tmp_path / "cache")
    assert source.name == "imagenet" and source.report.layout == "weights-only"
    assert (tmp_path / "cache" / served.name).read_bytes() == served.read_bytes()
    monkeypatch.setattr(urllib.request, "urlopen", _offline)  # second time: from the cache
    again = load_source("imagenet", cache_dir=tmp_path / "cache")
    torch.testing.assert_close(again.model.conv1.weight, source.model.conv1.weight)
    (tmp_path / "cache" / served.name).write_bytes(b"corrupt")
    with pytest.raises(WeightsError, match=f"md5 .*{md5}"):
        load_source("imagenet", cache_dir=tmp_path / "cache")


def test_download_with_wrong_md5_is_not_kept(keras_reference, monkeypatch, tmp_path):
    _publish(monkeypatch, keras_reference.files["weights"].as_uri())
    with pytest.raises(WeightsError, match="expected 4d473c1dd8becc155b73f8504c6f6626"):
        download.imagenet_weights(tmp_path)
    assert list(tmp_path.iterdir()) == []

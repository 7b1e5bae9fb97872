"""Partial transfer and re-drawn inits: what the run actually starts from (``_Run.model`` before
training), against the source file and a fresh init of the run's seed."""

import math

import pytest
import torch

from medtransfer.errors import ConfigError
from medtransfer.models import keras_init_, load_source, registry, save_checkpoint
from medtransfer.models.transfer import HEAD, stage_partition, transfer_init, transferred_keys
from medtransfer.training.config import TransferSetting
from medtransfer.training.initial import initial_source
from medtransfer.training.record import RunDir
from medtransfer.training.run import _Run

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def source_file(tmp_path_factory):
    """A "pretrained" ResNet50: Keras init of seed 123 with every bias and BN statistic randomised."""
    model = keras_init_(registry.create("resnet50"), seed=123)
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith(("bias", "running_mean")):
                tensor.copy_(torch.randn(tensor.shape, generator=gen))
            elif name.endswith(("running_var", "bn1.weight")) or ".bn" in name and name.endswith("weight"):
                tensor.copy_(torch.rand(tensor.shape, generator=gen) + 0.5)
            elif name.endswith("num_batches_tracked"):
                tensor.fill_(11)
    path = tmp_path_factory.mktemp("source") / "pretrained.pt"
    save_checkpoint(path, model, {"normalization": "caffe", "classes": []})
    return path


def _started_model(config, tmp_path):
    run = _Run(config, RunDir(tmp_path / "run"))
    return {k: v.detach().clone() for k, v in run.model.state_dict().items()}


def test_up_to_block2_copies_conv1_to_block2_and_leaves_the_rest_fresh(tiny, tmp_path, source_file):
    config = tiny(source=str(source_file), seed=3, transfer=TransferSetting(up_to="block2"))
    started = _started_model(config, tmp_path)
    source = load_source(str(source_file)).model.state_dict()
    fresh = _started_model(tiny(source="random", seed=3), tmp_path / "fresh")  # the random run of the same seed
    partition = stage_partition("resnet50")
    assert set(partition) == set(started)
    copied = {k for k, s in partition.items() if s in ("conv1", "block1", "block2")}
    assert any(k.endswith("running_var") for k in copied) and any(k.startswith("blocks.conv3_") for k in copied)
    assert not any(k.startswith("blocks.conv4_") for k in copied)
    for key, value in started.items():
        expected = source[key] if key in copied else fresh[key]
        assert torch.equal(value, expected), key  # bitwise
        if key in copied and value.dtype.is_floating_point and value.numel() > 1:
            assert not torch.equal(value, fresh[key]), key  # the test could fail
    assert {partition[k] for k in started if k not in copied} == {"block3", "block4", HEAD}


@pytest.mark.parametrize("backbone", registry.names())
def test_every_backbone_is_covered_by_its_stages(backbone):
    partition = stage_partition(backbone)
    stages = list(registry.get(backbone).paper_layers)
    assert set(partition.values()) == {*stages, HEAD}
    assert set(transferred_keys(backbone, stages[-1])) == {k for k, s in partition.items() if s != HEAD}
    # forward order: a stage's keys never come after a later stage's in the state dict of a ResNet50
    if backbone == "resnet50":
        order = [stages.index(s) for s in partition.values() if s != HEAD]
        assert order == sorted(order)


def test_unknown_stage_is_refused_naming_the_stages():
    model = registry.create("resnet50")
    with pytest.raises(ConfigError, match="conv1, block1, block2, block3, block4"):
        transfer_init(model, registry.create("resnet50"), up_to="layer2")


def _tolerance(n: int, sigma: float) -> tuple[float, float]:
    """6 standard errors of the sample mean (sigma / sqrt(n)) and of the sample std (about
    sigma / sqrt(2n) for normal draws) of n i.i.d. N(mu, sigma^2) values."""
    return 6 * sigma / math.sqrt(n), 6 * sigma / math.sqrt(2 * n)


def test_mean_var_matches_each_layer_mean_and_std_and_is_seeded(source_file):
    setting = TransferSetting(init="mean-var")
    a = initial_source(str(source_file), 4, setting).model.state_dict()
    b = initial_source(str(source_file), 4, setting).model.state_dict()
    c = initial_source(str(source_file), 5, setting).model.state_dict()
    source = load_source(str(source_file)).model
    params = dict(source.named_parameters())
    fresh = load_source("random", seed=4).model.state_dict()
    checked = 0
    for key, value in a.items():
        assert torch.equal(value, b[key]), key  # same seed, same weights
        if key not in params:  # BN running statistics: the fresh init's
            assert torch.equal(value, fresh[key]), key
            continue
        pre = params[key].detach().double()
        mu, sigma = float(pre.mean()), float(pre.std(correction=0))
        drawn = value.double()
        mean_tol, std_tol = _tolerance(value.numel(), sigma)
        assert abs(float(drawn.mean()) - mu) <= mean_tol + 1e-6 * abs(mu), key
        assert abs(float(drawn.std(correction=0)) - sigma) <= std_tol + 1e-7, key
        assert not torch.equal(value, params[key]), key
        if sigma > 0:
            assert not torch.equal(value, c[key]), key  # another seed, other weights
        checked += 1
    assert checked == len(params)


def test_shuffled_keeps_each_layer_values_exactly(source_file):
    a = initial_source(str(source_file), 1, TransferSetting(init="shuffled")).model.state_dict()
    source = load_source(str(source_file)).model
    for key, param in source.named_parameters():
        assert torch.equal(a[key].flatten().sort().values, param.detach().flatten().sort().values), key
        if param.numel() > 8:
            assert not torch.equal(a[key], param.detach()), key


def test_transfer_is_refused_for_random_and_freeze(tiny):
    with pytest.raises(ValueError, match="random-init source has nothing to transfer"):
        tiny(source="random", transfer={"up_to": "block1"})
    with pytest.raises(ValueError, match="fine-tuned whole"):
        tiny(source="x.pt", strategy="freeze", transfer={"up_to": "block1"})
    with pytest.raises(ValueError, match="is the source itself"):
        tiny(source="x.pt", transfer={})

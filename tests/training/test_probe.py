"""The probe file: head + changed tensors + a digest of the source; rebuilt bit for bit or refused."""

import pytest
import torch

from medtransfer.errors import WeightsError
from medtransfer.models import ResNet50, load_source, save_checkpoint
from medtransfer.models.digests import combine_digests, state_digest, tensor_digests
from medtransfer.training.probe import load_probe, read_probe_file, save_probe
from medtransfer.training.record import PROBE_HEAD as FILE

META = {"normalization": "caffe", "classes": ["a", "b", "c"], "phase": "probe"}


def probe_of(source: str, seed: int):
    """A probe as phase 1 leaves it: the source's backbone and a trained (here: random) head."""
    backbone = load_source(source, seed=seed).model
    digests = tensor_digests(backbone.state_dict())
    backbone.reset_head(3, seed=5)
    with torch.no_grad():
        backbone.head[1].weight.normal_(generator=torch.Generator().manual_seed(1))
        backbone.head[1].bias.uniform_(-1, 1, generator=torch.Generator().manual_seed(2))
    return backbone, digests


def assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert set(sa) == set(sb)
    for name in sa:
        assert sa[name].dtype == sb[name].dtype and torch.equal(sa[name], sb[name]), name


def test_digests_see_every_bit_and_ignore_memory_layout():
    t = torch.randn(4, 3, 2, 2)
    base = tensor_digests({"w": t})["w"]
    assert tensor_digests({"w": t.to(memory_format=torch.channels_last)})["w"] == base
    flipped = t.clone()
    flipped.view(-1).view(torch.int32)[5] ^= 1  # one mantissa bit
    assert tensor_digests({"w": flipped})["w"] != base
    assert tensor_digests({"v": t})["v"] != base  # the name counts
    assert tensor_digests({"w": t.double()})["w"] != base  # the dtype counts
    assert combine_digests({"a": "1", "b": "2"}) == combine_digests({"b": "2", "a": "1"})
    assert state_digest({"a": t, "b": t}) != state_digest({"a": t, "b": flipped})


def test_probe_file_holds_only_the_head_and_reloads_bit_for_bit(tmp_path):
    model, digests = probe_of("random", seed=3)
    path = save_probe(tmp_path / "run" / "probe" / FILE, model, META, load="random", seed=3, source_digests=digests)
    payload = read_probe_file(path)
    assert sorted(payload["state_dict"]) == ["head.1.bias", "head.1.weight"]
    assert path.stat().st_size < 50_000
    again, meta = load_probe(tmp_path / "run")  # a run directory works too
    assert meta == META and not again.training
    assert again.dropout == model.dropout and again.num_classes == 3
    assert_same_state(again, model)


def test_changed_backbone_tensors_are_stored_in_full(tmp_path):
    # e.g. BatchNorm statistics that moved because the backbone ran in train mode
    model, digests = probe_of("random", seed=0)
    with torch.no_grad():
        model.bn1.running_mean.add_(0.25)
    model.bn1.num_batches_tracked += 7
    path = save_probe(tmp_path / FILE, model, META, load="random", seed=0, source_digests=digests)
    assert sorted(read_probe_file(path)["state_dict"]) == ["bn1.num_batches_tracked", "bn1.running_mean",
                                                           "head.1.bias", "head.1.weight"]
    assert_same_state(load_probe(path)[0], model)


def test_a_different_source_is_refused_and_a_moved_one_found(tmp_path):
    model, digests = probe_of("random", seed=0)
    path = save_probe(tmp_path / FILE, model, META, load="random", seed=0, source_digests=digests)
    with pytest.raises(WeightsError, match="cannot rebuild its backbone.*\n.*nope.pt"):
        load_probe(path, source="nope.pt")  # not loadable
    payload = read_probe_file(path)
    payload["source"]["seed"] = 1  # the same name, other weights: refused, never silently wrong
    torch.save(payload, tmp_path / "other.pt")
    with pytest.raises(WeightsError, match=r"different weights \(sha256"):
        load_probe(tmp_path / "other.pt")

    # a file source recorded by absolute path, the study directory moved since
    study = tmp_path / "study"
    source_file = save_checkpoint(study / "sources" / "src.pt", load_source("random", seed=4).model,
                                  {"normalization": "caffe", "classes": []})
    model, digests = probe_of(str(source_file), seed=0)
    probe = save_probe(study / "runs" / "t" / "src-freeze" / "fold0" / "probe" / FILE, model, META,
                       load=str(source_file), seed=0, source_digests=digests)
    moved = tmp_path / "moved"
    study.rename(moved)
    again, _ = load_probe(moved / probe.relative_to(study))
    assert_same_state(again, model)


def test_a_missing_probe_is_named(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        load_probe(tmp_path / "nothing" / FILE)

"""A source's ``transfer:`` axis: one run per depth and per re-drawn init, labelled; studies
without it keep their runs and run ids."""

import json

import pytest

from medtransfer.errors import ConfigError
from medtransfer.study.config import StudyConfig, shipped_config
from medtransfer.study.expand import expand


def _study(transfer=None, backbones=None, **source):
    imagenet = {"name": "imagenet", **source}
    if transfer is not None:
        imagenet["transfer"] = transfer
    data = {"targets": [{"name": "thyroid"}], "sources": [imagenet, {"name": "random"}], "folds": [0, 1]}
    if backbones:
        data["backbones"] = backbones
    return StudyConfig.parse(data)


def test_up_to_list_expands_one_no_freeze_run_per_depth_labelled_in_run_ids():
    plain = expand(_study())
    runs = expand(_study({"up_to": ["conv1", "block1", "block2", "block3", "block4"], "init": "mean-var"}))
    new = [r for r in runs if r.transfer is not None]
    # block4 is the whole ResNet50 backbone: the source's own runs stand for it
    assert sorted({r.source_label for r in new}) == ["imagenet.meanvar", "imagenet.to_block1", "imagenet.to_block2",
                                                     "imagenet.to_block3", "imagenet.to_conv1"]
    assert len(new) == 5 * 2 and {r.strategy for r in new} == {"no-freeze"}
    assert {r.source for r in new} == {"imagenet"}
    assert "thyroid/imagenet.to_block2-no-freeze/fold1" in {r.run_id for r in new}
    assert next(r for r in new if r.source_label == "imagenet.to_block2").transfer.up_to == "block2"
    assert next(r for r in new if r.source_label == "imagenet.meanvar").transfer.init == "mean-var"
    # the runs without transfer are the study's runs without the axis, config for config
    assert [r for r in runs if r.transfer is None] == plain
    assert len({r.run_id for r in runs}) == len(runs)


def test_a_study_without_transfer_keeps_its_run_configs():
    runs = expand(StudyConfig.from_yaml(shipped_config("paper")))
    assert all(r.transfer is None for r in runs) and len(runs) == 175
    assert json.loads(runs[0].to_json())["transfer"] is None  # an old config.json without the key reads the same


def test_stage_names_are_the_backbones_own():
    runs = expand(_study({"up_to": "block2"}, backbones=["resnet50", "densenet121"]))
    labels = {(r.target_label, r.source_label) for r in runs if r.transfer is not None}
    assert labels == {("thyroid", "imagenet.to_block2"), ("thyroid@densenet121", "imagenet.to_block2")}


@pytest.mark.parametrize("transfer, message", [
    ({"up_to": "layer2"}, "'layer2' is not a stage of resnet50 \\(expected one of conv1, block1"),
    ({"init": "gaussian"}, "transfer.init"),
    ({}, "give up_to"),
    ({"up_to": ["block1", "block1"]}, "must not repeat"),
    ({"depth": "block1"}, "unknown key"),
])
def test_bad_transfer_sections_are_refused_naming_the_field(transfer, message):
    with pytest.raises(ConfigError, match=message):
        _study(transfer)


def test_random_source_and_label_clashes_are_refused():
    with pytest.raises(ConfigError, match="random init: it has nothing to transfer"):
        StudyConfig.parse({"targets": [{"name": "t"}], "sources": [{"name": "random", "transfer": {"up_to": "conv1"}}]})
    with pytest.raises(ConfigError, match="transfer run label names must be unique, repeated: \\['imagenet.to_conv1'\\]"):
        StudyConfig.parse({"targets": [{"name": "t"}], "sources": [
            {"name": "imagenet", "transfer": {"up_to": "conv1"}}, {"name": "imagenet.to_conv1", "path": "x.h5"}]})

"""The shared vocabulary: each word defined once, and SourceRef's one answer to "is it a file"."""

import re
from pathlib import Path

import pytest

from medtransfer.vocabulary import (
    AUC_AVERAGES,
    NORMALIZATION_MODES,
    SOURCE_NAMES,
    STRATEGIES,
    WEIGHT_SUFFIXES,
    SourceRef,
)

SRC = Path(__file__).resolve().parents[1] / "src" / "medtransfer"


@pytest.mark.parametrize(("text", "is_file", "fmt", "label"), [
    ("imagenet", False, None, "imagenet"),
    ("random", False, None, "random"),
    ("radimagenet", False, None, "radimagenet"),
    ("imagenet@densenet121", False, None, "imagenet@densenet121"),
    ("random@convnext_tiny", False, None, "random@convnext_tiny"),
    ("weights/RadImageNet-ResNet50_notop.h5", True, "keras", "RadImageNet-ResNet50_notop"),
    ("my_net.weights.h5", True, "keras", "my_net"),
    ("model.keras", True, "keras", "model"),
    ("/abs/port.pth", True, "torch", "port"),
    ("sources/synth_a.pt", True, "torch", "synth_a"),
    ("run.ckpt", True, "torch", "run"),
    ("net.hdf5", True, "keras", "net"),
    ("oddfile", True, None, "oddfile"),
])
def test_source_ref_answers_label_file_and_format_once(text, is_file, fmt, label):
    ref = SourceRef.of(text)
    assert (ref.is_file, ref.format, ref.label) == (is_file, fmt, label)
    assert ref.is_random == text.startswith("random")


def test_source_ref_resolves_relative_files_only(tmp_path):
    assert SourceRef("imagenet").resolve(tmp_path) == "imagenet"
    assert SourceRef("sources/a.pt").resolve(tmp_path) == str(tmp_path / "sources" / "a.pt")
    assert SourceRef("/abs/a.pt").resolve(tmp_path) == "/abs/a.pt"
    assert SourceRef("sources/a.pt").resolve(None) == "sources/a.pt"


def test_each_vocabulary_word_is_defined_once_in_src():
    """The strategy, normalisation and AUC-average names appear as a definition only in
    vocabulary.py: no other module writes their Literal or tuple again."""
    words = {"strategy": STRATEGIES, "normalization": tuple(NORMALIZATION_MODES), "auc": AUC_AVERAGES,
             "source": SOURCE_NAMES}
    for path in SRC.rglob("*.py"):
        if path.name == "vocabulary.py":
            continue
        text = path.read_text()
        for kind, values in words.items():
            listed = r"\s*,\s*".join(f'"{re.escape(v)}"' for v in values)
            assert not re.search(listed, text), (path, kind)
    for suffix in WEIGHT_SUFFIXES:
        assert suffix.startswith(".")

"""The shared vocabulary: each word defined once (and the default fold spec), and SourceRef's one
answer to "is it a file"."""

import ast
import re
from pathlib import Path

import pytest

from medtransfer.data.folds import DEFAULT_FOLDS
from medtransfer.errors import ConfigError
from medtransfer.similarity.registry import PAPER_MEASURES
from medtransfer.study.config import StudyConfig
from medtransfer.training.config import RunConfig
from medtransfer.vocabulary import (
    AUC_AVERAGES,
    FINETUNE,
    IMAGENET,
    NORMALIZATION_MODES,
    PROBE,
    RADIMAGENET,
    RANDOM,
    SOURCE_NAMES,
    STRATEGIES,
    WEIGHT_SUFFIXES,
    SourceRef,
)
from tests.code_strings import code_strings

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


def _listed(values) -> str:
    return r"\s*,\s*".join(f'"{re.escape(v)}"' for v in values)


def test_each_vocabulary_word_is_defined_once_in_src():
    """The strategy, phase, normalisation, AUC-average and source names appear as a definition
    only in vocabulary.py (the paper's measures only in the similarity registry): no other module
    writes their Literal or tuple again, and the owner writes it exactly once."""
    words = {"strategy": STRATEGIES, "phase": (PROBE, FINETUNE), "normalization": tuple(NORMALIZATION_MODES),
             "auc": AUC_AVERAGES, "source": SOURCE_NAMES}
    owners = {kind: SRC / "vocabulary.py" for kind in words}
    words["measures"], owners["measures"] = PAPER_MEASURES, SRC / "similarity" / "registry.py"
    found = {kind: [] for kind in words}
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text()
        for kind, values in words.items():
            found[kind] += [path] * len(re.findall(_listed(values), text))
    assert found == {kind: [owner] for kind, owner in owners.items()}
    for suffix in WEIGHT_SUFFIXES:
        assert suffix.startswith(".")



def test_strategy_words_and_study_table_names_are_not_retyped():
    """A strategy word or a built-in source name (``imagenet``, ``radimagenet``, ``random``) as a
    whole code string only in vocabulary.py, a table of results/ or analysis/ only in the record
    module: the others import the names."""
    from medtransfer.training import record

    words = {*STRATEGIES, *SOURCE_NAMES}
    assert (IMAGENET, RADIMAGENET, RANDOM) == ("imagenet", "radimagenet", "random")  # the words users type
    tables = {record.AUC_TABLE, record.TABLE2_CSV, record.TABLE2_MD, record.SIMILARITY_TABLE}
    found = []
    for path in sorted(SRC.rglob("*.py")):
        module = path.relative_to(SRC).as_posix()
        for line, text in code_strings(ast.parse(path.read_text(encoding="utf-8"))):
            if (text in words and module != "vocabulary.py") or (text in tables and module != "training/record.py"):
                found.append(f"{module}:{line}: {text!r}")
    assert found == []


def test_the_default_fold_spec_is_written_once_in_src():
    """The default fractions (80/5/15) are a literal only in data/folds.py's FoldSpec: RunConfig, the
    study file and `data folds` take them from DEFAULT_FOLDS."""
    fractions = tuple(DEFAULT_FOLDS.fractions)
    found = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Tuple, ast.List)) and all(isinstance(e, ast.Constant) for e in node.elts):
                if tuple(e.value for e in node.elts) == fractions:
                    found.append(path.relative_to(SRC).as_posix())
    assert found == ["data/folds.py"]
    assert RunConfig(target="x").fold_spec == DEFAULT_FOLDS
    study = StudyConfig.parse({"targets": [{"name": "t"}], "sources": [{"name": "random"}]})
    assert study.fold_spec == DEFAULT_FOLDS and study.split_fractions == DEFAULT_FOLDS.fractions


def test_a_fold_spec_that_cannot_cut_its_folds_is_refused_when_the_study_is_parsed():
    base = {"targets": [{"name": "t"}], "sources": [{"name": "random"}]}
    with pytest.raises(ConfigError, match=r"k_folds: train fraction 0.8 with k=3.*"
                                          r"e\.g\. \[0\.6666667, 0\.0833333, 0\.25\]"):
        StudyConfig.parse({**base, "k_folds": 3})
    with pytest.raises(ConfigError, match=r"study: training: k_folds/split_fractions: train fraction 0.75 with k=3"):
        StudyConfig.parse({**base, "k_folds": 3, "training": {"split_fractions": [0.75, 0.1, 0.15]}})
    hint = DEFAULT_FOLDS.with_k(3)
    assert hint.problem() is None and StudyConfig.parse({**base, "k_folds": 3, "training": {
        "split_fractions": [round(f, 7) for f in hint.fractions]}}).fold_spec.k == 3
    assert DEFAULT_FOLDS.with_k(DEFAULT_FOLDS.k).fractions == pytest.approx(DEFAULT_FOLDS.fractions)


def test_one_device_resolver():
    """`auto` becomes a device in one place (training.run.resolve_device): training and analysis alike."""
    found = [path.relative_to(SRC).as_posix() for path in sorted(SRC.rglob("*.py"))
             if re.search(r"""["']cuda["'] if torch\.cuda\.is_available\(\)""", path.read_text())]
    assert found == ["training/run.py"]

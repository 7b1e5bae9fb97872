import pytest

from medtransfer.study.analysis_settings import AnalysisSettings
from medtransfer.errors import ConfigError


def test_study_yaml_section_and_overrides():
    s = AnalysisSettings.from_mapping({"rows": 5000, "layers": "all", "measures": ["cca"]})
    assert s.rows == 5000 and s.measures == ("cca",) and s.channels == 64
    layers = s.resolved_layers()
    assert len(layers) == 17 and list(layers)[0] == "conv1" and layers["block4"] == "conv5_block3_out"
    assert "conv4_block2_out" in layers
    t = s.override(rows=None, channels=16, layers=["conv1", "conv3_block4_out"])
    assert t.rows == 5000 and t.channels == 16
    assert t.resolved_layers() == {"conv1": "conv1_relu", "block2": "conv3_block4_out"}
    assert AnalysisSettings().resolved_layers() == {
        "conv1": "conv1_relu", "block1": "conv2_block3_out", "block2": "conv3_block4_out",
        "block3": "conv4_block6_out", "block4": "conv5_block3_out"}


@pytest.mark.parametrize("section, field", [({"rowz": 1}, "rowz"), ({"rows": 0}, "rows"), ({"measures": ["nope"]}, "measures"),
                                            ({"split": "holdout"}, "split"), ({"auc_average": "median"}, "auc_average"),
                                            ({"ci_method": "quadratic"}, "ci_method"),
                                            ({"permutations": -1}, "permutations"),
                                            ({"permutations": "many"}, "permutations")])
def test_bad_settings_name_the_field(section, field):
    with pytest.raises(ConfigError, match=field):
        AnalysisSettings.from_mapping(section)


def test_interval_method_is_linear_unless_asked():
    assert AnalysisSettings().ci_method == "linear"
    assert AnalysisSettings.from_mapping({"ci_method": "exact"}).ci_method == "exact"


@pytest.mark.parametrize("layers, measures", [(5, ("cca", "cka")), (17, ("cca",)), (1, ("cka",)), (17, ("cca", "cka", "rsa_pearson"))])
def test_default_permutations_are_the_fewest_whose_floor_passes_holm_over_a_pairs_scores(layers, measures):
    draws = AnalysisSettings(measures=measures).null_permutations(layers)
    tests = layers * len(measures)
    assert 1 / (draws + 1) <= 0.05 / tests < 1 / draws  # the floor passes Holm's first step; one draw fewer would not
    assert AnalysisSettings.from_mapping({"permutations": None, "measures": list(measures)}).null_permutations(layers) == draws


def test_explicit_permutations_are_kept_whatever_the_family():
    assert AnalysisSettings.from_mapping({"permutations": 0}).null_permutations(5) == 0
    assert AnalysisSettings(permutations=20).null_permutations(17) == 20

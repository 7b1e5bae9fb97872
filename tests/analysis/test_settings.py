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
                                            ({"ci_method": "quadratic"}, "ci_method")])
def test_bad_settings_name_the_field(section, field):
    with pytest.raises(ConfigError, match=field):
        AnalysisSettings.from_mapping(section)


def test_interval_method_is_linear_unless_asked():
    assert AnalysisSettings().ci_method == "linear"
    assert AnalysisSettings.from_mapping({"ci_method": "exact"}).ci_method == "exact"

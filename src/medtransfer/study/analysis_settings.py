"""Settings of one analysis: the paper's defaults, overridden by ``study.yaml``'s ``analysis:``
section, overridden by explicit arguments. The study owns its ``study.yaml`` and checks this section
when it loads; the analysis (:mod:`medtransfer.analysis`) reads it from here.

``study.yaml`` may carry, all optional::

    analysis:
      layers: [conv1, block1, block2, block3, block4]   # or "all" for the 16 block outputs + conv1
      rows: 20000        # rows (images x positions) per layer and repeat
      channels: 64       # channels sampled per layer and repeat (same for both models of a pair)
      repeats: 5         # fresh samples per layer
      measures: [cca, cka]   # any of medtransfer.similarity.registry's names (docs/measures.md)
      ci: 0.95           # image-bootstrap interval of every layer-wise score (null: none)
      resamples: 1000    # bootstrap resamples of that interval
      ci_method: linear  # resample values: linear (first order in the image weights) or exact
      permutations: null # permutation-null draws per layer-wise score: null (the default) for enough
                         # that the smallest p-value passes Holm at 0.05 over one pair's layers x
                         # measures (199 for the paper's 5 layers x 2 measures), drawn sequentially
                         # (an unremarkable score stops after about 10 / p draws); 0: no null; N: N
      sampling: paper    # paper (all positions of few images) or spread (positions per image)
      positions: 16      # positions per image of the spread sampling
      split: test        # which split of each fold feeds the stimulus pool (train, val, test, all)
      batch_size: 32     # images per forward batch
      seed: 0            # seed of the row/channel sampling
      sources: [imagenet, radimagenet]   # which two pretrained sources play the paper's roles
      auc_average: macro # multiclass AUC of Table 2: "macro", "weighted" or "micro" (as RunConfig.auc_average)
      bootstrap: 2000    # resamples of the claims' bootstrap intervals and Monte Carlo permutation tests
      correlation_points: target  # Figure 6's correlation: one point per target (mean over folds), or
                         # "fold" (one per target and fold: NOT independent, labelled so in correlation.csv)
      threads: null      # CPU threads of the analysis (null: torch's, the machine's cores); the
                         # layer-wise similarity scores as many (pair, layer) problems side by side
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from medtransfer.errors import ConfigError
from medtransfer.similarity import draws_for_holm
from medtransfer.models import registry
from medtransfer.similarity.bootstrap import DEFAULT_INTERVAL_METHOD, INTERVAL_METHODS
from medtransfer.similarity.registry import NAMES as MEASURE_NAMES
from medtransfer.similarity.registry import PAPER_MEASURES as MEASURES
from medtransfer.training.record import STUDY_FILE
from medtransfer.vocabulary import AUC_AVERAGES


#: Family-wise level at which the default permutation count lets a layer-wise p-value pass Holm.
NULL_ALPHA = 0.05
#: What ``permutations`` means, for every command's help text.
PERMUTATIONS_HELP = (
    "Permutation-null draws per layer-wise score (0: no null). \\[default: enough for the smallest p-value to "
    f"pass a Holm correction at {NULL_ALPHA:g} over one pair's layers x measures (199 for 5 layers x 2 measures), "
    "drawn sequentially: an unremarkable score stops after about 10 / p draws]"
)


@dataclass(frozen=True)
class AnalysisSettings:
    """Everything that shapes an analysis; see the module docstring for the meaning of each field."""

    layers: tuple[str, ...] = ("conv1", "block1", "block2", "block3", "block4")
    rows: int = 20000
    channels: int = 64
    repeats: int = 5
    measures: tuple[str, ...] = MEASURES
    split: str = "test"
    batch_size: int = 32
    seed: int = 0
    sources: tuple[str, ...] | None = None
    auc_average: str = "macro"
    bootstrap: int = 2000
    threads: int | None = None
    ci: float | None = 0.95
    resamples: int = 1000
    ci_method: str = DEFAULT_INTERVAL_METHOD
    permutations: int | None = None
    sampling: str = "paper"
    positions: int = 16
    correlation_points: str = "target"

    def __post_init__(self) -> None:
        if self.threads is not None and (not isinstance(self.threads, int) or isinstance(self.threads, bool)
                                         or self.threads < 1):
            raise ConfigError(f"analysis.threads must be a positive integer or null, got {self.threads!r}")
        if self.ci is not None and not (isinstance(self.ci, float) and 0.0 < self.ci < 1.0):
            raise ConfigError(f"analysis.ci must be a confidence level in (0, 1) or null, got {self.ci!r}")
        if self.ci_method not in INTERVAL_METHODS:
            raise ConfigError(f"analysis.ci_method must be one of {', '.join(INTERVAL_METHODS)}, got {self.ci_method!r}")
        if self.correlation_points not in ("target", "fold"):
            raise ConfigError(f"analysis.correlation_points must be 'target' or 'fold', got {self.correlation_points!r}")
        if self.sampling not in ("paper", "spread"):
            raise ConfigError(f"analysis.sampling must be 'paper' or 'spread', got {self.sampling!r}")
        if self.permutations is not None and (not isinstance(self.permutations, int)
                                              or isinstance(self.permutations, bool) or self.permutations < 0):
            raise ConfigError("analysis.permutations must be a non-negative integer, or null for enough to pass Holm "
                              f"over one pair's layers x measures; got {self.permutations!r}")
        for name in ("rows", "channels", "repeats", "batch_size", "bootstrap", "resamples", "positions"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"analysis.{name} must be a positive integer, got {value!r}")
        bad = [m for m in self.measures if m not in MEASURE_NAMES]
        if bad or not self.measures:
            raise ConfigError(f"analysis.measures must be a non-empty subset of {list(MEASURE_NAMES)}, got {list(self.measures)}")
        if self.auc_average not in AUC_AVERAGES:
            raise ConfigError(f"analysis.auc_average must be one of {', '.join(AUC_AVERAGES)}, got {self.auc_average!r}")
        if self.split not in ("train", "val", "test", "all"):
            raise ConfigError(f"analysis.split must be train, val, test or all, got {self.split!r}")
        if not self.layers:
            raise ConfigError("analysis.layers must name at least one layer")

    def null_permutations(self, layers: int) -> int:
        """Permutation-null draws per layer-wise score of a pair compared at ``layers`` layers:
        ``permutations`` when set, else the fewest whose smallest p-value, ``1 / (draws + 1)``,
        passes a Holm correction at ``NULL_ALPHA`` over the pair's ``layers x measures`` scores
        (:func:`~medtransfer.similarity.draws_for_holm`). The null is drawn sequentially
        (:func:`~medtransfer.similarity.sampling.sequential_null`), so only scores whose p-value
        is small draw them all (docs/protocol.md)."""
        if self.permutations is not None:
            return self.permutations
        return draws_for_holm(max(1, int(layers)) * len(self.measures), NULL_ALPHA)

    def resolved_layers(self) -> dict[str, str]:
        """Short label -> Keras layer name, in network order (``conv1`` -> ``conv1_relu``, ...)."""
        layers = self.layers
        paper = registry.get(registry.DEFAULT)  # the paper's ResNet50 names the layers of every backbone
        if layers == ("all",):
            names = list(paper.block_layers)
            short = {v: k for k, v in paper.paper_layers.items()}
            return {short.get(n, n): n for n in names}
        out: dict[str, str] = {}
        for name in layers:
            keras = paper.paper_layers.get(name, name)
            label = next((k for k, v in paper.paper_layers.items() if v == keras), keras)
            out[label] = keras
        return out

    @classmethod
    def from_mapping(cls, section: dict[str, Any] | None, source: str = STUDY_FILE) -> AnalysisSettings:
        """Settings from a ``study.yaml`` ``analysis:`` mapping (unknown keys are an error)."""
        if section is None:
            return cls()
        if not isinstance(section, dict):
            raise ConfigError(f"{source}: 'analysis' must be a mapping, got {type(section).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(section) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown analysis key(s) {unknown}; expected some of {sorted(known)}")
        values: dict[str, Any] = {}
        for key, value in section.items():
            if key in ("layers", "measures", "sources") and value is not None:
                value = (value,) if isinstance(value, str) else tuple(str(v) for v in value)
            values[key] = value
        return cls(**values)

    def override(self, **values: Any) -> AnalysisSettings:
        """A copy with every non-``None`` value replaced."""
        given = {k: v for k, v in values.items() if v is not None}
        for key in ("layers", "measures", "sources"):
            if key in given:
                v = given[key]
                given[key] = (v,) if isinstance(v, str) else tuple(v)
        return replace(self, **given)

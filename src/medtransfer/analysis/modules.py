"""Layer-wise similarity of any two PyTorch models on the same images (``medtransfer similarity``).

:func:`compare_modules` takes two ``torch.nn.Module``s (medtransfer backbones, a timm / torchvision /
MONAI model, the user's own module, or a TorchScript module), a pool of images and the layers to
pair, and measures CCA / CKA under the study's sampling protocol (``analysis.activations``): the
images and positions of each repeat are drawn once and shared by both sides; each network runs
once over the images the samples need, on any device.

Layers are named as :mod:`medtransfer.models.hooks` reads them: ``named_modules()`` names
(``layer2``, ``blocks.3.attn``), and for medtransfer backbones also their Keras names and the
paper's stage names (``conv1``, ``block1`` .. ``block4``). ``layers_b`` pairs with ``layers_a``
by position (default: the same names). Activations are made ``(n, C, h, w)`` by the hooks' rules
(tokens ``(n, T, C)`` are positions). Then, per pair:

- both sides must have the same number of positions; when their grids differ (``h, w`` of each
  side), the larger is average-pooled (``adaptive_avg_pool2d``) to the common grid
  ``(min h, min w)``, and each side is pooled to it;
- the channels sampled are the same indices on both sides when their widths match (the paper's
  same-architecture case), independent draws otherwise.

:func:`medtransfer.models.resolve.resolve_model` turns a command-line spec into a :class:`Model`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from medtransfer.analysis.activations import ForwardLog, LayerPlan, Network, SamplingPlan, plan_sampling, sample_activations
from medtransfer.analysis.layerwise import UNCERTAINTY, Uncertainty, score_layer
from medtransfer.errors import ConfigError, MedtransferError, TooFewRowsError
from medtransfer.models.hooks import tap
from medtransfer.models.normalization import Normalization
from medtransfer.models.resolve import Model
from medtransfer.study.analysis_settings import AnalysisSettings
from medtransfer.training.run import resolve_device

COLUMNS = ["layer", "measure", "mean", "std", "rows", "channels", "repeats", "images", *UNCERTAINTY, "layer_a", "layer_b"]


def _shapes(extract, normalize, pool, device) -> dict[str, tuple[int, int, int]]:
    with torch.no_grad():
        pixels = torch.from_numpy(np.ascontiguousarray(pool[np.array([0])])).to(device)
        out = extract(normalize(pixels.permute(0, 3, 1, 2).float()))
    return {name: tuple(int(d) for d in t.shape[1:]) for name, t in out.items()}


def _same_images(plan: SamplingPlan, shapes: dict[str, tuple[int, int, int]], reuse: dict[str, bool],
                 seed: int, channels: int) -> SamplingPlan:
    """Side B's plan: side A's images per repeat; its channels reused where ``reuse``, else drawn."""
    rng = np.random.default_rng([seed, 1])
    layers = {}
    for name, p in plan.layers.items():
        c = shapes[name][0]
        chans = p.channels if reuse[name] else tuple(
            np.sort(rng.choice(c, size=min(channels, c), replace=False)) for _ in p.images)
        layers[name] = LayerPlan(name, (c, p.shape[1], p.shape[2]), p.images, chans, p.positions)
    return SamplingPlan(plan.n_pool, layers)


def compare_modules(
    model_a: Model | nn.Module,
    model_b: Model | nn.Module,
    pool,
    layers_a: Sequence[str] | None = None,
    layers_b: Sequence[str] | None = None,
    *,
    settings: AnalysisSettings | None = None,
    device: str | torch.device | None = None,
    sequence: str = "tokens",
) -> tuple[pd.DataFrame, ForwardLog]:
    """Similarity of two models at paired layers over ``pool``, one forward pass per model.

    Args:
        model_a, model_b: :class:`Model`s or bare modules (normalised with ``torch`` mode).
        pool: uint8 ``(N, h, w, 3)`` RGB images (an array or a :class:`~medtransfer.analysis.loading.RowView`).
        layers_a: layer names of A (default: its stage names, for medtransfer backbones);
            ``layers_b``: B's, paired by position (default: ``layers_a``).
        settings: rows, channels, repeats, measures, batch size and seed (the study's defaults).

    Returns:
        the table (:data:`COLUMNS`; ``layer`` is the pair's label) and the forward log.
    """
    settings = settings or AnalysisSettings()
    dev = resolve_device(device or None)
    sides = [m if isinstance(m, Model) else Model(m, Normalization("torch"), type(m).__name__) for m in (model_a, model_b)]
    names_a = list(layers_a) if layers_a else list(sides[0].default_layers)
    if not names_a:
        raise ConfigError(f"name the layers to compare for {sides[0].origin} (e.g. `medtransfer weights layers` lists them)")
    names_b = list(layers_b) if layers_b else (names_a if layers_a or not sides[1].default_layers else list(sides[1].default_layers))
    if len(names_a) != len(names_b):
        raise ConfigError(f"layers of the two models pair by position: {len(names_a)} given for A, {len(names_b)} for B")
    labels = [a if a == b else f"{a}~{b}" for a, b in zip(names_a, names_b)]
    uncertainty = Uncertainty(settings.ci, settings.resamples, settings.null_permutations(len(labels)),
                              ci_method=settings.ci_method)
    for side in sides:
        side.module.to(dev).eval()
    taps = [tap(sides[0].module, names_a, sequence), tap(sides[1].module, names_b, sequence)]
    raw = [_shapes(t, s.normalize, pool, dev) for t, s in zip(taps, sides)]
    grids = {}
    for label, a, b in zip(labels, names_a, names_b):
        (_, ha, wa), (_, hb, wb) = raw[0][a], raw[1][b]
        grids[label] = (min(ha, hb), min(wa, wb))
    shapes = [{label: (raw[k][n][0], *grids[label]) for label, n in zip(labels, names)}
              for k, names in enumerate((names_a, names_b))]
    plan_a = plan_sampling(len(pool), shapes[0], settings.rows, settings.channels, settings.repeats, settings.seed,
                           settings.sampling, settings.positions)
    reuse = {label: shapes[0][label][0] == shapes[1][label][0] for label in labels}
    plan_b = _same_images(plan_a, shapes[1], reuse, settings.seed, settings.channels)

    def network(k: int, names: list[str]) -> Network:
        def features(x, wanted):
            out = taps[k](x)
            result = {}
            for label, name in zip(labels, names):
                act = out[name]
                if tuple(act.shape[2:]) != grids[label]:
                    act = F.adaptive_avg_pool2d(act, grids[label])
                result[label] = act
            return result
        return Network(features=features, normalize=sides[k].normalize)

    log = ForwardLog()
    acts = [sample_activations(network(k, names), pool, plan, settings.batch_size, dev, log, f"{k}:{sides[k].origin}")
            for k, (names, plan) in enumerate(((names_a, plan_a), (names_b, plan_b)))]
    out = []
    for label, a, b in zip(labels, names_a, names_b):
        p = plan_a.layers[label]
        for k, name in enumerate((a, b)):
            _require_finite(acts[k][label], sides[k].origin, name)
        scored = score_layer(acts[0][label], acts[1][label], p, tuple(settings.measures), len(pool), uncertainty,
                             [settings.seed + j for j in range(len(settings.measures))])
        for m in settings.measures:
            scores = scored[m]
            if isinstance(scores, MedtransferError) and not isinstance(scores, TooFewRowsError):
                raise scores
            if isinstance(scores, TooFewRowsError):
                error = scores
                warnings.warn(f"layer {label}, {m}: skipped, {p.rows} rows for {len(p.channels[0])} channels are "
                              f"too few ({error}); more images (--images, or the whole dataset) or fewer channels "
                              "(--channels) measure it", SimilarityWarning, stacklevel=2)
                continue
            out.append({"layer": label, "measure": m, "rows": p.rows, "channels": len(p.channels[0]), **scores,
                        "layer_a": a, "layer_b": b})
    return pd.DataFrame(out, columns=COLUMNS), log


class SimilarityWarning(UserWarning):
    """A layer-wise score that could not be computed and was left out of the table."""


def _require_finite(samples: list, origin: str, layer: str) -> None:
    """Refuse NaN/inf activations naming the network and the layer (not just "x")."""
    for sample in samples:
        finite = torch.isfinite(sample).all() if torch.is_tensor(sample) else np.isfinite(sample).all()
        if not bool(finite):
            raise MedtransferError(f"{origin}: layer {layer} gives NaN or infinite activations on these images; "
                                   "check the network's weights (`medtransfer weights info FILE`) and its input "
                                   "normalisation")

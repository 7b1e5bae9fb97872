"""A model to compare from a command-line spec: :func:`resolve_model` turns a source name or weights
file (:func:`medtransfer.models.load_source`), ``package.module:function`` (called without
arguments, then a state dict loaded into it strictly), or a TorchScript file into a :class:`Model`.
"""

from __future__ import annotations

import importlib
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from medtransfer.errors import ConfigError, WeightsError
from medtransfer.models import registry
from medtransfer.models.normalization import Normalization
from medtransfer.models.report import check_finite_state
from medtransfer.models.sources import load_source
from medtransfer.models.torch_port import read_state_dict


@dataclass
class Model:
    """A module to compare, its input normalisation (RGB 0..255 ``(n, 3, h, w)`` -> network input),
    a description, and its default layers (the paper's stages for medtransfer backbones, else none)."""

    module: nn.Module
    normalize: Callable[[torch.Tensor], torch.Tensor]
    origin: str
    default_layers: tuple[str, ...] = ()


def _import_path_hint(module_name: str, error: ImportError) -> str:
    """Why a factory's module may not import: a file in the working directory is not on
    ``sys.path`` for the ``medtransfer`` command (an installed script puts its own folder there)."""
    top = module_name.split(".")[0]
    here = Path.cwd()
    local = here / f"{top}.py" if (here / f"{top}.py").is_file() else here / top
    if getattr(error, "name", None) == top and local.exists() and str(here) not in map(str, sys.path) \
            and "" not in sys.path:
        return (f"{local.name} is in the working directory, which is not on Python's import path (sys.path) "
                f"for the medtransfer command: run it as PYTHONPATH=. medtransfer ... (or add {here} to PYTHONPATH)")
    return ("the module must be importable from Python's import path (sys.path): install its package, or add the "
            "folder that holds it to PYTHONPATH")


def _import_factory(spec: str):
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError(f"cannot import {module_name!r} of model factory {spec!r}: {error}; "
                          f"{_import_path_hint(module_name, error)}") from error
    factory = module
    for part in attr.split("."):
        if not hasattr(factory, part):
            raise ConfigError(f"model factory {spec!r}: module {module_name!r} has no attribute {attr!r}")
        factory = getattr(factory, part)
    if not callable(factory):
        raise ConfigError(f"model factory {spec!r} is not callable")
    return factory


def resolve_model(spec: str, *, state_dict: str | Path | None = None, normalization: str | None = None,
                  backbone: str | None = None, cache_dir: str | Path | None = None) -> Model:
    """A :class:`Model` from a command-line spec.

    Args:
        spec: ``imagenet`` / ``radimagenet`` / ``random``, a Keras ``.h5``, ``.pth`` port or
            checkpoint; ``package.module:function`` (a factory returning an ``nn.Module``); or a
            TorchScript file.
        state_dict: for a factory: a ``.pth`` state dict loaded with ``strict=True`` (all keys, all shapes).
        normalization: a :class:`~medtransfer.models.Normalization` mode; default: the source's own,
            ``torch`` (ImageNet mean/std, torchvision's convention) for factories and TorchScript.
        backbone: registry name for source names.
    """
    path = Path(spec).expanduser()
    is_factory = ":" in spec and not path.exists() and "/" not in spec.split(":", 1)[0]
    if is_factory:
        module = _import_factory(spec)()
        if not isinstance(module, nn.Module):
            raise ConfigError(f"model factory {spec!r} returned {type(module).__name__}, not a torch.nn.Module")
        origin = f"{spec}()"
        if state_dict is not None:
            state = read_state_dict(state_dict)
            expected = module.state_dict()
            missing = [k for k in expected if k not in state]
            unexpected = [k for k in state if k not in expected]
            if missing or unexpected:
                raise WeightsError(
                    f"{state_dict} does not fit {origin}: missing {missing[:5]}, unexpected {unexpected[:5]}"
                )
            bad = [k for k in expected if tuple(state[k].shape) != tuple(expected[k].shape)]
            if bad:
                raise WeightsError(f"{state_dict}: {bad[0]} has shape {tuple(state[bad[0]].shape)}, "
                                   f"{origin} expects {tuple(expected[bad[0]].shape)}")
            check_finite_state(state, str(state_dict))
            module.load_state_dict(state)
            origin += f" with {state_dict}"
        return Model(module.eval(), Normalization.coerce(normalization, "torch"), origin)
    if state_dict is not None:
        raise ConfigError(f"a state dict goes with a model factory (package.module:function), not with {spec!r}")
    if path.is_file() and _is_torchscript(path):
        module = torch.jit.load(str(path), map_location="cpu")
        return Model(module.eval(), Normalization.coerce(normalization, "torch"), f"TorchScript {path}")
    source = load_source(spec, normalization=normalization, backbone=backbone, cache_dir=cache_dir)
    stages = tuple(registry.get(source.backbone).paper_layers)
    return Model(source.model, source.normalize, source.origin, stages)


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") or "/code/" in name for name in archive.namelist())

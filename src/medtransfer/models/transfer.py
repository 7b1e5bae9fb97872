"""Partial transfer and re-drawn initialisations (Raghu et al. 2019; Neyshabur et al. 2020).

A backbone's parameters fall into its registered stages (``conv1``, ``block1`` .. ``block4``, the
registry's ``paper_layers``) and the ``head``: a parameter belongs to the first stage whose output
depends on it (found from the autograd graph of one small forward pass, so the partition holds for
every registered backbone without naming its layers). A BatchNorm's running statistics belong
to the stage of its module.

:func:`transfer_init` builds the initialisation of a run that transfers part of a source:

- ``up_to=S``: the state of stages ``conv1 .. S`` (weights and BatchNorm statistics) copied from the
  source, every later stage and the head as the ``fresh`` model has them (the backbone's own,
  Keras, initialisation with the run's seed).
- ``init="mean-var"`` (Raghu et al. 2019, section 6): each transferred parameter tensor (a conv's
  kernel, its bias, a BatchNorm's gamma, beta) drawn i.i.d. from N(mean, std^2) of that pretrained
  tensor; ``init="shuffled"``: each transferred tensor's values permuted within the tensor (the
  distribution kept exactly, the structure destroyed). In both, the BatchNorm running statistics of
  the transferred stages are the fresh init's (mean 0, variance 1): they describe the activations of
  the pretrained weights, which the re-drawn weights no longer compute. Draws are on the CPU in
  float32, in state-dict order, from a generator seeded by ``seed`` alone.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from medtransfer.errors import ConfigError
from medtransfer.models import registry

HEAD = "head"
#: How the transferred stages are initialised: the source's weights, Mean-Var draws, or permutations.
INITS = ("weights", "mean-var", "shuffled")
_RUNNING_STATS = ("running_mean", "running_var", "num_batches_tracked")
_STREAM = 27  # a second seed word: the re-drawn values never share a stream with the fresh init's


def _reached(output: torch.Tensor) -> set[int]:
    """ids of the leaf tensors (parameters) ``output`` depends on, from its autograd graph."""
    found: set[int] = set()
    seen: set[object] = set()
    stack = [output.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        variable = getattr(fn, "variable", None)
        if variable is not None:
            found.add(id(variable))
        stack.extend(next_fn for next_fn, _ in fn.next_functions)
    return found


@functools.cache
def stage_partition(backbone: str | None) -> dict[str, str]:
    """State-dict key -> stage (``conv1`` .. ``block4`` by the registry's ``paper_layers``, or
    ``head``) of a headed model of ``backbone``, in state-dict order.

    Raises:
        ConfigError: a backbone parameter outside every stage (the registry's stages must cover the
            backbone: transferring up to the last stage is then full transfer).
    """
    spec = registry.get(backbone)
    model = spec.create(num_classes=2).eval()
    size = spec.min_size
    with torch.enable_grad():  # the graph is the point, also when called under no_grad
        outputs = model.features(torch.zeros(1, 3, size, size), list(spec.paper_layers.values()))
    ids = {id(p): name for name, p in model.named_parameters()}
    stage_of: dict[str, str] = {}
    for short, layer in spec.paper_layers.items():  # forward order: a parameter goes to its first stage
        for pid in _reached(outputs[layer]):
            stage_of.setdefault(ids[pid], short)
    module_stage: dict[str, str] = {}
    for name, _ in model.named_parameters():
        stage = stage_of.get(name, HEAD if name.startswith(f"{HEAD}.") else None)
        if stage is None:
            raise ConfigError(f"{spec.name}: parameter {name} lies in none of the stages {list(spec.paper_layers)}")
        module_stage[name.rpartition(".")[0]] = stage
    partition: dict[str, str] = {}
    for key in model.state_dict():
        module = key.rpartition(".")[0]
        if module not in module_stage:
            raise ConfigError(f"{spec.name}: state {key} belongs to no module with parameters")
        partition[key] = module_stage[module]
    return partition


def stages(backbone: str | None) -> tuple[str, ...]:
    """The backbone's stage names in forward order (the registry's ``paper_layers``)."""
    return tuple(registry.get(backbone).paper_layers)


def check_stage(backbone: str | None, stage: str) -> str:
    """``stage`` if it is one of the backbone's stages, else ConfigError naming them."""
    names = stages(backbone)
    if stage not in names:
        raise ConfigError(f"transfer up_to {stage!r}: {registry.get(backbone).name} has the stages "
                          f"{', '.join(names)}")
    return stage


def transferred_keys(backbone: str | None, up_to: str | None) -> list[str]:
    """The state-dict keys of stages ``conv1 .. up_to`` (every backbone stage for ``None``)."""
    names = stages(backbone)
    depth = names.index(check_stage(backbone, up_to)) + 1 if up_to is not None else len(names)
    kept = set(names[:depth])
    return [key for key, stage in stage_partition(registry.get(backbone).name).items() if stage in kept]


def _generator(seed: int) -> torch.Generator:
    word = int(np.random.SeedSequence([int(seed), _STREAM]).generate_state(1, np.uint64)[0] >> 1)
    return torch.Generator().manual_seed(word)


def mean_var_like(tensor: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """i.i.d. N(mean, std^2) values of ``tensor``'s shape, with its mean and (population) std, float32 CPU."""
    values = tensor.detach().to("cpu", torch.float64)
    mean, std = float(values.mean()), float(values.std(correction=0))
    draws = torch.empty(values.shape, dtype=torch.float32).normal_(0.0, 1.0, generator=generator)
    return draws * std + mean


def shuffled_like(tensor: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``tensor``'s values in a random order (one permutation over all its elements), on the CPU."""
    flat = tensor.detach().cpu().reshape(-1)
    return flat[torch.randperm(flat.numel(), generator=generator)].reshape(tensor.shape)


@torch.no_grad()
def transfer_init(source: nn.Module, fresh: nn.Module, *, up_to: str | None = None, init: str = "weights",
                  seed: int = 0) -> nn.Module:
    """``fresh`` (returned, changed in place) with stages ``conv1 .. up_to`` of ``source`` put in.

    Args:
        source: the pretrained model (with or without a head; only backbone stages are read).
        fresh: a model of the same backbone, freshly initialised with the run's seed.
        up_to: the last transferred stage; ``None``: every stage (the whole backbone).
        init: ``weights`` (copied), ``mean-var`` or ``shuffled`` (see the module notes).
        seed: seed of the ``mean-var`` / ``shuffled`` draws.
    """
    if init not in INITS:
        raise ConfigError(f"transfer init {init!r}: expected one of {', '.join(INITS)}")
    backbone = registry.backbone_of(fresh)
    if registry.backbone_of(source) != backbone:
        raise ConfigError(f"transfer from a {registry.backbone_of(source)} into a {backbone}")
    given: Mapping[str, torch.Tensor] = source.state_dict()
    state = fresh.state_dict()
    params = {name for name, _ in fresh.named_parameters()}
    generator = _generator(seed)
    for key in transferred_keys(backbone, up_to):
        value = given[key]
        if init != "weights" and key.rpartition(".")[2] in _RUNNING_STATS:
            continue  # running statistics of re-drawn weights: the fresh init's
        if init == "mean-var" and key in params:
            value = mean_var_like(value, generator)
        elif init == "shuffled" and key in params:
            value = shuffled_like(value, generator)
        state[key].copy_(value)
    return fresh

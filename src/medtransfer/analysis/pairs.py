"""The model pairs compared layer by layer (protocol.md, "Representation similarity").

Roles: the study's pretrained sources (the paper's ImageNet and RadImageNet, whatever their names
in a study) and the random initialisation. With two pretrained sources ``A``, ``B`` and ``random``
run under both strategies, one target and fold gives these pairs (``FT`` = fine-tuned):

====================  ===========================================  ==========================
kind                  pair                                         count
====================  ===========================================  ==========================
ft_vs_init            A-FT vs A, B-FT vs B (each strategy),        5
                      random-FT vs its random init
ft_vs_random          A-FT vs random, B-FT vs random (no-freeze)   2
init_vs_random        A vs random, B vs random                     2
ft_vs_ft              A-FT vs B-FT (each strategy)                 2
init_vs_init          A vs B, before fine-tuning                   1
freeze_vs_no_freeze   A-FT freeze vs A-FT no-freeze, same for B    2
random_vs_random      random (run's seed) vs random (seed + 1)     1
====================  ===========================================  ==========================

protocol.md counts 14; its list, read per source, enumerates the 15 above (freeze vs no-freeze is
taken for both pretrained sources). More than two pretrained sources: the per-source kinds are
built for each, the A-vs-B kinds for every pair of them.

A run's initialisation is ``load_source(config["source"], seed=config["seed"])``; the random
baseline is ``load_source("random", seed=s)`` with ``s`` the random run's seed in that fold (or the
fold's seed when no random run exists) and ``s + 1`` for the second random network.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

from medtransfer.analysis.inventory import RANDOM, Run, Study
from medtransfer.training.config import TransferSetting
from medtransfer.vocabulary import FREEZE, IMAGENET, NO_FREEZE, RADIMAGENET, STRATEGIES

NO_STRATEGY = "-"


@dataclass(frozen=True)
class ModelRef:
    """One distinct network of a fold: an initialisation or a fine-tuned checkpoint.

    ``load`` is the ``load_source`` string (inits) and ``checkpoint`` the weights file (fine-tuned);
    ``normalization`` the mode the run used (``None``: the source's default); ``label`` is for people.
    """

    kind: str  # "init" | "finetuned"
    load: str
    seed: int
    normalization: str | None
    checkpoint: Path | None
    label: str
    transfer: TransferSetting | None = field(default=None, hash=False)  # an init that takes part of its source (a transfer run's)

    @property
    def key(self) -> str:
        """Identity of the network: two refs with equal keys compute the same activations."""
        if self.kind == "finetuned":
            return f"finetuned:{self.checkpoint}"
        part = "" if self.transfer is None else f":transfer={self.transfer.model_dump_json()}"
        return f"init:{self.load}:seed={self.seed}:norm={self.normalization}{part}"


@dataclass(frozen=True)
class Pair:
    """Two networks compared at every layer; ``source`` is the pretrained source involved (or '')."""

    kind: str
    name: str
    strategy: str
    source: str
    a: ModelRef
    b: ModelRef


@dataclass(frozen=True)
class Roles:
    """The study's pretrained sources in role order, and the random source's name (or ``None``)."""

    pretrained: tuple[str, ...]
    random: str | None
    transfers: tuple[str, ...] = ()  # the sources' transfer runs (``imagenet.to_block2``): ft_vs_init only


def roles(study: Study, preferred: tuple[str, ...] | None = None) -> Roles:
    """Map the study's sources to the paper's roles.

    The random source is the one loaded as ``"random"``. Pretrained sources come in the order of
    ``preferred`` (the ``analysis.sources`` setting) when given, else imagenet before radimagenet
    when both exist, else the order of ``study.yaml``'s source list or of first appearance.
    """
    random_name = next((r.source for r in study.runs if r.is_random), None)
    transfers = tuple(dict.fromkeys(r.source for r in study.runs if r.config.transfer is not None))
    pretrained = [s for s in study.sources if s != random_name and s not in transfers]
    if preferred:
        pretrained = [s for s in preferred if s in pretrained] + [s for s in pretrained if s not in preferred]
    elif IMAGENET in pretrained and RADIMAGENET in pretrained:
        rest = [s for s in pretrained if s not in (IMAGENET, RADIMAGENET)]
        pretrained = [IMAGENET, RADIMAGENET, *rest]
    return Roles(pretrained=tuple(pretrained), random=random_name, transfers=transfers)


def init_ref(run: Run, seed: int | None = None) -> ModelRef:
    """The run's initialisation: ``load_source(config["source"], seed=config["seed"])``."""
    seed = run.seed if seed is None else seed
    norm = run.normalization
    return ModelRef("init", run.load_string, int(seed), None if norm is None else str(norm), None, run.source,
                    run.config.transfer)


def _finetuned(run: Run) -> ModelRef:
    norm = run.normalization
    label = f"{run.source}-FT({run.strategy})"
    return ModelRef("finetuned", run.load_string, run.seed, None if norm is None else str(norm), run.checkpoint, label)


def fold_pairs(study: Study, target: str, fold: int, role_map: Roles) -> tuple[list[Pair], list[str]]:
    """The pairs computable for one target and fold, and a message per pair that is not.

    Returns ``(pairs, missing)``; ``missing`` names the pair and the run it lacks.
    """
    pairs: list[Pair] = []
    missing: list[str] = []
    where = f"{target} fold {fold}"

    seeds = study.seeds(target, fold)
    seed = seeds[0] if seeds else None  # several seeds: the lowest one's runs are compared

    def run(source: str | None, strategy: str) -> Run | None:
        return None if source is None else study.run(target, source, strategy, fold, seed)

    def any_run(source: str) -> Run | None:
        in_fold = [r for r in study.runs if r.target == target and r.source == source and r.fold == fold and r.seed == seed]
        anywhere = [r for r in study.runs if r.target == target and r.source == source]
        found = in_fold or anywhere
        return found[0] if found else None

    random_run = run(role_map.random, NO_FREEZE)
    base_seed = random_run.seed if random_run is not None else (seed or 0)
    if random_run is not None:
        random0 = init_ref(random_run)
    else:
        random0 = ModelRef("init", RANDOM, base_seed, None, None, RANDOM)
    random1 = ModelRef("init", random0.load, base_seed + 1, random0.normalization, None, f"{RANDOM}(seed+1)")

    def need(name: str, *runs: tuple[str, Run | None]) -> bool:
        lacking = [label for label, r in runs if r is None]
        if lacking:
            missing.append(f"{where}: pair '{name}' skipped, no finished run {', '.join(lacking)}")
            return False
        return True

    for source in role_map.pretrained:
        init_run = any_run(source)
        for strategy in STRATEGIES:
            ft = run(source, strategy)
            name = f"{source}-FT vs {source}"
            if need(name + f" ({strategy})", (f"{source}-{strategy}", ft)):
                pairs.append(Pair("ft_vs_init", name, strategy, source, _finetuned(ft), init_ref(ft)))
        ft = run(source, NO_FREEZE)
        name = f"{source}-FT vs random"
        if need(name, (f"{source}-no-freeze", ft)):
            pairs.append(Pair("ft_vs_random", name, NO_FREEZE, source, _finetuned(ft), random0))
        if init_run is not None:
            pairs.append(Pair("init_vs_random", f"{source} vs random", NO_STRATEGY, source, init_ref(init_run), random0))
        ft_f, ft_nf = run(source, FREEZE), run(source, NO_FREEZE)
        name = f"{source}-FT freeze vs no-freeze"
        if need(name, (f"{source}-freeze", ft_f), (f"{source}-no-freeze", ft_nf)):
            pairs.append(Pair("freeze_vs_no_freeze", name, NO_STRATEGY, source, _finetuned(ft_f), _finetuned(ft_nf)))

    if role_map.random is not None:
        ft = run(role_map.random, NO_FREEZE)
        name = f"{role_map.random}-FT vs {role_map.random}"
        if need(name, (f"{role_map.random}-no-freeze", ft)):
            pairs.append(Pair("ft_vs_init", name, NO_FREEZE, role_map.random, _finetuned(ft), init_ref(ft)))
    else:
        missing.append(f"{where}: no random-init run, so no random-FT vs its init pair")

    for source in role_map.transfers:  # each transfer run against the init it started from
        ft = run(source, NO_FREEZE)
        name = f"{source}-FT vs {source}"
        if need(name, (f"{source}-no-freeze", ft)):
            pairs.append(Pair("ft_vs_init", name, NO_FREEZE, source, _finetuned(ft), init_ref(ft)))

    for a, b in combinations(role_map.pretrained, 2):
        for strategy in STRATEGIES:
            name = f"{a}-FT vs {b}-FT"
            ra, rb = run(a, strategy), run(b, strategy)
            if need(name + f" ({strategy})", (f"{a}-{strategy}", ra), (f"{b}-{strategy}", rb)):
                pairs.append(Pair("ft_vs_ft", name, strategy, "", _finetuned(ra), _finetuned(rb)))
        ia, ib = any_run(a), any_run(b)
        if ia is not None and ib is not None:
            pairs.append(Pair("init_vs_init", f"{a} vs {b}", NO_STRATEGY, "", init_ref(ia), init_ref(ib)))
    if len(role_map.pretrained) < 2:
        missing.append(
            f"{where}: fewer than two pretrained sources ({', '.join(role_map.pretrained) or 'none'}), "
            "so no pretrained-vs-pretrained pairs"
        )
    pairs.append(Pair("random_vs_random", "random vs random", NO_STRATEGY, "", random0, random1))
    return pairs, missing


def distinct_models(pairs: list[Pair]) -> dict[str, ModelRef]:
    """Each distinct network of ``pairs`` once, by key, in first-use order."""
    models: dict[str, ModelRef] = {}
    for pair in pairs:
        for ref in (pair.a, pair.b):
            models.setdefault(ref.key, ref)
    return models

"""Dataset names -> loaders, and the image check that decodes every image of a manifest.

``load_manifest(name, root, **options)`` is the one entry point; each loader lives in
``medtransfer.data.datasets.<module>`` as ``load(root, *, skip_bad=False, **options) -> Manifest``.
"""

from __future__ import annotations

import importlib
import inspect
import types
import typing
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from medtransfer.console import track
from medtransfer.data.copies import conflicting_copies, content_digests, group_copies
from medtransfer.data.folds import DEFAULT_FOLDS, FoldSpec, make_folds, validate_folds
from medtransfer.data.manifest import Manifest, SkippedFile, format_problems, reason_of
from medtransfer.errors import DataError

# name -> (module under medtransfer.data.datasets, fixed options)
LOADERS: dict[str, tuple[str, dict[str, Any]]] = {
    "chest": ("chest", {}),
    "breast": ("breast", {}),
    "thyroid": ("thyroid", {}),
    "mammograms": ("mammograms", {}),
    "knee": ("knee", {}),
    "pcam": ("pcam", {}),
    "pcam-small": ("pcam", {"subset": 10_000}),
    "isic": ("isic", {}),
    "medmnist": ("medmnist", {}),
    "folder": ("folder", {}),
    "csv": ("csvfile", {}),
    "synthetic": ("synthetic", {}),
}


# name of a loader module -> {option: its effect}. The one declaration of what each option does:
# ``medtransfer data options NAME`` prints it beside the default read from the loader's signature,
# and a test checks that every keyword of every ``load`` is declared here.
OPTIONS: dict[str, dict[str, str]] = {
    "chest": {},
    "breast": {
        "normal": "what the normal/ images become: benign = merged into benign (the paper: 133 of BUSI's 570 "
                  "benign), exclude = left out (benign vs malignant), class = a third class 'normal'",
    },
    "thyroid": {
        "empty_tirads": "a case whose <tirads> is empty: benign (the paper) or exclude = its images left out",
    },
    "mammograms": {},
    "knee": {
        "mode": "auto = RadImageNet's slice PNGs when images/ exists, else the raw volumes; slices; volumes",
        "slices": "volumes mode: central slices taken per case",
        "both": "volumes mode: a case with both tears is acl, meniscus, or exclude = left out",
        "labels_dir": "folder searched for MRNet's label CSVs instead of root",
    },
    "pcam": {
        "subset": "keep a seeded random subset of this many patches (none = all)",
        "seed": "seed of the subset",
        "splits": "official splits read: any of train, valid, test",
        "unpack_dir": "where .h5.gz files are unpacked once (default: the medtransfer cache)",
    },
    "isic": {
        "lesion_groups": "group images by lesion_id from the LesionGroupings CSV (false: each image is its own group)",
    },
    "medmnist": {
        "flag": "with a folder as root: which set, e.g. breastmnist",
        "size": "with a folder as root: which size variant, 28 (no suffix), 64, 128 or 224",
        "splits": "official splits read: any of train, val, test",
        "classes": "class names, index = label (default: built in for known sets, else 0..k-1)",
        "split": "kfold = a study cuts its own k folds from the images; official = the file's train/val/test "
                 "parts are the one fold (fold 0)",
    },
    "folder": {
        "classes": "class sub-folders to use, in label order (default: all, sorted)",
        "group_pattern": "regular expression on the path below root whose first group is the patient "
                         "(default: each image is its own group)",
    },
    "csvfile": {
        "classes": "class names in label order (default: the distinct labels, sorted)",
    },
    "synthetic": {
        "n_patients": "number of patients (groups)",
        "images_per_patient": "images per patient",
        "size": "image side in pixels",
        "seed": "seed of the generator",
        "n_classes": "number of classes",
        "task": "target, source-a or source-b: which combination of stripe orientation, period and lesion hue "
                "is the class",
        "signal": "scales the stripes' contrast",
    },
}


@dataclass(frozen=True)
class LoaderOption:
    """One option of a loader: its name, default (``fixed`` when the dataset name pins it) and effect."""

    name: str
    default: Any
    effect: str
    fixed: bool = False


def _module(name: str) -> Any:
    if name not in LOADERS:
        raise DataError(f"dataset {name!r}: expected one of {dataset_names()}")
    return importlib.import_module(f"medtransfer.data.datasets.{LOADERS[name][0]}")


def _keywords(module: Any) -> dict[str, inspect.Parameter]:
    return {p: v for p, v in inspect.signature(module.load).parameters.items() if p not in ("root", "skip_bad")}


_SIMPLE = {bool: "true or false", int: "an integer", float: "a number", str: "a text",
           list: "a list", tuple: "a list"}


def _accepts(value: Any, annotation: Any) -> bool | None:
    """Whether ``value`` fits ``annotation`` (None: a type this check does not know)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        verdicts = [_accepts(value, a) for a in typing.get_args(annotation)]
        return None if None in verdicts and not any(verdicts) else any(v for v in verdicts if v)
    if annotation is type(None):
        return value is None
    kind = origin or annotation
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is str:
        return isinstance(value, str)
    if kind in (list, tuple):
        return isinstance(value, (list, tuple))
    return None


def _option_type_problem(module: Any, key: str, value: Any) -> str | None:
    """``option key=value`` when ``value`` is not of the type the loader declares for it (a
    number where it expects one, ...), else None: the loader then never meets a text where it
    compares numbers."""
    try:
        annotation = typing.get_type_hints(module.load).get(key)
    except (NameError, TypeError):  # an annotation that cannot be resolved: nothing to check
        return None
    if annotation is None or _accepts(value, annotation) is not False:
        return None
    args = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) \
        else (annotation,)
    expected = " or ".join(dict.fromkeys("null" if a is type(None) else _SIMPLE.get(typing.get_origin(a) or a, str(a))
                                         for a in args))
    return f"option {key}={value!r}: expected {expected}"


def loader_options(name: str) -> list[LoaderOption]:
    """Every option ``load_manifest(name, ...)`` accepts, with its default and effect."""
    module_name, fixed = LOADERS[name] if name in LOADERS else (None, {})
    keywords = _keywords(_module(name))
    effects = OPTIONS[module_name]
    return [LoaderOption(key, fixed.get(key, param.default), effects[key], key in fixed)
            for key, param in keywords.items()]


def single_fold(name: str, options: dict[str, Any]) -> bool:
    """Whether dataset ``name`` loaded with ``options`` brings its own one fold (e.g. medmnist with
    ``split: official``) instead of the k folds a study cuts. False for an unknown name."""
    if name not in LOADERS:
        return False
    module = _module(name)
    return bool(getattr(module, "single_fold", lambda _: False)(options))


def dataset_folds(manifest: Manifest, spec: FoldSpec = DEFAULT_FOLDS, workers: int = 4):  # noqa: ANN201
    """The fold table of ``manifest``: its loader's own single fold when its options ask for one
    (``official_folds``), else ``make_folds(manifest, spec.k, spec.fractions, spec.seed)`` with
    identical images in one group (compared with ``workers`` threads, see :mod:`medtransfer.data.copies`)."""
    module = _module(manifest.name)
    if getattr(module, "single_fold", lambda _: False)(manifest.options):
        folds = module.official_folds(manifest)
        validate_folds(folds, manifest, source=f"{manifest.name} official split")
        return folds
    manifest = group_copies(manifest, content_digests(manifest, workers))
    return make_folds(manifest, k=spec.k, fractions=spec.fractions, seed=spec.seed)


def dataset_names() -> list[str]:
    """Names ``load_manifest`` accepts."""
    return list(LOADERS)


def load_manifest(name: str, root: str | Path | None = None, *, skip_bad: bool = False,
                  verify: bool | None = None, workers: int = 4, **options: Any) -> Manifest:
    """Turn the raw dataset ``name`` at ``root`` into a manifest.

    ``skip_bad=False``: any bad input (missing label file, unknown label value, conflicting
    labels, and with ``verify`` unreadable images) raises one ``DataError`` naming the files.
    ``skip_bad=True``: those files are left out and listed in ``manifest.skipped``.
    ``verify=True`` decodes every image (``workers`` threads) to find unreadable or truncated ones;
    the default (None) verifies exactly when ``skip_bad`` is set, so that one switch
    (``skip_bad: true`` in a study target's options) also leaves out unreadable images instead of
    failing on them later.
    ``options`` go to the loader (see each module under ``medtransfer.data.datasets``).
    """
    if name not in LOADERS:
        raise DataError(f"dataset {name!r}: expected one of {dataset_names()}")
    _, fixed = LOADERS[name]
    if name != "synthetic":
        if root is None:
            raise DataError(f"dataset {name!r}: a root folder or file is required (--root)")
        root = Path(root).expanduser()
        if not root.exists():
            raise DataError(f"dataset {name!r}: root {root} does not exist")
    module = _module(name)
    accepted = list(_keywords(module))
    unknown = sorted(set(options) - set(accepted) | (set(options) & set(fixed)))
    if unknown:
        raise DataError(f"dataset {name!r}: unknown option(s) {unknown}; expected some of {accepted}"
                        + (f" (fixed for {name}: {sorted(fixed)})" if set(options) & set(fixed) else "")
                        + f" (see `medtransfer data options {name}`)")
    wrong = [problem for key, value in options.items()
             if (problem := _option_type_problem(module, key, value)) is not None]
    if wrong:
        raise DataError(f"dataset {name!r}: " + "; ".join(wrong) + f" (see `medtransfer data options {name}`)")
    manifest = module.load(root, skip_bad=skip_bad, **{**fixed, **options})
    if name != manifest.name:
        manifest = replace(manifest, name=name)
    if skip_bad if verify is None else verify:
        manifest = verify_images(manifest, skip_bad=skip_bad, workers=workers)
    require_two_classes(manifest, refuse_empty=name in USER_DATASETS)
    return manifest


#: Loaders whose classes come from the user's data (folders, labels), not a published class list.
USER_DATASETS = ("folder", "csv")


def require_two_classes(manifest: Manifest, refuse_empty: bool = True) -> None:
    """Refuse a manifest with fewer than two classes that have images, and (``refuse_empty``) one
    with a class that has no image (it would add a model output that never occurs):
    ``DataError`` naming the classes."""
    counts = manifest.class_counts()
    empty = [name for name, count in counts.items() if count == 0]
    if empty and refuse_empty:
        used = ", ".join(name for name, count in counts.items() if count)
        raise DataError(
            f"{manifest.name}: class(es) {empty} have no images (of classes {list(counts)}): a model would get "
            f"an output that never occurs; remove the empty class folder, or choose the classes with "
            f"-o \"classes=[{used}]\" (options: {{classes: [{used}]}} in a study file)"
        )
    present = [name for name, count in counts.items() if count]
    if len(present) < 2:
        raise DataError(
            f"{manifest.name}: every image ({len(manifest)}) is in class {present[0] if present else '?'!r}; "
            "a classifier needs images of at least two classes"
        )


def _check_one(manifest: Manifest, i: int) -> str | None:
    try:
        image = manifest.read_image(i)
    except DataError as error:
        return reason_of(error, manifest.frame["ref"].iat[i])
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or min(image.shape[:2]) < 1:
        return f"decoded to shape {image.shape} {image.dtype}; expected (h, w, 3) uint8"
    return None


def verify_images(manifest: Manifest, *, skip_bad: bool = False, workers: int = 4) -> Manifest:
    """Decode every image; raise ``DataError`` naming the unreadable ones and the files whose
    bytes are identical but labelled differently (the same image in two classes), or
    (``skip_bad``) return the manifest without them, listed in ``skipped``. Identical images of
    one class are grouped together (:func:`~medtransfer.data.copies.group_copies`, counted in
    the notes)."""
    n = len(manifest)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        errors = list(track(pool.map(lambda i: _check_one(manifest, i), range(n)),
                            f"checking {manifest.name} images", total=n))
    digests = content_digests(manifest, workers)
    for i, reason in conflicting_copies(manifest, digests).items():
        errors[i] = errors[i] or reason
    bad = [i for i, e in enumerate(errors) if e is not None]
    if not bad:
        return group_copies(manifest, digests)
    refs = manifest.frame["ref"].to_numpy()
    problems = [SkippedFile(refs[i], errors[i], True) for i in bad]
    if not skip_bad:
        raise DataError(format_problems(manifest.name, problems))
    keep = np.ones(n, dtype=bool)
    keep[bad] = False
    kept = manifest.subset(keep)
    kept = group_copies(kept, [d for d, k in zip(digests, keep) if k])
    return replace(kept, skipped=[*manifest.skipped, *problems])

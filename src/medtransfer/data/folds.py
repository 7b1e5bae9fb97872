"""Patient-grouped, class-stratified k-fold splits into train / validation / test, and their CSVs.

Layout of a fold table (long format, one row per image and fold): columns ``image_id``, ``fold``
(0..k-1), ``split`` ("train" | "val" | "test" | "excluded"). A fold table covers its dataset:
every image of the manifest has a row in every fold; an image left out of a fold on purpose has
the split "excluded" there (:func:`validate_folds` refuses a table that leaves images out silently).

How ``make_folds`` splits (defaults :data:`DEFAULT_FOLDS`: k = 5, fractions 80/5/15 as in the
paper): the images are first cut into k held-out blocks of ~1/k each with scikit-learn's
``StratifiedGroupKFold`` (no group in two blocks, class proportions kept as far as groups allow).
In fold f, block f is held out and cut again, by group and class, into validation (val / (val +
test) of it) and test; all other blocks train. So every image is held out (validation or test) in exactly one fold, test parts of
different folds are disjoint, and no group ever spans two parts of one fold. With 80/5/15 three
quarters of the images are tested once and one quarter validates once.

A train fraction below (k-1)/k trains each fold on a subsample of the other blocks: they are cut,
by group and class, into ``round(((k-1)/k) / train)`` parts and the first trains; the rest of
them has the split "excluded" in that fold (neither trained on nor tested). That keeps training cheap
while the held-out parts stay large (the demo: train 1/6, validation 1/18, test 5/18 with k = 3).
"""

from __future__ import annotations

import re
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from medtransfer.atomic import write_text_atomic
from medtransfer.data.manifest import Manifest
from medtransfer.errors import ConfigError, DataError

SPLITS = ("train", "val", "test")
#: The split of an image a fold table leaves out of a fold on purpose (in no part of it).
EXCLUDED = "excluded"
_EXAMPLE_IDS = 10


@dataclass(frozen=True)
class FoldSpec:
    """How a dataset's images are cut into folds: ``k`` folds, each (train, val, test)
    ``fractions`` of the images, drawn with ``seed``. The one owner of the defaults (k = 5,
    80/5/15 as in the paper, seed 0): ``RunConfig``, the study file and ``data folds`` take theirs
    from :data:`DEFAULT_FOLDS`."""

    k: int = 5
    fractions: tuple[float, float, float] = (0.80, 0.05, 0.15)
    seed: int = 0

    def problem(self) -> str | None:
        """Why these settings cannot make folds, or ``None``: k >= 2, three fractions >= 0 that sum
        to at most 1, validation + test = 1/k (each fold holds out one of k blocks) and train at most
        the other (k-1)/k (below it, a subsample of them trains; see the module docstring)."""
        if self.k < 2:
            return f"k={self.k}; expected k >= 2"
        values = tuple(float(x) for x in self.fractions)
        if len(values) != 3 or min(values) < 0 or sum(values) > 1 + 1e-6:
            return f"fractions {tuple(self.fractions)} must be 3 numbers >= 0 that sum to at most 1 (train, val, test)"
        train, held = values[0], values[1] + values[2]
        if train > (self.k - 1) / self.k + 1e-6 or abs(held - 1 / self.k) > 1e-6:
            return (f"train fraction {train} with k={self.k}; expected {(self.k - 1) / self.k:.4f} "
                    f"(each fold holds out one of k blocks for validation + test, {1 / self.k:.4f}; a smaller "
                    f"train fraction with validation + test {1 / self.k:.4f} trains on a subsample of the rest)")
        return None

    def with_k(self, k: int) -> "FoldSpec":
        """The same validation : test proportion of the held-out part with ``k`` folds (train (k-1)/k)."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 2:
            raise ConfigError(f"folds: k={k!r}; expected k >= 2")
        _, val, test = (float(x) for x in self.fractions)
        held = 1.0 / k
        return FoldSpec(k, (1.0 - held, held * val / (val + test), held * test / (val + test)), self.seed)


DEFAULT_FOLDS = FoldSpec()


def _grouped_blocks(labels: np.ndarray, groups: np.ndarray, n_splits: int, seed: int) -> np.ndarray:
    """(n,) block index 0..n_splits-1 per item; groups never span blocks, classes stratified."""
    block = np.empty(len(labels), dtype=np.int64)
    _, group_codes = np.unique(groups, return_inverse=True)
    if np.bincount(labels).max() < n_splits:  # too few images of every class to stratify at all
        labels = np.zeros_like(labels)
    singletons = len(np.unique(group_codes)) == len(labels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class has only n members"
        if singletons:
            counts = np.bincount(labels)
            if counts[counts > 0].min() >= n_splits:
                splitter = StratifiedKFold(n_splits, shuffle=True, random_state=seed)
                for b, (_, test) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
                    block[test] = b
                return block
        splitter = StratifiedGroupKFold(n_splits, shuffle=True, random_state=seed)
        for b, (_, test) in enumerate(splitter.split(np.zeros(len(labels)), labels, group_codes)):
            block[test] = b
    return block


def _at_least_groups(block: np.ndarray, groups: np.ndarray, n_blocks: int, minimum: int) -> np.ndarray:
    """``block`` with every block holding at least ``minimum`` groups where the others can spare
    them: the smallest group of the block with the most groups moves, until none is short.

    (StratifiedGroupKFold balances images, so one large patient can fill a block alone, leaving
    nothing to split that fold's validation from its test part.)
    """
    block = block.copy()
    _, codes = np.unique(groups, return_inverse=True)
    for _ in range(len(codes)):
        members = [np.unique(codes[block == b]) for b in range(n_blocks)]
        counts = np.array([len(m) for m in members])
        poor, rich = int(np.argmin(counts)), int(np.argmax(counts))
        if counts[poor] >= minimum or counts[rich] <= minimum:
            break
        sizes = np.bincount(codes[block == rich])
        moved = min(members[rich], key=lambda g: (sizes[g], g))
        block[codes == moved] = poor
    return block


def _require_stratifiable(manifest: Manifest, k: int) -> None:
    """Refuse a class held by fewer than ``k`` groups: some fold could not hold out any of its
    images (no test images of it there), so the folds could not be stratified by class."""
    counts = manifest.class_counts()
    by_class = manifest.frame.groupby("label")["group"].nunique()
    small = [(name, counts[name], int(by_class.get(label, 0))) for label, name in enumerate(manifest.classes)
             if 0 < by_class.get(label, 0) < k]
    if small:
        shown = "; ".join(f"class {name!r} has {n} image(s) in {g} group(s)" for name, n, g in small)
        raise DataError(f"{manifest.name}: {shown}: too few to stratify {k} folds; expected at least {k} "
                        f"groups (patients, or images where there are none) with images of each class, one "
                        "per held-out block. Add images, merge or leave out the class (e.g. the loader "
                        "option classes), or use fewer folds")


def make_folds(manifest: Manifest, k: int = DEFAULT_FOLDS.k,
               fractions: tuple[float, float, float] = DEFAULT_FOLDS.fractions,
               seed: int = DEFAULT_FOLDS.seed) -> pd.DataFrame:
    """Grouped, stratified folds of ``manifest``: a table ``image_id, fold, split`` with N*k rows.

    ``fractions`` = (train, val, test); val + test must be 1/k since the held-out part of a fold
    is one of k blocks, and train at most (k-1)/k (below it, the fold trains on a grouped,
    stratified subsample of the other blocks and marks the rest "excluded";
    :meth:`FoldSpec.problem`). Raises ``ConfigError`` for settings that cannot
    make folds, ``DataError`` when there are too few groups to split or a class is held by fewer
    than k groups (too small to stratify).
    """
    problem = FoldSpec(k, fractions, seed).problem()
    if problem:
        raise ConfigError(f"folds: {problem}")
    train_f, val_f, test_f = (float(x) for x in fractions)
    labels = manifest.labels
    groups = manifest.groups
    n_groups = len(np.unique(groups))
    n_sub = int(round((val_f + test_f) / val_f)) if val_f > 0 else 0
    _require_stratifiable(manifest, k)
    if n_groups < k * max(1, min(n_sub, 2)):
        raise DataError(f"{manifest.name}: {n_groups} groups cannot make {k} folds with a validation "
                        f"part; expected at least {k * max(1, min(n_sub, 2))} groups")
    block = _at_least_groups(_grouped_blocks(labels, groups, k, seed), groups, k, max(1, min(n_sub, 2)))
    split = np.empty((k, len(labels)), dtype=object)
    for f in range(k):
        split[f] = "train"
        held = np.flatnonzero(block == f)
        if n_sub == 0:
            split[f, held] = "test"
            continue
        held_groups = groups[held]
        m = min(n_sub, len(np.unique(held_groups)))
        if m < 2:
            raise DataError(f"{manifest.name}: fold {f} holds out a single group; too few groups "
                            "to split validation from test")
        sub = _grouped_blocks(labels[held], held_groups, m, seed + 1 + f)
        split[f, held] = np.where(sub == 0, "val", "test")
    n_train = max(1, int(round((k - 1) / k / train_f))) if train_f > 0 else 1
    for f in range(k if n_train > 1 else 0):  # train on one of n_train parts of the other blocks
        rest = np.flatnonzero(block != f)
        part = _grouped_blocks(labels[rest], groups[rest], min(n_train, len(np.unique(groups[rest]))),
                               seed + 1 + k + f)
        split[f, rest[part != 0]] = EXCLUDED
    ids = manifest.image_ids
    table = pd.DataFrame({
        "image_id": np.tile(ids, k),
        "fold": np.repeat(np.arange(k), len(ids)),
        "split": split.reshape(-1),
    })
    return table


def validate_folds(folds: pd.DataFrame, manifest: Manifest, source: object = "folds") -> None:
    """Raise ``DataError`` unless ``folds`` fits ``manifest``: known image ids, one split per image
    and fold, every image of the manifest in every fold (split "excluded" where a fold leaves it
    out on purpose), no group in two splits of one fold, test parts disjoint across folds."""
    missing = {"image_id", "fold", "split"} - set(folds.columns)
    if missing:
        raise DataError(f"{source}: missing columns {sorted(missing)}; expected image_id, fold, split")
    bad_split = set(folds["split"]) - {*SPLITS, EXCLUDED}
    if bad_split:
        raise DataError(f"{source}: split values {sorted(bad_split)}; expected one of {[*SPLITS, EXCLUDED]}")
    known = set(manifest.image_ids)
    unknown = folds.loc[~folds["image_id"].isin(known), "image_id"]
    if len(unknown):
        raise DataError(f"{source}: {len(unknown)} image ids not in dataset {manifest.name!r}, "
                        f"e.g. {unknown.iloc[0]!r}")
    dup = folds.duplicated(["image_id", "fold"])
    if dup.any():
        row = folds[dup].iloc[0]
        raise DataError(f"{source}: image {row.image_id!r} appears twice in fold {row.fold}")
    _require_coverage(folds, manifest, source)
    group_of = dict(zip(manifest.image_ids, manifest.groups))
    g = folds[folds["split"] != EXCLUDED]
    g = g.assign(group=g["image_id"].map(group_of))
    spans = g.groupby(["fold", "group"])["split"].nunique()
    if (spans > 1).any():
        fold, group = spans[spans > 1].index[0]
        raise DataError(f"{source}: group {group!r} is in more than one split of fold {fold}")
    tests = g[g["split"] == "test"]
    twice = tests["image_id"].duplicated()
    if twice.any():
        raise DataError(f"{source}: image {tests[twice].iloc[0].image_id!r} is in the test part of two folds")


def _require_coverage(folds: pd.DataFrame, manifest: Manifest, source: object) -> None:
    """Raise ``DataError`` naming the images of ``manifest`` that some fold of ``folds`` does not list."""
    ids = pd.Index(manifest.image_ids)
    for fold, rows in folds.groupby("fold", sort=True):
        absent = ids[~ids.isin(rows["image_id"])]
        if len(absent):
            shown = ", ".join(repr(i) for i in absent[:_EXAMPLE_IDS]) + (
                f" and {len(absent) - _EXAMPLE_IDS} more" if len(absent) > _EXAMPLE_IDS else "")
            raise DataError(f"{source}: fold {fold} leaves out {len(absent)} of the {len(ids)} images of dataset "
                            f"{manifest.name!r} ({shown}); expected every image in every fold - list an image "
                            f"left out on purpose with split '{EXCLUDED}' (image_id,fold,{EXCLUDED})")


FOLDS_HEADER = "image_id,fold,split"  # the first line of every folds file write_folds writes


def check_folds_target(path: str | Path) -> None:
    """Refuse, before any work, to write a folds file over a folder or over a file that is not a
    folds file (its first line is not :data:`FOLDS_HEADER`): ``ConfigError`` naming it. A folds
    file (ours, or the same table from elsewhere) may be replaced."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"--out {path}: is a folder; expected the path of a CSV file to write")
    if not path.exists():
        return
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            first = handle.readline().strip()
    except OSError as error:
        raise ConfigError(f"--out {path}: cannot be read ({error.strerror}); give a new file name") from error
    if first != FOLDS_HEADER:
        raise ConfigError(f"--out {path}: exists and is not a folds file (its first line is not '{FOLDS_HEADER}'); "
                          "medtransfer never overwrites other files: give a new file name")


def write_folds(folds: pd.DataFrame, path: str | Path) -> Path:
    """Write a fold table as CSV (atomically: temporary file, then rename)."""
    return write_text_atomic(path, folds.loc[:, FOLDS_HEADER.split(",")].to_csv(index=False))


def read_folds(path: str | Path, manifest: Manifest | None = None) -> pd.DataFrame:
    """Read a fold table CSV; with ``manifest``, check it fits (``validate_folds``)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: fold file not found")
    try:
        folds = pd.read_csv(path, dtype={"image_id": str, "split": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: not a fold CSV ({error})") from error
    if "fold" in folds:
        folds["fold"] = _fold_numbers(folds["fold"], path)
    for column in ("image_id", "split"):
        if column in folds and folds[column].isna().any():
            line = int(np.flatnonzero(folds[column].isna().to_numpy())[0]) + 2
            raise DataError(f"{path}:{line}: empty {column} (a truncated or damaged fold file?); expected "
                            "image_id,fold,split on every line")
    if manifest is not None:
        validate_folds(folds, manifest, source=path)
    elif not {"image_id", "fold", "split"} <= set(folds.columns):
        raise DataError(f"{path}: expected columns image_id, fold, split; got {list(folds.columns)}")
    return folds.loc[:, ["image_id", "fold", "split"]]


def _fold_numbers(values: pd.Series, path: Path) -> pd.Series:
    """The ``fold`` column as int64; DataError naming the file and line of an empty or non-integer value."""
    numbers = pd.to_numeric(values, errors="coerce")
    bad = numbers.isna() | (numbers != numbers.round())
    if bad.any():
        line = int(np.flatnonzero(bad.to_numpy())[0]) + 2
        value = values.iloc[line - 2]
        shown = "empty" if pd.isna(value) else repr(str(value))
        raise DataError(f"{path}:{line}: fold {shown} is not an integer (a truncated or "
                        "damaged fold file?); expected image_id,fold,split on every line")
    return numbers.astype(np.int64)


def _parts(path: str) -> tuple[str, ...]:
    return tuple(p for p in PurePosixPath(str(path).replace("\\", "/")).parts if p not in ("/", "."))


def _common_suffix(a: tuple[str, ...], b: tuple[str, ...]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[-1 - n] == b[-1 - n]:
        n += 1
    return n


class _PathMatcher:
    """Finds the manifest row whose ref shares the longest path suffix with a foreign path."""

    def __init__(self, manifest: Manifest) -> None:
        self.parts = [_parts(r) for r in manifest.frame["ref"]]
        self.by_name: dict[str, list[int]] = defaultdict(list)
        for i, p in enumerate(self.parts):
            if p:
                self.by_name[p[-1]].append(i)
        # files the loader left out (by an option, or as bad input): file name -> why
        self.left_out: dict[str, str] = {}
        for skipped in manifest.skipped:
            name = _parts(str(skipped.path))
            if name:
                self.left_out.setdefault(name[-1], f"{skipped.path}: {skipped.reason}")

    def match(self, path: str) -> tuple[int | None, str]:
        parts = _parts(path)
        if not parts:
            return None, "empty path"
        rows = self.by_name.get(parts[-1], [])
        if not rows:
            if parts[-1] in self.left_out:
                return None, f"the local image exists but the loader left it out ({self.left_out[parts[-1]]})"
            return None, "no local image has this file name"
        if len(rows) == 1:
            return rows[0], ""
        scores = np.array([_common_suffix(parts, self.parts[i]) for i in rows])
        best = np.flatnonzero(scores == scores.max())
        if len(best) > 1:
            return None, f"ambiguous: matches {len(best)} local images equally well"
        return rows[best[0]], ""


_AUTHOR_FILE = re.compile(r"^(train|val|test)_fold(\d+)\.csv$")
_INDEX = re.compile(r"^\d+(\.0*)?$")

# The authors' class values that are not our class names (case aside), per dataset: PCam's
# "no"/"yes" tumour flags; CBIS-DDSM's pathology BENIGN_WITHOUT_CALLBACK is benign. Chest (NORMAL,
# PNEUMONIA), BUSI (benign, malignant: normal images were written benign), DDTI (benign,
# malignant), CBIS-DDSM (BENIGN, MALIGNANT), knee (normal, acl, meniscus) and ISIC (MEL, NV, ...)
# use our names.
AUTHOR_CLASS_ALIASES: dict[str, dict[str, str]] = {
    "pcam": {"no": "normal", "yes": "tumor"},
    "mammograms": {"benign_without_callback": "benign"},
}
_EXAMPLES = 5


def author_class_labels(values: pd.Series, manifest: Manifest, source: object) -> np.ndarray:
    """The authors' class values ``(n,)`` as our label indices ``(n,)`` int64.

    A value maps, ignoring case and surrounding spaces, through ``AUTHOR_CLASS_ALIASES`` of the
    manifest's dataset, else to the class of that name, else (an integer such as ``1`` or ``1.0``)
    to that class index. Raises ``DataError`` naming ``source`` and the values that map to nothing.
    """
    classes = list(manifest.classes)
    by_name = {c.strip().lower(): i for i, c in enumerate(classes)}
    aliases = AUTHOR_CLASS_ALIASES.get(manifest.name, {})
    mapping: dict[object, int] = {}
    unknown = []
    for value in pd.unique(values):
        key = "" if pd.isna(value) else str(value).strip().lower()
        if key in aliases and aliases[key] in by_name:
            mapping[value] = by_name[aliases[key]]
        elif key in by_name:
            mapping[value] = by_name[key]
        elif _INDEX.match(key) and int(float(key)) < len(classes):
            mapping[value] = int(float(key))
        else:
            unknown.append(value)
    if unknown:
        shown = ", ".join("(empty)" if pd.isna(v) else repr(v) for v in unknown[:10]) + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
        alias_text = f", the authors' aliases {sorted(aliases)}" if aliases else ""
        raise DataError(f"{source}: class values {shown} cannot be mapped to the classes {classes} of the local "
                        f"{manifest.name!r} dataset; expected a class name (any case){alias_text} or a class "
                        f"index 0..{len(classes) - 1}")
    return values.map(mapping).to_numpy(dtype=np.int64)


def check_author_labels(table: pd.DataFrame, rows: np.ndarray, manifest: Manifest, source: object) -> None:
    """Raise ``DataError`` unless the authors' ``class`` column of ``table`` agrees with our labels.

    ``rows[i]`` is the manifest row that line ``i + 2`` of the CSV (``table.iloc[i]``) matched.
    An image on several lines agrees when at least one of its lines does.
    """
    if "class" not in table.columns:
        raise DataError(f"{source}: no 'class' column to check the labels against (columns {list(table.columns)}); "
                        "expected path,class[,pid], or import the splits unchecked with --no-check-labels "
                        "(medtransfer data folds --authors DIR --no-check-labels)")
    theirs = author_class_labels(table["class"], manifest, source)
    ours = manifest.labels[rows]
    agree = pd.Series(theirs == ours).groupby(rows).transform("any").to_numpy()
    if agree.all():
        return
    wrong = np.flatnonzero(~agree)
    first = wrong[~pd.Series(rows[wrong]).duplicated().to_numpy()]  # one line per image
    classes = manifest.classes
    lines = [f"line {i + 2} {table['path'].iat[i]!r} (image {manifest.image_ids[rows[i]]}): authors' class "
             f"{table['class'].iat[i]!r}, ours {classes[ours[i]]!r}" for i in first[:_EXAMPLES]]
    more = f"\n  ... and {len(first) - _EXAMPLES} more" if len(first) > _EXAMPLES else ""
    raise DataError(f"{source}: the authors' class disagrees with the local {manifest.name!r} label for "
                    f"{len(first)} of {len(np.unique(rows))} images:\n  " + "\n  ".join(lines) + more
                    + "\n(a different dataset version or label option? --no-check-labels imports the splits "
                    "anyway: medtransfer data folds --authors DIR --no-check-labels)")


def _with_excluded(folds: pd.DataFrame, ids: np.ndarray) -> pd.DataFrame:
    """``folds`` plus a row ``(image, fold, "excluded")`` for each image of ``ids`` a fold does not list."""
    extra = []
    for fold, rows in folds.groupby("fold", sort=True):
        absent = ids[~pd.Index(ids).isin(rows["image_id"])]
        if len(absent):
            extra.append(pd.DataFrame({"image_id": absent, "fold": fold, "split": EXCLUDED}))
    return pd.concat([folds, *extra], ignore_index=True) if extra else folds


def import_author_splits(directory: str | Path, manifest: Manifest,
                         conflicts: str = "error", check_labels: bool = True) -> pd.DataFrame:
    """Map the authors' ``{train,val,test}_fold{k}.csv`` files (columns ``path,class[,pid]``) onto
    ``manifest`` by path suffix (file name first, then parent folders to break ties).

    Returns a fold table (folds renumbered 0..k-1 in the order of the files' fold numbers); an
    image of the manifest that a fold's files do not list is in that fold with split "excluded".
    Raises ``DataError`` naming the file and rows that match no local image or several.
    An image listed twice in one split counts once (the authors' CBIS-DDSM rows are abnormalities);
    an image in two splits of one fold is an error, or with ``conflicts="test-wins"`` is kept in
    the test part, else validation.

    With ``check_labels`` (default) each file's ``class`` column must agree with the manifest's
    labels (see :func:`author_class_labels` for how values are mapped); an image listed on several
    rows agrees when one of its rows does (the authors' CBIS-DDSM rows of one image may conflict;
    ours is malignant if any is). A missing ``class`` column, an unmappable value or a disagreement
    raises ``DataError`` naming the file, rows, the authors' class and ours. ``check_labels=False``
    imports the splits anyway (e.g. the authors' knee validation files, whose meniscus labels
    came from the abnormal CSV).
    """
    directory = Path(directory)
    if conflicts not in ("error", "test-wins"):
        raise ConfigError(f"conflicts={conflicts!r}: expected 'error' or 'test-wins'")
    files: dict[int, dict[str, Path]] = defaultdict(dict)
    for f in sorted(directory.glob("*_fold*.csv")):
        m = _AUTHOR_FILE.match(f.name)
        if m:
            files[int(m.group(2))][m.group(1)] = f
    if not files:
        raise DataError(f"{directory}: no files named {{train,val,test}}_fold<k>.csv")
    matcher = _PathMatcher(manifest)
    ids = manifest.image_ids
    frames = []
    for fold, number in enumerate(sorted(files)):
        missing = [s for s in SPLITS if s not in files[number]]
        if missing:
            raise DataError(f"{directory}: fold {number} lacks {', '.join(f'{s}_fold{number}.csv' for s in missing)}")
        for split in SPLITS:
            path = files[number][split]
            table = pd.read_csv(path, dtype=str)
            if "path" not in table.columns:
                raise DataError(f"{path}: expected a 'path' column (path,class[,pid]); got {list(table.columns)}")
            rows, bad = [], []
            for line, p in enumerate(table["path"], start=2):
                row, why = matcher.match(p)
                if row is None:
                    bad.append(f"line {line} {p!r}: {why}")
                else:
                    rows.append(row)
            if bad:
                raise DataError(f"{path}: {len(bad)} of {len(table)} rows match no single image of the "
                                f"local {manifest.name!r} dataset:\n  " + "\n  ".join(bad[:10])
                                + (f"\n  ... and {len(bad) - 10} more" if len(bad) > 10 else ""))
            if check_labels:
                check_author_labels(table, np.asarray(rows, dtype=np.int64), manifest, path)
            frames.append(pd.DataFrame({"image_id": ids[np.unique(rows)], "fold": fold, "split": split}))
    folds = pd.concat(frames, ignore_index=True)
    dup = folds.duplicated(["image_id", "fold"], keep=False)
    if dup.any():
        if conflicts == "error":
            row = folds[dup].iloc[0]
            splits = sorted(folds.loc[dup & (folds["image_id"] == row.image_id) & (folds["fold"] == row.fold), "split"])
            raise DataError(f"{directory}: image {row.image_id!r} is in splits {splits} of fold "
                            f"{row.fold} (pass conflicts='test-wins' to keep it in test)")
        order = folds["split"].map({"test": 0, "val": 1, "train": 2})
        folds = folds.assign(_o=order).sort_values(["fold", "image_id", "_o"], kind="stable")
        folds = folds.drop_duplicates(["image_id", "fold"]).drop(columns="_o")
    folds = _with_excluded(folds, ids)
    return folds.sort_values(["fold", "split", "image_id"], kind="stable").reset_index(drop=True)

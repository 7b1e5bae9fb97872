"""``medmnist``: MedMNIST v2/v3 npz files (any size variant), e.g. ``breastmnist.npz``,
``pneumoniamnist_224.npz``.

``root`` is the npz file, or a folder plus ``flag`` (``breastmnist``) and ``size`` (28 = no
suffix, 64, 128, 224). Keys ``{train,val,test}_images`` ((N, H, W) gray or (N, H, W, 3) RGB) and
``{train,val,test}_labels`` ((N, 1) or (N,) integers; multi-label sets are refused). The images
of the chosen ``splits`` are kept in memory (refs ``<split>:<row>``); image ids ``train_000012``;
no patient ids, so each image is its own group. The classes each 2-D single-label MedMNIST set
declares are built in (:data:`KNOWN_CLASSES`, by the file's stem); ``classes`` overrides them. A
label outside the declared classes is refused. A file of another set declares none: its classes
are 0..max label, and a label value that no image uses in between (a phantom class) is refused.
Float images with a NaN or infinite pixel are refused naming the file, the array and an image.

Option ``split``: ``"kfold"`` (default) lets a study cut its own k folds from the images of
``splits``; ``"official"`` makes the file's own train/val/test parts the one and only fold
(fold 0; :func:`official_folds`), so a study runs fold 0 only and tests on the official test part.

A damaged file (truncated zip, object arrays, non-integer or negative labels, an empty split) is
refused with a ``DataError`` naming the file and the array.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medtransfer.data.images import ArrayReader
from medtransfer.data.manifest import Manifest, ProblemLog, make_manifest
from medtransfer.errors import DataError

# The classes each MedMNIST 2-D single-label set declares (MedMNIST's INFO: index = label); a
# file of one of these sets (by its stem) must keep its labels in 0..len - 1.
_ORGANS = ["bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right", "liver", "lung-left",
           "lung-right", "pancreas", "spleen"]
KNOWN_CLASSES = {
    "breastmnist": ["malignant", "normal, benign"],
    "pneumoniamnist": ["normal", "pneumonia"],
    "dermamnist": ["actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma",
                   "benign keratosis-like lesions", "dermatofibroma", "melanoma", "melanocytic nevi",
                   "vascular lesions"],
    "pathmnist": ["adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle",
                  "normal colon mucosa", "cancer-associated stroma", "colorectal adenocarcinoma epithelium"],
    "octmnist": ["choroidal neovascularization", "diabetic macular edema", "drusen", "normal"],
    "retinamnist": ["0", "1", "2", "3", "4"],
    "bloodmnist": ["basophil", "eosinophil", "erythroblast", "immature granulocytes", "lymphocyte", "monocyte",
                   "neutrophil", "platelet"],
    "tissuemnist": ["collecting duct, connecting tubule", "distal convoluted tubule",
                    "glomerular endothelial cells", "interstitial endothelial cells", "leukocytes", "podocytes",
                    "proximal tubule segments", "thick ascending limb"],
    "organamnist": _ORGANS,
    "organcmnist": _ORGANS,
    "organsmnist": _ORGANS,
}
SPLITS = ("train", "val", "test")
FOLD_SPLITS = ("kfold", "official")
MAX_LABEL = 100_000  # no classification set has this many classes: a larger label is damage


def _file(root: Path, flag: str | None, size: int) -> Path:
    if root.is_file():
        return root
    if flag is None:
        found = sorted(root.glob("*.npz"))
        if len(found) != 1:
            raise DataError(f"{root}: expected one .npz file or the option flag (e.g. flag='breastmnist'); "
                            f"found {len(found)} npz files")
        return found[0]
    path = root / (f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz")
    if not path.is_file():
        raise DataError(f"{path}: MedMNIST file not found")
    return path


def _array(data: Any, path: Path, key: str) -> np.ndarray:
    """``data[key]`` read in full, or a ``DataError`` naming the file and the array."""
    try:
        return np.asarray(data[key])
    except ValueError as error:
        if "allow_pickle" in str(error):
            raise DataError(f"{path}: {key} is an object array (pickled Python objects); expected a numeric "
                            "array as MedMNIST writes it") from None
        raise DataError(f"{path}: {key} cannot be read ({error}); the file looks damaged") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as error:
        raise DataError(f"{path}: {key} cannot be read ({error.__class__.__name__}: {error}); the file is "
                        "truncated or damaged - download it again") from None


def _labels(y: np.ndarray, path: Path, split: str) -> np.ndarray:
    """``{split}_labels`` as (N,) int64, refusing multi-label, non-numeric, fractional and negative values."""
    key = f"{split}_labels"
    if y.ndim == 2 and y.shape[1] != 1:
        raise DataError(f"{path}: {key} has shape {y.shape}: multi-label MedMNIST sets "
                        "are not single-label classification; expected (N, 1)")
    if y.ndim not in (1, 2):
        raise DataError(f"{path}: {key} has shape {y.shape}; expected (N, 1) or (N,)")
    y = y.reshape(-1)
    if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating) or y.dtype == bool):
        raise DataError(f"{path}: {key} has dtype {y.dtype}; expected integer class indices")
    if np.issubdtype(y.dtype, np.floating):
        bad = ~np.isfinite(y) | (y != np.round(y))
        if bad.any():
            raise DataError(f"{path}: {key} holds {int(bad.sum())} non-integer value(s), e.g. {y[bad][0].item()!r} "
                            f"at row {int(np.flatnonzero(bad)[0])}; expected integer class indices")
    if len(y) and y.min() < 0:
        raise DataError(f"{path}: {key} holds negative label {y.min().item()!r}; expected class indices 0..k-1")
    if len(y) and y.max() >= MAX_LABEL:
        raise DataError(f"{path}: {key} holds label {y.max().item()!r} at row {int(np.argmax(y))}; expected class "
                        f"indices 0..k-1 with k at most {MAX_LABEL:,}")
    return y.astype(np.int64)


def _check_finite(images: np.ndarray, path: Path, split: str) -> None:
    """Refuse float ``{split}_images`` holding NaN or infinity, naming the images (it would decode black)."""
    if not np.issubdtype(images.dtype, np.floating):
        return
    bad = ~np.isfinite(images).reshape(len(images), -1).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        shown = ", ".join(f"{split}_{r:06d}" for r in rows[:5])
        shown += f" and {len(rows) - 5} more" if len(rows) > 5 else ""
        raise DataError(f"{path}: {split}_images holds NaN or infinite pixel values in {len(rows)} image(s): {shown}; "
                        "expected finite pixels")


def _class_names(path: Path, label: np.ndarray, image_id: np.ndarray, classes: list[str] | None) -> list[str]:
    """The class names of the file (``classes``, else the set's declared ones, else 0..max label),
    after checking every label against them: ``DataError`` naming the file, the label and an image."""
    declared = list(classes) if classes else KNOWN_CLASSES.get(path.stem.split("_")[0])
    top = int(label.max())
    if declared is not None:
        if top >= len(declared):
            row = int(np.argmax(label))
            where = "given with the option classes" if classes else f"MedMNIST declares for {path.stem.split('_')[0]}"
            raise DataError(f"{path}: label {top} of image {image_id[row]} is outside the {len(declared)} classes "
                            f"{where} ({declared[:10]}{' ...' if len(declared) > 10 else ''}); expected labels "
                            f"0..{len(declared) - 1}")
        return declared
    used = np.unique(label)  # sorted; never a list as long as the largest label (a huge label would hang)
    if len(used) != top + 1:
        present = set(used.tolist())
        gaps = [v for v in range(min(top, len(used) + 5)) if v not in present][:5]  # the first unused values
        raise DataError(f"{path}: labels run up to {top} but only {len(used)} distinct value(s) occur "
                        f"({used[:10].tolist()}{' ...' if len(used) > 10 else ''})"
                        + f"; no image has label {gaps}{' ...' if top + 1 - len(used) > len(gaps) else ''}"
                        + "; each unused value would be a class that never occurs. Expected labels 0..k-1 "
                        "that all occur, or the class names with the option classes (-o \"classes=[a, b]\")")
    return [str(i) for i in range(top + 1)]


def load(root: Path, *, skip_bad: bool = False, flag: str | None = None, size: int = 28,
         splits: tuple[str, ...] = SPLITS, classes: list[str] | None = None, split: str = "kfold") -> Manifest:
    """Manifest of a MedMNIST npz file."""
    if split not in FOLD_SPLITS:
        raise DataError(f"medmnist option split={split!r}: expected one of {list(FOLD_SPLITS)}")
    splits = (splits,) if isinstance(splits, str) else tuple(splits)
    if split == "official" and sorted(splits) != sorted(SPLITS):
        raise DataError(f"medmnist option split='official' uses the file's train, val and test parts; "
                        f"splits={list(splits)} leaves some out")
    unknown = sorted(set(splits) - set(SPLITS))
    if unknown or not splits:
        raise DataError(f"medmnist option splits={list(splits)}: expected one or more of {list(SPLITS)}")
    path = _file(root, flag, size)
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(f"{path}: not a readable npz file ({error.__class__.__name__}: {error})") from error
    if not hasattr(data, "files"):
        raise DataError(f"{path}: holds a single array, not an npz archive of {{train,val,test}}_images/_labels")
    arrays, labels, ids = [], [], []
    for name in splits:
        if f"{name}_images" not in data.files or f"{name}_labels" not in data.files:
            raise DataError(f"{path}: missing {name}_images / {name}_labels; has {sorted(data.files)}")
        images = _array(data, path, f"{name}_images")
        y = _labels(_array(data, path, f"{name}_labels"), path, name)
        if images.ndim not in (3, 4) or len(images) != len(y):
            raise DataError(f"{path}: {name}_images has shape {images.shape}; expected (N, H, W[, 3]) "
                            f"with N = {len(y)}")
        if len(y) == 0:
            raise DataError(f"{path}: {name}_images and {name}_labels are empty; expected at least one image "
                            "(or leave the split out with the option splits)")
        if not (np.issubdtype(images.dtype, np.integer) or np.issubdtype(images.dtype, np.floating)):
            raise DataError(f"{path}: {name}_images has dtype {images.dtype}; expected uint8 pixels")
        _check_finite(images, path, name)
        arrays.append(images)
        labels.append(y)
        ids.append(np.char.add(f"{name}_", np.char.zfill(np.arange(len(y)).astype(str), 6)))
    shapes = {a.shape[1:] for a in arrays}
    if len(shapes) > 1:
        raise DataError(f"{path}: the splits' images differ in shape {sorted(shapes)}; expected one image shape")
    pixels = np.concatenate(arrays)
    label = np.concatenate(labels)
    image_id = np.concatenate(ids)
    names = _class_names(path, label, image_id, classes)
    image_id = np.concatenate(ids)
    frame = pd.DataFrame({"image_id": image_id, "ref": np.char.add("medmnist:", np.arange(len(label)).astype(str)),
                          "label": label, "group": image_id})
    st = path.stat()
    key = f"{path}|{st.st_size}|{st.st_mtime_ns}|{','.join(splits)}"
    return make_manifest(frame, names, "medmnist", ProblemLog("medmnist", skip_bad),
                         reader=ArrayReader(pixels, key=key),
                         options={"file": str(path), "splits": list(splits), "split": split})


def single_fold(options: dict[str, Any]) -> bool:
    """Whether loader ``options`` make the official split the dataset's only fold."""
    return options.get("split", "kfold") == "official"


def official_folds(manifest: Manifest) -> pd.DataFrame:
    """Fold 0 = the file's own parts: ``image_id, fold, split`` with train/val/test from the ids."""
    ids = manifest.image_ids
    part = pd.Series(ids).str.partition("_")[0].to_numpy()
    if not set(part) <= set(SPLITS):
        raise DataError(f"{manifest.name}: image ids {sorted(set(part) - set(SPLITS))[:3]} do not name an "
                        "official split; expected ids train_*, val_*, test_*")
    return pd.DataFrame({"image_id": ids, "fold": 0, "split": part})

"""``medmnist``: MedMNIST v2/v3 npz files (any size variant), e.g. ``breastmnist.npz``,
``pneumoniamnist_224.npz``.

``root`` is the npz file, or a folder plus ``flag`` (``breastmnist``) and ``size`` (28 = no
suffix, 64, 128, 224). Keys ``{train,val,test}_images`` ((N, H, W) gray or (N, H, W, 3) RGB) and
``{train,val,test}_labels`` ((N, 1) or (N,) integers; multi-label sets are refused). The images
of the chosen ``splits`` are kept in memory (refs ``<split>:<row>``); image ids ``train_000012``;
no patient ids, so each image is its own group. Class names for the stand-ins of the paper's
targets are built in; ``classes`` overrides them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medtransfer.data.images import ArrayReader
from medtransfer.data.manifest import Manifest, ProblemLog, make_manifest
from medtransfer.errors import DataError

KNOWN_CLASSES = {
    "breastmnist": ["malignant", "normal, benign"],
    "pneumoniamnist": ["normal", "pneumonia"],
    "dermamnist": ["actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma",
                   "benign keratosis-like lesions", "dermatofibroma", "melanoma", "melanocytic nevi",
                   "vascular lesions"],
}
SPLITS = ("train", "val", "test")


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


def load(root: Path, *, skip_bad: bool = False, flag: str | None = None, size: int = 28,
         splits: tuple[str, ...] = SPLITS, classes: list[str] | None = None) -> Manifest:
    """Manifest of a MedMNIST npz file."""
    path = _file(root, flag, size)
    try:
        data = np.load(path)
    except (OSError, ValueError) as error:
        raise DataError(f"{path}: not a readable npz file ({error})") from error
    arrays, labels, ids = [], [], []
    for split in splits:
        if f"{split}_images" not in data.files or f"{split}_labels" not in data.files:
            raise DataError(f"{path}: missing {split}_images / {split}_labels; has {sorted(data.files)}")
        images, y = data[f"{split}_images"], np.asarray(data[f"{split}_labels"])
        if y.ndim == 2 and y.shape[1] != 1:
            raise DataError(f"{path}: {split}_labels has shape {y.shape}: multi-label MedMNIST sets "
                            "are not single-label classification; expected (N, 1)")
        y = y.reshape(-1).astype(np.int64)
        if images.ndim not in (3, 4) or len(images) != len(y):
            raise DataError(f"{path}: {split}_images has shape {images.shape}; expected (N, H, W[, 3]) "
                            f"with N = {len(y)}")
        arrays.append(images)
        labels.append(y)
        ids.append(np.char.add(f"{split}_", np.char.zfill(np.arange(len(y)).astype(str), 6)))
    pixels = np.concatenate(arrays)
    label = np.concatenate(labels)
    stem = path.stem.split("_")[0]
    k = int(label.max()) + 1
    names = classes or KNOWN_CLASSES.get(stem) or [str(i) for i in range(k)]
    if len(names) < k:
        raise DataError(f"{path}: labels go up to {k - 1} but {len(names)} class names were given")
    image_id = np.concatenate(ids)
    frame = pd.DataFrame({"image_id": image_id, "ref": np.char.add("medmnist:", np.arange(len(label)).astype(str)),
                          "label": label, "group": image_id})
    st = path.stat()
    key = f"{path}|{st.st_size}|{st.st_mtime_ns}|{','.join(splits)}"
    return make_manifest(frame, names, "medmnist", ProblemLog("medmnist", skip_bad),
                         reader=ArrayReader(pixels, key=key), options={"file": str(path), "splits": list(splits)})

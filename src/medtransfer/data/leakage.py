"""Image fingerprints, and the pairs of images two datasets (or the parts of one) have in common.

Two hashes per image, both of the decoded pixels at their own size (before the resize to the
training size, so that a dataset cached at 32 px and one cached at 64 px compare):

- **exact**: BLAKE2b-128 of the (h, w, 3) uint8 pixels and their shape. The same pixels match
  whatever the file holds them (PNG, BMP, an array); any re-encoding with loss does not.
- **perceptual**: a 63-bit DCT hash (pHash) and the thumbnail it is made from. The image is
  turned grey (ITU-R 601 luma), resized to 32 x 32 pixels (Lanczos; aspect ratio not kept, as the
  training resize): the thumbnail. Its 2-D DCT-II is taken and the 8 x 8 lowest frequencies
  without the constant term kept; a bit is set where the coefficient exceeds their median.

Two images are **near duplicates** when their hashes differ in at most :data:`NEAR_DISTANCE` =
10 bits *and* their thumbnails correlate (Pearson, over the 1024 pixels) at
:data:`MIN_CORRELATION` = 0.9 or more: the hash finds candidates fast, the correlation confirms
them. Measured on the synthetic dataset (32 and 64 px; 300 000 pairs of different images): a JPEG
re-encoding at quality 50-90, with a resize to half or twice the size or to 28 px (as MedMNIST
made BreastMNIST from BUSI), moves the hash by at most 8 bits (12 for 32 -> 16 px) and keeps a
correlation of 0.907 or more (0.95 at 64 px); different images come as close as 6 bits but
correlate at 0.88 at most. Two images of one patient (same anatomy, another lesion) can
correlate at 0.94: such images are near duplicates too. A crop, a flip or a rotation is not
detected. An image with no structure at 32 x 32 (a grey standard deviation under
:data:`FLAT_STD` grey levels, e.g. a blank frame) has no meaningful hash and is only matched
exactly.

The hashes of a dataset are computed once, alongside its pixel cache
(:mod:`medtransfer.data.cache` writes them while it decodes the images), and kept in
``{cache_dir}/hashes/{name}-{key}.npz`` (no pickles), keyed by the images' ids and source files
independently of the training size.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from medtransfer.atomic import write_atomic
from medtransfer.data.manifest import Manifest
from medtransfer.errors import DataError
from medtransfer.console import track

HASH_VERSION = 1
HASH_SIZE = 32  # side of the grey image the DCT is taken of
NEAR_DISTANCE = 10  # at most this many of the 63 perceptual bits differ: a near-duplicate candidate
MIN_CORRELATION = 0.9  # and the thumbnails correlate at least this much: a near duplicate
FLAT_STD = 2.0  # grey levels: below this standard deviation at 32 x 32 an image is "flat"
_LOW = np.ones((8, 8), dtype=bool)
_LOW[0, 0] = False  # the constant term (mean brightness) is left out
_WEIGHTS = np.left_shift(np.uint64(1), np.arange(63, dtype=np.uint64))
# the 8 lowest rows of the orthonormal DCT-II matrix of size 32: C[k, n] = s_k cos(pi (2n + 1) k / 64)
_DCT = np.sqrt(2.0 / HASH_SIZE) * np.cos(np.pi * np.outer(np.arange(8), 2 * np.arange(HASH_SIZE) + 1) / (2 * HASH_SIZE))
_DCT[0] /= np.sqrt(2.0)


def grey_thumbnail(image: np.ndarray) -> np.ndarray:
    """(h, w, 3) uint8 -> (32, 32) float64 grey levels: luma, Lanczos-resized to 32 x 32."""
    grey = Image.fromarray(np.ascontiguousarray(image)).convert("L")
    # reducing_gap: a box reduction to within 2x of the size first, then Lanczos (3x faster from 256 px)
    return np.asarray(grey.resize((HASH_SIZE, HASH_SIZE), Image.LANCZOS, reducing_gap=2.0), dtype=np.float64)


def perceptual_hash(image: np.ndarray) -> tuple[int, bool]:
    """The 63-bit DCT hash of an (h, w, 3) uint8 image and whether the image is flat."""
    return _hash_of(grey_thumbnail(image))


def _hash_of(thumb: np.ndarray) -> tuple[int, bool]:
    low = (_DCT @ thumb @ _DCT.T)[_LOW]  # the 8 x 8 lowest frequencies of the 2-D DCT-II, less (0, 0): (63,)
    bits = low > np.median(low)
    return int((_WEIGHTS[bits]).sum()), bool(thumb.std() < FLAT_STD)


def exact_hash(image: np.ndarray) -> str:
    """Hex BLAKE2b-128 of the pixels of an (h, w, 3) uint8 image and its shape."""
    h = hashlib.blake2b(digest_size=16)
    h.update(repr(image.shape).encode())
    h.update(np.ascontiguousarray(image, dtype=np.uint8).tobytes())
    return h.hexdigest()


@dataclass
class ImageHashes:
    """The fingerprints of a dataset, rows in manifest order.

    Attributes:
        image_ids: (N,) str.
        exact: (N,) str, 32 hex digits (:func:`exact_hash`).
        phash: (N,) uint64, 63 bits (:func:`perceptual_hash`).
        flat: (N,) bool, images without structure (matched exactly only).
        thumbs: (N, 32, 32) uint8 grey thumbnails (:func:`grey_thumbnail`, rounded).
    """

    image_ids: np.ndarray
    exact: np.ndarray
    phash: np.ndarray
    flat: np.ndarray
    thumbs: np.ndarray

    def __len__(self) -> int:
        return len(self.image_ids)

    def save(self, path: Path) -> None:
        """Write an ``.npz`` atomically (plain arrays: it is loaded without pickle)."""
        arrays = {"image_ids": self.image_ids.astype(str), "exact": self.exact.astype("U32"),
                  "phash": self.phash.astype(np.uint64), "flat": self.flat.astype(bool),
                  "thumbs": self.thumbs.astype(np.uint8),
                  "version": np.array(HASH_VERSION)}
        write_atomic(path, lambda handle: np.savez(handle, **arrays))

    @classmethod
    def load(cls, path: Path) -> ImageHashes:
        """Read a file :meth:`save` wrote; ``DataError`` when it is not one."""
        try:
            with np.load(path, allow_pickle=False) as data:
                if int(data["version"]) != HASH_VERSION:
                    raise DataError(f"{path}: image hashes of version {int(data['version'])}; expected {HASH_VERSION}")
                hashes = cls(data["image_ids"].astype(object), data["exact"], data["phash"].astype(np.uint64),
                             data["flat"].astype(bool), data["thumbs"].astype(np.uint8))
        except (OSError, ValueError, KeyError) as error:
            raise DataError(f"{path}: not an image hash file ({error})") from error
        if not len(hashes.exact) == len(hashes.phash) == len(hashes.flat) == len(hashes.thumbs) == len(hashes):
            raise DataError(f"{path}: image hash arrays of different lengths")
        return hashes


class HashCollector:
    """Fills the hashes of a manifest image by image (threads write distinct rows)."""

    def __init__(self, manifest: Manifest) -> None:
        n = len(manifest)
        self.image_ids = manifest.frame["image_id"].to_numpy(dtype=object)
        self.exact = np.empty(n, dtype="U32")
        self.phash = np.zeros(n, dtype=np.uint64)
        self.flat = np.zeros(n, dtype=bool)
        self.thumbs = np.zeros((n, HASH_SIZE, HASH_SIZE), dtype=np.uint8)

    def add(self, i: int, image: np.ndarray) -> None:
        """Hash row ``i`` of the manifest, decoded as ``image`` (h, w, 3) uint8."""
        self.exact[i] = exact_hash(image)
        thumb = grey_thumbnail(image)
        value, flat = _hash_of(thumb)
        self.phash[i] = np.uint64(value)
        self.flat[i] = flat
        self.thumbs[i] = np.clip(np.rint(thumb), 0, 255).astype(np.uint8)

    def result(self) -> ImageHashes:
        return ImageHashes(self.image_ids, self.exact, self.phash, self.flat, self.thumbs)


def hash_key(manifest: Manifest) -> str:
    """Hex digest identifying a manifest's images: name, reader, source files, image ids."""
    h = hashlib.sha256()
    refs = manifest.frame["ref"].tolist()
    for part in (f"h{HASH_VERSION}", manifest.name, type(manifest.reader).__name__, manifest.reader.fingerprint(refs)):
        h.update(part.encode())
        h.update(b"\0")
    h.update("\n".join(manifest.frame["image_id"]).encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def hashes_path(manifest: Manifest, cache_dir: str | Path) -> Path:
    """Where the hashes of ``manifest`` are kept under the pixel cache folder ``cache_dir``."""
    return Path(cache_dir) / "hashes" / f"{manifest.name}-{hash_key(manifest)[:16]}.npz"


def dataset_hashes(manifest: Manifest, cache_dir: str | Path, workers: int = 4) -> ImageHashes:
    """The hashes of every image of ``manifest``: read from the pixel cache folder ``cache_dir``
    (where building the pixel cache left them), else computed by decoding every image
    (``workers`` threads) and stored there."""
    path = hashes_path(manifest, cache_dir)
    if path.is_file():
        try:
            hashes = ImageHashes.load(path)
            if list(hashes.image_ids) == manifest.frame["image_id"].tolist():
                return hashes
        except DataError:
            pass  # a damaged or older file is computed again
    collector = HashCollector(manifest)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        list(track(pool.map(lambda i: collector.add(i, manifest.read_image(i)), range(len(manifest))),
                   f"hashing {manifest.name} images", total=len(manifest)))
    hashes = collector.result()
    hashes.save(path)
    return hashes


def _blocks(bits: int, count: int) -> list[tuple[int, int]]:
    """(shift, width) of ``count`` bit fields covering ``bits`` bits, as even as possible."""
    edges = np.linspace(0, bits, count + 1).round().astype(int)
    return [(int(a), int(b - a)) for a, b in zip(edges[:-1], edges[1:])]


def _near_pairs(a: np.ndarray, b: np.ndarray, max_distance: int, same: bool) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i, j) with ``popcount(a[i] ^ b[j]) <= max_distance`` (``same``: a is b, i < j).

    Multi-index hashing: cut the 63 bits into ``max_distance + 1`` fields; two hashes within the
    distance agree exactly on at least one field (pigeonhole), so only rows sharing a field value
    are compared. Each comparison block is at most about 4 M pairs."""
    found: list[np.ndarray] = []
    for shift, width in _blocks(63, max_distance + 1):
        mask = np.uint64((1 << width) - 1)
        ka, kb = (a >> np.uint64(shift)) & mask, (b >> np.uint64(shift)) & mask
        ga = pd.Series(np.arange(len(a))).groupby(ka).indices
        gb = ga if same else pd.Series(np.arange(len(b))).groupby(kb).indices
        for key, rows_a in ga.items():
            rows_b = gb.get(key)
            if rows_b is None:
                continue
            step = max(1, (1 << 22) // len(rows_b))
            for start in range(0, len(rows_a), step):
                ia = rows_a[start:start + step]
                distance = np.bitwise_count(a[ia][:, None] ^ b[rows_b][None, :])
                keep = distance <= max_distance
                if same:
                    keep &= ia[:, None] < rows_b[None, :]
                i, j = np.nonzero(keep)
                found.append(ia[i].astype(np.int64) * len(b) + rows_b[j])
    if not found:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    codes = np.unique(np.concatenate(found))
    return codes // len(b), codes % len(b)


def correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of paired thumbnails ``a``, ``b`` (n, 32, 32): (n,) in [-1, 1]
    (0 where one is constant)."""
    x = a.reshape(len(a), HASH_SIZE * HASH_SIZE).astype(np.float64)
    y = b.reshape(len(b), HASH_SIZE * HASH_SIZE).astype(np.float64)
    x -= x.mean(axis=1, keepdims=True)
    y -= y.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1)
    dot = (x * y).sum(axis=1)
    return np.clip(np.divide(dot, norm, out=np.zeros_like(dot), where=norm > 0), -1.0, 1.0)


def overlaps(a: ImageHashes, b: ImageHashes | None = None, max_distance: int = NEAR_DISTANCE,
             min_correlation: float = MIN_CORRELATION) -> pd.DataFrame:
    """The pairs of images of ``a`` and ``b`` that are the same image: identical pixels
    (``match = "exact"``) or near duplicates (``"near"``: perceptual hashes at most
    ``max_distance`` bits apart and thumbnails correlated at ``min_correlation`` or more, neither
    image flat). ``b=None`` pairs the images of ``a`` among themselves (each pair once).

    Returns a DataFrame, one row per pair: ``a`` and ``b`` (row positions), ``image_a``,
    ``image_b`` (ids), ``match``, ``distance`` (bits of the perceptual hashes, 0..63; 0 for an
    exact match) and ``correlation`` of the thumbnails."""
    same = b is None
    b = a if same else b
    i_exact, j_exact = _exact_pairs(a.exact, b.exact, same)
    ok_a, ok_b = np.flatnonzero(~a.flat), np.flatnonzero(~b.flat)
    if same:
        i_near, j_near = _near_pairs(a.phash[ok_a], a.phash[ok_a], max_distance, True)
        i_near, j_near = ok_a[i_near], ok_a[j_near]
    else:
        i_near, j_near = _near_pairs(a.phash[ok_a], b.phash[ok_b], max_distance, False)
        i_near, j_near = ok_a[i_near], ok_b[j_near]
    confirmed = correlation(a.thumbs[i_near], b.thumbs[j_near]) >= min_correlation
    i_near, j_near = i_near[confirmed], j_near[confirmed]
    frame = pd.DataFrame({
        "a": np.concatenate([i_exact, i_near]).astype(np.int64),
        "b": np.concatenate([j_exact, j_near]).astype(np.int64),
        "match": ["exact"] * len(i_exact) + ["near"] * len(i_near),
    }).drop_duplicates(["a", "b"], keep="first").reset_index(drop=True)
    frame["distance"] = np.bitwise_count(a.phash[frame["a"].to_numpy()] ^ b.phash[frame["b"].to_numpy()]).astype(int)
    frame.loc[frame["match"] == "exact", "distance"] = 0
    frame["correlation"] = correlation(a.thumbs[frame["a"].to_numpy()], b.thumbs[frame["b"].to_numpy()]).round(4)
    frame.insert(2, "image_a", a.image_ids[frame["a"].to_numpy()].astype(str) if len(frame) else [])
    frame.insert(3, "image_b", b.image_ids[frame["b"].to_numpy()].astype(str) if len(frame) else [])
    return frame


def _exact_pairs(a: np.ndarray, b: np.ndarray, same: bool) -> tuple[np.ndarray, np.ndarray]:
    left = pd.DataFrame({"key": a, "i": np.arange(len(a))})
    right = pd.DataFrame({"key": b, "j": np.arange(len(b))})
    pairs = left.merge(right, on="key")
    if same:
        pairs = pairs[pairs["i"] < pairs["j"]]
    return pairs["i"].to_numpy(np.int64), pairs["j"].to_numpy(np.int64)


def fold_overlaps(pairs: pd.DataFrame, folds: pd.DataFrame) -> pd.DataFrame:
    """The pairs of one dataset's images (``overlaps(hashes)``) that a fold puts on both sides of
    its test part: one image in ``test``, the other in ``train`` or ``val`` of the same fold.

    ``folds``: the fold table (image_id, fold, split). Returns the rows of ``pairs`` that leak,
    with ``fold``, ``split_a`` and ``split_b`` added."""
    columns = [*pairs.columns, "fold", "split_a", "split_b"]
    if pairs.empty or folds.empty:
        return pd.DataFrame(columns=columns)
    a = pairs.merge(folds.rename(columns={"image_id": "image_a", "split": "split_a"}), on="image_a")
    both = a.merge(folds.rename(columns={"image_id": "image_b", "split": "split_b"}), on=["image_b", "fold"])
    test_a, test_b = both["split_a"] == "test", both["split_b"] == "test"
    return both[test_a != test_b].loc[:, columns].reset_index(drop=True)


"""The pixel cache: every image decoded and resized once per (dataset, size, interpolation),
stored as one uint8 ``.npy`` array (N, size, size, 3) that is memory-mapped for training.

The cache key hashes the dataset's image ids, the reader's fingerprint of the source files
(path, size, modification time; or the generator options for in-memory data) and the settings,
so a changed, added or removed source file, or another size or interpolation, builds a new cache.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from medtransfer.atomic import write_text_atomic, writing
from medtransfer import paths
from medtransfer.console import track
from medtransfer.data.images import INTERPOLATIONS, resize
from medtransfer.data.leakage import HashCollector, hashes_path
from medtransfer.data.manifest import Manifest, SkippedFile, format_problems, reason_of
from medtransfer.errors import DataError

CACHE_VERSION = 1


def default_cache_dir() -> Path:
    """``pixels/`` in medtransfer's cache folder: ``$MEDTRANSFER_CACHE/pixels``, else
    ``~/.cache/medtransfer/pixels`` (:func:`medtransfer.paths.cache_dir`, which the weights use too)."""
    return paths.cache_dir() / "pixels"


def cache_key(manifest: Manifest, size: int, interpolation: str) -> str:
    """Hex digest identifying the cache's content."""
    h = hashlib.sha256()
    refs = manifest.frame["ref"].tolist()
    for part in (f"v{CACHE_VERSION}", manifest.name, str(size), interpolation,
                 type(manifest.reader).__name__, manifest.reader.fingerprint(refs)):
        h.update(part.encode())
        h.update(b"\0")
    h.update("\n".join(manifest.frame["image_id"]).encode("utf-8", "surrogateescape"))
    return h.hexdigest()


@dataclass
class PixelCache:
    """Decoded, resized pixels of a manifest.

    Attributes:
        pixels: memory-mapped (N, size, size, 3) uint8, rows in manifest order.
        image_ids: (N,) image ids of the rows.
        size, interpolation: the settings it was built with.
        path: the cache's folder (``pixels.npy``, ``meta.json``).
    """

    pixels: np.ndarray
    image_ids: np.ndarray
    size: int
    interpolation: str
    path: Path

    def __post_init__(self) -> None:
        self._index = pd.Index(self.image_ids)

    def __len__(self) -> int:
        return len(self.image_ids)

    def indices(self, image_ids) -> np.ndarray:  # noqa: ANN001 - any sequence of str
        """Row positions (n,) int64 of ``image_ids``; ``DataError`` for unknown ids."""
        idx = self._index.get_indexer(np.asarray(image_ids, dtype=object))
        if (idx < 0).any():
            unknown = np.asarray(image_ids, dtype=object)[idx < 0][0]
            raise DataError(f"pixel cache {self.path}: unknown image id {unknown!r}")
        return idx.astype(np.int64)

    def rows(self, image_ids) -> np.ndarray:  # noqa: ANN001
        """Pixels of ``image_ids``: (n, size, size, 3) uint8 (a copy, in the order given)."""
        return self.pixels[self.indices(image_ids)]

    def tensor(self, image_ids=None, device="cpu"):  # noqa: ANN001
        """Pixels as a torch uint8 tensor (n, 3, size, size) on ``device`` (all rows when
        ``image_ids`` is None: a whole small dataset fits in GPU memory)."""
        import torch

        array = np.ascontiguousarray(self.pixels if image_ids is None else self.rows(image_ids))
        return torch.from_numpy(array).to(device).permute(0, 3, 1, 2)

    @classmethod
    def open(cls, path: str | Path) -> PixelCache:
        """Open an existing cache folder."""
        path = Path(path)
        try:
            meta = json.loads((path / "meta.json").read_text())
            pixels = np.load(path / "pixels.npy", mmap_mode="r")
        except (OSError, ValueError) as error:
            raise DataError(f"{path}: not a pixel cache ({error})") from error
        _check_pixels_unchanged(path / "pixels.npy", meta)
        ids = np.asarray(meta["image_ids"], dtype=object)
        if pixels.shape != (len(ids), meta["size"], meta["size"], 3):
            raise DataError(f"{path}: pixels.npy has shape {pixels.shape}; expected "
                            f"({len(ids)}, {meta['size']}, {meta['size']}, 3)")
        return cls(pixels, ids, int(meta["size"]), meta["interpolation"], path)

    @classmethod
    def build(cls, manifest: Manifest, size: int, interpolation: str = "nearest",
              cache_dir: str | Path | None = None, workers: int = 4, rebuild: bool = False) -> PixelCache:
        """Decode and resize every image of ``manifest`` (``workers`` threads), or open the
        existing cache with the same key. Raises ``DataError`` naming every unreadable image."""
        if interpolation not in INTERPOLATIONS:
            raise DataError(f"interpolation {interpolation!r}: expected one of {sorted(INTERPOLATIONS)}")
        if size < 1:
            raise DataError(f"cache size {size}: expected a positive number of pixels")
        key = cache_key(manifest, size, interpolation)
        root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        path = root / f"{manifest.name}-{size}px-{interpolation}-{key[:16]}"
        if path.is_dir() and not rebuild:
            try:
                return cls.open(path)
            except DataError:
                shutil.rmtree(path, ignore_errors=True)  # a broken cache is rebuilt
        elif path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        tmp = root / f".{path.name}.tmp-{os.getpid()}"
        with writing(root):
            root.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
        hashes_file = hashes_path(manifest, root)  # the images' fingerprints, made while they are decoded
        hashes = None if hashes_file.is_file() else HashCollector(manifest)
        try:
            _fill(manifest, tmp / "pixels.npy", size, interpolation, workers, hashes)
            if hashes is not None:
                hashes.result().save(hashes_file)
            meta = {"name": manifest.name, "size": size, "interpolation": interpolation, "key": key,
                    "version": CACHE_VERSION, "image_ids": manifest.frame["image_id"].tolist(),
                    "pixels": _pixels_stamp(tmp / "pixels.npy", digest=True)}
            write_text_atomic(tmp / "meta.json", json.dumps(meta))
            try:
                tmp.rename(path)
            except OSError:  # built concurrently by another process: keep theirs
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return cls.open(path)


def _pixels_stamp(file: Path, digest: bool) -> dict:
    """``{bytes, mtime_ns[, sha256]}`` of ``pixels.npy`` (the sha256 read in 1 MiB chunks)."""
    stat = file.stat()
    stamp = {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    if digest:
        sha = hashlib.sha256()
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                sha.update(block)
        stamp["sha256"] = sha.hexdigest()
    return stamp


def _check_pixels_unchanged(file: Path, meta: dict) -> None:
    """Refuse a ``pixels.npy`` written over since its cache was built (``DataError``; ``build``
    then rebuilds it). Fast path: the size and modification time recorded at build; only when the
    time differs (a copied study, or a write in place) is the file hashed, and a copy whose
    sha256 matches is accepted, its new time recorded. Caches built before the stamp existed have
    none to check."""
    recorded = meta.get("pixels")
    if not isinstance(recorded, dict) or "sha256" not in recorded:
        return
    now = _pixels_stamp(file, digest=False)
    if now == {k: recorded.get(k) for k in now}:
        return
    if now["bytes"] != recorded.get("bytes") or _pixels_stamp(file, digest=True)["sha256"] != recorded["sha256"]:
        raise DataError(f"{file}: changed since its pixel cache was built (its size or sha256 differs from "
                        "meta.json); the cache is rebuilt from the dataset")
    try:  # a faithful copy: remember its time, so that the next open takes the fast path
        write_text_atomic(file.parent / "meta.json", json.dumps({**meta, "pixels": {**recorded, **now}}))
    except OSError:
        pass  # a read-only copy is checked again next time


def _reserve(file: Path) -> None:
    """Allocate the blocks of ``file`` (made sparse by ``open_memmap``) now: a full disk then fails
    here with a ``StorageError`` naming it, instead of killing the process with SIGBUS when a page
    of the memory map is first written."""
    if not hasattr(os, "posix_fallocate"):
        return
    with writing(file), open(file, "r+b") as handle:
        try:
            os.posix_fallocate(handle.fileno(), 0, os.fstat(handle.fileno()).st_size)
        except OSError as error:
            if error.errno not in (errno.EINVAL, errno.EOPNOTSUPP):  # a file system without it
                raise


def _fill(manifest: Manifest, file: Path, size: int, interpolation: str, workers: int,
          hashes: HashCollector | None = None) -> None:
    n = len(manifest)
    with writing(file):
        out = np.lib.format.open_memmap(file, mode="w+", dtype=np.uint8, shape=(n, size, size, 3))
    _reserve(file)
    chunk = max(1, min(256, n // (8 * max(1, workers)) or 1))
    starts = range(0, n, chunk)

    refs = manifest.frame["ref"].to_numpy()

    def work(start: int) -> list[tuple[int, SkippedFile]]:
        bad = []
        for i in range(start, min(n, start + chunk)):
            try:
                image = manifest.read_image(i)
                if hashes is not None:
                    hashes.add(i, image)
                out[i] = resize(image, size, interpolation)
            except DataError as error:
                bad.append((i, SkippedFile(refs[i], reason_of(error, refs[i]))))
        return bad

    problems: list[tuple[int, SkippedFile]] = []
    with ThreadPoolExecutor(max(1, workers)) as pool:
        futures = [pool.submit(work, s) for s in starts]
        for future in track(as_completed(futures), f"caching {manifest.name} at {size}px", total=len(futures)):
            problems += future.result()
    out.flush()
    del out
    if problems:
        raise DataError(format_problems(manifest.name, [p for _, p in sorted(problems, key=lambda t: t[0])]))

"""Decoding images into (h, w, 3) uint8 RGB arrays, resizing them, and the readers behind manifests.

A reader turns a manifest ``ref`` into pixels and fingerprints a list of refs (so that the pixel
cache notices changed source files). Readers are thread-safe and picklable.
"""

from __future__ import annotations

import hashlib
import os
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from medtransfer.errors import DataError

INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "area": Image.Resampling.BOX,
    "lanczos": Image.Resampling.LANCZOS,
}
DICOM_SUFFIXES = (".dcm", ".dicom")

#: The most pixels (width x height) an image file may have: 2**26 = 67,108,864, e.g. 8192 x 8192.
#: The paper's largest images (CBIS-DDSM mammograms) have about 40 million; a file that claims more
#: is refused before it is decoded (a decompression bomb: a small PNG that inflates to gigabytes).
#: It lies below Pillow's own limit (``Image.MAX_IMAGE_PIXELS``), so Pillow never warns first.
MAX_PIXELS = 2**26
# Pillow warns of images above its own limit while opening them; ours is lower and refuses them
# right after, with the file named, so its warning would only repeat that on stderr.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def to_rgb(array: np.ndarray, source: object = "<array>") -> np.ndarray:
    """(h, w), (h, w, 1), (h, w, 3) or (h, w, 4) pixels -> (h, w, 3) uint8.

    Grayscale is replicated to 3 channels, alpha dropped. Integer images wider than 8 bits and
    float images are rescaled from their own min..max to 0..255. A float image with a NaN or
    infinite pixel is refused (``DataError`` naming ``source``): it would decode to all black.
    """
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 3 and a.shape[2] == 4:
        a = a[:, :, :3]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 3)):
        raise DataError(f"{source}: expected a 2-D grayscale or (h, w, 3) image, got shape {a.shape}")
    if a.dtype != np.uint8:
        a = a.astype(np.float64)
        finite = np.isfinite(a)
        if not finite.all():
            raise DataError(f"{source}: {int(a.size - finite.sum())} of {a.size} pixel values are not finite "
                            "(NaN or infinity); expected finite numbers")
        lo, hi = float(np.min(a)), float(np.max(a))
        a = np.zeros_like(a) if hi <= lo else (a - lo) * (255.0 / (hi - lo))
        a = np.clip(np.rint(a), 0, 255).astype(np.uint8)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    return np.ascontiguousarray(a)


def is_dicom(path: Path) -> bool:
    """True for ``.dcm`` files and files carrying the DICOM preamble magic."""
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def decode_dicom(path: Path) -> np.ndarray:
    """A DICOM image (VOI LUT applied, MONOCHROME1 inverted) -> (h, w, 3) uint8."""
    import pydicom
    from pydicom.pixels import apply_voi_lut

    try:
        ds = pydicom.dcmread(path)
        check_pixel_count(int(ds.get("Rows", 0) or 0) * int(ds.get("Columns", 0) or 0)
                          * int(ds.get("NumberOfFrames", 1) or 1), path)
        pixels = ds.pixel_array
        if "WindowCenter" in ds or "VOILUTSequence" in ds:
            pixels = apply_voi_lut(pixels, ds)
    except DataError:
        raise
    except Exception as error:  # pydicom raises many types for broken files
        raise DataError(f"{path}: unreadable DICOM ({type(error).__name__}: {error})") from error
    pixels = np.asarray(pixels, dtype=np.float64) if pixels.dtype != np.uint8 else pixels
    if getattr(ds, "PhotometricInterpretation", "") == "MONOCHROME1":
        pixels = pixels.max() - pixels
    if pixels.ndim == 3 and pixels.shape[-1] not in (1, 3, 4):
        raise DataError(f"{path}: DICOM holds {pixels.shape[0]} frames; expected one image")
    return to_rgb(pixels, path)


def _too_many_pixels(source: object, pixels: str) -> DataError:
    return DataError(f"{source}: the image has {pixels} pixels, more than the limit of {MAX_PIXELS:,} (8192 x 8192) "
                     "an image may have (a decompression bomb, or not an image of a dataset); expected a smaller image")


def check_pixel_count(pixels: int, source: object) -> None:
    """Raise ``DataError`` when an image of ``pixels`` pixels exceeds :data:`MAX_PIXELS`."""
    if pixels > MAX_PIXELS:
        raise _too_many_pixels(source, f"{pixels:,}")


def decode_file(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file (JPEG, PNG, TIFF, BMP, ... or DICOM) -> (h, w, 3) uint8 RGB.

    Raises ``DataError`` naming the file when it is missing, truncated, not an image, larger than
    :data:`MAX_PIXELS` (checked from the header, before decoding) or has non-finite pixels.
    """
    path = Path(path)
    if is_dicom(path):
        return decode_dicom(path)
    try:
        with Image.open(path) as img:
            check_pixel_count(img.width * img.height, path)
            img.load()  # decodes fully: truncated files raise here
            if img.mode in ("RGB", "L"):
                return to_rgb(np.asarray(img), path)
            if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                return to_rgb(np.asarray(img), path)
            return to_rgb(np.asarray(img.convert("RGB")), path)
    except FileNotFoundError as error:
        raise DataError(f"{path}: image file not found") from error
    except DataError:
        raise
    except Image.DecompressionBombError:  # beyond twice Pillow's limit: raised by Image.open itself
        raise _too_many_pixels(path, f"more than {2 * Image.MAX_IMAGE_PIXELS:,}") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise DataError(f"{path}: unreadable or truncated image ({error})") from error


def resize(image: np.ndarray, size: int, interpolation: str = "nearest") -> np.ndarray:
    """(h, w, 3) uint8 -> (size, size, 3) uint8, aspect ratio not kept (as the paper's loader).

    ``interpolation``: one of ``INTERPOLATIONS`` (PIL's filters; "nearest" is Keras' ``load_img``).
    """
    if interpolation not in INTERPOLATIONS:
        raise DataError(f"interpolation {interpolation!r}: expected one of {sorted(INTERPOLATIONS)}")
    if image.shape[0] == size and image.shape[1] == size:
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), INTERPOLATIONS[interpolation]))


class ImageReader(Protocol):
    """Turns a manifest ``ref`` into pixels; fingerprints refs for cache keys."""

    def read(self, ref: str) -> np.ndarray:  # (h, w, 3) uint8
        ...

    def fingerprint(self, refs: Sequence[str]) -> str:
        ...


def _hash_lines(lines: Sequence[str]) -> str:
    h = hashlib.sha256()
    for line in lines:
        h.update(line.encode("utf-8", "surrogateescape"))
        h.update(b"\n")
    return h.hexdigest()


def _stat_line(path: str) -> str:
    try:
        st = os.stat(path)
    except OSError:
        return f"{path}|missing"
    return f"{path}|{st.st_size}|{st.st_mtime_ns}"


class FileReader:
    """Refs are image file paths (any format ``decode_file`` reads)."""

    def read(self, ref: str) -> np.ndarray:
        return decode_file(ref)

    def digest(self, ref: str) -> str | None:
        """BLAKE2b of the file's bytes (None when it is not a readable file)."""
        h = hashlib.blake2b(digest_size=16)
        try:
            with open(ref, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
        except (OSError, ValueError):
            return None
        return h.hexdigest()

    def fingerprint(self, refs: Sequence[str]) -> str:
        return _hash_lines([_stat_line(r) for r in refs])


def split_ref(ref: str) -> tuple[str, int]:
    """``"path::index"`` -> (path, index)."""
    path, sep, index = ref.rpartition("::")
    if not sep or not index.isdigit():
        raise DataError(f"reference {ref!r}: expected 'path::index'")
    return path, int(index)


class ArrayReader:
    """Refs ``"<prefix>:<i>"`` index an in-memory array (N, h, w[, 3]) of pixels.

    ``key`` identifies the array's content (e.g. the options that generated it); without one the
    fingerprint hashes the array itself.
    """

    def __init__(self, array: np.ndarray, key: str | None = None) -> None:
        self.array = array
        self.key = key

    def read(self, ref: str) -> np.ndarray:
        index = ref.rpartition(":")[2]
        if not index.isdigit() or int(index) >= len(self.array):
            raise DataError(f"reference {ref!r}: expected '<name>:<row>' with row < {len(self.array)}")
        return to_rgb(self.array[int(index)], ref)

    def digest(self, ref: str) -> str | None:
        """BLAKE2b of the row's pixels (with their shape and dtype)."""
        index = ref.rpartition(":")[2]
        if not index.isdigit() or int(index) >= len(self.array):
            return None
        row = np.ascontiguousarray(self.array[int(index)])
        h = hashlib.blake2b(f"{row.shape}{row.dtype}".encode(), digest_size=16)
        h.update(row.tobytes())
        return h.hexdigest()

    def fingerprint(self, refs: Sequence[str]) -> str:
        key = self.key
        if key is None:
            key = hashlib.sha256(np.ascontiguousarray(self.array).tobytes()).hexdigest()
        return _hash_lines([key, *refs])


class _LazyHandles:
    """Open-on-first-use file handles shared by threads; dropped when pickled."""

    def __init__(self) -> None:
        self._handles: dict[str, object] = {}
        self._lock = threading.Lock()

    def get(self, path: str, opener):  # noqa: ANN001 - a callable path -> handle
        with self._lock:
            if path not in self._handles:
                self._handles[path] = opener(path)
            return self._handles[path]

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()


class H5Reader:
    """Refs ``"file.h5::i"`` read row ``i`` of dataset ``key`` (e.g. PCam's ``x``: (N, 96, 96, 3))."""

    def __init__(self, key: str = "x") -> None:
        self.key = key
        self._files = _LazyHandles()
        self._read_lock = threading.Lock()

    def __getstate__(self) -> dict:
        return {"key": self.key}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["key"])

    def read(self, ref: str) -> np.ndarray:
        import h5py

        path, index = split_ref(ref)
        try:
            f = self._files.get(path, lambda p: h5py.File(p, "r"))
            with self._read_lock:
                return to_rgb(f[self.key][index], ref)
        except (OSError, KeyError, IndexError) as error:
            raise DataError(f"{path}: cannot read {self.key}[{index}] ({error})") from error

    def fingerprint(self, refs: Sequence[str]) -> str:
        paths = sorted({split_ref(r)[0] for r in refs})
        return _hash_lines([*(_stat_line(p) for p in paths), self.key, *refs])


class NpySliceReader:
    """Refs ``"volume.npy::k"`` read slice ``k`` (first axis) of a memory-mapped .npy volume."""

    def __init__(self) -> None:
        self._files = _LazyHandles()

    def read(self, ref: str) -> np.ndarray:
        path, index = split_ref(ref)
        try:
            volume = self._files.get(path, lambda p: np.load(p, mmap_mode="r"))
            return to_rgb(np.asarray(volume[index]), ref)
        except (OSError, ValueError, IndexError) as error:
            raise DataError(f"{path}: cannot read slice {index} ({error})") from error

    def fingerprint(self, refs: Sequence[str]) -> str:
        paths = sorted({split_ref(r)[0] for r in refs})
        return _hash_lines([*(_stat_line(p) for p in paths), *refs])

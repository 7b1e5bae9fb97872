"""The weights cache and the one-time download of Keras' ImageNet weights of each backbone (the
URLs, md5s and file names are the backbone's: ``SPEC.imagenet`` and ``SPEC.radimagenet`` of its module)."""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from medtransfer.atomic import file_mode
from medtransfer.console import track
from medtransfer.errors import WeightsError
from medtransfer.models import registry
from medtransfer.paths import CACHE_ENV, cache_dir


def imagenet_file(backbone: str = "resnet50") -> tuple[str, str, str]:
    """(URL, md5, file name) of Keras' ImageNet notop weights of ``backbone`` (its spec's ``imagenet``)."""
    weights = registry.get(backbone).imagenet
    if weights is None:
        known = [name for name, spec in registry.registry().items() if spec.imagenet is not None]
        raise WeightsError(f"no ImageNet weights known for backbone {backbone!r}: expected one of {', '.join(known)}")
    return weights.url, weights.md5, weights.file


_CHUNK = 1 << 20


def md5sum(path: str | os.PathLike) -> str:
    """Hex md5 of a file, read in 1 MiB chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _chunks(response, total: int | None):
    steps = None if total is None else max(1, -(-total // _CHUNK))
    def read():
        while chunk := response.read(_CHUNK):
            yield chunk
    yield from track(read(), description="downloading ImageNet weights", total=steps)


def fetch(url: str, target: Path, md5: str | None, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``target`` (temp file + rename), checking ``md5``; a clear error offline.

    Nothing is left at ``target`` unless the download completed and its md5 matched.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    try:
        os.fchmod(fd, file_mode())  # as an ordinary open would (mkstemp makes 0600)
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    length = response.headers.get("Content-Length") if hasattr(response, "headers") else None
                    for chunk in _chunks(response, int(length) if length else None):
                        out.write(chunk)
            except (urllib.error.URLError, OSError, TimeoutError) as error:
                raise WeightsError(
                    f"could not download {url} ({error}). Without network access, fetch that URL by hand "
                    f"and put the file at {target}"
                    + (f" (md5 {md5})" if md5 else "")
                ) from error
        if md5 is not None:
            got = md5sum(tmp)
            if got != md5:
                raise WeightsError(f"download of {url} has md5 {got}, expected {md5}: not kept; try again")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def imagenet_weights(cache: str | os.PathLike | None = None, download: bool = True, backbone: str = "resnet50") -> Path:
    """Path of Keras' ImageNet notop weights of ``backbone`` in the cache, downloaded (once) when missing.

    A cached file with the wrong md5 is refused with the expected and found checksums.
    """
    url, md5, name = imagenet_file(backbone)
    target = cache_dir(cache) / name
    if not target.is_file():
        if not download:
            raise WeightsError(f"ImageNet weights not found at {target}: run `medtransfer weights fetch imagenet` or download {url} there")
        return fetch(url, target, md5)
    got = md5sum(target)
    if got != md5:
        raise WeightsError(
            f"{target} has md5 {got}, Keras publishes {md5}: delete it and download {url} again"
        )
    return target


def find_radimagenet(cache: str | os.PathLike | None = None, backbone: str = "resnet50") -> Path:
    """The RadImageNet file of ``backbone`` (h5, else pth) in the cache, or a clear error saying where to put it."""
    folder = cache_dir(cache)
    files = registry.get(backbone).radimagenet
    for name in files:
        if (folder / name).is_file():
            return folder / name
    raise WeightsError(
        f"RadImageNet weights not found: RadImageNet's authors hand out {files[0] if files else backbone} on request "
        f"(PyTorch ports of their models are at github.com/Warvito/radimagenet-models). Put {' or '.join(files)} "
        f"in {folder} (set ${CACHE_ENV} to use another folder) or pass its path as the source"
    )

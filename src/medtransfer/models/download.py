"""The weights cache and the one-time download of Keras' ImageNet weights of each backbone."""

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
from medtransfer.paths import CACHE_ENV, cache_dir

IMAGENET_FILE = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
IMAGENET_URL = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/" + IMAGENET_FILE
IMAGENET_MD5 = "4d473c1dd8becc155b73f8504c6f6626"
"""Keras' published md5 of the notop file (keras.applications.resnet.WEIGHTS_HASHES)."""

_KERAS = "https://storage.googleapis.com/tensorflow/keras-applications/"
IMAGENET: dict[str, tuple[str, str]] = {
    "densenet121": (_KERAS + "densenet/densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
                    "30ee3e1110167f948a6b9946edeeb738"),
    "inception_v3": (_KERAS + "inception_v3/inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
                     "bcbd6486424b2319ff4ef7d526e38f63"),
    "inception_resnet_v2": (_KERAS + "inception_resnet_v2/inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
                            "d19885ff4a710c122648d3b5c3b684e4"),
}
"""Backbone -> (URL, md5) of Keras' ImageNet notop file (the md5s ``keras.applications`` checks);
ResNet50's are :data:`IMAGENET_URL` / :data:`IMAGENET_MD5`."""


def imagenet_file(backbone: str = "resnet50") -> tuple[str, str, str]:
    """(URL, md5, file name) of Keras' ImageNet notop weights of ``backbone``."""
    if backbone == "resnet50":
        return IMAGENET_URL, IMAGENET_MD5, IMAGENET_FILE
    if backbone not in IMAGENET:
        raise WeightsError(f"no ImageNet weights known for backbone {backbone!r}: expected resnet50 or one of {', '.join(IMAGENET)}")
    url, md5 = IMAGENET[backbone]
    return url, md5, url.rsplit("/", 1)[-1]

RADIMAGENET_FILES = ("RadImageNet-ResNet50_notop.h5", "RadImageNet-ResNet50_notop.pth")
RADIMAGENET: dict[str, tuple[str, ...]] = {
    "resnet50": RADIMAGENET_FILES,
    "densenet121": ("RadImageNet-DenseNet121_notop.h5", "RadImageNet-DenseNet121_notop.pth"),
    "inception_v3": ("RadImageNet-InceptionV3_notop.h5", "RadImageNet-InceptionV3_notop.pth"),
    "inception_resnet_v2": ("RadImageNet-IRV2_notop.h5", "RadImageNet-InceptionResNetV2_notop.h5",
                            "RadImageNet-IRV2_notop.pth", "RadImageNet-InceptionResNetV2_notop.pth"),
}
"""Backbone -> file names of RadImageNet's release (and its PyTorch ports) looked for in the cache."""

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
    files = RADIMAGENET.get(backbone, ())
    for name in files:
        if (folder / name).is_file():
            return folder / name
    raise WeightsError(
        f"RadImageNet weights not found: RadImageNet's authors hand out {files[0] if files else backbone} on request "
        f"(PyTorch ports of their models are at github.com/Warvito/radimagenet-models). Put {' or '.join(files)} "
        f"in {folder} (set ${CACHE_ENV} to use another folder) or pass its path as the source"
    )

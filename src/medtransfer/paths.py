"""medtransfer's cache folder, shared by the weights (models/) and the pixel cache (data/)."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "MEDTRANSFER_CACHE"
DEFAULT_CACHE = Path("~/.cache/medtransfer")


def cache_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The cache folder: ``explicit`` if given, else ``$MEDTRANSFER_CACHE``, else ``~/.cache/medtransfer``."""
    chosen = explicit if explicit is not None else os.environ.get(CACHE_ENV) or DEFAULT_CACHE
    return Path(chosen).expanduser()

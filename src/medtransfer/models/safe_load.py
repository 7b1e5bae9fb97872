"""Reading PyTorch files without unpickling code: every ``torch.load`` of medtransfer goes through here.

``torch.load(weights_only=True)`` rebuilds tensors and plain data only (dict, list, tuple, str,
int, float, bool, None); a file that names anything else - a class, a function, a ``__reduce__``
that runs a command - is refused before any of it runs. Study directories and the weights cache
are copied between colleagues and clusters, so nothing read from them gets a full unpickle.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from medtransfer.errors import WeightsError

# lines of torch's refusal that only advertise weights_only=False or torch's documentation
_BOILERPLATE = ("Weights only load failed", "Please file an issue", "Check the documentation", "In PyTorch 2.6")


class UnsafeFileError(WeightsError):
    """A file holds pickled Python objects beyond tensors and plain data: refused, never unpickled."""


def _detail(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    kept = [line for line in lines if not line.startswith(_BOILERPLATE)]
    return (kept[0] if kept else (lines[0] if lines else error.__class__.__name__))[:200]


def load_tensors(path: str | os.PathLike, what: str = "file", map_location: Any = "cpu", mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)``: tensors and plain data, never other objects.

    ``what`` names the kind of file in the errors (``checkpoint``, ``probe``, ...).

    Raises:
        UnsafeFileError: the file names a Python global (a class or function: a pickle that could
            run code); nothing of it ran.
        WeightsError: the file is missing, truncated or not a PyTorch file (naming it).
    """
    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        detail = _detail(error)
        if "GLOBAL" in detail or "global" in detail:
            raise UnsafeFileError(
                f"{what} {path} refused: it holds pickled Python objects, not only tensors and plain data "
                f"({detail}); unpickling them could run code, so medtransfer reads .pt/.pth files with "
                "torch.load(weights_only=True) only. Delete or replace the file; if you made it yourself, save "
                "tensors and plain Python data only") from None
        raise WeightsError(f"{what} {path} is not a readable PyTorch file (damaged, truncated or another format; "
                           f"torch.load: {detail})") from None
    except FileNotFoundError:
        raise WeightsError(f"{what} {path} does not exist") from None
    except Exception as error:  # noqa: BLE001 - zip, EOF, OS and format errors of torch's readers alike
        raise WeightsError(f"{what} {path} is not a readable PyTorch file (damaged, truncated or another format; "
                           f"{error.__class__.__name__}: {_detail(error)})") from None

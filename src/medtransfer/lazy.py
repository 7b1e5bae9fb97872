"""A package's public names, imported from its modules on first use (PEP 562).

``from medtransfer.data import load_manifest`` keeps working, but importing one light module of a
package (``medtransfer.data.folds``) no longer runs every heavy one (``data.augment`` imports
torch): each package ``__init__`` only declares where its names live.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: ``exports`` maps each public name to the module
    under the package that defines it (``"normalization:MODES"`` when the module calls it otherwise)."""

    def __getattr__(name: str) -> Any:  # noqa: N807 - the module attribute hook
        where = exports.get(name)
        if where is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, _, attribute = where.partition(":")
        return getattr(importlib.import_module(f"{package}.{module}"), attribute or name)

    def __dir__() -> list[str]:  # noqa: N807
        return sorted(exports)

    return __getattr__, __dir__

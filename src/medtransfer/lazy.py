"""A package's public names, imported from its modules on first use (PEP 562).

``from medtransfer.data import load_manifest`` keeps working, but importing one light module of a
package (``medtransfer.data.folds``) no longer runs every heavy one (``data.augment`` imports
torch): each package ``__init__`` only declares where its names live.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, tuple[str, ...]]) -> tuple[list[str], Callable[[str], Any],
                                                                             Callable[[], list[str]]]:
    """``(__all__, __getattr__, __dir__)`` for ``package``: ``exports`` maps each module under the
    package to the public names it defines (``"NORMALIZATION_MODES=MODES"`` when the module calls
    it otherwise), as ``from .module import a, b`` would."""
    where: dict[str, tuple[str, str]] = {}
    for module, names in exports.items():
        for name in names:
            public, _, own = name.partition("=")
            where[public] = (module, own or public)

    def __getattr__(name: str) -> Any:  # noqa: N807 - the module attribute hook
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, attribute = where[name]
        return getattr(importlib.import_module(f"{package}.{module}"), attribute)

    def __dir__() -> list[str]:  # noqa: N807
        return sorted(where)

    return list(where), __getattr__, __dir__

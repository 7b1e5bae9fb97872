"""Setting axes of a study (``sweep:``): the settings a grid runs, and the label of each cell.

``sweep`` is a mapping ``{field: [value, ...]}`` of ``training:`` fields (RunConfig), expanded into
every combination (``{lr: [1e-5, 1e-4], epochs: [30, 200]}``: 4 settings), or a list of mappings,
each one setting (``[{}, {lr: 1.0e-4, epochs: 30}]``: 2 settings; ``{}`` is the study's own).

A cell is labelled by the settings in which it differs from the same cell without the sweep (the
study's ``training:``, then its target's, then its source's): ``lr=0.0001,epochs=30`` (fields in
alphabetical order, numbers as Python writes them back exactly). The label is appended to the
target's label after :data:`SEPARATOR` (``thyroid~lr=0.0001``, ``thyroid@densenet121~lr=0.0001``),
so every table, figure and claim of the analysis is per setting, and a cell at the study's own
settings keeps its label, run id and directory: a study that adds a sweep, or a value to one,
keeps its finished runs and trains only the new cells. A target name cannot hold ``~``, so the
label splits off unambiguously (:func:`split_label`).
"""

from __future__ import annotations

import itertools
from typing import Any

#: Between a target's label and its setting label (target names allow ``[A-Za-z0-9_.-]``).
SEPARATOR = "~"


def check_shape(sweep: Any) -> list[dict[str, Any]]:
    """The settings of ``sweep`` in order (:func:`settings`), after checking its shape; a
    ``ValueError`` says what was expected."""
    if sweep is None:
        return [{}]
    if isinstance(sweep, dict):
        for key, values in sweep.items():
            if not isinstance(values, list) or not values:
                raise ValueError(f"{key}: expected a non-empty list of values to sweep, got {values!r}")
        return settings(sweep)
    if isinstance(sweep, list):
        bad = [i for i, item in enumerate(sweep) if not isinstance(item, dict)]
        if bad or not sweep:
            raise ValueError("expected a mapping {field: [values]} (every combination) or a non-empty list of "
                             f"mappings (one setting each); item(s) {bad} are not mappings" if bad else
                             "expected a mapping {field: [values]} or a non-empty list of mappings, got []")
        return settings(sweep)
    raise ValueError(f"expected a mapping {{field: [values]}} (every combination) or a list of mappings (one "
                     f"setting each), got {type(sweep).__name__}")


def settings(sweep: dict[str, list[Any]] | list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Every setting of a sweep, in order: the combinations of a mapping (the last field varying
    fastest), or a list's items; ``[{}]`` (the study's own settings only) for no sweep."""
    if not sweep:
        return [{}]
    if isinstance(sweep, list):
        return [dict(item) for item in sweep]
    keys = list(sweep)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(sweep[k] for k in keys))]


def swept_fields(sweep: dict[str, list[Any]] | list[dict[str, Any]] | None) -> list[str]:
    """The fields a sweep varies, in order of first mention."""
    return list(dict.fromkeys(key for setting in settings(sweep) for key in setting))


def format_value(value: Any) -> str:
    """A setting's value as written in labels: numbers exactly (``0.0003``, ``1e-05``, ``30``),
    booleans and None in lower case."""
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if isinstance(value, float):
        return repr(value)
    return str(value)


def setting_label(values: dict[str, Any]) -> str:
    """``field=value`` pairs in alphabetical order of the field, joined by commas (``""`` for none)."""
    return ",".join(f"{key}={format_value(values[key])}" for key in sorted(values))


def labelled(target: str, label: str) -> str:
    """A target's label with its cell's setting label (unchanged for ``""``)."""
    return f"{target}{SEPARATOR}{label}" if label else target


def split_label(target: str) -> tuple[str, str]:
    """``(target, setting label)`` of a labelled target (:func:`labelled`'s inverse)."""
    base, _, label = target.partition(SEPARATOR)
    return base, label

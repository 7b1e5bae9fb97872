"""``folder``: a user's own images, one subfolder per class (``root/<class>/**/<image>``).

Classes are the subfolder names in sorted order (or ``classes`` to fix the order). Each image is
its own group unless ``group_pattern`` (a regular expression searched in the path relative to
``root``; its first group, or the whole match, is the group) names patients, e.g.
``r"^[^/]+/(patient\\d+)/"`` for ``root/<class>/<patient>/<image>``. Non-image files are listed
as left out; junk (``.DS_Store``, ``__MACOSX/``, ``._*``) is ignored.
"""

from __future__ import annotations

import re
from pathlib import Path

from medtransfer.data.datasets._common import image_files, is_junk
from medtransfer.data.manifest import Manifest, ProblemLog, make_manifest
from medtransfer.errors import DataError


def load(root: Path, *, skip_bad: bool = False, classes: list[str] | None = None,
         group_pattern: str | None = None) -> Manifest:
    """Manifest of a class-per-subfolder tree."""
    if not root.is_dir():
        raise DataError(f"{root}: expected a folder with one subfolder per class")
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not is_junk(Path(p.name)))
    names = list(classes) if classes else found
    missing = [c for c in names if c not in found]
    if missing or len(names) < 2:
        raise DataError(f"{root}: class folders {missing or names}; expected at least two subfolders "
                        f"(found {found})")
    try:
        pattern = re.compile(group_pattern) if group_pattern else None
    except re.error as error:
        raise DataError(f"option group_pattern {group_pattern!r}: not a regular expression ({error})") from error
    log = ProblemLog("folder", skip_bad)
    for extra in sorted(set(found) - set(names)):
        log.exclude(root / extra, "folder not among the chosen classes")
    rows = []
    for label, name in enumerate(names):
        for path in image_files(root / name, log, recursive=True):
            rel = path.relative_to(root).as_posix()
            group = rel
            if pattern is not None:
                m = pattern.search(rel)
                if m is None:
                    log.add(path, f"group_pattern {group_pattern!r} does not match {rel!r}")
                    continue
                group = m.group(1) if m.groups() else m.group(0)
            rows.append({"image_id": rel, "ref": str(path), "label": label, "group": group})
    return make_manifest(rows, names, "folder", log, options={"group_pattern": group_pattern})

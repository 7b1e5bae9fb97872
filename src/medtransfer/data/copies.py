"""Images with identical content: one image in two classes (a labelling error) or shown twice in
one class (kept in one group, so that no fold trains on a copy of one of its test images).

What counts as identical: the bytes of an image file (``FileReader``), or the pixels of a row of an
in-memory array (``ArrayReader``: MedMNIST, synthetic). Slices of volumes and rows of HDF5 files
are not compared (a reader without a ``digest`` method): reading them all would cost a pass over
the whole dataset for every fold table.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from medtransfer.data.manifest import Manifest
from medtransfer.console import track

#: The note a manifest carries after :func:`group_copies` merged groups (a count of images).
GROUPED_NOTE = "byte-identical copies of an image grouped with it (kept in one part of every fold)"


def content_digests(manifest: Manifest, workers: int = 4) -> list[str | None]:
    """(N,) digest of each image's content, None where the reader cannot tell it cheaply."""
    digest = getattr(manifest.reader, "digest", None)
    if digest is None:
        return [None] * len(manifest)
    refs = manifest.frame["ref"].tolist()
    with ThreadPoolExecutor(max(1, workers)) as pool:
        return list(track(pool.map(digest, refs), f"comparing {manifest.name} images for copies", total=len(refs)))


def _rows_by_digest(digests: list[str | None]) -> list[list[int]]:
    """Row lists of the digests shared by two or more rows."""
    rows_of: dict[str, list[int]] = {}
    for i, d in enumerate(digests):
        if d is not None:
            rows_of.setdefault(d, []).append(i)
    return [rows for rows in rows_of.values() if len(rows) > 1]


def conflicting_copies(manifest: Manifest, digests: list[str | None]) -> dict[int, str]:
    """Rows whose image is identical to one of another class: row -> reason."""
    labels, refs, classes = manifest.labels, manifest.frame["ref"].to_numpy(), manifest.classes
    reasons: dict[int, str] = {}
    for rows in _rows_by_digest(digests):
        if len({int(labels[i]) for i in rows}) < 2:
            continue
        for i in rows:
            others = ", ".join(f"{refs[j]} ({classes[labels[j]]})" for j in rows if j != i)
            reasons[i] = (f"identical bytes to {others}, but labelled {classes[labels[i]]}: the same image "
                          "in two classes")
    return reasons


def group_copies(manifest: Manifest, digests: list[str | None]) -> Manifest:
    """``manifest`` with the groups of identical images merged into one (the smallest group key of
    each connected set), so that folds keep copies in one part; ``notes[GROUPED_NOTE]`` counts the
    images whose group changed. Returns ``manifest`` itself when no copies span two groups."""
    groups = manifest.groups
    parent: dict[str, str] = {}

    def root(g: str) -> str:
        while parent.get(g, g) != g:
            g = parent[g]
        return g

    for rows in _rows_by_digest(digests):
        keys = {str(groups[i]) for i in rows}
        if len(keys) < 2:
            continue
        roots = {root(g) for g in keys}
        smallest = min(roots)
        for r in roots:
            parent[r] = smallest
    if not parent:
        return manifest
    merged = [root(str(g)) for g in groups]
    changed = sum(a != b for a, b in zip(merged, groups))
    if not changed:
        return manifest
    frame = manifest.frame.assign(group=merged)
    notes = {**manifest.notes, GROUPED_NOTE: changed}
    return replace(manifest, frame=frame, notes=notes)

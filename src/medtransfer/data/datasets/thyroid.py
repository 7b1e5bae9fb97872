"""``thyroid``: DDTI thyroid ultrasound, Pedraza et al. 2015.

Layout: one flat folder of ``<case>.xml`` and ``<case>_<k>.jpg`` (``10_1.jpg`` belongs to case 10,
not case 1). Each XML holds ``<tirads>``: 4a/4b/4c/5 -> malignant; 1/2/3 -> benign; empty ->
benign as in the paper, or left out with ``empty_tirads="exclude"`` (which leaves the 349 images
with a TI-RADS value that RadImageNet's subset, used by Mei et al., appears to be). Any other value
is an error naming the XML. Group = case. An image without an XML, an XML without images or an
XML without a ``<tirads>`` element is reported. Some ``<svg>`` payloads are truncated JSON: the
label does not depend on them, and they are not parsed.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from medtransfer.data.datasets._common import image_files
from medtransfer.data.manifest import Manifest, ProblemLog, make_manifest
from medtransfer.errors import DataError

CLASSES = ["benign", "malignant"]
MALIGNANT = {"4a", "4b", "4c", "5"}
BENIGN = {"1", "2", "3"}
_IMAGE = re.compile(r"^(\d+)_(\d+)$")
_TIRADS = re.compile(r"<tirads>(.*?)</tirads>|<tirads\s*/>", re.DOTALL | re.IGNORECASE)


def read_tirads(path: Path) -> str | None:
    """The ``<tirads>`` text of a case XML (stripped, lower case; "" when empty), None if absent.

    Falls back to a text search when the XML does not parse (damaged payloads elsewhere)."""
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        node = ET.fromstring(text).find("tirads")
        if node is not None:
            return (node.text or "").strip().lower()
    except ET.ParseError:
        pass
    m = _TIRADS.search(text)
    if m is None:
        return None
    return (m.group(1) or "").strip().lower()


def load(root: Path, *, skip_bad: bool = False, empty_tirads: str = "benign") -> Manifest:
    """Manifest of DDTI in the flat folder ``root``."""
    if empty_tirads not in ("benign", "exclude"):
        raise DataError(f"thyroid option empty_tirads={empty_tirads!r}: expected 'benign' or 'exclude'")
    if not root.is_dir():
        raise DataError(f"{root}: expected the DDTI folder of <case>.xml and <case>_<k>.jpg files")
    log = ProblemLog("thyroid", skip_bad)
    xmls = {p.stem: p for p in sorted(root.glob("*.xml")) if not p.name.startswith(".")}
    if not xmls:
        raise DataError(f"{root}: no <case>.xml files; expected DDTI's flat folder of XMLs and JPEGs")
    labels: dict[str, int | None] = {}
    for case, path in xmls.items():
        value = read_tirads(path)
        if value is None:
            log.add(path, "no <tirads> element")
        elif value in MALIGNANT:
            labels[case] = 1
        elif value in BENIGN or (value == "" and empty_tirads == "benign"):
            labels[case] = 0
        elif value == "":
            labels[case] = None  # excluded by option
        else:
            log.add(path, f"unknown TI-RADS value {value!r}; expected one of 2, 3, 4a, 4b, 4c, 5 or empty")
    rows, seen_cases = [], set()
    for path in image_files(root, log, ignore=(".xml",)):
        m = _IMAGE.match(path.stem)
        if m is None:
            log.add(path, "image name is not <case>_<k>.jpg")
            continue
        case = m.group(1)
        seen_cases.add(case)
        if case not in xmls:
            log.add(path, f"no {case}.xml for this image")
            continue
        if case not in labels:
            continue  # its XML is already reported
        if labels[case] is None:
            log.exclude(path, "case has no TI-RADS value (empty_tirads='exclude')")
            continue
        rows.append({"image_id": path.name, "ref": str(path), "label": labels[case], "group": f"case{case}"})
    for case, path in xmls.items():
        if case not in seen_cases:
            log.add(path, f"no images {case}_<k>.jpg for this case")
    return make_manifest(rows, CLASSES, "thyroid", log, options={"empty_tirads": empty_tirads})

"""``synthetic``: a procedurally generated, seeded dataset of patients with several images each.

Every image shows a patient-specific smooth "anatomy" (low-frequency pattern, brightness, tint,
shared by all of that patient's images) plus a round "lesion" at a random place filled with an
oriented stripe texture. The class belongs to the patient, so splitting by image would leak
patients. The tasks share one set of primitives - stripe orientations ``j * 180 / m`` degrees and
two stripe periods - and define their classes by different combinations of them, so that a
network pretrained on a source task has learnt oriented filters and orientation features that the
target task needs, while the target's own labels differ from every source's:

- ``target`` (``n`` classes): class ``k`` shows one of the ``m = 2n`` orientations ``j`` with
  ``j mod n = k`` (for two classes: axis-aligned 0/90 degrees vs diagonal 45/135 degrees), at a
  the sources' fine period, a random lesion hue as a nuisance;
- ``source-a`` (even ``n``): class ``k = 2 g + f`` combines the lesion's hue ``f`` (warm, cool)
  with the orientation group ``g`` (orientations ``j`` of ``m = n`` with ``j mod n/2 = g``; for
  four classes: axis-aligned or diagonal), fine stripes;
- ``source-b`` (even ``n``): class ``k = 2 g + f`` combines the stripe period ``f`` (fine, coarse)
  with the orientation group ``g``, lesion hue a nuisance.

So both sources must learn the orientation primitives the target uses, each together with another
primitive, and their representations differ by what else they encode.

Everything is drawn from one seeded numpy generator and computed in whole-array operations.
"""

from __future__ import annotations

import numpy as np

from medtransfer.data.images import ArrayReader
from medtransfer.data.manifest import Manifest, make_manifest
from medtransfer.errors import DataError

TASKS = ("target", "source-a", "source-b")
PERIODS = (0.2, 0.3)  # stripe periods (fraction of the image side) of the sources: fine, coarse
TARGET_PERIOD = 0.2
CONTRAST = {"target": 90.0, "source-a": 100.0, "source-b": 100.0}  # stripe amplitude, grey levels at signal 1


def _hue_rgb(hue: np.ndarray) -> np.ndarray:
    """Hues in [0, 1) -> (n, 3) RGB of full saturation, values in [-1, 1]."""
    k = (hue[:, None] * 6.0 + np.array([0.0, 4.0, 2.0])) % 6.0
    rgb = 1.0 - np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)  # standard hsv->rgb with s = v = 1
    return 2.0 * rgb - 1.0


def _primitives(task: str, labels: np.ndarray, n_classes: int,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per image (orientation in radians, stripe period, lesion hue in [0, 1)) encoding ``labels``."""
    n = len(labels)
    pick = rng.integers(0, 2, size=n)  # which member of the class's primitive set an image shows
    hue = rng.uniform(0, 1, size=n)  # a nuisance, except where source-a makes it a class
    if task == "target":  # m = 2n orientations, class k <- j in {k, k + n}
        angle = (labels + n_classes * pick) * np.pi / (2 * n_classes)
        return angle, np.full(n, TARGET_PERIOD), hue
    # the sources: class 2g + f, orientations j of m = n, orientation group g <- j in {g, g + n/2}
    half = n_classes // 2
    group, factor = labels // 2, labels % 2
    angle = (group + half * pick) * np.pi / n_classes
    if task == "source-a":  # f = warm (hue 0..0.25) or cool (0.5..0.75) lesion, fine stripes
        return angle, np.full(n, PERIODS[0]), 0.5 * factor + 0.25 * hue
    return angle, np.asarray(PERIODS)[factor], hue  # source-b: f = fine or coarse stripes


def generate(n_patients: int = 60, images_per_patient: int = 4, size: int = 64, seed: int = 0,
             n_classes: int = 2, task: str = "target", signal: float = 1.0,
             chunk: int = 512) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Generate the pixels.

    Returns ``(images (N, size, size, 3) uint8, labels (N,) int64, patient (N,) int64)`` with
    ``N = n_patients * images_per_patient``; images of one patient are consecutive. ``signal``
    scales the stripes' contrast (``CONTRAST[task]`` grey levels at 1.0).
    """
    if task not in TASKS:
        raise DataError(f"synthetic option task={task!r}: expected one of {list(TASKS)}")
    if n_patients < 1 or images_per_patient < 1 or size < 8 or n_classes < 2:
        raise DataError("synthetic options: expected n_patients >= 1, images_per_patient >= 1, "
                        f"size >= 8, n_classes >= 2; got {n_patients}, {images_per_patient}, {size}, {n_classes}")
    if task != "target" and n_classes % 2:
        raise DataError(f"synthetic option n_classes={n_classes} with task={task!r}: expected an even "
                        "number (classes combine 2 hues or periods with n_classes / 2 orientation groups)")
    rng = np.random.default_rng([seed, TASKS.index(task)])
    n = n_patients * images_per_patient
    patient_label = rng.permutation(np.arange(n_patients) % n_classes)
    patient = np.repeat(np.arange(n_patients), images_per_patient)
    labels = patient_label[patient].astype(np.int64)

    # per patient: anatomy (3 low-frequency cosines), brightness, tint
    freq = rng.uniform(0.5, 2.5, size=(n_patients, 3, 2))
    phase = rng.uniform(0, 2 * np.pi, size=(n_patients, 3))
    amp = rng.uniform(10, 30, size=(n_patients, 3))
    bright = rng.uniform(80, 150, size=n_patients)
    tint = rng.uniform(-12, 12, size=(n_patients, 3))
    # per image: lesion centre, radius, stripe phase, orientation jitter, lesion hue, noise
    centre = rng.uniform(0.3, 0.7, size=(n, 2))
    radius = rng.uniform(0.2, 0.3, size=n)
    stripe_phase = rng.uniform(0, 2 * np.pi, size=n)
    jitter = rng.normal(0.0, 6.0, size=n)
    angle, period, hue = _primitives(task, labels, n_classes, rng)
    angle = angle + rng.normal(0.0, np.deg2rad(4.0), size=n)
    colour = _hue_rgb(hue)  # (n, 3) lesion colour
    noise_seed = rng.integers(0, 2**63 - 1)
    f32 = np.float32
    freq, phase, amp, bright, tint, centre, radius, stripe_phase, jitter, angle, period, colour = (
        a.astype(f32) for a in (freq, phase, amp, bright, tint, centre, radius, stripe_phase, jitter, angle,
                                period, colour))
    contrast = f32(CONTRAST[task] * signal)

    coords = (np.arange(size, dtype=np.float32) + 0.5) / size
    yy, xx = np.meshgrid(coords, coords, indexing="ij")  # (S, S) in [0, 1]
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    noise_rng = np.random.default_rng(noise_seed)
    for start in range(0, n, chunk):
        s = slice(start, min(n, start + chunk))
        p = patient[s]
        # anatomy: sum of 3 cosines, (m, S, S)
        arg = (freq[p, :, 0, None, None] * xx + freq[p, :, 1, None, None] * yy) * f32(2 * np.pi) \
            + phase[p, :, None, None]
        base = (amp[p, :, None, None] * np.cos(arg)).sum(axis=1) + bright[p, None, None] + jitter[s, None, None]
        dx = xx[None] - centre[s, 0, None, None]
        dy = yy[None] - centre[s, 1, None, None]
        dist = np.sqrt(dx * dx + dy * dy)
        mask = f32(1.0) / (f32(1.0) + np.exp((dist - radius[s, None, None]) * f32(size / 2.0)))  # soft disk
        proj = dx * np.cos(angle[s])[:, None, None] + dy * np.sin(angle[s])[:, None, None]
        stripes = np.cos(proj * (f32(2 * np.pi) / period[s, None, None]) + stripe_phase[s, None, None])
        lesion = (contrast * stripes * mask)[..., None] + (f32(25.0) * mask)[..., None] * colour[s, None, None, :]
        rgb = base[..., None] + tint[p, None, None, :] + lesion
        rgb = rgb + f32(12.0) * noise_rng.standard_normal(size=rgb.shape, dtype=f32)
        images[s] = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    return images, labels, patient


def load(root: object = None, *, n_patients: int = 60, images_per_patient: int = 4, size: int = 64,
         seed: int = 0, n_classes: int = 2, task: str = "target", signal: float = 1.0,
         skip_bad: bool = False) -> Manifest:
    """The synthetic dataset as a manifest (in memory; refs ``"synthetic:<row>"``).

    Image ids ``p0003_1`` (patient 3, image 1), group = patient (``p0003``), classes
    ``class0..class{k-1}``. ``root`` and ``skip_bad`` are accepted for a uniform loader signature.
    """
    options = dict(n_patients=n_patients, images_per_patient=images_per_patient, size=size,
                   seed=seed, n_classes=n_classes, task=task, signal=signal)
    images, labels, patient = generate(**options)
    within = np.tile(np.arange(images_per_patient), n_patients)
    groups = np.char.add("p", np.char.zfill(patient.astype(str), 4))
    ids = np.char.add(np.char.add(groups, "_"), within.astype(str))
    rows = {"image_id": ids, "ref": np.char.add("synthetic:", np.arange(len(labels)).astype(str)),
            "label": labels, "group": groups}
    import pandas as pd

    # the pixel cache is keyed by the images themselves (no key): a generator that changes what the
    # same options draw must never be served a cache built by the old one
    return make_manifest(pd.DataFrame(rows), [f"class{k}" for k in range(n_classes)], "synthetic",
                         reader=ArrayReader(images), options=options)

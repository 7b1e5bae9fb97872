"""``synthetic``: a procedurally generated, seeded dataset of patients with several images each.

Every image shows a patient-specific smooth "anatomy" (low-frequency pattern, brightness, tint,
shared by all of that patient's images) plus a round "lesion" at a random place whose content
carries the class. The class belongs to the patient, so splitting by image would leak patients.
Three tasks put the class in different visual features, so that pretraining on one gives a
different representation than pretraining on another:

- ``target``: stripe orientation inside the lesion (class k -> angle k * 180 / n_classes degrees);
- ``source-a``: lesion colour (class k -> hue k / n_classes), stripes at random angles as a nuisance;
- ``source-b``: concentric rings whose radial frequency grows with the class.

Everything is drawn from one seeded numpy generator and computed in whole-array operations.
"""

from __future__ import annotations

import numpy as np

from medtransfer.data.images import ArrayReader
from medtransfer.data.manifest import Manifest, make_manifest
from medtransfer.errors import DataError

TASKS = ("target", "source-a", "source-b")


def _hue_rgb(hue: np.ndarray) -> np.ndarray:
    """Hues in [0, 1) -> (n, 3) RGB of full saturation, values in [-1, 1]."""
    k = (hue[:, None] * 6.0 + np.array([0.0, 4.0, 2.0])) % 6.0
    rgb = 1.0 - np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)  # standard hsv->rgb with s = v = 1
    return 2.0 * rgb - 1.0


def generate(n_patients: int = 60, images_per_patient: int = 4, size: int = 64, seed: int = 0,
             n_classes: int = 2, task: str = "target", signal: float = 1.0,
             chunk: int = 512) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Generate the pixels.

    Returns ``(images (N, size, size, 3) uint8, labels (N,) int64, patient (N,) int64)`` with
    ``N = n_patients * images_per_patient``; images of one patient are consecutive. ``signal``
    scales the lesion's contrast (1.0: learnable by a small CNN in a few epochs at 32-64 px).
    """
    if task not in TASKS:
        raise DataError(f"synthetic option task={task!r}: expected one of {list(TASKS)}")
    if n_patients < 1 or images_per_patient < 1 or size < 8 or n_classes < 2:
        raise DataError("synthetic options: expected n_patients >= 1, images_per_patient >= 1, "
                        f"size >= 8, n_classes >= 2; got {n_patients}, {images_per_patient}, {size}, {n_classes}")
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
    # per image: lesion centre, radius, stripe phase, nuisance angle, noise
    centre = rng.uniform(0.3, 0.7, size=(n, 2))
    radius = rng.uniform(0.18, 0.3, size=n)
    stripe_phase = rng.uniform(0, 2 * np.pi, size=n)
    jitter = rng.normal(0.0, 6.0, size=n)
    nuisance = rng.uniform(0, np.pi, size=n)
    noise_seed = rng.integers(0, 2**63 - 1)
    f32 = np.float32
    freq, phase, amp, bright, tint, centre, radius, stripe_phase, jitter, nuisance = (
        a.astype(f32) for a in (freq, phase, amp, bright, tint, centre, radius, stripe_phase, jitter, nuisance))

    coords = (np.arange(size, dtype=np.float32) + 0.5) / size
    yy, xx = np.meshgrid(coords, coords, indexing="ij")  # (S, S) in [0, 1]
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    noise_rng = np.random.default_rng(noise_seed)
    for start in range(0, n, chunk):
        s = slice(start, min(n, start + chunk))
        p = patient[s]
        lab = labels[s]
        # anatomy: sum of 3 cosines, (m, S, S)
        arg = (freq[p, :, 0, None, None] * xx + freq[p, :, 1, None, None] * yy) * f32(2 * np.pi) \
            + phase[p, :, None, None]
        base = (amp[p, :, None, None] * np.cos(arg)).sum(axis=1) + bright[p, None, None] + jitter[s, None, None]
        dx = xx[None] - centre[s, 0, None, None]
        dy = yy[None] - centre[s, 1, None, None]
        dist = np.sqrt(dx * dx + dy * dy)
        mask = f32(1.0) / (f32(1.0) + np.exp((dist - radius[s, None, None]) * f32(size / 2.0)))  # soft disk
        period = 0.16
        if task == "target":
            angle = (lab * np.pi / n_classes).astype(f32)
        else:
            angle = nuisance[s]
        proj = dx * np.cos(angle)[:, None, None].astype(f32) + dy * np.sin(angle)[:, None, None].astype(f32)
        stripes = np.cos(proj * f32(2 * np.pi / period) + stripe_phase[s, None, None])
        rgb = base[..., None] + tint[p, None, None, :]
        if task == "target":
            lesion = (f32(45.0 * signal) * stripes * mask)[..., None]
        elif task == "source-a":
            colour = _hue_rgb(lab / n_classes).astype(f32)  # (m, 3)
            lesion = (mask * f32(50.0 * signal))[..., None] * colour[:, None, None, :] \
                + (f32(15.0) * stripes * mask)[..., None]
        else:
            ring_freq = (2 * np.pi * (2.0 + 3.0 * lab) / 0.25).astype(f32)
            rings = np.cos(dist * ring_freq[:, None, None] + stripe_phase[s, None, None])
            lesion = (f32(45.0 * signal) * rings * mask)[..., None]
        rgb = rgb + lesion + f32(12.0) * noise_rng.standard_normal(size=rgb.shape, dtype=f32)
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

    key = "synthetic|" + "|".join(f"{k}={v}" for k, v in sorted(options.items()))
    return make_manifest(pd.DataFrame(rows), [f"class{k}" for k in range(n_classes)], "synthetic",
                         reader=ArrayReader(images, key=key), options=options)

"""The synthetic dataset: shape, determinism, grouping, and a class signal a linear probe finds."""

import numpy as np
import pytest
import torch
from torch import nn

from medtransfer.data import load_manifest
from medtransfer.data.datasets.synthetic import generate
from medtransfer.errors import DataError


def test_manifest_layout_and_counts():
    m = load_manifest("synthetic", None, n_patients=12, images_per_patient=3, size=32, n_classes=3)
    assert len(m) == 36
    assert m.classes == ["class0", "class1", "class2"]
    assert m.class_counts() == {"class0": 12, "class1": 12, "class2": 12}
    assert m.frame["group"].nunique() == 12
    # a patient's images share one label
    assert (m.frame.groupby("group")["label"].nunique() == 1).all()
    image = m.read_image(5)
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    assert m.frame["ref"].iat[5] == "synthetic:5"


def test_seeded_and_tasks_differ():
    a1, l1, _ = generate(n_patients=6, size=24, seed=3)
    a2, l2, _ = generate(n_patients=6, size=24, seed=3)
    b, _, _ = generate(n_patients=6, size=24, seed=4)
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_array_equal(l1, l2)
    assert np.abs(a1.astype(int) - b.astype(int)).mean() > 5
    c, _, _ = generate(n_patients=6, size=24, seed=3, task="source-a")
    assert np.abs(a1.astype(int) - c.astype(int)).mean() > 5


def _primitive_table(task, n_classes):
    from medtransfer.data.datasets.synthetic import _primitives

    labels = np.repeat(np.arange(n_classes), 50)
    angle, period, hue = _primitives(task, labels, n_classes, np.random.default_rng(0))
    return labels, np.rint(np.degrees(angle)).astype(int), np.asarray(period), hue


def test_tasks_combine_the_same_primitives_differently():
    """Target: orientation j of 2n with j mod n = class; the sources: class = 2 * orientation group
    + hue (source-a) or period (source-b), with the target's orientation groups for n = 4."""
    from medtransfer.data.datasets.synthetic import PERIODS, TARGET_PERIOD

    labels, angle, period, hue = _primitive_table("target", 2)
    assert set(angle[labels == 0]) == {0, 90} and set(angle[labels == 1]) == {45, 135}
    assert set(period) == {TARGET_PERIOD} and hue.min() < 0.05 and hue.max() > 0.95
    labels, angle, period, hue = _primitive_table("source-a", 4)
    for k in range(4):
        assert set(angle[labels == k]) == ({0, 90} if k // 2 == 0 else {45, 135})
        low = 0.5 * (k % 2)
        assert low <= hue[labels == k].min() and hue[labels == k].max() < low + 0.25
    assert set(period) == {PERIODS[0]} == {TARGET_PERIOD}
    labels, angle, period, hue = _primitive_table("source-b", 4)
    for k in range(4):
        assert set(angle[labels == k]) == ({0, 90} if k // 2 == 0 else {45, 135})
        assert set(period[labels == k]) == {PERIODS[k % 2]}
    labels, angle, _, _ = _primitive_table("target", 3)  # 6 orientations, 30 degrees apart
    assert set(angle[labels == 1]) == {30, 120}
    for task in ("source-a", "source-b"):
        with pytest.raises(DataError, match="even"):
            generate(n_patients=4, n_classes=3, task=task)


def _diagonal_energy(images):
    """|mean(gx * gy)| / mean(gx^2 + gy^2): high for diagonal stripes, ~0 for axis-aligned ones."""
    g = images.astype(np.float32).mean(axis=3)
    gy, gx = np.gradient(g, axis=(1, 2))
    return np.abs((gx * gy).mean((1, 2))) / (gx**2 + gy**2).mean((1, 2))


def _colour_spread(images):
    x = images.reshape(len(images), -1, 3).astype(np.float32)
    return (x.max(axis=2) - x.min(axis=2)).std(axis=1)


def test_target_class_is_in_the_orientation_not_the_colour():
    from sklearn.metrics import roc_auc_score

    x, y, _ = generate(n_patients=100, images_per_patient=1, size=32, seed=0, task="target")
    assert roc_auc_score(y, _diagonal_energy(x)) > 0.85
    assert abs(roc_auc_score(y, _colour_spread(x)) - 0.5) < 0.15


def test_bad_options():
    with pytest.raises(DataError, match="task"):
        load_manifest("synthetic", None, task="nope")
    with pytest.raises(DataError, match="n_classes"):
        load_manifest("synthetic", None, n_classes=1)


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_small_cnn_learns_target_from_pixels(one_thread):
    """End to end: a 3-layer CNN reaches AUC > 0.9 on held-out patients within 5 epochs."""
    from sklearn.metrics import roc_auc_score

    torch.manual_seed(0)
    x, y, p = generate(n_patients=60, images_per_patient=4, size=32, seed=1)
    images = (torch.from_numpy(x).permute(0, 3, 1, 2).float() - 120) / 60
    labels = torch.from_numpy(y)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(32, 2))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    train, test = np.flatnonzero(p < 45), np.flatnonzero(p >= 45)
    rng = np.random.default_rng(0)
    for _ in range(5):
        for batch in np.array_split(rng.permutation(train), len(train) // 16):
            loss = nn.functional.cross_entropy(net(images[batch]), labels[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        scores = net(images[test]).softmax(1)[:, 1].numpy()
    assert roc_auc_score(y[test], scores) > 0.9

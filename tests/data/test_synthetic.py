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


def _fit_probe(features, labels, train):
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(max_iter=2000).fit(features[train], labels[train])
    return clf.score(features[~train], labels[~train])


def _orientation_features(images):
    """Energy of the image gradient along 4 orientations, as a hand-made 'target' feature."""
    g = images.astype(np.float32).mean(axis=3)
    gy, gx = np.gradient(g, axis=(1, 2))
    return np.stack([(gx**2).mean((1, 2)), (gy**2).mean((1, 2)), (gx * gy).mean((1, 2)),
                     ((gx + gy) ** 2).mean((1, 2))], axis=1)


def _colour_features(images):
    """Spread of the channel differences (a coloured lesion widens them)."""
    x = images.reshape(len(images), -1, 3).astype(np.float32)
    diffs = np.stack([x[..., 0] - x[..., 1], x[..., 1] - x[..., 2], x[..., 2] - x[..., 0]], axis=2)
    centred = diffs - np.median(diffs, axis=1, keepdims=True)
    return np.concatenate([np.percentile(centred, 97, axis=1), np.percentile(centred, 3, axis=1)], axis=1)


@pytest.mark.parametrize("task", ["target", "source-a"])
def test_each_task_has_its_own_signal(task):
    """The target's class is in orientation (not colour spread); source-a's in colour."""
    x, y, p = generate(n_patients=80, images_per_patient=2, size=32, seed=0, task=task)
    train = p < 60
    orient = _fit_probe(_orientation_features(x), y, train)
    colour = _fit_probe(_colour_features(x), y, train)
    if task == "target":
        assert orient > 0.8 and colour < 0.75
    else:
        assert colour > 0.8


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

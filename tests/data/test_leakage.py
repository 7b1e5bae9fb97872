"""Image fingerprints and overlaps: the same image found across datasets whatever its encoding,
different images never paired, the near-duplicate threshold between the two."""

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medtransfer.data import PixelCache, load_manifest
from medtransfer.data.datasets.synthetic import generate
from medtransfer.data.leakage import (
    MIN_CORRELATION,
    NEAR_DISTANCE,
    HashCollector,
    ImageHashes,
    _near_pairs,
    dataset_hashes,
    exact_hash,
    fold_overlaps,
    hashes_path,
    overlaps,
)

from .helpers import manifest_from


def reencoded(image: np.ndarray, quality: int = 75, size: int | None = None) -> np.ndarray:
    """A lossy copy: resized (bilinear) to ``size`` x ``size``, saved as JPEG, decoded."""
    picture = Image.fromarray(image)
    if size is not None:
        picture = picture.resize((size, size), Image.BILINEAR)
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def _save(pixels: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def _folder_set(root: Path, images: np.ndarray, labels: np.ndarray, names: list[str] | None = None) -> Path:
    for i, (pixels, label) in enumerate(zip(images, labels)):
        _save(pixels, root / f"c{label}" / (names[i] if names else f"img{i:03d}.png"))
    return root


def test_five_shared_images_are_five_overlaps(tmp_path):
    """A pretraining set holding 5 of the target's images (one re-encoded as JPEG and resized,
    one as BMP, three as PNG copies) among 60 unrelated ones: 5 overlaps, 4 exact, 1 near."""
    images, labels, _ = generate(n_patients=60, images_per_patient=1, size=64, seed=0, task="target")
    target = load_manifest("folder", _folder_set(tmp_path / "target", images, labels))
    other, other_labels, _ = generate(n_patients=60, images_per_patient=1, size=64, seed=5, task="source-a",
                                      n_classes=4)
    pre_root = _folder_set(tmp_path / "pre", other, other_labels)
    shared = [3, 10, 17, 40, 55]
    for k, i in enumerate(shared[:3]):
        _save(images[i], pre_root / "c0" / f"copy{k}.png")
    _save(images[shared[3]], pre_root / "c1" / "copy.bmp")
    _save(reencoded(images[shared[4]], quality=70, size=48), pre_root / "c1" / "lossy.jpg")
    pretrain = load_manifest("folder", pre_root)

    found = overlaps(dataset_hashes(pretrain, tmp_path / "cache"), dataset_hashes(target, tmp_path / "cache"))
    assert sorted(found["image_b"]) == sorted(f"c{labels[i]}/img{i:03d}.png" for i in shared)
    assert found["image_a"].nunique() == found["image_b"].nunique() == len(found) == 5
    assert (found["match"] == "exact").sum() == 4
    near = found[found["match"] == "near"].iloc[0]
    assert near["image_a"].endswith("lossy.jpg") and 0 < near["distance"] <= NEAR_DISTANCE
    assert near["correlation"] >= MIN_CORRELATION


def test_unrelated_synthetic_sets_share_nothing(tmp_path):
    """The demo's sources and target (other seeds, other tasks): no pair, exact or near; nor
    between the target's folds."""
    from medtransfer.data.folds import make_folds

    target = load_manifest("synthetic", n_patients=100, images_per_patient=2, size=32, task="target", seed=0)
    source = load_manifest("synthetic", n_patients=400, images_per_patient=1, size=32, task="source-a",
                           n_classes=4, seed=1)
    t, s = dataset_hashes(target, tmp_path), dataset_hashes(source, tmp_path)
    assert overlaps(s, t).empty
    folds = make_folds(target, k=3, fractions=(0.6666667, 0.0833333, 0.25), seed=0)
    assert fold_overlaps(overlaps(t), folds).empty


def _hashes(images) -> ImageHashes:  # noqa: ANN001 - (h, w, 3) uint8 images of any sizes
    collector = HashCollector(manifest_from(np.arange(len(images)) % 2, np.arange(len(images))))
    for i, image in enumerate(images):
        collector.add(i, image)
    return collector.result()


@pytest.mark.parametrize("size", [32, 64])
def test_threshold_separates_copies_from_other_images(size):
    """Synthetic images of 2 x 150 patients against 500 of a source task (150 000 pairs of
    different images, some within NEAR_DISTANCE bits): no near duplicate across patients or sets;
    every JPEG copy of 40 images (quality 50-90, resized to half, twice, or 28 px) is one."""
    images, _, patient = generate(n_patients=150, images_per_patient=2, size=size, seed=3, task="target")
    other, _, _ = generate(n_patients=500, images_per_patient=1, size=size, seed=4, task="source-a", n_classes=4)
    mine = _hashes(images)
    assert overlaps(_hashes(other), mine).empty
    within = overlaps(mine)
    assert (patient[within["a"]] == patient[within["b"]]).all()
    copies = [reencoded(image, quality, side) for image in images[:40]
              for quality, side in ((50, None), (75, size // 2), (75, size * 2), (90, 28))]
    found = overlaps(_hashes(copies), mine)
    found = found[found["a"] // 4 == found["b"]]  # each copy and its original
    assert len(found) == len(copies)


def test_exact_hash_is_of_pixels_and_shape():
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    assert exact_hash(image) == exact_hash(image.copy())
    assert exact_hash(image) != exact_hash(image.reshape(3, 2, 3))
    changed = image.copy()
    changed[0, 0, 0] += 1
    assert exact_hash(changed) != exact_hash(image)


def test_flat_images_match_only_exactly():
    """Blank frames of two grey levels: no structure, so not near duplicates of each other."""
    blank = np.array([np.full((40, 40, 3), v, np.uint8) for v in (100, 101, 100)])
    hashes = _hashes(blank)
    assert hashes.flat.all()
    found = overlaps(hashes)
    assert found[["a", "b", "match"]].values.tolist() == [[0, 2, "exact"]]


@pytest.mark.parametrize("max_distance", [0, 3, 8])
def test_multi_index_search_equals_brute_force(max_distance):
    """Clustered 63-bit hashes (copies with a few flipped bits): the pigeonhole search finds
    exactly the pairs a full comparison finds."""
    rng = np.random.default_rng(max_distance)
    centres = rng.integers(0, 1 << 63, size=30, dtype=np.uint64)
    flips = lambda n: np.bitwise_or.reduce(  # noqa: E731 - up to 10 random bits per hash
        np.left_shift(np.uint64(1), rng.integers(0, 63, size=(n, 10)).astype(np.uint64))
        * (rng.random((n, 10)) < 0.5), axis=1)
    a = centres[rng.integers(0, 30, 400)] ^ flips(400)
    b = centres[rng.integers(0, 30, 300)] ^ flips(300)
    full = np.bitwise_count(a[:, None] ^ b[None, :]) <= max_distance
    i, j = _near_pairs(a, b, max_distance, same=False)
    assert sorted(zip(i.tolist(), j.tolist())) == sorted(zip(*map(list, np.nonzero(full))))
    i, j = _near_pairs(a, a, max_distance, same=True)
    self_full = np.triu(np.bitwise_count(a[:, None] ^ a[None, :]) <= max_distance, 1)
    assert sorted(zip(i.tolist(), j.tolist())) == sorted(zip(*map(list, np.nonzero(self_full))))


def test_pixel_cache_leaves_hashes_that_are_reused(tmp_path, monkeypatch):
    images, labels, _ = generate(n_patients=6, images_per_patient=2, size=40, seed=1, task="target")
    manifest = load_manifest("folder", _folder_set(tmp_path / "set", images, labels))
    PixelCache.build(manifest, 16, cache_dir=tmp_path / "cache")
    path = hashes_path(manifest, tmp_path / "cache")
    assert path.is_file()
    computed = ImageHashes.load(path)
    for i, row in enumerate(manifest.frame.itertuples()):
        assert computed.exact[i] == exact_hash(manifest.read_image(i))
    # another size uses the same hashes: nothing is decoded for them
    PixelCache.build(manifest, 24, cache_dir=tmp_path / "cache")
    monkeypatch.setattr(type(manifest), "read_image", lambda self, i: (_ for _ in ()).throw(AssertionError))
    again = dataset_hashes(manifest, tmp_path / "cache")
    assert list(again.exact) == list(computed.exact) and list(again.phash) == list(computed.phash)


def test_damaged_hash_file_is_computed_again(tmp_path):
    manifest = load_manifest("synthetic", n_patients=4, images_per_patient=2, size=16)
    first = dataset_hashes(manifest, tmp_path)
    hashes_path(manifest, tmp_path).write_bytes(b"not an npz")
    assert list(dataset_hashes(manifest, tmp_path).exact) == list(first.exact)


def test_fold_overlaps_only_across_the_test_part():
    pairs = pd.DataFrame({"a": [0, 1], "b": [2, 3], "image_a": ["x", "y"], "image_b": ["z", "w"],
                          "match": ["exact", "near"], "distance": [0, 3], "correlation": [1.0, 0.95]})
    folds = pd.DataFrame({"image_id": ["x", "z", "y", "w", "x", "z"], "fold": [0, 0, 0, 0, 1, 1],
                          "split": ["train", "test", "train", "val", "test", "test"]})
    leaks = fold_overlaps(pairs, folds)
    assert leaks[["image_a", "image_b", "fold", "split_a", "split_b"]].values.tolist() == [
        ["x", "z", 0, "train", "test"]]


def test_dct_is_scipys_orthonormal_dct2():
    from scipy.fft import dctn

    from medtransfer.data.leakage import _DCT

    thumb = np.random.default_rng(0).uniform(0, 255, (32, 32))
    np.testing.assert_allclose(_DCT @ thumb @ _DCT.T, dctn(thumb, type=2, norm="ortho")[:8, :8], atol=1e-9)

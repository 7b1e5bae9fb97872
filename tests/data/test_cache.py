"""The pixel cache: contents equal decode + resize, memory-mapped, keyed by files and settings."""

import os

import numpy as np
import pandas as pd
import pytest

from medtransfer.data import Manifest, PixelCache, load_manifest
from medtransfer.data.images import decode_file, resize
from medtransfer.errors import DataError

from .helpers import truncate, write_image


def _file_manifest(tmp_path, n=6):
    paths = [write_image(tmp_path / "img" / f"{i}.png", size=(30 + i, 20), seed=i,
                         mode="L" if i % 2 else "RGB") for i in range(n)]
    frame = pd.DataFrame({"image_id": [f"i{i}" for i in range(n)], "ref": [str(p) for p in paths],
                          "label": [i % 2 for i in range(n)], "group": [f"g{i}" for i in range(n)]})
    return Manifest(frame, ["a", "b"], "files"), paths


def test_build_matches_decode_and_resize(tmp_path):
    m, paths = _file_manifest(tmp_path)
    cache = PixelCache.build(m, 16, "nearest", cache_dir=tmp_path / "cache", workers=2)
    assert isinstance(cache.pixels, np.memmap) and cache.pixels.shape == (6, 16, 16, 3)
    for i, p in enumerate(paths):
        np.testing.assert_array_equal(cache.pixels[i], resize(decode_file(p), 16, "nearest"))
    np.testing.assert_array_equal(cache.rows(["i3", "i0"]), cache.pixels[[3, 0]])
    t = cache.tensor(["i1"])
    assert t.shape == (1, 3, 16, 16) and t.dtype.is_floating_point is False
    np.testing.assert_array_equal(t[0].permute(1, 2, 0).numpy(), cache.pixels[1])
    with pytest.raises(DataError, match="unknown image id 'nope'"):
        cache.rows(["nope"])


def test_key_detects_changes(tmp_path):
    m, paths = _file_manifest(tmp_path)
    root = tmp_path / "cache"
    first = PixelCache.build(m, 16, cache_dir=root)
    again = PixelCache.build(m, 16, cache_dir=root)
    assert again.path == first.path
    assert PixelCache.build(m, 16, "bilinear", cache_dir=root).path != first.path
    assert PixelCache.build(m, 12, cache_dir=root).path != first.path
    # rewrite one source file with other pixels: a new cache with the new pixels
    write_image(paths[2], size=(32, 20), seed=99)
    os.utime(paths[2], ns=(1, 1))
    changed = PixelCache.build(m, 16, cache_dir=root)
    assert changed.path != first.path
    np.testing.assert_array_equal(changed.pixels[2], resize(decode_file(paths[2]), 16, "nearest"))


def test_unreadable_images_named(tmp_path):
    m, paths = _file_manifest(tmp_path)
    truncate(paths[1], 0.3)
    paths[4].unlink()
    with pytest.raises(DataError, match=r"(?s)2 problem\(s\).*1\.png.*truncated.*4\.png.*not found"):
        PixelCache.build(m, 16, cache_dir=tmp_path / "cache")
    assert not list((tmp_path / "cache").iterdir())  # nothing half-built is left


def test_in_memory_dataset(tmp_path):
    m = load_manifest("synthetic", None, n_patients=5, images_per_patient=2, size=24)
    cache = PixelCache.build(m, 24, cache_dir=tmp_path, workers=3)
    np.testing.assert_array_equal(cache.pixels, np.stack([m.read_image(i) for i in range(len(m))]))
    other = load_manifest("synthetic", None, n_patients=5, images_per_patient=2, size=24, seed=1)
    assert PixelCache.build(other, 24, cache_dir=tmp_path).path != cache.path


def test_readers_pickle(tmp_path):
    """Manifests travel to worker processes (Ray, SLURM): readers drop open handles when pickled."""
    import pickle

    import h5py

    from medtransfer.data.images import H5Reader, NpySliceReader

    with h5py.File(tmp_path / "a.h5", "w") as f:
        f.create_dataset("x", data=np.arange(48, dtype=np.uint8).reshape(1, 4, 4, 3))
    np.save(tmp_path / "v.npy", np.arange(50, dtype=np.uint8).reshape(2, 5, 5))
    for reader, ref in ((H5Reader("x"), f"{tmp_path}/a.h5::0"), (NpySliceReader(), f"{tmp_path}/v.npy::1")):
        before = reader.read(ref)  # opens the file
        np.testing.assert_array_equal(pickle.loads(pickle.dumps(reader)).read(ref), before)
    m = load_manifest("synthetic", None, n_patients=2, images_per_patient=2, size=8)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(m)).read_image(3), m.read_image(3))


def test_default_cache_folder_follows_medtransfer_cache(tmp_path, monkeypatch):
    m, _ = _file_manifest(tmp_path, n=2)
    monkeypatch.setenv("MEDTRANSFER_CACHE", str(tmp_path / "mine"))
    cache = PixelCache.build(m, 8, "nearest", workers=1)
    assert (tmp_path / "mine" / "pixels").is_dir()
    assert str(tmp_path / "mine" / "pixels") in str(cache.pixels.filename)


def test_synthetic_cache_follows_the_generated_images_not_just_the_options(tmp_path, monkeypatch):
    """The same options from a changed generator (a new release) must not reuse the old cache."""
    from medtransfer.data.datasets import synthetic

    options = dict(n_patients=4, images_per_patient=2, size=16)
    first = PixelCache.build(load_manifest("synthetic", None, **options), 16, cache_dir=tmp_path)
    real = synthetic.generate

    def changed(**kwargs):
        images, labels, patient = real(**kwargs)
        return 255 - images, labels, patient

    monkeypatch.setattr(synthetic, "generate", changed)
    second = PixelCache.build(load_manifest("synthetic", None, **options), 16, cache_dir=tmp_path)
    assert second.path != first.path
    np.testing.assert_array_equal(np.asarray(second.pixels), 255 - np.asarray(first.pixels))


def test_a_cache_written_over_in_place_is_refused_and_rebuilt_and_a_copy_is_accepted(tmp_path):
    """``pixels.npy`` overwritten in place (same size, another time) is named and rebuilt, never
    served; a faithful copy (new time, same bytes) is accepted and remembered."""
    import json
    import shutil

    m, paths = _file_manifest(tmp_path)
    cache = PixelCache.build(m, 16, "nearest", cache_dir=tmp_path / "cache", workers=2)
    good = np.array(cache.pixels)
    pixels_file = cache.path / "pixels.npy"
    damaged = np.lib.format.open_memmap(pixels_file, mode="r+")
    damaged[2] = 255 - damaged[2]  # a write in place: same size
    damaged.flush()
    del damaged
    os.utime(pixels_file, ns=(1, 1))  # and another modification time, as any write gives
    with pytest.raises(DataError, match=r"pixels\.npy: changed since its pixel cache was built"):
        PixelCache.open(cache.path)
    rebuilt = PixelCache.build(m, 16, "nearest", cache_dir=tmp_path / "cache", workers=2)
    np.testing.assert_array_equal(rebuilt.pixels, good)

    copy = tmp_path / "copy" / rebuilt.path.name
    shutil.copytree(rebuilt.path, copy)  # cp -r: new times, same bytes
    os.utime(copy / "pixels.npy", ns=(2, 2))
    np.testing.assert_array_equal(PixelCache.open(copy).pixels, good)
    assert json.loads((copy / "meta.json").read_text())["pixels"]["mtime_ns"] == 2

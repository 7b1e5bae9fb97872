"""KerasAugment equals Keras' own ImageDataGenerator transform; its parameters have the right laws."""

import numpy as np
import pytest
import torch
from scipy import stats

from medtransfer.data import AffineParams, KerasAugment


def _keras_image():
    """Keras' legacy image module; tests that need it skip without Keras (the others still run)."""
    return pytest.importorskip("keras.src.legacy.preprocessing.image")


def _keras(x: np.ndarray, p: AffineParams, i: int) -> np.ndarray:
    """Keras 3's ImageDataGenerator.apply_transform (the authors' generator settings) on one
    (h, w, c) float64 image with the given parameters."""
    generator = _keras_image().ImageDataGenerator(
        rotation_range=10, width_shift_range=0.1, height_shift_range=0.1, shear_range=0.1,
        zoom_range=0.1, fill_mode="nearest", horizontal_flip=True, data_format="channels_last")
    params = {"theta": p.theta[i].item(), "tx": p.tx[i].item(), "ty": p.ty[i].item(),
              "shear": p.shear[i].item(), "zx": p.zx[i].item(), "zy": p.zy[i].item(),
              "flip_horizontal": bool(p.flip[i])}
    return generator.apply_transform(x, params)


@pytest.mark.parametrize("shape", [(32, 32), (112, 112), (20, 28)])
def test_equals_keras_for_the_same_parameters(shape):
    h, w = shape
    gen = torch.Generator().manual_seed(h * w)
    x = torch.randint(0, 256, (4, 3, h, w), generator=gen, dtype=torch.uint8)
    # stronger ranges than the paper's too, so that every term of the matrix matters
    for aug in (KerasAugment(), KerasAugment(rotation=40, shift=0.3, shear=20, zoom=0.4)):
        p = aug.sample(4, h, w, gen)
        y32 = aug.apply(x, p)  # uint8 in, float32 out (float64 sampling inside)
        y64 = aug.apply(x.double(), p)
        fast = KerasAugment(precise=False).apply(x, p)  # float32 sampling
        assert y32.dtype == torch.float32 and y32.shape == x.shape and y64.dtype == torch.float64
        for i in range(4):
            ref = _keras(x[i].permute(1, 2, 0).double().numpy(), p, i).transpose(2, 0, 1)
            np.testing.assert_allclose(y64[i].numpy(), ref, atol=1e-6, rtol=0)
            np.testing.assert_allclose(y32[i].numpy(), ref, atol=1e-4, rtol=0)
            np.testing.assert_allclose(fast[i].numpy(), ref, atol=5e-3, rtol=0)


def test_random_call_is_seeded_and_flip_only_mirrors():
    x = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
    a = KerasAugment()(x, torch.Generator().manual_seed(5))
    b = KerasAugment()(x, torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, b)
    flip_only = KerasAugment(rotation=0, shift=0, shear=0, zoom=0, hflip=True)
    gen = torch.Generator().manual_seed(0)
    p = flip_only.sample(8, 16, 16, gen)
    y = flip_only.apply(x, p)
    expected = torch.where(p.flip[:, None, None, None], x.flip(-1), x).float()
    torch.testing.assert_close(y, expected, atol=1e-4, rtol=0)
    none = KerasAugment(rotation=0, shift=0, shear=0, zoom=0, hflip=False)
    torch.testing.assert_close(none(x, gen), x.float(), atol=1e-4, rtol=0)


def test_parameter_distributions():
    n, h, w = 20000, 112, 96
    p = KerasAugment().sample(n, h, w, torch.Generator().manual_seed(1))
    laws = {
        "theta": stats.uniform(-10, 20), "tx": stats.uniform(-0.1 * h, 0.2 * h),
        "ty": stats.uniform(-0.1 * w, 0.2 * w), "shear": stats.uniform(-0.1, 0.2),
        "zx": stats.uniform(0.9, 0.2), "zy": stats.uniform(0.9, 0.2),
    }
    for name, law in laws.items():
        values = getattr(p, name).numpy()
        assert stats.kstest(values, law.cdf).pvalue > 1e-3, name
    assert abs(np.corrcoef(p.zx.numpy(), p.zy.numpy())[0, 1]) < 0.03  # independent zooms
    assert stats.binomtest(int(p.flip.sum()), n, 0.5).pvalue > 1e-3
    assert not KerasAugment(hflip=False).sample(100, h, w, torch.Generator()).flip.any()


def test_runs_on_the_inputs_device_and_rejects_bad_shapes():
    x = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"\(n, c, h, w\)"):
        KerasAugment().apply(x[0], KerasAugment().sample(2, 8, 8, torch.Generator()))
    if torch.cuda.is_available():
        gen = torch.Generator(device="cuda").manual_seed(0)
        y = KerasAugment()(x.cuda(), gen)
        assert y.device.type == "cuda"


def test_parameter_laws_match_keras_sampling():
    """Two-sample KS tests against Keras' own get_random_transform on a non-square image."""
    h, w, n = 60, 90, 3000
    generator = _keras_image().ImageDataGenerator(
        rotation_range=10, width_shift_range=0.1, height_shift_range=0.1, shear_range=0.1,
        zoom_range=0.1, fill_mode="nearest", horizontal_flip=True, data_format="channels_last")
    np.random.seed(0)
    theirs = [generator.get_random_transform((h, w, 3)) for _ in range(n)]
    ours = KerasAugment().sample(n, h, w, torch.Generator().manual_seed(2))
    for name in ("theta", "tx", "ty", "shear", "zx", "zy"):
        keras_values = np.array([t[name] for t in theirs], dtype=float)
        assert stats.ks_2samp(getattr(ours, name).numpy(), keras_values).pvalue > 1e-3, name
    flips = np.array([t["flip_horizontal"] for t in theirs], dtype=float)
    assert abs(flips.mean() - ours.flip.float().mean().item()) < 0.06

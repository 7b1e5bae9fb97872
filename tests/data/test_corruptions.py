"""The corruption table: identity at severity 0, monotone in severity, seeded, JPEG against PIL."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from medtransfer.data import corruptions as C
from medtransfer.data.datasets.synthetic import load as synthetic
from medtransfer.errors import ConfigError


def _images(size: int = 96, n: int = 3) -> torch.Tensor:
    """Structured test images (synthetic stripes and lesions) plus one grey image, uint8 (n, 3, s, s)."""
    manifest = synthetic(None, n_patients=n, images_per_patient=1, size=size, seed=3)
    rgb = np.stack([manifest.read_image(i) for i in range(n)])
    grey = rgb.mean(axis=3, keepdims=True).round().astype(np.uint8).repeat(3, axis=3)[:1]
    return torch.from_numpy(np.concatenate([rgb, grey])).permute(0, 3, 1, 2).contiguous()


def _psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per image PSNR (dB) of ``b`` against ``a``, both 0..255."""
    mse = ((a.double() - b.double()) ** 2).mean(dim=(1, 2, 3))
    return 10 * torch.log10(255.0 ** 2 / mse)


def test_table_has_eight_corruptions_at_five_severities():
    assert len(C.NAMES) == 8
    for c in C.CORRUPTIONS.values():
        assert len(c.values) == len(C.SEVERITIES) == 5


@pytest.mark.parametrize("name", C.NAMES)
def test_severity_zero_is_the_identity(name):
    x = _images()
    assert torch.equal(C.corrupt(x, name, 0, torch.Generator().manual_seed(0)), x.float())


@pytest.mark.parametrize("name", C.NAMES)
def test_psnr_to_clean_falls_with_severity(name):
    x = _images()
    psnr = []
    for severity in C.SEVERITIES:
        out = C.corrupt(x, name, severity, torch.Generator().manual_seed(7))
        assert out.dtype == torch.float32 and out.shape == x.shape
        assert out.min() >= 0 and out.max() <= 255 and torch.equal(out, out.round())
        psnr.append(_psnr(x, out))
    psnr = torch.stack(psnr)  # (severities, images)
    assert torch.isfinite(psnr).all(), f"{name}: severity 1 leaves some image unchanged"
    assert (psnr[1:] < psnr[:-1]).all(), f"{name}: PSNR by severity {psnr.T.tolist()}"


@pytest.mark.parametrize("name", [n for n in C.NAMES if C.CORRUPTIONS[n].random])
def test_seeded_corruptions_are_identical_run_to_run_and_differ_by_seed(name):
    x = _images()
    a = C.corrupt(x, name, 3, torch.Generator().manual_seed(11))
    b = C.corrupt(x, name, 3, torch.Generator().manual_seed(11))
    c = C.corrupt(x, name, 3, torch.Generator().manual_seed(12))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_noise_keeps_a_grey_image_grey():
    x = _images()[-1:]
    for name in ("gaussian_noise", "speckle_noise", "jpeg", "motion_blur"):
        out = C.corrupt(x, name, 5, torch.Generator().manual_seed(0))
        assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2]), name


def test_jpeg_is_close_to_pil_on_a_grey_image():
    """The device JPEG against PIL's encoder (4:4:4, same quality): pixels agree to a few levels."""
    from PIL import Image

    x = _images(size=64)[-1:]
    for quality in (25, 7):
        ours = C._jpeg(x.float(), quality, None).clamp(0, 255).round()[0, 0].numpy()
        buffer = io.BytesIO()
        Image.fromarray(x[0, 0].numpy()).save(buffer, format="JPEG", quality=quality)
        theirs = np.asarray(Image.open(io.BytesIO(buffer.getvalue())), dtype=np.float64)
        clean = x[0, 0].numpy().astype(np.float64)
        assert np.abs(ours - theirs).mean() < 0.25 * np.abs(theirs - clean).mean() + 0.5, quality


def test_unknown_names_and_severities_are_refused_by_name():
    x = _images(size=16, n=1)
    with pytest.raises(ConfigError, match="'fog'.*gaussian_noise"):
        C.corrupt(x, "fog", 1)
    with pytest.raises(ConfigError, match="severity 6"):
        C.corrupt(x, "jpeg", 6)
    assert C.parse_names("all") == list(C.NAMES)
    assert C.parse_names("jpeg, contrast") == ["contrast", "jpeg"]
    with pytest.raises(ConfigError, match="'fog'"):
        C.parse_names("jpeg,fog")

"""Per-source input normalisation: closed forms of each mode."""

from __future__ import annotations

import pytest
import torch

from medtransfer.errors import ConfigError
from medtransfer.models import Normalization


def test_caffe_is_bgr_minus_mean():
    x = torch.zeros(1, 3, 2, 2)
    x[:, 0], x[:, 1], x[:, 2] = 10.0, 20.0, 30.0  # R, G, B
    out = Normalization("caffe")(x)
    assert out[0, :, 0, 0].tolist() == pytest.approx([30 - 103.939, 20 - 116.779, 10 - 123.68])
    assert x[0, 0, 0, 0] == 10.0  # input untouched


def test_other_modes_closed_forms():
    x = torch.tensor([0.0, 127.5, 255.0]).view(1, 3, 1, 1).expand(2, 3, 4, 4)
    assert Normalization("unit")(x)[0, :, 0, 0].tolist() == pytest.approx([0, 0.5, 1])
    assert Normalization("symmetric")(x)[0, :, 0, 0].tolist() == pytest.approx([-1, 0, 1])
    torch_out = Normalization("torch")(x)[0, :, 0, 0]
    expected = [(0 - 0.485) / 0.229, (0.5 - 0.456) / 0.224, (1 - 0.406) / 0.225]
    assert torch_out.tolist() == pytest.approx(expected, rel=1e-5)


def test_uint8_single_image_channels_last_and_string_roundtrip():
    x = torch.randint(0, 256, (3, 5, 5), dtype=torch.uint8)
    out = Normalization("unit")(x)
    assert out.dtype == torch.float32 and out.shape == (3, 5, 5)
    batch = torch.rand(2, 3, 6, 6) * 255
    cl = batch.to(memory_format=torch.channels_last)
    torch.testing.assert_close(Normalization("caffe")(cl), Normalization("caffe")(batch))
    for mode in ("caffe", "unit", "symmetric", "torch"):
        assert Normalization(str(Normalization(mode))) == Normalization(mode)
    assert Normalization.coerce(None) == Normalization("caffe")


def test_bad_mode_and_shape():
    with pytest.raises(ConfigError, match="'bgr'.*caffe"):
        Normalization("bgr")
    with pytest.raises(ConfigError, match=r"\(2, 1, 4, 4\)"):
        Normalization("caffe")(torch.zeros(2, 1, 4, 4))

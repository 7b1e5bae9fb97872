"""The CUDA code paths against the CPU: each test body takes a device and runs on the CPU always
and on CUDA when a GPU is present (the CUDA variants are skipped without one).

Tolerances were measured on the CPU with the same bodies (bf16 autocast exists there too):
- ResNet50 train step, bf16 autocast + channels_last vs float32: step-0 loss within 1% (8 images,
  32 px), 0.14% (16 images, 64 px, the GPU variant's batch); asserted within 5%. BatchNorm over
  very few values per channel amplifies bf16 rounding (4 images at 32 px: 70% off). On 16 images
  at 64 px five updates took the loss from 2.0 to 0.002 (asserted: below a quarter).
- Similarity of float32 inputs vs float64: the core computes in float64, so only the rounding of
  the inputs shows: <= 3e-10 on the mean CCA / CKA, <= 2e-8 on single canonical correlations
  (asserted: 1e-8, 1e-7); with ``precision="float32"`` products 3e-8 and 4e-7 (asserted: 1e-6, 1e-5).
- Augmentation: float64 sampling equals the CPU to float32 rounding (asserted 1e-4 on 0..255);
  float32 sampling within 5e-3 of it on the CPU (asserted 1e-2 on the device).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from medtransfer.data import KerasAugment
from medtransfer.models import (
    Normalization,
    ResNet50,
    keras_init_,
    load_checkpoint,
    save_checkpoint,
)
from medtransfer.similarity import cca, layer_similarity, linear_cka
from medtransfer.training.loop import StepSetup, train_epoch
from medtransfer.training.optim import KerasAdam

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DEVICES = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=needs_cuda)]


# -- ResNet50 training step: bf16 autocast + channels_last against float32 on the CPU ---------------

# images, pixels, steps and the loss ratio asserted after steps - 1 updates (lr 1e-4, one batch).
# One update is not enough to assert a fall: the first Adam step moves every weight by ~lr, and a
# random batch-normalised ResNet50 in bf16 answers chaotically - measured on the CPU, the loss
# before and after one update was 1.226 -> 1.228 with 1 torch thread and 1.410 -> 1.837 with 2
# (bf16 reductions depend on the thread count, which other tests change). Over 4 updates it falls
# to 0.22x (1 thread) and 0.06x (2 threads) of the start, float32 to 0.02x: 0.5 leaves 2x margin.
TRAIN_SETTINGS = {"cpu": (8, 32, 5, 0.5), "cuda": (16, 64, 6, 0.25)}


def train_losses(model: ResNet50, pixels: torch.Tensor, labels: torch.Tensor, steps: int,
                 amp: torch.dtype | None, channels_last: bool) -> tuple[list[float], ResNet50]:
    """Losses of ``steps`` training steps on one fixed batch through the real epoch loop (one
    batch per epoch), each the loss before that step's update; and the trained model."""
    device = pixels.device
    model = copy.deepcopy(model).to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    model.train()
    optimizer = KerasAdam(model.parameters(), lr=1e-4)
    setup = StepSetup(Normalization("caffe"), None, amp, channels_last)
    shuffle = torch.Generator().manual_seed(1)
    rows = torch.arange(len(labels), device=device)
    return [train_epoch(model, optimizer, pixels, labels, rows, len(labels), setup, shuffle, None)[0]
            for _ in range(steps)], model


#: Layers compared between bf16 + channels_last on the device and float32 on the CPU. Deeper
#: layers of a randomly initialised, batch-normalised ResNet are chaotic: bf16 rounding (4e-3)
#: grows by about 1.6x per block (measured 0.3%, 1.1%, 1.9%, 3.2% at conv1, conv2_block1, _block3,
#: conv3_block1), and the loss itself moves by 10% under 1e-2 weight noise, so it is not compared.
EARLY_LAYERS = ("conv1_relu", "conv2_block1_out")


@pytest.fixture
def one_cpu_thread():
    """torch's CPU thread count pinned to 1 for the test (restored after): CPU results in bf16
    depend on it, and earlier tests leave it at any value."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
def test_bf16_channels_last_training_matches_float32_and_learns(device, one_cpu_thread):
    n, size, steps, ratio = TRAIN_SETTINGS[device]
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (n, 3, size, size), generator=generator, dtype=torch.uint8)
    labels = torch.arange(n) % 2
    model = keras_init_(ResNet50(2, dropout=0.0), seed=0).train()  # no dropout: the same function on any device
    reference = _features(model, pixels, None, False)  # CPU, float32, contiguous
    on_device = _features(model, pixels.to(device), torch.bfloat16, True)
    for name in EARLY_LAYERS:
        assert on_device[name].dtype == torch.bfloat16  # autocast really ran in bf16 on this device
        error = float((on_device[name].float().cpu() - reference[name]).norm() / reference[name].norm())
        assert error < 4e-2, (name, error)
    losses, trained = train_losses(model, pixels.to(device), labels.to(device), steps, torch.bfloat16, True)
    assert all(math.isfinite(v) for v in losses), losses
    assert losses[-1] < ratio * losses[0], losses
    weight = trained.conv1.weight
    assert weight.device.type == device and weight.is_contiguous(memory_format=torch.channels_last)


def _features(model: ResNet50, pixels: torch.Tensor, amp: torch.dtype | None, channels_last: bool):
    """EARLY_LAYERS of a copy of ``model`` on ``pixels``' device, in train mode (batch statistics)."""
    memory = torch.channels_last if channels_last else torch.contiguous_format
    copied = copy.deepcopy(model).to(pixels.device, memory_format=memory)
    setup = StepSetup(Normalization("caffe"), None, amp, channels_last)
    with torch.no_grad(), setup.autocast(pixels.device):
        return copied.features(setup.prepare(pixels, None), EARLY_LAYERS)


# -- KerasAdam: the same update on every device, equal to Keras' formula ----------------------------

def keras_adam_reference(w0: np.ndarray, grads: list[np.ndarray], lr: float, b1: float = 0.9,
                         b2: float = 0.999, eps: float = 1e-7) -> np.ndarray:
    """Keras' Adam in float64 numpy: epsilon added to the uncorrected sqrt(v)."""
    w, m, v = w0.copy(), np.zeros_like(w0), np.zeros_like(w0)
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        w = w - lr * math.sqrt(1 - b2**t) / (1 - b1**t) * m / (np.sqrt(v) + eps)
    return w


@pytest.mark.parametrize("fused", [None, True], ids=["default", "fused"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("device", DEVICES)
def test_keras_adam_update_is_the_same_on_every_device(device, dtype, fused):
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((6, 5))
    # gradients of very different scales: at 1e-7 Keras' epsilon convention changes the step
    scales = np.logspace(-8, 0, 5)
    grads = [rng.standard_normal((6, 5)) * scales for _ in range(4)]
    expected = keras_adam_reference(w0, grads, lr=1e-2)
    param = torch.nn.Parameter(torch.tensor(w0, dtype=dtype, device=device))
    optimizer = KerasAdam([param], lr=1e-2, fused=fused)
    for g in grads:
        param.grad = torch.tensor(g, dtype=dtype, device=device)
        optimizer.step()
    got = param.detach().cpu().double().numpy()
    atol = 1e-12 if dtype == torch.float64 else 2e-6
    np.testing.assert_allclose(got, expected, rtol=0, atol=atol)
    plain = torch.nn.Parameter(torch.tensor(w0))  # torch's epsilon convention differs measurably
    plain_optimizer = torch.optim.Adam([plain], lr=1e-2, eps=1e-7)
    for g in grads:
        plain.grad = torch.tensor(g)
        plain_optimizer.step()
    assert np.max(np.abs(plain.detach().numpy() - expected)) > 1e-3


# -- Augmentation: the same warp on the device as on the CPU ----------------------------------------

@pytest.mark.parametrize("device", DEVICES)
def test_augmentation_on_the_device_equals_the_cpu(device):
    generator = torch.Generator().manual_seed(3)
    x = torch.randint(0, 256, (6, 3, 40, 56), generator=generator, dtype=torch.uint8)
    for aug in (KerasAugment(), KerasAugment(rotation=40, shift=0.3, shear=20, zoom=0.4)):
        params = aug.sample(6, 40, 56, generator)  # CPU parameters, applied on both devices
        on_cpu = aug.apply(x, params)
        on_device = aug.apply(x.to(device), params.to(device))
        assert on_device.device.type == device and on_device.dtype == torch.float32
        torch.testing.assert_close(on_device.cpu(), on_cpu, atol=1e-4, rtol=0)
        torch.testing.assert_close(aug.apply(x.double().to(device), params).cpu(), aug.apply(x.double(), params),
                                   atol=1e-9, rtol=0)
        fast = KerasAugment(aug.rotation, aug.shift, aug.shear, aug.zoom, aug.hflip, precise=False)
        torch.testing.assert_close(fast.apply(x.to(device), params).cpu(), on_cpu, atol=1e-2, rtol=0)
    # the random call draws on the generator's device and equals sample + apply there
    aug = KerasAugment()
    drawn = aug(x.to(device), torch.Generator(device=device).manual_seed(7))
    params = aug.sample(6, 40, 56, torch.Generator(device=device).manual_seed(7))
    assert params.theta.device.type == device
    torch.testing.assert_close(drawn, aug.apply(x.to(device), params), atol=0, rtol=0)
    assert drawn.min() >= 0 and drawn.max() <= 255


# -- Checkpoints: written from the device, read on the CPU -------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
def test_checkpoint_from_the_device_loads_on_the_cpu(device, tmp_path):
    model = ResNet50(3).to(device, memory_format=torch.channels_last)
    generator = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():  # move every weight and statistic away from its initial value
        for tensor in list(model.parameters()) + [b for b in model.buffers() if b.is_floating_point()]:
            tensor.add_(torch.rand(tensor.shape, generator=generator, device=device, dtype=tensor.dtype))
    model.bn1.num_batches_tracked.fill_(17)
    path = save_checkpoint(tmp_path / "model.pt", model, {"normalization": "caffe", "classes": ["a", "b", "c"]})
    loaded, meta = load_checkpoint(path)
    assert meta["classes"] == ["a", "b", "c"] and meta["normalization"] == "caffe"
    assert loaded.num_classes == 3 and not loaded.training
    ours, theirs = model.state_dict(), loaded.state_dict()
    assert list(ours) == list(theirs)
    for name, tensor in theirs.items():
        assert tensor.device.type == "cpu", name
        assert torch.equal(tensor, ours[name].cpu()), name
    back, _ = load_checkpoint(path, map_location=device)
    assert back.conv1.weight.device.type == device
    assert torch.equal(back.head[1].weight, model.head[1].weight)


# -- Similarity: float32 tensors on the device against float64 on the CPU ----------------------------

def related(seed: int, n: int = 5000, p: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Neurons of different scales and offsets; y a noisy linear map of x."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, p)) * rng.uniform(0.1, 10, p) + rng.uniform(-5, 5, p)
    return x, x @ rng.standard_normal((p, p)) / np.sqrt(p) + rng.standard_normal((n, p))


@pytest.mark.parametrize("device", DEVICES)
def test_similarity_of_float32_device_tensors_matches_float64(device):
    x, y = related(0)
    tx, ty = (torch.from_numpy(a).to(device=device, dtype=torch.float32) for a in (x, y))
    exact = cca(x, y)
    got = cca(tx, ty)
    assert 0.5 < exact.mean < 0.99  # a non-trivial relation
    assert abs(got.mean - exact.mean) < 1e-8
    assert np.max(np.abs(got.rho - exact.rho)) < 1e-7
    # the same float32 values: float64 arithmetic on the device equals the CPU's
    x32, y32 = x.astype(np.float32), y.astype(np.float32)
    assert abs(got.mean - cca(x32, y32).mean) < 1e-10
    # float32 products (for GPUs with slow float64): measured on the CPU 3e-8 (mean), 4e-7 (rho)
    fast = cca(tx, ty, precision="float32")
    assert abs(fast.mean - exact.mean) < 1e-6
    assert np.max(np.abs(fast.rho - exact.rho)) < 1e-5
    for debiased in (False, True):
        assert abs(linear_cka(tx, ty, debiased=debiased) - linear_cka(x, y, debiased=debiased)) < 1e-8
    rng = np.random.default_rng(1)
    a = rng.standard_normal((120, 32, 6, 6))
    b = np.maximum(a, 0) + 0.1 * rng.standard_normal(a.shape)
    ta, tb = (torch.from_numpy(v).to(device=device, dtype=torch.float32) for v in (a, b))
    for measure in ("cca", "cka"):
        on_device = layer_similarity(ta, tb, measure, rows=2000, channels=16, repeats=2)
        expected = layer_similarity(a, b, measure, rows=2000, channels=16, repeats=2)
        assert on_device.rows == expected.rows and on_device.channels == expected.channels
        np.testing.assert_allclose(on_device.values, expected.values, rtol=0, atol=1e-8)


@pytest.mark.parametrize("device", DEVICES)
def test_cca_with_many_neurons_on_the_device_matches_numpy(device):
    """Above MIN_DEVICE_ALGEBRA_SIZE neurons the Cholesky and eigenvalue steps run on a CUDA device
    (measured on an H200 at 50000 x 2048: 6.5e-13 from the CPU result)."""
    from medtransfer.similarity.canonical import MIN_DEVICE_ALGEBRA_SIZE

    x, y = related(2, n=3000, p=MIN_DEVICE_ALGEBRA_SIZE + 20)
    exact = cca(x, y)
    got = cca(torch.from_numpy(x).to(device), torch.from_numpy(y).to(device))
    assert got.method == exact.method == "cholesky"
    np.testing.assert_allclose(got.rho, exact.rho, rtol=0, atol=1e-10)

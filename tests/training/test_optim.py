"""KerasAdam reproduces Keras' Adam update rule (written out from Keras' source) exactly."""

import numpy as np
import torch

from medtransfer.training.optim import KerasAdam


def keras_adam_reference(w0, grads, lr, b1, b2, eps):
    """Keras 3 `Adam.update_step`, in numpy float64."""
    w, m, v = w0.copy(), np.zeros_like(w0), np.zeros_like(w0)
    for t, g in enumerate(grads, start=1):
        alpha = lr * np.sqrt(1 - b2**t) / (1 - b1**t)
        m += (g - m) * (1 - b1)
        v += (g * g - v) * (1 - b2)
        w -= alpha * m / (np.sqrt(v) + eps)
    return w


def test_matches_keras_rule_including_epsilon_and_state_roundtrip():
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal(20)
    # tiny gradients make epsilon matter: PyTorch's plain Adam differs here
    grads = [1e-7 * rng.standard_normal(20) for _ in range(12)]
    ref = keras_adam_reference(w0, grads, 1e-3, 0.9, 0.999, 1e-7)

    w = torch.tensor(w0, dtype=torch.float64, requires_grad=True)
    opt = KerasAdam([w], lr=1e-3)
    for i, g in enumerate(grads):
        if i == 6:  # save and restore half-way, as a resumed run does
            state = opt.state_dict()
            opt = KerasAdam([w], lr=1e-3)
            opt.load_state_dict(state)
        w.grad = torch.tensor(g)
        opt.step()
    np.testing.assert_allclose(w.detach().numpy(), ref, rtol=1e-10, atol=1e-14)

    plain = torch.tensor(w0, dtype=torch.float64, requires_grad=True)
    popt = torch.optim.Adam([plain], lr=1e-3, eps=1e-7)
    for g in grads:
        plain.grad = torch.tensor(g)
        popt.step()
    assert np.abs(plain.detach().numpy() - ref).max() > 1e-6


def test_fused_kernel_is_the_default_on_a_cpu_and_gives_keras_update():
    """The fused kernel is chosen for CPU float parameters and follows the same Keras rule."""
    rng = np.random.default_rng(1)
    w0 = rng.standard_normal(30).astype(np.float32)
    grads = [(rng.standard_normal(30) * s).astype(np.float32) for s in np.logspace(-8, 0, 6)]
    ref = keras_adam_reference(w0.astype(np.float64), [g.astype(np.float64) for g in grads], 1e-3, 0.9, 0.999, 1e-7)
    w = torch.nn.Parameter(torch.tensor(w0))
    opt = KerasAdam([{"params": [w]}], lr=1e-3)
    assert opt.param_groups[0]["fused"] is True
    for g in grads:
        w.grad = torch.tensor(g)
        opt.step()
    np.testing.assert_allclose(w.detach().double().numpy(), ref, rtol=0, atol=2e-6)
    assert KerasAdam([torch.nn.Parameter(torch.zeros(3))], foreach=True).param_groups[0]["fused"] in (None, False)

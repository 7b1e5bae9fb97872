import numpy as np
import pytest
import torch

from medtransfer.analysis.activations import ForwardLog, Network, plan_sampling, sample_activations


class CountingNet:
    """features: 'wide' = a fixed 1x1 conv to 12 channels, 'pooled' = its 2x2 average pool."""

    def __init__(self, seed):
        g = torch.Generator().manual_seed(seed)
        self.weight = torch.randn(12, 3, 1, 1, generator=g)
        self.seen = 0

    def features(self, x, names):
        self.seen += len(x)
        wide = torch.nn.functional.conv2d(x, self.weight).relu()
        out = {"wide": wide, "pooled": torch.nn.functional.avg_pool2d(wide, 2)}
        return {n: out[n] for n in names}


def reference(net, pool, plan):
    x = torch.from_numpy(pool).permute(0, 3, 1, 2).float() / 255
    full = net.features(x, list(plan.layers))
    out = {}
    for name, p in plan.layers.items():
        out[name] = [full[name][img][:, ch].permute(0, 2, 3, 1).reshape(-1, len(ch)).numpy()
                     for img, ch in zip(p.images, p.channels)]
    return out


@pytest.fixture
def pool():
    return np.random.default_rng(0).integers(0, 256, size=(50, 8, 8, 3), dtype=np.uint8)


def test_plan_draws_rows_and_channels_as_the_protocol_says():
    plan = plan_sampling(100, {"big": (64, 56, 56), "small": (2048, 4, 4)}, rows=20000, channels=64, repeats=5, seed=3)
    big, small = plan.layers["big"], plan.layers["small"]
    assert len(big.images) == 5 and all(len(i) == 6 for i in big.images)  # round(20000 / 3136)
    assert all(len(i) == 100 for i in small.images)  # capped at the pool
    assert all(len(c) == 64 and len(set(c)) == 64 for c in small.channels)
    assert not all(np.array_equal(small.channels[0], c) for c in small.channels[1:])
    assert big.rows == 6 * 56 * 56
    again = plan_sampling(100, {"big": (64, 56, 56), "small": (2048, 4, 4)}, rows=20000, channels=64, repeats=5, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(small.channels, again.layers["small"].channels))
    assert plan.nbytes(2) == 2 * 4 * 5 * (6 * 3136 * 64 + 100 * 16 * 64)


@pytest.mark.parametrize("batch_size", [1, 7, 64])
def test_sampled_rows_equal_those_of_the_full_activations_and_each_image_runs_once(pool, batch_size):
    plan = plan_sampling(len(pool), {"wide": (12, 8, 8), "pooled": (12, 4, 4)}, rows=200, channels=5, repeats=3, seed=1)
    net = CountingNet(0)
    log = ForwardLog()
    got = sample_activations(Network(net.features, lambda x: x / 255), pool, plan, batch_size, log=log, key="n")
    assert net.seen == len(plan.images) < len(pool)  # only the needed images, each once
    assert log.passes == {"n": 1} and log.images == {"n": len(plan.images)}
    want = reference(CountingNet(0), pool, plan)
    for name in plan.layers:
        for g, w in zip(got[name], want[name]):
            assert g.dtype == np.float32 and g.shape == w.shape
            np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)


def test_pool_size_must_match_the_plan(pool):
    plan = plan_sampling(10, {"wide": (12, 8, 8)}, rows=64, channels=4, repeats=1)
    with pytest.raises(ValueError, match="pool holds 50"):
        sample_activations(Network(CountingNet(0).features, lambda x: x), pool, plan)
    with pytest.raises(ValueError, match="empty"):
        plan_sampling(0, {"wide": (12, 8, 8)})

"""RSA and k-NN on the inputs the paper's defaults produce: all-zero rows (sparse ReLU layers)
and more rows than the n x n measures take (the layer protocol subsamples whole images)."""

from __future__ import annotations

import numpy as np
import pytest

from medtransfer.similarity import knn_jaccard, layer_similarity, mutual_knn, rsa, score_repeats
from medtransfer.similarity.sampling import limit_rows


def reference_rdm(a):
    """Correlation distances by the definition, pair by pair (constant rows: module notes)."""
    n = len(a)
    out = []
    for i in range(n):
        for j in range(i + 1, n):
            ci, cj = a[i] - a[i].mean(), a[j] - a[j].mean()
            ni, nj = np.linalg.norm(ci), np.linalg.norm(cj)
            if ni == 0 and nj == 0:
                r = 1.0
            elif ni == 0 or nj == 0:
                r = 0.0
            else:
                r = ci @ cj / (ni * nj)
            out.append(1.0 - r)
    return np.array(out)


def sparse_relu(rng, n=60, p=12, zero_rows=20):
    a = np.maximum(rng.standard_normal((n, p)), 0.0)
    a[rng.choice(n, zero_rows, replace=False)] = 0.0
    return a


def test_rsa_is_defined_for_all_zero_rows_as_documented():
    rng = np.random.default_rng(0)
    x, y = sparse_relu(rng), sparse_relu(rng)
    for method in ("pearson", "spearman"):
        got = rsa(x, y, method)
        dx, dy = reference_rdm(x), reference_rdm(y)
        if method == "spearman":
            from scipy.stats import spearmanr

            expected = spearmanr(dx, dy).statistic
        else:
            expected = np.corrcoef(dx, dy)[0, 1]
        assert got == pytest.approx(expected, abs=1e-12)
    # still invariant to per-row scale and offset with constant rows present
    scale = rng.uniform(0.5, 2.0, (60, 1))
    assert rsa(x * scale + rng.standard_normal((60, 1)), y) == pytest.approx(rsa(x, y), abs=1e-12)


def test_knn_is_defined_for_all_zero_rows_as_documented():
    rng = np.random.default_rng(1)
    x, y = sparse_relu(rng), sparse_relu(rng)
    k = 5

    def neighbours(a):
        norms = np.linalg.norm(a, axis=1)
        out = []
        for i in range(len(a)):
            sims = []
            for j in range(len(a)):
                if j == i:
                    continue
                if norms[i] == 0 or norms[j] == 0:
                    s = 1.0 if norms[i] == norms[j] == 0 else 0.0
                else:
                    s = a[i] @ a[j] / (norms[i] * norms[j])
                sims.append((-s, j))
            out.append({j for _, j in sorted(sims)[:k]})
        return out

    shared = np.array([len(a & b) for a, b in zip(neighbours(x), neighbours(y))])
    assert mutual_knn(x, y, k) == pytest.approx(shared.mean() / k, abs=1e-12)
    assert knn_jaccard(x, y, k) == pytest.approx(np.mean(shared / (2 * k - shared)), abs=1e-12)
    assert mutual_knn(x * rng.uniform(0.5, 2, (60, 1)), y, k) == pytest.approx(mutual_knn(x, y, k), abs=1e-12)


def test_limit_rows_keeps_whole_images_and_shared_positions():
    m, k = 40, 6
    code = (np.arange(m)[:, None] * 100 + np.arange(k)[None, :]).reshape(-1, 1).astype(float)  # image*100 + position
    xs, ys, images = [code, code + 0.5], [code, code], [np.arange(m), np.arange(m) + 100]
    out_x, out_y, out_i, kk = limit_rows(xs, ys, images, k, 100, np.random.default_rng(0))
    assert kk == k
    for x, y, img in zip(out_x, out_y, out_i):
        assert x.shape[0] == 16 * k and y.shape[0] == x.shape[0] == 16 * k  # 100 // 6 images
        blocks = np.floor(x[:, 0]).reshape(16, k)
        assert (blocks // 100 == blocks[:, :1] // 100).all() and (blocks % 100 == np.arange(k)).all()
        assert len(img) == 16 and np.all(np.diff(img) > 0)
    assert (out_i[1] >= 100).all()
    # one image alone above the limit: positions drawn, the same on both sides
    _, _, _, kk = limit_rows([code[:k]], [code[:k]], [np.arange(1)], k, 4, np.random.default_rng(0))
    assert kk == 4


@pytest.mark.parametrize("name", ["rsa_spearman", "mutual_knn"])
def test_layer_protocol_subsamples_images_above_the_row_limit(name, monkeypatch):
    """Paper sampling asks for more rows than the n x n measures take: whole images are
    subsampled, the score is finite and is that of the kept images' rows."""
    import medtransfer.similarity.registry as registry

    spec = registry.MEASURES[name]
    monkeypatch.setitem(registry.MEASURES, name, type(spec)(**{**spec.__dict__, "max_rows": 300}))
    rng = np.random.default_rng(2)
    acts = np.maximum(rng.standard_normal((120, 8, 4, 4)), 0.0)
    acts[:10] = 0.0  # whole images of zeros too
    other = acts + 0.3 * rng.standard_normal(acts.shape)
    result = layer_similarity(acts, other, name, rows=1600, channels=8, repeats=2, permutations=5)
    assert result.images == 300 // 16 and result.rows == (300 // 16) * 16
    assert np.isfinite(result.mean) and np.isfinite(result.p_value)
    direct = score_repeats([acts.transpose(0, 2, 3, 1).reshape(-1, 8)[: 100 * 16]],
                           [other.transpose(0, 2, 3, 1).reshape(-1, 8)[: 100 * 16]], [np.arange(100)], 16, name, seed=3)
    assert direct.images == 18 and np.isfinite(direct.mean)

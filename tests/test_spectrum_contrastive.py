"""Alignment, uniformity and tolerance against brute-force pair loops and known orderings."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from workbench.spectrum import alignment, tolerance, uniformity


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def ref_uniformity(z, t):
    """log of the mean of exp(-t d^2) over all pairs i < j, accumulated in log space."""
    acc, count = -np.inf, 0
    for i in range(len(z)):
        for j in range(i + 1, len(z)):
            acc = np.logaddexp(acc, -t * np.sum((z[i] - z[j]) ** 2))
            count += 1
    return acc - math.log(count)


def ref_tolerance(z, y):
    sims = [z[i] @ z[j] for i in range(len(z)) for j in range(len(z)) if i != j and y[i] == y[j]]
    return float(np.mean(sims))


def test_alignment_against_loop():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((40, 6)) * 3
    b = a + 0.5 * rng.standard_normal((40, 6))
    ua, ub = unit(a), unit(b)
    for alpha in (2.0, 1.0, 0.5):
        ref = np.mean([np.linalg.norm(ua[i] - ub[i]) ** alpha for i in range(40)])
        assert alignment(a, b, alpha=alpha) == pytest.approx(ref, rel=1e-12)
    raw = np.mean([np.sum((a[i] - b[i]) ** 2) for i in range(40)])
    assert alignment(a, b, normalize=False) == pytest.approx(raw, rel=1e-12)
    assert alignment(a, 2.0 * a) == pytest.approx(0.0, abs=1e-24)  # same direction
    assert alignment(a, -a) == pytest.approx(4.0)  # antipodal: maximum 2^alpha


@pytest.mark.parametrize("t", [2.0, 0.5, 40.0])
def test_uniformity_against_pair_loop(t):
    rng = np.random.default_rng(1)
    z = rng.standard_normal((25, 5)) + 0.4
    ref = ref_uniformity(unit(z), t)
    assert uniformity(z, t=t) == pytest.approx(ref, rel=1e-10)
    assert uniformity(z, t=t, block_size=4) == pytest.approx(ref, rel=1e-10)  # several blocks
    assert uniformity(z, t=t, block_size=1) == pytest.approx(ref, rel=1e-10)
    assert uniformity(z, t=t, normalize=False) == pytest.approx(ref_uniformity(z, t), rel=1e-9)


def test_uniformity_stable_for_large_t():
    """exp(-t d^2) underflows in float64 for t = 500, the streamed log-sum-exp does not."""
    rng = np.random.default_rng(2)
    z = rng.standard_normal((30, 4))
    ref = ref_uniformity(unit(z), 500.0)
    got = uniformity(z, t=500.0, block_size=7)
    assert np.isfinite(got) and got == pytest.approx(ref, rel=1e-10)
    naive = np.log(np.mean([np.exp(-500.0 * np.sum((a - b) ** 2))
                            for i, a in enumerate(unit(z)) for b in unit(z)[i + 1:]]))
    assert not np.isfinite(naive) or naive == pytest.approx(ref, rel=1e-6)


def test_uniformity_orders_spread_vs_clustered():
    rng = np.random.default_rng(3)
    spread = rng.standard_normal((400, 3))  # uniform on the sphere after normalization
    centers = unit(rng.standard_normal((3, 3)))
    clustered = centers[rng.integers(0, 3, 400)] + 0.1 * rng.standard_normal((400, 3))
    u_spread, u_clustered = uniformity(spread), uniformity(clustered)
    assert u_spread < u_clustered - 0.3
    # uniform measure on S^2: cos(angle) ~ U[-1, 1], so E exp(-t ||x-y||^2) = (1 - e^-4t) / (4t); t = 2
    assert u_spread == pytest.approx(math.log((1 - math.exp(-8)) / 8), abs=0.05)
    assert uniformity(np.ones((5, 3))) == pytest.approx(0.0, abs=1e-12)  # all points coincide
    assert uniformity(np.array([[1.0, 0.0], [-1.0, 0.0]])) == pytest.approx(-8.0)  # antipodal: -4t


def test_tolerance_against_loop():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 5, 60)
    z = rng.standard_normal((60, 8)) + 2.0 * rng.standard_normal((5, 8))[y]
    assert tolerance(z, y) == pytest.approx(ref_tolerance(unit(z), y), rel=1e-10)
    assert tolerance(z, y, normalize=False) == pytest.approx(ref_tolerance(z, y), rel=1e-10)
    single = np.r_[y, 99]  # a singleton class contributes no pair
    zs = np.vstack([z, rng.standard_normal(8)])
    assert tolerance(zs, single) == pytest.approx(tolerance(z, y), rel=1e-12)
    # self-pairs are excluded: two orthogonal samples of one class have tolerance 0, collapsed classes 1
    assert tolerance(np.eye(2), [0, 0]) == pytest.approx(0.0, abs=1e-15)
    assert tolerance(np.repeat(rng.standard_normal((3, 4)), 5, axis=0), np.repeat([0, 1, 2], 5)) == pytest.approx(1.0)


def test_torch_input_and_errors():
    rng = np.random.default_rng(5)
    z = rng.standard_normal((20, 4))
    t = torch.as_tensor(z, dtype=torch.float32)
    assert uniformity(t) == pytest.approx(ref_uniformity(unit(t.double().numpy()), 2.0), rel=1e-9)
    with pytest.raises(ValueError, match="same shape"):
        alignment(z, z[:-1])
    zero = z.copy()
    zero[3] = 0.0
    with pytest.raises(ValueError, match="all-zero row"):
        uniformity(zero)
    with pytest.raises(ValueError, match="at least 2 samples"):
        uniformity(z[:1])
    with pytest.raises(ValueError, match="t must be a number > 0"):
        uniformity(z, t=0.0)
    with pytest.raises(ValueError, match="block_size"):
        uniformity(z, block_size=0)
    with pytest.raises(ValueError, match="alpha"):
        alignment(z, z, alpha=-1.0)
    with pytest.raises(ValueError, match="2 or more samples"):
        tolerance(z, np.arange(20))
    with pytest.raises(ValueError, match="mismatched"):
        tolerance(z, np.zeros(19, int))
    with pytest.raises(ValueError, match="NaN/Inf"):
        tolerance(np.where(z > 1, np.nan, z), np.zeros(20, int))

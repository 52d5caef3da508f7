"""Spectrum measures against explicit numpy/scipy computations and known closed-form cases."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import entropy

from workbench.spectrum import effective_rank, layer_spectrum_table, participation_ratio, rankme, spectrum


def np_rankme(z, eps=1e-7):
    s = np.linalg.svd(np.asarray(z, dtype=np.float64), compute_uv=False)
    p = s / np.abs(s).sum() + eps
    return float(np.exp(-np.sum(p * np.log(p))))


def np_cov_eigs(z):
    return np.clip(np.linalg.eigvalsh(np.cov(np.asarray(z, dtype=np.float64), rowvar=False)), 0, None)


def rank_k(n, d, k, rng, scale=3.0):
    """Data with exactly k equal non-zero singular values (centered, so both definitions see the same k)."""
    u, _ = np.linalg.qr(rng.standard_normal((n, k)))
    u -= u.mean(0)
    u, _ = np.linalg.qr(u)  # columns orthonormal and orthogonal to the ones vector
    v, _ = np.linalg.qr(rng.standard_normal((d, k)))
    return scale * u @ v.T


@pytest.fixture(scope="module")
def iso():
    return np.random.default_rng(0).standard_normal((4000, 24))


def test_isotropic_close_to_d(iso):
    d = iso.shape[1]
    assert rankme(iso) == pytest.approx(d, rel=0.03)
    assert effective_rank(iso) == pytest.approx(d, rel=0.03)
    assert participation_ratio(iso) == pytest.approx(d, rel=0.05)


@pytest.mark.parametrize("k", [1, 3, 7])
def test_rank_k(k):
    z = rank_k(200, 30, k, np.random.default_rng(k))
    # equal singular values: exactly k, plus the eps terms of RankMe (each <= -eps log eps)
    assert rankme(z) == pytest.approx(k, abs=1e-3)
    assert rankme(z, eps=0.0) == pytest.approx(k, abs=1e-6)
    assert effective_rank(z) == pytest.approx(k, abs=1e-6)
    assert participation_ratio(z) == pytest.approx(k, abs=1e-6)


def test_against_explicit_numpy():
    rng = np.random.default_rng(1)
    z = rng.standard_normal((120, 15)) @ np.diag(np.linspace(0.1, 3, 15)) + 2.0
    assert rankme(z) == pytest.approx(np_rankme(z), rel=1e-12)
    assert rankme(z, eps=0.0) == pytest.approx(np.exp(entropy(np.linalg.svd(z, compute_uv=False))), rel=1e-12)
    lam = np_cov_eigs(z)
    assert effective_rank(z) == pytest.approx(np.exp(entropy(lam)), rel=1e-10)
    assert participation_ratio(z) == pytest.approx(lam.sum() ** 2 / (lam ** 2).sum(), rel=1e-10)
    # graded spectrum: Renyi-2 < Shannon
    assert participation_ratio(z) < effective_rank(z)


def test_rankme_is_uncentered_effective_rank_is_not():
    rng = np.random.default_rng(2)
    z = rng.standard_normal((500, 10))
    shifted = z + 50.0  # a large common mean direction
    assert effective_rank(shifted) == pytest.approx(effective_rank(z), rel=1e-9)
    assert rankme(shifted) < 0.5 * rankme(z)


def test_spectrum_values():
    rng = np.random.default_rng(3)
    z = rng.standard_normal((80, 12)) * np.arange(1, 13) + 1.5
    s = spectrum(z)
    assert isinstance(s, np.ndarray) and s.shape == (12,)
    np.testing.assert_allclose(s, np.sort(np.linalg.eigvalsh(np.cov(z, rowvar=False)))[::-1], rtol=1e-10)
    assert np.all(np.diff(s) <= 0)
    s_raw = spectrum(z, centered=False)
    np.testing.assert_allclose(s_raw, np.sort(np.linalg.eigvalsh(z.T @ z / len(z)))[::-1], rtol=1e-10)
    wide = rng.standard_normal((10, 40))
    assert spectrum(wide).shape == (10,)
    np.testing.assert_allclose(spectrum(wide), np.sort(np.linalg.eigvalsh(np.cov(wide, rowvar=False)))[::-1][:10],
                               rtol=1e-9, atol=1e-12)


def test_torch_input(iso):
    t = torch.as_tensor(iso[:300], dtype=torch.float32)
    assert rankme(t) == pytest.approx(np_rankme(t.numpy()), rel=1e-6)
    assert effective_rank(t) == pytest.approx(np.exp(entropy(np_cov_eigs(t.numpy()))), rel=1e-6)
    assert isinstance(spectrum(t), np.ndarray)


def test_layer_spectrum_table():
    rng = np.random.default_rng(4)
    acts = {"embed": rng.standard_normal((100, 8)), "head": rank_k(100, 20, 2, rng)}
    df = layer_spectrum_table(acts)
    assert list(df.columns) == ["layer", "index", "measure", "value"]
    assert len(df) == 4 and set(df.measure) == {"rankme", "effective_rank"}
    for row in df.itertuples():
        z = acts[row.layer]
        assert row.index == list(acts).index(row.layer)
        ref = np_rankme(z) if row.measure == "rankme" else np.exp(entropy(np_cov_eigs(z)))
        assert row.value == pytest.approx(ref, rel=1e-8)
    pr = layer_spectrum_table(acts, measures="participation_ratio")
    assert list(pr.measure) == ["participation_ratio"] * 2
    assert pr.value.iloc[1] == pytest.approx(2.0, abs=1e-6)


def test_errors():
    rng = np.random.default_rng(5)
    z = rng.standard_normal((20, 4))
    bad = z.copy()
    bad[0, 0] = np.inf
    with pytest.raises(ValueError, match="NaN/Inf"):
        rankme(bad)
    with pytest.raises(ValueError, match="2-D"):
        effective_rank(z[:, 0])
    with pytest.raises(ValueError, match="constant"):
        effective_rank(np.full((10, 3), 2.0))
    with pytest.raises(ValueError, match="all zeros"):
        rankme(np.zeros((10, 3)))
    with pytest.raises(ValueError, match="at least 2 samples"):
        effective_rank(z[:1])
    with pytest.raises(ValueError, match="measures"):
        layer_spectrum_table({"a": z}, measures=("rankme", "entropy"))
    with pytest.raises(TypeError, match="mapping"):
        layer_spectrum_table(z)
    with pytest.raises(ValueError, match=r"acts\['b'\] contains"):
        layer_spectrum_table({"a": z, "b": bad})
    with pytest.raises(ValueError, match="eps"):
        rankme(z, eps=-1.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(iso):
    t = torch.as_tensor(iso, device="cuda")
    assert rankme(t) == pytest.approx(rankme(iso), rel=1e-9)
    assert effective_rank(t) == pytest.approx(effective_rank(iso), rel=1e-9)
    np.testing.assert_allclose(spectrum(t), spectrum(iso), rtol=1e-9)

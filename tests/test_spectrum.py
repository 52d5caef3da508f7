"""Spectrum measures against explicit numpy/scipy computations and known closed-form cases."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import entropy

from workbench.activations import Activations
from workbench.results import COLUMNS, check_tidy
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
    assert list(df.columns) == list(COLUMNS)
    check_tidy(df, "layer_spectrum_table")
    assert df[["run", "step", "split", "ci_low", "ci_high"]].isna().all().all()
    assert len(df) == 4 and set(df.measure) == {"rankme", "effective_rank"}
    for row in df.itertuples():
        z = acts[row.layer]
        assert row.layer_index == list(acts).index(row.layer)
        ref = np_rankme(z) if row.measure == "rankme" else np.exp(entropy(np_cov_eigs(z)))
        assert row.value == pytest.approx(ref, rel=1e-8)
    pr = layer_spectrum_table(acts, measures="participation_ratio")
    assert list(pr.measure) == ["participation_ratio"] * 2
    assert pr.value.iloc[1] == pytest.approx(2.0, abs=1e-6)
    # one array is the one layer "features"; a tensor or an Activations gives the same values
    single = layer_spectrum_table(acts["head"], measures="rankme")
    assert single[["layer", "layer_index"]].values.tolist() == [["features", 0]]
    assert single.value.iloc[0] == pytest.approx(np_rankme(acts["head"]), rel=1e-8)
    wrapped = layer_spectrum_table(Activations({k: torch.as_tensor(v) for k, v in acts.items()}))
    np.testing.assert_allclose(wrapped.value, df.value, rtol=1e-12)


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
    with pytest.raises(TypeError, match="x must be an array, a tensor, an Activations or a mapping"):
        layer_spectrum_table("z")
    with pytest.raises(ValueError, match="x is an empty mapping"):
        layer_spectrum_table({})
    with pytest.raises(TypeError, match="positional"):
        rankme(z, 1e-7)  # options are keyword-only
    with pytest.raises(ValueError, match=r"x\['b'\] contains"):
        layer_spectrum_table({"a": z, "b": bad})
    with pytest.raises(ValueError, match="eps"):
        rankme(z, eps=-1.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(iso):
    t = torch.as_tensor(iso, device="cuda")
    assert rankme(t) == pytest.approx(rankme(iso), rel=1e-9)
    assert effective_rank(t) == pytest.approx(effective_rank(iso), rel=1e-9)
    np.testing.assert_allclose(spectrum(t), spectrum(iso), rtol=1e-9)


# ------------------------------------------------------------------ stable rank, alpha-ReQ, SVE, LSVR
from workbench.spectrum import (AlphaReqResult, Moments, alpha_req, largest_singular_value_ratio,  # noqa: E402
                                second_moments, singular_value_entropy, stable_rank)

ALL = ("rankme", "effective_rank", "participation_ratio", "stable_rank", "alpha_req", "singular_value_entropy",
       "largest_singular_value_ratio")


def np_stable_rank(a):
    a = np.asarray(a, dtype=np.float64)
    return np.linalg.norm(a, "fro") ** 2 / np.linalg.norm(a, 2) ** 2


def power_law_exact(n, d, alpha, rng):
    """Centered data whose covariance eigenvalues are exactly k^-alpha (k = 1..d)."""
    u, _ = np.linalg.qr(rng.standard_normal((n, d)))
    u -= u.mean(0)
    u, _ = np.linalg.qr(u)
    v, _ = np.linalg.qr(rng.standard_normal((d, d)))
    s = np.sqrt((n - 1) * np.arange(1, d + 1) ** -alpha)
    return (u * s) @ v.T + 3.0  # the shift must not matter


def test_stable_rank_identities(iso):
    rng = np.random.default_rng(10)
    # rank 1 (also after centering): exactly 1
    r1 = np.outer(rng.standard_normal(50), rng.standard_normal(7))
    assert stable_rank(r1) == pytest.approx(1.0, abs=1e-9)
    assert stable_rank(r1, centered=False) == pytest.approx(1.0, abs=1e-9)
    # against the matrix definition ||A||_F^2 / ||A||_2^2
    z = rng.standard_normal((60, 9)) * np.linspace(0.5, 2, 9) + 1.0
    assert stable_rank(z) == pytest.approx(np_stable_rank(z - z.mean(0)), rel=1e-10)
    assert stable_rank(z, centered=False) == pytest.approx(np_stable_rank(z), rel=1e-10)
    # isotropic: D / (Marchenko-Pastur top edge) and the Renyi ordering srank <= PR <= erank
    n, d = iso.shape
    assert stable_rank(iso) == pytest.approx(d / (1 + np.sqrt(d / n)) ** 2, rel=0.05)
    assert stable_rank(iso) <= participation_ratio(iso) <= effective_rank(iso)
    # uncentered: a large mean becomes sigma_1 and drives the value to 1
    assert stable_rank(iso + 100.0, centered=False) < 1.01
    assert stable_rank(iso + 100.0) == pytest.approx(stable_rank(iso), rel=1e-9)


def test_alpha_req_exact_power_law():
    rng = np.random.default_rng(11)
    z = power_law_exact(200, 120, 1.5, rng)
    res = alpha_req(z)
    assert isinstance(res, AlphaReqResult)
    assert res.alpha == pytest.approx(1.5, abs=1e-8)
    assert res.r2 == pytest.approx(1.0, abs=1e-12)
    assert (res.k_min, res.k_max, res.n_points) == (6, 100, 95)
    assert res.log_c == pytest.approx(0.0, abs=1e-8)  # lambda_k = 1 * k^-1.5
    assert alpha_req(z, k_range=(1, 120), weighting="inverse_rank").alpha == pytest.approx(1.5, abs=1e-8)
    # an exactly flat spectrum: alpha = 0 and a perfect (constant) fit
    flat = alpha_req(power_law_exact(60, 20, 0.0, rng), k_range=(1, 20))
    assert flat.alpha == pytest.approx(0.0, abs=1e-9) and flat.r2 == 1.0


def test_alpha_req_gaussian_sample():
    rng = np.random.default_rng(12)
    n, d = 6000, 120
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    z = (rng.standard_normal((n, d)) * np.arange(1, d + 1) ** -0.75) @ q.T
    res = alpha_req(z)
    assert res.alpha == pytest.approx(1.5, abs=0.05)
    assert res.r2 > 0.999
    # isotropic data: only the Marchenko-Pastur spread of the sample spectrum, a much smaller alpha
    assert alpha_req(rng.standard_normal((n, d))).alpha < 0.3


def test_alpha_req_against_polyfit():
    rng = np.random.default_rng(13)
    z = rng.standard_normal((300, 40)) @ rng.standard_normal((40, 40)) + 0.5
    lam = np.sort(np_cov_eigs(z))[::-1]
    k = np.arange(3, 31)
    y = np.log(lam[k - 1])
    for weighting, w in (("uniform", np.ones(len(k))), ("inverse_rank", 1.0 / k)):
        slope, icpt = np.polyfit(np.log(k), y, 1, w=np.sqrt(w))
        fit = icpt + slope * np.log(k)
        ybar = np.average(y, weights=w)
        r2 = 1 - np.sum(w * (y - fit) ** 2) / np.sum(w * (y - ybar) ** 2)
        res = alpha_req(z, k_range=(3, 30), weighting=weighting)
        assert res.alpha == pytest.approx(-slope, rel=1e-9)
        assert res.r2 == pytest.approx(r2, rel=1e-9)
        assert res.log_c == pytest.approx(icpt, rel=1e-9)


def test_alpha_req_errors():
    rng = np.random.default_rng(14)
    z = rng.standard_normal((50, 6))
    with pytest.raises(ValueError, match="at least 3 ranks"):
        alpha_req(z)  # only 6 eigenvalues, range starts at 6
    assert alpha_req(z, k_range=(1, 6)).n_points == 6
    with pytest.raises(ValueError, match="k_min < k_max"):
        alpha_req(z, k_range=(5, 2))
    with pytest.raises(TypeError, match="k_range"):
        alpha_req(z, k_range=5)
    with pytest.raises(ValueError, match="weighting"):
        alpha_req(z, k_range=(1, 6), weighting="log")
    # rank-deficient data: the fit is restricted to the non-zero eigenvalues, no log(0)
    res = alpha_req(rank_k(100, 20, 5, rng), k_range=(1, 20))
    assert res.k_max == 5 and np.isfinite(res.alpha)


def test_sve_lsvr_against_numpy_svd():
    rng = np.random.default_rng(15)
    z = rng.standard_normal((90, 14)) * np.linspace(0.2, 3, 14) + 1.5
    for centered in (False, True):
        a = z - z.mean(0) if centered else z
        s = np.linalg.svd(a, compute_uv=False)
        p = s / s.sum()
        assert singular_value_entropy(z, centered=centered) == pytest.approx(-(p * np.log(p)).sum(), rel=1e-10)
        assert largest_singular_value_ratio(z, centered=centered) == pytest.approx(s[0] / s.sum(), rel=1e-10)
        assert largest_singular_value_ratio(z, centered=centered, negative_log=True) == pytest.approx(
            -np.log(s[0] / s.sum()), rel=1e-10)
    # SVE is log RankMe without eps; rank 1 -> SVE 0, LSVR 1
    assert np.exp(singular_value_entropy(z)) == pytest.approx(rankme(z, eps=0.0), rel=1e-10)
    r1 = np.outer(rng.standard_normal(30), rng.standard_normal(5))
    assert singular_value_entropy(r1) == pytest.approx(0.0, abs=1e-7)
    assert largest_singular_value_ratio(r1) == pytest.approx(1.0, abs=1e-7)


def test_gram_and_svd_paths_agree():
    rng = np.random.default_rng(16)
    for shape in ((200, 12), (12, 40)):  # tall (D x D Gram) and wide (N x N Gram)
        z = rng.standard_normal(shape) * np.linspace(0.3, 2, shape[1]) + 0.7
        for f in (rankme, effective_rank, participation_ratio, stable_rank, singular_value_entropy,
                  largest_singular_value_ratio):
            assert f(z, method="gram") == pytest.approx(f(z, method="svd"), rel=1e-9), f.__name__
        np.testing.assert_allclose(spectrum(z, method="gram"), spectrum(z, method="svd"), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(spectrum(z, centered=False, method="gram"),
                                   np.sort(np.linalg.eigvalsh(z.T @ z / len(z)))[::-1][:min(shape)], rtol=1e-9)


def test_moments_reused_and_checked():
    rng = np.random.default_rng(17)
    z = rng.standard_normal((80, 10)) + 2.0
    m = second_moments(z, centered=True, uncentered=True)
    assert isinstance(m, Moments) and (m.n, m.d) == (80, 10)
    np.testing.assert_allclose(m.mean.numpy(), z.mean(0), rtol=1e-12)
    np.testing.assert_allclose(m.scatter_eigenvalues.numpy(), np.linalg.svd(z - z.mean(0), compute_uv=False) ** 2,
                               rtol=1e-10)
    np.testing.assert_allclose(m.singular_values.numpy(), np.linalg.svd(z, compute_uv=False), rtol=1e-10)
    for f in (rankme, effective_rank, participation_ratio, stable_rank, singular_value_entropy):
        assert f(m) == pytest.approx(f(z), rel=1e-12)
    assert alpha_req(m, k_range=(1, 10)) == alpha_req(z, k_range=(1, 10))
    only_c = second_moments(z)
    with pytest.raises(ValueError, match="uncentered=True"):
        rankme(only_c)
    with pytest.raises(ValueError, match="centered=True"):
        effective_rank(second_moments(z, centered=False, uncentered=True))
    with pytest.raises(ValueError, match="centered=True and/or"):
        second_moments(z, centered=False)
    with pytest.raises(ValueError, match="method"):
        second_moments(z, method="qr")


def test_rank_deficient_gram_is_clean():
    """Eigenvalues of the Gram at rounding level are set to exactly 0: no NaN, exact rank."""
    rng = np.random.default_rng(18)
    z = rank_k(500, 60, 4, rng) + 5.0
    m = second_moments(z, centered=True, uncentered=True)
    lam = m.scatter_eigenvalues.numpy()
    assert np.all(lam >= 0) and int((lam > 0).sum()) == 4
    assert np.all(np.isfinite(m.singular_values.numpy()))
    for f in (rankme, effective_rank, participation_ratio, stable_rank, singular_value_entropy,
              largest_singular_value_ratio):
        assert np.isfinite(f(m))
    assert effective_rank(z) == pytest.approx(4.0, abs=1e-9)


@pytest.mark.parametrize("shape", [(150, 10), (10, 30)])
def test_orthogonal_invariance(shape):
    rng = np.random.default_rng(19)
    z = rng.standard_normal(shape) * np.linspace(0.2, 2.0, shape[1]) + 0.4
    q, _ = np.linalg.qr(rng.standard_normal((shape[1], shape[1])))
    zq = z @ q
    for f in (rankme, effective_rank, participation_ratio, stable_rank, singular_value_entropy,
              largest_singular_value_ratio):
        assert f(zq) == pytest.approx(f(z), rel=1e-9), f.__name__
    assert stable_rank(zq, centered=False) == pytest.approx(stable_rank(z, centered=False), rel=1e-9)
    kr = (1, min(shape) - 1)
    assert alpha_req(zq, k_range=kr).alpha == pytest.approx(alpha_req(z, k_range=kr).alpha, rel=1e-8)


def test_degenerate_inputs():
    # constant data whose column means are not exactly representable: rounding residuals are not variance
    const = np.full((30, 4), 0.1)
    for f in (effective_rank, participation_ratio, stable_rank, alpha_req):
        with pytest.raises(ValueError, match="constant"):
            f(const)
    assert rankme(const, eps=0.0) == pytest.approx(1.0, abs=1e-9)  # uncentered: one direction
    assert largest_singular_value_ratio(const) == pytest.approx(1.0, abs=1e-9)
    with pytest.raises(ValueError, match="all zeros"):
        singular_value_entropy(np.zeros((5, 3)))
    with pytest.raises(ValueError, match="at least 2 samples"):
        stable_rank(np.ones((1, 3)))
    assert rankme(np.array([[3.0, 4.0]]), eps=0.0) == pytest.approx(1.0)  # N = 1 is fine uncentered
    ints = np.random.default_rng(20).integers(-5, 5, size=(40, 6))
    assert effective_rank(ints) == pytest.approx(effective_rank(ints.astype(float)), rel=1e-12)
    nan = np.ones((10, 3))
    nan[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN/Inf"):
        stable_rank(nan)
    with pytest.raises(TypeError, match="centered"):
        stable_rank(ints, centered="yes")


def test_layer_table_all_measures_one_decomposition_each(monkeypatch):
    rng = np.random.default_rng(21)
    acts = {"a": rng.standard_normal((120, 12)) + 1.0,
            "b": rng.standard_normal((120, 30)) @ rng.standard_normal((30, 30))}
    calls = []
    real = torch.linalg.eigvalsh
    monkeypatch.setattr(torch.linalg, "eigvalsh", lambda a, *args, **kw: calls.append(a.shape) or real(a, *args, **kw))
    df = layer_spectrum_table(acts, measures=ALL, alpha_k_range=(2, 10))
    assert len(calls) == 2 * len(acts)  # one centered + one uncentered decomposition per layer
    calls.clear()
    layer_spectrum_table(acts, measures=("effective_rank", "stable_rank", "alpha_req"), alpha_k_range=(2, 10))
    assert len(calls) == len(acts)
    monkeypatch.undo()
    assert list(df.measure.unique()) == ["rankme", "effective_rank", "participation_ratio", "stable_rank",
                                          "alpha_req", "alpha_req_r2", "singular_value_entropy",
                                          "largest_singular_value_ratio"]
    for layer, z in acts.items():
        got = df[df.layer == layer].set_index("measure").value
        ar = alpha_req(z, k_range=(2, 10))
        ref = {"rankme": np_rankme(z), "effective_rank": np.exp(entropy(np_cov_eigs(z))),
               "participation_ratio": participation_ratio(z, method="svd"),
               "stable_rank": np_stable_rank(z - z.mean(0)), "alpha_req": ar.alpha, "alpha_req_r2": ar.r2,
               "singular_value_entropy": entropy(np.linalg.svd(z, compute_uv=False)),
               "largest_singular_value_ratio": (lambda s: s[0] / s.sum())(np.linalg.svd(z, compute_uv=False))}
        for k, v in ref.items():
            assert got[k] == pytest.approx(v, rel=1e-8), (layer, k)
    with pytest.raises(ValueError, match="method"):
        layer_spectrum_table(acts, method="eig")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_new_measures_match_cpu():
    rng = np.random.default_rng(22)
    z = rng.standard_normal((3000, 64)) * np.arange(1, 65) ** -0.6 + 0.3
    t = torch.as_tensor(z, device="cuda", dtype=torch.float32)
    zc = t.double().cpu().numpy()
    for f in (stable_rank, singular_value_entropy, largest_singular_value_ratio, participation_ratio):
        assert f(t) == pytest.approx(f(zc), rel=1e-9), f.__name__
    assert alpha_req(t, k_range=(2, 50)).alpha == pytest.approx(alpha_req(zc, k_range=(2, 50)).alpha, rel=1e-9)
    m = second_moments(t, uncentered=True)
    assert m.mean.device.type == "cuda" and m.singular_values.device.type == "cuda"
    df = layer_spectrum_table({"x": t}, measures=ALL, alpha_k_range=(2, 50))
    assert np.all(np.isfinite(df.value))

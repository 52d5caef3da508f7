"""CCA family: against a textbook covariance-eigenvalue reference (scipy), hand-checkable cases, invariances,
and the repsim peer package where installed."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.linalg as sl
import torch

from workbench.results import COLUMNS, check_tidy
from workbench.similarity._cca import (canonical_correlations, cca, cca_matrix, pwcca, pwcca_matrix, svcca,
                                      svcca_matrix)


# ------------------------------------------------------------------ independent references
def ref_correlations(x, y):
    """Hotelling: rho^2 = eigenvalues of Sxx^-1 Sxy Syy^-1 Syx (needs invertible covariances)."""
    x = np.asarray(x, float) - np.mean(x, 0)
    y = np.asarray(y, float) - np.mean(y, 0)
    sxx, syy, sxy = x.T @ x, y.T @ y, x.T @ y
    m = sl.solve(sxx, sxy, assume_a="pos") @ sl.solve(syy, sxy.T, assume_a="pos")
    ev = np.sort(np.real(sl.eigvals(m)))[::-1][: min(x.shape[1], y.shape[1])]
    return np.sqrt(np.clip(ev, 0.0, None))


def ref_top_basis(z, k):
    zc = np.asarray(z, float) - np.mean(z, 0)
    u, _, _ = np.linalg.svd(zc, full_matrices=False)
    return u[:, :k]


def ref_svcca(x, y, kx, ky):
    return np.linalg.svd(ref_top_basis(x, kx).T @ ref_top_basis(y, ky), compute_uv=False).mean()


def keep_for_variance(z, variance):
    """Plain loop: smallest k with sum_{i<=k} s_i^2 / sum s_i^2 >= variance."""
    s = np.linalg.svd(np.asarray(z, float) - np.mean(z, 0), compute_uv=False)
    total, acc = float(np.sum(s ** 2)), 0.0
    for k, si in enumerate(s, start=1):
        acc += si ** 2
        if acc / total >= variance - 1e-12:
            return k
    return len(s)


def centered_orthonormal(rng, n, k):
    """k orthonormal vectors in R^n, each orthogonal to the all-ones vector."""
    m = np.c_[np.ones(n), rng.normal(size=(n, k))]
    q, _ = np.linalg.qr(m)
    return q[:, 1:]


@pytest.fixture(scope="module")
def pair():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(150, 5)) @ rng.normal(size=(5, 5)) + 3.0
    y = np.c_[x[:, :3] @ rng.normal(size=(3, 4)) + 0.7 * rng.normal(size=(150, 4)), rng.normal(size=(150, 3))]
    return x, y


# ------------------------------------------------------------------ values against the reference
@pytest.mark.parametrize("swap", [False, True])
def test_canonical_correlations_match_covariance_eigenvalues(pair, swap):
    x, y = pair if not swap else pair[::-1]
    got = canonical_correlations(x, y)
    np.testing.assert_allclose(got, ref_correlations(x, y), rtol=1e-9, atol=1e-10)
    assert got.shape == (5,) and np.all(np.diff(got) <= 0)


def test_cca_summaries_match_reference(pair):
    x, y = pair
    rho = ref_correlations(x, y)
    assert cca(x, y) == pytest.approx(rho.mean(), rel=1e-10)
    assert cca(x, y, summary="r2") == pytest.approx((rho ** 2).mean(), rel=1e-10)
    assert cca(y, x) == pytest.approx(cca(x, y), rel=1e-12)


def test_rho_one_for_invertible_linear_map():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 4))
    a = rng.normal(size=(4, 4))
    np.testing.assert_allclose(canonical_correlations(x, x @ a + 5.0), 1.0, atol=1e-10)
    # Y contains X's column space plus unrelated columns: all k = 4 correlations are still 1
    y = np.c_[x @ a, rng.normal(size=(60, 3))]
    assert cca(x, y) == pytest.approx(1.0, abs=1e-10)
    assert pwcca(x, y) == pytest.approx(1.0, abs=1e-10)


def test_cca_invariant_to_invertible_linear_transforms(pair):
    x, y = pair
    rng = np.random.default_rng(2)
    xt = x @ rng.normal(size=(5, 5)) - 4.0
    yt = y @ rng.normal(size=(7, 7)) + rng.normal(size=7)
    for summary in ("mean", "r2"):
        assert cca(xt, yt, summary=summary) == pytest.approx(cca(x, y, summary=summary), rel=1e-9)


def test_independent_gaussians_have_small_mean_correlation():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(4000, 4)), rng.normal(size=(4000, 4))
    assert cca(x, y) < 0.06  # null scale ~ sqrt(p / N) = 0.03
    assert cca(x, y, summary="r2") < 0.005


def test_constant_and_duplicated_columns_drop_out(pair):
    x, y = pair
    ref = cca(x, y)
    x_extra = np.c_[x, np.full(len(x), 7.0), x[:, 1]]  # a constant and a duplicated neuron: same column space
    assert cca(x_extra, y) == pytest.approx(ref, rel=1e-9)
    assert len(canonical_correlations(x_extra, y)) == 5


def test_integer_and_float32_tensor_inputs(pair):
    x, y = pair
    xi = np.round(x * 10).astype(np.int64)
    assert cca(xi, y) == pytest.approx(ref_correlations(xi, y).mean(), rel=1e-9)
    t = torch.tensor(x, dtype=torch.float32)
    assert cca(t, y) == pytest.approx(ref_correlations(t.double().numpy(), y).mean(), rel=1e-9)


# ------------------------------------------------------------------ SVCCA
@pytest.fixture(scope="module")
def graded():
    """X with exactly known variance fractions 0.5, 0.8, 0.95, 0.99, 1.0; Y generic."""
    rng = np.random.default_rng(4)
    n = 120
    u = centered_orthonormal(rng, n, 5)
    s = np.sqrt([50.0, 30.0, 15.0, 4.0, 1.0])
    v, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    x = (u * s) @ v.T + 1.5
    y = np.c_[u[:, :3] @ rng.normal(size=(3, 4)), u[:, 3:] @ rng.normal(size=(2, 2))] + rng.normal(size=(n, 6))
    return x, y


@pytest.mark.parametrize("variance,kx", [(0.4, 1), (0.79, 2), (0.9, 3), (0.96, 4), (0.995, 5)])
def test_svcca_keeps_smallest_k_reaching_variance(graded, variance, kx):
    x, y = graded
    assert keep_for_variance(x, variance) == kx
    ky = keep_for_variance(y, variance)
    expected = ref_svcca(x, y, kx, ky)
    assert svcca(x, y, variance=variance) == pytest.approx(expected, rel=1e-9)
    if kx > 1:  # the test can tell neighbouring k apart
        assert abs(ref_svcca(x, y, kx - 1, ky) - expected) > 1e-3


def test_svcca_threshold_reached_exactly_counts(graded):
    x, y = graded
    # cumulative fraction after 2 directions is exactly 0.8 (up to rounding): k = 2, not 3
    ky = keep_for_variance(y, 0.8)
    assert svcca(x, y, variance=0.8) == pytest.approx(ref_svcca(x, y, 2, ky), rel=1e-9)


def test_svcca_dims_and_full_variance(graded):
    x, y = graded
    assert svcca(x, y, dims=3) == pytest.approx(ref_svcca(x, y, 3, 3), rel=1e-9)
    assert svcca(x, y, dims=(2, 4)) == pytest.approx(ref_svcca(x, y, 2, 4), rel=1e-9)
    assert svcca(x, y, variance=1.0) == pytest.approx(cca(x, y), rel=1e-9)


def test_svcca_invariant_to_orthogonal_and_scaling(graded):
    x, y = graded
    rng = np.random.default_rng(5)
    q1, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    q2, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    assert svcca(3.0 * x @ q1 + 1.0, 0.2 * y @ q2) == pytest.approx(svcca(x, y), rel=1e-9)


# ------------------------------------------------------------------ PWCCA
def pwcca_example(a, b, cos):
    """X = [a e1, b e2], Y = [e1, cos e2 + sin e3] (e_i orthonormal, centered): rho = (1, cos),
    canonical variates of X are e1, e2, so alpha = (|a|, |b|) and PWCCA = (|a| + |b| cos) / (|a| + |b|)."""
    rng = np.random.default_rng(6)
    e = centered_orthonormal(rng, 30, 3)
    x = np.c_[a * e[:, 0], b * e[:, 1]]
    y = np.c_[e[:, 0], cos * e[:, 1] + np.sqrt(1 - cos ** 2) * e[:, 2]]
    return x, y


def test_pwcca_hand_example():
    x, y = pwcca_example(3.0, 1.0, 0.6)
    np.testing.assert_allclose(canonical_correlations(x, y), [1.0, 0.6], atol=1e-12)
    assert pwcca(x, y) == pytest.approx((3.0 + 0.6) / 4.0, rel=1e-10)  # 0.9
    assert cca(x, y) == pytest.approx(0.8, rel=1e-10)


def test_pwcca_uniform_weights_equal_mean_cca():
    x, y = pwcca_example(2.0, -2.0, 0.3)
    assert pwcca(x, y) == pytest.approx(cca(x, y), rel=1e-10)


def test_pwcca_weights_come_from_first_argument(pair):
    x, y = pair
    rng = np.random.default_rng(7)
    # invariant to invertible maps of Y and to scaling of X; not symmetric
    assert pwcca(2.5 * x, y @ rng.normal(size=(7, 7))) == pytest.approx(pwcca(x, y), rel=1e-9)
    assert abs(pwcca(x, y) - pwcca(y, x)) > 1e-3


def test_pwcca_against_explicit_variates(pair):
    """alpha_i = sum_j |<h_i, x_j>| with h_i = Xc Sxx^-1/2 u_i built from the covariance route."""
    x, y = pair
    xc, yc = x - x.mean(0), y - y.mean(0)
    wx = sl.inv(sl.sqrtm(xc.T @ xc)).real
    wy = sl.inv(sl.sqrtm(yc.T @ yc)).real
    u, rho, _ = np.linalg.svd(wx @ xc.T @ yc @ wy)
    h = xc @ wx @ u  # unit-norm canonical variates of X
    alpha = np.abs(h.T @ xc).sum(axis=1)
    assert pwcca(x, y) == pytest.approx(np.sum(alpha * rho) / np.sum(alpha), rel=1e-9)


def test_peer_repsim():
    repsim = pytest.importorskip("repsim")
    rng = np.random.default_rng(8)
    x = rng.normal(size=(200, 5))
    y = np.c_[x @ rng.normal(size=(5, 4)) + rng.normal(size=(200, 4)), rng.normal(size=(200, 3))]
    # repsim's cca summaries: "yanai" = mean rho^2, "pillai" = mean rho (over min(p, q)); its pwcca averages
    # the two weightings
    assert repsim.cca([x, y], "yanai")[0, 1] == pytest.approx(cca(x, y, summary="r2"), rel=1e-8)
    assert repsim.cca([x, y], "pillai")[0, 1] == pytest.approx(cca(x, y), rel=1e-8)
    assert repsim.pwcca([x, y])[0, 1] == pytest.approx(0.5 * (pwcca(x, y) + pwcca(y, x)), rel=1e-7)


# ------------------------------------------------------------------ errors
def test_too_few_samples_is_an_error_that_suggests_svcca():
    rng = np.random.default_rng(9)
    x, y = rng.normal(size=(10, 10)), rng.normal(size=(10, 4))
    with pytest.raises(ValueError, match="svcca"):
        cca(x, y)
    with pytest.raises(ValueError, match="canonical correlations equal 1"):
        pwcca(rng.normal(size=(12, 6)), rng.normal(size=(12, 6)))  # 6 + 6 > 11: one forced rho = 1
    assert np.isfinite(cca(rng.normal(size=(13, 6)), rng.normal(size=(13, 6))))  # 6 + 6 <= 12
    with pytest.raises(ValueError, match="fewer directions"):
        svcca(x, y, dims=(8, 4))
    assert np.isfinite(svcca(x, y, dims=(3, 3)))


def test_bad_inputs():
    rng = np.random.default_rng(10)
    x, y = rng.normal(size=(50, 3)), rng.normal(size=(50, 3))
    bad = x.copy()
    bad[4, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        cca(bad, y)
    with pytest.raises(ValueError, match="mismatched number of samples"):
        cca(x, y[:40])
    with pytest.raises(ValueError, match="constant"):
        cca(np.ones((50, 3)), y)
    with pytest.raises(ValueError, match="2-D"):
        cca(x[:, 0], y)
    with pytest.raises(ValueError, match="summary"):
        cca(x, y, summary="median")
    with pytest.raises(ValueError, match="not both"):
        svcca(x, y, variance=0.9, dims=2)
    with pytest.raises(ValueError, match="exceeds its numerical rank"):
        svcca(np.c_[x, x[:, 0]], y, dims=4)
    with pytest.raises(ValueError, match="variance"):
        svcca(x, y, variance=0.0)
    with pytest.raises(TypeError):
        svcca(x, y, dims=2.5)
    with pytest.raises(ValueError, match="rtol"):
        cca(x, y, rtol=1.5)


# ------------------------------------------------------------------ all pairs
@pytest.fixture(scope="module")
def layers():
    rng = np.random.default_rng(11)
    base = rng.normal(size=(80, 4))
    a = {"l0": base, "l1": np.tanh(base @ rng.normal(size=(4, 6))), "l2": rng.normal(size=(80, 3))}
    b = {"m0": base @ rng.normal(size=(4, 5)) + 0.3 * rng.normal(size=(80, 5)), "m1": rng.normal(size=(80, 2))}
    return a, b


def test_cca_matrix_matches_pairs(layers):
    a, b = layers
    tidy = cca_matrix(a, b, summary="r2")
    assert list(tidy.columns) == [*COLUMNS, "layer_b", "layer_index_b"]
    check_tidy(tidy, "cca_matrix")
    assert set(tidy["measure"]) == {"cca_r2"} and len(tidy) == 6
    for row in tidy.itertuples():
        assert row.value == pytest.approx(cca(a[row.layer], b[row.layer_b], summary="r2"), rel=1e-10)
    mat = cca_matrix(a, output="matrix")
    assert isinstance(mat, pd.DataFrame) and mat.shape == (3, 3)
    np.testing.assert_allclose(mat.values, mat.values.T)
    assert mat.loc["l0", "l2"] == pytest.approx(cca(a["l0"], a["l2"]), rel=1e-10)


def test_svcca_and_pwcca_matrices(layers):
    a, b = layers
    sv = svcca_matrix(a, b, dims=2, output="matrix")
    assert sv.loc["l1", "m0"] == pytest.approx(svcca(a["l1"], b["m0"], dims=2), rel=1e-10)
    assert svcca_matrix(a, variance=0.9)["measure"].iloc[0] == "svcca_var0.9"
    pw = pwcca_matrix(a, output="matrix")
    assert pw.loc["l0", "l1"] == pytest.approx(pwcca(a["l0"], a["l1"]), rel=1e-10)
    assert pw.loc["l1", "l0"] == pytest.approx(pwcca(a["l1"], a["l0"]), rel=1e-10)
    assert abs(pw.loc["l0", "l1"] - pw.loc["l1", "l0"]) > 1e-4


def test_matrix_errors_name_the_layers():
    rng = np.random.default_rng(12)
    with pytest.raises(ValueError, match=r"a\['wide'\]"):
        cca_matrix({"wide": rng.normal(size=(20, 15)), "ok": rng.normal(size=(20, 2))})
    with pytest.raises(ValueError, match="same examples"):
        cca_matrix({"a": rng.normal(size=(20, 2))}, {"b": rng.normal(size=(21, 2))})
    with pytest.raises(TypeError, match="one int"):
        svcca_matrix({"a": rng.normal(size=(20, 2))}, dims=(1, 2))

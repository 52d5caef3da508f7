"""Generalized shape metrics: against an explicit partial-whitening + scipy orthogonal Procrustes reference,
the alpha=0 identity with canonical correlations (covariance-eigenvalue route), metric axioms and invariances."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.linalg as sl

from workbench.similarity._shape import shape_distance, shape_matrix


# ------------------------------------------------------------------ independent references
def ref_whiten(z, alpha):
    """phi_alpha(Z) = Zc (alpha I + (1 - alpha) C^{-1/2}), C = Zc^T Zc / N (full-rank Z)."""
    zc = np.asarray(z, float) - np.mean(z, 0)
    c = zc.T @ zc / len(zc)
    return zc @ (alpha * np.eye(c.shape[0]) + (1 - alpha) * sl.inv(sl.sqrtm(c)).real)


def ref_shape(x, y, alpha, metric):
    a, b = ref_whiten(x, alpha), ref_whiten(y, alpha)
    w = max(a.shape[1], b.shape[1])
    a = np.pad(a, ((0, 0), (0, w - a.shape[1])))
    b = np.pad(b, ((0, 0), (0, w - b.shape[1])))
    if metric == "angular":
        a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
    r, _ = sl.orthogonal_procrustes(a, b)  # argmin_R ||a R - b||_F over orthogonal R
    if metric == "angular":
        return float(np.arccos(np.clip(np.sum((a @ r) * b), -1.0, 1.0)))
    return float(np.linalg.norm(a @ r - b) / np.sqrt(len(a)))


def ref_correlations(x, y):
    x = np.asarray(x, float) - np.mean(x, 0)
    y = np.asarray(y, float) - np.mean(y, 0)
    m = sl.solve(x.T @ x, x.T @ y, assume_a="pos") @ sl.solve(y.T @ y, y.T @ x, assume_a="pos")
    ev = np.sort(np.real(sl.eigvals(m)))[::-1][: min(x.shape[1], y.shape[1])]
    return np.sqrt(np.clip(ev, 0.0, None))


@pytest.fixture(scope="module")
def pair():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4)) @ rng.normal(size=(4, 4)) + 2.0
    y = x[:, :3] @ rng.normal(size=(3, 6)) + rng.normal(size=(60, 6))
    return x, y


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("metric", ["angular", "euclidean"])
def test_matches_explicit_whitening_and_scipy_procrustes(pair, alpha, metric):
    x, y = pair  # widths 4 and 6: zero padding
    assert shape_distance(x, y, alpha=alpha, metric=metric) == pytest.approx(ref_shape(x, y, alpha, metric), rel=1e-9)
    assert shape_distance(y, x, alpha=alpha, metric=metric) == pytest.approx(ref_shape(x, y, alpha, metric), rel=1e-9)


def test_alpha0_is_arccos_of_mean_canonical_correlation():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(70, 5))
    y = x @ rng.normal(size=(5, 5)) + 1.5 * rng.normal(size=(70, 5))
    rho = ref_correlations(x, y)
    assert shape_distance(x, y, alpha=0.0) == pytest.approx(np.arccos(rho.mean()), rel=1e-9)
    assert shape_distance(x, y, alpha=0.0, metric="euclidean") == pytest.approx(
        np.sqrt(5 + 5 - 2 * rho.sum()), rel=1e-9)
    # unequal widths: cos = sum rho / sqrt(p q)
    z = np.c_[y, rng.normal(size=(70, 3))]
    rho = ref_correlations(x, z)
    assert shape_distance(x, z, alpha=0.0) == pytest.approx(np.arccos(rho.sum() / np.sqrt(5 * 8)), rel=1e-9)


def test_metric_axioms():
    rng = np.random.default_rng(2)
    reps = [rng.normal(size=(40, 5)) @ rng.normal(size=(5, 5)) for _ in range(4)]
    reps.append(reps[0][:, :3] + 0.1 * rng.normal(size=(40, 3)))
    layers = {str(i): r for i, r in enumerate(reps)}
    for alpha, metric in itertools.product([0.0, 0.5, 1.0], ["angular", "euclidean"]):
        assert shape_distance(reps[1], reps[1].copy(), alpha=alpha, metric=metric) == pytest.approx(0.0, abs=1e-6)
        d = shape_matrix(layers, layers, alpha=alpha, metric=metric, output="matrix").values  # b given: no mirroring
        np.testing.assert_allclose(d, d.T, rtol=1e-10, atol=1e-7)
        off = d[~np.eye(5, dtype=bool)]
        assert off.min() > 1e-3
        for i, j, k in itertools.permutations(range(5), 3):
            assert d[i, k] <= d[i, j] + d[j, k] + 1e-9


def test_alpha1_invariances(pair):
    x, y = pair
    rng = np.random.default_rng(3)
    q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    xt = 3.7 * x @ q + rng.normal(size=4)
    assert shape_distance(x, xt, alpha=1.0) == pytest.approx(0.0, abs=1e-6)
    assert shape_distance(xt, y, alpha=1.0) == pytest.approx(shape_distance(x, y, alpha=1.0), rel=1e-9)
    # Euclidean Procrustes distance is rotation invariant and scales with the data
    assert shape_distance(x @ q, y, alpha=1.0, metric="euclidean") == pytest.approx(
        shape_distance(x, y, alpha=1.0, metric="euclidean"))
    assert shape_distance(2.0 * x, 2.0 * y, alpha=1.0, metric="euclidean") == pytest.approx(
        2.0 * shape_distance(x, y, alpha=1.0, metric="euclidean"), rel=1e-9)
    # a general linear map is not a rotation
    assert shape_distance(x, x @ rng.normal(size=(4, 4)), alpha=1.0) > 1e-2


def test_alpha0_invariant_to_invertible_linear_maps(pair):
    x, y = pair
    rng = np.random.default_rng(4)
    a = rng.normal(size=(4, 4))
    assert shape_distance(x, x @ a - 1.0, alpha=0.0) == pytest.approx(0.0, abs=1e-6)
    for metric in ("angular", "euclidean"):
        assert shape_distance(x @ a, y @ rng.normal(size=(6, 6)), alpha=0.0, metric=metric) == pytest.approx(
            shape_distance(x, y, alpha=0.0, metric=metric), rel=1e-8)


def test_intermediate_alpha_depends_on_scale(pair):
    x, y = pair
    assert abs(shape_distance(10.0 * x, y, alpha=0.5) - shape_distance(x, y, alpha=0.5)) > 1e-3


def test_shrinkage(pair):
    x, y = pair
    # full shrinkage at alpha=0 whitens with an isotropic covariance: same angle as alpha=1
    assert shape_distance(x, y, alpha=0.0, shrinkage=1.0) == pytest.approx(shape_distance(x, y, alpha=1.0), rel=1e-9)
    # explicit reference for partial shrinkage
    s = 0.3

    def shrunk(z):
        zc = z - z.mean(0)
        c = zc.T @ zc / len(z)
        c = (1 - s) * c + s * np.trace(c) / c.shape[0] * np.eye(c.shape[0])
        return zc @ sl.inv(sl.sqrtm(c)).real

    a, b = np.pad(shrunk(x), ((0, 0), (0, 2))), shrunk(y)  # widths 4 and 6
    r, _ = sl.orthogonal_procrustes(a, b)
    expected = np.arccos(np.sum((a @ r) * b) / (np.linalg.norm(a) * np.linalg.norm(b)))
    assert shape_distance(x, y, alpha=0.0, shrinkage=s) == pytest.approx(expected, rel=1e-9)


def test_rank_deficient_input_is_whitened_on_its_column_space():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(50, 3))
    y = rng.normal(size=(50, 3)) + x
    x_dup = np.c_[x, x[:, 0] + x[:, 1], np.full(50, 2.0)]  # same column space, singular covariance
    assert shape_distance(x_dup, y, alpha=0.0) == pytest.approx(shape_distance(x, y, alpha=0.0), rel=1e-9)


def test_errors():
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(20, 12)), rng.normal(size=(20, 12))
    with pytest.raises(ValueError, match="alpha > 0"):
        shape_distance(x, y, alpha=0.0)  # 12 + 12 > 19: degenerate CCA limit
    assert np.isfinite(shape_distance(x, y, alpha=0.0, shrinkage=0.1))
    assert np.isfinite(shape_distance(x, y, alpha=0.5))
    with pytest.raises(ValueError, match="alpha"):
        shape_distance(x, y, alpha=1.5)
    with pytest.raises(ValueError, match="metric"):
        shape_distance(x, y, metric="cosine")
    with pytest.raises(ValueError, match="shrinkage"):
        shape_distance(x, y, shrinkage=-0.1)
    with pytest.raises(ValueError, match="constant"):
        shape_distance(np.zeros((20, 3)), y)
    with pytest.raises(ValueError, match="mismatched number of samples"):
        shape_distance(x, y[:10])
    bad = x.copy()
    bad[0, 0] = np.inf
    with pytest.raises(ValueError, match="NaN"):
        shape_distance(bad, y)


def test_shape_matrix(pair):
    x, y = pair
    rng = np.random.default_rng(7)
    a = {"x": x, "y": y, "z": rng.normal(size=(60, 2))}
    mat = shape_matrix(a, alpha=0.5, metric="euclidean", output="matrix")
    np.testing.assert_array_equal(np.diag(mat.values), 0.0)
    np.testing.assert_allclose(mat.values, mat.values.T)
    assert mat.loc["x", "z"] == pytest.approx(shape_distance(x, a["z"], alpha=0.5, metric="euclidean"), rel=1e-10)
    tidy = shape_matrix(a, {"b": y}, alpha=1.0)
    assert set(tidy["measure"]) == {"shape_angular_alpha1"}
    assert tidy.set_index("layer").loc["x", "value"] == pytest.approx(shape_distance(x, y), rel=1e-10)
    assert shape_matrix(a, alpha=0.0, shrinkage=0.2)["measure"].iloc[0] == "shape_angular_alpha0_shrinkage0.2"

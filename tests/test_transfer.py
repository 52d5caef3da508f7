"""Transferability scores against hand-computed values, brute-force / scipy references and (optionally)
the LogME authors' reference implementation."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from scipy.stats import entropy

from workbench.results import COLUMNS, check_tidy
from workbench.transfer import hscore, leep, logme, logme_targets, nce, transfer_table, transrate


def blobs(n, d, c, sep, seed, scales=None):
    """Gaussian class blobs: class means ``sep * N(0, I)``, unit noise (optionally per-feature scales)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    y[:c] = np.arange(c)  # every class present
    f = sep * rng.standard_normal((c, d))[y] + rng.standard_normal((n, d))
    if scales is not None:
        f = f * scales
    return f, y


# ------------------------------------------------------------------------------------------- LogME
def gaussian_logpdf(y, cov):
    """log N(y; 0, cov) by Cholesky."""
    chol = np.linalg.cholesky(cov)
    w = np.linalg.solve(chol, y)
    return -0.5 * w @ w - np.log(np.diag(chol)).sum() - 0.5 * len(y) * np.log(2 * np.pi)


def direct_max_evidence(f, y):
    """max over (log alpha, log beta) of log N(y; 0, I/beta + F F^T/alpha), divided by N, by Nelder-Mead.

    Independent of the SVD algebra: the marginal likelihood of Bayesian linear regression written as an
    N-dimensional Gaussian density, maximised numerically from generic starting points.
    """
    n = len(y)
    gram = f @ f.T
    eye = np.eye(n)

    def neg(p):
        return -gaussian_logpdf(y, np.exp(-p[1]) * eye + np.exp(-p[0]) * gram)

    best = None
    for start in [(0.0, 0.0), (6.0, 3.0)]:
        res = minimize(neg, start, method="Nelder-Mead",
                       options={"xatol": 1e-8, "fatol": 1e-10, "maxiter": 3000, "maxfev": 6000})
        if best is None or res.fun < best.fun:
            best = res
    return -best.fun / n, np.exp(best.x)


def evidence_at(f, y, alpha, beta):
    """Textbook D-dimensional evidence (Bishop 2006, Eq. 3.86) at given alpha, beta, via slogdet."""
    n, d = f.shape
    a = alpha * np.eye(d) + beta * f.T @ f
    m = beta * np.linalg.solve(a, f.T @ y)
    return (d / 2 * np.log(alpha) + n / 2 * np.log(beta) - n / 2 * np.log(2 * np.pi)
            - beta / 2 * np.sum((f @ m - y) ** 2) - alpha / 2 * m @ m - 0.5 * np.linalg.slogdet(a)[1]) / n


@pytest.mark.parametrize("n,d,c,sep,seed", [(90, 12, 3, 0.6, 0),    # N > D
                                            (80, 120, 4, 0.3, 1),   # N < D, interior maximum
                                            (50, 160, 3, 0.3, 2)])  # N < D, maximum in the beta -> inf limit
def test_logme_equals_direct_maximum(n, d, c, sep, seed):
    f, y = blobs(n, d, c, sep, seed)
    table = logme_targets(f, y)
    onehot = np.eye(c)[y]
    ref = [direct_max_evidence(f, onehot[:, k])[0] for k in range(c)]
    np.testing.assert_allclose(table["log_evidence"], ref, rtol=1e-6)
    assert logme(f, y) == pytest.approx(np.mean(ref), rel=1e-6)
    for k, row in table.iterrows():  # the reported (alpha, beta) attain the value (finite cases)
        if np.isfinite(row.alpha) and np.isfinite(row.beta):
            assert evidence_at(f, onehot[:, k], row.alpha, row.beta) == pytest.approx(row.log_evidence, rel=1e-9)
    if (n, d) == (80, 120):
        assert np.isfinite(table["beta"]).all()  # the N < D case really has an interior maximum
    if (n, d) == (50, 160):
        assert np.isinf(table["beta"]).any()  # ... and this one a supremum only reached as beta -> inf


def test_logme_regression_targets_against_direct():
    rng = np.random.default_rng(3)
    f = rng.standard_normal((70, 9))
    y = np.column_stack([f @ rng.standard_normal(9) + 0.7 * rng.standard_normal(70),
                         rng.standard_normal(70) + 2.0])
    ref = [direct_max_evidence(f, y[:, k])[0] for k in range(2)]
    np.testing.assert_allclose(logme_targets(f, y, regression=True)["log_evidence"], ref, rtol=1e-6)
    assert logme(f, y[:, 0], regression=True) == pytest.approx(ref[0], rel=1e-6)
    # scaling a regression target by c shifts the per-sample log evidence by -log|c|
    assert logme(f, 3.0 * y[:, 0], regression=True) == pytest.approx(ref[0] - math.log(3.0), rel=1e-8)


def test_logme_invariances():
    f, y = blobs(60, 100, 3, 0.4, 4)  # N < D: the regime where dropping the null space goes wrong
    base = logme(f, y)
    rng = np.random.default_rng(5)
    q, _ = np.linalg.qr(rng.standard_normal((100, 100)))
    assert logme(np.hstack([f, np.zeros((60, 300))]), y) == pytest.approx(base, rel=1e-9)  # zero columns
    assert logme(f * 1e-4, y) == pytest.approx(base, rel=1e-9)    # isotropic scale
    assert logme(f @ q, y) == pytest.approx(base, rel=1e-8)       # rotation
    assert logme(f, np.array([7, 3, 11])[y]) == pytest.approx(base, rel=1e-12)  # label values
    assert logme(f + 5.0, y) != pytest.approx(base, rel=1e-3)     # no centering: a shift matters
    f2, y2 = blobs(60, 8, 3, 0.7, 6)                              # rank-deficient N > D: duplicated units
    wide = np.hstack([f2, f2[:, :4]])
    assert logme_targets(wide, y2)["log_evidence"][0] == pytest.approx(
        direct_max_evidence(wide, (y2 == 0).astype(float))[0], rel=1e-6)
    assert logme(np.hstack([f2, np.zeros((60, 5))]), y2) == pytest.approx(logme(f2, y2), rel=1e-9)


def test_logme_targets_flags_limit_values():
    """alpha / beta = inf only where the ``limit`` column says so; the limit values against closed forms and the
    direct Gaussian evidence."""
    rng = np.random.default_rng(1)
    y = np.arange(48) % 3
    onehot = np.eye(3)[y]
    rank1 = np.outer(rng.normal(size=48), rng.normal(size=6))  # no class signal at all
    table = logme_targets(rank1, y)
    assert table["limit"].tolist() == ["no_signal"] * 3
    assert np.isinf(table["alpha"]).all() and (table["gamma"] == 0).all()
    n, yy = 48, onehot.sum(0)
    np.testing.assert_allclose(table["beta"], n / yy, rtol=1e-12)
    no_signal = 0.5 * np.log(n / yy) - 0.5 * (1 + np.log(2 * np.pi))  # y ~ N(0, ||y||^2 / N I), per sample
    np.testing.assert_allclose(table["log_evidence"], no_signal, rtol=1e-12)
    for k in range(3):  # the limit is the supremum: a large finite alpha comes arbitrarily close from below
        near = evidence_at(rank1, onehot[:, k], 1e12, n / yy[k])
        assert near <= table["log_evidence"][k] + 1e-12 and near == pytest.approx(table["log_evidence"][k], abs=1e-9)
    for shape in [(90, 12, 3, 0.6, 0), (50, 160, 3, 0.3, 2)]:  # interior maxima; the beta -> inf limit (N < D)
        t = logme_targets(*blobs(*shape))
        assert set(t["limit"]) <= {"none", "no_signal", "noise_free"}
        np.testing.assert_array_equal(t["limit"] == "no_signal", np.isinf(t["alpha"]))
        np.testing.assert_array_equal(t["limit"] == "noise_free", np.isinf(t["beta"]))
        assert np.isfinite(t.loc[t["limit"] == "none", ["alpha", "beta"]].to_numpy()).all()
        assert np.isfinite(t["log_evidence"]).all()
    assert (logme_targets(*blobs(90, 12, 3, 0.6, 0))["limit"] == "none").all()
    assert (logme_targets(*blobs(50, 160, 3, 0.3, 2))["limit"] == "noise_free").any()


def test_logme_golden_section_fallback():
    f, y = blobs(80, 120, 4, 0.3, 1)
    capped = logme_targets(f, y, max_iter=1)  # fixed point stopped early: golden-section search finishes
    assert not capped["converged"].any()
    np.testing.assert_allclose(capped["log_evidence"], logme_targets(f, y)["log_evidence"], rtol=1e-10)


def test_logme_better_features_score_higher():
    lo = logme(*blobs(300, 16, 4, 0.2, 7))
    hi = logme(*blobs(300, 16, 4, 2.0, 7))
    assert hi > lo


def test_logme_bad_input():
    f, y = blobs(40, 5, 2, 1.0, 8)
    with pytest.raises(ValueError, match="distinct class"):
        logme(f, np.zeros(40, dtype=int))
    with pytest.raises(ValueError, match="mismatched"):
        logme(f, y[:-1])
    bad = f.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        logme(bad, y)
    with pytest.raises(ValueError, match="all zeros"):
        logme(np.zeros((40, 5)), y)
    with pytest.raises(ValueError, match="exact linear function"):  # the features contain the label
        logme(np.hstack([f, np.eye(2)[y]]), y)
    with pytest.raises(ValueError, match="all zero"):
        logme(f, np.column_stack([f[:, 0], np.zeros(40)]), regression=True)
    with pytest.raises(TypeError, match="integer class"):
        logme(f, f[:, 0])
    with pytest.raises(ValueError, match="2-D"):
        logme(f[:, 0], y)
    with pytest.raises(ValueError, match="tol"):
        logme(f, y, tol=0.0)
    with pytest.raises(TypeError, match="regression"):
        logme(f, y, regression="no")


def test_logme_reference_implementation_peer():
    """The authors' LogME.py (github.com/thuml/LogME; put it on the path to run this).

    N > D, full rank: agrees with its default (fixed-point) path to 1e-6.
    N < D: that path omits (D - r)/2 log(alpha) and is far off; its older eigen path is right up to its
    loose 1e-2 stopping tolerance.
    """
    ref = pytest.importorskip("LogME", reason="authors' LogME.py (thuml/LogME) not importable")
    f, y = blobs(400, 24, 5, 0.5, 9)
    assert logme(f, y) == pytest.approx(ref.LogME().fit(f, y), rel=1e-6)
    f, y = blobs(80, 120, 4, 0.3, 1)
    ours = logme(f, y)
    assert abs(ref.LogME().fit(f, y) - ours) > 0.1
    assert ref.LogME()._fit_icml(f, y) == pytest.approx(ours, abs=2e-3)


# -------------------------------------------------------------------------------------------- LEEP
def leep_loops(theta, y):
    n, z = theta.shape
    classes = np.unique(y)
    joint = np.zeros((len(classes), z))
    for i in range(n):
        for a in range(z):
            joint[np.searchsorted(classes, y[i]), a] += theta[i, a] / n
    total = 0.0
    for i in range(n):
        yi = np.searchsorted(classes, y[i])
        total += math.log(sum(joint[yi, a] / joint[:, a].sum() * theta[i, a] for a in range(z)
                              if joint[:, a].sum() > 0))
    return total / n


def test_leep_hand_computed():
    theta = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.5, 0.5]])
    y = np.array([0, 1, 1, 0])
    # P(y,z) = [[.35, .15], [.2, .3]], P(z) = [.55, .45], P(y|z=0) = (7/11, 4/11), P(y|z=1) = (1/3, 2/3)
    # EEP = 0.9*7/11 + 0.1/3 = 20/33, 0.2*4/11 + 0.8*2/3 = 20/33, 0.6*4/11 + 0.4*2/3 = 16/33, 0.5*7/11 + 0.5/3 = 16/33
    assert leep(theta, y) == pytest.approx(0.5 * math.log(320 / 1089), rel=1e-14)


def test_leep_brute_force_and_nce_identity():
    rng = np.random.default_rng(10)
    logits = rng.standard_normal((150, 7)) * 2
    logits[:, 6] = -1e3  # an (almost) never-predicted source class
    theta = np.exp(logits - logits.max(1, keepdims=True))
    theta /= theta.sum(1, keepdims=True)
    y = rng.integers(0, 4, 150)
    assert leep(theta, y) == pytest.approx(leep_loops(theta, y), rel=1e-12)
    assert leep(torch.tensor(theta, dtype=torch.float32), y) == pytest.approx(leep_loops(theta, y), rel=1e-5)
    z = rng.integers(0, 5, 150)
    assert leep(np.eye(5)[z], y) == pytest.approx(nce(z, y), rel=1e-12)  # one-hot theta: LEEP = NCE


def test_leep_bad_input():
    theta = np.full((6, 3), 1 / 3)
    y = np.array([0, 1, 0, 1, 0, 1])
    with pytest.raises(ValueError, match="sum to 1"):
        leep(theta * 2, y)
    with pytest.raises(ValueError, match="negative"):
        leep(theta - 0.5, y)
    with pytest.raises(ValueError, match="mismatched"):
        leep(theta, y[:5])
    with pytest.raises(ValueError, match="distinct class"):
        leep(theta, np.zeros(6, dtype=int))
    bad = theta.copy()
    bad[0, 0] = np.inf
    with pytest.raises(ValueError, match="NaN/Inf"):
        leep(bad, y)


# --------------------------------------------------------------------------------------------- NCE
def test_nce_hand_computed_and_brute_force():
    # z=0: y uniform over {0, 1} (H = log 2, weight 1/2); z=1: y=1 always (H = 0)
    assert nce([0, 0, 1, 1], [0, 1, 1, 1]) == pytest.approx(-0.5 * math.log(2), rel=1e-14)
    rng = np.random.default_rng(11)
    z, y = rng.integers(0, 6, 300), rng.integers(0, 4, 300)
    h = sum((z == a).mean() * entropy(np.bincount(y[z == a], minlength=4)) for a in np.unique(z))
    assert nce(z, y) == pytest.approx(-h, rel=1e-12)
    assert nce(np.zeros(300, dtype=int), y) == pytest.approx(-entropy(np.bincount(y)), rel=1e-12)


def test_nce_zero_when_source_determines_target():
    z = np.random.default_rng(12).integers(0, 9, 200)
    assert nce(z, z % 3) == 0.0           # many-to-one map
    assert nce(z, 100 + 7 * z) == 0.0     # relabelling
    with pytest.raises(ValueError, match="mismatched"):
        nce(z, z[:-1] % 3)
    with pytest.raises(ValueError, match="distinct class"):
        nce(z, np.ones(200, dtype=int))


# ----------------------------------------------------------------------------------------- H-score
def hscore_numpy(f, y):
    """Bao et al.'s definition with np.cov and np.linalg.pinv(rcond=1e-15)."""
    g = np.zeros_like(f)
    for c in np.unique(y):
        g[y == c] = f[y == c].mean(0)
    return np.trace(np.linalg.pinv(np.cov(f, rowvar=False), rcond=1e-15) @ np.cov(g, rowvar=False))


def test_hscore_against_pinv():
    scales = np.linspace(0.05, 4.0, 15)
    f, y = blobs(250, 15, 4, 0.7, 13, scales=scales)
    assert hscore(f, y) == pytest.approx(hscore_numpy(f, y), rel=1e-9)
    dup = np.hstack([f, f[:, :5] * 2.0])  # rank-deficient covariance: pseudo-inverse
    assert hscore(dup, y) == pytest.approx(hscore_numpy(dup, y), rel=1e-8)
    assert hscore(dup, y) == pytest.approx(hscore(f, y), rel=1e-8)


def test_hscore_invariance_and_saturation():
    f, y = blobs(200, 8, 3, 0.6, 14)
    rng = np.random.default_rng(15)
    a = rng.standard_normal((8, 8)) + 3 * np.eye(8)  # invertible
    base = hscore(f, y)
    assert 0.0 <= base <= 2.0
    assert hscore(f @ a + 4.0, y) == pytest.approx(base, rel=1e-8)   # any invertible affine map
    g, yg = blobs(30, 50, 3, 0.1, 16)                                # N <= D: saturates at C - 1
    assert hscore(g, yg) == pytest.approx(2.0, rel=1e-9)


def test_hscore_shrinkage_against_sklearn():
    lw_cls = pytest.importorskip("sklearn.covariance").LedoitWolf
    for f, y in [blobs(120, 10, 3, 0.5, 17, scales=np.linspace(0.2, 3, 10)), blobs(40, 90, 4, 0.5, 18)]:
        n = len(f)
        lw = lw_cls().fit(f)
        fc = f - f.mean(0)
        g = np.zeros_like(fc)
        for c in np.unique(y):
            g[y == c] = fc[y == c].mean(0)
        ref = np.trace(np.linalg.pinv(lw.covariance_) @ ((1 - lw.shrinkage_) * (g.T @ g / n)))
        assert hscore(f, y, shrinkage=True) == pytest.approx(ref, rel=1e-9)
        assert 0.0 < hscore(f, y, shrinkage=True) <= hscore(f, y) + 1e-12


def test_hscore_shrinkage_scale_behaviour():
    f, y = blobs(60, 40, 3, 0.5, 19)
    base = hscore(f, y, shrinkage=True)
    q, _ = np.linalg.qr(np.random.default_rng(20).standard_normal((40, 40)))
    assert hscore(7.0 * f @ q - 2.0, y, shrinkage=True) == pytest.approx(base, rel=1e-8)
    assert hscore(f * np.linspace(0.1, 5, 40), y, shrinkage=True) != pytest.approx(base, rel=1e-3)


def test_hscore_bad_input():
    f, y = blobs(30, 4, 2, 1.0, 21)
    with pytest.raises(ValueError, match="constant"):
        hscore(np.ones((30, 4)), y)
    with pytest.raises(ValueError, match="distinct class"):
        hscore(f, np.zeros(30, dtype=int))
    with pytest.raises(ValueError, match="mismatched"):
        hscore(f, y[:10])
    with pytest.raises(TypeError, match="shrinkage"):
        hscore(f, y, shrinkage="yes")


# --------------------------------------------------------------------------------------- TransRate
def transrate_numpy(f, y, eps=1e-4):
    z = f - f.mean(0)

    def rate(block):
        n, d = block.shape
        return 0.5 * np.linalg.slogdet(np.eye(d) + block.T @ block / (n * eps))[1]

    return rate(z) - np.mean([rate(z[y == c]) for c in np.unique(y)])


@pytest.mark.parametrize("n,d", [(200, 12), (40, 70)])
def test_transrate_against_slogdet(n, d):
    f, y = blobs(n, d, 3, 0.8, 22)
    assert transrate(f, y) == pytest.approx(transrate_numpy(f, y), rel=1e-10)
    assert transrate(f, y, eps=0.5) == pytest.approx(transrate_numpy(f, y, 0.5), rel=1e-10)


def test_transrate_separation_and_scale():
    values = [transrate(*blobs(300, 6, 3, sep, 23), eps=0.1) for sep in (0.0, 0.5, 1.0, 3.0)]
    assert values == sorted(values) and values[-1] > values[0] + 0.5
    f, y = blobs(100, 6, 3, 1.0, 24)
    assert transrate(3.0 * f, y, eps=0.9) == pytest.approx(transrate(f, y, eps=0.1), rel=1e-10)
    assert transrate(3.0 * f, y, eps=0.1) != pytest.approx(transrate(f, y, eps=0.1), rel=1e-3)
    with pytest.raises(ValueError, match="eps"):
        transrate(f, y, eps=0.0)
    with pytest.raises(ValueError, match="constant"):
        transrate(np.zeros((100, 6)), y)


# ----------------------------------------------------------------------------------------- the table
def test_transfer_table():
    f, y = blobs(120, 8, 3, 1.0, 25)
    g, _ = blobs(120, 5, 3, 0.1, 26)
    table = transfer_table({"good": f, "bad": g}, y)
    assert list(table.columns) == list(COLUMNS)
    check_tidy(table, "transfer_table")
    assert table[["run", "step", "split", "ci_low", "ci_high"]].isna().all().all()
    assert table.drop_duplicates("layer")[["layer", "layer_index"]].values.tolist() == [["good", 0], ["bad", 1]]
    assert len(table) == 8
    got = table.set_index(["layer", "measure"])["value"]
    assert got["good", "hscore"] == pytest.approx(hscore_numpy(f, y), rel=1e-9)
    assert got["good", "transrate"] == pytest.approx(transrate_numpy(f, y), rel=1e-10)
    assert got["good", "logme"] > got["bad", "logme"]
    one = transfer_table(f, y, measures="hscore_shrinkage")
    assert one["layer"].tolist() == ["features"] and len(one) == 1
    with pytest.raises(ValueError, match="measures"):
        transfer_table(f, y, measures=["leep"])
    with pytest.raises(ValueError, match="layer 'x'"):
        transfer_table({"x": np.ones((120, 3))}, y)
    with pytest.raises(TypeError, match="positional"):
        transfer_table(f, y, "logme")  # options are keyword-only


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    f, y = blobs(300, 40, 4, 0.5, 27)
    ft = torch.tensor(f, device="cuda")
    assert logme(ft, y) == pytest.approx(logme(f, y), rel=1e-9)
    g, yg = blobs(60, 200, 3, 0.3, 28)
    assert logme(torch.tensor(g, device="cuda"), yg) == pytest.approx(logme(g, yg), rel=1e-9)
    assert hscore(ft, y) == pytest.approx(hscore(f, y), rel=1e-9)
    assert hscore(ft, y, shrinkage=True) == pytest.approx(hscore(f, y, shrinkage=True), rel=1e-9)
    assert transrate(ft, y) == pytest.approx(transrate(f, y), rel=1e-9)
    theta = np.random.default_rng(29).dirichlet(np.ones(5), 300)
    assert leep(torch.tensor(theta, device="cuda"), y) == pytest.approx(leep(theta, y), rel=1e-12)

"""Calibrated similarity (permutation nulls, chance-corrected scores, resampling intervals).

Known answers: an exact (rotated) copy has the smallest p-value 1/(1+T) and calibrated score 1; p-values of
independent data are uniform (KS test, false-positive rate inside a binomial interval); the batched nulls equal a
plain per-permutation loop over the library's own `cka` / `rsa` / `mutual_knn` (permutations redrawn here from the
documented rule); the null mean of linear CKA matches the closed form of the RV coefficient's permutation mean;
at fixed population CKA the raw biased CKA rises with width while the calibrated score tracks the population
value; half-sampling intervals cover a closed-form population CKA. method="moments": the closed-form mean,
variance and skewness equal those of the complete permutation distribution (N = 7, all 5040 permutations) and
Josse et al.'s variance, agree with 20 000 random permutations within the Monte-Carlo error, the Pearson type III
p-value is within 0.02 of the permutation p-value in the bulk; features and Gram routes agree; matrix == pairs.
"""
from __future__ import annotations

import importlib

import numpy as np
import pytest
from scipy.stats import binom, kstest

from workbench.results import COLUMNS, check_tidy
from workbench.similarity import (bootstrap_similarity, cca, cka, mutual_knn, permutation_matrix, permutation_test,
                                  pwcca, rsa, svcca)

cal = importlib.import_module("workbench.similarity._calibrated")  # its cost model, forced in one test

pytestmark = pytest.mark.usefixtures("one_thread")


def _perms(n, t, seed):
    """The documented permutations, drawn independently of the module."""
    rng = np.random.default_rng(seed)
    return [rng.permutation(n) for _ in range(t)]


def _rotation(d, seed):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q


def _np_linear_cka(x, y):
    """Biased linear CKA in plain numpy (Kornblith et al. 2019, Eq. 5)."""
    x = x - x.mean(0)
    y = y - y.mean(0)
    return np.linalg.norm(x.T @ y) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


# ------------------------------------------------------------------------------------------ exact copies
@pytest.mark.parametrize("measure,same", [("cka", "rotated"), ("cka_debiased", "rotated"), ("cka_rbf", "rotated"),
                                          ("rsa", "copy"), ("mutual_knn", "rotated"), ("cca", "rotated"),
                                          ("pwcca", "copy")])
def test_an_exact_copy_has_the_smallest_p_value_and_calibrated_score_one(measure, same):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 5))
    y = x @ _rotation(5, 2) if same == "rotated" else x.copy()
    t = 49
    r = permutation_test(x, y, measure=measure, n_permutations=t, seed=3)
    assert r.score == pytest.approx(1.0, abs=1e-9)
    assert r.p_value == pytest.approx(1.0 / (1 + t))
    assert r.calibrated == pytest.approx(1.0, abs=1e-9)
    assert r.null.shape == (t,) and r.null.max() < 0.9  # shuffled pairs are far from a perfect score
    assert r.null_mean == pytest.approx(r.null.mean()) and r.null_sd == pytest.approx(r.null.std(ddof=1))
    assert r.z_score == pytest.approx((r.score - r.null.mean()) / r.null.std(ddof=1))
    row = r.to_frame()
    check_tidy(row)
    assert list(row.columns[:len(COLUMNS)]) == list(COLUMNS)
    assert row.loc[0, "p_value"] == r.p_value and row.loc[0, "n_permutations"] == t


# ------------------------------------------------------------------------------------ independent data
@pytest.mark.parametrize("measure,options", [("cka", None), ("cka_debiased", None), ("mutual_knn", {"k": 3})])
def test_p_values_of_independent_data_are_uniform(measure, options):
    reps, t = 100, 99
    pvals = []
    for rep in range(reps):
        rng = np.random.default_rng(1000 + rep)
        x, y = rng.normal(size=(20, 3)), rng.normal(size=(20, 4))
        pvals.append(permutation_test(x, y, measure=measure, n_permutations=t, seed=rep, options=options).p_value)
    pvals = np.asarray(pvals)
    assert pvals.min() >= 1.0 / (1 + t) and pvals.max() <= 1.0
    hi = binom.ppf(0.999, reps, 0.05)  # P(p <= 0.05) = 5/100 exactly for a valid test with T = 99
    n_fp = int(np.sum(pvals <= 0.05))
    assert n_fp <= hi
    if measure != "mutual_knn":  # continuous: uniform; k-NN overlaps tie often, which makes p conservative
        assert kstest(pvals, "uniform").pvalue > 1e-3
        assert n_fp >= binom.ppf(0.001, reps, 0.05)


# ------------------------------------------------------------------------- batched == per-pair loop
def _layers(n=30, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    return {"x": x, "mix": np.tanh(x @ rng.normal(size=(4, 6))) + 0.5 * rng.normal(size=(n, 6)),
            "wide": np.c_[x, rng.normal(size=(n, 40))],  # width >= N: kept as a Gram matrix
            "noise": rng.normal(size=(n, 3))}


@pytest.mark.parametrize("debiased", [False, True])
def test_permutation_matrix_equals_the_per_pair_loop_with_cka(debiased):
    layers = _layers()
    other = {"y": layers["mix"] + np.random.default_rng(5).normal(size=(30, 6)), "z": layers["noise"]}
    t, seed = 25, 7
    table = permutation_matrix(layers, other, measure="cka_debiased" if debiased else "cka", n_permutations=t,
                               seed=seed)
    check_tidy(table, require=["layer_b", "p_value", "null_mean", "calibrated"])
    assert len(table) == len(layers) * len(other)
    perms = _perms(30, t, seed)
    for row in table.itertuples():
        a, b = layers[row.layer], other[row.layer_b]
        score = cka(a, b, debiased=debiased)
        null = np.array([cka(a, b[p], debiased=debiased) for p in perms])
        if not debiased:
            assert score == pytest.approx(_np_linear_cka(a, b), abs=1e-12)
        assert row.value == pytest.approx(score, abs=1e-12)
        assert row.null_mean == pytest.approx(null.mean(), abs=1e-12)
        assert row.null_sd == pytest.approx(null.std(ddof=1), abs=1e-12)
        assert row.p_value == pytest.approx((1 + np.sum(null >= score - 1e-12)) / (1 + t))
        assert row.calibrated == pytest.approx((score - null.mean()) / (1 - null.mean()), abs=1e-12)
        assert row.significant == (row.p_value <= 0.05)


@pytest.mark.parametrize("debiased", [False, True])
def test_linear_layers_scored_through_grams_equal_the_loop(debiased, monkeypatch):
    """Widths below N, but the Gram route (<K, P L P^T>) forced by making gathers free in the cost model."""
    monkeypatch.setattr(cal, "_GATHER_COST", 0)
    rng = np.random.default_rng(9)
    x = rng.normal(size=(30, 20))
    layers = {"x": x, "y": np.tanh(x @ rng.normal(size=(20, 25))) + rng.normal(size=(30, 25))}
    table = permutation_matrix(layers, measure="cka_debiased" if debiased else "cka", n_permutations=12, seed=4)
    for row in table.itertuples():
        a, b = layers[row.layer], layers[row.layer_b]
        null = np.array([cka(a, b[p], debiased=debiased) for p in _perms(30, 12, 4)])
        assert row.value == pytest.approx(cka(a, b, debiased=debiased), abs=1e-12)
        assert row.null_mean == pytest.approx(null.mean(), abs=1e-12)
        assert row.null_sd == pytest.approx(null.std(ddof=1), abs=1e-12)


@pytest.mark.parametrize("measure", ["cka_rbf", "mutual_knn", "rsa", "cca"])
def test_every_cell_of_the_matrix_is_the_single_pair_test(measure):
    layers = {k: v for k, v in _layers(seed=3).items() if k != "wide" or measure != "cca"}  # CCA needs width < N
    options = {"k": 4} if measure == "mutual_knn" else None
    table = permutation_matrix(layers, measure=measure, n_permutations=10, seed=11, options=options)
    assert len(table) == len(layers) ** 2
    for row in table.itertuples():
        one = permutation_test(layers[row.layer], layers[row.layer_b], measure=measure, n_permutations=10, seed=11,
                               options=options)
        assert row.value == pytest.approx(one.score, abs=1e-12)
        assert row.null_mean == pytest.approx(one.null_mean, abs=1e-12)
        assert row.p_value == one.p_value


@pytest.mark.parametrize("measure,fn,options", [
    ("rsa", rsa, {}), ("rsa", rsa, {"metric": "euclidean", "compare": "pearson"}),
    ("rsa", rsa, {"metric": "sqeuclidean", "compare": "centered-cosine"}),
    ("rsa", rsa, {"compare": "kendall"}),  # the one measure that loops over the library function
    ("mutual_knn", mutual_knn, {"k": 4}), ("cka_rbf_debiased", cka, {"kernel": "rbf", "debiased": True}),
    ("cca", cca, {"summary": "r2"}), ("svcca", svcca, {"dims": (3, 2)}), ("svcca", svcca, {"variance": 0.9}),
    ("pwcca", pwcca, {}),
])
def test_batched_nulls_equal_the_library_function_on_shuffled_rows(measure, fn, options):
    layers = _layers(n=25, seed=4)
    x, y = layers["x"], layers["mix"]
    perms = _perms(25, 15, 2)
    call = {k: v for k, v in options.items() if k not in ("kernel", "debiased")}
    r = permutation_test(x, y, measure=measure, n_permutations=15, seed=2, options=call or None)
    ref = np.array([fn(x, y[p], **options) for p in perms])
    assert r.score == pytest.approx(fn(x, y, **options), abs=1e-12)
    np.testing.assert_allclose(r.null, ref, atol=1e-12)


def test_the_cca_family_sees_the_inputs_precision():
    """CCA's default rank tolerance follows the input dtype: a float32 column that is the sum of two others is
    dependent at float32 precision (rank 5 of 6) but not at float64's, and the two ranks give different values."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5)).astype(np.float32)
    x = np.c_[x, x[:, :1] + x[:, 1:2]]
    y = (x @ rng.normal(size=(6, 6))).astype(np.float32) + rng.normal(size=(60, 6)).astype(np.float32)
    assert abs(cca(x, y) - cca(x.astype(np.float64), y.astype(np.float64))) > 0.05  # the dtype matters
    assert permutation_test(x, y, measure="cca", n_permutations=3).score == pytest.approx(cca(x, y), abs=1e-12)
    table = permutation_matrix({"x": x}, {"y": y}, measure="cca", n_permutations=3)
    assert table.loc[0, "value"] == pytest.approx(cca(x, y), abs=1e-12)
    assert bootstrap_similarity(x, y, measure="cca", n_boot=2).loc[0, "value"] == pytest.approx(cca(x, y), abs=1e-12)


def test_linear_cka_null_mean_matches_the_closed_form_permutation_mean():
    """E[CKA(X, Y[pi])] = sqrt(beta_X beta_Y) / (N - 1), beta = tr(K)^2 / ||K||_F^2 (RV coefficient moments)."""
    rng = np.random.default_rng(8)
    n = 30
    x, y = rng.normal(size=(n, 12)) * np.linspace(0.2, 2, 12), rng.normal(size=(n, 5))

    def beta(z):
        z = z - z.mean(0)
        k = z @ z.T
        return np.trace(k) ** 2 / np.sum(k * k)

    exact = np.sqrt(beta(x) * beta(y)) / (n - 1)
    r = permutation_test(x, y, n_permutations=2000, seed=0)
    assert abs(r.null_mean - exact) < 4 * r.null_sd / np.sqrt(2000)


# ------------------------------------------------------------------------------------ the width confound
def test_calibration_removes_the_width_confound_of_biased_cka():
    """Fixed content: Z [200, 3] embedded by random maps W [3, D] with orthonormal rows plus independent noise
    of variance v per unit, v solving 6 v + D v^2 = 1, so the population CKA 3 / (3 + 6 v + D v^2) (computed
    here from the covariances) is 0.75 for every D, while the number of noise units grows past N.

    Observed: raw biased CKA rises with D (0.76 -> 0.93; its permutation mean rises to ~0.72 at D = 2048); the
    calibrated score stays at the population value (as debiased CKA does). Mutual k-NN also rises with D here
    (modestly), but its permutation mean is k / (N - 1) at every width, so calibration shifts it by about a
    constant and cannot remove that dependence (asserted too, as observed)."""
    n, widths = 200, (32, 128, 512, 2048)
    rng = np.random.default_rng(0)
    z = rng.normal(size=(n, 3))
    raw, calibrated, population, knn_raw, knn_null, knn_calibrated = [], [], [], [], [], []
    for d in widths:
        var = (np.sqrt(36 + 4 * d) - 6) / (2 * d)
        wa, wb = (np.linalg.qr(rng.normal(size=(d, 3)))[0].T for _ in range(2))
        a = z @ wa + np.sqrt(var) * rng.normal(size=(n, d))
        b = z @ wb + np.sqrt(var) * rng.normal(size=(n, d))
        ga, gb = wa @ wa.T, wb @ wb.T  # Cov(a) = wa^T wa + var I: its Frobenius norm from 3 x 3 products

        fro2_a, fro2_b = (np.sum(g * g) + 2 * var * np.trace(g) + var ** 2 * d for g in (ga, gb))
        population.append(np.trace(ga @ gb) / np.sqrt(fro2_a * fro2_b))
        r = permutation_test(a, b, n_permutations=60, seed=1)
        raw.append(r.score)
        calibrated.append(r.calibrated)
        k = permutation_test(a, b, measure="mutual_knn", n_permutations=30, seed=1)
        knn_raw.append(k.score)
        knn_null.append(k.null_mean)
        knn_calibrated.append(k.calibrated)
    raw, calibrated, population = map(np.asarray, (raw, calibrated, population))
    np.testing.assert_allclose(population, 0.75, atol=1e-9)  # the content is fixed
    assert np.all(np.diff(raw) > 0.015) and raw[-1] - raw[0] > 0.12  # raw CKA rises with width (0.76 -> 0.93)
    raw_error, cal_error = np.abs(raw - population), np.abs(calibrated - population)
    assert raw_error[-1] > 0.12 and cal_error.max() < 0.03
    assert np.ptp(calibrated) < np.ptp(raw) / 5  # observed: 0.008 vs 0.17
    knn_raw, knn_cal = np.asarray(knn_raw), np.asarray(knn_calibrated)
    assert knn_raw[-1] - knn_raw[0] > 0.03  # mutual k-NN rises with width here too (0.30 -> 0.35)...
    np.testing.assert_allclose(knn_null, 10 / (n - 1), rtol=0.1)  # ...while its chance level does not move,
    assert abs(np.ptp(knn_cal) - np.ptp(knn_raw)) < 0.01  # so calibration does not remove it


# --------------------------------------------------------------------------------------------- bootstrap
@pytest.mark.parametrize("method", ["half-sampling", "percentile"])
def test_bootstrap_of_identical_representations_is_one(method):
    x = np.random.default_rng(0).normal(size=(50, 4))
    t = bootstrap_similarity(x, 3 * x @ _rotation(4, 1), n_boot=30, method=method)
    check_tidy(t)
    assert t.loc[0, ["value", "ci_low", "ci_high"]].tolist() == pytest.approx([1.0, 1.0, 1.0], abs=1e-9)
    assert t.loc[0, "n_boot"] == 30 and t.loc[0, "measure"] == "cka_linear"


def test_half_sampling_intervals_cover_the_population_cka():
    """X ~ N(0, I_2), Y = [X, E] with E ~ N(0, I_4): population linear CKA = ||S_xy||^2 / (||S_xx|| ||S_yy||)
    = 2 / (sqrt(2) sqrt(6))."""
    truth = 2 / (np.sqrt(2) * np.sqrt(6))
    reps, hits, widths = 30, 0, []
    for rep in range(reps):
        rng = np.random.default_rng(500 + rep)
        x = rng.normal(size=(120, 2))
        y = np.c_[x, rng.normal(size=(120, 4))]
        row = bootstrap_similarity(x, y, measure="cka_debiased", n_boot=60, seed=rep).iloc[0]
        hits += row["ci_low"] <= truth <= row["ci_high"]
        widths.append(row["ci_high"] - row["ci_low"])
    assert hits >= binom.ppf(0.001, reps, 0.95) - 2  # ~95 % nominal; 60 resamples make the quantiles noisy
    assert 0.05 < np.mean(widths) < 0.6


# -------------------------------------------------------------------------------------------- bad input
def test_bad_input_names_the_argument():
    x = np.random.default_rng(0).normal(size=(20, 3))
    with pytest.raises(ValueError, match=r"a has 20, b has 19"):
        permutation_test(x, x[:19])
    with pytest.raises(ValueError, match="n_permutations"):
        permutation_test(x, x, n_permutations=0)
    with pytest.raises(ValueError, match="measure"):
        permutation_test(x, x, measure="procrustes")
    with pytest.raises(ValueError, match="options"):
        permutation_test(x, x, measure="mutual_knn", options={"kk": 3})
    with pytest.raises(ValueError, match="options"):
        permutation_test(x, x, measure="cka", options={"debiased": True})
    with pytest.raises(ValueError, match=r"k"):
        permutation_test(x, x, measure="mutual_knn", options={"k": 20})
    with pytest.raises(ValueError, match=r"a_layers\['l0'\] has 20 rows"):
        permutation_matrix({"l0": x, "l1": x[:18]})
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_similarity(x, x, n_boot=1)
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_similarity(x, x, confidence=1.0)
    with pytest.raises(ValueError, match="half-sampling"):
        bootstrap_similarity(x[:6], x[:6], measure="cka_debiased")


# ----------------------------------------------------------------------------------------------- figures
def test_null_figure_of_one_pair_draws_the_null_and_marks_the_observed_score():
    from workbench import figures as fig_mod
    from workbench.figures import plotted_data

    x = np.random.default_rng(0).normal(size=(30, 3))
    r = permutation_test(x, x @ _rotation(3, 0), n_permutations=19, seed=0)
    fig = fig_mod.null_figure(r)
    assert [t.type for t in fig.data] == ["histogram"]
    np.testing.assert_allclose(np.asarray(fig.data[0].x, dtype=float), r.null)
    assert [s.x0 for s in fig.layout.shapes] == [pytest.approx(r.score)]  # the observed score's line
    drawn = plotted_data(fig)
    assert (drawn["measure"] == "cka_linear_null").sum() == 19
    assert drawn.loc[drawn["measure"] == "cka_linear", "value"].tolist() == [pytest.approx(r.score)]


def test_null_figure_of_a_table_marks_the_non_significant_cells():
    from workbench import figures as fig_mod
    layers = _layers(n=30, seed=1)
    table = permutation_matrix({k: layers[k] for k in ("x", "mix", "noise")}, n_permutations=19, seed=0)
    fig = fig_mod.null_figure(table, alpha=0.05)
    heat = fig.data[0]
    assert heat.type == "heatmap" and list(heat.y) == ["x", "mix", "noise"]
    z, text = np.asarray(heat.z, dtype=float), np.asarray(heat.text)
    for row in table.itertuples():
        i, j = ["x", "mix", "noise"].index(row.layer), ["x", "mix", "noise"].index(row.layer_b)
        assert z[i, j] == pytest.approx(row.calibrated)
        assert text[i, j] == ("" if row.p_value <= 0.05 else "n.s.")
    assert (text == "n.s.").any() and (text == "").any()  # noise vs the others: not significant; diagonal: is
    with pytest.raises(TypeError, match="result_or_table"):
        fig_mod.null_figure(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="p_value"):
        fig_mod.null_figure(table.drop(columns="p_value"))


# ------------------------------------------------------------------ closed-form moments (method="moments")
def _np_null(x, y, perms):
    """Biased linear CKA of x with y[p] for every row p of perms, in plain numpy (one batched matmul)."""
    xc, yc = x - x.mean(0), y - y.mean(0)
    norm = np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc)
    return np.square(np.matmul(xc.T, yc[perms])).sum(axis=(1, 2)) / norm


def _josse_variance(x, y):
    """Var of the RV coefficient under permutations in the (beta, gamma) form of Josse, Pagès & Husson 2008."""
    n = x.shape[0]

    def terms(z):
        z = z - z.mean(0)
        w = z @ z.T
        beta = np.trace(w) ** 2 / np.sum(w * w)
        delta = np.sum(np.diag(w) ** 2) / np.sum(w * w)
        gamma = (n - 1) * (n * (n + 1) * delta - (n - 1) * (beta + 2)) / ((n - 3) * (n - 1 - beta))
        return n - 1 - beta, gamma

    (ax, gx), (ay, gy) = terms(x), terms(y)
    return 2 * ax * ay / ((n + 1) * (n - 1) ** 2 * (n - 2)) * (1 + (n - 3) * gx * gy / (2 * n * (n - 1)))


def _skew_and_se(v):
    """Sample skewness and its delta-method standard error (influence function of m3 / m2^1.5)."""
    c = v - v.mean()
    s2, m3 = np.mean(c ** 2), np.mean(c ** 3)
    g = m3 / s2 ** 1.5
    psi = (c ** 3 - 3 * s2 * c - m3) / s2 ** 1.5 - 1.5 * g * (c ** 2 - s2) / s2
    return g, psi.std() / np.sqrt(v.size)


@pytest.mark.parametrize("dx,dy", [(3, 2), (10, 2), (9, 12)])  # width > N = 7: the Gram route of a side
def test_moments_equal_those_of_the_complete_permutation_distribution(dx, dy):
    """N = 7: all 5040 permutations enumerated; mean, variance and skewness of the exact null distribution."""
    import itertools

    rng = np.random.default_rng(dx + dy)
    n = 7
    x = rng.normal(size=(n, dx)) * np.linspace(0.3, 2.0, dx)
    x[0] *= 3.0  # an outlying example: unequal diagonal of the Gram matrix (S2, S3, B, R matter)
    y = rng.standard_exponential(size=(n, dy)) ** 2
    null = _np_null(x, y, np.array(list(itertools.permutations(range(n)))))
    r = permutation_test(x, y, method="moments")
    assert r.score == pytest.approx(_np_linear_cka(x, y), abs=1e-12)
    assert r.null_mean == pytest.approx(null.mean(), abs=1e-12)
    assert r.null_sd == pytest.approx(null.std(), rel=1e-9)  # ddof=0: the whole distribution
    assert r.null_sd ** 2 == pytest.approx(_josse_variance(x, y), rel=1e-9)
    c = null - null.mean()
    assert r.null_skew == pytest.approx(np.mean(c ** 3) / np.mean(c ** 2) ** 1.5, rel=1e-8)
    assert r.null.size == 0 and r.n_permutations == 0 and r.method == "moments"
    assert r.z_score == pytest.approx((r.score - null.mean()) / null.std(), rel=1e-9)
    assert r.calibrated == pytest.approx((r.score - null.mean()) / (1 - null.mean()), abs=1e-12)


@pytest.mark.parametrize("dependence", [0.0, 0.5])
def test_moments_match_a_monte_carlo_permutation_null(dependence):
    """N = 30, 20 000 random permutations (numpy): each closed-form moment within 4.5 Monte-Carlo standard errors."""
    rng = np.random.default_rng(11)
    n, t = 30, 20000
    x = rng.normal(size=(n, 5)) * np.array([3.0, 1.0, 0.5, 0.3, 0.1])
    y = dependence * x[:, :3] @ rng.normal(size=(3, 4)) + rng.standard_t(4, size=(n, 4))
    null = _np_null(x, y, np.stack(_perms(n, t, 5)))
    r = permutation_test(x, y, method="moments")
    var_se = np.sqrt(np.var((null - null.mean()) ** 2) / t)  # standard error of the sample variance
    skew, skew_se = _skew_and_se(null)
    assert abs(r.null_mean - null.mean()) < 4.5 * null.std() / np.sqrt(t)
    assert abs(r.null_sd ** 2 - null.var()) < 4.5 * var_se
    assert abs(r.null_skew - skew) < 4.5 * skew_se
    assert r.null_skew > 0.5  # the null of CKA is right-skewed here: a normal approximation would not do


def test_moments_p_value_is_close_to_the_permutation_p_value():
    """Pearson type III with the exact moments vs 20 000 permutations: |delta| < 0.02 in the bulk (Monte-Carlo
    error <= 0.0035; the approximation error itself was 0.0006 at p = 0.2 against 100 000 permutations, where the
    normal approximation is off by 0.05); tiny for an exact (rotated) copy, where the permutation p-value can only
    reach 1 / (1 + T)."""
    n, t, checked = 30, 20000, 0
    for rep in range(8):  # independent, then weakly dependent data: p-values spread over the bulk
        rng = np.random.default_rng(40 + rep)
        x = rng.normal(size=(n, 4)) * np.array([2.0, 1.0, 0.5, 0.2])
        y = 0.05 * (rep % 4) * x[:, :2] @ rng.normal(size=(2, 3)) + rng.standard_t(5, size=(n, 3))
        null = _np_null(x, y, np.stack(_perms(n, t, rep)))
        r = permutation_test(x, y, method="moments")
        p_perm = (1 + np.sum(null >= r.score - 1e-12)) / (1 + t)
        if 0.05 <= p_perm <= 0.95:
            checked += 1
            assert abs(r.p_value - p_perm) < 0.02
    assert checked >= 5
    x = np.random.default_rng(1).normal(size=(n, 4))
    copy = permutation_test(x, x @ _rotation(4, 2), method="moments")
    assert copy.score == pytest.approx(1.0, abs=1e-12) and copy.calibrated == pytest.approx(1.0, abs=1e-12)
    assert copy.p_value < 1e-8


def test_moments_matrix_equals_the_per_pair_calls():
    layers = _layers(n=30, seed=2)  # "wide" (44 > N features) is taken through its Gram matrix
    other = {"y": layers["mix"] + np.random.default_rng(3).normal(size=(30, 6)), "wide": layers["wide"]}
    table = permutation_matrix(layers, other, method="moments")
    check_tidy(table, require=["layer_b", "p_value", "null_mean", "null_sd", "null_skew", "calibrated", "z_score"])
    assert len(table) == len(layers) * len(other) and (table["n_permutations"] == 0).all()

    def beta(z):
        z = z - z.mean(0)
        w = z @ z.T
        return np.trace(w) ** 2 / np.sum(w * w)

    for row in table.itertuples():
        a, b = layers[row.layer], other[row.layer_b]
        one = permutation_test(a, b, method="moments")
        assert row.value == pytest.approx(_np_linear_cka(a, b), abs=1e-12)
        assert row.null_mean == pytest.approx(np.sqrt(beta(a) * beta(b)) / 29, abs=1e-12)
        for col in ("null_mean", "null_sd", "null_skew", "p_value", "z_score", "calibrated"):
            assert getattr(row, col) == pytest.approx(getattr(one, col),
                                                      rel=1e-9, abs=1e-14)
        assert row.significant == (row.p_value <= 0.05)
    self_table = permutation_matrix(layers, method="moments")  # b_layers=None shares the per-layer moments
    sub = table[table.layer_b == "wide"].set_index("layer")["null_sd"]
    mine = self_table[self_table.layer_b == "wide"].set_index("layer")["null_sd"]
    np.testing.assert_allclose(mine[sub.index], sub, rtol=1e-12)


def test_moments_bad_input_names_the_argument():
    x = np.random.default_rng(0).normal(size=(20, 3))
    with pytest.raises(ValueError, match="method"):
        permutation_test(x, x, method="closed-form")
    with pytest.raises(ValueError, match=r"method='moments'.*measure='cka'"):
        permutation_test(x, x, measure="rsa", method="moments")
    with pytest.raises(ValueError, match=r"method='moments'.*measure='cka'"):
        permutation_matrix({"x": x}, measure="cka_debiased", method="moments")
    with pytest.raises(ValueError, match=r"at least 6 examples.*N=5"):
        permutation_test(x[:5], x[:5], method="moments")
    with pytest.raises(ValueError, match=r"at least 6 examples.*N=5"):
        permutation_matrix({"x": x[:5]}, method="moments")


def test_moments_of_features_equal_those_through_the_gram_matrix():
    """N = 150: features (d < N, upper-triangle blocks + eigenvalues) vs the same data padded with zero columns to
    width > N (taken as its Gram matrix, every sum formed directly): the same K, so the same moments."""
    rng = np.random.default_rng(6)
    n = 150
    x = rng.normal(size=(n, 6)) * np.linspace(0.2, 3.0, 6)
    y = np.tanh(x[:, :4]) + rng.standard_t(3, size=(n, 4))
    feats = permutation_test(x, y, method="moments")
    grams = permutation_test(np.c_[x, np.zeros((n, n))], np.c_[y, np.zeros((n, n))], method="moments")
    for col in ("score", "null_mean", "null_sd", "null_skew", "p_value"):
        assert getattr(feats, col) == pytest.approx(getattr(grams, col), rel=1e-9)


def test_moments_of_an_isotropic_side_give_a_point_null():
    """One-hot rows (K = I - 11^T/N): every permutation scores the same, so sd 0, p-value 1 and calibrated 0."""
    y = np.random.default_rng(2).normal(size=(12, 3))
    perms = np.stack(_perms(12, 50, 0))
    null = _np_null(np.eye(12), y, perms)
    assert np.ptp(null) < 1e-12  # the point null, seen by brute force
    r = permutation_test(np.eye(12), y, method="moments")
    assert r.null_mean == pytest.approx(null[0], abs=1e-12) and r.score == pytest.approx(null[0], abs=1e-12)
    assert r.null_sd == 0.0 and r.p_value == 1.0 and np.isnan(r.z_score) and np.isnan(r.null_skew)
    assert r.calibrated == pytest.approx(0.0, abs=1e-12)


def test_null_figure_of_a_moments_result_draws_the_closed_form_null():
    """method="moments" has no permuted sample: the figure draws the Pearson III density with the null's exact
    moments — checked here by integrating the drawn curve (mass ~1, its mean and sd are the result's)."""
    from workbench.figures import null_figure

    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 5))
    y = x @ rng.normal(size=(5, 4)) + 3 * rng.normal(size=(40, 4))
    r = permutation_test(x, y, method="moments")
    fig = null_figure(r)
    xs, ys = np.asarray(fig.data[0].x, float), np.asarray(fig.data[0].y, float)
    inside = xs <= max(xs[ys > 0])  # the curve, cut where it spans the observed score far in the tail
    mass = np.trapezoid(ys[inside], xs[inside])
    mean = np.trapezoid(xs[inside] * ys[inside], xs[inside]) / mass
    sd = np.sqrt(np.trapezoid((xs[inside] - mean) ** 2 * ys[inside], xs[inside]) / mass)
    assert mass == pytest.approx(1.0, abs=2e-3)
    assert mean == pytest.approx(r.null_mean, abs=1e-3 * r.null_sd + 1e-9)
    assert sd == pytest.approx(r.null_sd, rel=1e-2)
    assert [s.x0 for s in fig.layout.shapes] == [pytest.approx(r.score)]

"""RSA: scipy (pdist, spearmanr/pearsonr/kendalltau) as the independent reference, the exact identity with linear
CKA (checked against `workbench.similarity._cka` and a plain-numpy HKH cosine), squared distance correlation from
its textbook formula, and peer agreement with rsatoolbox 0.3.2."""
from __future__ import annotations

import importlib

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.spatial.distance import pdist, squareform
from scipy.stats import kendalltau, pearsonr, spearmanr

from workbench.results import COLUMNS, check_tidy
from workbench.similarity import cka

rsa_mod = importlib.import_module("workbench.similarity._rsa")
rdm, rsa, rsa_matrix = rsa_mod.rdm, rsa_mod.rsa, rsa_mod.rsa_matrix

METRICS = ["euclidean", "sqeuclidean", "correlation", "cosine"]
SCIPY_COMPARE = {
    "spearman": lambda a, b: spearmanr(a, b).statistic,
    "pearson": lambda a, b: pearsonr(a, b).statistic,
    "kendall": lambda a, b: kendalltau(a, b).statistic,  # tau-b
}


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 6)) + 5.0  # an offset, to exercise the centering of the Euclidean metrics
    y = x @ rng.normal(size=(6, 9)) + 0.7 * rng.normal(size=(40, 9))
    return x, y


@pytest.fixture(params=["whole", "tiled"])
def path(request, monkeypatch):
    """'whole': the symmetrised distinct-row RDM; 'tiled': GEMM tiles of 7 rows (the path for large N)."""
    if request.param == "tiled":
        monkeypatch.setattr(rsa_mod, "_SMALL_UNIQUE", 0)
        monkeypatch.setattr(rsa_mod, "_TILE", 7 * 40)
    return request.param


def categorical(rng, n=36, classes=4):
    """Integer data with many exactly tied distances (one-hot class codes + small integer counts) and duplicates."""
    labels = rng.integers(0, classes, size=n)
    return np.hstack([np.eye(classes)[labels], rng.integers(0, 2, size=(n, 2))]).astype(float)


# ------------------------------------------------------------------------------------------------ RDMs
@pytest.mark.parametrize("metric", METRICS)
def test_rdm_matches_pdist(data, metric, path):
    x, _ = data
    ref = pdist(x, metric)
    got = rdm(x, metric=metric)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10, atol=1e-12)
    sq = rdm(x, metric=metric, square=True).numpy()
    np.testing.assert_allclose(sq, squareform(ref), rtol=1e-10, atol=1e-12)
    assert np.array_equal(sq, sq.T) and np.all(np.diag(sq) == 0.0)


@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean"])
def test_rdm_integer_data_is_exact(metric, path):
    """Dyadic data: squared distances equal pdist's bitwise; euclidean ones within 1 ulp (torch's and numpy's
    sqrt may round differently) with every tie of pdist kept as an exact tie; duplicates are exactly 0."""
    x = categorical(np.random.default_rng(1))
    ref = pdist(x, metric)
    got = rdm(x, metric=metric).numpy()
    if metric == "sqeuclidean":
        assert np.array_equal(got, ref)
    else:
        np.testing.assert_array_max_ulp(got, ref, maxulp=1)
        for value in np.unique(ref):  # ties survive exactly: rank comparisons see the same tied groups
            assert len(np.unique(got[ref == value])) == 1
    assert (ref == 0).any()  # the data does contain duplicate rows


def test_rdm_duplicates_are_zero(path):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(12, 5))
    x[7] = x[3]
    x[11] = x[3]
    for metric in METRICS:
        sq = rdm(x, metric=metric, square=True).numpy()
        assert sq[3, 7] == sq[7, 11] == sq[3, 11] == 0.0
        assert np.array_equal(sq[3], sq[7])  # duplicate rows get bitwise-equal dissimilarities


# ------------------------------------------------------------------------------------------ comparisons
@pytest.mark.parametrize("compare", ["spearman", "pearson", "kendall"])
@pytest.mark.parametrize("metric", METRICS)
def test_rsa_matches_scipy(data, metric, compare):
    x, y = data
    ref = SCIPY_COMPARE[compare](pdist(x, metric), pdist(y, metric))
    assert rsa(x, y, metric=metric, compare=compare) == pytest.approx(ref, abs=1e-12)


@pytest.mark.parametrize("compare", ["spearman", "kendall"])
def test_rank_comparisons_handle_ties(compare, path):
    """Heavily tied integer RDMs: average ranks (Spearman) and tau-b must match scipy exactly."""
    rng = np.random.default_rng(3)
    x, y = categorical(rng), categorical(rng)
    a, b = pdist(x, "euclidean"), pdist(y, "euclidean")
    assert len(np.unique(a)) < len(a) / 20  # mostly ties
    assert rsa(x, y, metric="euclidean", compare=compare) == pytest.approx(SCIPY_COMPARE[compare](a, b), abs=1e-12)


def test_spearman_ranks_are_average_ranks():
    from scipy.stats import rankdata

    v = torch.tensor([3.0, 1.0, 3.0, 2.0, 3.0, 1.0, 0.5], dtype=torch.float64)
    np.testing.assert_array_equal(rsa_mod._average_ranks(v).numpy(), rankdata(v.numpy()))
    for w in (np.random.default_rng(8).normal(size=200), np.ones(5), np.array([2.0, 1.0])):
        t = torch.tensor(w)
        np.testing.assert_array_equal(rsa_mod._average_ranks(t.clone(), overwrite=True).numpy(), rankdata(w))


def test_self_similarity_and_invariances(data):
    x, y = data
    rng = np.random.default_rng(4)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    for compare in ["spearman", "pearson", "kendall", "centered-cosine"]:
        assert rsa(x, x, compare=compare) == pytest.approx(1.0, abs=1e-12)
        base = rsa(x, y, metric="euclidean", compare=compare)
        assert rsa(3.0 * x @ q + 2.0, y, metric="euclidean", compare=compare) == pytest.approx(base, abs=1e-10)
    # correlation distance ignores per-example affine rescaling, cosine per-example scaling
    s = rng.uniform(0.5, 2.0, size=(40, 1))
    assert rsa(s * x + rng.normal(size=(40, 1)), y) == pytest.approx(rsa(x, y), abs=1e-12)
    assert rsa(s * x, y, metric="cosine") == pytest.approx(rsa(x, y, metric="cosine"), abs=1e-12)


# ------------------------------------------------------------------------------------ identities
def naive_linear_cka(x, y):
    """cos(HKH, HLH) over the full matrices: the textbook definition, plain numpy."""
    n = len(x)
    h = np.eye(n) - 1.0 / n
    k, l = h @ x @ x.T @ h, h @ y @ y.T @ h
    return np.sum(k * l) / np.sqrt(np.sum(k * k) * np.sum(l * l))


@pytest.mark.parametrize("widths", [(6, 9), (60, 5)])  # (60, 5): X wider than N, CKA's Gram path
def test_sqeuclidean_centered_cosine_equals_linear_cka(widths, path):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(40, widths[0])) + 3.0
    y = x[:, :1] * rng.normal(size=(1, widths[1])) + rng.normal(size=(40, widths[1]))
    value = rsa(x, y, metric="sqeuclidean", compare="centered-cosine")
    assert value == pytest.approx(cka(x, y), abs=1e-10)
    assert value == pytest.approx(naive_linear_cka(x, y), abs=1e-10)
    # ... and classic RSA on the same RDMs is a different number
    assert abs(rsa(x, y, metric="sqeuclidean", compare="pearson") - value) > 1e-3


def test_euclidean_centered_cosine_is_squared_distance_correlation(data):
    """Szekely, Rizzo & Bakirov 2007: dCor^2 = dCov^2(X,Y) / sqrt(dVar^2(X) dVar^2(Y)), double-centred distances."""
    x, y = data

    def centred(z):
        d = squareform(pdist(z))
        return d - d.mean(0) - d.mean(1)[:, None] + d.mean()

    a, b = centred(x), centred(y)
    dcor2 = (a * b).mean() / np.sqrt((a * a).mean() * (b * b).mean())
    assert rsa(x, y, metric="euclidean", compare="centered-cosine") == pytest.approx(dcor2, abs=1e-12)


# --------------------------------------------------------------------------------------- rsatoolbox
def test_rsatoolbox_agreement(data):
    """rsatoolbox 0.3.2 conventions: its 'euclidean' RDM is the *squared* Euclidean distance divided by the number
    of features p (so it maps to our 'sqeuclidean' / p); its 'correlation' RDM is 1 - Pearson r of the examples,
    same as ours. Its compare methods: 'spearman' (scipy.stats.rankdata average ranks), 'corr' (Pearson),
    'kendall' (= tau-b via scipy). Its RDM vector is the row-major upper triangle, like ours."""
    rsatoolbox = pytest.importorskip("rsatoolbox")
    x, y = data
    rng = np.random.default_rng(6)
    tied_x, tied_y = categorical(rng), categorical(rng)

    def peer_rdm(z, method):
        return rsatoolbox.rdm.calc_rdm(rsatoolbox.data.Dataset(z), method=method)

    for z in (x, tied_x):
        np.testing.assert_allclose(peer_rdm(z, "euclidean").dissimilarities[0],
                                   rdm(z, metric="sqeuclidean").numpy() / z.shape[1], rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(peer_rdm(x, "correlation").dissimilarities[0], rdm(x, metric="correlation").numpy(),
                               rtol=1e-6, atol=1e-12)

    ours = {"spearman": "spearman", "corr": "pearson", "kendall": "kendall"}
    for a, b, peer_metric, metric in [(x, y, "correlation", "correlation"), (x, y, "euclidean", "sqeuclidean"),
                                      (tied_x, tied_y, "euclidean", "sqeuclidean")]:
        ra, rb = peer_rdm(a, peer_metric), peer_rdm(b, peer_metric)
        for method, compare in ours.items():
            peer = float(rsatoolbox.rdm.compare(ra, rb, method=method)[0, 0])
            got = rsa(a, b, metric=metric, compare=compare)
            assert got == pytest.approx(peer, rel=1e-6, abs=1e-12), (peer_metric, method)


# ------------------------------------------------------------------------------------------- matrix
def test_rsa_matrix_matches_pairs_and_prepares_once(data, monkeypatch):
    x, y = data
    rng = np.random.default_rng(7)
    layers = {"a": x, "b": y, "c": rng.normal(size=(40, 3))}
    calls = []
    real = rsa_mod._prepare
    monkeypatch.setattr(rsa_mod, "_prepare", lambda *args: calls.append(args[1]) or real(*args))
    for compare in ["spearman", "centered-cosine"]:
        calls.clear()
        tidy = rsa_matrix(layers, metric="euclidean", compare=compare)
        assert len(calls) == 3
        assert list(tidy.columns) == [*COLUMNS, "layer_b", "layer_index_b"]
        check_tidy(tidy, "rsa_matrix")
        assert set(tidy["measure"]) == {f"rsa_euclidean_{compare.replace('-', '_')}"}
        for row in tidy.itertuples():
            ref = rsa(layers[row.layer], layers[row.layer_b], metric="euclidean", compare=compare)
            assert row.value == pytest.approx(ref, abs=1e-12)
    mat = rsa_matrix({"a": x}, {"p": y, "q": x}, output="matrix")
    assert isinstance(mat, pd.DataFrame) and mat.shape == (1, 2)
    assert mat.loc["a", "q"] == pytest.approx(1.0)
    assert mat.loc["a", "p"] == pytest.approx(rsa(x, y), abs=1e-12)


# ----------------------------------------------------------------------------------- bad / degenerate
def test_degenerate_inputs_raise(data):
    x, y = data
    const = np.full((40, 6), 2.5)
    for compare in ["spearman", "pearson", "kendall", "centered-cosine"]:
        with pytest.raises(ValueError, match="same for every example"):
            rsa(const, y, metric="euclidean", compare=compare)
    np.testing.assert_array_equal(rdm(const, metric="euclidean").numpy(), 0.0)  # the RDM itself is defined: all zeros
    with pytest.raises(ValueError, match="N >= 3"):
        rsa(x[:2], y[:2])
    with pytest.raises(ValueError, match="N >= 3"):
        rsa_matrix({"a": x[:2], "b": y[:2]})
    with pytest.raises(ValueError, match="equally dissimilar"):  # equilateral simplex: constant RDM
        rsa(np.eye(5), y[:5], metric="euclidean")
    assert np.isfinite(rsa(np.eye(5), y[:5], metric="sqeuclidean", compare="centered-cosine"))
    with pytest.raises(ValueError, match="mismatched number of samples"):
        rsa(x, y[:30])
    bad = x.copy()
    bad[4] = 1.0
    with pytest.raises(ValueError, match="example 4"):
        rsa(bad, y, metric="correlation")
    with pytest.raises(ValueError, match="single feature"):
        rdm(x[:, :1], metric="correlation")
    bad[4] = 0.0
    with pytest.raises(ValueError, match="example 4 is all zeros"):
        rdm(bad, metric="cosine")
    nan = x.copy()
    nan[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        rsa(nan, y)
    with pytest.raises(ValueError, match="max_n"):
        rsa(x, y, max_n=30)
    with pytest.raises(ValueError, match="metric"):
        rdm(x, metric="manhattan")
    with pytest.raises(ValueError, match="compare"):
        rsa(x, y, compare="cosine")
    with pytest.raises(TypeError, match="square"):
        rdm(x, square="yes")
    with pytest.raises(ValueError, match="2-D"):
        rdm(x[:, 0])


def test_torch_and_integer_inputs(data):
    x, y = data
    xi = np.round(x * 10).astype(np.int64)
    assert rsa(torch.tensor(xi), torch.tensor(y, dtype=torch.float32)) == pytest.approx(
        spearmanr(pdist(xi.astype(float), "correlation"), pdist(y.astype(np.float32).astype(float), "correlation"))
        .statistic, abs=1e-12)

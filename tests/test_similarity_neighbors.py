"""k-NN neighbourhood measures against a brute-force reference written here (full scipy distance matrix + numpy
stable argsort, python sets), the chance level k/(N-1), invariances, and documented tie/duplicate behaviour."""
from __future__ import annotations

import importlib

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.spatial.distance import cdist

from workbench.results import COLUMNS, check_tidy

nb = importlib.import_module("workbench.similarity._neighbors")
knn_indices, mutual_knn, jaccard_knn = nb.knn_indices, nb.mutual_knn, nb.jaccard_knn


def brute_knn(x, k, metric):
    """Full N x N distances, self at +inf, stable argsort: ties go to the lower index."""
    d = cdist(x, x, "sqeuclidean" if metric == "euclidean" else "cosine")
    np.fill_diagonal(d, np.inf)
    return np.argsort(d, axis=1, kind="stable")[:, :k]


def brute_scores(x, y, k, metric):
    a, b = brute_knn(x, k, metric), brute_knn(y, k, metric)
    inter = np.array([len(set(r) & set(s)) for r, s in zip(a, b)])
    union = np.array([len(set(r) | set(s)) for r, s in zip(a, b)])
    return np.mean(inter / k), np.mean(inter / union)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(150, 8)) + 2.0
    y = np.tanh(x @ rng.normal(size=(8, 12))) + 0.3 * rng.normal(size=(150, 12))
    return x, y


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("block_size", [None, 1, 13, 1000])
def test_knn_indices_match_brute_force(data, metric, block_size):
    x, _ = data
    for k in (1, 7):
        got = knn_indices(x, k=k, metric=metric, block_size=block_size)
        assert got.dtype == torch.long and got.shape == (150, k)
        np.testing.assert_array_equal(got.numpy(), brute_knn(x, k, metric))
    np.testing.assert_array_equal(knn_indices(x, k=149, metric=metric, block_size=block_size).numpy(),
                                  brute_knn(x, 149, metric))


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("k", [1, 5, 20])
def test_scores_match_brute_force(data, metric, k):
    x, y = data
    mutual, jac = brute_scores(x, y, k, metric)
    assert mutual_knn(x, y, k=k, metric=metric) == pytest.approx(mutual, abs=1e-12)
    assert jaccard_knn(x, y, k=k, metric=metric) == pytest.approx(jac, abs=1e-12)
    assert 0.0 < jac <= mutual < 1.0 and (k == 1 or jac < mutual)


def test_block_size_does_not_change_result(data):
    x, y = data
    values = {(mutual_knn(x, y, k=6, block_size=b), jaccard_knn(x, y, k=6, block_size=b)) for b in (1, 4, 64, None)}
    assert len(values) == 1


def test_identical_and_invariant_representations_score_one(data):
    x, _ = data
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    assert mutual_knn(x, x, k=10) == 1.0 and jaccard_knn(x, x, k=10) == 1.0
    # euclidean: rotation, isotropic scaling, translation; cosine: rotation, per-example positive scaling
    assert mutual_knn(x, 7.0 * x @ q - 3.0, k=10, metric="euclidean") == 1.0
    assert mutual_knn(x, rng.uniform(0.1, 10.0, size=(150, 1)) * (x @ q), k=10, metric="cosine") == 1.0
    assert jaccard_knn(x, 0.01 * x @ q, k=10, metric="euclidean") == 1.0


def test_independent_representations_hit_chance_level():
    """E|N^X ∩ N^Y| = k * k/(N-1) for independent neighbourhoods; std of the mean here is about 0.002."""
    rng = np.random.default_rng(2)
    n, k = 400, 40
    values = [mutual_knn(rng.normal(size=(n, 5)), rng.normal(size=(n, 5)), k=k) for _ in range(3)]
    assert np.mean(values) == pytest.approx(k / (n - 1), abs=0.006)


@pytest.mark.parametrize("block_size", [None, 3])
def test_ties_and_duplicates_follow_documented_order(block_size):
    """Integer lattice with duplicated points: exact ties, broken by increasing index (= stable argsort); a
    duplicate of i is i's neighbour at distance 0, i itself never is."""
    grid = np.array([[i, j] for i in range(6) for j in range(5)], dtype=float)
    x = np.vstack([grid, grid[[0, 7, 7, 12]]])  # rows 30..33 duplicate rows 0, 7, 7, 12
    for k in (1, 4, 9):
        got = knn_indices(x, k=k, metric="euclidean", block_size=block_size).numpy()
        np.testing.assert_array_equal(got, brute_knn(x, k, "euclidean"))
        assert not (got == np.arange(len(x))[:, None]).any()
    got = knn_indices(x, k=2, metric="euclidean", block_size=block_size).numpy()
    assert list(got[7]) == [31, 32] and list(got[31]) == [7, 32] and got[0, 0] == 30
    # cosine: positive multiples are not exact duplicates, but exact copies are found first
    z = np.vstack([x + 1.0, x[:3] + 1.0])
    got = knn_indices(z, k=1, metric="cosine", block_size=block_size).numpy()
    assert got[0, 0] == 30 and got[34, 0] == 0 and got[35, 0] == 1


def test_matrix_variants(data, monkeypatch):
    x, y = data
    layers = {"x": x, "y": y, "noise": np.random.default_rng(3).normal(size=(150, 4))}
    calls = []
    tidy = nb.mutual_knn_matrix(layers, k=5)
    assert list(tidy.columns) == [*COLUMNS, "layer_b", "layer_index_b"]
    check_tidy(tidy, "mutual_knn_matrix")
    assert set(tidy["measure"]) == {"mutual_knn_cosine_k5"}
    for row in tidy.itertuples():
        assert row.value == pytest.approx(mutual_knn(layers[row.layer], layers[row.layer_b], k=5), abs=1e-15)
    mat = nb.jaccard_knn_matrix({"x": x}, {"y": y, "x2": x}, k=5, metric="euclidean", output="matrix")
    assert isinstance(mat, pd.DataFrame) and mat.shape == (1, 2)
    assert mat.loc["x", "x2"] == 1.0
    assert mat.loc["x", "y"] == pytest.approx(brute_scores(x, y, 5, "euclidean")[1], abs=1e-12)

    real = nb._knn
    monkeypatch.setattr(nb, "_knn", lambda *args: calls.append(args[1]) or real(*args))
    nb.jaccard_knn_matrix(layers, k=3)
    assert len(calls) == 3  # each layer's neighbour lists computed once


def test_bad_inputs(data):
    x, y = data
    with pytest.raises(ValueError, match="k <= 149"):
        mutual_knn(x, y, k=150)
    with pytest.raises(ValueError, match="k <= 4"):
        nb.mutual_knn_matrix({"a": x[:5], "b": y[:5]}, k=5)
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        knn_indices(x, k=0)
    with pytest.raises(TypeError, match="k must be an integer"):
        knn_indices(x, k=2.5)
    with pytest.raises(ValueError, match="mismatched number of samples"):
        jaccard_knn(x, y[:100])
    with pytest.raises(ValueError, match="metric"):
        mutual_knn(x, y, metric="manhattan")
    with pytest.raises(ValueError, match="block_size"):
        knn_indices(x, k=3, block_size=0)
    zero = x.copy()
    zero[9] = 0.0
    with pytest.raises(ValueError, match="example 9 is all zeros"):
        mutual_knn(zero, y, metric="cosine")
    assert 0.0 <= mutual_knn(zero, y, metric="euclidean") <= 1.0
    nan = x.copy()
    nan[1, 1] = np.inf
    with pytest.raises(ValueError, match="NaN/Inf"):
        knn_indices(nan, k=3)


def test_torch_and_integer_inputs(data):
    x, y = data
    xi = np.round(3 * x).astype(np.int32)
    got = knn_indices(torch.tensor(xi), k=4, metric="euclidean")
    np.testing.assert_array_equal(got.numpy(), brute_knn(xi.astype(float), 4, "euclidean"))
    assert mutual_knn(torch.tensor(x, dtype=torch.float32), y, k=5) == pytest.approx(
        brute_scores(x.astype(np.float32).astype(float), y, 5, "cosine")[0], abs=1e-12)

"""CKA: published golden values (Kornblith et al. CKA demo) and naive re-implementations written here."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.spatial.distance import pdist, squareform

import importlib
from workbench.similarity import cka, cka_matrix

cka_mod = importlib.import_module("workbench.similarity.cka")  # the package attribute `cka` is the function


# ------------------------------------------------------------------ independent reference implementations
def naive_gram(x, kernel):
    x = np.asarray(x, dtype=np.float64)
    if kernel == "linear":
        return x @ x.T
    d2 = squareform(pdist(x, "sqeuclidean"))  # zero diagonal
    sigma2 = 0.5 ** 2 * np.median(d2)  # median over all n^2 squared distances (incl. diagonal), as in the demo
    return np.exp(-d2 / (2 * sigma2))


def naive_hsic_biased(k, l):
    n = len(k)
    h = np.eye(n) - np.ones((n, n)) / n
    return np.trace(k @ h @ l @ h) / (n - 1) ** 2


def naive_hsic_unbiased(k, l):
    """Via U-centering (Szekely & Rizzo 2014), a different route to Song et al.'s HSIC_u."""
    n = len(k)

    def u_center(a):
        a = a.copy()
        np.fill_diagonal(a, 0.0)
        u = (a - a.sum(0, keepdims=True) / (n - 2) - a.sum(1, keepdims=True) / (n - 2)
             + a.sum() / ((n - 1) * (n - 2)))
        np.fill_diagonal(u, 0.0)
        return u

    return (u_center(k) * u_center(l)).sum() / (n * (n - 3))


def naive_cka(x, y, kernel="linear", debiased=False):
    k, l = naive_gram(x, kernel), naive_gram(y, kernel)
    f = naive_hsic_unbiased if debiased else naive_hsic_biased
    return f(k, l) / np.sqrt(f(k, k) * f(l, l))


@pytest.fixture(scope="module")
def demo_data():
    np.random.seed(1337)
    x = np.random.randn(100, 10)
    y = np.random.randn(100, 10) + x
    return x, y


# ------------------------------------------------------------------------------------------ golden values
def test_golden_linear(demo_data):
    assert cka(*demo_data) == pytest.approx(0.55761, abs=5e-6)


def test_golden_rbf(demo_data):
    assert cka(*demo_data, kernel="rbf", sigma=0.5) == pytest.approx(0.65483, abs=5e-6)


def test_golden_debiased_linear(demo_data):
    assert cka(*demo_data, debiased=True) == pytest.approx(0.51346, abs=5e-6)


def test_golden_values_also_via_gram_path(demo_data):
    x, y = (torch.as_tensor(a) for a in demo_data)
    for debiased, golden in ((False, 0.55761), (True, 0.51346)):
        a = cka_mod._prepare(x, "X", "linear", 0.5, path="gram")
        b = cka_mod._prepare(y, "Y", "linear", 0.5, path="gram")
        assert a.gram is not None and b.gram is not None
        norm = np.sqrt(cka_mod._self_hsic(a, debiased) * cka_mod._self_hsic(b, debiased))
        value = cka_mod._hsic(a, b, debiased) / norm
        assert value == pytest.approx(golden, abs=5e-6)


# ------------------------------------------------------------------------------ against naive formulas
@pytest.mark.parametrize("kernel", ["linear", "rbf"])
@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("shape", [(40, 7, 12), (30, 45, 60)])  # widths below N (feature path) and above
def test_matches_naive(kernel, debiased, shape):
    rng = np.random.default_rng(hash((kernel, debiased, shape)) % 2**32)
    n, p, q = shape
    x = rng.standard_normal((n, p))
    y = np.tanh(x @ rng.standard_normal((p, q))) + 0.5 * rng.standard_normal((n, q))
    assert cka(x, y, kernel=kernel, debiased=debiased) == pytest.approx(
        naive_cka(x, y, kernel, debiased), rel=1e-9, abs=1e-12)


def test_mixed_widths_matches_naive():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((25, 5))  # feature path
    y = np.hstack([x, rng.standard_normal((25, 35))])  # Gram path
    for debiased in (False, True):
        assert cka(x, y, debiased=debiased) == pytest.approx(naive_cka(x, y, "linear", debiased), rel=1e-9)


@pytest.mark.parametrize("debiased", [False, True])
def test_feature_and_gram_paths_agree(debiased):
    rng = np.random.default_rng(7)
    x = torch.as_tensor(rng.standard_normal((60, 8)) + 3.0)
    y = torch.as_tensor(rng.standard_normal((60, 11)) @ rng.standard_normal((11, 11)))
    values = {}
    for path in ("features", "gram"):
        a = cka_mod._prepare(x, "X", "linear", 0.5, path=path)
        b = cka_mod._prepare(y, "Y", "linear", 0.5, path=path)
        values[path] = cka_mod._hsic(a, b, debiased) / np.sqrt(
            cka_mod._self_hsic(a, debiased) * cka_mod._self_hsic(b, debiased))
    assert values["features"] == pytest.approx(values["gram"], rel=1e-10)
    # auto picks the feature path for widths below N
    assert cka_mod._prepare(x, "X", "linear", 0.5).feats is not None
    assert cka_mod._prepare(torch.as_tensor(rng.standard_normal((5, 9))), "X", "linear", 0.5).gram is not None


# ---------------------------------------------------------------------------------------- identities
@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_invariances_and_self_similarity(kernel):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((50, 6))
    y = x @ rng.standard_normal((6, 9)) + rng.standard_normal((50, 9))
    q, _ = np.linalg.qr(rng.standard_normal((9, 9)))
    base = cka(x, y, kernel=kernel)
    assert 0.0 < base < 1.0
    assert cka(x, y @ q, kernel=kernel) == pytest.approx(base, rel=1e-10)  # orthogonal transform
    assert cka(x, 7.5 * y, kernel=kernel) == pytest.approx(base, rel=1e-10)  # isotropic scaling
    assert cka(x + 4.0, y, kernel=kernel) == pytest.approx(base, rel=1e-10)  # translation
    assert cka(x, x, kernel=kernel) == pytest.approx(1.0, abs=1e-12)
    assert cka(x, x, kernel=kernel, debiased=True) == pytest.approx(1.0, abs=1e-12)
    # not invariant to anisotropic scaling (sanity: the test can fail)
    assert abs(cka(x, y * np.arange(1, 10), kernel=kernel) - base) > 1e-3


def test_debiased_removes_small_sample_bias():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 2000))
    y = rng.standard_normal((50, 2000))
    assert cka(x, y) > 0.9  # biased CKA of independent data is large at n << d
    assert abs(cka(x, y, debiased=True)) < 0.05


def test_torch_and_integer_inputs():
    rng = np.random.default_rng(5)
    x = rng.integers(-5, 5, size=(30, 4))
    y = rng.integers(-5, 5, size=(30, 6))
    ref = naive_cka(x, y)
    assert cka(x, y) == pytest.approx(ref, rel=1e-10)
    assert cka(torch.as_tensor(x), torch.as_tensor(y, dtype=torch.float32)) == pytest.approx(ref, rel=1e-6)
    assert isinstance(cka(torch.as_tensor(x), y), float)


# ---------------------------------------------------------------------------------------------- errors
def test_bad_inputs():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((20, 3))
    bad = x.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="X contains 1 NaN"):
        cka(bad, x)
    with pytest.raises(ValueError, match="Y contains"):
        cka(x, np.where(x > 1, np.inf, x))
    with pytest.raises(ValueError, match="mismatched number of samples"):
        cka(x, x[:10])
    with pytest.raises(ValueError, match="2-D"):
        cka(x[:, 0], x)
    with pytest.raises(ValueError, match="Y is constant"):
        cka(x, np.ones((20, 4)))
    with pytest.raises(ValueError, match="at least 4 samples"):
        cka(x[:3], x[:3], debiased=True)
    with pytest.raises(ValueError, match="kernel"):
        cka(x, x, kernel="cosine")
    with pytest.raises(ValueError, match="sigma"):
        cka(x, x, kernel="rbf", sigma=0.0)
    with pytest.raises(ValueError, match="median squared pairwise distance is 0"):
        cka(np.vstack([np.zeros((15, 3)), x[:5]]), x, kernel="rbf")
    with pytest.raises(TypeError):
        cka("abc", x)


# ----------------------------------------------------------------------------------------- cka_matrix
@pytest.fixture(scope="module")
def layers():
    rng = np.random.default_rng(42)
    n = 40
    h0 = rng.standard_normal((n, 6))
    h1 = np.tanh(h0 @ rng.standard_normal((6, 12)))
    h2 = h1 @ rng.standard_normal((12, 50)) + 0.3 * rng.standard_normal((n, 50))  # wider than N
    return {"embed": h0, "block1": h1, "block2": h2}


@pytest.mark.parametrize("kernel,debiased", [("linear", False), ("linear", True), ("rbf", False)])
def test_matrix_matches_naive(layers, kernel, debiased):
    df = cka_matrix(layers, kernel=kernel, debiased=debiased)
    assert list(df.columns) == ["layer_a", "layer_b", "index_a", "index_b", "measure", "value"]
    assert len(df) == 9
    assert set(df.measure) == {f"cka_{kernel}" + ("_debiased" if debiased else "")}
    names = list(layers)
    for row in df.itertuples():
        assert names[row.index_a] == row.layer_a and names[row.index_b] == row.layer_b
        assert row.value == pytest.approx(naive_cka(layers[row.layer_a], layers[row.layer_b], kernel, debiased),
                                          rel=1e-9, abs=1e-12)


def test_matrix_two_models_and_matrix_output(layers):
    rng = np.random.default_rng(8)
    other = {"l0": layers["block1"] + 0.1 * rng.standard_normal((40, 12)), "l1": rng.standard_normal((40, 3))}
    mat = cka_matrix(layers, other, output="matrix")
    assert isinstance(mat, pd.DataFrame)
    assert list(mat.index) == list(layers) and list(mat.columns) == ["l0", "l1"]
    for a in layers:
        for b in other:
            assert mat.loc[a, b] == pytest.approx(naive_cka(layers[a], other[b]), rel=1e-9)
    sym = cka_matrix(layers, output="matrix").to_numpy()
    np.testing.assert_allclose(sym, sym.T, rtol=0, atol=1e-15)
    np.testing.assert_allclose(np.diag(sym), 1.0, atol=1e-12)


def test_matrix_prepares_each_layer_once(layers, monkeypatch):
    calls = []
    real = cka_mod._prepare

    def counting(x, name, *args, **kwargs):
        calls.append(name)
        return real(x, name, *args, **kwargs)

    monkeypatch.setattr(cka_mod, "_prepare", counting)
    cka_matrix(layers, debiased=True)
    assert sorted(calls) == sorted(f"A[{k!r}]" for k in layers)
    calls.clear()
    cka_matrix(layers, {"x": layers["embed"], "y": layers["block2"]})
    assert len(calls) == len(layers) + 2


def test_matrix_errors(layers):
    with pytest.raises(ValueError, match=r"B\['short'\] has 10"):
        cka_matrix(layers, {"short": np.ones((10, 2))})
    with pytest.raises(ValueError, match=r"A\['bad'\] has 39"):
        cka_matrix({**layers, "bad": np.random.default_rng(0).standard_normal((39, 2))})
    with pytest.raises(TypeError, match="mapping"):
        cka_matrix(layers["embed"])
    with pytest.raises(ValueError, match="output"):
        cka_matrix(layers, output="wide")
    with pytest.raises(ValueError, match=r"A\['const'\] is constant"):
        cka_matrix({**layers, "const": np.zeros((40, 3))})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(demo_data):
    x, y = (torch.as_tensor(a, device="cuda") for a in demo_data)
    assert cka(x, y) == pytest.approx(0.55761, abs=5e-6)
    assert cka(x, y, kernel="rbf") == pytest.approx(0.65483, abs=5e-6)
    assert cka(x, demo_data[1], debiased=True) == pytest.approx(0.51346, abs=5e-6)
    mat = cka_matrix({"x": x, "wide": torch.randn(100, 150, device="cuda")}, output="matrix")
    assert mat.loc["x", "x"] == pytest.approx(1.0)

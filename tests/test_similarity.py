"""CKA: published golden values (Kornblith et al. CKA demo) and naive re-implementations written here."""
from __future__ import annotations

import zlib

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.spatial.distance import pdist, squareform

import importlib
from workbench.activations import Activations
from workbench.results import COLUMNS, check_tidy
from workbench.similarity import cka, cka_matrix
from workbench.similarity._cka import MinibatchCKA, minibatch_cka

cka_mod = importlib.import_module("workbench.similarity._cka")  # the package attribute `cka` is the function


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
    # str hashes change per process (PYTHONHASHSEED); derive the seed from the parameters' text instead
    rng = np.random.default_rng(zlib.crc32(repr((kernel, debiased, shape)).encode()))
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
@pytest.mark.parametrize("to", [np.asarray, torch.as_tensor])
def test_finite_check_counts_bad_entries_and_allows_overflowing_sums(to):
    """The finite check's fast path (one sum) must neither miss a NaN/Inf (+Inf and -Inf cancel to NaN in a
    sum, NaN among huge values) nor reject finite data whose sum overflows; the count is np.isfinite's."""
    from workbench._validation import check_finite

    huge = np.full((6, 4), 1e308)
    check_finite(to(huge), "huge")  # the sum is inf, every entry finite: no error
    for bad in ([(0, 0, np.inf), (5, 3, -np.inf)], [(2, 1, np.nan)], [(1, 1, np.inf), (1, 2, np.nan)]):
        x = huge.copy()
        for i, j, v in bad:
            x[i, j] = v
        want = int((~np.isfinite(x)).sum())
        with pytest.raises(ValueError, match=f"x contains {want} NaN/Inf"):
            check_finite(to(x), "x")


def test_bad_inputs():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((20, 3))
    bad = x.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="a contains 1 NaN"):
        cka(bad, x)
    with pytest.raises(ValueError, match="b contains"):
        cka(x, np.where(x > 1, np.inf, x))
    with pytest.raises(ValueError, match="mismatched number of samples"):
        cka(x, x[:10])
    with pytest.raises(ValueError, match="2-D"):
        cka(x[:, 0], x)
    with pytest.raises(ValueError, match="b is constant"):
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
    assert list(df.columns) == [*COLUMNS, "layer_b", "layer_index_b"]
    check_tidy(df, "cka_matrix")
    assert df[["run", "step", "split", "ci_low", "ci_high"]].isna().all().all()
    assert len(df) == 9
    assert set(df.measure) == {f"cka_{kernel}" + ("_debiased" if debiased else "")}
    names = list(layers)
    for row in df.itertuples():
        assert names[row.layer_index] == row.layer and names[row.layer_index_b] == row.layer_b
        assert row.value == pytest.approx(naive_cka(layers[row.layer], layers[row.layer_b], kernel, debiased),
                                          rel=1e-9, abs=1e-12)


def test_matrix_two_models_and_matrix_output(layers):
    rng = np.random.default_rng(8)
    other = {"l0": layers["block1"] + 0.1 * rng.standard_normal((40, 12)), "l1": rng.standard_normal((40, 3))}
    mat = cka_matrix(layers, other, output="matrix")
    assert isinstance(mat, pd.DataFrame)
    assert list(mat.index) == list(layers) and list(mat.columns) == ["l0", "l1"]
    assert (mat.index.name, mat.columns.name) == ("layer", "layer_b")
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
    assert sorted(calls) == sorted(f"a[{k!r}]" for k in layers)
    calls.clear()
    cka_matrix(layers, {"x": layers["embed"], "y": layers["block2"]})
    assert len(calls) == len(layers) + 2


def test_matrix_takes_arrays_tensors_and_activations_alike(layers):
    """One representation may be a bare array (the one layer "features"), a tensor, an Activations or a mapping:
    the same values, checked against the naive Gram-matrix CKA written above."""
    x, y = layers["block1"], layers["block2"]
    single = cka_matrix(x)
    check_tidy(single, "cka_matrix(x)")
    pair_columns = ["layer", "layer_b", "layer_index", "layer_index_b"]
    assert single[pair_columns].values.tolist() == [["features", "features", 0, 0]]
    assert single["value"].iloc[0] == pytest.approx(naive_cka(x, x), abs=1e-12)
    assert single["value"].iloc[0] == pytest.approx(1.0, abs=1e-12)
    pair = cka_matrix(x, y, debiased=True)
    assert pair["value"].iloc[0] == pytest.approx(naive_cka(x, y, "linear", True), rel=1e-9)
    assert cka_matrix(torch.as_tensor(x), torch.as_tensor(y), output="matrix").loc["features", "features"] == \
        pytest.approx(naive_cka(x, y), rel=1e-9)
    acts = Activations({k: torch.as_tensor(v, dtype=torch.float32) for k, v in layers.items()})
    as_acts = cka_matrix(acts, y, output="matrix")
    assert list(as_acts.index) == list(layers) and list(as_acts.columns) == ["features"]
    for name in layers:
        assert as_acts.loc[name, "features"] == pytest.approx(naive_cka(layers[name], y), rel=1e-5)


def test_matrix_errors(layers):
    with pytest.raises(ValueError, match=r"b\['short'\] has 10"):
        cka_matrix(layers, {"short": np.ones((10, 2))})
    with pytest.raises(ValueError, match=r"a\['bad'\] has 39"):
        cka_matrix({**layers, "bad": np.random.default_rng(0).standard_normal((39, 2))})
    with pytest.raises(TypeError, match="a must be an array, a tensor, an Activations or a mapping"):
        cka_matrix("embed")
    with pytest.raises(ValueError, match="a is an empty mapping"):
        cka_matrix({})
    with pytest.raises(TypeError, match="positional"):
        cka_matrix(layers, None, "rbf")  # options are keyword-only
    with pytest.raises(ValueError, match="output"):
        cka_matrix(layers, output="wide")
    with pytest.raises(ValueError, match=r"a\['const'\] is constant"):
        cka_matrix({**layers, "const": np.zeros((40, 3))})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(demo_data):
    x, y = (torch.as_tensor(a, device="cuda") for a in demo_data)
    assert cka(x, y) == pytest.approx(0.55761, abs=5e-6)
    assert cka(x, y, kernel="rbf") == pytest.approx(0.65483, abs=5e-6)
    assert cka(x, demo_data[1], debiased=True) == pytest.approx(0.51346, abs=5e-6)
    mat = cka_matrix({"x": x, "wide": torch.randn(100, 150, device="cuda")}, output="matrix")
    assert mat.loc["x", "x"] == pytest.approx(1.0)


# ------------------------------------------------------------------ cka_matrix: blocked all-pairs path
@pytest.fixture(params=["auto", "features", "gram", "gram_blocks"])
def plan(request, monkeypatch):
    """Linear layers narrower than N: automatic plan, forced feature space, forced all-Gram (its packed Gram
    triangle in one block at these N, or in row blocks of about 7 rows, uneven)."""
    if request.param != "auto":
        monkeypatch.setattr(cka_mod, "_prefer_gram", lambda *args: request.param.startswith("gram"))
    if request.param == "gram_blocks":
        monkeypatch.setattr(cka_mod, "_GRAM_BLOCK_ROWS", 7)
    return request.param


@pytest.fixture(scope="module")
def mixed_layers():
    """Feature-path (width < N) and Gram-path (width >= N) layers of different widths, N = 30."""
    rng = np.random.default_rng(2024)
    n = 30
    a = {f"a{i}": rng.standard_normal((n, w)) @ rng.standard_normal((w, w)) + rng.standard_normal(w)
         for i, w in enumerate([3, 7, 40, 12, 1, 29, 5])}
    b = {f"b{i}": np.tanh(a["a1"] @ rng.standard_normal((7, w))) + 0.3 * rng.standard_normal((n, w))
         for i, w in enumerate([4, 31, 9, 16])}
    return a, b


@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("two_sided", [False, True])
def test_matrix_matches_naive_mixed_widths(mixed_layers, plan, debiased, two_sided):
    a, b = mixed_layers
    other = b if two_sided else a
    mat = cka_matrix(a, b if two_sided else None, debiased=debiased, output="matrix")
    ref = np.array([[naive_cka(a[i], other[j], "linear", debiased) for j in other] for i in a])
    np.testing.assert_allclose(mat.to_numpy(), ref, rtol=0, atol=1e-10)
    assert list(mat.index) == list(a) and list(mat.columns) == list(other)


@pytest.mark.parametrize("debiased", [False, True])
def test_matrix_on_column_slices_of_one_tensor(plan, debiased):
    """Layers passed as column slices (strided views) of one concatenated tensor, as a model's stacked
    activations often are, with an offset so centering matters: every entry vs naive CKA on copies."""
    rng = np.random.default_rng(31)
    z = rng.standard_normal((36, 4))
    widths = [3, 9, 14, 40]
    big = np.hstack([z @ rng.standard_normal((4, w)) + rng.standard_normal((36, w)) + 50.0 for w in widths])
    views = dict(zip("abcd", torch.split(torch.as_tensor(big), widths, dim=1)))
    assert not views["b"].is_contiguous()
    mat = cka_matrix(views, debiased=debiased, output="matrix")
    copies = {k: v.numpy().copy() for k, v in views.items()}
    ref = np.array([[naive_cka(copies[i], copies[j], "linear", debiased) for j in copies] for i in copies])
    np.testing.assert_allclose(mat.to_numpy(), ref, rtol=0, atol=1e-10)


@pytest.mark.parametrize("debiased,two_sided", [(True, True), (False, False)])
def test_matrix_tiny_blocks_match_naive(mixed_layers, monkeypatch, debiased, two_sided):
    """Tiny block budgets force row and column blocks that split layers; values must not move (1e-10)."""
    monkeypatch.setattr(cka_mod, "_prefer_gram", lambda *args: False)
    monkeypatch.setattr(cka_mod, "_BLOCK_BYTES", 8 * 60)
    monkeypatch.setattr(cka_mod, "_MIN_BLOCK_ROWS", 4)
    monkeypatch.setattr(cka_mod, "_GROUP_ROWS", 4)
    a, b = mixed_layers
    other = b if two_sided else a
    mat = cka_matrix(a, b if two_sided else None, debiased=debiased, output="matrix")
    ref = np.array([[naive_cka(a[i], other[j], "linear", debiased) for j in other] for i in a])
    np.testing.assert_allclose(mat.to_numpy(), ref, rtol=0, atol=1e-10)


def test_matrix_rbf_mixed_matches_naive(mixed_layers):
    a, b = mixed_layers
    mat = cka_matrix(a, b, kernel="rbf", output="matrix")
    ref = np.array([[naive_cka(a[i], b[j], "rbf") for j in b] for i in a])
    np.testing.assert_allclose(mat.to_numpy(), ref, rtol=0, atol=1e-10)


def test_matrix_gemm_count_does_not_grow_with_pairs(monkeypatch):
    """Feature-path cross terms: a fixed number of block products, not one GEMM per pair."""
    rng = np.random.default_rng(0)
    calls = []
    real = cka_mod._feature_cross
    monkeypatch.setattr(cka_mod, "_feature_cross", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(cka_mod, "_prefer_gram", lambda *args: False)
    a = {f"l{i}": rng.standard_normal((50, 6)) for i in range(5)}
    b = {f"m{i}": rng.standard_normal((50, 4)) for i in range(6)}
    cka_matrix(a, b)
    assert len(calls) == 1


# --------------------------------------------------------------------- degenerate input (cka, cka_matrix)
def test_constant_and_duplicated_columns_are_defined():
    rng = np.random.default_rng(12)
    x = rng.standard_normal((40, 5))
    y = x @ rng.standard_normal((5, 6)) + rng.standard_normal((40, 6))
    base = naive_cka(x, y)
    x_const = np.hstack([x, np.full((40, 2), 3.0)])  # constant columns vanish after centering
    x_dup = np.hstack([x, x[:, :2]])  # duplicated columns: a different (defined) representation
    x_twice = np.hstack([x, x])  # K -> 2K: CKA unchanged
    for debiased in (False, True):
        assert cka(x_const, y, debiased=debiased) == pytest.approx(cka(x, y, debiased=debiased), rel=1e-12)
        assert cka(x_twice, y, debiased=debiased) == pytest.approx(cka(x, y, debiased=debiased), rel=1e-12)
        assert cka(x_dup, y, debiased=debiased) == pytest.approx(naive_cka(x_dup, y, "linear", debiased), rel=1e-10)
    mat = cka_matrix({"x": x, "const": x_const, "dup": x_dup}, {"y": y}, output="matrix")
    assert mat.loc["const", "y"] == pytest.approx(base, rel=1e-12)
    assert mat.loc["dup", "y"] == pytest.approx(naive_cka(x_dup, y), rel=1e-10)


def test_matrix_degenerate_inputs():
    rng = np.random.default_rng(13)
    x = rng.standard_normal((12, 3))
    with pytest.raises(ValueError, match=r"a\['x'\] needs at least 4 samples"):
        cka_matrix({"x": x[:3]}, debiased=True)
    bad = x.copy()
    bad[4, 0] = np.inf
    with pytest.raises(ValueError, match=r"b\['bad'\] contains 1 NaN/Inf"):
        cka_matrix({"x": x}, {"bad": bad})
    with pytest.raises(ValueError, match=r"b\['y'\] has 11"):
        cka_matrix({"x": x}, {"y": x[:11]})
    with pytest.raises(ValueError, match=r"b\['c'\] is constant"):
        cka_matrix({"x": x}, {"c": np.full((12, 4), 2.0)}, debiased=True)
    ints = rng.integers(-3, 4, size=(12, 3))
    mat = cka_matrix({"i": ints}, {"x": x, "u8": np.abs(ints).astype(np.uint8), "b": ints > 0}, output="matrix")
    assert mat.loc["i", "x"] == pytest.approx(naive_cka(ints, x), rel=1e-10)
    assert mat.loc["i", "u8"] == pytest.approx(naive_cka(ints, np.abs(ints)), rel=1e-10)
    assert mat.loc["i", "b"] == pytest.approx(naive_cka(ints, (ints > 0).astype(float)), rel=1e-10)


# --------------------------------------------------------------------------------------- minibatch CKA
def song_hsic_u(k, l):
    """Song et al. 2012 / Nguyen et al. 2021 Eq. 3, written out with explicit ones vectors (uncentered K)."""
    n = len(k)
    kt, lt = k.copy(), l.copy()
    np.fill_diagonal(kt, 0.0)
    np.fill_diagonal(lt, 0.0)
    one = np.ones(n)
    return (np.trace(kt @ lt) + (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
            - 2.0 / (n - 2) * one @ kt @ lt @ one) / (n * (n - 3))


def reference_minibatch(batches_a, batches_b):
    """Eq. 2 of Nguyen et al. 2021 with explicit loops: mean HSIC_u per pair over batches, then the ratio."""
    names_a, names_b = list(batches_a[0]), list(batches_b[0])
    cross = np.zeros((len(names_a), len(names_b)))
    sa, sb = np.zeros(len(names_a)), np.zeros(len(names_b))
    for ba, bb in zip(batches_a, batches_b):
        ka = [np.asarray(ba[k], float) @ np.asarray(ba[k], float).T for k in names_a]
        lb = [np.asarray(bb[k], float) @ np.asarray(bb[k], float).T for k in names_b]
        for i, k in enumerate(ka):
            sa[i] += song_hsic_u(k, k)
            for j, l in enumerate(lb):
                cross[i, j] += song_hsic_u(k, l)
        for j, l in enumerate(lb):
            sb[j] += song_hsic_u(l, l)
    return cross / np.sqrt(np.outer(sa, sb))


def _batches(rng, sizes, widths_a=(5, 20, 40), widths_b=(8, 30)):
    """Batches of related layers; widths both below and above the batch size (feature and Gram paths)."""
    out_a, out_b = [], []
    mix_a = [rng.standard_normal((6, w)) for w in widths_a]
    mix_b = [rng.standard_normal((6, w)) for w in widths_b]
    for n in sizes:
        z = rng.standard_normal((n, 6))
        out_a.append({f"a{i}": np.tanh(z @ m) + 0.2 * rng.standard_normal((n, m.shape[1]))
                      for i, m in enumerate(mix_a)})
        out_b.append({f"b{i}": z @ m + 0.5 * rng.standard_normal((n, m.shape[1])) for i, m in enumerate(mix_b)})
    return out_a, out_b


def test_minibatch_one_batch_equals_debiased_matrix(plan):
    rng = np.random.default_rng(21)
    (a,), (b,) = _batches(rng, [25])
    for other in (None, b):
        acc = MinibatchCKA().update(a, other)
        got = acc.result(output="matrix")
        ref = cka_matrix(a, other, debiased=True, output="matrix")
        np.testing.assert_allclose(got.to_numpy(), ref.to_numpy(), rtol=0, atol=1e-10)
        assert list(got.columns) == list(ref.columns)


def test_minibatch_matches_reference_loops(monkeypatch, plan):
    rng = np.random.default_rng(22)
    ba, bb = _batches(rng, [24, 24, 16, 30])  # unequal batch sizes; width 20 is feature path in some, Gram in others
    ref = reference_minibatch(ba, bb)
    tidy = minibatch_cka(zip(ba, bb))
    assert set(tidy.measure) == {"cka_linear_minibatch"}
    check_tidy(tidy, "minibatch_cka")
    assert set(tidy.measure) == {"cka_linear_minibatch"}
    got = tidy.pivot(index="layer", columns="layer_b", values="value").loc[list(ba[0]), list(bb[0])]
    np.testing.assert_allclose(got.to_numpy(), ref, rtol=1e-10, atol=1e-12)
    # self-comparison, tiny blocks (layers split across blocks)
    monkeypatch.setattr(cka_mod, "_BLOCK_BYTES", 8 * 40)
    monkeypatch.setattr(cka_mod, "_MIN_BLOCK_ROWS", 3)
    monkeypatch.setattr(cka_mod, "_GROUP_ROWS", 3)
    acc = MinibatchCKA()
    for a in ba:
        acc.update({k: torch.as_tensor(v) for k, v in a.items()})
    np.testing.assert_allclose(acc.result(output="matrix").to_numpy(), reference_minibatch(ba, ba),
                               rtol=1e-10, atol=1e-12)
    assert acc.n_batches == 4 and acc.n_samples == 94


def test_minibatch_float32_grams_match_the_float64_reference():
    # batches of 40 examples of layers 30 wide, 4 layers a side: the Gram plan (float32 GEMM) is taken;
    # offsets would make float32 rounding of *uncentered* data fail, so this also checks centering comes first
    rng = np.random.default_rng(24)
    z = rng.standard_normal((200, 5))
    ba = [{f"a{i}": z[s:s + 40] @ rng.standard_normal((5, 30)) + rng.standard_normal((40, 30)) * (i + 1) + 1e3
           for i in range(4)} for s in range(0, 200, 40)]
    bb = [{f"b{i}": z[s:s + 40] @ rng.standard_normal((5, 30)) + rng.standard_normal((40, 30)) - 1e3
           for i in range(4)} for s in range(0, 200, 40)]
    assert cka_mod._prefer_gram("linear", 40, [30] * 4, [30] * 4)
    acc = MinibatchCKA(precision="float32")
    for a, b in zip(ba, bb):
        acc.update(a, b)
    # HSIC_u is invariant to shifting a batch's features; the float64 reference gets them centered per batch,
    # since on the raw 1e3 offsets its own uncentered Gram sums would lose ~1e-5 to cancellation
    centered = [[{k: v - v.mean(0) for k, v in batch.items()} for batch in side] for side in (ba, bb)]
    np.testing.assert_allclose(acc.result(output="matrix").to_numpy(), reference_minibatch(*centered),
                               rtol=0, atol=1e-7)
    with pytest.raises(ValueError, match="precision"):
        MinibatchCKA(precision="float16")


def test_minibatch_independent_data_goes_to_zero():
    rng = np.random.default_rng(23)
    acc = MinibatchCKA()
    small = []
    for k in range(60):
        x, y = rng.standard_normal((32, 40)), rng.standard_normal((32, 40))
        acc.update({"x": x}, {"y": y})
        if k == 0:
            small.append(abs(acc.result(output="matrix").iloc[0, 0]))
    assert cka(x, y) > 0.4  # biased CKA of one such batch is far from 0
    value = acc.result(output="matrix").iloc[0, 0]
    assert abs(value) < 0.01 and abs(value) < small[0]  # 60 batches: -> 0 (one batch: |value| ~ 0.03)


def test_minibatch_errors_and_degenerate_batches():
    rng = np.random.default_rng(24)
    x, y = rng.standard_normal((10, 3)), rng.standard_normal((10, 5))
    acc = MinibatchCKA()
    with pytest.raises(ValueError, match="no batches"):
        acc.result()
    with pytest.raises(ValueError, match=r"at least 4 samples"):
        acc.update({"x": x[:3]}, {"y": y[:3]})
    with pytest.raises(ValueError, match=r"b\['y'\] has 9"):
        acc.update({"x": x}, {"y": y[:9]})
    bad = x.copy()
    bad[1, 1] = np.nan
    with pytest.raises(ValueError, match=r"a\['x'\] contains 1 NaN"):
        acc.update({"x": bad}, {"y": y})
    assert acc.n_batches == 0  # failed updates leave no trace
    acc.update({"x": x}, {"y": y})
    with pytest.raises(ValueError, match="layers changed between updates"):
        acc.update({"z": x}, {"y": y})
    with pytest.raises(ValueError, match="layers changed between updates"):
        acc.update({"x": x, "extra": x}, {"y": y})
    with pytest.raises(ValueError, match=r"b\['y'\] has width 4 but 5"):
        acc.update({"x": x}, {"y": y[:, :4]})
    with pytest.raises(ValueError, match="b was given in the first update"):
        acc.update({"x": x})
    assert acc.n_batches == 1
    with pytest.raises(ValueError, match="kernel"):
        MinibatchCKA(kernel="rbf")
    with pytest.raises(TypeError, match="pair"):
        minibatch_cka([(x, x, x)])
    # a layer constant in one batch contributes zero HSIC there: defined, matches the reference
    ints = rng.integers(0, 5, size=(10, 3))
    const = {"x": np.zeros((10, 3))}
    acc = MinibatchCKA().update({"x": x}, {"i": ints}).update(const, {"i": ints[::-1]})
    ref = reference_minibatch([{"x": x}, const], [{"i": ints}, {"i": ints[::-1]}])
    assert acc.result(output="matrix").iloc[0, 0] == pytest.approx(ref[0, 0], rel=1e-10)
    with pytest.raises(ValueError, match=r"a\['x'\]: mean self-HSIC_u"):
        MinibatchCKA().update(const, {"i": ints}).result()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_minibatch_and_matrix_on_cuda():
    rng = np.random.default_rng(25)
    ba, bb = _batches(rng, [24, 24, 24])
    acc = MinibatchCKA()
    for a, b in zip(ba, bb):
        acc.update({k: torch.as_tensor(v, device="cuda", dtype=torch.float32) for k, v in a.items()},
                   {k: torch.as_tensor(v, device="cuda") for k, v in b.items()})
    assert acc._cross.device.type == "cuda"
    ref = reference_minibatch([{k: np.float32(v) for k, v in a.items()} for a in ba], bb)
    np.testing.assert_allclose(acc.result(output="matrix").to_numpy(), ref, rtol=1e-9)
    a = {k: torch.as_tensor(v, device="cuda") for k, v in ba[0].items()}
    np.testing.assert_allclose(cka_matrix(a, debiased=True, output="matrix").to_numpy(),
                               cka_matrix(ba[0], debiased=True, output="matrix").to_numpy(), atol=1e-10)


@pytest.mark.parametrize("n,rows", [(5, 200), (23, 4), (64, 9), (61, 1)])
def test_packed_gram_inner_products_are_frobenius(monkeypatch, n, rows):
    """<packed K, packed L> = <K, L>_F = sum_ij K_ij L_ij against numpy's full Grams, with one block, uneven
    blocks and 1-row blocks; self terms too; float32 packing (float64 sums) within float32 rounding."""
    monkeypatch.setattr(cka_mod, "_GRAM_BLOCK_ROWS", rows)
    monkeypatch.setattr(cka_mod, "_PACKED_CHUNK", 3 * 50)  # float32 sums: chunks of 50 (or 150) columns
    rng = np.random.default_rng(n)
    xs = [rng.standard_normal((n, w)) for w in (3, 17, 40)]
    grams = [x @ x.T for x in xs]
    ref = np.array([[np.sum(k * l) for l in grams] for k in grams])
    size = cka_mod._packed_size(n)
    for dtype, rtol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        packed = torch.empty((len(xs), size), dtype=dtype)
        for i, x in enumerate(xs):
            cka_mod._pack_gram(torch.as_tensor(x, dtype=dtype), packed[i])
        whole, split = slice(None), (slice(0, 1), slice(1, None))
        for pa, pb, (ia, ib) in ((packed, None, (whole, whole)), (packed[:1], packed[1:], split)):
            cross, self_a, self_b = (t.numpy() for t in cka_mod._packed_inner(pa, pb))
            np.testing.assert_allclose(cross, ref[ia, ib], rtol=rtol)
            np.testing.assert_allclose(self_a, np.diag(ref)[ia], rtol=rtol)
            np.testing.assert_allclose(self_b, np.diag(ref)[ib], rtol=rtol)
    # m blocks of sizes differing by at most 1 (r of q + 1, m - r of q): the block triangle holds (n^2 + sum b^2) / 2
    m = max(1, round(n / rows))
    q, r = divmod(n, m)
    assert size == (n * n + r * (q + 1) ** 2 + (m - r) * q ** 2) // 2


def test_plan_choice_follows_flop_counts():
    # minibatch-like: N close to the widths -> Grams; many examples -> feature space; RBF never switches
    assert cka_mod._prefer_gram("linear", 1000, [384] * 13, [384] * 13)
    assert not cka_mod._prefer_gram("linear", 10_000, [384] * 13, [384] * 13)
    assert not cka_mod._prefer_gram("rbf", 1000, [384] * 13, None)
    assert not cka_mod._prefer_gram("linear", 100, [500, 600], None)  # all wide: Grams anyway

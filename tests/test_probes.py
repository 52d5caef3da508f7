"""Ridge / kNN / prototype / Gaussian NB / MLP probes and token rows, against sklearn and plain-numpy references."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.linear_model import Ridge, RidgeClassifier, RidgeCV
from sklearn.metrics import r2_score
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier
from sklearn.preprocessing import StandardScaler

from workbench.probing._probes import gaussian_nb_probe, knn_probe, mlp_probe, prototype_probe, ridge_probe
from workbench.probing._stats import bootstrap_ci
from workbench.probing._tokens import sentence_split, token_rows
from workbench.results import COLUMNS


pytestmark = pytest.mark.usefixtures("one_thread")


def make_data(n, d, k, seed, noise=1.0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)) * rng.uniform(0.5, 3.0, d) + rng.uniform(-2, 2, d)
    y = (x @ rng.standard_normal((d, k)) / np.sqrt(d) * 2 + noise * rng.gumbel(size=(n, k))).argmax(1)
    return x, y


def rows(df, **sel):
    m = np.ones(len(df), dtype=bool)
    for k, v in sel.items():
        m &= (df[k] == v).to_numpy()
    return df[m]


def value(df, **sel):
    r = rows(df, **sel)
    assert len(r) == 1, r
    return float(r.value.iloc[0])


# ============================================================================================== ridge
@pytest.mark.parametrize("n,d", [(70, 8), (25, 40)])  # eigendecomposition of X^T X, then of X X^T
def test_ridge_regression_matches_sklearn_for_every_alpha(n, d):
    rng = np.random.default_rng(n + d)
    x = rng.standard_normal((n + 30, d)) * rng.uniform(0.5, 3, d) + 2
    y = x @ rng.standard_normal((d, 2)) + 2 * rng.standard_normal((n + 30, 2))
    alphas = (1e-3, 0.3, 10.0, 300.0)
    df = ridge_probe(x[:n], y[:n], {"test": (x[n:], y[n:])}, task="regression", alphas=alphas, all_alphas=True,
                     n_boot=0, target=["a", "b"])
    assert list(df.columns[:11]) == [*COLUMNS, "target", "method"]
    assert set(df.measure) == {"r2"} and set(df.method) == {"ridge"} and set(df.target) == {"a", "b"}
    scaler = StandardScaler().fit(x[:n])
    xs, xts = scaler.transform(x[:n]), scaler.transform(x[n:])
    for a in alphas:
        ref = Ridge(alpha=a).fit(xs, y[:n])
        for j, t in enumerate("ab"):
            assert value(df, alpha=a, split="test", target=t) == pytest.approx(
                r2_score(y[n:, j], ref.predict(xts)[:, j]), abs=1e-9)
            assert value(df, alpha=a, split="train", target=t) == pytest.approx(
                r2_score(y[:n, j], ref.predict(xs)[:, j]), abs=1e-9)
    cv = RidgeCV(alphas=alphas, alpha_per_target=True).fit(xs, y[:n])  # exact LOO (GCV mode)
    chosen = rows(df, selected=True, split="test").set_index("target").alpha
    assert [chosen["a"], chosen["b"]] == list(cv.alpha_)


def test_ridge_loo_matches_explicit_refits_and_selection_rule():
    x, y = make_data(36, 6, 3, seed=3, noise=1.5)
    alphas = (0.01, 3.0, 30.0, 300.0)
    df = ridge_probe(x, y, task="classification", alphas=alphas, all_alphas=True, n_boot=0)
    xs = StandardScaler().fit_transform(x)  # standardized once with all training examples (documented)
    onehot = np.eye(3)[y]
    crit = []
    for a in alphas:
        correct, sse = [], 0.0
        for i in range(len(y)):
            keep = np.arange(len(y)) != i
            pred = Ridge(alpha=a).fit(xs[keep], onehot[keep]).predict(xs[i:i + 1])[0]
            correct.append(pred.argmax() == y[i])
            sse += np.sum((pred - onehot[i]) ** 2)
        assert value(df, alpha=a, split="loo") == pytest.approx(np.mean(correct), abs=1e-12)
        crit.append((-np.mean(correct), sse, -a))
    best = alphas[min(range(len(alphas)), key=lambda k: crit[k])]
    assert rows(df, selected=True).alpha.unique().tolist() == [best]


@pytest.mark.parametrize("n,d,k", [(80, 10, 3), (30, 50, 4), (60, 5, 2)])
def test_ridge_classifier_matches_sklearn(n, d, k):
    x, y = make_data(n + 60, d, k, seed=n * k)
    alphas = (0.01, 1.0, 100.0)
    df = ridge_probe(x[:n], y[:n], {"test": (x[n:], y[n:])}, alphas=alphas, all_alphas=True, n_boot=0)
    scaler = StandardScaler().fit(x[:n])
    for a in alphas:
        ref = RidgeClassifier(alpha=a).fit(scaler.transform(x[:n]), y[:n])
        assert value(df, alpha=a, split="test") == ref.score(scaler.transform(x[n:]), y[n:])
        assert value(df, alpha=a, split="train") == ref.score(scaler.transform(x[:n]), y[:n])
    assert (df.n_classes == k).all() and (df.n_train == n).all()


def test_ridge_layer_mapping_equals_single_calls_and_ci_is_bootstrap_of_correctness():
    x, y = make_data(150, 12, 3, seed=1)
    layers = {"a": x[:, :5], "b": torch.as_tensor(x)}
    ev = {"test": ({"a": x[100:, :5], "b": x[100:]}, y[100:])}
    df = ridge_probe({k: v[:100] for k, v in layers.items()}, y[:100], ev, n_boot=200, seed=4)
    single = ridge_probe(x[:100, :5], y[:100], {"test": (x[100:, :5], y[100:])}, n_boot=200, seed=4)
    pd_a = rows(df, layer="a").reset_index(drop=True)
    assert np.allclose(pd_a.value, single.value) and np.allclose(pd_a.ci_low, single.ci_low)
    a = float(rows(df, layer="b", split="test").alpha.iloc[0])
    scaler = StandardScaler().fit(x[:100])
    correct = RidgeClassifier(alpha=a).fit(scaler.transform(x[:100]), y[:100]).predict(
        scaler.transform(x[100:])) == y[100:]
    r = rows(df, layer="b", split="test").iloc[0]
    assert (r.ci_low, r.ci_high) == pytest.approx(bootstrap_ci(correct.astype(float), n_boot=200, seed=4))
    assert r.ci_low <= r.value <= r.ci_high


def test_r2_interval_is_a_pair_bootstrap():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((90, 3))
    y = x[:, 0] + 0.5 * rng.standard_normal(90)
    df = ridge_probe(x[:60], y[:60], {"test": (x[60:], y[60:])}, task="regression", alphas=(1.0,), n_boot=300,
                     seed=7, ci_level=0.9)
    scaler = StandardScaler().fit(x[:60])
    pred = Ridge(alpha=1.0).fit(scaler.transform(x[:60]), y[:60]).predict(scaler.transform(x[60:]))
    gen = np.random.default_rng(7)
    boots = []
    for _ in range(300):  # one resample at a time, in the order bootstrap_ci draws them
        idx = gen.integers(0, 30, size=30)
        boots.append(r2_score(y[60:][idx], pred[idx]))
    r = rows(df, split="test").iloc[0]
    assert (r.ci_low, r.ci_high) == pytest.approx(tuple(np.quantile(boots, [0.05, 0.95])), abs=1e-10)


# ================================================================================================ kNN
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_knn_matches_sklearn_brute(metric):
    x, y = make_data(260, 8, 4, seed=11)
    ks = (1, 4, 9)
    df = knn_probe(x[:180], y[:180], {"test": (x[180:], y[180:])}, ks=ks, metric=metric, n_boot=0, block_size=17)
    for k in ks:
        ref = KNeighborsClassifier(n_neighbors=k, metric=metric, algorithm="brute").fit(x[:180], y[:180])
        assert value(df, k=k, split="test") == ref.score(x[180:], y[180:])
        assert value(df, k=k, split="train") == ref.score(x[:180], y[:180])
    assert (df.distance == metric).all()


def test_knn_vote_ties_go_to_lowest_class_and_zero_vectors_are_defined():
    ang = np.array([0.5, 2.5, 5.0])
    train = np.c_[np.cos(ang), np.sin(ang)]
    y = np.array([2, 0, 1])
    q = np.array([[np.cos(1.6), np.sin(1.6)]])  # its 2 nearest: angle 2.5 (class 0) and 0.5 (class 2): a 1:1 vote
    df = knn_probe(train, y, {"is0": (q, [0]), "is2": (q, [2])}, ks=(2,), n_boot=0)
    assert value(df, split="is0") == 1.0 and value(df, split="is2") == 0.0
    ref = KNeighborsClassifier(n_neighbors=2, metric="cosine", algorithm="brute").fit(train, y)
    assert ref.predict(q)[0] == 0
    zero = knn_probe(np.vstack([train, [[0.0, 0.0]]]), np.r_[y, 1], {"t": (np.zeros((1, 2)), [0])}, ks=(1,),
                     n_boot=0)
    assert np.isfinite(zero.value).all()


def test_knn_rejects_k_not_below_n_and_bad_metric():
    x, y = make_data(20, 3, 2, seed=0)
    with pytest.raises(ValueError, match="ks"):
        knn_probe(x, y, ks=(5, 20), n_boot=0)
    with pytest.raises(ValueError, match="metric"):
        knn_probe(x, y, metric="manhattan")
    with pytest.raises(TypeError, match="ks"):
        knn_probe(x, y, ks=(1.5,))


# ========================================================================================== prototype
@pytest.mark.parametrize("metric,center", [("euclidean", False), ("cosine", False), ("cosine", True)])
def test_prototype_matches_numpy_reference(metric, center):
    x, y = make_data(200, 6, 5, seed=21)
    df = prototype_probe(x[:140], y[:140], {"test": (x[140:], y[140:])}, metric=metric, center=center, n_boot=0)
    shift = x[:140].mean(0) if center else 0.0
    mus = np.stack([(x[:140] - shift)[y[:140] == c].mean(0) for c in range(5)])

    def predict(q):
        q = q - shift
        if metric == "euclidean":
            return np.argmin(((q[:, None, :] - mus[None]) ** 2).sum(-1), axis=1)
        return np.argmax((q / np.linalg.norm(q, axis=1, keepdims=True)) @
                         (mus / np.linalg.norm(mus, axis=1, keepdims=True)).T, axis=1)

    assert value(df, split="test") == pytest.approx(np.mean(predict(x[140:]) == y[140:]))
    assert value(df, split="train") == pytest.approx(np.mean(predict(x[:140]) == y[:140]))


# ======================================================================================== Gaussian NB
@pytest.mark.parametrize("smoothing", [1e-9, 1e-2])
def test_gaussian_nb_matches_sklearn(smoothing):
    x, y = make_data(300, 7, 4, seed=5)
    x[:, 3] = 1.5  # a constant feature: its variance is only the smoothing term
    x[:, 4] *= 1e3
    df = gaussian_nb_probe(x[:200], y[:200], {"test": (x[200:], y[200:])}, var_smoothing=smoothing, n_boot=0)
    ref = GaussianNB(var_smoothing=smoothing).fit(x[:200], y[:200])
    assert value(df, split="test") == ref.score(x[200:], y[200:])
    assert value(df, split="train") == ref.score(x[:200], y[:200])


def test_gaussian_nb_all_constant_features_is_a_clear_error():
    with pytest.raises(ValueError, match="var_smoothing"):
        gaussian_nb_probe(np.ones((10, 3)), [0, 1] * 5, n_boot=0)


# ================================================================================================ MLP
def xor_data(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 4))
    return x, (x[:, 0] * x[:, 1] > 0).astype(int)


def test_mlp_beats_linear_on_xor_and_is_reproducible():
    x, y = xor_data(500, 0)
    ev = {"test": (x[350:], y[350:])}
    state = torch.random.get_rng_state()
    df = mlp_probe(x[:350], y[:350], ev, hidden=32, batch_size=512, lr=0.03, max_epochs=80, n_boot=0, seed=3)
    assert torch.equal(state, torch.random.get_rng_state())  # private generator only
    lin = ridge_probe(x[:350], y[:350], ev, n_boot=0)
    assert value(df, split="test") > 0.85
    assert value(lin, split="test") < 0.65
    again = mlp_probe(x[:350], y[:350], ev, hidden=32, batch_size=512, lr=0.03, max_epochs=80, n_boot=0, seed=3)
    assert df.equals(again)
    other = mlp_probe(x[:350], y[:350], ev, hidden=32, batch_size=512, lr=0.03, max_epochs=80, n_boot=0, seed=4)
    assert not df.equals(other)
    assert 1 <= df.best_epoch.iloc[0] <= df.epochs.iloc[0] <= 80


def test_mlp_regression_fits_a_nonlinear_factor():
    rng = np.random.default_rng(2)
    x = rng.uniform(-2, 2, (500, 3))
    y = np.sin(2 * x[:, 0]) + 0.1 * rng.standard_normal(500)
    ev = {"test": (x[350:], y[350:])}
    mlp = mlp_probe(x[:350], y[:350], ev, task="regression", hidden=32, batch_size=512, lr=0.03, max_epochs=150,
                    n_boot=0)
    lin = ridge_probe(x[:350], y[:350], ev, task="regression", n_boot=0)
    assert set(mlp.measure) == {"r2"}
    assert value(mlp, split="test") > 0.8 > value(lin, split="test") + 0.3


# ================================================================================================ tokens
def token_batch(seed=0):
    rng = np.random.default_rng(seed)
    n, t, d = 12, 7, 3
    feats = rng.standard_normal((n, t, d))
    feats[:, :, 0] = np.arange(n)[:, None]          # feature 0 = sentence id
    feats[:, :, 1] = np.arange(t)[None, :]          # feature 1 = position
    lengths = rng.integers(2, t + 1, n)
    mask = np.arange(t)[None, :] < lengths[:, None]
    labels = rng.integers(0, 3, (n, t))
    labels[0, 0] = -100
    return feats, labels, mask


def test_token_rows_drop_padding_and_ignored_labels():
    feats, labels, mask = token_batch()
    rows_np = token_rows(feats, labels, mask)
    keep = mask & (labels != -100)
    ref_s, ref_p = np.nonzero(keep)
    assert np.array_equal(rows_np.sentence, ref_s) and np.array_equal(rows_np.position, ref_p)
    assert np.array_equal(rows_np.labels, labels[ref_s, ref_p])
    assert np.array_equal(rows_np.x, feats[ref_s, ref_p])
    rows_t = token_rows({"l0": torch.as_tensor(feats)}, torch.as_tensor(labels), torch.as_tensor(mask))
    assert torch.equal(rows_t.x["l0"], torch.as_tensor(feats[ref_s, ref_p]))


def test_sentence_split_never_splits_a_sentence():
    feats, labels, mask = token_batch()
    types = np.arange(feats.shape[0] * feats.shape[1]).reshape(feats.shape[:2])
    xtr, ytr, ttr, evals = sentence_split(feats, labels, mask, types=types, test_fraction=0.25, val_fraction=0.2,
                                          seed=1)
    sent = {"train": set(xtr[:, 0])} | {k: set(v[0][:, 0]) for k, v in evals.items()}
    assert not (sent["train"] & sent["test"]) and not (sent["train"] & sent["val"]) and not (sent["val"] & sent["test"])
    assert len(sent["test"]) == 3 and len(sent["val"]) == 2
    assert sum(len(v[1]) for v in evals.values()) + len(ytr) == (mask & (labels != -100)).sum()
    assert np.array_equal(ttr, types[xtr[:, 0].astype(int), xtr[:, 1].astype(int)])
    x2, y2, ev2 = sentence_split(feats, labels, mask, test_fraction=0.25, seed=1)
    df = prototype_probe(x2, y2, ev2, n_boot=0)  # ready for any probe
    assert set(df.split) == {"train", "test"}


# ========================================================================================== bad input
@pytest.mark.parametrize("probe", [ridge_probe, knn_probe, prototype_probe, gaussian_nb_probe, mlp_probe])
def test_bad_input_is_named(probe):
    x, y = make_data(40, 4, 2, seed=0)
    kw = {"ks": (1,)} if probe is knn_probe else {}
    with pytest.raises(ValueError, match="distinct class"):
        probe(x, np.zeros(40, int), **kw)
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        probe(bad, y, **kw)
    with pytest.raises(ValueError, match="mismatched"):
        probe(x[:30], y, **kw)
    with pytest.raises(ValueError, match="never occur"):
        probe(x, y, {"test": (x[:5], np.full(5, 7))}, **kw)
    with pytest.raises(ValueError, match="features"):
        probe(x, y, {"test": (x[:5, :3], y[:5])}, **kw)
    with pytest.raises(ValueError, match="n_boot"):
        probe(x, y, n_boot=-1, **kw)


def test_bad_input_specific():
    x, y = make_data(40, 4, 2, seed=0)
    with pytest.raises(ValueError, match="alphas"):
        ridge_probe(x, y, alphas=(1.0, -1.0))
    with pytest.raises(ValueError, match="task"):
        ridge_probe(x, y, task="ordinal")
    with pytest.raises(ValueError, match="constant on split 'test'"):
        ridge_probe(x, x[:, 0], {"test": (x[:4], np.ones(4))}, task="regression")
    with pytest.raises(ValueError, match="val_fraction"):
        mlp_probe(x, y, val_fraction=0.9)
    with pytest.raises(ValueError, match="class 1 has only 1 training example"):
        mlp_probe(x, np.r_[np.zeros(39, int), 1])  # too small to keep one example for early stopping
    with pytest.raises(ValueError, match="attention_mask"):
        token_rows(np.zeros((2, 3, 4)), np.zeros((2, 3), int), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="3-D"):
        token_rows(np.zeros((2, 3)), np.zeros((2, 3), int))
    with pytest.raises(ValueError, match="leave no training"):
        sentence_split(np.zeros((3, 2, 2)), np.zeros((3, 2), int), test_fraction=0.5, val_fraction=0.4)


# ===================================================================================== results schema
def test_every_probe_returns_the_results_schema_with_layer_index_in_mapping_order():
    """check_tidy accepts each probe's table; layer_index is the layer's position in the input mapping (here not
    alphabetical), run/step are NaN, and an Activations, a dict and a bare array give the same numbers."""
    from workbench.activations import Activations
    from workbench.probing import (combine_seeds, label_efficiency, linear_probe, online_codelength, selectivity,
                                   with_baseline)
    from workbench.results import check_tidy

    x, y = make_data(150, 6, 3, seed=4)
    order = ["zeta", "alpha", "mid"]
    cols = {"zeta": x[:, :2], "alpha": x, "mid": x[:, 2:5]}
    train = {name: cols[name][:100] for name in order}
    test = {name: cols[name][100:] for name in order}
    ev = {"test": (test, y[100:])}
    types = np.arange(150) % 17
    tables = {
        "linear_probe": linear_probe(train, y[:100], ev, C=1.0, n_boot=0),
        "linear_probe cv": linear_probe(train, y[:100], ev, Cs=(0.1, 1.0), folds=3, n_boot=0, return_cv=True)[1],
        "ridge_probe": ridge_probe(train, y[:100], ev, n_boot=0),
        "ridge_probe regression": ridge_probe(train, x[:100, 0] + x[:100, 1], {"test": (test, x[100:, 0])},
                                              task="regression", n_boot=0),
        "knn_probe": knn_probe(train, y[:100], ev, ks=(1, 3), n_boot=0),
        "prototype_probe": prototype_probe(train, y[:100], ev, n_boot=0),
        "gaussian_nb_probe": gaussian_nb_probe(train, y[:100], ev, n_boot=0),
        "mlp_probe": mlp_probe(train, y[:100], ev, max_epochs=3, n_boot=0),
        "selectivity": selectivity(train, y[:100], types[:100], {"test": (test, y[100:], types[100:])},
                                   probe="prototype", n_boot=0),
        "online_codelength": online_codelength(train, y[:100]),
        "label_efficiency": label_efficiency(train, y[:100], ev, per_class=(2,), seeds=(0, 1), probe="prototype",
                                             n_boot=0),
    }
    proto = tables["prototype_probe"]
    tables["combine_seeds"] = combine_seeds({0: proto, 1: proto})
    tables["with_baseline"] = with_baseline(proto, proto)
    for name, df in tables.items():
        assert check_tidy(df, name) is df
        assert list(df.columns[:len(COLUMNS)]) == list(COLUMNS), name
        assert "metric" not in df.columns and "probe" not in df.columns, name
        assert df.run.isna().all() and df.step.isna().all(), name
        assert df.groupby("layer", sort=False).layer_index.unique().map(list).to_dict() == {
            layer: [i] for i, layer in enumerate(order)}, name
    assert set(tables["knn_probe"].method) == {"knn"} and set(tables["linear_probe"].method) == {"logistic"}
    # an Activations (the extract output) and a bare array: the same rows as the dict, bare arrays as "features"
    acts = Activations({k: torch.as_tensor(v) for k, v in train.items()})
    acts_test = Activations({k: torch.as_tensor(v) for k, v in test.items()})
    via_acts = prototype_probe(acts, y[:100], {"test": (acts_test, y[100:])}, n_boot=0)
    pd.testing.assert_frame_equal(via_acts, proto)
    single = prototype_probe(x[:100], y[:100], {"test": (x[100:], y[100:])}, n_boot=0)
    assert list(single.layer.unique()) == ["features"] and (single.layer_index == 0).all()
    np.testing.assert_array_equal(single.value.to_numpy(), proto[proto.layer == "alpha"].value.to_numpy())
    # the values are the plain-numpy nearest-class-mean accuracy of each layer (independent of the schema code)
    for layer in order:
        mus = np.stack([train[layer][y[:100] == c].mean(0) for c in range(3)])
        pred = np.argmin(((test[layer][:, None] - mus[None]) ** 2).sum(-1), 1)
        assert value(proto, layer=layer, split="test") == pytest.approx(np.mean(pred == y[100:]))


def test_data_first_calling_convention():
    """x, labels, evals by keyword; options are keyword-only."""
    x, y = make_data(60, 4, 2, seed=1)
    ev = {"test": (x[40:], y[40:])}
    by_name = prototype_probe(x=x[:40], labels=y[:40], evals=ev, n_boot=0)
    pd.testing.assert_frame_equal(by_name, prototype_probe(x[:40], y[:40], ev, n_boot=0))
    with pytest.raises(TypeError):
        knn_probe(x[:40], y[:40], ev, (1,))  # ks is keyword-only
    with pytest.raises(TypeError, match="x must be an array"):
        knn_probe(None, y)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    x, y = make_data(200, 10, 3, seed=9)
    ev = {"test": (x[150:], y[150:])}
    xc = torch.as_tensor(x[:150], device="cuda")
    evc = {"test": (torch.as_tensor(x[150:], device="cuda"), y[150:])}
    for probe, kw in [(ridge_probe, {}), (knn_probe, {}), (prototype_probe, {}), (gaussian_nb_probe, {}),
                      (mlp_probe, {"max_epochs": 20})]:
        a = probe(x[:150], y[:150], ev, n_boot=50, **kw)
        b = probe(xc, y[:150], evc, n_boot=50, **kw)
        assert np.allclose(a.value, b.value, atol=1e-6), probe.__name__

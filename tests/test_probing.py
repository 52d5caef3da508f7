"""Linear probe against sklearn's LogisticRegression on the same standardized data."""
from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler

from workbench.probing import linear_probe

linear_mod = importlib.import_module("workbench.probing.linear")

COLUMNS = ["layer", "probe", "split", "metric", "value", "C", "n_train", "n_classes"]


def make_data(n, d, k, seed, noise=1.0, labels=None):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((d, k))
    x = rng.standard_normal((n, d)) * rng.uniform(0.5, 3.0, d) + rng.uniform(-2, 2, d)
    y = (x @ w / np.sqrt(d) * 2 + noise * rng.gumbel(size=(n, k))).argmax(1)
    return x, (y if labels is None else np.asarray(labels)[y])


def sklearn_fit(x, y, c):
    scaler = StandardScaler().fit(x)
    clf = LogisticRegression(C=c, max_iter=5000, tol=1e-10).fit(scaler.transform(x), y)
    return scaler, clf


def value(df, split, metric, layer="features"):
    sel = df[(df.layer == layer) & (df.split == split) & (df.metric == metric)]
    assert len(sel) == 1
    return float(sel.value.iloc[0])


def numpy_objective(xs, y_idx, coef, intercept, lam):
    """Mean cross-entropy + lam/2 ||coef||^2, written with scipy's logsumexp. coef: [K', D] (sklearn layout)."""
    z = xs @ coef.T + intercept
    if z.shape[1] == 1:
        z = np.hstack([np.zeros_like(z), z])
    ce = logsumexp(z, axis=1) - z[np.arange(len(z)), y_idx]
    return ce.mean() + 0.5 * lam * np.sum(coef ** 2)


# ------------------------------------------------------------------------------------- sklearn parity
@pytest.mark.parametrize("k,c", [(3, 0.1), (3, 10.0), (4, 1.0), (2, 0.5), (2, 20.0)])
def test_matches_sklearn_fixed_c(k, c):
    x, y = make_data(390, 12, k, seed=k * 10 + int(c))
    x, y, xt, yt = x[:240], y[:240], x[240:], y[240:]
    df = linear_probe(x[:200], y[:200], {"val": (x[200:], y[200:]), "test": (xt, yt)}, C=c)
    assert list(df.columns) == COLUMNS
    assert list(df.split.unique()) == ["train", "val", "test"]
    assert (df.C == c).all() and (df.n_train == 200).all() and (df.n_classes == k).all()
    assert (df.probe == "logistic").all()
    scaler, clf = sklearn_fit(x[:200], y[:200], c)
    for split, xs, ys in (("train", x[:200], y[:200]), ("val", x[200:], y[200:]), ("test", xt, yt)):
        xs_std = scaler.transform(xs)
        assert value(df, split, "accuracy") == pytest.approx(clf.score(xs_std, ys), abs=0.005)
        ref_loss = log_loss(ys, clf.predict_proba(xs_std), labels=clf.classes_)
        assert value(df, split, "loss") == pytest.approx(ref_loss, rel=1e-3)


@pytest.mark.parametrize("k,c", [(3, 0.3), (3, 50.0), (2, 5.0)])
def test_objective_optimal(k, c):
    x, y = make_data(150, 10, k, seed=7 + k)
    scaler, clf = sklearn_fit(x, y, c)
    xs = scaler.transform(x)
    lam = 1.0 / (c * len(y))
    y_idx = np.searchsorted(clf.classes_, y)
    w, b, converged = linear_mod._fit_logistic(torch.as_tensor(xs), torch.as_tensor(y_idx), k, lam)
    assert converged
    ours = numpy_objective(xs, y_idx, w.numpy().T, b.numpy(), lam)
    theirs = numpy_objective(xs, y_idx, clf.coef_, clf.intercept_, lam)
    assert ours <= theirs + 1e-6
    # and it is the same optimum (strictly convex in W), not merely a lower-looking number
    np.testing.assert_allclose(w.numpy().T, clf.coef_, atol=1e-4)


def test_constant_feature_and_arbitrary_labels():
    x, y = make_data(180, 6, 3, seed=3, labels=[11, -4, 7])
    x = np.hstack([x, np.full((180, 1), 3.25)])
    df = linear_probe(x[:120], y[:120], {"test": (x[120:], y[120:])}, C=1.0)
    scaler, clf = sklearn_fit(x[:120], y[:120], 1.0)
    assert value(df, "test", "accuracy") == pytest.approx(clf.score(scaler.transform(x[120:]), y[120:]), abs=0.005)
    assert value(df, "test", "loss") == pytest.approx(
        log_loss(y[120:], clf.predict_proba(scaler.transform(x[120:])), labels=clf.classes_), rel=1e-3)


# ----------------------------------------------------------------------------------- C selection by CV
def test_cv_selection_matches_independent_cv():
    x, y = make_data(150, 30, 3, seed=21, noise=2.0)
    cs = (0.001, 0.1, 10.0)
    df = linear_probe(x, y, C=None, Cs=cs, folds=3, seed=4)
    # independent: sklearn folds + sklearn fits, same rule (max mean accuracy, tie -> min mean log-loss)
    stats = []
    for c in cs:
        accs, losses = [], []
        for tr, va in StratifiedKFold(3, shuffle=True, random_state=4).split(x, y):
            scaler, clf = sklearn_fit(x[tr], y[tr], c)
            accs.append(clf.score(scaler.transform(x[va]), y[va]))
            losses.append(log_loss(y[va], clf.predict_proba(scaler.transform(x[va])), labels=clf.classes_))
        stats.append((-np.mean(accs), np.mean(losses), c))
    expected_c = min(stats)[2]
    assert (df.C == expected_c).all()
    scaler, clf = sklearn_fit(x, y, expected_c)
    assert value(df, "train", "accuracy") == pytest.approx(clf.score(scaler.transform(x), y), abs=0.005)
    # deterministic
    again = linear_probe(x, y, Cs=cs, folds=3, seed=4)
    np.testing.assert_array_equal(df.value.to_numpy(), again.value.to_numpy())


# ----------------------------------------------------------------------------------------- layer mappings
def test_mapping_layers_of_different_widths():
    x, y = make_data(160, 16, 3, seed=5)
    rng = np.random.default_rng(0)
    train = {"early": x[:120, :4], "late": torch.as_tensor(x[:120]), "noise": rng.standard_normal((120, 9))}
    test = {"early": x[120:, :4], "late": x[120:], "noise": rng.standard_normal((40, 9)), "unused": x[120:]}
    df = linear_probe(train, y[:120], {"test": (test, y[120:])}, C=2.0)
    assert list(df.layer.unique()) == ["early", "late", "noise"]
    assert len(df) == 3 * 2 * 2
    for layer, xtr, xte in (("early", x[:120, :4], x[120:, :4]), ("late", x[:120], x[120:])):
        scaler, clf = sklearn_fit(xtr, y[:120], 2.0)
        assert value(df, "test", "accuracy", layer) == pytest.approx(clf.score(scaler.transform(xte), y[120:]),
                                                                     abs=0.005)
    assert value(df, "test", "accuracy", "late") > value(df, "test", "accuracy", "noise")


# -------------------------------------------------------------------------------------------------- errors
def test_errors():
    x, y = make_data(60, 5, 3, seed=1)
    with pytest.raises(ValueError, match="never occur in y_train"):
        linear_probe(x[:40], y[:40], {"test": (x[40:], np.r_[y[40:-1], 5])}, C=1.0)
    with pytest.raises(ValueError, match="1 distinct class"):
        linear_probe(x, np.zeros(60, dtype=int), C=1.0)
    with pytest.raises(ValueError, match="lower `folds`"):
        linear_probe(x[:12], np.array([0] * 10 + [1] * 2))
    with pytest.raises(ValueError, match="mismatched number of samples"):
        linear_probe(x, y[:50], C=1.0)
    bad = x.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN/Inf"):
        linear_probe(bad, y, C=1.0)
    with pytest.raises(ValueError, match="2-D"):
        linear_probe(x[:, 0], y, C=1.0)
    with pytest.raises(ValueError, match="no layer 'b'"):
        linear_probe({"a": x, "b": x}, y, {"test": ({"a": x}, y)}, C=1.0)
    with pytest.raises(ValueError, match="4 features"):
        linear_probe(x, y, {"test": (x[:, :4], y)}, C=1.0)
    with pytest.raises(ValueError, match="C must be a positive"):
        linear_probe(x, y, C=0.0)
    with pytest.raises(ValueError, match="folds must be >= 2"):
        linear_probe(x, y, folds=1)
    with pytest.raises(TypeError, match="integer class ids"):
        linear_probe(x, y + 0.5, C=1.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    x, y = make_data(200, 8, 3, seed=2)
    cpu = linear_probe(x[:150], y[:150], {"test": (x[150:], y[150:])}, Cs=(0.1, 1.0), folds=3)
    gpu = linear_probe(torch.as_tensor(x[:150], device="cuda"), y[:150],
                       {"test": (torch.as_tensor(x[150:], device="cuda"), y[150:])}, Cs=(0.1, 1.0), folds=3)
    np.testing.assert_allclose(gpu.value.to_numpy(), cpu.value.to_numpy(), rtol=1e-6, atol=1e-9)
    assert (gpu.C == cpu.C).all()

"""Linear probe against scikit-learn's LogisticRegression on the same standardized data and folds."""
from __future__ import annotations

import importlib
import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler

from workbench.probing import linear_probe
from workbench.probing._stats import bootstrap_ci
from workbench.results import COLUMNS as SCHEMA

linear_mod = importlib.import_module("workbench.probing._linear")

COLUMNS = [*SCHEMA, "target", "method", "C", "n_train", "n_classes"]
TIGHT = {"tol": 1e-10, "cv_tol": 1e-10, "cv_precision": "float64", "max_iter": 5000}


def make_data(n, d, k, seed, noise=1.0, labels=None):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((d, k))
    x = rng.standard_normal((n, d)) * rng.uniform(0.5, 3.0, d) + rng.uniform(-2, 2, d)
    y = (x @ w / np.sqrt(d) * 2 + noise * rng.gumbel(size=(n, k))).argmax(1)
    return x, (y if labels is None else np.asarray(labels)[y])


def sklearn_fit(x, y, c):
    scaler = StandardScaler().fit(x)
    clf = LogisticRegression(C=c, max_iter=10000, tol=1e-10).fit(scaler.transform(x), y)
    return scaler, clf


def value(df, split, measure, layer="features", col="value"):
    sel = df[(df.layer == layer) & (df.split == split) & (df.measure == measure)]
    assert len(sel) == 1
    return float(sel[col].iloc[0])


def numpy_objective(xs, y_idx, coef, intercept, lam):
    """Mean cross-entropy + lam/2 ||coef||^2 with scipy's logsumexp; coef [K', D] (sklearn layout)."""
    z = xs @ coef.T + intercept
    if z.shape[1] == 1:
        z = np.hstack([np.zeros_like(z), z])
    ce = logsumexp(z, axis=1) - z[np.arange(len(z)), y_idx]
    return ce.mean() + 0.5 * lam * np.sum(coef ** 2)


def solve_batch(layers, y_idx, n_classes, lams, tol=1e-10):
    """Fit one problem per (layer, lambda) with the package's batched solver; returns theta, gmax."""
    xs = [torch.as_tensor(x, dtype=torch.float64) for x in layers]
    n = len(y_idx)
    dmax = max(x.shape[1] for x in xs)
    n_layers, n_lam = len(xs), len(lams)
    ones = torch.ones(n_layers, dmax, dtype=torch.float64)
    batch = linear_mod._Batch(xs, torch.as_tensor(y_idx), n_classes, np.repeat(np.arange(n_layers), n_lam),
                              np.repeat(np.arange(n_layers), n_lam), ones, torch.zeros_like(ones),
                              torch.full((n_layers, n), 1.0 / n, dtype=torch.float64),
                              torch.tensor(list(lams) * n_layers, dtype=torch.float64),
                              [linear_mod._correlation_eig(x) for x in xs])
    theta = torch.zeros(n_layers * n_lam, dmax + 1, 1 if n_classes == 2 else n_classes, dtype=torch.float64)
    theta[:, dmax] = batch.bias0
    theta, gmax, _, _ = linear_mod._lbfgs(batch, theta, tol=tol, max_iter=5000)
    return theta, gmax


# ------------------------------------------------------------------------------------- sklearn parity
@pytest.mark.parametrize("k,c", [(3, 0.1), (3, 10.0), (4, 1.0), (2, 0.5), (2, 20.0)])
def test_matches_sklearn_fixed_c(k, c):
    x, y = make_data(390, 12, k, seed=k * 10 + int(c))
    x, y, xt, yt = x[:240], y[:240], x[240:], y[240:]
    df = linear_probe(x[:200], y[:200], {"val": (x[200:], y[200:]), "test": (xt, yt)}, C=c, n_boot=0,
                      **TIGHT)
    assert list(df.columns) == COLUMNS
    assert list(df.split.unique()) == ["train", "val", "test"]
    assert (df["C"] == c).all() and (df.n_train == 200).all() and (df.n_classes == k).all()
    assert (df.method == "logistic").all() and (df.target == "label").all()
    assert df.ci_low.isna().all() and df.ci_high.isna().all()
    assert df.run.isna().all() and df.step.isna().all() and (df.layer_index == 0).all()
    scaler, clf = sklearn_fit(x[:200], y[:200], c)
    for split, xs, ys in (("train", x[:200], y[:200]), ("val", x[200:], y[200:]), ("test", xt, yt)):
        xs_std = scaler.transform(xs)
        assert value(df, split, "accuracy") == clf.score(xs_std, ys)
        ref_loss = log_loss(ys, clf.predict_proba(xs_std), labels=clf.classes_)
        assert value(df, split, "loss") == pytest.approx(ref_loss, rel=1e-6)


@pytest.mark.parametrize("k,c", [(3, 0.3), (5, 3.0), (2, 5.0)])
def test_coefficients_and_objective_match_sklearn(k, c):
    x, y = make_data(150, 10, k, seed=7 + k)
    scaler, clf = sklearn_fit(x, y, c)
    xs = scaler.transform(x)
    lam = 1.0 / (c * len(y))
    y_idx = np.searchsorted(clf.classes_, y)
    theta, gmax = solve_batch([xs], y_idx, k, [lam])
    assert gmax[0] <= 1e-10
    w, b = theta[0, :10].numpy().T, theta[0, 10].numpy()
    ours = numpy_objective(xs, y_idx, w, b, lam)
    theirs = numpy_objective(xs, y_idx, clf.coef_, clf.intercept_, lam)
    assert ours <= theirs + 1e-12
    # the same optimum (strictly convex in W; intercepts compared up to the softmax's common shift);
    # sklearn's lbfgs stops on its relative-decrease test near 1e-6 here, ours at max|grad| <= 1e-10
    np.testing.assert_allclose(w, clf.coef_, atol=1e-5)
    shift = (lambda v: v - v.mean()) if k > 2 else (lambda v: v)
    np.testing.assert_allclose(shift(b), shift(clf.intercept_), atol=1e-5)


def test_constant_feature_and_arbitrary_labels():
    x, y = make_data(180, 6, 3, seed=3, labels=[11, -4, 7])
    x = np.hstack([x, np.full((180, 1), 3.25)])
    df = linear_probe(x[:120], y[:120], {"test": (x[120:], y[120:])}, C=1.0, n_boot=0, **TIGHT)
    scaler, clf = sklearn_fit(x[:120], y[:120], 1.0)
    assert value(df, "test", "accuracy") == clf.score(scaler.transform(x[120:]), y[120:])
    assert value(df, "test", "loss") == pytest.approx(
        log_loss(y[120:], clf.predict_proba(scaler.transform(x[120:])), labels=clf.classes_), rel=1e-6)


def test_default_precision_close_to_sklearn():
    """Defaults (float32 sweep to 1e-4, float64 refit to 1e-6): same numbers as sklearn at moderate C."""
    x, y = make_data(400, 15, 4, seed=11, noise=2.0)
    df = linear_probe(x[:300], y[:300], {"test": (x[300:], y[300:])}, C=1.0, n_boot=0)
    scaler, clf = sklearn_fit(x[:300], y[:300], 1.0)
    xt = scaler.transform(x[300:])
    assert value(df, "test", "accuracy") == pytest.approx(clf.score(xt, y[300:]), abs=0.011)
    assert value(df, "test", "loss") == pytest.approx(log_loss(y[300:], clf.predict_proba(xt)), rel=1e-4)


# ----------------------------------------------------------------------------------- C selection by CV
def _sklearn_cv(x, y, cs, folds, seed):
    """Independent CV: sklearn folds, scalers and fits; rule: max mean accuracy, tie -> min mean log-loss."""
    acc = np.zeros((folds, len(cs)))
    loss = np.zeros((folds, len(cs)))
    for f, (tr, va) in enumerate(StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y)):
        for j, c in enumerate(cs):
            scaler, clf = sklearn_fit(x[tr], y[tr], c)
            acc[f, j] = clf.score(scaler.transform(x[va]), y[va])
            loss[f, j] = log_loss(y[va], clf.predict_proba(scaler.transform(x[va])), labels=clf.classes_)
    best = min(range(len(cs)), key=lambda j: (-round(acc[:, j].mean(), 12), loss[:, j].mean()))
    return cs[best], acc.mean(0), loss.mean(0)


@pytest.mark.parametrize("k", [3, 2])
def test_cv_selection_matches_sklearn_loop(k):
    x, y = make_data(150, 30, k, seed=21 + k, noise=2.0)
    cs = (0.001, 0.03, 1.0, 30.0)
    df, cv = linear_probe(x, y, Cs=cs, folds=3, seed=4, n_boot=0, return_cv=True, **TIGHT)
    expected_c, acc, loss = _sklearn_cv(x, y, cs, 3, 4)
    assert (df["C"] == expected_c).all()
    assert list(cv.columns[:11]) == [*SCHEMA, "target", "method"] and (cv.split == "cv").all()
    assert len(cv) == len(cs) * 2 and cv.selected.sum() == 2
    assert (cv[cv.selected]["C"] == expected_c).all()
    cv_acc = cv[cv.measure == "accuracy"].set_index("C").value
    cv_loss = cv[cv.measure == "loss"].set_index("C").value
    np.testing.assert_allclose(cv_acc.loc[list(cs)].to_numpy(), acc, atol=1e-12)
    np.testing.assert_allclose(cv_loss.loc[list(cs)].to_numpy(), loss, rtol=1e-5)
    scaler, clf = sklearn_fit(x, y, expected_c)
    assert value(df, "train", "accuracy") == clf.score(scaler.transform(x), y)
    again = linear_probe(x, y, Cs=cs, folds=3, seed=4, n_boot=0, **TIGHT)  # deterministic
    np.testing.assert_array_equal(df.value.to_numpy(), again.value.to_numpy())


def test_cv_selection_with_units_active_on_one_row():
    """A column constant on a fold's training rows but not on its held-out rows (a ReLU unit firing on one or two
    examples) is only centered in that fold, as StandardScaler does: the rounding of its standardized copy must
    not become its scale (it did, and the folds' held-out logits reached 1e13)."""
    x, y = make_data(150, 12, 3, seed=5, noise=2.0)
    sparse = np.zeros((150, 3))
    sparse[7, 0], sparse[[11, 90], 1], sparse[[3, 40, 120], 2] = 2.7, (1.3, 0.4), (0.2, 5.0, 0.9)
    x = np.hstack([x, sparse]).astype(np.float32)
    cs = (0.01, 0.3, 10.0)
    df, cv = linear_probe(x, y, Cs=cs, folds=3, seed=4, n_boot=0, return_cv=True, **TIGHT)
    expected_c, acc, loss = _sklearn_cv(x.astype(np.float64), y, cs, 3, 4)
    assert (df["C"] == expected_c).all()
    cv_loss = cv[cv.measure == "loss"].set_index("C").value
    np.testing.assert_allclose(cv[cv.measure == "accuracy"].set_index("C").value.loc[list(cs)], acc, atol=1e-12)
    np.testing.assert_allclose(cv_loss.loc[list(cs)].to_numpy(), loss, rtol=1e-4)


def test_cv_selection_default_precision():
    """The float32 sweep at sklearn's default tolerance selects what the sklearn loop at that tolerance selects."""
    cs = (0.001, 0.01, 0.1, 1.0, 10.0)
    for seed, noise, expected in ((5, 2.0, 0.1), (2, 4.0, 0.01)):
        x, y = make_data(240, 40, 4, seed=seed, noise=noise)
        df, cv = linear_probe(x, y, Cs=cs, folds=4, seed=1, n_boot=0, return_cv=True)
        expected_c, acc, _ = _sklearn_cv(x, y, cs, 4, 1)
        assert expected_c == expected and np.sort(acc)[-1] - np.sort(acc)[-2] > 0.04  # a clear winner
        assert (df["C"] == expected_c).all()
        # held-out fold accuracies of float32 fits at tol 1e-4 vs float64 sklearn fits: within one example
        ours = cv[cv.measure == "accuracy"].set_index("C").value.loc[list(cs)].to_numpy()
        np.testing.assert_allclose(ours, acc, atol=1.01 / 60)


# ----------------------------------------------------------------------------------------- layer mappings
def test_layers_of_different_widths_equal_fitting_each_alone():
    x, y = make_data(200, 16, 3, seed=5)
    rng = np.random.default_rng(0)
    noise_tr, noise_te = rng.standard_normal((150, 9)), rng.standard_normal((50, 9))
    train = {"early": x[:150, :4], "late": torch.as_tensor(x[:150]), "noise": noise_tr}
    test = {"early": x[150:, :4], "late": x[150:], "noise": noise_te, "unused": x[150:]}
    kw = dict(Cs=(0.01, 1.0, 100.0), folds=3, n_boot=0, tol=1e-9)
    df = linear_probe(train, y[:150], {"test": (test, y[150:])}, **kw)
    assert list(df.layer.unique()) == ["early", "late", "noise"]
    assert df.groupby("layer", sort=False).layer_index.unique().map(list).to_dict() == {
        "early": [0], "late": [1], "noise": [2]}  # position in the mapping
    assert len(df) == 3 * 2 * 2
    for layer in train:
        alone = linear_probe(np.asarray(train[layer]), y[:150], {"test": (np.asarray(test[layer]), y[150:])}, **kw)
        mine = df[df.layer == layer]
        assert (mine.C.to_numpy() == alone.C.to_numpy()).all()
        np.testing.assert_allclose(mine.value.to_numpy(), alone.value.to_numpy(), rtol=1e-6, atol=1e-9)
    for layer, xtr, xte in (("early", x[:150, :4], x[150:, :4]), ("late", x[:150], x[150:])):
        scaler, clf = sklearn_fit(xtr, y[:150], value(df, "test", "accuracy", layer, "C"))
        assert value(df, "test", "accuracy", layer) == pytest.approx(clf.score(scaler.transform(xte), y[150:]),
                                                                     abs=1e-9)
    assert value(df, "test", "accuracy", "late") > value(df, "test", "accuracy", "noise")


def test_padded_columns_get_exactly_zero_weight():
    x, y = make_data(120, 7, 3, seed=9)
    xs = StandardScaler().fit_transform(x)
    theta, gmax = solve_batch([xs[:, :3], xs], y, 3, [1e-3, 1e-1])
    assert (gmax <= 1e-10).all()
    assert torch.count_nonzero(theta[:2, 3:7]) == 0  # the 3-wide layer's padded rows
    assert torch.count_nonzero(theta[2:, :7]) > 0
    # and the narrow layer's fit is the fit of the narrow features alone
    alone, _ = solve_batch([xs[:, :3]], y, 3, [1e-3, 1e-1])
    np.testing.assert_allclose(theta[:2, :3].numpy(), alone[:, :3].numpy(), atol=1e-8)
    np.testing.assert_allclose(theta[:2, 7].numpy(), alone[:, 3].numpy(), atol=1e-8)


# ------------------------------------------------------------------------------------ intervals, target
def test_bootstrap_interval_is_stats_bootstrap_of_per_example_scores():
    x, y = make_data(260, 8, 3, seed=13, noise=2.0)
    df = linear_probe(x[:160], y[:160], {"test": (x[160:], y[160:])}, C=0.5, n_boot=300, ci_level=0.9, seed=7,
                      target="digit", **TIGHT)
    assert (df.target == "digit").all()
    scaler, clf = sklearn_fit(x[:160], y[:160], 0.5)
    xt = scaler.transform(x[160:])
    correct = (clf.predict(xt) == y[160:]).astype(float)
    proba = clf.predict_proba(xt)
    per_loss = -np.log(proba[np.arange(len(xt)), np.searchsorted(clf.classes_, y[160:])])
    for measure, per_example in (("accuracy", correct), ("loss", per_loss)):
        low, high = bootstrap_ci(per_example, n_boot=300, alpha=0.1, seed=7)
        assert value(df, "test", measure, col="ci_low") == pytest.approx(low, rel=1e-6)
        assert value(df, "test", measure, col="ci_high") == pytest.approx(high, rel=1e-6)
        assert low <= value(df, "test", measure) <= high


# -------------------------------------------------------------------------------------------------- errors
def test_errors():
    x, y = make_data(60, 5, 3, seed=1)
    with pytest.raises(ValueError, match="never occur in the training labels"):
        linear_probe(x[:40], y[:40], {"test": (x[40:], np.r_[y[40:-1], 5])}, C=1.0)
    with pytest.raises(ValueError, match="1 distinct class"):
        linear_probe(x, np.zeros(60, dtype=int), C=1.0)
    with pytest.raises(ValueError, match="lower `folds`"):
        linear_probe(x[:12], np.array([0] * 10 + [1] * 2))
    with pytest.raises(ValueError, match="mismatched number of samples"):
        linear_probe(x, y[:50], C=1.0)
    with pytest.raises(ValueError, match="mismatched number of samples"):
        linear_probe({"a": x, "b": x[:50]}, y, C=1.0)
    with pytest.raises(ValueError, match="mismatched number of samples"):
        linear_probe(x, y, {"test": (x, y[:30])}, C=1.0)
    for bad_value in (np.nan, np.inf):
        bad = x.copy()
        bad[3, 2] = bad_value
        with pytest.raises(ValueError, match="NaN/Inf"):
            linear_probe(bad, y, C=1.0)
        with pytest.raises(ValueError, match="NaN/Inf"):
            linear_probe(x, y, {"test": (bad, y)}, C=1.0)
    with pytest.raises(ValueError, match="2-D"):
        linear_probe(x[:, 0], y, C=1.0)
    with pytest.raises(ValueError, match="no layer 'b'"):
        linear_probe({"a": x, "b": x}, y, {"test": ({"a": x}, y)}, C=1.0)
    with pytest.raises(ValueError, match="4 features"):
        linear_probe(x, y, {"test": (x[:, :4], y)}, C=1.0)
    with pytest.raises(ValueError, match="C must be a number > 0"):
        linear_probe(x, y, C=0.0)
    with pytest.raises(ValueError, match=r"Cs\[1\] must be > 0"):
        linear_probe(x, y, Cs=(1.0, -1.0))
    with pytest.raises(ValueError, match="folds must be an integer >= 2"):
        linear_probe(x, y, folds=1)
    with pytest.raises(TypeError, match="integer class ids"):
        linear_probe(x, y + 0.5, C=1.0)
    with pytest.raises(ValueError, match="return_cv=True needs C=None"):
        linear_probe(x, y, C=1.0, return_cv=True)
    with pytest.raises(ValueError, match="cv_precision"):
        linear_probe(x, y, cv_precision="float16")
    with pytest.raises(ValueError, match="n_boot must be an integer >= 0"):
        linear_probe(x, y, C=1.0, n_boot=-1)
    with pytest.raises(TypeError, match="evals must be a Mapping"):
        linear_probe(x, y, [(x, y)], C=1.0)
    with pytest.raises(ValueError, match="empty mapping"):
        linear_probe({}, y, C=1.0)


def test_nonconvergence_warns():
    x, y = make_data(200, 10, 3, seed=2, noise=0.1)
    with pytest.warns(RuntimeWarning, match="did not converge"):
        linear_probe(x, y, C=1e4, max_iter=2, n_boot=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    x, y = make_data(300, 8, 3, seed=2)
    layers = {"a": x[:200], "b": x[:200, :5]}
    tests = {"a": x[200:], "b": x[200:, :5]}
    kw = dict(Cs=(0.1, 1.0), folds=3, n_boot=50)
    cpu = linear_probe(layers, y[:200], {"test": (tests, y[200:])}, **kw)
    gpu = linear_probe({k: torch.as_tensor(v, device="cuda") for k, v in layers.items()}, y[:200],
                       {"test": ({k: torch.as_tensor(v, device="cuda") for k, v in tests.items()}, y[200:])}, **kw)
    assert (gpu.C.to_numpy() == cpu.C.to_numpy()).all()
    np.testing.assert_allclose(gpu.value.to_numpy(), cpu.value.to_numpy(), rtol=1e-6, atol=1e-9)
    assert not math.isnan(gpu.ci_low.iloc[0])

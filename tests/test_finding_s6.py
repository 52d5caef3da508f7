"""S6 — the right invariance matters more than data size: the circular probe, the ridge probe of a factor in a
Study, the invariance measure, and the finding at smoke size."""
from __future__ import annotations

import numpy as np
import pytest

from workbench.measures import compute, get
from workbench.probing import circular_probe
from workbench.similarity import invariance

ALPHAS = (1e-2, 1.0, 100.0, 1e4)


# ------------------------------------------------------------------------------------------- circular probe
def _angles_data(n: int = 240, seed: int = 0, k: int = 1):
    rng = np.random.default_rng(seed)
    theta = rng.uniform(0, 2 * np.pi, n)
    x = np.c_[np.cos(k * theta), np.sin(k * theta)] @ rng.normal(size=(2, 5)) + 0.4 * rng.normal(size=(n, 5))
    return theta, x


def test_circular_probe_matches_sklearn_ridgecv_and_a_hand_score():
    from sklearn.linear_model import Ridge, RidgeCV
    from sklearn.preprocessing import StandardScaler

    theta, x = _angles_data()
    tr, te = slice(0, 160), slice(160, None)
    t = circular_probe(x[tr], theta[tr], {"test": (x[te], theta[te])}, alphas=ALPHAS, n_boot=0)
    scaler = StandardScaler().fit(x[tr])
    y = np.c_[np.sin(theta[tr]), np.cos(theta[tr])]
    cv = RidgeCV(alphas=ALPHAS).fit(scaler.transform(x[tr]), y)           # efficient LOO, one alpha for both columns
    assert t["alpha"].iloc[0] == pytest.approx(cv.alpha_)
    pred = Ridge(alpha=cv.alpha_).fit(scaler.transform(x[tr]), y).predict(scaler.transform(x[te]))
    err = np.arctan2(pred[:, 0], pred[:, 1]) - theta[te]
    row = t[(t.split == "test")].set_index("measure")["value"]
    assert row["circular_cosine"] == pytest.approx(np.cos(err).mean(), abs=1e-9)
    wrapped = np.abs((err + np.pi) % (2 * np.pi) - np.pi)
    assert row["angle_error"] == pytest.approx(wrapped.mean(), abs=1e-9)
    assert 0.8 < row["circular_cosine"] <= 1.0


def test_circular_probe_symmetry_and_chance():
    theta, x = _angles_data(k=4)                       # the features see only 4θ: a square's rotation
    ev = {"test": (x[160:], theta[160:])}
    four = circular_probe(x[:160], theta[:160], ev, symmetry=4, n_boot=0)
    one = circular_probe(x[:160], theta[:160], ev, symmetry=1, n_boot=0)
    pick = lambda t: float(t.query("measure == 'circular_cosine' and split == 'test'").value.iloc[0])  # noqa: E731
    assert pick(four) > 0.8 and abs(pick(one)) < 0.2
    # angles are used through sin/cos: shifting every angle by 2π changes nothing
    shifted = circular_probe(x[:160], theta[:160] + 2 * np.pi, {"test": (x[160:], theta[160:] - 2 * np.pi)},
                             symmetry=4, n_boot=0)
    assert pick(shifted) == pytest.approx(pick(four), abs=1e-9)


def test_circular_probe_interval_and_bad_input():
    theta, x = _angles_data()
    t = circular_probe(x[:160], theta[:160], {"test": (x[160:], theta[160:])}, n_boot=200)
    r = t.query("measure == 'circular_cosine' and split == 'test'").iloc[0]
    assert r.ci_low <= r.value <= r.ci_high
    with pytest.raises(ValueError, match="labels"):
        circular_probe(x, theta[:-1])
    with pytest.raises(ValueError, match="labels"):
        circular_probe(x, np.c_[theta, theta])
    with pytest.raises(ValueError, match="symmetry"):
        circular_probe(x, theta, symmetry=0)
    with pytest.raises(TypeError, match="labels"):
        circular_probe(x, "angles")


# ------------------------------------------------------------------------------------------- invariance
def _invariance_by_hand(a, b, shrinkage=0.1, whiten=True):
    a, b = np.asarray(a, float), np.asarray(b, float)
    n, d = a.shape
    mu = a.mean(0)
    cov = np.cov(a.T, bias=True)
    if whiten:
        s = (1 - shrinkage) * cov + shrinkage * np.trace(cov) / d * np.eye(d)
        w, v = np.linalg.eigh(s)
        root = v @ np.diag(w ** -0.5) @ v.T
    else:
        root = np.eye(d)
    ua, ub = (a - mu) @ root, (b - mu) @ root
    cos = np.array([[ua[i] @ ub[j] / np.linalg.norm(ua[i]) / np.linalg.norm(ub[j]) for j in range(n)]
                    for i in range(n)])
    s_pair = np.trace(cos) / n
    s0 = (cos.sum() - np.trace(cos)) / (n * (n - 1))
    return (s_pair - s0) / (1 - s0)


@pytest.mark.parametrize("whiten", [True, False])
def test_invariance_matches_a_pairwise_loop(whiten):
    rng = np.random.default_rng(1)
    a = rng.normal(size=(40, 4)) @ rng.normal(size=(4, 4))
    b = a + rng.normal(size=a.shape) + 0.3                            # a shifted, noisy transform
    assert invariance(a, b, whiten=whiten) == pytest.approx(_invariance_by_hand(a, b, whiten=whiten), abs=1e-10)


def test_invariance_golden_values_and_invariances():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(300, 6))
    b = a + 0.5 * rng.normal(size=a.shape)
    assert invariance(a, a) == pytest.approx(1.0)
    assert abs(invariance(a, rng.normal(size=a.shape))) < 0.05                  # independent: chance level 0
    assert invariance(a, b) > invariance(a, a + 2.0 * rng.normal(size=a.shape)) > 0
    m = rng.normal(size=(6, 6))                                                  # any invertible affine map
    assert invariance(a @ m + 3, b @ m + 3, shrinkage=0.0) == pytest.approx(invariance(a, b, shrinkage=0.0))
    q = np.linalg.qr(rng.normal(size=(6, 6)))[0]                                 # centred cosine: rotations
    assert invariance(5 * a @ q - 1, 5 * b @ q - 1, whiten=False) == pytest.approx(invariance(a, b, whiten=False))


def test_invariance_bad_input():
    a = np.random.default_rng(0).normal(size=(20, 3))
    with pytest.raises(ValueError, match="a and b"):
        invariance(a, a[:10])
    with pytest.raises(ValueError, match="constant"):
        invariance(np.ones((20, 3)), a)
    with pytest.raises(ValueError, match="shrinkage"):
        invariance(a, a, shrinkage=1.5)


# ------------------------------------------------------------------------------------------- the registry
def test_registry_ridge_probe_regresses_float_targets_and_classifies_ids():
    from sklearn.linear_model import Ridge, RidgeCV
    from sklearn.metrics import r2_score
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 5))
    y = x @ rng.normal(size=5) + 0.5 * rng.normal(size=200)
    t = compute("ridge_probe", x[100:], y[100:], fit=(x[:100], y[:100]), alphas=ALPHAS, n_boot=50)
    sc = StandardScaler().fit(x[:100])
    alpha = RidgeCV(alphas=ALPHAS).fit(sc.transform(x[:100]), y[:100]).alpha_
    ref = r2_score(y[100:], Ridge(alpha=alpha).fit(sc.transform(x[:100]), y[:100]).predict(sc.transform(x[100:])))
    assert float(t.value.iloc[0]) == pytest.approx(ref, abs=1e-9)
    assert t.ci_low.iloc[0] <= t.value.iloc[0] <= t.ci_high.iloc[0]
    labels = (y > np.median(y)).astype(int)
    acc = compute("ridge_probe", x[100:], labels[100:], fit=(x[:100], labels[:100]), n_boot=0)
    assert 0.7 < float(acc.value.iloc[0]) <= 1.0
    assert get("ridge_probe").takes == get("circular_probe").takes == "x, fit"
    assert get("invariance").takes == "x, views"


# ------------------------------------------------------------------------------------------- the finding (smoke)
@pytest.fixture(scope="module")
def smoke(smoke_store):
    from workbench.findings.invariance import FINDING

    return FINDING.run("smoke", store=smoke_store, progress=False, record=False)


def test_study_reads_factor_targets_and_the_transform(smoke):
    t = smoke.table
    m = t[t.kind == "measure"]
    assert set(m.measure) == {"invariance", "ridge_probe[x]", "ridge_probe[scale]"}
    assert (m.groupby("run").measure.nunique() == 3).all() and m.run.nunique() == 8
    inv = m[m.measure == "invariance"].value
    assert ((inv <= 1) & (inv > -1)).all()
    r2 = m[m.measure.str.startswith("ridge_probe")]
    assert (r2.value <= 1).all() and (r2.ci_low <= r2.value).all() and (r2.value <= r2.ci_high).all()
    colour = t[(t.kind == "downstream") & (t.task == "color") & (t.measure == "accuracy")]
    assert colour.run.nunique() == 8


def test_verdict_numbers_recomputed_by_hand(smoke):
    from workbench.findings.invariance import RIGHT, WRONG

    t = smoke.table
    acc = t[(t.kind == "downstream") & (t.task == "color") & (t.measure == "accuracy") & (t.split == "test")]
    per = {(a, float(f), int(s)): v for a, f, s, v in zip(acc.augment, acc.data_fraction, acc.seed, acc.value)}
    drop = np.mean([per[(str(WRONG), 1.0, s)] - per[(str(RIGHT), 1.0, s)] for s in (0, 1)])
    versus = np.mean([per[(str(RIGHT), 0.5, s)] - per[(str(WRONG), 1.0, s)] for s in (0, 1)])
    checks = smoke.verdict.checks
    assert checks.estimate.iloc[0] == pytest.approx(drop)
    assert checks.estimate.iloc[1] == pytest.approx(versus)
    assert smoke.verdict.outcome == "inconclusive"           # two seeds never make a verdict
    assert set(smoke.finding.figures(t)) == {"probes_by_condition", "colour_invariance_by_layer",
                                             "wrong_invariance_vs_half_data"}


def test_study_refuses_an_unknown_factor_target(tmp_path):
    from workbench.findings.invariance import FINDING
    from workbench.study import Study

    base = FINDING.base.replace(**{"dataset_options": {"n_train": 64, "n_test": 32, "n_ood": 0, "size": 32}})
    with pytest.raises(ValueError, match="not a factor"):
        Study(base, measures=["ridge_probe"], measure_options={"ridge_probe": {"target": "hue"}}, store=tmp_path,
              downstream=[])


def test_study_refuses_an_unknown_transform_before_training(tmp_path):
    from workbench.findings.invariance import FINDING
    from workbench.study import Study

    with pytest.raises(ValueError, match="transform"):
        Study(FINDING.base, measures=["invariance"], measure_options={"invariance": {"transform": "sepia"}},
              store=tmp_path, downstream=[])

"""S11 (contrastive_collapse): the ``subclasses`` dataset, ``subclass_spread`` and the finding at smoke size."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from workbench import data
from workbench.measures import compute, get
from workbench.spectrum import subclass_spread


# ------------------------------------------------------------------------------------------------- the dataset
def test_subclasses_follows_its_generative_model():
    ds = data.load("subclasses", n_train=3000, n_test=10, dim=16, class_strength=2.0, subclass_strength=1.0,
                   noise=0.5, n_easy=3, easy_strength=3.0, seed=3)
    o, tr = ds.options, ds["train"]
    u, v, b = (np.array(o[k]) for k in ("class_directions", "subclass_directions", "easy_directions"))
    dirs = np.vstack([u, v, b])
    np.testing.assert_allclose(dirs @ dirs.T, np.eye(2 + 6 + 3), atol=1e-12)  # mutually orthonormal
    x, c, s, e = tr.inputs.astype(np.float64), tr.labels, tr.factors["subclass"], tr.factors["easy"]
    assert (c == tr.factors["superclass"]).all() and (np.asarray(o["superclass_of"])[s] == c).all()
    # the noise is what is left after removing the three features: mean 0, std 0.5, no structure
    resid = x - 2.0 * u[c] - 1.0 * v[s] - 3.0 * b[e]
    assert abs(resid.std() - 0.5) < 0.01 and np.abs(resid.mean(0)).max() < 0.05
    # every combination of superclass, subclass and easy value occurs, the easy value independently
    assert len(np.unique(s)) == 6 and set(np.unique(e)) == {0, 1, 2}
    table = pd.crosstab(c, e).to_numpy()
    assert np.abs(table / table.sum(1, keepdims=True) - 1 / 3).max() < 0.05


def test_easy_strength_changes_the_easy_feature_only():
    a = data.load("subclasses", n_train=200, n_test=50, easy_strength=0.0, seed=1)
    b = data.load("subclasses", n_train=200, n_test=50, easy_strength=4.0, seed=1)
    for split in ("train", "test"):
        for k in ("superclass", "subclass", "easy"):
            assert (a[split].factors[k] == b[split].factors[k]).all()
        easy = np.array(b.options["easy_directions"])[b[split].factors["easy"]]
        np.testing.assert_allclose(b[split].inputs - a[split].inputs, 4.0 * easy, atol=1e-5)
    assert data.load("subclasses", n_train=20, n_test=0, seed=1)["train"].inputs.shape == (20, 32)
    assert "subclasses" in data.available()


@pytest.mark.parametrize("options,err,words", [
    ({"dim": 8}, ValueError, "dim"), ({"n_superclasses": 1}, ValueError, "n_superclasses"),
    ({"subclasses_per_class": 1}, ValueError, "subclasses_per_class"), ({"easy_strength": -1.0}, ValueError,
                                                                          "easy_strength"),
    ({"noise": float("nan")}, ValueError, "noise"), ({"class_strength": "2"}, TypeError, "class_strength"),
    ({"seed": -1}, TypeError, "seed"), ({"n_easy": 1}, ValueError, "n_easy")])
def test_subclasses_refuses_bad_options(options, err, words):
    with pytest.raises(err, match=words):
        data.load("subclasses", n_train=10, n_test=10, **options)


# ------------------------------------------------------------------------------------------------- the spread
def _reference_spread(x, sub, sup):
    """η² inside each superclass, pooled: Σ_c (T_c − W_c) / Σ_c T_c, with plain loops."""
    total = within = 0.0
    for c in np.unique(sup):
        xc = x[sup == c]
        total += ((xc - xc.mean(0)) ** 2).sum()
        for s in np.unique(sub[sup == c]):
            xs = x[(sup == c) & (sub == s)]
            within += ((xs - xs.mean(0)) ** 2).sum()
    return (total - within) / total


def test_spread_golden_value_and_reference():
    x = np.array([[0.0], [2.0], [10.0], [12.0], [5.0], [6.0]])
    # superclass 0: subclass means 1 and 11 around 6: B = 4 * 25 = 100; W = 2 + 2 (+ 0.5 from superclass 1)
    assert subclass_spread(x, [0, 0, 1, 1, 2, 2], [0, 0, 0, 0, 1, 1]) == pytest.approx(100 / 104.5, abs=1e-12)
    rng = np.random.default_rng(0)
    sub = rng.integers(0, 6, 300)
    sup = sub // 3
    x = rng.normal(size=(300, 5)) + np.eye(6, 5)[sub] * 2
    assert subclass_spread(x, sub, sup) == pytest.approx(_reference_spread(x, sub, sup), rel=1e-10)


def test_spread_extremes_and_invariances():
    rng = np.random.default_rng(1)
    sub = np.repeat(np.arange(6), 20)
    sup = sub // 3
    centers = rng.normal(size=(6, 4))
    assert subclass_spread(centers[sub], sub, sup) == pytest.approx(1.0)  # every subclass a single point
    noise = rng.normal(size=(120, 4))
    noise -= np.stack([noise[sub == s].mean(0) for s in range(6)])[sub]  # every subclass mean at the origin ...
    collapsed = noise + 5.0 * np.eye(2, 4)[sup]                           # ... of its superclass: collapsed
    assert subclass_spread(collapsed, sub, sup) == pytest.approx(0.0, abs=1e-12)
    x = centers[sub] + rng.normal(size=(120, 4))
    ref = subclass_spread(x, sub, sup)
    q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    assert subclass_spread(3.0 * x @ q + 7.0, sub, sup) == pytest.approx(ref, rel=1e-10)
    moved = x + 10.0 * (sup == 1)[:, None]  # moving a whole superclass does not change it
    assert subclass_spread(moved, sub, sup) == pytest.approx(ref, rel=1e-10)
    # relabelling the subclasses within a superclass does not change it; losing the subclass labels does
    assert subclass_spread(x, (sub + 1) % 3 + 3 * sup, sup) == pytest.approx(ref, rel=1e-10)
    assert subclass_spread(x, rng.permutation(3 * 40) % 3 + 3 * sup, sup) < ref / 3


def test_spread_refuses_inconsistent_groups():
    x = np.random.default_rng(0).normal(size=(6, 2))
    with pytest.raises(ValueError, match="superclass"):
        subclass_spread(x, [0, 0, 1, 1, 2, 2], [0, 1, 0, 0, 1, 1])  # subclass 0 in two superclasses
    with pytest.raises(ValueError, match="two subclasses"):
        subclass_spread(x, [0, 0, 1, 1, 2, 2], [0, 0, 1, 1, 2, 2])
    with pytest.raises(ValueError, match="x"):
        subclass_spread(np.ones((6, 2)), [0, 0, 1, 1, 2, 2], [0, 0, 0, 0, 1, 1])
    with pytest.raises(ValueError, match="superclasses"):
        subclass_spread(x, [0, 0, 1, 1, 2, 2], [0, 0, 0, 0, 1])


def test_spread_in_the_registry():
    assert get("subclass_spread").takes == "x, labels"
    rng = np.random.default_rng(2)
    sub = rng.integers(0, 6, 90)
    x = {"a": rng.normal(size=(90, 3)), "b": rng.normal(size=(90, 4)) + np.eye(6, 4)[sub]}
    out = compute("subclass_spread", x, sub, superclass_of=[0, 0, 0, 1, 1, 1])
    for layer in ("a", "b"):
        want = _reference_spread(x[layer], sub, sub // 3)
        assert out.set_index("layer").loc[layer, "value"] == pytest.approx(want, rel=1e-10)
    same = compute("subclass_spread", x, sub, superclass_of={i: i // 3 for i in range(6)})
    np.testing.assert_allclose(same["value"], out["value"])
    with pytest.raises(ValueError, match="superclass_of"):
        compute("subclass_spread", x, sub)
    with pytest.raises(ValueError, match="superclass_of"):
        compute("subclass_spread", x, sub, superclass_of=[0, 0, 1])


# ------------------------------------------------------------------------------------------------- the finding
@pytest.fixture(scope="module")
def smoke(smoke_store):
    from workbench.findings.contrastive_collapse import FINDING

    return FINDING.run("smoke", store=smoke_store, progress=False, record=False)


def test_smoke_verdict_recomputed_by_hand(smoke):
    t, v = smoke.table, smoke.verdict
    assert v.outcome == "inconclusive" and v.seeds == [0, 1]  # two seeds never decide
    acc = t[(t.kind == "downstream") & (t.task == "subclass") & (t.method == "linear") & (t.measure == "accuracy")
            & (t.split == "test") & (t.objective == "simclr") & (t["model_options.hidden"] == "[64, 4]")]
    acc = acc[acc.step == acc.groupby("run")["step"].transform("max")]
    by = acc.pivot_table(index="seed", columns="dataset_options.easy_strength", values="value")
    drop = by[0.0] - by[4.0]
    row = v.checks.iloc[1]
    assert row["estimate"] == pytest.approx(float((-drop).mean()), abs=1e-12)
    per_seed = json.loads(row["per_seed"])
    assert per_seed == {str(s): pytest.approx(-d, abs=1e-6) for s, d in drop.items()}
    # the derived drop rows are the same differences
    rows = t[(t.measure == "subclass_probe_drop") & (t.objective == "simclr")
             & (t["model_options.hidden"] == "[64, 4]")]
    np.testing.assert_allclose(rows.sort_values("seed")["value"], drop.sort_index(), atol=1e-12)


def test_smoke_spread_rows_and_figures(smoke):
    t = smoke.table
    spread = t[t.measure == "subclass_spread"]
    assert len(spread) == t[t.kind == "downstream"].run.nunique() == 16
    assert spread["value"].between(0, 1).all() and (spread.layer == "fc2").all()
    figs = smoke.finding.figures(t)
    assert len(figs) == 3 and all(hasattr(f, "to_dict") for f in figs.values())

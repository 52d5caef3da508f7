"""Control tasks / selectivity, random-init twins, MDL online codelength, label efficiency, seed combination."""
from __future__ import annotations

import copy
import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats as sps
from scipy.optimize import minimize
from scipy.special import logsumexp, softmax
from torch import nn

from workbench.models import build
from workbench.probing._controls import (combine_seeds, control_task, label_efficiency, random_init_twin, selectivity,
                                        stratified_subsample, with_baseline)
from workbench.probing._mdl import block_ends, online_codelength
from workbench.probing._probes import knn_probe, prototype_probe
from workbench.probing._stats import bootstrap_ci
from workbench.results import COLUMNS, check_tidy, tidy


pytestmark = pytest.mark.usefixtures("one_thread")


def value(df, **sel):
    m = np.ones(len(df), dtype=bool)
    for k, v in sel.items():
        m &= (df[k] == v).fillna(False).to_numpy(dtype=bool)
    assert m.sum() == 1, df[m]
    return float(df[m].value.iloc[0])


# ====================================================================================== control tasks
def test_control_task_is_a_seeded_function_of_the_type():
    rng = np.random.default_rng(0)
    types = rng.integers(0, 4000, 20000)
    labels = rng.choice(3, size=20000, p=[0.7, 0.2, 0.1])
    c = control_task(types, labels, seed=1)
    for t in np.unique(types)[:200]:
        assert len(np.unique(c[types == t])) == 1            # one label per type
    assert np.array_equal(c, control_task(types, labels, seed=1))
    assert not np.array_equal(c, control_task(types, labels, seed=2))
    perm = rng.permutation(len(types))                          # independent of the example order
    assert np.array_equal(control_task(types[perm], labels[perm], seed=1), c[perm])
    per_type = np.array([c[types == t][0] for t in np.unique(types)])
    freq = np.bincount(per_type, minlength=3) / len(per_type)   # drawn from the empirical label distribution
    assert np.allclose(freq, np.bincount(labels) / len(labels), atol=0.03)
    words = np.array(["the", "cat", "the", "sat"])
    cw = control_task(words, [0, 1, 0, 1], seed=0)
    assert cw[0] == cw[2] and set(cw) <= {0, 1}


def typed_data(seed=0, n_types=60, k=4, d=16):
    """Features = type embedding (clustered by the type's label) + token noise; label = f(type)."""
    rng = np.random.default_rng(seed)
    f = rng.integers(0, k, n_types)
    emb = 1.0 * rng.standard_normal((k, d))[f] + 0.8 * rng.standard_normal((n_types, d))

    def sample(n):
        t = rng.integers(0, n_types, n)
        return emb[t] + 0.3 * rng.standard_normal((n, d)), f[t], t
    return sample(500), sample(250)


def test_selectivity_on_a_deterministic_type_task():
    (x, y, t), (xe, ye, te) = typed_data()
    ev = {"test": (xe, ye, te)}
    knn = selectivity(x, y, t, ev, probe="knn", probe_options={"ks": (1,)}, n_boot=0)
    proto = selectivity(x, y, t, ev, probe="prototype", n_boot=0)
    lin = selectivity(x, y, t, ev, probe="linear", probe_options={"C": 0.01}, n_boot=0)
    assert list(knn.columns[:11]) == [*COLUMNS, "target", "method"] and set(knn.method) == {"knn"}
    # a memorising probe (1-NN) learns the control task as well as the task: selectivity ~ 0
    assert value(knn, split="test", measure="control_accuracy") > 0.9
    assert value(knn, split="test", measure="selectivity") < 0.1
    # restricted probes cannot memorise random per-type labels: high selectivity (Hewitt & Liang, Sec. 4)
    for df in (proto, lin):
        assert value(df, split="test", measure="task_accuracy") > 0.95
        assert value(df, split="test", measure="selectivity") > 0.3
        assert value(df, split="test", measure="selectivity") > value(knn, split="test", measure="selectivity") + 0.3
    for df in (knn, proto, lin):
        for split in ("train", "test"):
            assert value(df, split=split, measure="selectivity") == pytest.approx(
                value(df, split=split, measure="task_accuracy") - value(df, split=split, measure="control_accuracy"))
    # reference: the same probe on control labels made by control_task over all examples
    c = control_task(np.r_[t, te], np.r_[y, ye], seed=0)
    ref = knn_probe(x, c[:500], {"test": (xe, c[500:])}, ks=(1,), n_boot=0)
    assert value(knn, split="test", measure="control_accuracy") == value(ref, split="test")
    ref_task = prototype_probe(x, y, {"test": (xe, ye)}, n_boot=0)
    assert value(proto, split="test", measure="task_accuracy") == value(ref_task, split="test")


def test_selectivity_scores_unpredictable_control_classes_as_errors():
    rng = np.random.default_rng(3)
    t, te = np.repeat(np.arange(4), 20), np.tile(np.arange(10), 6)
    y, ye = t % 3, te % 3
    x, xe = rng.standard_normal((80, 5)) + t[:, None], rng.standard_normal((60, 5)) + te[:, None]
    for s in range(100):  # find a control draw where a test-only type gets a class absent from training
        c = control_task(np.r_[t, te], np.r_[y, ye], seed=s)
        if len(np.unique(c[:80])) >= 2 and not np.isin(c[80:], c[:80]).all():
            break
    else:  # pragma: no cover
        pytest.fail("no such control draw")
    df = selectivity(x, y, t, {"test": (xe, ye, te)}, probe="prototype", control_seed=s, n_boot=0)
    ok = np.isin(c[80:], c[:80])
    sub = prototype_probe(x, c[:80], {"test": (xe[ok], c[80:][ok])}, n_boot=0)
    assert value(df, split="test", measure="control_accuracy") == pytest.approx(value(sub, split="test") * ok.mean())


def test_selectivity_bad_input():
    (x, y, t), (xe, ye, _te) = typed_data(n_types=30)
    with pytest.raises(ValueError, match="unknown probe"):
        selectivity(x, y, t, probe="svm")
    with pytest.raises(ValueError, match="types"):
        selectivity(x, y, t[:-1])
    with pytest.raises(TypeError, match="triple"):
        selectivity(x, y, t, {"test": (xe, ye)})
    with pytest.raises(ValueError, match="several accuracy rows"):
        selectivity(x, y, t, probe="knn", probe_options={"ks": (1, 3)}, n_boot=0)
    with pytest.raises(ValueError, match="single class"):
        selectivity(x, y, np.zeros(len(y), int), n_boot=0)


# =================================================================================== random-init twin
def perturb(model):
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    return model


def test_twin_from_spec_is_a_fresh_seeded_build():
    model = perturb(build("mlp", input_shape=(6,), num_classes=3, hidden=(8, 8))).eval()
    before = copy.deepcopy(model.state_dict())
    rng_state = torch.random.get_rng_state()
    twin = random_init_twin(model, seed=5)
    assert torch.equal(rng_state, torch.random.get_rng_state())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())   # original untouched
    assert type(twin) is type(model) and not twin.training and twin.spec == model.spec
    sd, tsd = model.state_dict(), twin.state_dict()
    assert sd.keys() == tsd.keys() and all(sd[k].shape == tsd[k].shape for k in sd)
    assert not any(torch.equal(sd[k], tsd[k]) for k in sd)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        ref = build("mlp", input_shape=(6,), num_classes=3, hidden=(8, 8))
    assert all(torch.equal(v, tsd[k]) for k, v in ref.state_dict().items())
    other = random_init_twin(model, seed=6).state_dict()
    assert not torch.equal(other["head.weight"], tsd["head.weight"])


def test_twin_without_spec_resets_every_module():
    def make():
        return nn.Sequential(nn.Linear(4, 5), nn.LayerNorm(5), nn.Linear(5, 2))
    model = perturb(make())
    twin = random_init_twin(model, seed=3)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        ref = make()  # construction runs reset_parameters in the same module order
    assert all(torch.equal(v, twin.state_dict()[k]) for k, v in ref.state_dict().items())
    assert not torch.equal(model[0].weight, twin[0].weight)

    class WithRawParameter(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 2)
            self.scale = nn.Parameter(torch.full((2,), 3.0))
    with pytest.warns(RuntimeWarning, match="scale"):
        random_init_twin(WithRawParameter(), seed=0)
    with pytest.raises(TypeError, match=r"nn\.Module"):
        random_init_twin("model")


def test_with_baseline_joins_and_checks():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((120, 5)), rng.integers(0, 3, 120)
    x[:, 0] += 2 * y
    ev = {"test": (x[80:], y[80:])}
    trained = prototype_probe(x[:80], y[:80], ev, n_boot=50)
    noise = rng.standard_normal((120, 5))
    base = prototype_probe(noise[:80], y[:80], {"test": (noise[80:], y[80:])}, n_boot=50)
    out = with_baseline(trained, base)
    assert np.allclose(out.gain, trained.value - base.value)
    assert np.allclose(out.baseline_ci_low, base.ci_low)
    assert list(out.columns) == [*trained.columns, "baseline", "baseline_ci_low", "baseline_ci_high", "gain"]
    # the baseline is another run (the random-init twin): matched on layer/method/target/split/measure, not run
    other_run = with_baseline(trained.assign(run="trained"), base.assign(run="random-init", step=0))
    assert (other_run.run == "trained").all() and np.allclose(other_run.gain, trained.value - base.value)
    with pytest.raises(ValueError, match="missing column"):
        with_baseline(trained.drop(columns="layer_index"), base)
    with pytest.raises(ValueError, match="no baseline row"):
        with_baseline(trained, base[base.split == "train"])
    two_k = knn_probe(x[:80], y[:80], ev, ks=(1, 3), n_boot=0)
    with pytest.raises(ValueError, match="on="):
        with_baseline(two_k, two_k)
    assert (with_baseline(two_k, two_k, on=["k"]).gain == 0).all()


# ============================================================================================== MDL
def test_block_schedule_is_voita_titov():
    assert block_ends(1000) == [1, 2, 4, 8, 16, 32, 62, 125, 250, 500, 1000]
    assert block_ends(120) == [1, 3, 7, 15, 30, 60, 120]
    with pytest.raises(ValueError, match="fractions"):
        block_ends(100, fractions=(0.5, 0.2, 1.0))


def reference_online_bits(x, y, k, c, ends):
    """Prequential code with a scipy-fitted, fully L2-penalised softmax regression (documented objective)."""
    d = x.shape[1]
    bits = ends[0] * math.log2(k)
    for start, stop in zip(ends[:-1], ends[1:]):
        mu, sd = x[:start].mean(0), x[:start].std(0)
        sd[(sd <= 1e-10 * np.abs(mu)) | (sd == 0)] = 1.0
        xs, yt, lam = (x[:start] - mu) / sd, y[:start], 1.0 / (c * start)

        def f(theta, xs=xs, yt=yt, start=start, lam=lam):
            w, b = theta[:d * k].reshape(d, k), theta[d * k:]
            z = xs @ w + b
            p = softmax(z, axis=1)
            g = (p - np.eye(k)[yt]) / start
            loss = np.mean(logsumexp(z, axis=1) - z[np.arange(start), yt]) + lam / 2 * np.sum(theta ** 2)
            return loss, np.r_[(xs.T @ g + lam * w).ravel(), g.sum(0) + lam * b]
        th = minimize(f, np.zeros(d * k + k), jac=True, method="L-BFGS-B",
                      options={"gtol": 1e-12, "ftol": 1e-15, "maxiter": 5000}).x
        z = (x[start:stop] - mu) / sd @ th[:d * k].reshape(d, k) + th[d * k:]
        bits += np.sum(logsumexp(z, axis=1) - z[np.arange(stop - start), y[start:stop]]) / math.log(2)  # nats -> bits
    return bits


def logistic_data(n, seed, d=4, k=3, scale=1.5, oracle=False):
    """Labels from a known softmax model; also H(Y|X) on these x and the true model's codelength, in bits."""
    rng = np.random.default_rng(seed)
    w = np.random.default_rng(100).standard_normal((d, k)) * scale
    x = rng.standard_normal((n, d))
    p = softmax(x @ w, axis=1)
    y = (p.cumsum(1) > rng.uniform(size=(n, 1))).argmax(1)
    entropy = -(p * np.log2(p)).sum(1).mean()            # exact conditional entropy given these x
    true_code = -np.log2(p[np.arange(n), y]).mean()      # per-example codelength of the generator itself
    return (x, y, entropy, true_code) if oracle else (x, y, entropy)


def test_online_codelength_matches_reference_in_bits():
    x, y, _ = logistic_data(120, seed=1)
    df = online_codelength({"a": x, "b": x[:, :2]}, y, C=2.0, seed=4)
    order = np.random.default_rng(4).permutation(120)
    for layer, xl in (("a", x), ("b", x[:, :2])):
        ref = reference_online_bits(xl[order], y[order], 3, 2.0, [1, 3, 7, 15, 30, 60, 120])
        assert value(df, layer=layer, measure="online_codelength") == pytest.approx(ref, rel=1e-6)
        assert value(df, layer=layer, measure="uniform_codelength") == pytest.approx(120 * math.log2(3))
        assert value(df, layer=layer, measure="compression") == pytest.approx(120 * math.log2(3) / ref, rel=1e-6)
    assert list(df.columns[:11]) == [*COLUMNS, "target", "method"] and df.ci_low.isna().all()
    assert df.drop_duplicates("layer").layer_index.tolist() == [0, 1]


def test_online_codelength_units_are_bits():
    x, y, _ = logistic_data(300, seed=2)
    # a probe regularised to the uniform prediction: every label costs log2 K bits (not ln K nats)
    df = online_codelength(x, y, C=1e-6)
    assert value(df, measure="online_codelength") / 300 == pytest.approx(math.log2(3), rel=1e-4)
    assert value(df, measure="compression") == pytest.approx(1.0, rel=1e-4)


def test_online_codelength_approaches_conditional_entropy_from_above():
    excess = {}
    for n in (600, 6000):
        x, y, h, true_code = logistic_data(n, seed=n, oracle=True)
        per_example = value(online_codelength(x, y, seed=0), measure="online_codelength") / n
        excess[n] = per_example - true_code   # regret against the generator on the same labels: >= 0, -> 0
        if n == 6000:
            assert abs(per_example - h) < 0.03
    assert 0 < excess[6000] < 0.03 and excess[600] > 2 * excess[6000]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3000, 4))
    c = value(online_codelength(x, rng.integers(0, 3, 3000)), measure="compression")
    assert 0.9 < c <= 1.01  # labels independent of the features: no compression


def test_online_codelength_bad_input():
    x, y, _ = logistic_data(100, seed=0)
    with pytest.raises(ValueError, match="distinct class"):
        online_codelength(x, np.zeros(100, int))
    with pytest.raises(ValueError, match="mismatched"):
        online_codelength(x[:50], y)
    with pytest.raises(ValueError, match="n_classes"):
        online_codelength(x, y + 5, n_classes=3)
    with pytest.raises(ValueError, match="NaN"):
        online_codelength(np.where(x > 2, np.inf, x), y)
    alphabet = online_codelength(x, y, n_classes=5)  # declared alphabet larger than the classes seen
    assert value(alphabet, measure="uniform_codelength") == pytest.approx(100 * math.log2(5))


# =================================================================================== label efficiency
def test_stratified_subsample():
    y = np.repeat([0, 1, 2], [5, 7, 9])
    idx = stratified_subsample(y, per_class=4, seed=1)
    assert np.array_equal(np.bincount(y[idx]), [4, 4, 4])
    assert np.array_equal(idx, stratified_subsample(y, per_class=4, seed=1))
    assert not np.array_equal(idx, stratified_subsample(y, per_class=4, seed=2))
    with pytest.raises(ValueError, match="per_class=6"):
        stratified_subsample(y, per_class=6)


def test_label_efficiency_matches_reference_and_t_interval():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 150)
    x = rng.standard_normal((150, 4)) + 1.5 * np.eye(3, 4)[y]
    ev = {"test": (x[100:], y[100:])}
    df = label_efficiency(x[:100], y[:100], ev, per_class=(1, 3, "all"), seeds=(0, 1, 2), probe="prototype",
                          n_boot=0)
    for n in (1, 3):
        vals = []
        for s in (0, 1, 2):
            idx = stratified_subsample(y[:100], per_class=n, seed=s)
            mus = np.stack([x[idx][y[idx] == c].mean(0) for c in range(3)])
            acc = np.mean(np.argmin(((x[100:, None] - mus[None]) ** 2).sum(-1), 1) == y[100:])
            assert value(df, n_per_class=n, seed=s) == pytest.approx(acc)
            vals.append(acc)
        summary = df[(df.n_per_class == n) & df.seed.isna()].iloc[0]
        assert summary.value == pytest.approx(np.mean(vals)) and summary.n_seeds == 3
        low, high = sps.t.interval(0.95, 2, loc=np.mean(vals), scale=sps.sem(vals))
        assert (summary.ci_low, summary.ci_high) == pytest.approx((low, high))
    assert (df[df.n_per_class == "all"].n_train == 100).all()
    with pytest.raises(ValueError, match="per_class"):
        label_efficiency(x[:100], y[:100], ev, per_class=(1, 500))
    with pytest.raises(ValueError, match="unknown probe"):
        label_efficiency(x[:100], y[:100], ev, probe="forest")
    with pytest.raises(ValueError, match="mismatched"):
        label_efficiency(x[:90], y[:100], ev)
    with pytest.raises(ValueError, match="per_class"):
        label_efficiency(x[:100], y[:100], ev, per_class=("most",))


def test_label_efficiency_default_linear_probe_runs_with_one_example_per_class():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 80)
    x = rng.standard_normal((80, 3)) + 2.0 * y[:, None]
    df = label_efficiency({"l": x[:60]}, y[:60], {"test": ({"l": x[60:]}, y[60:])}, per_class=(1, "all"),
                          seeds=(0, 1), n_boot=0)
    assert set(df.method) == {"logistic"} and df.value.between(0, 1).all()


# ============================================================================================== seeds
def test_combine_seeds_t_and_bootstrap():
    rng = np.random.default_rng(0)
    frames = {s: tidy({"layer": layer, "measure": "accuracy", "split": "test", "value": v, "target": "t",
                       "method": "p"} for layer, v in zip(["a", "b"], rng.uniform(size=2))) for s in (3, 4, 5, 6)}
    out = combine_seeds(frames)
    check_tidy(out)
    assert out.layer.tolist() == ["a", "b"] and out.layer_index.tolist() == [0, 1] and out.run.isna().all()
    a = np.array([frames[s].value[0] for s in (3, 4, 5, 6)])
    row = out[out.layer == "a"].iloc[0]
    assert row.value == pytest.approx(a.mean()) and row["std"] == pytest.approx(a.std(ddof=1))
    assert (row.ci_low, row.ci_high) == pytest.approx(sps.t.interval(0.95, 3, loc=a.mean(), scale=sps.sem(a)))
    boot = combine_seeds(list(frames.values()), method="bootstrap", n_boot=500, seed=2)
    assert tuple(boot[boot.layer == "a"][["ci_low", "ci_high"]].iloc[0]) == pytest.approx(
        bootstrap_ci(a, n_boot=500, seed=2))
    one = combine_seeds({0: frames[3]})
    assert one.ci_low.isna().all() and (one.n_seeds == 1).all()
    with pytest.raises(ValueError, match="on="):
        combine_seeds({0: pd.concat([frames[3], frames[3]])})
    with pytest.raises(ValueError, match="method"):
        combine_seeds(frames, method="z")
    with pytest.raises(ValueError, match="'metric' is called 'measure'"):  # old-layout tables are refused
        combine_seeds({s: f.rename(columns={"measure": "metric"}) for s, f in frames.items()})
    at_steps = combine_seeds({s: f.assign(step=100 * (s % 2)) for s, f in frames.items()})  # never across steps
    assert sorted(at_steps.step.unique()) == [0, 100] and (at_steps.n_seeds == 2).all()

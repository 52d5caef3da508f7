"""S8 (unsupervised pretraining helps when unlabeled m ≫ labeled n): the Bayes risk of ``gaussian-mixture``,
absolute label counts and the raw-input probe of ``evaluate``, ``objective="none"`` ignoring ``data_fraction``,
and the finding at smoke size."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from workbench import data as wb_data
from workbench.data import bayes_risk
from workbench.runs import RunConfig, RunStore
from workbench.study import Study
from workbench.train import train
from workbench.train.downstream import evaluate

GM = {"n_test": 200, "n_ood": 0, "dim": 16, "n_classes": 4, "latent_dim": 4, "separation": 3.0, "noise": 1.0,
      "seed": 0}


# ----------------------------------------------------------------------------------------------- Bayes risk
@pytest.mark.parametrize("separation, noise", [(2.0, 0.0), (3.0, 1.0), (1.0, 0.5), (5.0, 2.0)])
def test_bayes_risk_two_classes_is_the_closed_form(separation, noise):
    """Two Gaussians Δ apart with per-direction std s = √(1 + σ²): R = Φ(−Δ / 2s) (integral branch)."""
    ds = wb_data.load("gaussian-mixture", n_train=10, n_test=10, n_ood=0, n_classes=2, latent_dim=3, dim=6,
                      separation=separation, noise=noise)
    assert bayes_risk(ds) == pytest.approx(norm.cdf(-separation / (2 * np.sqrt(1 + noise ** 2))), abs=1e-9)


def test_bayes_risk_one_latent_dimension_monte_carlo_branch_matches_closed_form():
    """latent_dim = 1 < n_classes = 2: the Monte-Carlo branch; the two means are `separation` apart on a line."""
    ds = wb_data.load("gaussian-mixture", n_train=10, n_test=10, n_ood=0, n_classes=2, latent_dim=1, dim=3,
                      separation=2.0, noise=0.75)
    means = np.asarray(ds.options["means"])
    delta = float(np.linalg.norm(means[0] - means[1]))
    assert delta == pytest.approx(2.0)
    assert bayes_risk(ds) == pytest.approx(norm.cdf(-delta / (2 * np.sqrt(1 + 0.75 ** 2))), abs=2e-3)  # 4 SE


def _lda_error(ds: wb_data.Dataset, split: str) -> tuple[float, float]:
    """Error of the Bayes rule computed from scratch in the observed space (shared covariance A Aᵀ + σ² I, means
    A μ_k (+ offset for ood), equal priors), and its binomial standard error."""
    o = ds.options
    a = np.asarray(o["mixing"])
    noise = o["ood_noise"] if split == "ood" else o["noise"]
    offset = np.asarray(o["ood_offset"]) if split == "ood" else 0.0
    mu = (np.asarray(o["means"]) + offset) @ a.T
    cov = a @ a.T + noise ** 2 * np.eye(a.shape[0])
    w = np.linalg.solve(cov, mu.T)  # [dim, K]
    scores = ds[split].inputs.astype(np.float64) @ w - 0.5 * np.sum(mu.T * w, axis=0)
    err = float(np.mean(scores.argmax(1) != ds[split].labels))
    return err, float(np.sqrt(err * (1 - err) / len(ds[split])))


@pytest.mark.parametrize("opts", [
    {"n_classes": 4, "latent_dim": 8, "dim": 24, "separation": 3.0, "noise": 1.0},  # orthonormal means: integral
    {"n_classes": 6, "latent_dim": 3, "dim": 10, "separation": 2.5, "noise": 0.5},  # random means: Monte Carlo
])
def test_bayes_risk_agrees_with_the_bayes_classifier_on_fresh_samples(opts):
    ds = wb_data.load("gaussian-mixture", n_train=10, n_test=100_000, n_ood=100_000, seed=3, **opts)
    for split in ("test", "ood"):
        err, se = _lda_error(ds, split)
        assert abs(bayes_risk(ds, split) - err) < 4 * se + 1e-3, split


def test_bayes_risk_falls_with_separation_and_rises_with_noise():
    risks = [bayes_risk(wb_data.load("gaussian-mixture", n_train=10, n_test=10, separation=s)) for s in (1, 2, 4, 12)]
    assert np.all(np.diff(risks) < 0) and risks[-1] < 1e-3 and risks[0] < 0.75  # 0.75 = chance for 4 classes
    noisy = [bayes_risk(wb_data.load("gaussian-mixture", n_train=10, n_test=10, noise=n)) for n in (0.0, 1.0, 2.0)]
    assert np.all(np.diff(noisy) > 0)


def test_bayes_risk_bad_input():
    ds = wb_data.load("gaussian-mixture", n_train=10, n_test=10)
    with pytest.raises(TypeError, match="dataset"):
        bayes_risk(ds.options)
    with pytest.raises(ValueError, match="generative model"):
        bayes_risk(wb_data.load("digits"))
    with pytest.raises(ValueError, match="split"):
        bayes_risk(ds, "validation")
    with pytest.raises(ValueError, match="mc_samples"):
        bayes_risk(ds, mc_samples=10)


# ----------------------------------------------------------------------------------------------- objective="none"
def test_objective_none_ignores_data_fraction_one_run(tmp_path):
    """Regression: a random-init baseline reads no training data, so data_fraction must not make distinct runs."""
    assert RunConfig(objective="none", data_fraction=0.3).id == RunConfig(objective="none").id
    assert RunConfig(data_fraction=0.3).id != RunConfig().id  # a trained run still depends on it
    base = {"dataset": "gaussian-mixture", "dataset_options": {**GM, "n_train": 64}, "model": "mlp",
            "model_options": {"hidden": [8]}, "objective": "none", "recorders": []}
    store = RunStore(tmp_path)
    study = Study(base, {"data_fraction": [0.25, 0.5, 1.0]}, seeds=[0], store=store, measures=[])
    table = study.run(progress=False)
    assert len(store.ids()) == 1 and table["data_fraction"].nunique() == 3
    acc = table[(table.kind == "downstream") & (table.measure == "accuracy")]
    assert acc.value.nunique() == 1  # one model, evaluated under three names


# ----------------------------------------------------------------------------------------------- label counts, raw
@pytest.fixture(scope="module")
def gm_run(tmp_path_factory):
    cfg = RunConfig(dataset="gaussian-mixture", dataset_options={**GM, "n_train": 300}, model="mlp",
                    model_options={"hidden": [16]}, objective="autoencoder", steps=20, checkpoints=0, recorders=(),
                    seed=0)
    return train(cfg, RunStore(tmp_path_factory.mktemp("s8-eval")), progress=False)


def _task(n_train: int = 400, n_classes: int = 4) -> dict:
    return {"dataset": "gaussian-mixture", "options": {**GM, "n_train": n_train, "n_classes": n_classes},
            "name": "pool"}


def test_label_counts_rows_and_full_count_equals_full_fraction(gm_run):
    t = evaluate(gm_run, _task(), label_fractions=[1.0], label_counts=[8, 40, 400])
    acc = t[t.measure == "accuracy"]
    counts = acc[acc.label_fraction.isna()]
    assert sorted(counts.label_count) == [8, 40, 400]
    assert acc[acc.label_fraction == 1.0].label_count.isna().all()
    full = float(acc[acc.label_fraction == 1.0].value.iloc[0])
    assert float(counts[counts.label_count == 400].value.iloc[0]) == pytest.approx(full, abs=1e-12)  # same rows
    stored = gm_run.downstream()
    assert "label_count" in stored and set(stored.label_count.dropna()) == {8, 40, 400}


def test_label_count_subsets_are_exact_stratified_and_seeded():
    from workbench.train.downstream import _count_index

    y = np.repeat([0, 1, 2], [500, 300, 200])
    for n in (3, 10, 33, 100, 999, 1000):
        idx = _count_index(y, n, 0, 0)
        assert len(idx) == n == len(set(idx))
        share = n * np.array([0.5, 0.3, 0.2])  # largest remainder, at least one each, by hand
        got = np.bincount(y[idx], minlength=3)
        assert np.all(np.abs(got - share) < 1) and got.min() >= 1 and got.sum() == n
    small, large = set(_count_index(y, 10, 0, 0)), set(_count_index(y, 100, 0, 0))
    assert small <= large  # nested
    assert set(_count_index(y, 10, 0, 1)) != small  # another run seed: another draw
    np.testing.assert_array_equal(_count_index(y, 10, 0, 0), _count_index(y, 10, 0, 0))


def test_raw_input_probe_matches_sklearn(gm_run):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    t = evaluate(gm_run, _task(), label_fractions=[1.0], layer=["input", "fc1"])
    raw = t[(t.layer == "input") & (t.measure == "accuracy")]
    assert len(raw) == 1 and int(raw.layer_index.iloc[0]) == -1
    ds = wb_data.load("gaussian-mixture", **_task()["options"])
    scaler = StandardScaler().fit(ds["train"].inputs)
    clf = LogisticRegression(C=1.0, max_iter=5000).fit(scaler.transform(ds["train"].inputs), ds["train"].labels)
    expected = clf.score(scaler.transform(ds["test"].inputs), ds["test"].labels)
    assert float(raw.value.iloc[0]) == pytest.approx(expected, abs=0.011)  # ≤ 2 of 200 test predictions differ
    assert set(t.layer) == {"input", "fc1"}


def test_label_counts_and_layer_bad_input(gm_run):
    with pytest.raises(ValueError, match=r"label_counts.*classes"):
        evaluate(gm_run, _task(), label_counts=[3])
    with pytest.raises(ValueError, match=r"label_counts.*at most 400"):
        evaluate(gm_run, _task(), label_counts=[401])
    with pytest.raises(ValueError, match="label_counts"):
        evaluate(gm_run, _task(), label_counts=[1])
    with pytest.raises(TypeError, match="label_counts"):
        evaluate(gm_run, _task(), label_counts=[True])
    with pytest.raises(TypeError, match="label_counts"):
        evaluate(gm_run, _task(), label_counts=10)
    with pytest.raises(ValueError, match="label_counts repeats"):
        evaluate(gm_run, _task(), label_counts=[8, 8])
    with pytest.raises(ValueError, match="both empty"):
        evaluate(gm_run, _task(), label_fractions=[])
    with pytest.raises(TypeError, match="layer"):
        evaluate(gm_run, _task(), layer=[])
    with pytest.raises(TypeError, match="label_counts"):
        Study(gm_run.config, seeds=[0], label_counts="20", store=gm_run.store)
    with pytest.raises(ValueError, match="label_counts"):
        Study(gm_run.config, seeds=[0], label_counts=[1], store=gm_run.store)


def test_old_downstream_table_without_label_count_is_merged(gm_run):
    evaluate(gm_run, _task(), label_fractions=[0.5])
    old = gm_run.downstream().drop(columns=["label_count", "run", "ci_low", "ci_high"])
    gm_run.write_file("downstream.csv", old.to_csv(index=False).encode())  # as stored before label counts
    evaluate(gm_run, _task(), label_fractions=[0.5], label_counts=[8])
    stored = gm_run.downstream()
    assert len(stored[(stored.label_fraction == 0.5) & (stored.measure == "accuracy")]) == 1  # replaced, not doubled
    assert (stored.label_count == 8).any()


# ----------------------------------------------------------------------------------------------- the finding
def test_latent_r2_golden_values():
    from workbench.findings.unlabeled_data import latent_r2

    rng = np.random.default_rng(0)
    z = rng.standard_normal((2000, 3))
    assert latent_r2(np.c_[z @ rng.standard_normal((3, 3)), rng.standard_normal((2000, 2))], z) == pytest.approx(1.0)
    assert abs(latent_r2(rng.standard_normal((2000, 4)), z)) < 0.01
    half = latent_r2(z[:, :1], z)  # one of three unit-variance coordinates
    assert half == pytest.approx(1 / 3, abs=0.03)


@pytest.fixture(scope="module")
def smoke(smoke_store):
    from workbench.findings.unlabeled_data import FINDING

    return FINDING.run("smoke", store=smoke_store, progress=False, record=False)


def test_smoke_finding_excess_risk_and_first_check_by_hand(smoke):
    t, v = smoke.table, smoke.verdict
    assert not smoke.study.failures
    task = next(x for x in smoke.study.tasks if isinstance(x, dict))
    risk = bayes_risk(wb_data.load("gaussian-mixture", **task["options"]), "test")
    acc = t[(t.kind == "downstream") & (t.measure == "accuracy") & (t.split == "test")]
    exc = t[(t.kind == "downstream") & (t.measure == "excess_risk") & (t.split == "test")]
    keys = ["run", "layer", "label_count"]
    both = acc.set_index(keys)["value"].to_frame("acc").join(exc.set_index(keys)["value"].to_frame("exc"))
    np.testing.assert_allclose(both["exc"], 1 - both["acc"] - risk, atol=1e-12)
    # check 1 by hand: raw − fc2 excess risk at n = 64 for the m = 8192 autoencoder, mean over seeds
    sel = exc[(exc.objective == "autoencoder") & (exc["dataset_options.n_train"] == 8192) & (exc.label_count == 64)]
    per_seed = sel.pivot_table(index="seed", columns="layer", values="value")
    gain = (per_seed["input"] - per_seed["fc2"]).mean()
    assert v.checks.iloc[0]["estimate"] == pytest.approx(gain, abs=1e-9)
    assert v.outcome == "inconclusive" and set(v.checks.n_seeds) == {2}  # two seeds cannot give a verdict
    assert set(t[t.measure == "latent_r2"].layer) == {"fc2", "input"}


def test_smoke_finding_figures(smoke):
    figs = smoke.finding.figures(smoke.table)
    assert set(figs) == {"excess_risk_vs_n", "gain_over_raw", "latent_subspace"}
    conditions = {tr.name for tr in figs["excess_risk_vs_n"].data}
    assert "raw inputs (no model)" in conditions and "autoencoder, m = 8192" in conditions
    r2 = smoke.table[smoke.table.measure == "latent_r2"]
    assert len(r2) == 2 * smoke.table.run.nunique() and r2.value.between(-1, 1).all()

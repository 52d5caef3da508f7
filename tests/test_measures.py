"""The measure registry: every shipped measure is registered once, and `compute` by name gives what the
measure's own public function gives (the registry is plumbing; each function is checked against independent
implementations in its family's tests)."""
from __future__ import annotations

import importlib
import inspect

import numpy as np
import pandas as pd
import pytest
import torch

from workbench import dynamics, measures, models, probing, similarity, spectrum, transfer
from workbench.results import COLUMNS, check_tidy

pytestmark = pytest.mark.usefixtures("one_thread")

FAMILIES = ["workbench.spectrum", "workbench.similarity", "workbench.transfer", "workbench.probing",
            "workbench.dynamics"]

#: public functions of the measure families that are not measures themselves, and why
NOT_MEASURES = {
    "second_moments": "shared moments pass behind the spectrum measures", "spectrum": "the eigenvalues themselves",
    "layer_spectrum_table": "table of registered spectrum measures", "transfer_table": "table of registered "
    "transfer measures", "logme_targets": "per-target pieces of logme", "canonical_correlations": "the ρ behind "
    "cca/svcca/pwcca", "rdm": "the dissimilarity matrix behind rsa", "knn_indices": "neighbour lists behind the "
    "k-NN measures", "minibatch_cka": "streaming form of cka", "ridge_probe": "regression probe (R², not "
    "accuracy): call directly", "token_rows": "data preparation", "sentence_split": "data preparation",
    "control_task": "data preparation", "selectivity": "difference of two registered probe accuracies",
    "random_init_twin": "a model, not a value", "with_baseline": "table join", "stratified_subsample": "sampling",
    "label_efficiency": "registered probes over label budgets", "combine_seeds": "aggregation",
    "online_codelength": "MDL: bits of a probe's code (call directly)", "block_ends": "MDL helper",
    "bootstrap_ci": "interval helper", "permutation_test": "permutation null of a similarity measure (calibration)",
    "permutation_matrix": "permutation nulls of a similarity measure over layer pairs",
    "bootstrap_similarity": "resampling interval of a similarity measure",
    "unit_correlations": "the correlations behind unit_matching",
    "match_units": "the assignment behind unit_matching", "grad_norm_history": "reads the trainer's recorded grad_norm",
    "layer_outputs": "forward hooks helper", "angular_distance": "the per-pair function behind "
    "layer_angular_distance", "residual_blocks": "model inspection", "skip_block": "model surgery",
    "el2n": "the per-batch function behind el2n_scores", "run_loss": "loss builder", "objective_loss":
    "loss builder", "cross_entropy_loss": "loss builder", "over_checkpoints": "applies a measure over checkpoints",
    "mode_onsets": "reads the eig_steps recorder's eigenvalue curves over steps",
    "stepwiseness": "reads the eig_steps recorder's eigenvalue curves over steps",
}


def _functions(pkg):
    mod = importlib.import_module(pkg)
    return {n: getattr(mod, n) for n in mod.__all__ if inspect.isfunction(getattr(mod, n))}


def test_every_shipped_measure_is_registered_once():
    behind = {}
    for m in measures.REGISTRY.values():
        behind.setdefault(m.function.__name__, []).append(m.name)
    unregistered = []
    for pkg in FAMILIES:
        for name, fn in _functions(pkg).items():
            matrix = {"shape_distance": "shape_matrix"}.get(fn.__name__, f"{fn.__name__}_matrix")
            if name in NOT_MEASURES or fn.__name__ in behind or matrix in behind:
                continue
            unregistered.append(f"{pkg}.{name}")
    assert not unregistered, f"public measures missing from the registry: {unregistered}"
    table = measures.measures_table()
    assert table["name"].is_unique and len(table) == len(measures.REGISTRY)
    assert set(table["takes"]) <= set(measures.TAKES) and set(table["returns"]) <= set(measures.RETURNS)
    assert table["reference"].str.len().min() > 5
    with pytest.raises(ValueError, match="already registered"):
        measures.register("rankme", "spectrum", "x", "per_layer", "dup", lambda one: {"value": 0.0})


def test_unknown_and_incomplete_requests_name_what_is_missing():
    with pytest.raises(ValueError, match=r"unknown measure 'rank_me'.*rankme"):
        measures.compute("rank_me", np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"'tolerance' takes x, labels .* missing: labels"):
        measures.compute("tolerance", np.ones((6, 3)))
    with pytest.raises(ValueError, match=r"'linear_probe' takes x, fit .* missing: fit"):
        measures.compute("linear_probe", np.ones((6, 3)), np.arange(6) % 2)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    n, d = 90, 6
    labels = np.arange(n) % 3
    x = rng.normal(size=(n, d)) + 2.0 * np.eye(3, d)[labels]
    deep = np.tanh(x @ rng.normal(size=(d, 5)))
    # layer order deliberately not alphabetical: layer_index must follow the mapping
    return {"x": {"stem": x, "head": deep}, "labels": labels, "views": {"stem": x + 0.1 * rng.normal(size=x.shape),
            "head": deep + 0.1 * rng.normal(size=deep.shape)}}


def _direct(name, x, labels, views):
    """The value of measure ``name`` on one layer, by its public function (not through the registry)."""
    fn = {"rankme": spectrum.rankme, "effective_rank": spectrum.effective_rank,
          "participation_ratio": spectrum.participation_ratio, "stable_rank": spectrum.stable_rank,
          "singular_value_entropy": spectrum.singular_value_entropy,
          "largest_singular_value_ratio": spectrum.largest_singular_value_ratio, "uniformity": spectrum.uniformity}
    if name in fn:
        return fn[name](x)
    if name == "alpha_req":
        return spectrum.alpha_req(x, k_range=(1, 5)).alpha
    if name == "alpha_req_r2":
        return spectrum.alpha_req(x, k_range=(1, 5)).r2
    if name == "alignment":
        return spectrum.alignment(x, views)
    if name == "invariance":
        return similarity.invariance(x, views)
    if name == "subclass_spread":
        return spectrum.subclass_spread(x, labels, np.array([0, 0, 1])[labels])
    if name in ("nc1", "nc2_equinorm", "nc2_equiangular"):
        return spectrum.neural_collapse(x, labels)[name]
    if name == "hscore_shrinkage":
        return transfer.hscore(x, labels, shrinkage=True)
    return {"tolerance": spectrum.tolerance, "cdnv": spectrum.cdnv, "lidar": spectrum.lidar, "logme": transfer.logme,
            "hscore": transfer.hscore, "transrate": transfer.transrate}[name](x, labels)


PER_LAYER = [n for n in measures.names() if measures.get(n).takes in ("x", "x, labels", "x, groups", "x, views")
             and n not in ("nc3", "nc4", "dse")]


@pytest.mark.parametrize("name", PER_LAYER)
def test_per_layer_measure_by_name_equals_its_function(name, data):
    options = {"alpha_req": {"k_range": (1, 5)},  # 6-wide layers: fit ranks 1..5
               "subclass_spread": {"superclass_of": {0: 0, 1: 0, 2: 1}}}.get(name, {})
    table = check_tidy(measures.compute(name, data["x"], data["labels"], groups=data["labels"], views=data["views"],
                                        **options))
    assert list(table.columns[:len(COLUMNS)]) == list(COLUMNS)
    assert table["layer"].unique().tolist() == ["stem", "head"]
    assert table.groupby("layer")["layer_index"].first().to_dict() == {"stem": 0, "head": 1}
    for row in table.itertuples():
        want = _direct(row.measure, data["x"][row.layer], data["labels"], data["views"][row.layer])
        np.testing.assert_allclose(row.value, want, rtol=1e-12, err_msg=f"{name} {row.measure} {row.layer}")


def test_measures_needing_a_classifier_or_tokens_take_them_as_options(data):
    x, labels = data["x"]["stem"], data["labels"]
    w = np.random.default_rng(1).normal(size=(3, x.shape[1]))
    nc = spectrum.neural_collapse(x, labels, weights=w)
    for name in ("nc3", "nc4"):
        got = measures.compute(name, {"stem": x}, labels, weights=w)["value"].iloc[0]
        assert got == pytest.approx(nc[name], rel=1e-12)
    tokens = np.random.default_rng(2).normal(size=(8, 5, 4))
    assert measures.compute("dse", tokens, seed=3)["value"].iloc[0] == pytest.approx(spectrum.dse(tokens, seed=3).dse)


@pytest.mark.parametrize("name", measures.names(takes="a, b"))
def test_pair_measure_by_name_equals_its_scalar_function(name, data):
    b = {"other": data["x"]["head"] + 0.3}
    table = check_tidy(measures.compute(name, data["x"], b=b), require=["layer_b", "layer_index_b"])
    assert len(table) == 2 and set(table["measure"]) == {name}
    scalar = {"cka": lambda u, v: similarity.cka(u, v),
              "cka_debiased": lambda u, v: similarity.cka(u, v, debiased=True),
              "cka_rbf": lambda u, v: similarity.cka(u, v, kernel="rbf"), "cca": similarity.cca,
              "svcca": similarity.svcca, "pwcca": similarity.pwcca, "shape_distance": similarity.shape_distance,
              "rsa": similarity.rsa, "mutual_knn": similarity.mutual_knn, "jaccard_knn": similarity.jaccard_knn,
              "unit_matching": similarity.unit_matching,
              "unit_semimatching": lambda u, v: similarity.unit_matching(u, v, semi=True)}[name]
    for row in table.itertuples():
        assert row.layer_b == "other" and row.layer_index_b == 0
        np.testing.assert_allclose(row.value, scalar(data["x"][row.layer], b["other"]), rtol=1e-10, atol=1e-12)
    self_table = measures.compute(name, data["x"])  # b=None: the layers against each other
    assert len(self_table) == 4


@pytest.mark.parametrize("name", measures.names(takes="x, fit"))
def test_probe_by_name_fits_on_fit_and_scores_x(name, data):
    x, y = data["x"]["stem"], data["labels"]
    fit, test = slice(0, 60), slice(60, None)
    table = measures.compute(name, {"stem": x[test]}, y[test], fit=({"stem": x[fit]}, y[fit]), n_boot=50)
    fn = getattr(probing, name)
    direct = fn(x[fit], y[fit], {"test": (x[test], y[test])}, n_boot=50)
    score = {"circular_probe": "circular_cosine"}.get(name, "accuracy")  # labels 0, 1, 2 read as angles
    want = direct[(direct["split"] == "test") & (direct["measure"] == score)].iloc[0]
    row = table.iloc[0]
    assert row["measure"] == name and row["layer"] == "stem"
    assert (row["value"], row["ci_low"], row["ci_high"]) == pytest.approx((want.value, want.ci_low, want.ci_high))


def test_source_model_measures(data):
    rng = np.random.default_rng(4)
    probs = rng.dirichlet(np.ones(4), size=len(data["labels"]))
    got = measures.compute("leep", outputs=probs, labels=data["labels"])
    assert got["value"].iloc[0] == pytest.approx(transfer.leep(probs, data["labels"]))
    hard = probs.argmax(1)
    assert measures.compute("nce", outputs=hard, labels=data["labels"])["value"].iloc[0] == pytest.approx(
        transfer.nce(hard, data["labels"]))


def test_model_level_measures_by_name():
    torch.manual_seed(0)
    model = models.build("mlp", input_shape=(5,), num_classes=3, hidden=(7, 6)).double()
    x, y = torch.randn(24, 5, dtype=torch.float64), torch.arange(24) % 3
    loss = dynamics.cross_entropy_loss(x, y)
    got = measures.compute("grad_norm", model=model, loss=loss)
    want = dynamics.layer_grad_norms(model, loss)
    assert got["layer"].tolist() == want["layer"].tolist()
    np.testing.assert_allclose(got["value"], want["value"], rtol=1e-12)
    lam = measures.compute("hessian_top_eigenvalue", model=model, loss=loss, tol=1e-8, max_iter=500)
    assert len(lam) == 1 and np.isnan(lam["layer_index"].iloc[0])
    assert lam["value"].iloc[0] == pytest.approx(
        dynamics.hessian_top_eigenvalue(model, loss, tol=1e-8, max_iter=500)["value"].iloc[0], rel=1e-6)
    with pytest.raises(ValueError, match="takes model, loss"):
        measures.compute("grad_norm", model=model)


def test_measures_table_lists_references():
    table = measures.measures_table()
    assert {"name", "family", "takes", "returns", "exact", "function", "reference"} <= set(table.columns)
    assert isinstance(table, pd.DataFrame) and (table["name"] == "cka").sum() == 1


def test_cli_lists_every_measure_with_its_reference(capsys):
    import json

    from workbench.cli import main

    assert main(["measures", "--format", "json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [m["name"] for m in listed] == measures.names()
    assert all(m["reference"] == measures.get(m["name"]).reference for m in listed)
    assert main(["measures", "--family", "similarity"]) == 0
    out = capsys.readouterr().out
    assert "Kornblith et al. 2019" in out and "rankme" not in out


def test_a_measure_needing_an_option_says_which():
    x, y = np.random.default_rng(0).normal(size=(30, 4)), np.arange(30) % 3
    with pytest.raises(ValueError, match=r"'nc3' needs the option weights="):
        measures.compute("nc3", x, y)
    with pytest.raises(ValueError, match=r"'nc4' needs the option weights= or logits="):
        measures.compute("nc4", x, y)

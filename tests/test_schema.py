"""One results schema: every producer's table passes `check_tidy`, starts with the schema's columns in order,
uses only registered or documented extras, and its `layer_index` follows the order of the layers it was given.

The producers are walked here in one place (probes, similarity, spectrum, transfer, the registry, dynamics,
saliency, training history, evaluate, the Study); each family's own tests check the values.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from workbench import dynamics, measures, models, probing, saliency, similarity, spectrum, transfer
from workbench.data import load
from workbench.results import COLUMNS, check_tidy, tidy
from workbench.runs import RunConfig, RunStore

pytestmark = pytest.mark.usefixtures("one_thread")

RNG = np.random.default_rng(0)
N = 60
LABELS = np.arange(N) % 3
X = RNG.normal(size=(N, 5)) + 2.0 * np.eye(3, 5)[LABELS]
# deliberately not alphabetical: layer_index must follow the mapping, not the names
LAYERS = {"zeta": X, "alpha": np.tanh(X @ RNG.normal(size=(5, 4))), "mid": X[:, :3] ** 2}
FIT, EVAL = slice(0, 40), slice(40, None)
EVALS = {"test": ({k: v[EVAL] for k, v in LAYERS.items()}, LABELS[EVAL])}
TRAIN = {k: v[FIT] for k, v in LAYERS.items()}

ARRAY_PRODUCERS = {
    "linear_probe": lambda: probing.linear_probe(TRAIN, LABELS[FIT], EVALS, C=1.0, n_boot=20),
    "ridge_probe": lambda: probing.ridge_probe(TRAIN, LABELS[FIT], EVALS, n_boot=20),
    "knn_probe": lambda: probing.knn_probe(TRAIN, LABELS[FIT], EVALS, n_boot=20),
    "prototype_probe": lambda: probing.prototype_probe(TRAIN, LABELS[FIT], EVALS, n_boot=20),
    "gaussian_nb_probe": lambda: probing.gaussian_nb_probe(TRAIN, LABELS[FIT], EVALS, n_boot=20),
    "mlp_probe": lambda: probing.mlp_probe(TRAIN, LABELS[FIT], EVALS, max_epochs=3, n_boot=20),
    "selectivity": lambda: probing.selectivity(TRAIN, LABELS[FIT], LABELS[FIT] % 2, {
        "test": (EVALS["test"][0], LABELS[EVAL], LABELS[EVAL] % 2)}, n_boot=20),
    "label_efficiency": lambda: probing.label_efficiency(TRAIN, LABELS[FIT], EVALS, per_class=(2, "all"), seeds=(0,),
                                                         n_boot=20),
    "online_codelength": lambda: probing.online_codelength(LAYERS, LABELS, fractions=(0.25, 0.5, 1.0)),
    "cka_matrix": lambda: similarity.cka_matrix(LAYERS),
    "cca_matrix": lambda: similarity.cca_matrix(LAYERS),
    "svcca_matrix": lambda: similarity.svcca_matrix(LAYERS, variance=0.99),
    "pwcca_matrix": lambda: similarity.pwcca_matrix(LAYERS),
    "shape_matrix": lambda: similarity.shape_matrix(LAYERS),
    "rsa_matrix": lambda: similarity.rsa_matrix(LAYERS),
    "mutual_knn_matrix": lambda: similarity.mutual_knn_matrix(LAYERS, k=5),
    "jaccard_knn_matrix": lambda: similarity.jaccard_knn_matrix(LAYERS, k=5),
    "minibatch_cka": lambda: similarity.minibatch_cka([{k: v[:30] for k, v in LAYERS.items()},
                                                       {k: v[30:] for k, v in LAYERS.items()}]),
    "layer_spectrum_table": lambda: spectrum.layer_spectrum_table(LAYERS, ("rankme", "effective_rank", "stable_rank")),
    "transfer_table": lambda: transfer.transfer_table(LAYERS, LABELS),
    "measures.compute": lambda: pd.concat([measures.compute("rankme", LAYERS),
                                           measures.compute("cka", LAYERS, b=LAYERS)], ignore_index=True),
}


def _check(table: pd.DataFrame, what: str, layers=None) -> None:
    check_tidy(table, what)
    assert list(table.columns[:len(COLUMNS)]) == list(COLUMNS), what
    if layers is not None and table["layer"].notna().any():
        order = {name: i for i, name in enumerate(layers)}
        rows = table.dropna(subset=["layer"])
        assert (rows["layer_index"] == rows["layer"].map(order)).all(), f"{what}: layer_index is not the layer order"
        if "layer_b" in rows:
            pairs = rows.dropna(subset=["layer_b"])
            assert (pairs["layer_index_b"] == pairs["layer_b"].map(order)).all(), what


@pytest.mark.parametrize("name", list(ARRAY_PRODUCERS))
def test_array_producers_return_the_schema(name):
    table = ARRAY_PRODUCERS[name]()
    _check(table, name, LAYERS)
    assert not {"metric", "index", "probe", "layer_a", "index_a", "index_b"} & set(table.columns), name


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    store = RunStore(tmp_path_factory.mktemp("store"))
    from workbench.train import train

    cfg = RunConfig(dataset="gaussian-mixture", dataset_options={"n_train": 96, "n_test": 48, "n_ood": 48, "dim": 8},
                    model="mlp", model_options={"hidden": [16, 16]}, steps=4, batch_size=16, checkpoints=1, lr=1e-2,
                    recorders=("grad_norm",))
    run = train(cfg, store, name="tiny", progress=False)
    return run, load("gaussian-mixture", **cfg.dataset_options)


def test_run_producers_return_the_schema(trained):
    from workbench.study import cross_run_similarity, layer_measures, run_activations
    from workbench.train import evaluate

    run, ds = trained
    model = run.load_model()
    layers = list(models.probe_points(model)) if hasattr(models, "probe_points") else None
    _check(run.history(), "Run.history()")
    _check(evaluate(run, methods=["linear"]), "evaluate(run)")
    acts = run_activations(run, ds, ("train", "test"))
    _check(layer_measures(acts, run="tiny", step=run.checkpoints()[-1], n_boot=20), "layer_measures",
           acts["train"].layers)
    _check(cross_run_similarity(acts["test"], acts["test"], run_a="tiny", run_b="tiny"), "cross_run_similarity",
           acts["test"].layers)
    x, y = torch.as_tensor(ds["test"].inputs[:24]).float(), torch.as_tensor(ds["test"].labels[:24])
    loss = dynamics.cross_entropy_loss(x, y)
    for what, table in {
            "layer_grad_norms": dynamics.layer_grad_norms(model, loss),
            "output_variance": dynamics.output_variance(model, ds["test"]),
            "layer_angular_distance": dynamics.layer_angular_distance(model, ds["test"], layers=["fc1", "fc2"]),
            "hessian_top_eigenvalue": dynamics.hessian_top_eigenvalue(model, loss, tol=1e-2, max_iter=200),
            "el2n_scores": dynamics.el2n_scores([model], ds["test"]),
            "grand_scores": dynamics.grand_scores([model], ds["test"].subset(slice(0, 16))),
            "grad_norm_history": dynamics.grad_norm_history(run),
            "over_checkpoints": dynamics.over_checkpoints(run, lambda m: dynamics.layer_grad_norms(m, loss)),
    }.items():
        _check(table, what, layers)
    attr = saliency.attribute(model, x[:6], method="saliency", target=y[:6])
    _check(attr.frame(), "Attribution.frame()")
    _check(attr.per_example(), "Attribution.per_example()")
    _check(saliency.drift([attr, saliency.attribute(model, x[:6], method="input_x_gradient", target=y[:6])]),
           "saliency.drift")
    _check(saliency.perturbation_curves(model, x[:6], method="saliency", target=y[:6], steps=4), "perturbation_curves")


def test_tidy_fills_and_orders_and_check_tidy_names_what_is_wrong():
    t = tidy([{"layer": "b", "measure": "m", "value": 1, "extra": "e"}, {"layer": "a", "measure": "m", "value": 2}],
             layers=["a", "b"], run="r")
    assert list(t.columns) == [*COLUMNS, "extra"] and t["layer_index"].tolist() == [1, 0]
    assert t["step"].isna().all() and t["run"].tolist() == ["r", "r"] and t["value"].dtype == np.float64
    with pytest.raises(ValueError, match=r"missing column\(s\) \['measure'\].*'metric' is called 'measure'"):
        check_tidy(t.rename(columns={"measure": "metric"}), "t")
    with pytest.raises(ValueError, match="needs a measure name"):
        check_tidy(t.assign(measure=[None, "m"]), "t")
    with pytest.raises(ValueError, match="'value' must be numeric"):
        check_tidy(t.assign(value=["x", "y"]), "t")
    with pytest.raises(TypeError, match="must be a pandas DataFrame"):
        check_tidy({"measure": ["m"]}, "t")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['layer_b'\]"):
        check_tidy(t, "t", require=["layer_b"])

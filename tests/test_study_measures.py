"""`Study(measures=...)` takes any registered measure by name: per-layer, probes, layer pairs (within a run
and across runs), source-output and model-level measures. Values are checked against the measure's own
public function on the same checkpoint's activations / model (the functions are checked against independent
implementations in their families' tests)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench import dynamics, measures, models, probing, similarity, spectrum
from workbench.data import load
from workbench.results import COLUMNS, check_tidy
from workbench.runs import RunStore
from workbench.study import STUDY_TAKES, Study, run_activations

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]

BASE = {"dataset": "gaussian-mixture", "dataset_options": {"n_train": 200, "n_test": 120, "n_ood": 40, "dim": 8},
        "model": "mlp", "model_options": {"hidden": [12, 12]}, "steps": 5, "lr": 1e-2, "batch_size": 32}
# an MLP has no residual blocks, so layer skipping is checked on its own below
ACCEPTED = [n for n in measures.names() if measures.get(n).takes in STUDY_TAKES and not measures.get(n).requires
            and n not in ("skip_loss_increase", "dse")]  # dse: token maps, below on a CNN
OPTIONS = {"mlp_probe": {"max_epochs": 5, "n_boot": 20}, "linear_probe": {"n_boot": 20, "C": 1.0},
           "knn_probe": {"n_boot": 20}, "prototype_probe": {"n_boot": 20}, "gaussian_nb_probe": {"n_boot": 20},
           "alpha_req": {"k_range": (1, 5)}, "hessian_top_eigenvalue": {"max_iter": 20},
           "mutual_knn": {"k": 5}, "jaccard_knn": {"k": 5}, "rsa": {"max_n": 200},
           "angular_distance": {"layers": ["fc1", "fc2"]}, "output_variance": {"layers": ["fc1", "fc2", "head"]}}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    store = RunStore(tmp_path_factory.mktemp("store"))
    st = Study(BASE, vary={"label_noise": [0.0, 0.3]}, downstream=[], measures=ACCEPTED, measure_options=OPTIONS,
               measure_examples=60, store=store)
    st.run(progress=False)
    return st


def test_every_accepted_measure_is_in_the_table(study):
    assert study.failures == []
    table = check_tidy(study.table)
    assert list(table.columns[:len(COLUMNS)]) == list(COLUMNS)
    meas = table[table.kind.isin(["measure", "cross_run"])]
    missing = sorted(set(ACCEPTED) - set(meas["measure"]))
    assert not missing, f"measures missing from the study table: {missing}"
    assert np.isfinite(meas["value"]).all()
    cross = table[table.kind == "cross_run"]
    pair = set(measures.names(takes="a, b"))
    assert set(cross["measure"]) == pair and set(cross["run_b"]) == {"label_noise=0.3,seed=0"}
    assert set(cross["run"]) == {"label_noise=0.0,seed=0"}


def test_study_values_equal_the_functions_on_the_same_checkpoint(study):
    table, run_name = study.table, "label_noise=0.3,seed=0"
    run = next(r for r in study.store.runs() if r.name == f"study/{run_name}")  # store name: "{study.name}/{label}"
    ds = load("gaussian-mixture", **BASE["dataset_options"])
    step = int(table[table.run == run_name]["step"].max())
    acts = run_activations(run, ds, ("train", "test"), step=step, max_examples={"train": 60, "test": 60})
    x, fit = acts["test"], acts["train"]

    def got(measure, layer=None, kind="measure", **where):
        sel = table[(table.run == run_name) & (table.measure == measure) & (table.kind == kind)]
        if layer is not None:
            sel = sel[sel.layer == layer]
        for k, v in where.items():
            sel = sel[sel[k] == v]
        assert len(sel) == 1, (measure, layer, len(sel))
        return float(sel["value"].iloc[0])

    for layer in x.layers:
        assert got("rankme", layer) == pytest.approx(spectrum.rankme(x[layer]), rel=1e-10)
        assert got("tolerance", layer) == pytest.approx(spectrum.tolerance(x[layer], x.labels), rel=1e-10)
        assert got("nc1", layer) == pytest.approx(spectrum.neural_collapse(x[layer], x.labels)["nc1"], rel=1e-10)
        probe = probing.knn_probe(fit[layer], fit.labels, {"test": (x[layer], x.labels)}, n_boot=20)
        want = probe[(probe.split == "test") & (probe.measure == "accuracy")]["value"].iloc[0]
        assert got("knn_probe", layer) == pytest.approx(want)
    la, lb = x.layers[0], x.layers[-1]
    assert got("cka", la, layer_b=lb) == pytest.approx(similarity.cka(x[la], x[lb]), rel=1e-10)
    other = next(r for r in study.store.runs() if r.name == "study/label_noise=0.0,seed=0")
    xo = run_activations(other, ds, ("test",), step=step, max_examples={"test": 60})["test"]
    cross = table[(table.kind == "cross_run") & (table.measure == "cka") & (table.layer == la) & (table.layer_b == la)]
    assert float(cross["value"].iloc[0]) == pytest.approx(similarity.cka(xo[la], x[la]), rel=1e-10)
    model = run.load_model(step)
    # alignment: the run has no augmentations, so its views are noise at strength 0.5, seed 0 (Study._augmented)
    from workbench.activations import extract
    from workbench.data import Split
    from workbench.train.augment import make_augment

    data = ds["test"].subset(slice(0, 60))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        aug = make_augment(("noise",), 0.5, kind="vectors")
        views = [extract(model, Split(inputs=aug(torch.as_tensor(data.inputs, dtype=torch.float32)).numpy(),
                                      labels=data.labels)) for _ in range(2)]
    for layer in x.layers:
        assert got("alignment", layer) == pytest.approx(spectrum.alignment(views[0][layer], views[1][layer]),
                                                          rel=1e-10)
    loss = dynamics.run_loss(run, model, split="test", n=60)
    grads = dynamics.layer_grad_norms(model, loss)
    for row in grads.itertuples():
        assert got("grad_norm", row.layer) == pytest.approx(row.value, rel=1e-6)


def test_study_refuses_what_it_cannot_provide(tmp_path):
    with pytest.raises(ValueError, match=r"measures has unknown 'rank_me'; registered measures: \[.*'rankme'"):
        Study(BASE, measures=["rank_me"], store=tmp_path)
    with pytest.raises(ValueError, match=r"'nc3' needs the option weights="):
        Study(BASE, measures=["nc3"], store=tmp_path)
    with pytest.raises(ValueError, match=r"measure_options names \['cka'\]"):
        Study(BASE, measures=["rankme"], measure_options={"cka": {}}, store=tmp_path)


def test_layer_skipping_on_a_model_without_residual_blocks_is_a_reported_failure(tmp_path):
    torch.manual_seed(0)
    st = Study(BASE, downstream=[], measures=["skip_loss_increase"], measure_examples=40, store=tmp_path)
    with pytest.raises(RuntimeError, match="every run of the study failed"):
        st.run(progress=False)
    (label, error), = st.failures
    assert label == "seed=0" and "measure 'skip_loss_increase' at step 5: MLP has no Transformer Block" in error


def test_dense_measure_on_cnn_feature_maps(tmp_path):
    """dse takes token maps: a CNN's feature maps [N, C, H, W] become [N, H·W, C]; layers with one vector per
    example (pool, head) are skipped. Checked against maps captured here by forward hooks."""
    from workbench.models import get_module

    base = {"dataset": "shapes", "dataset_options": {"n_train": 64, "n_test": 24, "n_ood": 8, "size": 16},
            "model": "cnn", "model_options": {"width": 8, "depth": 2}, "steps": 2, "batch_size": 16, "lr": 1e-3}
    st = Study(base, downstream=[], measures=["dse"], measure_options={"dse": {"n_clusters": 4, "normalize": False}},
               measure_examples=12, store=tmp_path)
    table = st.run(progress=False)
    assert st.failures == []
    rows = table[table.measure == "dse"].set_index("layer")["value"]
    run = st.store.runs()[0]
    model = run.load_model()
    data = load("shapes", **base["dataset_options"])["test"].subset(slice(0, 12))
    maps = {}
    for name in rows.index:
        handle = get_module(model, models.probe_points(model)[name]).register_forward_hook(
            lambda _m, _i, out, name=name: maps.__setitem__(name, out.detach()))
        with torch.no_grad():
            model.eval()(torch.as_tensor(data.inputs, dtype=torch.float32))
        handle.remove()
    assert set(rows.index) and all(maps[n].ndim == 4 for n in rows.index)  # only the feature-map layers
    for name, value in rows.items():
        tokens = maps[name].flatten(2).transpose(1, 2)
        assert value == pytest.approx(spectrum.dse(tokens, n_clusters=4, normalize=False).dse, rel=1e-5)

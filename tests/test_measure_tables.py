"""Every similarity, spectrum and transfer table is in the one results schema and takes its data in the one
calling convention: an array, a tensor, an ``Activations`` or a layer mapping alike, options keyword-only."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from workbench import similarity
from workbench.activations import Activations
from workbench.results import COLUMNS, check_tidy
from workbench.spectrum import layer_spectrum_table
from workbench.transfer import transfer_table

PAIR_EXTRAS = ["layer_b", "layer_index_b"]

#: every layer-pair producer: name -> (function, options); each gives a tidy table and a matrix
PAIR_TABLES = {
    "cka_matrix": (similarity.cka_matrix, {}),
    "cka_matrix debiased": (similarity.cka_matrix, {"debiased": True}),
    "cka_matrix rbf": (similarity.cka_matrix, {"kernel": "rbf"}),
    "cca_matrix": (similarity.cca_matrix, {"summary": "r2"}),
    "svcca_matrix": (similarity.svcca_matrix, {"dims": 2}),
    "pwcca_matrix": (similarity.pwcca_matrix, {}),
    "shape_matrix": (similarity.shape_matrix, {"alpha": 0.5}),
    "rsa_matrix": (similarity.rsa_matrix, {"metric": "euclidean"}),
    "mutual_knn_matrix": (similarity.mutual_knn_matrix, {"k": 5}),
    "jaccard_knn_matrix": (similarity.jaccard_knn_matrix, {"k": 5}),
}
#: the single-pair function each table repeats, with the same options
PAIR_VALUES = {
    "cka_matrix": (similarity.cka, {}),
    "cka_matrix debiased": (similarity.cka, {"debiased": True}),
    "cka_matrix rbf": (similarity.cka, {"kernel": "rbf"}),
    "cca_matrix": (similarity.cca, {"summary": "r2"}),
    "svcca_matrix": (similarity.svcca, {"dims": 2}),
    "pwcca_matrix": (similarity.pwcca, {}),
    "shape_matrix": (similarity.shape_distance, {"alpha": 0.5}),
    "rsa_matrix": (similarity.rsa, {"metric": "euclidean"}),
    "mutual_knn_matrix": (similarity.mutual_knn, {"k": 5}),
    "jaccard_knn_matrix": (similarity.jaccard_knn, {"k": 5}),
}


@pytest.fixture(scope="module")
def layers() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    base = rng.normal(size=(60, 4))
    # deliberately not in alphabetical order: layer_index must follow the mapping, not the names
    return {"z_embed": base, "m_block": np.tanh(base @ rng.normal(size=(4, 6))), "a_head": rng.normal(size=(60, 3))}


def _naive_linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Biased linear CKA from the doubly centred Gram matrices (Kornblith et al. 2019, Eq. 4)."""
    h = np.eye(len(x)) - 1.0 / len(x)
    k, l = h @ x @ x.T @ h, h @ y @ y.T @ h
    return float((k * l).sum() / np.sqrt((k * k).sum() * (l * l).sum()))


@pytest.mark.parametrize("name", list(PAIR_TABLES))
def test_pair_tables_are_in_the_schema(layers, name):
    fn, options = PAIR_TABLES[name]
    other = {"q": layers["m_block"] @ np.random.default_rng(1).normal(size=(6, 5)), "p": layers["a_head"]}
    table = fn(layers, other, **options)
    check_tidy(table, name, require=PAIR_EXTRAS)
    assert list(table.columns) == [*COLUMNS, *PAIR_EXTRAS]
    assert table[["run", "step", "split", "ci_low", "ci_high"]].isna().all().all()
    assert table["measure"].nunique() == 1 and len(table) == len(layers) * len(other)
    assert table["layer_index"].dtype.kind == "i" and table["layer_index_b"].dtype.kind == "i"
    names_a, names_b = list(layers), list(other)
    pair, one = PAIR_VALUES[name]
    for row in table.itertuples():
        assert names_a[row.layer_index] == row.layer and names_b[row.layer_index_b] == row.layer_b
        assert row.value == pytest.approx(pair(layers[row.layer], other[row.layer_b], **one), rel=1e-9, abs=1e-12)
    matrix = fn(layers, other, **options, output="matrix")
    assert (matrix.index.name, matrix.columns.name) == ("layer", "layer_b")
    assert list(matrix.index) == names_a and list(matrix.columns) == names_b
    pivot = table.pivot(index="layer", columns="layer_b", values="value").loc[names_a, names_b]
    np.testing.assert_allclose(matrix.to_numpy(), pivot.to_numpy(), rtol=0, atol=0)


@pytest.mark.parametrize("name", list(PAIR_TABLES))
def test_pair_tables_take_every_input_form_alike(layers, name):
    fn, options = PAIR_TABLES[name]
    x, y = layers["m_block"], layers["z_embed"]
    pair, one = PAIR_VALUES[name]
    single = fn(x, y, **options)  # bare arrays: the one layer "features" on each side
    assert single[["layer", "layer_b", "layer_index", "layer_index_b"]].values.tolist() == [
        ["features", "features", 0, 0]]
    assert single["value"].iloc[0] == pytest.approx(pair(x, y, **one), rel=1e-9, abs=1e-12)
    tensors = fn(torch.as_tensor(x), torch.as_tensor(y), **options)
    pd.testing.assert_frame_equal(tensors, single)
    mapping = fn(layers, **options, output="matrix")
    acts = fn(Activations({k: torch.as_tensor(v) for k, v in layers.items()}), **options, output="matrix")
    pd.testing.assert_frame_equal(acts, mapping)
    with pytest.raises(TypeError, match="positional"):
        fn(layers, None, "tidy")  # every option is keyword-only
    with pytest.raises(TypeError, match="a must be an array, a tensor, an Activations or a mapping"):
        fn("layers", **options)


def test_cka_matrix_of_one_array_is_cka_of_the_array_with_itself(layers):
    x = layers["m_block"]
    table = similarity.cka_matrix(x)
    assert len(table) == 1 and table["value"].iloc[0] == pytest.approx(_naive_linear_cka(x, x), abs=1e-12)
    y = layers["a_head"]
    assert similarity.cka_matrix(x, y)["value"].iloc[0] == pytest.approx(_naive_linear_cka(x, y), rel=1e-10)
    both = similarity.cka_matrix({"x": x, "y": y}, output="matrix")
    assert both.loc["x", "y"] == pytest.approx(_naive_linear_cka(x, y), rel=1e-10)


def test_minibatch_cka_tables(layers):
    batches = [({k: v[i:i + 20] for k, v in layers.items()}, layers["a_head"][i:i + 20]) for i in (0, 20, 40)]
    table = similarity.minibatch_cka(batches)
    check_tidy(table, "minibatch_cka", require=PAIR_EXTRAS)
    assert list(table.columns) == [*COLUMNS, *PAIR_EXTRAS]
    assert table["layer"].tolist() == list(layers) and set(table["layer_b"]) == {"features"}
    acc = similarity.MinibatchCKA()
    for a, b in batches:
        acc.update(a, b)
    pd.testing.assert_frame_equal(acc.result(), table)
    one = similarity.MinibatchCKA().update(layers, layers["a_head"]).result(output="matrix")
    full = similarity.cka_matrix(layers, layers["a_head"], debiased=True, output="matrix")
    pd.testing.assert_frame_equal(one, full, rtol=1e-10)  # one batch of everything: debiased CKA


def _numpy_rankme(x: np.ndarray, eps: float = 1e-7) -> float:
    s = np.linalg.svd(x, compute_uv=False)
    p = s / s.sum() + eps
    return float(np.exp(-(p * np.log(p)).sum()))


def test_layer_spectrum_table_is_in_the_schema(layers):
    table = layer_spectrum_table(layers, measures=("rankme", "alpha_req"), alpha_k_range=(1, 3))
    check_tidy(table, "layer_spectrum_table")
    assert list(table.columns) == list(COLUMNS)
    assert table[["run", "step", "split", "ci_low", "ci_high"]].isna().all().all()
    assert table.drop_duplicates("layer")[["layer", "layer_index"]].values.tolist() == [
        [name, i] for i, name in enumerate(layers)]
    assert table.groupby("layer", sort=False)["measure"].apply(list).tolist() == [
        ["rankme", "alpha_req", "alpha_req_r2"]] * len(layers)
    rankme = table[table.measure == "rankme"].set_index("layer")["value"]
    for name, x in layers.items():
        assert rankme[name] == pytest.approx(_numpy_rankme(x), rel=1e-9)
    single = layer_spectrum_table(torch.as_tensor(layers["m_block"]), measures="rankme")
    assert single[["layer", "layer_index"]].values.tolist() == [["features", 0]]
    assert single["value"].iloc[0] == pytest.approx(_numpy_rankme(layers["m_block"]), rel=1e-9)
    acts = layer_spectrum_table(Activations({k: torch.as_tensor(v) for k, v in layers.items()}), measures="rankme")
    pd.testing.assert_frame_equal(acts, layer_spectrum_table(layers, measures="rankme"))


def test_transfer_table_is_in_the_schema(layers):
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 3, 60)
    table = transfer_table(layers, labels, measures=("hscore", "transrate"))
    check_tidy(table, "transfer_table")
    assert list(table.columns) == list(COLUMNS)
    assert table[["layer", "layer_index", "measure"]].values.tolist() == [
        [name, i, m] for i, name in enumerate(layers) for m in ("hscore", "transrate")]
    from workbench.transfer import hscore

    got = table[table.measure == "hscore"].set_index("layer")["value"]
    for name, x in layers.items():
        assert got[name] == pytest.approx(hscore(x, labels), rel=1e-12)
    single = transfer_table(layers["m_block"], labels, measures="hscore")
    assert single[["layer", "layer_index"]].values.tolist() == [["features", 0]]


def test_cross_run_similarity_names_both_runs(layers):
    from workbench.study import cross_run_similarity

    a = Activations({k: torch.as_tensor(v) for k, v in layers.items()})
    b = Activations({"only": torch.as_tensor(layers["a_head"])})
    table = cross_run_similarity(a, b, run_a="clean", run_b="noisy", step=7)
    check_tidy(table, "cross_run_similarity", require=[*PAIR_EXTRAS, "run_b"])
    assert list(table.columns) == [*COLUMNS, *PAIR_EXTRAS, "run_b"]
    assert set(table.run) == {"clean"} and set(table.run_b) == {"noisy"} and set(table.step) == {7}
    for row in table.itertuples():
        assert row.value == pytest.approx(_naive_linear_cka(layers[row.layer], layers["a_head"]), rel=1e-9)

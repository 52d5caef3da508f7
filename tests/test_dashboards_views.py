"""Dashboards: moving each control (widget.value = ...) makes dash.figure show what an independent pandas/numpy
filter of the input gives; the FigureWidget object is never replaced; bad selections are refused by name."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
import torch

pytest.importorskip("ipywidgets")
from workbench import figures
from workbench.activations import Activations
from workbench.dashboards import (EmbeddingExplorer, ProbeDashboard, SaliencyDashboard,
                                  SimilarityDashboard, SpectrumDashboard, StudyDashboard, combine, spectrum_frames)
from workbench.results import COLUMNS, tidy

LAYERS = ["conv1", "conv2", "fc"]
RUNS = ["supervised", "simclr", "random-init"]


def _main_lines(fw, yaxis="y"):
    return {t.name: (list(t.x), list(t.y)) for t in fw.data
            if t.mode == "lines+markers" and (t.yaxis or "y") == yaxis}


# ------------------------------------------------------------------------------------------ probes

@pytest.fixture()
def probes() -> pd.DataFrame:
    rows = []
    for r, run in enumerate(RUNS):
        for step in (100, 1000):
            for split in ("test", "ood"):
                for target in ("label", "colour"):
                    for i, layer in enumerate(LAYERS):
                        task = round(0.3 + 0.1 * i + 0.02 * r + (0.05 if step == 1000 else 0)
                                     - (0.1 if split == "ood" else 0) + (0.2 if target == "colour" else 0), 6)
                        ctrl = round(0.2 + 0.01 * i, 6)
                        for measure, v in (("task_accuracy", task), ("control_accuracy", ctrl),
                                           ("selectivity", round(task - ctrl, 6))):
                            rows.append(dict(run=run, step=step, layer=layer, layer_index=i, measure=measure,
                                             split=split, value=v, ci_low=v - 0.01, ci_high=v + 0.01, target=target,
                                             method="logistic"))
    return tidy(rows[::-1])  # reversed: order must come from layer_index


def _probe_expected(df, run, measure="task_accuracy", split="test", target="label", step=1000):
    sub = df[(df.run == run) & (df.measure == measure) & (df.split == split) & (df.target == target)
             & (df.step == step)]
    sub = sub.assign(_i=sub.layer.map({l: i for i, l in enumerate(LAYERS)})).sort_values("_i")
    return list(sub.layer), list(sub.value)


def test_probe_dashboard_controls_follow_the_frame(probes):
    dash = ProbeDashboard(probes, baseline="random-init", target="label")
    fw = dash.figure
    assert dash.filter_ws["split"].value == "test" and dash.filter_ws["step"].value == "latest"
    for run in RUNS:
        assert _main_lines(fw)[run] == _probe_expected(probes, run)
    assert _main_lines(fw, "y2")["simclr"] == _probe_expected(probes, "simclr", "selectivity")
    dash.filter_ws["split"].value = "ood"
    assert _main_lines(fw)["simclr"] == _probe_expected(probes, "simclr", split="ood")
    dash.filter_ws["target"].value = "colour"
    dash.filter_ws["step"].value = 100
    assert _main_lines(fw)["supervised"] == _probe_expected(probes, "supervised", split="ood", target="colour",
                                                            step=100)
    assert _main_lines(fw)["supervised · control"] == _probe_expected(
        probes, "supervised", "control_accuracy", split="ood", target="colour", step=100)
    dash.runs_w.value = ("simclr",)
    assert set(_main_lines(fw)) == {"simclr", "simclr · control"}
    dash.selectivity_w.value = False
    assert not _main_lines(fw, "y2")
    dash.control_w.value = False
    assert set(_main_lines(fw)) == {"simclr"}
    assert dash.figure is fw
    # the attached data are the filtered rows
    data = dash.plotted_data()
    assert set(data.run) == {"simclr"} and set(data.split) == {"ood"} and set(data.step) == {100}


def test_probe_dashboard_latest_step_keeps_an_early_baseline(probes):
    # the random-init twin only exists at step 100; "latest" draws each run at its own last step
    early = probes[(probes.run != "random-init") | (probes.step == 100)]
    dash = ProbeDashboard(early, baseline="random-init", target="label")
    got = _main_lines(dash.figure)
    assert got["random-init"] == _probe_expected(early, "random-init", step=100)
    assert got["simclr"] == _probe_expected(early, "simclr", step=1000)
    dash.select(step=1000)  # an explicit step filters: the baseline has no rows there
    assert "random-init" not in _main_lines(dash.figure)


def test_probe_dashboard_select_and_errors(probes):
    dash = ProbeDashboard(probes)
    assert dash.filter_ws["target"].value == "colour"  # default: the first value in the frame
    dash.select(runs=["simclr", "random-init"], split="ood", target="colour")
    assert _main_lines(dash.figure)["random-init"] == _probe_expected(probes, "random-init", split="ood",
                                                                      target="colour")
    with pytest.raises(ValueError, match="unknown run"):
        dash.select(runs=["mae"])
    with pytest.raises(ValueError, match="split='val' is not available"):
        dash.select(split="val")
    with pytest.raises(ValueError, match="missing column"):
        ProbeDashboard(probes.drop(columns="measure"))
    by_step = ProbeDashboard(probes[probes.run == "simclr"], color="step")  # checkpoints of one run
    assert set(_main_lines(by_step.figure)) >= {"100", "1000"} and "step" not in by_step.filter_ws


def test_probe_dashboard_takes_a_probe_table_as_returned():
    """A probe on bare arrays: no run (its line is named by the method) and no step control."""
    from workbench.probing import knn_probe

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 90)
    x = rng.standard_normal((90, 4)) + y[:, None]
    table = knn_probe({"l1": x[:60, :2], "l2": x[:60]}, y[:60], {"test": ({"l1": x[60:, :2], "l2": x[60:]}, y[60:])},
                      ks=(3,), n_boot=0)
    dash = ProbeDashboard(table)
    assert "step" not in dash.filter_ws and dash.filter_ws["method"].value == "knn"
    want = table[(table.split == "test") & (table.measure == "accuracy")]
    assert _main_lines(dash.figure) == {"knn": (["l1", "l2"], want.value.tolist())}


# ------------------------------------------------------------------------------------------ similarity

@pytest.fixture()
def pairs() -> pd.DataFrame:
    rows = []
    for a, b in (("supervised", "simclr"), ("supervised", "supervised")):
        for step in (0, 10, 100):
            for i, la in enumerate(LAYERS):
                for j, lb in enumerate(LAYERS):
                    v = np.exp(-abs(i - j)) * (step + 1) / 101 * (0.9 if a != b else 1.0)
                    for measure, val in (("cka_linear", v), ("procrustes", 1 - v)):
                        rows.append(dict(run=a, run_b=b, step=step, layer=la, layer_b=lb, layer_index=i,
                                         layer_index_b=j, measure=measure, value=val))
    return tidy(rows).sample(frac=1.0, random_state=0)


def _matrix(df, a, b, measure, step):
    sub = df[(df.run == a) & (df.run_b == b) & (df.measure == measure) & (df.step == step)]
    return sub.pivot(index="layer", columns="layer_b", values="value").loc[LAYERS, LAYERS].to_numpy()


def test_similarity_dashboard_slider_pair_measure(pairs):
    dash = SimilarityDashboard(pairs, pair=("supervised", "simclr"))
    fw = dash.figure
    assert dash.step_w.value == 100 and dash.pair_w.value == ("supervised", "simclr")
    np.testing.assert_allclose(fw.data[0].z, _matrix(pairs, "supervised", "simclr", "cka_linear", 100))
    assert (fw.data[0].zmin, fw.data[0].zmax) == (0, 1)
    dash.step_w.value = 10
    np.testing.assert_allclose(fw.data[0].z, _matrix(pairs, "supervised", "simclr", "cka_linear", 10))
    dash.pair_w.value = ("supervised", "supervised")
    np.testing.assert_allclose(fw.data[0].z, _matrix(pairs, "supervised", "supervised", "cka_linear", 10))
    dash.measure_w.value = "procrustes"
    np.testing.assert_allclose(fw.data[0].z, _matrix(pairs, "supervised", "supervised", "procrustes", 10))
    assert fw.data[0].zmin is None  # not CKA: the data range
    assert list(fw.data[0].x) == LAYERS and list(fw.data[0].y) == LAYERS
    assert "step 10" in fw.layout.title.text and dash.figure is fw
    dash.select(pair=("supervised", "simclr"), measure="cka_linear", step=0)
    np.testing.assert_allclose(fw.data[0].z, _matrix(pairs, "supervised", "simclr", "cka_linear", 0))
    with pytest.raises(ValueError, match="step=5 is not available"):
        dash.select(step=5)
    with pytest.raises(ValueError, match=r"missing column\(s\) \['run_b'\]"):
        SimilarityDashboard(pairs.drop(columns="run_b"))
    with pytest.raises(ValueError, match="'metric' is called 'measure'"):
        SimilarityDashboard(pairs.rename(columns={"measure": "metric"}))


def test_similarity_dashboard_takes_cross_run_similarity_as_returned():
    from workbench.study import cross_run_similarity

    rng = np.random.default_rng(1)
    runs = {name: Activations({layer: torch.as_tensor(rng.normal(size=(30, 4 + i)))
                               for i, layer in enumerate(LAYERS)}) for name in ("a", "b")}
    pairs = pd.concat([cross_run_similarity(runs["a"], runs["b"], run_a="a", run_b="b", step=s) for s in (0, 5)],
                      ignore_index=True)
    assert list(pairs.columns) == [*COLUMNS, "layer_b", "layer_index_b", "run_b"]
    assert set(pairs.run) == {"a"} and set(pairs.run_b) == {"b"}
    dash = SimilarityDashboard(pairs)
    assert dash.pair_w.value == ("a", "b") and dash.step_w.value == 5
    z = np.asarray(dash.figure.data[0].z)
    from workbench.similarity import cka

    np.testing.assert_allclose(z[1, 2], cka(runs["a"][LAYERS[1]], runs["b"][LAYERS[2]]), rtol=1e-9)
    assert dash.figure.layout.yaxis.title.text == "a layer" and dash.figure.layout.xaxis.title.text == "b layer"


# ------------------------------------------------------------------------------------------ spectrum

def test_spectrum_dashboard_spectra_and_rank_curves():
    rng = np.random.default_rng(0)
    acts = {(run, step): {layer: rng.normal(size=(40, 5)) * np.linspace(3, 0.5, 5) ** (i + step / 100)
                          for i, layer in enumerate(LAYERS)}
            for run in ("a", "b") for step in (0, 100)}
    spectra, measures = spectrum_frames(acts)
    for table in (spectra, measures):  # both in the results schema, run and step filled
        assert list(table.columns[:len(COLUMNS)]) == list(COLUMNS)
        assert table.run.notna().all() and table.step.notna().all()
    assert set(spectra.measure) == {"eigenvalue"} and "rank" in spectra.columns
    assert list(measures.columns) == list(COLUMNS)
    dash = SpectrumDashboard(spectra, measures)
    fw, rank = dash.figure, dash.rank_figure
    # independent reference: covariance eigenvalues with numpy, normalised
    def ref(run, step, layer):
        lam = np.sort(np.linalg.eigvalsh(np.cov(acts[(run, step)][layer], rowvar=False)))[::-1]
        return lam / lam.sum()
    assert [t.name for t in fw.data] == ["0", "100"]
    np.testing.assert_allclose(fw.data[1].y, ref("a", 100, "conv1"), rtol=1e-8)
    dash.layer_w.value = "fc"
    np.testing.assert_allclose(fw.data[0].y, ref("a", 0, "fc"), rtol=1e-8)
    dash.run_w.value = "b"
    np.testing.assert_allclose(fw.data[0].y, ref("b", 0, "fc"), rtol=1e-8)
    dash.steps_w.value = (100,)
    assert len(fw.data) == 1
    dash.normalize_w.value = False
    eig = np.sort(np.linalg.eigvalsh(np.cov(acts[("b", 100)]["fc"], rowvar=False)))[::-1]
    np.testing.assert_allclose(fw.data[0].y, eig,
                               rtol=1e-8)
    # rank panel: effective rank (Roy & Vetterli) = exp(entropy of normalised eigenvalues), per layer
    lines = _main_lines(rank)
    want = [float(np.exp(-(p * np.log(p)).sum())) for p in (ref("b", 100, layer) for layer in LAYERS)]
    assert lines["100"][0] == LAYERS
    np.testing.assert_allclose(lines["100"][1], want, rtol=1e-6)
    dash.select(measure="rankme", steps=[0, 100])
    assert set(_main_lines(rank)) == {"0", "100"}
    with pytest.raises(ValueError, match="layer='x' is not available"):
        dash.select(layer="x")


# ------------------------------------------------------------------------------------------ embedding explorer

@pytest.fixture()
def embedding_inputs():
    rng = np.random.default_rng(1)
    n = 60
    labels = np.arange(n) % 3
    feats = rng.normal(size=(n, 6)) + labels[:, None] * 2.0
    acts = Activations({"l1": torch.tensor(feats, dtype=torch.float32),
                        "l2": torch.tensor(feats[:, ::-1] * 3, dtype=torch.float32)},
                       labels=labels, factors={"size": np.arange(n) % 2})
    images = rng.random((n, 1, 6, 6))
    return acts, images, labels


def _points(fw):
    """{example index: (x, y)} over the data traces (customdata[0] is the example index)."""
    out = {}
    for t in fw.data:
        if t.name == "selected":
            continue
        for c, x, y in zip(t.customdata, t.x, t.y):
            out[int(c[0])] = (x, y)
    return out


def test_embedding_explorer_pca_matches_numpy_and_controls(embedding_inputs):
    acts, images, labels = embedding_inputs
    ex = EmbeddingExplorer({"run @ 10": acts, "run @ 20": acts}, images)
    fw = ex.figure
    assert [t.name for t in fw.data] == ["0", "1", "2"]
    for t in fw.data:
        assert all(labels[int(c[0])] == int(t.name) for c in t.customdata)

    def pca(x):
        xc = x - x.mean(0)
        vt = np.linalg.svd(xc, full_matrices=False)[2]
        return xc @ vt[:2].T
    for layer in ("l1", "l2"):
        ex.layer_w.value = layer
        pts = _points(fw)
        want = pca(acts[layer].numpy().astype(np.float64))
        got = np.array([pts[i] for i in range(60)])
        signs = np.sign((got * want).sum(0))
        np.testing.assert_allclose(got, want * signs, rtol=1e-4, atol=1e-4)
    ex.color_w.value = "size"
    assert [t.name for t in fw.data] == ["0", "1"] and ex.figure is fw
    with pytest.raises(ValueError, match="method='tsne'"):
        ex.select(method="tsne")
    with pytest.raises(ValueError, match="examples has 5 rows"):
        EmbeddingExplorer(acts, images[:5])


def test_embedding_explorer_with_factors_named_x_and_y(embedding_inputs):
    """The points are the PCA of the layer whatever the factors are called; colouring by factor x colours by it."""
    acts, images, _labels = embedding_inputs
    rng = np.random.default_rng(5)
    pos = rng.integers(0, 3, size=(60, 2))
    shaped = Activations(dict(acts.items()), labels=acts.labels, factors={"x": pos[:, 0], "y": pos[:, 1]})
    ex = EmbeddingExplorer(shaped, images)
    xc = acts["l1"].numpy().astype(np.float64)
    xc = xc - xc.mean(0)
    want = xc @ np.linalg.svd(xc, full_matrices=False)[2][:2].T
    got = np.array([_points(ex.figure)[i] for i in range(60)])
    np.testing.assert_allclose(got, want * np.sign((got * want).sum(0)), rtol=1e-4, atol=1e-4)
    ex.select(color="x")
    for t in ex.figure.data:
        assert all(pos[int(c[0]), 0] == int(t.name) for c in t.customdata)


def test_embedding_selection_shows_the_selected_examples(embedding_inputs):
    acts, images, labels = embedding_inputs
    ex = EmbeddingExplorer(acts, images)
    fw = ex.figure
    # a lasso over two traces, as the browser sends it: point 0 of trace 1 and point 2 of trace 2
    msg = {"event_type": "plotly_selected", "selector": None,
           "points": {"xs": [0, 0], "ys": [0, 0], "point_indexes": [0, 2], "trace_indexes": [1, 2]}}
    fw._js2py_pointsCallback = msg
    want = [int(fw.data[1].customdata[0][0]), int(fw.data[2].customdata[2][0])]
    assert want == [np.flatnonzero(labels == 1)[0], np.flatnonzero(labels == 2)[2]]
    assert ex.selected == want
    shown = ex.examples_figure.data
    assert len(shown) == 2
    for t, i in zip(shown, want):
        np.testing.assert_allclose(t.z, images[i, 0])
    assert [a.text for a in ex.examples_figure.layout.annotations] == [f"#{i} label={labels[i]}" for i in want]
    ex.select_points([7])  # programmatic, as a click does
    np.testing.assert_allclose(ex.examples_figure.data[0].z, images[7, 0])
    with pytest.raises(ValueError, match="outside"):
        ex.select_points([600])
    words = EmbeddingExplorer(acts, [f"sentence {i}" for i in range(60)])
    words.select_points([3, 4])
    assert "sentence 3" in words.examples_html.value and "sentence 4" in words.examples_html.value
    tokens = EmbeddingExplorer(acts, np.arange(120).reshape(60, 2) % 4, vocab=["a", "b", "c", "d"])
    tokens.select_points([1])
    assert "c d" in tokens.examples_html.value  # row 1 = tokens [2, 3]


# ------------------------------------------------------------------------------------------ saliency

def _gradient(model, inputs, method):
    """A plain gradient attribution of logit 0 (and gradient × input), as the test's own attribute_fn."""
    x = inputs.clone().requires_grad_(True)
    model(x)[:, 0].sum().backward()
    return x.grad * x.detach() if method == "input_x_gradient" else x.grad


def test_saliency_dashboard_runs_side_by_side():
    torch.manual_seed(0)
    models = {name: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 5 * 5, 4)) for name in ("a", "b", "c")}
    inputs = torch.rand(8, 3, 5, 5)
    dash = SaliencyDashboard(models, inputs, attribute_fn=_gradient, methods=["gradient", "input_x_gradient"])
    fw = dash.figure
    # the gradient of a linear model's logit 0 is its weight row, reshaped like the input, summed over channels
    def weight_map(name, x=None):
        w = models[name][1].weight[0].detach().reshape(3, 5, 5).numpy()
        return (w * x).sum(0) if x is not None else w.sum(0)
    assert [a.text for a in fw.layout.annotations] == ["input", "a", "b", "c"]
    for t, name in zip(fw.data[1:], "abc"):
        np.testing.assert_allclose(t.z, weight_map(name), rtol=1e-6)
    np.testing.assert_allclose(fw.data[0].z, inputs[0].numpy().sum(0), rtol=1e-6)
    dash.method_w.value = "input_x_gradient"
    dash.index_w.value = 3
    np.testing.assert_allclose(fw.data[2].z, weight_map("b", inputs[3].numpy()), rtol=1e-5)
    dash.models_w.value = ("c",)
    assert [a.text for a in fw.layout.annotations] == ["input", "c"] and dash.figure is fw
    dash.select(index=1, method="gradient", models=["a", "b"])
    np.testing.assert_allclose(fw.data[1].z, weight_map("a"), rtol=1e-6)
    # current_frame: the maps drawn, one row per model and cell, in the results schema
    frame = dash.current_frame()
    assert list(frame.columns) == [*COLUMNS, "example", "method", "row", "col"] and len(frame) == 2 * 5 * 5
    assert set(frame.measure) == {"attribution"} and set(frame.example) == {1} and set(frame.method) == {"gradient"}
    for name in "ab":
        cells = frame[frame.run == name].pivot(index="row", columns="col", values="value").to_numpy()
        np.testing.assert_allclose(cells, weight_map(name), rtol=1e-6)
    with pytest.raises(ValueError, match="index must be"):
        dash.select(index=99)

    def broken(model, inputs, method):
        raise RuntimeError("no gradient here")
    bad = SaliencyDashboard(models, inputs, attribute_fn=broken)
    assert "no gradient here" in bad.status.value and len(bad.figure.data) == 0


# ------------------------------------------------------------------------------------------ study

@pytest.fixture()
def study_table() -> pd.DataFrame:
    rng = np.random.default_rng(2)
    rows = []
    for noise in (0.0, 0.2, 0.4):
        for seed in (0, 1):
            run = f"label_noise={noise},seed={seed}"
            for layer in ("l1", "l2"):
                for m in ("rankme", "effective_rank"):
                    rows.append(dict(run=run, step=100, layer=layer, measure=m, split="test", value=float(rng.random()),
                                     kind="measure", task=None, method=None, label_fraction=None, label_noise=noise,
                                     seed=seed))
            for split in ("test", "ood"):
                rows.append(dict(run=run, step=100, layer="l2", measure="accuracy", split=split,
                                 value=float(1 - noise + rng.random() * 0.2), kind="downstream", task=None,
                                 method="linear", label_fraction=1.0, label_noise=noise, seed=seed))
            rows.append(dict(run=run, step=100, layer=None, measure="loss", split="train_batch", value=1.0,
                             kind="history", task=None, method=None, label_fraction=None, label_noise=noise, seed=seed))
    return tidy(rows)  # the layout of Study.run's table


def _scatter(fw):
    return {c[0]: (x, y) for t in fw.data for c, x, y in zip(t.customdata, t.x, t.y)}


def test_study_dashboard_controls(study_table):
    dash = StudyDashboard(study_table)
    fw = dash.figure
    t = study_table
    def expect(measure, layer, split):
        m = t[(t.kind == "measure") & (t.measure == measure) & (t.layer == layer)].set_index("run").value
        d = t[(t.kind == "downstream") & (t.split == split)].set_index("run").value
        return {r: (m[r], d[r]) for r in m.index}
    assert dash.color_w.value == "label_noise" and [tr.name for tr in fw.data] == [
        "label_noise=0.0", "label_noise=0.2", "label_noise=0.4"]
    assert _scatter(fw) == expect("rankme", "l1", "test")
    dash.measure_w.value = "effective_rank"
    dash.layer_w.value = "l2"
    assert _scatter(fw) == expect("effective_rank", "l2", "test")
    dash.downstream_w.value = 1  # the ood combination
    assert _scatter(fw) == expect("effective_rank", "l2", "ood")
    xs, ys = zip(*expect("effective_rank", "l2", "ood").values())
    rho = np.corrcoef(pd.Series(xs).rank(), pd.Series(ys).rank())[0, 1]
    assert f"ρ = {rho:+.2f}" in fw.layout.title.text
    dash.color_w.value = "seed"
    assert [tr.name for tr in fw.data] == ["seed=0", "seed=1"] and dash.figure is fw
    dash.select(measure="rankme", layer="l2", downstream={"split": "test"})
    assert _scatter(fw) == expect("rankme", "l2", "test")
    with pytest.raises(ValueError, match="matches 0"):
        dash.select(downstream={"split": "val"})
    assert dash.selections() == ({"kind": "measure", "measure": "rankme", "layer": "l2"},
                                 {"kind": "downstream", "task": None, "method": "linear", "label_fraction": 1.0,
                                  "split": "test", "measure": "accuracy"})
    with pytest.raises(ValueError, match="kind"):
        StudyDashboard(t[t.kind != "downstream"])
    with pytest.raises(ValueError, match="'metric' is called 'measure'"):
        StudyDashboard(t.rename(columns={"measure": "metric"}))


# ------------------------------------------------------------------------------------------ together

def test_combine_and_display(probes, pairs):
    import ipywidgets as W
    from IPython.core.formatters import format_display_data

    a, b = ProbeDashboard(probes), SimilarityDashboard(pairs)
    both = combine(a, b, titles=["probes", "similarity"])
    assert isinstance(both.widget, W.Tab) and both.widget.children == (a.widget, b.widget)
    assert both.widget.titles == ("probes", "similarity") and both[1] is b
    assert isinstance(a.figure, go.FigureWidget)
    bundle = a._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    fmt, _ = format_display_data(both.widget)
    assert "application/vnd.jupyter.widget-view+json" in fmt
    stacked = combine(a, b, layout="vbox")
    assert isinstance(stacked.widget, W.VBox)
    with pytest.raises(TypeError, match="dashboards"):
        combine(a, "not a dashboard")
    # two dashboards on one frame keep separate state
    c = ProbeDashboard(probes)
    c.select(split="ood")
    assert a.filter_ws["split"].value == "test"


def test_dashboard_export_writes_current_view(probes, tmp_path):
    dash = ProbeDashboard(probes, runs=["simclr"], target="label")
    dash.select(split="ood")
    dash.path_w.value = str(tmp_path / "probe.json")
    dash.export_button.click()
    assert "wrote" in dash.status.value
    csv = pd.read_csv(tmp_path / "probe.csv")
    want = probes[(probes.run == "simclr") & (probes.split == "ood") & (probes.step == 1000)
                  & (probes.target == "label")]
    assert len(csv) == len(want) and set(csv.split) == {"ood"}
    np.testing.assert_allclose(np.sort(csv.value), np.sort(want.value))
    assert figures.plotted_data(dash.current_figure()).shape[0] == len(want)

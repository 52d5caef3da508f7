"""New figure builders: each draws exactly the rows/arrays given (checked against an independent pandas /
numpy computation), labels its axes, refuses bad input by name, and exports its data to CSV/JSON."""
from __future__ import annotations

import json
import struct

import numpy as np
import pandas as pd
import pytest

from workbench import figures
from workbench.results import tidy

LAYERS = ["embed", "block1", "block2", "head"]
needs_browser = pytest.mark.skipif(figures.find_chromium() is None, reason="no Chromium installed")


@pytest.fixture(scope="module")
def probes() -> pd.DataFrame:
    """A probe table (workbench.probing.selectivity's results-schema table) for three runs."""
    rng = np.random.default_rng(0)
    rows = []
    for r, run in enumerate(["supervised", "simclr", "random-init"]):
        for i, layer in enumerate(LAYERS):
            task = 0.4 + 0.1 * i + 0.05 * r + rng.normal(0, 1e-3)
            ctrl = 0.3 + 0.02 * i
            for measure, v, lo, hi in (("task_accuracy", task, task - 0.02, task + 0.03),
                                       ("control_accuracy", ctrl, ctrl - 0.01, ctrl + 0.01),
                                       ("selectivity", task - ctrl, np.nan, np.nan)):
                rows.append(dict(run=run, layer=layer, measure=measure, split="test", value=float(v), ci_low=lo,
                                 ci_high=hi, target="label", method="logistic"))
    return tidy(rows)


def _lines(fig, yaxis="y"):
    return {t.name: (list(t.x), list(t.y)) for t in fig.data
            if t.mode == "lines+markers" and (t.yaxis or "y") == yaxis}


# ------------------------------------------------------------------------------------------ probe_curve

def test_probe_curve_draws_accuracy_control_and_selectivity(probes):
    shuffled = probes.sample(frac=1.0, random_state=3)  # layer order must not come from row order …
    shuffled = shuffled.assign(layer_index=shuffled["layer"].map({l: i for i, l in enumerate(LAYERS)}))
    fig = figures.probe_curve(shuffled, baseline="random-init")
    top = _lines(fig, "y")
    for run in ["supervised", "simclr", "random-init"]:
        sub = probes[(probes.run == run) & (probes.measure == "task_accuracy")]
        assert top[run] == (LAYERS, sub.value.tolist())
        if run != "random-init":
            ctrl = probes[(probes.run == run) & (probes.measure == "control_accuracy")]
            assert top[f"{run} · control"] == (LAYERS, ctrl.value.tolist())
            sel = probes[(probes.run == run) & (probes.measure == "selectivity")]
            assert _lines(fig, "y2")[run] == (LAYERS, sel.value.tolist())
    dashes = {t.name: t.line.dash for t in fig.data if t.mode == "lines+markers"}
    assert dashes["random-init"] == "dash" and dashes["supervised · control"] == "dot"
    assert "random-init" not in _lines(fig, "y2")  # the baseline has no selectivity panel line
    assert fig.layout.yaxis.title.text == "task accuracy" and fig.layout.yaxis2.title.text == "selectivity"
    assert fig.layout.xaxis2.title.text == "layer"
    # CI band of the first run: upper then reversed lower bounds
    band = next(t for t in fig.data if t.name == "supervised CI")
    sub = probes[(probes.run == "supervised") & (probes.measure == "task_accuracy")]
    assert list(band.y) == sub.ci_high.tolist() + sub.ci_low.tolist()[::-1]


def test_probe_curve_layer_index_from_first_appearance_and_options(probes):
    fig = figures.probe_curve(probes[probes.run == "simclr"], control=False, selectivity=False)
    assert [t.name for t in fig.data if t.mode == "lines+markers"] == ["simclr"]
    assert not any((t.yaxis or "y") == "y2" for t in fig.data)  # no selectivity panel
    assert list(fig.layout.xaxis.categoryarray) == LAYERS


def test_probe_curve_with_baseline_column(probes):
    """workbench.probing.with_baseline output: the random-init score of each row in a 'baseline' column."""
    res = probes[(probes.run != "random-init") & (probes.measure == "task_accuracy")].copy()
    base = probes[(probes.run == "random-init") & (probes.measure == "task_accuracy")].set_index("layer")["value"]
    res["baseline"] = res["layer"].map(base)
    fig = figures.probe_curve(res, selectivity=False)
    line = next(t for t in fig.data if t.name == "simclr · random init")
    assert list(line.y) == base.loc[LAYERS].tolist() and line.line.dash == "dash"


def test_probe_curve_bad_input(probes):
    with pytest.raises(ValueError, match="missing column"):
        figures.probe_curve(probes.drop(columns="measure"))
    with pytest.raises(ValueError, match="no accuracy rows"):
        figures.probe_curve(probes[probes.measure == "selectivity"])
    with pytest.raises(ValueError, match="measure 'f1' not in the data"):
        figures.probe_curve(probes, "f1")
    with pytest.raises(ValueError, match="several rows per"):
        figures.probe_curve(pd.concat([probes, probes]))
    with pytest.raises(TypeError, match="DataFrame"):
        figures.probe_curve(probes.to_dict())


# ------------------------------------------------------------------------------------------ projection

def test_pca_projection_matches_numpy_svd():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(120, 6)) * np.array([5.0, 3.0, 1.0, 0.5, 0.2, 0.1]) + 7.0
    labels = rng.integers(0, 3, 120)
    frame = figures.project(x, method="pca", labels=labels, factors={"size": np.arange(120.0)})
    xc = x - x.mean(axis=0)
    _u, s, vt = np.linalg.svd(xc, full_matrices=False)
    ref = xc @ vt[:2].T
    for k, col in enumerate(["x", "y"]):
        sign = np.sign(np.dot(frame[col], ref[:, k]))  # components are defined up to sign
        np.testing.assert_allclose(frame[col].to_numpy(), sign * ref[:, k], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(frame.attrs["explained_variance_ratio"], (s ** 2 / (s ** 2).sum())[:2], rtol=1e-10)
    assert frame["index"].tolist() == list(range(120))
    assert (frame["label"].to_numpy() == labels).all() and frame["size"].iloc[5] == 5.0


def test_factors_named_like_the_coordinates_do_not_overwrite_them():
    """shapes has position factors named x and y: they are kept as factor_x / factor_y, the coordinates stay the
    PCA scores (they were overwritten by the factors, so the 'PC 1' axis plotted the x position)."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(80, 5)) * np.array([4.0, 2.0, 1.0, 0.5, 0.1])
    pos = rng.uniform(size=(80, 2))
    frame = figures.project(x, factors={"x": pos[:, 0], "y": pos[:, 1], "label": pos[:, 0] > 0.5, "shape": pos[:, 1]})
    xc = x - x.mean(axis=0)
    ref = xc @ np.linalg.svd(xc, full_matrices=False)[2][:2].T
    np.testing.assert_allclose(np.abs(frame[["x", "y"]].to_numpy()), np.abs(ref), atol=1e-10)
    np.testing.assert_array_equal(frame["factor_x"], pos[:, 0])
    np.testing.assert_array_equal(frame["factor_y"], pos[:, 1])
    np.testing.assert_array_equal(frame["factor_label"], pos[:, 0] > 0.5)
    np.testing.assert_array_equal(frame["shape"], pos[:, 1])
    assert (figures.factor_column("x"), figures.factor_column("shape")) == ("factor_x", "shape")
    with pytest.raises(ValueError, match="factor_x"):
        figures.project(x, factors={"x": pos[:, 0], "factor_x": pos[:, 1]})


def test_project_bad_input():
    x = np.random.default_rng(0).normal(size=(10, 3))
    with pytest.raises(ValueError, match="method"):
        figures.project(x, method="tsne")
    with pytest.raises(ValueError, match="n_components"):
        figures.project(x, n_components=4)
    with pytest.raises(ValueError, match="labels has 9"):
        figures.project(x, labels=np.zeros(9))
    with pytest.raises(ValueError, match="x must be 2-D"):
        figures.project(np.ones(10))
    with pytest.raises(TypeError, match="positional"):
        figures.project(x, "pca")  # options are keyword-only


@pytest.mark.slow
def test_umap_projection_is_seeded_and_separates_clusters():
    rng = np.random.default_rng(2)
    centers = np.array([[0.0] * 5, [10.0] * 5])
    labels = np.repeat([0, 1], 40)
    x = centers[labels] + rng.normal(size=(80, 5))
    a = figures.project(x, method="umap", labels=labels, seed=0)
    b = figures.project(x, method="umap", labels=labels, seed=0)
    np.testing.assert_allclose(a[["x", "y"]], b[["x", "y"]])
    # clusters: every point's nearest other point (in the projection) has its label
    z = a[["x", "y"]].to_numpy()
    d = ((z[:, None] - z[None]) ** 2).sum(-1) + np.eye(80) * 1e9
    assert (labels[d.argmin(1)] == labels).mean() > 0.95


# ------------------------------------------------------------------------------------------ embedding_scatter

def test_embedding_scatter_one_trace_per_label_with_example_ids():
    rng = np.random.default_rng(3)
    frame = figures.project(rng.normal(size=(50, 4)), labels=np.array(["cat", "dog"])[rng.integers(0, 2, 50)])
    fig = figures.embedding_scatter(frame, color="label")
    assert [t.name for t in fig.data] == ["cat", "dog"] and all(t.type == "scatter" for t in fig.data)
    for t in fig.data:
        sub = frame[frame.label == t.name]
        assert [int(c[0]) for c in t.customdata] == sub["index"].tolist()
        assert list(t.x) == sub.x.tolist() and list(t.y) == sub.y.tolist()
    assert fig.layout.xaxis.title.text.startswith("PC 1")
    cont = figures.embedding_scatter(frame.assign(v=np.linspace(0, 1, 50)), color="v", selected=[3, 4])
    assert len(cont.data) == 2 and cont.data[0].marker.showscale
    assert [int(c[0]) for c in cont.data[1].customdata] == [3, 4]
    big = pd.DataFrame({"index": range(2500), "x": rng.normal(size=2500), "y": rng.normal(size=2500)})
    assert figures.embedding_scatter(big, color=None).data[0].type == "scattergl"
    with pytest.raises(ValueError, match="missing column"):
        figures.embedding_scatter(frame, color="shape")


# ------------------------------------------------------------------------------------------ example_grid / saliency

def test_example_grid_images_and_signals():
    rng = np.random.default_rng(4)
    imgs = rng.random((3, 1, 5, 6))
    fig = figures.example_grid(imgs, titles=["a", "b", "c"])
    assert [t.type for t in fig.data] == ["heatmap"] * 3
    for t, im in zip(fig.data, imgs):
        np.testing.assert_allclose(np.asarray(t.z), im[0])
    assert [a.text for a in fig.layout.annotations] == ["a", "b", "c"]
    data = figures.plotted_data(fig)
    assert len(data) == imgs.size
    np.testing.assert_allclose(data.sort_values(["example", "row", "col"]).value, imgs.reshape(-1))
    rgb = figures.example_grid(rng.random((2, 3, 4, 4)))
    assert [t.type for t in rgb.data] == ["image"] * 2
    sig = figures.example_grid(rng.normal(size=(2, 40)))
    np.testing.assert_allclose(sig.data[1].y, sig_ref := figures.plotted_data(sig).query("example == 1").value)
    assert len(sig_ref) == 40
    with pytest.raises(ValueError, match="examples must be"):
        figures.example_grid(np.ones(5))
    with pytest.raises(ValueError, match="titles has 1"):
        figures.example_grid(imgs, titles=["x"])


def test_saliency_grid_sums_channels_on_one_symmetric_scale():
    rng = np.random.default_rng(5)
    image = rng.random((3, 6, 6))
    attrs = [rng.normal(size=(3, 6, 6)), 3 * rng.normal(size=(1, 3, 6, 6))]  # the second with a batch axis
    fig = figures.saliency_grid(image, attrs, ["run A", "run B"])
    assert [a.text for a in fig.layout.annotations] == ["input", "run A", "run B"]
    np.testing.assert_allclose(fig.data[0].z, image.sum(axis=0))
    np.testing.assert_allclose(fig.data[1].z, attrs[0].sum(axis=0))
    np.testing.assert_allclose(fig.data[2].z, attrs[1][0].sum(axis=0))
    limit = max(np.abs(attrs[0].sum(0)).max(), np.abs(attrs[1][0].sum(0)).max())
    for t in fig.data[1:]:
        assert t.zmin == pytest.approx(-limit) and t.zmax == pytest.approx(limit)
    data = figures.plotted_data(fig)
    np.testing.assert_allclose(data[data.title == "run B"].value, attrs[1][0].sum(axis=0).reshape(-1))
    one_d = figures.saliency_grid(np.arange(10.0), [np.ones(10)], ["g"])
    assert np.asarray(one_d.data[1].z).shape == (1, 10)
    with pytest.raises(ValueError, match="shaped like the input"):
        figures.saliency_grid(image, [np.ones((5, 5))])
    with pytest.raises(ValueError, match="non-empty list"):
        figures.saliency_grid(image, [])
    with pytest.raises(ValueError, match="NaN"):
        figures.saliency_grid(image, [np.full((6, 6), np.nan)])


# ------------------------------------------------------------------------------------------ study_scatter

@pytest.fixture(scope="module")
def study_table() -> pd.DataFrame:
    rng = np.random.default_rng(6)
    rows = []
    for noise in (0.0, 0.2, 0.4):
        for seed in (0, 1):
            run = f"label_noise={noise},seed={seed}"
            for step in (10, 100):
                for layer in ("l1", "l2"):
                    rows.append(dict(run=run, label_noise=noise, seed=seed, step=step, kind="measure", method=None,
                                     layer=layer, split="test", measure="effective_rank", value=float(rng.random())))
                for split in ("test", "ood"):
                    rows.append(dict(run=run, label_noise=noise, seed=seed, step=step, kind="downstream",
                                     method="linear", layer="l2", split=split, measure="accuracy",
                                     value=float(1 - noise + rng.random() * 0.3)))
    return tidy(rows, layers=["l1", "l2"])


def _spearman_bruteforce(x, y) -> float:
    rx, ry = pd.Series(x).rank().to_numpy(), pd.Series(y).rank().to_numpy()
    return float(np.corrcoef(rx, ry)[0, 1])


def test_study_scatter_one_point_per_run_and_rank_correlation(study_table):
    m = {"kind": "measure", "measure": "effective_rank", "layer": "l2"}
    d = {"kind": "downstream", "method": "linear", "split": "ood", "measure": "accuracy"}
    fig = figures.study_scatter(study_table, m, d, color="label_noise")
    last = study_table[study_table.step == 100]
    mx = last[(last.kind == "measure") & (last.layer == "l2")].set_index("run").value
    dy = last[(last.kind == "downstream") & (last.split == "ood")].set_index("run").value
    drawn = {}
    for t in fig.data:
        for run, x, y in zip([c[0] for c in t.customdata], t.x, t.y):
            drawn[run] = (x, y, t.name)
    assert set(drawn) == set(mx.index)
    for run, (x, y, name) in drawn.items():
        assert (x, y) == (mx[run], dy[run])
        assert name == f"label_noise={study_table.set_index('run').label_noise[run].iloc[0]}"
    rho = _spearman_bruteforce(mx.sort_index(), dy.sort_index())
    assert f"ρ = {rho:+.2f}" in fig.layout.title.text and "n = 6 runs" in fig.layout.title.text
    assert fig.layout.xaxis.title.text.startswith("effective_rank")
    earlier = figures.study_scatter(study_table, {**m, "step": 10}, {**d, "step": 10})
    x10 = study_table[(study_table.step == 10) & (study_table.kind == "measure") & (study_table.layer == "l2")]
    assert sorted(earlier.data[0].x) == sorted(x10.value)
    given = figures.study_scatter(study_table, m, d, correlation=pd.DataFrame(
        [{"value": 0.5, "ci_low": 0.1, "ci_high": 0.9}]))
    assert "+0.50 [0.10, 0.90]" in given.layout.title.text


def test_study_scatter_axis_titles_fit_the_plot(study_table):
    """A long selection made one vertical axis title longer than the plot is high (cut off in JupyterLab): the
    titles break after commas into lines of about 40 characters, keeping every part in order."""
    m = {"kind": "measure", "measure": "effective_rank", "layer": "l2"}
    d = {"kind": "downstream", "method": "linear", "split": "ood", "measure": "accuracy", "step": 100}
    fig = figures.study_scatter(study_table, m, d)
    for axis, sel in (("yaxis", d), ("xaxis", m)):
        lines = fig.layout[axis].title.text.split("<br>")
        assert max(len(line) for line in lines) <= 48, lines
        parts = [f"{k}={v}" for k, v in sel.items() if k not in ("measure", "kind")]
        assert "".join(lines).replace(", ", ",") == f"{sel['measure']} ({','.join(parts)})", lines
    assert len(fig.layout.yaxis.title.text.split("<br>")) >= 2


def test_study_scatter_bad_selection(study_table):
    d = {"kind": "downstream", "split": "ood"}
    with pytest.raises(ValueError, match="several rows per run"):
        figures.study_scatter(study_table, {"kind": "measure"}, d)
    with pytest.raises(ValueError, match="selects no rows"):
        figures.study_scatter(study_table, {"measure": "rankme"}, d)
    with pytest.raises(ValueError, match="lacks"):
        figures.study_scatter(study_table, {"task": "x"}, d)
    with pytest.raises(ValueError, match="method"):
        figures.study_scatter(study_table, {"kind": "measure", "layer": "l1"}, d, method="pearson")
    with pytest.raises(TypeError, match="dict"):
        figures.study_scatter(study_table, "effective_rank", d)


# ------------------------------------------------------------------------------------------ export

def _all_figures(probes, study_table):
    rng = np.random.default_rng(7)
    proj = figures.project(rng.normal(size=(30, 4)), labels=rng.integers(0, 2, 30))
    return {
        "probe_curve": (figures.probe_curve(probes, baseline="random-init"), None),
        "embedding_scatter": (figures.embedding_scatter(proj), proj),
        "example_grid": (figures.example_grid(rng.random((2, 4, 4))), None),
        "saliency_grid": (figures.saliency_grid(rng.random((4, 4)), [rng.normal(size=(4, 4))], ["a"]), None),
        "study_scatter": (figures.study_scatter(study_table, {"kind": "measure", "layer": "l1"},
                                                {"kind": "downstream", "split": "test"}, color="label_noise"), None),
    }


def test_every_new_builder_exports_its_data(probes, study_table, tmp_path):
    figs = _all_figures(probes, study_table)
    for name, (fig, source) in figs.items():
        written = figures.export(fig, tmp_path / f"{name}.csv")
        assert set(written) == {"csv", "json"}
        drawn = figures.plotted_data(fig).reset_index(drop=True)
        text = [c for c in drawn.columns if pd.api.types.is_string_dtype(drawn[c])]  # titles "0", "1" stay text
        csv = pd.read_csv(written["csv"], dtype=dict.fromkeys(text, str), keep_default_na=False, na_values=[""])
        pd.testing.assert_frame_equal(csv, drawn, check_dtype=False)
        spec = json.loads(written["json"].read_text())
        assert len(spec["data"]) == len(fig.data)
        if source is not None:
            assert csv[["index", "x", "y", "label"]].equals(source[["index", "x", "y", "label"]].reset_index(drop=True))
    # the probe CSV is exactly the input rows drawn (baseline run: accuracy only)
    csv = pd.read_csv(tmp_path / "probe_curve.csv")
    want = probes[(probes.run != "random-init") | (probes.measure == "task_accuracy")]
    key = ["run", "layer", "measure"]
    got = csv.sort_values(key).reset_index(drop=True)
    exp = want.sort_values(key).reset_index(drop=True)
    np.testing.assert_allclose(got.value, exp.value)
    assert got[key].equals(exp[key])
    # study CSV: one row per run, the values selected independently
    csv = pd.read_csv(tmp_path / "study_scatter.csv").set_index("run")
    last = study_table[(study_table.step == 100) & (study_table.layer == "l1") & (study_table.kind == "measure")]
    np.testing.assert_allclose(csv.loc[last.run, "measure"], last.value)


@pytest.mark.browser
@needs_browser
def test_new_builders_render_svg_pdf_png(probes, study_table, tmp_path):
    figs = _all_figures(probes, study_table)
    for name in ("probe_curve", "saliency_grid", "study_scatter"):
        written = figures.export(figs[name][0], tmp_path / name, width="single", dpi=100)
        assert written["svg"].read_text().lstrip().startswith("<svg")
        assert written["pdf"].read_bytes()[:4] == b"%PDF"
        png = written["png"].read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert struct.unpack(">I", png[16:20])[0] == 350  # 3.5 in x 100 dpi

"""workbench.figures: builders draw exactly the tidy rows given; export writes what was drawn."""
from __future__ import annotations

import copy
import json
import re
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
import pytest

from workbench import figures
from workbench.figures import _style as wstyle
from workbench.results import COLUMNS, tidy

REPO = Path(__file__).resolve().parents[1]
LAYERS = ["embed", "block1", "block2", "block3", "head"]
RUNS = ["supervised", "simclr", "random-init"]
OKABE_ITO = {"#000000", "#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7"}

needs_browser = pytest.mark.skipif(figures.find_chromium() is None, reason="no Chromium installed")


@pytest.fixture(scope="module")
def results() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for r, run in enumerate(RUNS):
        for i, layer in enumerate(LAYERS):
            for split in ("test", "ood"):
                v = float(0.3 + 0.1 * i + 0.05 * r - (0.1 if split == "ood" else 0.0) + rng.normal(0, 1e-3))
                rows.append(dict(run=run, step=1000, layer=layer, layer_index=i, measure="probe_accuracy",
                                 split=split, value=v, ci_low=v - 0.02, ci_high=v + 0.03))
            rows.append(dict(run=run, step=1000, layer=layer, layer_index=i, measure="rankme", split=None,
                             value=float(10 + i + r), ci_low=np.nan, ci_high=np.nan))
    df = pd.DataFrame(rows)
    return df.sample(frac=1.0, random_state=1).reset_index(drop=True)  # shuffled: order must come from layer_index


@pytest.fixture(scope="module")
def pairwise() -> tuple[pd.DataFrame, np.ndarray]:
    n = len(LAYERS)
    m = np.array([[np.exp(-abs(i - j) / 2.0) + 0.001 * i for j in range(n)] for i in range(n)])
    df = tidy([dict(run="simclr", run_b="mae", layer=a, layer_b=b, layer_index=i, layer_index_b=j,
                    measure="cka", value=m[i, j]) for i, a in enumerate(LAYERS) for j, b in enumerate(LAYERS)])
    return df.sample(frac=1.0, random_state=2).reset_index(drop=True), m


def _expected(results, split="test", measure="probe_accuracy"):
    sub = results[(results.measure == measure) & (results.split == split)]
    order = {r: i for i, r in enumerate(pd.unique(sub.run))}
    ordered = sub.assign(_o=sub.run.map(order)).sort_values(["_o", "layer_index"])
    return ordered.drop(columns="_o").reset_index(drop=True)


# ------------------------------------------------------------------------------------------ style

def test_asset_json_matches_code_defaults():
    on_disk = json.loads((REPO / "assets" / "paper_style.json").read_text())
    assert on_disk == wstyle.DEFAULT_STYLE


def test_templates_registered_with_okabe_ito_and_paper_sizes():
    assert "workbench" in pio.templates and "workbench_paper" in pio.templates
    screen, paper = pio.templates["workbench"], pio.templates["workbench_paper"]
    assert {c.upper() for c in screen.layout.colorway} == OKABE_ITO
    assert paper.layout.width == pytest.approx(3.5 * 72)
    assert paper.layout.font.size == 8 and screen.layout.font.size > paper.layout.font.size
    assert "DejaVu Sans" in paper.layout.font.family  # an offline-available fallback
    assert wstyle.width_inches("double") == pytest.approx(7.16)


def test_user_style_file_is_merged_over_defaults(tmp_path, monkeypatch):
    f = tmp_path / "style.json"
    f.write_text(json.dumps({"paper": {"font_size": 11}, "palette": ["#111111", "#222222"]}))
    monkeypatch.setenv(wstyle.STYLE_ENV, str(f))
    try:
        s = figures.use_style()
        assert s["paper"]["font_size"] == 11 and s["paper"]["tick_size"] == wstyle.DEFAULT_STYLE["paper"]["tick_size"]
        assert pio.templates["workbench_paper"].layout.font.size == 11
        assert list(pio.templates["workbench"].layout.colorway) == ["#111111", "#222222"]
        monkeypatch.setenv(wstyle.STYLE_ENV, str(tmp_path / "missing.json"))
        with pytest.raises(FileNotFoundError, match="WORKBENCH_STYLE"):
            figures.use_style()
    finally:
        monkeypatch.delenv(wstyle.STYLE_ENV)
        figures.use_style()
    assert pio.templates["workbench_paper"].layout.font.size == 8


def test_importing_figures_pulls_in_neither_ipywidgets_nor_kaleido():
    code = ("import sys, workbench.figures; "
            "bad = [m for m in ('ipywidgets', 'kaleido', 'anywidget') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


# ------------------------------------------------------------------------------------------ layer_curve

def test_layer_curve_draws_each_run_in_layer_order(results):
    fig = figures.layer_curve(results[results.split == "test"], measure="probe_accuracy", baseline="random-init")
    exp = _expected(results)
    lines = [t for t in fig.data if t.mode == "lines+markers"]
    order = [r for r in pd.unique(exp.run) if r != "random-init"] + ["random-init"]
    assert [t.name for t in lines] == order  # first-appearance order, baseline drawn last
    for t in lines:
        sub = exp[exp.run == t.name]
        assert list(t.x) == LAYERS
        np.testing.assert_array_equal(t.y, sub.value.to_numpy())
    assert list(fig.layout.xaxis.categoryarray) == LAYERS and fig.layout.xaxis.type == "category"
    base = lines[-1]
    assert base.line.dash == "dash" and base.line.color == figures.get_style()["baseline_color"]
    assert lines[0].line.color != base.line.color
    bands = [t for t in fig.data if t.fill == "toself"]
    assert len(bands) == 3 and all(not t.showlegend for t in bands)
    sup = exp[exp.run == "supervised"]
    np.testing.assert_allclose(bands[0].y, np.r_[sup.ci_high.to_numpy(), sup.ci_low.to_numpy()[::-1]])
    assert fig.layout.yaxis.title.text == "probe accuracy"
    pd.testing.assert_frame_equal(figures.plotted_data(fig), exp, check_dtype=False)


def test_layer_curve_options(results):
    test = results[results.split == "test"]
    fig = figures.layer_curve(test, measure="probe_accuracy", error="bars", highlight="block2",
                              color_map={"simclr": "#000000"}, baseline=0.25, title="probe")
    sup = next(t for t in fig.data if t.name == "supervised")
    exp = _expected(results)
    exp_sup = exp[exp.run == "supervised"]
    np.testing.assert_allclose(sup.error_y.array, exp_sup.ci_high - exp_sup.value)
    np.testing.assert_allclose(sup.error_y.arrayminus, exp_sup.value - exp_sup.ci_low)
    assert next(t for t in fig.data if t.name == "simclr").line.color == "#000000"
    ref = next(t for t in fig.data if t.name == "baseline")
    assert set(ref.y) == {0.25} and ref.line.dash == "dot"
    (shape,) = fig.layout.shapes
    assert shape.x0 == shape.x1 == "block2"
    assert fig.layout.title.text == "probe"
    # numeric x and no error band
    fig2 = figures.layer_curve(test, measure="probe_accuracy", x="layer_index", error=False)
    assert all(t.fill is None for t in fig2.data) and list(fig2.data[0].x) == list(range(len(LAYERS)))


def test_layer_curve_facets_share_layer_order(results):
    fig = figures.layer_curve(results, measure="probe_accuracy", facet="split")
    assert {t.xaxis for t in fig.data} == {"x", "x2"}
    probe = results[results.measure == "probe_accuracy"]
    assert [a.text for a in fig.layout.annotations] == list(pd.unique(probe.split))  # first-appearance order
    assert list(fig.layout.xaxis2.categoryarray) == LAYERS
    legend = [t.name for t in fig.data if t.showlegend]
    assert legend == list(pd.unique(probe.run))  # once, not per panel
    assert len(figures.plotted_data(fig)) == len(results[results.measure == "probe_accuracy"])


def test_layer_curve_refuses_ambiguous_data(results):
    with pytest.raises(ValueError, match="several measures"):
        figures.layer_curve(results)
    with pytest.raises(ValueError, match="split"):
        figures.layer_curve(results, measure="probe_accuracy")  # two splits per (run, layer)
    with pytest.raises(ValueError, match="missing column"):
        figures.layer_curve(results.drop(columns="layer_index"), measure="rankme")
    with pytest.raises(ValueError, match="baseline"):
        figures.layer_curve(results, measure="rankme", baseline="nope")


def test_plotted_data_survives_conversion_and_json(results):
    fig = figures.layer_curve(results, measure="rankme")
    exp = figures.plotted_data(fig)
    assert exp.ci_low.isna().all() and len(exp) == len(RUNS) * len(LAYERS)
    for other in (go.Figure(fig), copy.deepcopy(fig), pio.from_json(fig.to_json()), go.FigureWidget(fig)):
        pd.testing.assert_frame_equal(figures.plotted_data(other), exp)
    # a figure not built here: rebuilt from its traces
    plain = go.Figure(go.Scatter(x=[1, 2], y=[3.0, 4.0], name="a"))
    got = figures.plotted_data(plain)
    assert got.to_dict("list") == {"trace": ["a", "a"], "x": [1, 2], "y": [3.0, 4.0]}


# ------------------------------------------------------------------------------------------ heatmap & spectrum

def test_heatmap_from_tidy_pairs_is_the_matrix_in_layer_order(pairwise):
    df, m = pairwise
    fig = figures.layer_heatmap(df)
    (hm,) = fig.data
    np.testing.assert_array_equal(np.asarray(hm.z), m)
    assert list(hm.x) == LAYERS and list(hm.y) == LAYERS
    assert fig.layout.yaxis.title.text == "simclr layer" and fig.layout.xaxis.title.text == "mae layer"
    assert fig.layout.yaxis.autorange == "reversed" and (hm.zmin, hm.zmax) == (0, 1)
    drawn = figures.plotted_data(fig)
    np.testing.assert_array_equal(drawn.value.to_numpy().reshape(m.shape), m)


def test_heatmap_from_matrix_and_array():
    m = pd.DataFrame([[1.0, 0.2], [0.2, 1.0]], index=pd.Index(["l0", "l1"], name="run A"),
                     columns=pd.Index(["l0", "l1"], name="run B"))
    fig = figures.layer_heatmap(m, zmin=None, zmax=None, title="cka")
    np.testing.assert_array_equal(np.asarray(fig.data[0].z), m.to_numpy())
    assert fig.layout.yaxis.title.text == "run A" and fig.data[0].zmin is None
    arr = np.arange(6.0).reshape(2, 3)
    fig2 = figures.layer_heatmap(arr)
    np.testing.assert_array_equal(np.asarray(fig2.data[0].z), arr)
    with pytest.raises(ValueError, match="2-D"):
        figures.layer_heatmap(np.zeros(3))


def test_heatmap_refuses_several_run_pairs(pairwise):
    df, _ = pairwise
    with pytest.raises(ValueError, match="run_b"):
        figures.layer_heatmap(pd.concat([df, df.assign(run_b="supervised")]))


def test_heatmap_draws_similarity_tables_as_they_come():
    """The library's own pair tables (tidy and matrix) draw without renaming; the old layout is refused."""
    from workbench.similarity import cka_matrix

    rng = np.random.default_rng(3)
    a = {"l0": rng.normal(size=(30, 4)), "l1": rng.normal(size=(30, 6)), "l2": rng.normal(size=(30, 3))}
    b = {"m0": a["l1"] @ rng.normal(size=(6, 6)), "m1": rng.normal(size=(30, 2))}
    table = cka_matrix(a, b)
    mat = cka_matrix(a, b, output="matrix")
    fig = figures.layer_heatmap(table.sample(frac=1.0, random_state=0))  # row order comes from layer_index
    (hm,) = fig.data
    assert list(hm.y) == list(a) and list(hm.x) == list(b)
    np.testing.assert_allclose(np.asarray(hm.z), mat.to_numpy(), rtol=1e-12)
    assert fig.layout.yaxis.title.text == "layer" and fig.layout.xaxis.title.text == "layer"
    assert fig.data[0].colorbar.title.text == "cka linear"
    from_matrix = figures.layer_heatmap(mat, measure="cka_linear")
    np.testing.assert_allclose(np.asarray(from_matrix.data[0].z), mat.to_numpy(), rtol=1e-12)
    assert from_matrix.layout.xaxis.title.text == "layer"
    drawn = figures.plotted_data(from_matrix)
    assert list(drawn.columns) == ["layer", "layer_index", "measure", "value", "layer_b", "layer_index_b"]
    old = table.rename(columns={"layer": "layer_a"}).drop(columns=["layer_b"])
    with pytest.raises(ValueError, match="'layer_a' is called 'layer'"):
        figures.layer_heatmap(old)
    with pytest.raises(ValueError, match="missing column"):
        figures.layer_heatmap(table.drop(columns="run"))


def test_layer_curve_of_a_measure_on_bare_arrays():
    """layer_spectrum_table on arrays has no run: one line, named after the measure."""
    from workbench.spectrum import layer_spectrum_table

    rng = np.random.default_rng(4)
    acts = {name: rng.normal(size=(50, k)) @ rng.normal(size=(k, 8)) for name, k in (("a", 2), ("b", 5), ("c", 8))}
    table = layer_spectrum_table(acts, measures="rankme")
    fig = figures.layer_curve(table)
    (line,) = [t for t in fig.data if t.mode == "lines+markers"]
    assert line.name == "rankme" and list(line.x) == ["a", "b", "c"]
    np.testing.assert_allclose(line.y, table.value)
    assert figures.plotted_data(fig)["run"].isna().all()  # the drawn rows are the rows given


def test_step_curve_draws_one_measure_per_run_and_split():
    rows = [dict(run=run, step=step, measure=m, split=split, value=float(step) / 100 + r + (m == "loss"))
            for r, run in enumerate(["a", "b"]) for step in (0, 10, 100) for m in ("accuracy", "loss")
            for split in ("test", "ood")]
    history = tidy(rows).sample(frac=1.0, random_state=0)
    fig = figures.step_curve(history, measure="accuracy")
    assert sorted(t.name for t in fig.data) == ["a · ood", "a · test", "b · ood", "b · test"]
    for t in fig.data:
        run, split = t.name.split(" · ")
        ref = history[(history.run == run) & (history.split == split) & (history.measure == "accuracy")]
        ref = ref.sort_values("step")
        np.testing.assert_allclose(t.y, ref.value)
        np.testing.assert_allclose(t.x, np.where(ref.step <= 0, 0.5, ref.step))  # step 0 left of 1 on a log axis
    assert fig.layout.yaxis.title.text == "accuracy"
    no_split = figures.step_curve(tidy([r for r in rows if r["split"] == "test"]).assign(split=np.nan),
                                  measure="loss")
    assert sorted(t.name for t in no_split.data) == ["a", "b"]  # an empty dash column gives no styles
    with pytest.raises(ValueError, match="several measures"):
        figures.step_curve(history)
    both = figures.step_curve(history[history.split == "test"], color="measure", dash="run")
    assert sorted(t.name for t in both.data) == ["accuracy · a", "accuracy · b", "loss · a", "loss · b"]
    assert both.layout.yaxis.title.text == "value"
    with pytest.raises(ValueError, match="not in the data"):
        figures.step_curve(history, measure="nope")
    with pytest.raises(ValueError, match="'metric' is called 'measure'"):
        figures.step_curve(pd.DataFrame({"run": ["a"], "step": [1], "metric": ["loss"], "value": [1.0]}))


def test_to_html_shows_a_results_table_in_schema_order(tmp_path):
    table = tidy([dict(run="a", layer="l0", measure="rankme", value=1.5, target="label"),
                  dict(run="b", layer="l1", measure="rankme", value=2.5)], split="test")
    table["n_train"] = np.nan  # an extra column empty in every row is left out
    shuffled = table[["value", "measure", *reversed(table.columns.drop(["value", "measure"]))]]
    p = figures.to_html({}, tmp_path / "r.html", table=shuffled)
    head = re.findall(r"<th>(.*?)</th>", p.read_text())
    assert head == [*COLUMNS, "target"]


def test_spectrum_plot_normalised_sorted_loglog():
    ev = np.array([0.5, 4.0, 1.0, 0.0, 2.5])
    fig = figures.spectrum_plot({"a": ev, "b": ev * 3}, normalize=True, log=True)
    a, b = fig.data
    assert list(a.x) == [1, 2, 3, 4]  # the zero cannot sit on a log axis
    np.testing.assert_allclose(a.y, np.array([4.0, 2.5, 1.0, 0.5]) / ev.sum())
    np.testing.assert_allclose(b.y, a.y)  # normalisation removes the scale
    assert fig.layout.xaxis.type == "log" and fig.layout.yaxis.type == "log"
    raw = figures.spectrum_plot({"a": ev}, normalize=False, log=False)
    np.testing.assert_allclose(raw.data[0].y, [4.0, 2.5, 1.0, 0.5, 0.0])
    table = tidy([{"run": run, "layer": "head", "measure": "eigenvalue", "value": v}
                  for run in ("r", "s") for v in (1.0, 3.0, 2.0)])
    t = figures.spectrum_plot(table, normalize=False)
    assert [tr.name for tr in t.data] == ["r", "s"] and list(t.data[0].y) == [3.0, 2.0, 1.0]
    with pytest.raises(ValueError, match="missing column"):  # the old layout: eigenvalue instead of value
        figures.spectrum_plot(pd.DataFrame({"run": ["r"] * 3, "eigenvalue": [1.0, 3.0, 2.0]}))


# ------------------------------------------------------------------------------------------ export

def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def _read_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path)  # pandas' default parser round-trips the repr pandas wrote


def test_export_data_only_needs_no_browser(results, tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CHROMIUM", str(tmp_path / "no-such-chrome"))
    fig = figures.layer_curve(results[results.split == "ood"], measure="probe_accuracy")
    out = figures.export(fig, tmp_path / "fig.json")
    assert set(out) == {"csv", "json"}
    pd.testing.assert_frame_equal(_read_csv(out["csv"]), _expected(results, split="ood"), check_dtype=False,
                                  check_exact=True)
    spec = json.loads(out["json"].read_text())
    assert spec["layout"]["width"] == pytest.approx(252) and spec["layout"]["template"]["layout"]["font"]["size"] == 8
    lines = [t for t in spec["data"] if t["mode"] == "lines+markers"]
    assert [t["name"] for t in lines] == list(pd.unique(_expected(results, split="ood").run))


def test_export_without_chromium_raises_after_writing_data(results, tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CHROMIUM", str(tmp_path / "no-such-chrome"))
    assert figures.find_chromium() is None
    fig = figures.layer_curve(results, measure="rankme")
    with pytest.raises(RuntimeError, match="apt-get install chromium"):
        figures.export(fig, tmp_path / "r.png")
    assert (tmp_path / "r.csv").exists() and (tmp_path / "r.json").exists()
    assert not (tmp_path / "r.png").exists()


def test_export_rejects_bad_arguments(results, tmp_path):
    fig = figures.layer_curve(results, measure="rankme")
    with pytest.raises(ValueError, match="format"):
        figures.export(fig, tmp_path / "x.gif")
    with pytest.raises(ValueError, match="width"):
        figures.export(fig, tmp_path / "x.json", width="triple")


@pytest.mark.browser
@needs_browser
def test_export_svg_pdf_png_sizes_and_data(results, tmp_path):
    fig = figures.layer_curve(results[results.split == "test"], measure="probe_accuracy", baseline="random-init")
    out = figures.export(fig, tmp_path / "probe", width="single", dpi=300)  # no suffix: all three
    assert set(out) == {"svg", "pdf", "png", "csv", "json"}
    root = ET.parse(out["svg"]).getroot()  # valid XML
    assert root.tag.endswith("svg") and root.attrib["width"] == "252pt"
    assert root.attrib["height"] == f"{2.4 * 72:g}pt" and root.attrib["viewBox"].split()[2] == "252"
    pdf = out["pdf"].read_bytes()
    assert pdf.startswith(b"%PDF")
    box = [float(v) for v in re.search(rb"/MediaBox\s*\[([^\]]*)\]", pdf).group(1).split()]
    assert box[2] - box[0] == pytest.approx(252, abs=1) and box[3] - box[1] == pytest.approx(172.8, abs=1)
    assert _png_size(out["png"]) == (1050, 720)  # 3.5 in x 2.4 in at 300 dpi
    pd.testing.assert_frame_equal(_read_csv(out["csv"]), _expected(results), check_dtype=False, check_exact=True)


@pytest.mark.browser
@needs_browser
def test_export_png_pixel_size_follows_width_and_dpi(pairwise, tmp_path):
    df, _ = pairwise
    fig = figures.layer_heatmap(df)
    p = figures.export(fig, tmp_path / "cka.png", width="double", height=3, dpi=150)["png"]
    assert _png_size(p) == (round(7.16 * 150), 450)
    fw = go.FigureWidget(figures.spectrum_plot({"a": np.arange(1.0, 30.0)[::-1]}))
    q = figures.export(fw, tmp_path / "spec", formats=["png"], width=2.0, dpi=100)  # FigureWidget input too
    assert _png_size(q["png"]) == (200, round(2.0 * 2.4 / 3.5 * 100))
    assert _read_csv(q["csv"]).eigenvalue.iloc[0] == 29.0


def test_to_html_is_offline_and_inlines_plotly_once(results, pairwise, tmp_path):
    figs = {"Probe accuracy": figures.layer_curve(results[results.split == "test"], measure="probe_accuracy"),
            "CKA <simclr vs mae>": figures.layer_heatmap(pairwise[0])}
    table = _expected(results).head(4)
    p = figures.to_html(figs, tmp_path / "report.html", title="Run report", table=table)
    text = p.read_text()
    bundle = re.search(r'<script type="text/javascript">(.*?)</script>', text, re.S)
    assert bundle and "plotly.js v" in bundle.group(1)[:300]
    rest = text[:bundle.start()] + text[bundle.end():]
    assert text.count(bundle.group(1)[:200]) == 1           # plotly.js inlined exactly once
    assert "cdn" not in rest.lower() and "<script src" not in text.lower()
    assert rest.count("Plotly.newPlot") == 2
    assert "CKA &lt;simclr vs mae&gt;" in rest and "<h1>Run report</h1>" in rest
    assert f"{table.value.iloc[0]:.4g}" in rest and 'class="dataframe results"' in rest


def test_plotted_data_of_foreign_figures_decodes_typed_arrays():
    # plotly >= 6 serialises numpy arrays as base64 typed arrays; rows must come back as numbers
    import plotly.express as px

    df = pd.DataFrame({"t": [0.05, 0.2, 1.0] * 2, "m": ["a"] * 3 + ["b"] * 3, "v": np.arange(6.0) / 7})
    got = figures.plotted_data(px.line(df, x="t", y="v", facet_col="m", markers=True))
    np.testing.assert_allclose(got["x"].to_numpy(float), df["t"].to_numpy())
    np.testing.assert_allclose(got["y"].to_numpy(float), df["v"].to_numpy())
    z = np.arange(6.0).reshape(2, 3) ** 2
    heat = figures.plotted_data(go.Figure(go.Heatmap(z=z)))
    np.testing.assert_allclose(heat.pivot(index="y", columns="x", values="z").to_numpy(), z)


def test_to_html_table_of_a_pivot_names_every_column_and_no_stray_header(tmp_path):
    """A pivot (index run × layer, a named column axis) becomes plain columns run, layer, … — no empty header
    cell from the column axis's name and no unlabelled index column."""
    import re

    long = pd.DataFrame({"run": ["a", "a", "b"], "layer": ["x", "y", "x"], "column": ["m[test]"] * 3,
                         "value": [1.0, 2.0, 3.0]})
    wide = long.pivot_table(index=["run", "layer"], columns="column", values="value")
    html = figures.to_html({}, tmp_path / "r.html", table=wide).read_text()
    section = html[html.index('<section id="table">'):]
    assert re.findall(r"<th>(.*?)</th>", section) == ["run", "layer", "m[test]"]
    assert "<th></th>" not in section
    rows = re.findall(r"<tr>\s*(.*?)\s*</tr>", section, flags=re.S)
    assert [re.findall(r"<td>(.*?)</td>", r) for r in rows] == [["a", "x", "1"], ["a", "y", "2"], ["b", "x", "3"]]

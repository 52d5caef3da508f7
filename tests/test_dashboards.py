"""workbench.dashboards.LayerDashboard: controls filter the library's frame; the FigureWidget follows in place."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

pytest.importorskip("ipywidgets")
from workbench import figures
from workbench.dashboards import LayerDashboard

LAYERS = ["conv1", "conv2", "conv3", "fc"]
RUNS = ["supervised", "simclr", "mae", "random-init"]


def make_results(shift: float = 0.0) -> pd.DataFrame:
    rows = []
    for r, run in enumerate(RUNS):
        for i, layer in enumerate(LAYERS):
            for step in (500, 1000):
                for split in ("test", "ood"):
                    v = (0.2 + 0.1 * i + 0.03 * r + (0.05 if step == 1000 else 0) - (0.1 if split == "ood" else 0)
                         + shift)
                    rows.append(dict(run=run, step=step, layer=layer, layer_index=i, measure="probe_accuracy",
                                     split=split, value=round(v, 6), ci_low=round(v - 0.01, 6),
                                     ci_high=round(v + 0.01, 6)))
            rows.append(dict(run=run, step=1000, layer=layer, layer_index=i, measure="rankme", split=None,
                             value=float(5 * r + i), ci_low=np.nan, ci_high=np.nan))
    # reversed so that layer order must come from layer_index, not row order
    return pd.DataFrame(rows).iloc[::-1].reset_index(drop=True)


@pytest.fixture()
def results() -> pd.DataFrame:
    return make_results()


def lines(fw) -> dict[str, tuple]:
    return {t.name: (tuple(t.x), tuple(t.y)) for t in fw.data if t.mode == "lines+markers"}


def expected(df, run, *, measure="probe_accuracy", split="test", step=1000):
    sub = df[(df.run == run) & (df.measure == measure) & (df.step == step)]
    if split is not None:
        sub = sub[sub.split == split]
    sub = sub.sort_values("layer_index")
    return tuple(sub.layer), tuple(sub.value)


def test_initial_view_is_test_split_latest_step(results):
    dash = LayerDashboard(results, measure="probe_accuracy", baseline="random-init")
    assert isinstance(dash.figure, go.FigureWidget)
    assert (dash.measure_w.value, dash.filter_ws["split"].value, dash.filter_ws["step"].value) == \
           ("probe_accuracy", "test", "latest")  # every run here ends at step 1000
    got = lines(dash.figure)
    assert set(got) == set(RUNS)
    for run in RUNS:
        assert got[run] == expected(results, run)
    base = next(t for t in dash.figure.data if t.name == "random-init")
    assert base.line.dash == "dash"
    # the widget tree holds the figure and the controls
    assert dash.figure in dash.widget.children[0].children
    assert set(dash.runs_w.options) == set(RUNS)


def test_latest_step_is_per_run_and_keeps_an_early_baseline(results):
    # as in the demo: the random-init twin exists only at step 0, the trained runs end at 500 / 1000
    base = results[results.run == "random-init"].assign(step=0)
    short = results[(results.run == "mae") & (results.step == 500)]
    rest = results[~results.run.isin(["random-init", "mae"])]
    df = pd.concat([rest, short, base], ignore_index=True).drop_duplicates(["run", "step", "layer", "measure", "split"])
    dash = LayerDashboard(df, measure="probe_accuracy", baseline="random-init")
    assert dash.filter_ws["step"].value == "latest"
    assert [v for _l, v in dash.filter_ws["step"].options] == ["latest", 0, 500, 1000]
    got = lines(dash.figure)
    assert set(got) == set(RUNS)  # the baseline is not hidden by a global "latest step" filter
    # each run at its own last step, computed here with a plain loop over the rows
    for run in RUNS:
        last = max(s for r, s in zip(df.run, df.step) if r == run)
        assert got[run] == expected(df, run, step=last)
    assert len(dash.current_frame().groupby("run")["step"].unique()) == len(RUNS)
    dash.select(step=1000)  # an explicit step still filters: only the runs that reached it
    assert set(lines(dash.figure)) == {"supervised", "simclr"}
    dash.select(step="latest")
    assert set(lines(dash.figure)) == set(RUNS)
    dash.measure_w.value = "rankme"  # a measure logged at one step only: "latest" still applies
    assert dash.filter_ws["step"].value == "latest"
    assert lines(dash.figure)["random-init"] == expected(df, "random-init", measure="rankme", split=None, step=0)


def test_figure_fits_next_to_the_controls(results):
    dash = LayerDashboard(results, measure="probe_accuracy")
    lay = dash.figure.layout
    # a fixed size (plotly's widget otherwise takes 700 px whatever its box) and a legend inside that width
    assert lay.autosize is False and 300 <= lay.width <= 640 and lay.height
    assert lay.legend.x is None or lay.legend.x <= 1.05
    dash.select(measure="rankme")  # every redraw keeps it
    assert dash.figure.layout.width == lay.width


def test_select_changes_data_in_place(results):
    dash = LayerDashboard(results, measure="probe_accuracy")
    fw = dash.figure
    dash.select(runs=["mae", "simclr"])
    assert dash.figure is fw
    got = lines(fw)
    assert set(got) == {"mae", "simclr"}
    assert got["mae"] == expected(results, "mae")
    traces_before = list(fw.data)
    dash.select(split="ood", step=500)  # same traces, new values: updated without replacing them
    assert dash.figure is fw and all(a is b for a, b in zip(fw.data, traces_before))
    got = lines(fw)
    assert got["simclr"] == expected(results, "simclr", split="ood", step=500)
    band = next(t for t in fw.data if t.name == "simclr CI")
    sub = results[(results.run == "simclr") & (results.split == "ood") & (results.step == 500)
                  & (results.measure == "probe_accuracy")].sort_values("layer_index")
    np.testing.assert_allclose(band.y, np.r_[sub.ci_high, sub.ci_low[::-1]])


def test_moving_a_widget_redraws(results):
    dash = LayerDashboard(results, measure="probe_accuracy")
    fw = dash.figure
    dash.runs_w.value = ("supervised",)  # as a user click would
    assert list(lines(fw)) == ["supervised"]
    dash.filter_ws["split"].value = "ood"
    assert lines(fw)["supervised"] == expected(results, "supervised", split="ood")
    dash.measure_w.value = "rankme"  # no split for this measure: control disabled, rows still drawn
    assert dash.filter_ws["split"].disabled and dash.filter_ws["split"].value is None
    assert lines(fw)["supervised"] == expected(results, "supervised", measure="rankme", split=None)
    assert fw.layout.yaxis.title.text == "rankme"
    dash.measure_w.value = "probe_accuracy"  # the split chosen earlier comes back
    assert dash.filter_ws["split"].value == "ood" and not dash.filter_ws["split"].disabled
    assert lines(fw)["supervised"] == expected(results, "supervised", split="ood")
    assert dash.figure is fw


def test_layer_marker_and_readout(results):
    dash = LayerDashboard(results, measure="probe_accuracy")
    assert dash.layer_values().empty and len(dash.figure.layout.shapes) == 0
    dash.select(runs=["simclr", "mae"], layer="conv3")
    (shape,) = dash.figure.layout.shapes
    assert shape.x0 == shape.x1 == "conv3"
    vals = dash.layer_values().set_index("run")
    for run in ("simclr", "mae"):
        want = results[(results.run == run) & (results.layer == "conv3") & (results.split == "test")
                       & (results.step == 1000) & (results.measure == "probe_accuracy")].value.item()
        assert vals.loc[run, "value"] == want
        assert f"{want:.4f}" in dash.readout.value
    assert set(vals.index) == {"simclr", "mae"}
    dash.select(clear_layer=True)
    assert len(dash.figure.layout.shapes) == 0


def test_bad_selection_is_refused(results):
    dash = LayerDashboard(results, measure="probe_accuracy")
    with pytest.raises(ValueError, match="unknown run"):
        dash.select(runs=["nope"])
    with pytest.raises(ValueError, match="split"):
        dash.select(split="val")
    with pytest.raises(ValueError, match="unknown layer"):
        dash.select(layer="conv9")
    with pytest.raises(ValueError, match=r"LayerDashboard\(results\) is missing column\(s\) \['layer_index'\]"):
        LayerDashboard(results.drop(columns="layer_index"))


def test_empty_selection_clears_plot(results):
    dash = LayerDashboard(results, measure="probe_accuracy")
    dash.select(runs=[])
    assert len(dash.figure.data) == 0 and "no rows" in dash.status.value
    dash.select(runs=["mae"])
    assert list(lines(dash.figure)) == ["mae"] and dash.status.value == ""


def test_callable_source_and_reload():
    state = {"shift": 0.0}
    dash = LayerDashboard(lambda: make_results(state["shift"]), runs=["mae"], measure="probe_accuracy")
    before = lines(dash.figure)["mae"][1]
    state["shift"] = 0.5
    dash.reload_button.click()
    after = lines(dash.figure)["mae"][1]
    np.testing.assert_allclose(np.array(after) - np.array(before), 0.5)
    assert dash.runs_w.value == ("mae",)


def test_export_button_writes_current_view(results, tmp_path):
    dash = LayerDashboard(results, measure="probe_accuracy")
    dash.select(runs=["simclr"], split="ood")
    dash.path_w.value = str(tmp_path / "view.json")  # data + spec: no browser needed
    dash.export_button.click()
    assert "wrote" in dash.status.value
    csv = pd.read_csv(tmp_path / "view.csv")
    assert tuple(csv.value) == expected(results, "simclr", split="ood")[1]
    assert set(csv.run) == {"simclr"} and set(csv.split) == {"ood"}
    dash.path_w.value = str(tmp_path / "view.gif")
    dash.export_button.click()
    assert "export failed" in dash.status.value


@pytest.mark.browser
@pytest.mark.skipif(figures.find_chromium() is None, reason="no Chromium installed")
def test_export_button_png(results, tmp_path):
    dash = LayerDashboard(results, runs=["mae"], measure="probe_accuracy")
    dash.path_w.value = str(tmp_path / "view.png")
    dash.export_button.click()
    assert (tmp_path / "view.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", dash.status.value


# ------------------------------------------------------------------ what a view made later draws (issue 12)
def _state_traces(fw) -> dict[str, tuple]:
    """Name → (x, y) of the traces in the state the widget shares with the front end (what a reloaded page
    or any view made later draws)."""
    data = fw.get_state()["_widget_data"]
    return {t["name"]: (tuple(t["x"]), tuple(np.asarray(t["y"], dtype=float)))
            for t in data if t.get("mode") == "lines+markers"}


def test_the_widget_state_is_the_figure_shown_after_every_change(results):
    """plotly's FigureWidget only sends one-off deltas: its synced state kept the first view, so a reloaded page
    drew the first view under the current controls. The state must follow every change."""
    dash = LayerDashboard(results, measure="probe_accuracy")
    dash.select(split="ood", runs=["supervised", "mae"])
    want = {n: (x, tuple(float(v) for v in y)) for n, (x, y) in lines(dash.figure).items()}
    assert set(want) == {"supervised", "mae"}
    assert _state_traces(dash.figure) == want
    dash.select(measure="rankme")
    want = {n: (x, tuple(float(v) for v in y)) for n, (x, y) in lines(dash.figure).items()}
    assert _state_traces(dash.figure) == want
    assert dash.figure.get_state()["_widget_layout"]["yaxis"]["title"]["text"] == "rankme"


def test_the_widget_state_holds_arrays_as_plotly_displays_them():
    """The synced state must be in the form plotly's own display gives (``_repr_mimebundle_``: arrays, not
    ``to_plotly_json()``'s base64 ``{dtype, bdata}`` records): from base64 records the front end computed trace
    deltas repeating every array, a 10.8 MB message for the explorer at 2 000 points, over the Jupyter server's
    10 MiB websocket limit; the kernel connection dropped and a lasso never reached the kernel."""
    import torch

    from workbench.activations import Activations
    from workbench.dashboards import EmbeddingExplorer

    rng = np.random.default_rng(0)
    acts = Activations({"l1": torch.tensor(rng.normal(size=(300, 4)), dtype=torch.float32)},
                       labels=np.arange(300) % 3)
    ex = EmbeddingExplorer(acts, max_points=None, engine="plotly")
    ex.select(color="label")
    shown = go.FigureWidget(go.Figure(ex.figure))
    shown._repr_mimebundle_()  # plotly sets its synced state for display
    ours, theirs = ex.figure.get_state()["_widget_data"], shown.get_state()["_widget_data"]
    assert len(ours) == len(theirs) == 3
    def form(v):  # binary buffer records (what the serializer sends for arrays), else the value itself
        if isinstance(v, dict) and "buffer" in v:
            return ("buffer", v["dtype"], tuple(v["shape"]), bytes(v["buffer"]))
        return ("value", json.dumps(v, sort_keys=True, default=str))

    for a, b in zip(ours, theirs):
        for key in ("x", "y", "customdata"):
            assert not (isinstance(a[key], dict) and "bdata" in a[key]), f"{key} synced as base64"
            assert form(a[key]) == form(b[key]), key


def test_new_traces_reach_the_front_end_after_the_axes_they_use():
    """When the traces change (the explorer's example grid after a selection), plotly.js must receive the new
    layout — the subplot axes the traces refer to — before the traces: traces added first were drawn on the default
    axes (one image over the whole grid, seen in JupyterLab). The messages the FigureWidget sends are recorded."""
    from workbench import figures as wb_figures
    from workbench.dashboards._base import update_figure

    fw = go.FigureWidget()
    sent: list[tuple[str, set]] = []
    fw._send_addTraces_msg = lambda data: sent.append(("addTraces", {t.get("xaxis", "x") for t in data}))
    fw._send_relayout_msg = lambda data, source_view_id=None: sent.append(("relayout", set(data)))
    fw._send_update_msg = lambda restyle_data=None, relayout_data=None, **_: sent.append(
        ("update", set(relayout_data or {})))
    grid = wb_figures.example_grid(np.random.default_rng(0).random((6, 3, 8, 8)), [f"#{i}" for i in range(6)])
    update_figure(fw, grid)
    first_traces = next(i for i, (kind, _) in enumerate(sent) if kind == "addTraces")
    axes_sent = set().union(*(keys for kind, keys in sent[:first_traces] if kind in ("relayout", "update")))
    used = {f"xaxis{a[1:]}" for a in sent[first_traces][1]}  # "x2" -> "xaxis2"
    assert used - {"xaxis"} and used <= axes_sent | {"xaxis"}, (used, axes_sent)


def test_entries_the_new_layout_lacks_are_removed_on_the_front_end():
    """Assigning a layout never removed what the old one had (a "waiting…" note stayed over the live curve)."""
    from workbench.dashboards._base import clear_figure, update_figure

    fw = go.FigureWidget()
    sent = []
    fw.observe(lambda change: sent.append(change["new"].get("relayout_data") or change["new"].get("layout_data"))
               if change["new"] else None, names=["_py2js_relayout", "_py2js_update"])
    clear_figure(fw, "waiting for the first logged step")
    update_figure(fw, figures.layer_curve(make_results().query("measure == 'rankme'"), measure="rankme"))
    assert sent and sent[-1].get("annotations", "absent") in (None, []), sent[-1]  # removed on the front end
    assert len(fw.layout.annotations) == 0 and fw.layout.xaxis.visible is None
    template_sends = sum("template" in d for d in sent)
    update_figure(fw, figures.layer_curve(make_results().query("measure == 'rankme'"), measure="rankme", title="t"))
    assert sent[-1] == {"title": fw.layout.title.to_plotly_json()}  # only what changed is sent
    assert sum("template" in d for d in sent) == template_sends


def test_a_saved_notebook_keeps_a_static_copy_of_the_current_figure(tmp_path):
    """Run in a real kernel: after the widget, a marker and a static copy (plotly JSON + an HTML table) whose
    data follow the dashboard's later changes, and a style rule in the widget that hides them while it lives."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    make_results().to_csv(tmp_path / "results.csv", index=False)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in (
        "import pandas as pd\nfrom workbench.dashboards import LayerDashboard\n"
        "dash = LayerDashboard(pd.read_csv('results.csv'), measure='probe_accuracy')\ndash",
        "dash.select(split='ood', runs=['mae'])",
        "import json; print(json.dumps([list(map(float, t.y)) for t in dash.figure.data if t.name == 'mae']))")]
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = nb.cells[0].outputs
    kinds = [next(iter(k for k in o.get("data", {}) if k != "text/plain"), o["output_type"]) for o in outputs]
    assert kinds == ["application/vnd.jupyter.widget-view+json", "text/html", "application/vnd.plotly.v1+json"]
    marker = outputs[1]["data"]["text/html"]
    assert 'class="wb-snapshot-' in marker
    copy = outputs[2]["data"]
    (mae_y,) = json.loads(nb.cells[2].outputs[0]["text"])
    shown = [t for t in copy["application/vnd.plotly.v1+json"]["data"] if t.get("name") == "mae"]
    assert len(shown) == 1 and np.allclose(_plotly_array(shown[0]["y"]), mae_y)  # the copy followed select()
    assert "<table" in copy["text/html"] and "mae" in copy["text/html"]


def _plotly_array(value) -> np.ndarray:
    """A plotly JSON array: a list, or {dtype, bdata (base64)} for a numpy array."""
    if isinstance(value, dict):
        import base64

        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
    return np.asarray(value, dtype=float)

"""The embedding explorer at many points (issue 18): plotly up to LARGE_THRESHOLD drawn points, jupyter-scatter's
WebGL widget above, with the same linked selection and colouring. No browser: the widget's synced traits
(``selection``, ``points``, ``color``, ``color_domain``) are what the front end reads and writes."""
from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("ipywidgets")
from workbench import figures
from workbench.activations import Activations
from workbench.dashboards import EmbeddingExplorer
from workbench.dashboards import _scatter
from workbench.dashboards._scatter import LARGE_THRESHOLD, LargeScatter, choose_engine, have_webgl_widget

pytestmark = pytest.mark.usefixtures("one_thread")
needs_widget = pytest.mark.skipif(not have_webgl_widget(), reason="jupyter-scatter is not installed "
                                  "(pip install jupyter-scatter): the WebGL engine cannot be built")


def _acts(n: int, seed: int = 0, d: int = 4) -> tuple[Activations, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    shape = rng.integers(0, 4, size=n)
    layer = rng.normal(size=(n, d)) + labels[:, None] * np.arange(1, d + 1)
    acts = Activations({"l1": torch.tensor(layer, dtype=torch.float32)}, labels=labels,
                       factors={"shape": shape, "scale": rng.random(n), "x": rng.integers(0, 2, size=n)})
    return acts, labels, shape


def _pca(x: np.ndarray) -> np.ndarray:
    xc = x - x.mean(0)
    return xc @ np.linalg.svd(xc, full_matrices=False)[2][:2].T


def _shown_ids(ex: EmbeddingExplorer) -> list[int]:
    """The example ids the linked text list shows (``<li><b>#id ...</b>``)."""
    return [int(m) for m in re.findall(r"<li><b>#(\d+)", ex.examples_html.value)]


# ------------------------------------------------------------------ the switch
def test_choose_engine_at_the_threshold():
    assert LARGE_THRESHOLD == 50_000
    if have_webgl_widget():
        assert choose_engine(LARGE_THRESHOLD) == "plotly"
        assert choose_engine(LARGE_THRESHOLD + 1) == "webgl"
    assert choose_engine(10**6, engine="plotly") == "plotly"
    assert choose_engine(11, threshold=10, engine="plotly") == "plotly"


def test_without_the_widget_many_points_fall_back_to_plotly_with_a_warning(monkeypatch):
    monkeypatch.setattr(_scatter, "have_webgl_widget", lambda: False)
    with pytest.warns(UserWarning, match="pip install jupyter-scatter"):
        assert choose_engine(LARGE_THRESHOLD + 1) == "plotly"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert choose_engine(LARGE_THRESHOLD) == "plotly"


@needs_widget
def test_explorer_switches_engine_above_its_threshold(monkeypatch):
    monkeypatch.setattr(EmbeddingExplorer, "large_threshold", 100)
    acts, _labels, _shape = _acts(101)
    small = EmbeddingExplorer(acts, max_points=100)
    assert small.drawn_engine() == "plotly" and small.plot_box.children == (small.figure,)
    assert len(small.plotted_data()) == 100 and small._large is None
    big = EmbeddingExplorer(acts, max_points=None)
    assert big.drawn_engine() == "webgl"
    assert big.plot_box.children == (big._large.widget,) and big._large.scatter_widget in big._large.widget.children
    assert len(big.figure.data) == 0  # plotly holds no copy of the points
    assert len(big.plotted_data()) == 101
    forced = EmbeddingExplorer(acts, max_points=50, engine="webgl")
    assert forced.drawn_engine() == "webgl" and len(forced.plotted_data()) == 50


@needs_widget
def test_the_real_threshold_draws_every_point_with_the_widget():
    n = LARGE_THRESHOLD + 1
    acts, _labels, _shape = _acts(n, d=3)
    ex = EmbeddingExplorer(acts, max_points=None)
    assert ex.drawn_engine() == "webgl"
    got = ex.plotted_data().sort_values("index")
    assert got["index"].tolist() == list(range(n))
    want = _pca(acts["l1"].numpy().astype(np.float64))
    xy = got[["x", "y"]].to_numpy()
    np.testing.assert_allclose(xy, want * np.sign((xy * want).sum(0)), rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------ linked selection
@needs_widget
def test_widget_selection_shows_exactly_those_examples():
    n, m = 300, 120
    acts, labels, _shape = _acts(n, seed=1)
    texts = [f"sentence {i}" for i in range(n)]
    ex = EmbeddingExplorer(acts, texts, max_points=m, engine="webgl", max_shown=50, seed=3)
    # the drawn rows are the explorer's seeded subset, in sorted order: row r is example drawn[r]
    drawn = np.sort(np.random.default_rng(3).choice(n, m, replace=False))
    rows = np.array([0, 7, 8, 60, 119])
    ex._large.scatter_widget.selection = rows.astype(np.uint32)  # what a lasso in the browser writes
    assert ex.selected == drawn[rows].tolist()
    assert _shown_ids(ex) == drawn[rows].tolist()
    items = re.findall(r"<li><b>#(\d+) label=(\d+)</b>: (.*?)</li>", ex.examples_html.value)
    assert [(int(i), int(lab), t) for i, lab, t in items] == [(int(i), int(labels[i]), texts[i]) for i in drawn[rows]]
    assert f"{len(rows)} selected" in ex.selection_info.value
    # Python -> widget: select_points marks the drawn ones in the widget (an undrawn example cannot be shown)
    undrawn = int(np.setdiff1d(np.arange(n), drawn)[0])
    ex.select_points([int(drawn[5]), undrawn, int(drawn[2])])
    assert sorted(np.asarray(ex._large.scatter_widget.selection).tolist()) == [2, 5]
    assert ex.selected == [int(drawn[5]), undrawn, int(drawn[2])]
    ex._large.scatter_widget.selection = np.zeros(0, dtype=np.uint32)  # clearing the lasso clears the list
    assert ex.selected == [] and ex.examples_html.value == ""


@pytest.mark.parametrize("shape", ["lasso", "box"])
def test_plotly_lasso_or_box_drawn_in_the_browser_selects_the_points_inside(shape):
    """The browser syncs a drawn lasso/box as ``layout.selections`` (plotly.js's relayout); the explorer selects the
    points inside. Checked against a hand-made lasso (a pentagon: star-free, so a point is inside when it is on
    the inner side of all five edges) and a box (two interval tests), on the drawn PCA coordinates."""
    n = 600
    acts, _labels, _shape = _acts(n, seed=4)
    ex = EmbeddingExplorer(acts, [f"s{i}" for i in range(n)], engine="plotly", max_points=None)
    frame = ex.current_frame()
    x, y, ids = frame["x"].to_numpy(), frame["y"].to_numpy(), frame["index"].to_numpy()
    cx, cy, r = float(np.median(x)), float(np.median(y)), float(np.std(x))
    if shape == "lasso":
        angles = np.pi / 2 + 2 * np.pi * np.arange(5) / 5
        vx, vy = cx + r * np.cos(angles), cy + r * np.sin(angles)  # counter-clockwise convex pentagon
        path = "M" + "L".join(f"{float(a)!r},{float(b)!r}" for a, b in zip(vx, vy)) + "Z"
        sel = {"type": "path", "path": path, "xref": "x", "yref": "y"}
        side = [(vx[(k + 1) % 5] - vx[k]) * (y - vy[k]) - (vy[(k + 1) % 5] - vy[k]) * (x - vx[k]) for k in range(5)]
        inside = np.all(np.array(side) > 0, axis=0)
    else:
        sel = {"type": "rect", "x0": cx + r, "x1": cx - r, "y0": cy - r / 2, "y1": cy + r, "xref": "x", "yref": "y"}
        inside = (np.abs(x - cx) <= r) & (y >= cy - r / 2) & (y <= cy + r)
    assert 10 < inside.sum() < n - 10
    ex.figure.plotly_relayout({"selections": [sel]})  # what the FigureWidget does with the browser's relayout
    assert sorted(ex.selected) == sorted(ids[inside].astype(int).tolist())
    assert f"{inside.sum()} selected" in ex.selection_info.value
    ex.figure.plotly_relayout({"selections": []})  # a double click clears the lasso: and the list
    assert ex.selected == []


@needs_widget
def test_selection_survives_a_recolour_as_a_fresh_widget():
    acts, _labels, _shape = _acts(80)
    ex = EmbeddingExplorer(acts, [f"s{i}" for i in range(80)], engine="webgl")
    first = ex._large.scatter_widget
    ex.select(color="shape")
    second = ex._large.scatter_widget
    assert second is not first and ex.plot_box.children == (ex._large.widget,)
    second.selection = np.array([4, 9], dtype=np.uint32)
    assert ex.selected == [4, 9]  # every example drawn: row == example
    first.selection = np.array([1], dtype=np.uint32)  # the closed widget no longer reports
    assert ex.selected == [4, 9]


# ------------------------------------------------------------------ colours
@needs_widget
def test_colours_map_to_the_factor():
    n = 150
    acts, labels, shape = _acts(n, seed=2)
    ex = EmbeddingExplorer(acts, engine="webgl", color="shape")
    pal = figures.palette()
    want = {lev: pal[k % len(pal)].lower() for k, lev in enumerate(sorted(set(shape.tolist())))}
    ids = ex.plotted_data()["index"].to_numpy()
    assert ex._large.point_colors() == [want[int(shape[i])] for i in ids]
    assert ex.plotted_data()["shape"].tolist() == [str(shape[i]) for i in ids]
    ex.select(color="label")
    want = {lev: pal[k % len(pal)].lower() for k, lev in enumerate(sorted(set(labels.tolist())))}
    assert ex._large.point_colors() == [want[int(labels[i])] for i in ids]
    # a factor named like a coordinate colours by the factor, not by the PC 1 position
    ex.select(color="x")
    assert ex.plotted_data()["factor_x"].tolist() == [str(acts.factors["x"][i]) for i in ids]
    # a continuous factor: its values, on a colour scale
    ex.select(color="scale")
    np.testing.assert_array_equal(ex.plotted_data()["scale"].to_numpy(), acts.factors["scale"][ids])
    assert ex._large.scatter_widget.color_domain == [pytest.approx(acts.factors["scale"].min()),
                                                    pytest.approx(acts.factors["scale"].max())]
    ex.select(color=None)
    w = ex._large.scatter_widget
    assert w.color_by is None and "#" + "".join(f"{round(255 * c):02x}" for c in w.color[:3]) == pal[0].lower()


# ------------------------------------------------------------------ bad input
def test_bad_engine_is_named():
    acts, _labels, _shape = _acts(20)
    with pytest.raises(ValueError, match="engine must be one of"):
        EmbeddingExplorer(acts, engine="datashader")
    with pytest.raises(TypeError, match="n_points"):
        choose_engine(-1)
    with pytest.raises(ValueError, match="threshold"):
        choose_engine(10, threshold=0)


def test_webgl_without_the_widget_says_what_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_jscatter(name, *args, **kwargs):
        if name == "jscatter":
            raise ImportError("no jscatter")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_jscatter)
    acts, _labels, _shape = _acts(20)
    with pytest.raises(ImportError, match="pip install jupyter-scatter"):
        EmbeddingExplorer(acts, engine="webgl")


@needs_widget
def test_large_scatter_refuses_bad_frames():
    frame = pd.DataFrame({"index": [0, 1, 2], "x": [0.0, 1.0, 2.0], "y": [1.0, 0.0, 1.0], "label": [0, 1, 0]})
    view = LargeScatter()
    with pytest.raises(ValueError, match="call draw"):
        view.set_selection([0])
    with pytest.raises(TypeError, match="frame must be a DataFrame"):
        view.draw(frame.to_numpy())
    with pytest.raises(ValueError, match=r"no column\(s\) \['colour'\]"):
        view.draw(frame, "colour")
    with pytest.raises(ValueError, match="no rows"):
        view.draw(frame.iloc[:0])
    with pytest.raises(ValueError, match="NaN or infinite"):
        view.draw(frame.assign(x=[0.0, np.nan, 1.0]))
    with pytest.raises(TypeError, match="on_select must be callable"):
        LargeScatter(on_select="print")
    with pytest.raises(ValueError, match="height"):
        LargeScatter(height=0)
    got = []
    view = LargeScatter(on_select=got.append).draw(frame.assign(index=[10, 20, 30]), "label")
    view.scatter_widget.selection = np.array([2, 0], dtype=np.uint32)
    assert got == [[30, 10]]
    assert view.set_selection([20, 99]) == [20] and got == [[30, 10]]  # no echo, 99 is not drawn

"""Figures as a reader sees them on screen: drawn by plotly.js in Chromium, with plotly's toolbar showing.

plotly shows its toolbar (the "modebar") over the top right of a figure while the pointer is on it. Titles used to
start at the very top of the figure and panel titles sat in a 28 px margin, so the toolbar covered them (issue 19:
"the plot title overlaps the plotly toolbar"). Each figure here is drawn at the size the dashboards use, the
pointer is moved onto its plot, and the boxes Chromium laid out are compared: no text may lie under the toolbar,
and the figure title may not run into the panel titles below it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import plotly.io as pio
import pytest
from test_browser import CHROMIUM

from workbench import figures
from workbench.results import tidy

pytestmark = pytest.mark.browser

LONG = "Per-layer measures of every run, shapes CNN (demo, quick)"  # reaches the right edge at 520 px


def _table():
    rows = [{"run": run, "layer": layer, "measure": "probe_accuracy", "split": split, "value": v + 0.1 * i}
            for i, run in enumerate(["clean", "noise-30%", "random-init"]) for split in ("test", "ood")
            for layer, v in zip(["stem", "stage1", "stage2", "stage3", "head"], [0.3, 0.5, 0.6, 0.7, 0.4])]
    return tidy(rows)


def _figures():
    t = _table()
    rng = np.random.default_rng(0)
    test = t[t["split"] == "test"]
    cases = {
        "layer_curve": (figures.layer_curve(test, measure="probe_accuracy", title=LONG), 520, 420),
        "layer_curve_facets": (figures.layer_curve(t, measure="probe_accuracy", facet="split"), 520, 420),
        "layer_curve_facets_title": (figures.layer_curve(t, measure="probe_accuracy", facet="split", title=LONG),
                                     520, 420),
        "layer_heatmap": (figures.layer_heatmap(rng.random((5, 5)), title=LONG), 520, 420),
        "example_grid": (figures.example_grid(rng.random((8, 3, 12, 12)),
                                              [f"#{i} circle red" for i in range(8)]), 520, 260),
        "example_grid_two_rows_title": (figures.example_grid(rng.random((12, 12, 12)), [f"#{i}" for i in range(12)],
                                                             ncols=6, title="Examples in the lasso"), 700, 400),
        "saliency_grid": (figures.saliency_grid(rng.random((12, 12)), [rng.normal(size=(12, 12))] * 3,
                                                ["clean", "noise-30%", "random-init"], title=LONG), 520, 260),
    }
    return {name: fig.update_layout(width=w, height=h, autosize=False) for name, (fig, w, h) in cases.items()}


# boxes (client coordinates) of the toolbar, every piece of text, and the title's and panel titles'
BOXES_JS = """() => {
    const gd = document.querySelector('.js-plotly-plot');
    const box = e => { const r = e.getBoundingClientRect(); return {left: r.left, right: r.right, top: r.top,
                                                                  bottom: r.bottom, text: e.textContent}; };
    const texts = [...gd.querySelectorAll('.gtitle, .annotation-text, .legendtext, .g-xtitle text, .g-ytitle text, '
                                          + '.xtick text, .ytick text, .cbtitle text, .cbaxis text')]
        .map(box).filter(b => b.right > b.left);
    return {modebar: box(gd.querySelector('.modebar')), texts,
            title: [...gd.querySelectorAll('.gtitle')].map(box).filter(b => b.right > b.left),
            panels: [...gd.querySelectorAll('.annotation-text')].map(box)};
}"""


def _overlap(a: dict, b: dict) -> bool:
    return a["left"] < b["right"] and b["left"] < a["right"] and a["top"] < b["bottom"] and b["top"] < a["bottom"]


@pytest.fixture(scope="module")
def page():
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM))
        try:
            yield browser.new_page(viewport={"width": 900, "height": 700})
        finally:
            browser.close()


@pytest.mark.parametrize("name", list(_figures()))
def test_no_text_lies_under_the_plotly_toolbar(name: str, page, tmp_path: Path):
    fig = _figures()[name]
    html = tmp_path / f"{name}.html"
    html.write_text(pio.to_html(fig, include_plotlyjs=True, full_html=True), encoding="utf-8")
    page.goto(html.as_uri())
    page.wait_for_selector(".js-plotly-plot .main-svg")
    page.hover(".js-plotly-plot .nsewdrag")  # the pointer on the plot: plotly shows its toolbar
    page.wait_for_function("() => getComputedStyle(document.querySelector('.modebar')).opacity === '1'")
    boxes = page.evaluate(BOXES_JS)
    bar = boxes["modebar"]
    assert bar["bottom"] - bar["top"] > 10 and bar["right"] - bar["left"] > 20, f"no toolbar drawn: {bar}"
    under = [t["text"] for t in boxes["texts"] if _overlap(t, bar)]
    assert not under, f"{name}: under the toolbar ({bar}): {under}"
    clash = [(t["text"], p["text"]) for t in boxes["title"] for p in boxes["panels"] if _overlap(t, p)]
    assert not clash, f"{name}: the title runs into panel titles: {clash}"
    assert all(t["top"] >= 0 for t in boxes["texts"]), f"{name}: text cut at the top of the figure"


def test_exported_figures_keep_room_for_panel_titles_but_no_toolbar_band(tmp_path: Path):
    """In a paper export (points, no toolbar) the top margin holds the panel titles, not the screen's band."""
    from workbench.figures._style import MODEBAR_PX, get_style

    fig = figures.layer_curve(_table(), measure="probe_accuracy", facet="split")
    figures.export(fig, tmp_path / "facets.json")  # the spec only: no rendering needed
    spec = pio.from_json((tmp_path / "facets.json").read_text())
    top = spec.layout.margin.t
    panel_font = get_style()["paper"]["font_size"]
    assert 1.2 * panel_font <= top < MODEBAR_PX, f"paper top margin {top} pt"

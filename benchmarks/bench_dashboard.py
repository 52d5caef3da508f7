"""Dashboard responsiveness in a real browser: control change → redrawn figure, and memory over many updates.

JupyterLab runs on localhost (as in ``tests/test_browser.py``, whose helpers this reuses) and Chromium, driven by
Playwright, runs a notebook holding two views of the demo's results table (``workbench.demo.analyze`` of the quick
demo's runs, trained into a temporary store first and written to ``data/demo_results.csv`` next to the notebook):

- **FigureWidget** (ours): :class:`workbench.dashboards.LayerDashboard`, displayed as users display it (with its
  static copy for the saved notebook) — the ``measure`` dropdown updates one plotly ``FigureWidget`` in place (one
  update message with only the properties that change), then the widget's shared state and the static copy;
- **re-render** (peer): an ipywidgets dropdown whose callback draws a fresh ``go.Figure`` of the same selection
  with ``figures.layer_curve`` and shows it with ``IPython.display`` in an ``Output`` (``clear_output(wait=True)``),
  the usual way a notebook redraws a plotly figure.

For each, the measure dropdown is cycled through the measures (each change differs from the last). One change is
timed in the page: ``performance.now()`` when the ``<select>`` fires ``change``, until a ``MutationObserver`` on
the widget sees a plot whose trace ``clean`` holds the new measure's values (from the table, via pandas) and whose
y-axis title reads the new measure, with its line drawn — the figure as the user sees it after the kernel round
trip. 5 warm-up changes, then ``--changes`` timed changes (median, p95), then more untimed changes up to
``--updates`` in all; browser JS heap (CDP ``Performance.getMetrics`` after ``HeapProfiler.collectGarbage``),
DOM node count and the kernel's RSS (``/proc/<pid>/status``) before and after those updates.

    python benchmarks/bench_dashboard.py [--changes 50] [--updates 200] [--out benchmarks/results]

Needs /usr/bin/chromium and ``pip install playwright``. Results: ``benchmarks/results/dashboard.json``.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from test_browser import (CHROMIUM, JupyterLab, _rss_bytes, dropdown, error_outputs,  # noqa: E402
                          layer_series, open_and_run)

SPLIT = "test"  # every measure of the demo table has a test split; both views show it

SETUP = """
import pandas as pd, ipywidgets as W
from IPython.display import display, clear_output
from workbench import figures
from workbench.dashboards import LayerDashboard
frame = pd.read_csv("data/demo_results.csv")  # the results schema; step="latest": each run's final checkpoint
dash = LayerDashboard(frame, measure="probe_accuracy", split="test", baseline="random-init")
dash
"""
PEER = """
peer_w = W.Dropdown(options=list(dash.measure_w.options), value="probe_accuracy", description="peer")
peer_out = W.Output()
def peer_draw(change=None):
    sub = frame[(frame.measure == peer_w.value) & (frame.split == "test")]
    with peer_out:
        clear_output(wait=True)
        display(figures.layer_curve(sub, measure=peer_w.value, baseline="random-init"))
peer_w.observe(peer_draw, names="value")
peer_draw()
W.VBox([peer_w, peer_out])
"""

# set the <select> to `option`, then resolve with the ms until a plot in `root` shows `ys` for trace `name`
# under y title `title`, drawn
CHANGE_JS = """
([root, select, option, name, ys, title, timeoutMs]) => new Promise((resolve, reject) => {
    const close = (a, b) => a && a.length === b.length &&
        Array.from(a).every((v, i) => Math.abs(v - b[i]) <= 1e-9 * Math.max(1, Math.abs(b[i])));
    const done = () => [...root.querySelectorAll('.js-plotly-plot')].some(gd => {
        const t = (gd.data || []).find(t => t.name === name);
        const yt = gd.querySelector('.g-ytitle');
        return t && close(t.y, ys) && yt && yt.textContent === title &&
               gd.querySelector('.scatterlayer path.js-line') !== null;
    });
    let timer;
    const obs = new MutationObserver(() => {
        if (done()) { obs.disconnect(); clearTimeout(timer); resolve(performance.now() - t0); }
    });
    obs.observe(root, {subtree: true, childList: true, attributes: true, characterData: true});
    timer = setTimeout(() => { obs.disconnect(); reject(new Error('no redraw to ' + option)); }, timeoutMs);
    const idx = [...select.options].findIndex(o => o.textContent === option);
    if (idx < 0) { obs.disconnect(); clearTimeout(timer); reject(new Error('no option ' + option)); return; }
    const t0 = performance.now();
    select.selectedIndex = idx;
    select.dispatchEvent(new Event('change', {bubbles: true}));
})
"""


def _notebook(path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(SETUP.strip()), nbformat.v4.new_code_cell(PEER.strip())]
    nbformat.write(nb, path)


def _memory(cdp, lab: JupyterLab) -> dict[str, float]:
    cdp.send("HeapProfiler.collectGarbage")
    metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
    (kernel,) = lab.kernel_pids()
    return {"js_heap_mib": metrics["JSHeapUsedSize"] / 2**20, "dom_nodes": metrics["Nodes"],
            "kernel_rss_mib": _rss_bytes(kernel) / 2**20}


def _run_view(page, cdp, lab, root, select, measures, targets, n_timed: int, n_updates: int) -> dict:
    """Cycle ``select`` through ``measures``: 5 warm-up changes, ``n_timed`` timed, untimed up to ``n_updates``."""
    order = [m for m in measures if m != select.input_value()] + [select.input_value()]
    i = 0

    def change() -> float:
        nonlocal i
        m = order[i % len(order)]
        i += 1
        _xs, ys = targets[m]
        return page.evaluate(CHANGE_JS, [root, select.element_handle(), m, "clean", ys, m.replace("_", " "), 30_000])

    for _ in range(5):
        change()
    before = _memory(cdp, lab)
    t0 = time.perf_counter()
    lat = [change() for _ in range(n_timed)]
    for _ in range(n_updates - n_timed):
        change()
    wall = time.perf_counter() - t0
    after = _memory(cdp, lab)
    return {"latency_ms": {"median": statistics.median(lat), "p95": float(np.percentile(lat, 95)),
                           "min": min(lat), "max": max(lat), "n": len(lat)},
            "updates": n_updates, "wall_s_all_updates": wall, "memory_before": before, "memory_after": after,
            "growth": {k: after[k] - before[k] for k in before}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--changes", type=int, default=50, help="timed control changes per view")
    ap.add_argument("--updates", type=int, default=200, help="updates per view between the memory readings")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    if args.updates < args.changes:
        raise ValueError(f"--updates ({args.updates}) must be >= --changes ({args.changes})")
    if not CHROMIUM.exists():
        raise SystemExit(f"needs Chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    from workbench.demo import analyze, demo_configs
    from workbench.runs import RunStore

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        results = analyze(RunStore(root / "store"), demo_configs(quick=True))["results"]
        (root / "data").mkdir()
        results.to_csv(root / "data" / "demo_results.csv", index=False)
        results = pd.read_csv(root / "data" / "demo_results.csv")  # the values as the notebook reads them
        measures = list(pd.unique(results["measure"]))
        targets = {m: layer_series(results, m, "clean", SPLIT) for m in measures}
        _notebook(root / "bench.ipynb")
        with JupyterLab(root, env={"WORKBENCH_HOME": str(root / "store")}) as lab, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM))
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            cdp = page.context.new_cdp_session(page)
            cdp.send("Performance.enable")
            open_and_run(page, lab, "bench.ipynb")
            if error_outputs(page):
                raise RuntimeError(f"the benchmark notebook failed: {error_outputs(page)}")
            views = {}
            for name, label in (("figurewidget", "measure"), ("rerender", "peer")):
                select = dropdown(page, label)
                select.wait_for(timeout=60_000)
                widget = page.locator(".jupyter-widgets.widget-vbox", has=select).first
                widget.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
                widget.scroll_into_view_if_needed()
                views[name] = _run_view(page, cdp, lab, widget.element_handle(), select, measures, targets,
                                        args.changes, args.updates)
                print(f"{name:>12}: latency median {views[name]['latency_ms']['median']:.0f} ms, "
                      f"p95 {views[name]['latency_ms']['p95']:.0f} ms; over {args.updates} updates "
                      f"JS heap {views[name]['growth']['js_heap_mib']:+.1f} MiB, DOM nodes "
                      f"{views[name]['growth']['dom_nodes']:+.0f}, kernel RSS "
                      f"{views[name]['growth']['kernel_rss_mib']:+.1f} MiB")
            browser.close()
    ours, peer = views["figurewidget"], views["rerender"]
    ratios = {"latency_median_rerender_over_figurewidget": peer["latency_ms"]["median"] / ours["latency_ms"]["median"],
              "latency_p95_rerender_over_figurewidget": peer["latency_ms"]["p95"] / ours["latency_ms"]["p95"]}
    print(f"re-render / FigureWidget latency: median {ratios['latency_median_rerender_over_figurewidget']:.2f}x, "
          f"p95 {ratios['latency_p95_rerender_over_figurewidget']:.2f}x")
    import playwright

    out = {"benchmark": "dashboard", "machine": platform.machine(), "python": platform.python_version(),
           "chromium": str(CHROMIUM), "playwright": getattr(playwright, "__version__", "?"),
           "data": "workbench.demo.analyze (quick demo runs)", "split": SPLIT, "measures": measures,
           "views": views, "ratios": ratios}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    path = Path(args.out) / "dashboard.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

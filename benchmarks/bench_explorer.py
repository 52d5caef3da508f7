"""The embedding explorer at 10⁴, 10⁵, 10⁶ points in a real browser: plotly ``scattergl`` vs jupyter-scatter's WebGL
widget (issue 18), time to first render and time to a selection.

JupyterLab runs on localhost (``tests/test_browser.py``'s helper) and a headless Chromium (``/usr/bin/chromium``,
driven over the DevTools protocol: :class:`DevTools`) opens one notebook per (engine, N), each in a fresh browser with
a fresh kernel, and runs it (Run All). The notebook makes N Gaussian points in 4-D with three labels (untimed), then
one cell builds ``EmbeddingExplorer(acts, max_points=None, engine=E)`` (PCA of every point with
``figures.project``, the scatter coloured by label) and displays its widget:

- **first render**: from the kernel's clock at the start of that cell (printed by the cell) to the first screenshot
  of the plot area (composited: WebGL canvases included) that shows at least 1 000 coloured pixels (the palette's
  colours; axes, grid and text are grey) — the kernel's work, the transfer and the front end's drawing, as the user
  waits for it. Screenshots are taken back to back (their count is recorded); the time is when the first one with
  the points came back, so it includes up to one screenshot's duration;
- **selection**: a lasso drawn with the mouse over the middle of the plot (plotly: its lasso drag mode;
  jupyter-scatter: its toolbar's lasso button, then a drag), from the ``mouseup`` that closes it to the moment the
  explorer's linked text (``"<k> selected"``) shows — browser → kernel (``select_points``) → browser (the page's own
  clock).

One run per cell of the table (no repeats: each 10⁶ run takes minutes on this machine); a step that does not
finish within ``--bound`` seconds (default 120) is recorded as ``null`` with ``"timeout"``. Chromium has no GPU
here: WebGL runs on SwiftShader (software rendering on the CPU; the renderer string is recorded), so absolute
times are far above a laptop's with a GPU; the ratios are the point.

    python benchmarks/bench_explorer.py [--sizes 10000 100000 1000000] [--bound 120] [--out benchmarks/results]

Needs /usr/bin/chromium and ``pip install jupyter-scatter`` (``websocket-client`` comes with JupyterLab).
Results: ``benchmarks/results/explorer.json``.
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import nbformat
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from test_browser import CHROMIUM, JupyterLab  # noqa: E402

ENGINES = ("plotly", "webgl")

SETUP = """
import time, numpy as np, torch
from IPython.display import display
from workbench.activations import Activations
from workbench.dashboards import EmbeddingExplorer
N, ENGINE = {n}, {engine!r}
rng = np.random.default_rng(0)
labels = np.arange(N) % 3
layer = rng.normal(size=(N, 4)) + labels[:, None] * np.array([2.0, 1.0, 0.5, 0.0])
acts = Activations({{"l1": torch.tensor(layer, dtype=torch.float32)}}, labels=labels)
"""
TIMED = """
print(f"T0={time.time() * 1000:.0f}")
ex = EmbeddingExplorer(acts, max_points=None, engine=ENGINE)
assert ex.drawn_engine() == ENGINE
display(ex.widget)
"""

# sets window.__selResult to [ms from the mouseup to the linked text, k selected]; set up before the lasso is drawn
SELECTION_WATCH = """
(() => {
  window.__selT0 = null; window.__selResult = null;
  window.addEventListener('mouseup', () => { window.__selT0 = performance.now(); }, {capture: true, once: true});
  const out = [...document.querySelectorAll('.jp-OutputArea-output')]
    .filter(o => o.querySelector('.jupyter-widgets')).pop();
  const obs = new MutationObserver(() => {
    const m = /(\\d+) selected/.exec(out.innerText);
    if (m && window.__selT0 !== null && Number(m[1]) > 0) {
      window.__selResult = [performance.now() - window.__selT0, Number(m[1])]; obs.disconnect();
    }
  });
  obs.observe(out, {subtree: true, childList: true, characterData: true});
  return true;
})()
"""
# the drawing area of the explorer's plot: plotly's drag layer (what a lasso is drawn on) or jupyter-scatter's canvas
PLOT_RECT = """
(() => {
  const out = [...document.querySelectorAll('.jp-OutputArea-output')]
    .filter(o => o.querySelector('.jupyter-widgets')).pop();
  if (!out) return null;
  const area = out.querySelector(%r);
  if (!area) return null;
  area.scrollIntoView({block: 'center'});
  const r = area.getBoundingClientRect();
  return r.width > 20 && r.height > 20 ? {x: r.x, y: r.y, width: r.width, height: r.height} : null;
})()
"""
OUTPUT_TEXT = "[...document.querySelectorAll('.jp-OutputArea-output')].map(o => o.innerText).join('\\n')"
AREA = {"plotly": ".js-plotly-plot .nsewdrag", "webgl": "canvas"}
ALL_RAN = """[...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')]
             .every(p => /\\[\\d+\\]/.test(p.textContent))"""
INK_PIXELS = 1000  # first render: this many coloured (saturated) pixels in the plot area


class DevTools:
    """One headless Chromium with one page, driven over the DevTools protocol (CDP) with ``websocket-client``.

    Not Playwright: with the plotly engine at 10⁴ points Playwright's node driver died ("FATAL ERROR: Zone
    Allocation failed - process out of memory") 75-110 s into every run (Playwright 1.65, Chromium 150; it receives
    every websocket frame of the page through CDP's Network domain, and the FigureWidget's frames are megabytes).
    Here no CDP domain is enabled: the only messages are the answers to our own calls.
    """

    def __init__(self, profile: Path, width: int = 1400, height: int = 1100):
        self.profile, self.size = Path(profile), (width, height)
        self.proc, self.ws, self._id = None, None, 0

    def __enter__(self) -> DevTools:
        import websocket

        self.profile.mkdir(parents=True, exist_ok=True)
        port_file = self.profile / "DevToolsActivePort"
        port_file.unlink(missing_ok=True)
        cmd = [str(CHROMIUM), "--headless", "--remote-debugging-port=0", f"--user-data-dir={self.profile}",
               "--no-first-run", "--no-default-browser-check", "--disable-dev-shm-usage", "--hide-scrollbars",
               "--use-angle=swiftshader-webgl", "--enable-unsafe-swiftshader", "--disable-background-timer-throttling",
               "--disable-renderer-backgrounding", f"--window-size={self.size[0]},{self.size[1]}", "about:blank"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.insert(1, "--no-sandbox")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError("Chromium did not open its DevTools port")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            page = next(t for t in json.loads(r.read()) if t["type"] == "page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=600, suppress_origin=True,
                                              max_size=None)
        return self

    def call(self, method: str, **params) -> dict:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    def evaluate(self, expression: str):
        res = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"page error: {res['exceptionDetails'].get('text')} "
                               f"{res['exceptionDetails'].get('exception', {}).get('description', '')[:500]}")
        return res["result"].get("value")

    def wait(self, expression: str, timeout_s: float, poll_s: float = 0.25):
        """Evaluate ``expression`` every ``poll_s`` until it is truthy; return it (TimeoutError after ``timeout_s``)."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"not true within {timeout_s:.0f} s: {expression[:120]}")
            time.sleep(poll_s)

    def ink(self, rect: dict) -> int:
        """Coloured pixels in ``rect`` of the page as composited (a screenshot: WebGL canvases included): pixels whose
        largest and smallest RGB channels differ by more than 60, i.e. the palette's colours, not the grey of axes,
        grid, text or background."""
        from PIL import Image

        shot = self.call("Page.captureScreenshot", format="png",
                         clip={**{k: float(v) for k, v in rect.items()}, "scale": 1.0})
        rgb = np.asarray(Image.open(io.BytesIO(base64.b64decode(shot["data"]))).convert("RGB")).astype(np.int16)
        return int(((rgb.max(axis=2) - rgb.min(axis=2)) > 60).sum())

    def mouse(self, kind: str, x: float, y: float, pressed: bool = False) -> None:
        self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left" if kind != "mouseMoved" or pressed
                  else "none", buttons=1 if pressed or kind == "mousePressed" else 0, clickCount=1)

    def __exit__(self, *exc) -> None:
        if self.ws is not None:
            with contextlib.suppress(Exception):  # the browser may already be gone
                self.ws.close()
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)


def _notebook(path: Path, n: int, engine: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(SETUP.format(n=n, engine=engine).strip()),
                nbformat.v4.new_code_cell(TIMED.strip())]
    nbformat.write(nb, path)


def _lasso(tab: DevTools, engine: str) -> None:
    """Draw a lasso (a square over the middle third of the plot) with the mouse, as a user does: plotly's drag mode
    is the lasso already (``figures.embedding_scatter``); jupyter-scatter's lasso is its toolbar's lasso button,
    then a drag."""
    if engine == "webgl":
        tab.evaluate("""[...document.querySelectorAll('.jp-OutputArea-output .jupyter-widgets button')]
                        .filter(b => b.title === 'Activate lasso selection').pop().click()""")
        time.sleep(0.3)
    box = tab.evaluate(PLOT_RECT % AREA[engine])
    cx, cy, a, b = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, box["width"] / 6, box["height"] / 6
    corners = [(cx - a, cy - b), (cx + a, cy - b), (cx + a, cy + b), (cx - a, cy + b), (cx - a, cy - b + 2)]
    tab.mouse("mouseMoved", *corners[0])
    tab.mouse("mousePressed", *corners[0])
    for (x0, y0), (x1, y1) in zip(corners, corners[1:]):
        for k in range(1, 9):
            tab.mouse("mouseMoved", x0 + (x1 - x0) * k / 8, y0 + (y1 - y0) * k / 8, pressed=True)
    tab.mouse("mouseReleased", *corners[-1])


def _one(lab: JupyterLab, root: Path, n: int, engine: str, bound_s: float) -> dict:
    """One cell of the table in a fresh browser and a fresh kernel."""
    name = f"{engine}_{n}.ipynb"
    _notebook(root / name, n, engine)
    rec: dict = {"engine": engine, "n_points": n}
    t_wall = time.perf_counter()
    try:
        with DevTools(root / f".profile-{engine}-{n}") as tab:
            rec["webgl_renderer"] = tab.evaluate(RENDERER)
            tab.call("Page.navigate", url=lab.lab_url(name))
            tab.wait("!!document.querySelector('.jp-Notebook .jp-CodeCell') && !!window.jupyterapp", 240)
            lab.wait_kernel_connected(240)
            tab.wait("!!document.querySelector(\".jp-Notebook-ExecutionIndicator[data-status='idle']\")", 240)
            tab.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells'), true")
            # screenshots back to back from Run All on: the points can be drawn before the last prompt updates
            t0, ink, polls, deadline = None, 0, 0, time.monotonic() + bound_s + 300
            while time.monotonic() < deadline and (t0 is None or time.time() - t0 < bound_s):
                text = tab.evaluate(OUTPUT_TEXT)
                if re.search(r"Traceback|Error\b", text):
                    raise RuntimeError(f"{name} failed: {text[-2000:]}")
                if t0 is None and (m := re.search(r"T0=(\d+)", text)):
                    t0 = int(m.group(1)) / 1000
                rect = tab.evaluate(PLOT_RECT % AREA[engine]) if t0 is not None else None
                if rect:
                    ink = tab.ink(rect)
                    polls += 1
                    if ink >= INK_PIXELS:
                        rec.update(first_render_s=time.time() - t0, ink_pixels=ink, screenshots=polls)
                        break
                time.sleep(0.05)
            else:
                rec.update(first_render_s=None, first_render="timeout", bound_s=bound_s, ink_pixels=ink)
                return rec
            tab.wait(ALL_RAN, bound_s + 300, poll_s=0.5)
            time.sleep(0.5)
            tab.evaluate(SELECTION_WATCH)
            _lasso(tab, engine)
            try:
                got = tab.wait("window.__selResult", bound_s, poll_s=0.1)
                rec.update(selection_s=got[0] / 1000, n_selected=int(got[1]))
            except TimeoutError:
                rec.update(selection_s=None, selection="timeout", bound_s=bound_s)
            if os.environ.get("BENCH_SHOTS"):  # what the page showed at the end, for a person to look at
                shot = tab.call("Page.captureScreenshot", format="png")
                Path(os.environ["BENCH_SHOTS"], f"{engine}_{n}.png").write_bytes(base64.b64decode(shot["data"]))
    finally:
        rec["wall_s"] = time.perf_counter() - t_wall
        for k in lab.api("/api/kernels"):
            with contextlib.suppress(OSError):  # a kernel that already ended: nothing to stop
                lab.api(f"/api/kernels/{k['id']}", method="DELETE")
    return rec


RENDERER = """(() => { const gl = document.createElement('canvas').getContext('webgl');
    if (!gl) return 'no WebGL'; const d = gl.getExtension('WEBGL_debug_renderer_info');
    return d ? gl.getParameter(d.UNMASKED_RENDERER_WEBGL) : gl.getParameter(gl.RENDERER); })()"""


def _fmt(v: float | None) -> str:
    return "   timeout" if v is None else f"{v:9.2f}s"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--bound", type=float, default=120.0, help="seconds after which a step counts as not finished")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    if not CHROMIUM.exists():
        raise SystemExit(f"needs Chromium at {CHROMIUM} (apt-get install chromium)")
    import jscatter
    import plotly

    rows = []
    with tempfile.TemporaryDirectory() as tmp, \
            JupyterLab(Path(tmp), args=("--LabApp.expose_app_in_browser=True",)) as lab:
        for n in args.sizes:
            for engine in ENGINES:
                try:
                    rec = _one(lab, Path(tmp), n, engine, args.bound)
                except Exception as e:  # recorded, not hidden: the other cells of the table still run
                    rec = {"engine": engine, "n_points": n, "error": f"{type(e).__name__}: {str(e)[:300]}"}
                rows.append(rec)
                print(f"{engine:>7} n={n:>8}: first render {_fmt(rec.get('first_render_s'))}, "
                      f"selection {_fmt(rec.get('selection_s'))} ({rec.get('n_selected', '-')} selected)"
                      f"{'  ' + rec['error'] if 'error' in rec else ''}", flush=True)
    renderer = next((r["webgl_renderer"] for r in rows if r.get("webgl_renderer")), None)
    ratios = {}
    print("\n      N   render plotly/webgl   selection plotly/webgl")
    for n in args.sizes:
        pl, gl = (next(r for r in rows if r["engine"] == e and r["n_points"] == n) for e in ENGINES)
        rr = {}
        for key in ("first_render_s", "selection_s"):
            a, b = pl.get(key), gl.get(key)
            timed_out = pl.get(key.replace("_s", "")) == "timeout"
            rr[key] = (a / b) if a is not None and b else (f"> {args.bound / b:.1f}" if b and timed_out else None)
        ratios[str(n)] = rr
        show = [f"{v:.1f}x" if isinstance(v, float) else str(v) for v in rr.values()]
        print(f"{n:>8}   {show[0]:>20}   {show[1]:>22}")
    out = {"benchmark": "explorer", "rows": rows, "ratios_plotly_over_webgl": ratios,
           "machine": {"cpus": os.cpu_count(), "gpu": None, "platform": platform.platform(),
                       "python": platform.python_version(), "chromium": str(CHROMIUM), "webgl_renderer": renderer,
                       "note": "no GPU: Chromium renders WebGL in software (SwiftShader) on the same 2 cores as "
                               "the kernel and JupyterLab; one run per cell"},
           "versions": {"plotly": plotly.__version__, "jupyter-scatter": jscatter.__version__},
           "bound_s": args.bound, "data": "N x 4 Gaussian, 3 labels; EmbeddingExplorer(max_points=None), PCA, "
                                          "coloured by label"}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    path = Path(args.out) / "explorer.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

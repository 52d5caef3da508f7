"""Dashboards in a real browser, on the path a user takes: JupyterLab on localhost, Chromium driven by Playwright.

Each notebook of :data:`CASES` is opened in JupyterLab with its *default* settings (windowed notebook: cells off
screen are not laid out), run with *Run > Run All Cells*, and then, as a user would:

1. scroll to each dashboard: every plot the widget shows must hold exactly the figure the kernel holds (the
   dashboard's static copy, written into the notebook by the kernel, is that figure) and be drawn (non-empty
   SVG, legend inside its output area, no horizontal scrolling at the default width);
2. move one control: the plot must change and again equal the kernel's figure (for the layer dashboard also
   the values the results table holds, read with pandas);
3. in a ``combine(...)`` view, open every tab: each hidden-then-shown plot is drawn and right;
4. save and reload the page: the widget must come back showing the *current* figure under the current
   controls (it came back with the first view before);
5. shut the kernel down and reopen the notebook: with no live widget, the saved static copy of every
   dashboard figure must be visible and hold the data.

Screenshots of every dashboard after Run All, after the control change and after the reload go to a temporary
folder, or to ``$WORKBENCH_SCREENSHOTS`` (``WORKBENCH_SCREENSHOTS=assets/screenshots`` refreshes the README's).
The helpers (:class:`JupyterLab`, :func:`open_and_run`, ...) are reused by ``benchmarks/bench_dashboard.py``.

Needs ``/usr/bin/chromium`` and the ``playwright`` Python package (Playwright's own browser download is not
used); skipped cleanly without them.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import pytest
from _notebooks import check_export, output_text

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
CHROMIUM = Path("/usr/bin/chromium")
PLOT = ".js-plotly-plot"


# ------------------------------------------------------------------------------------------ JupyterLab
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_bytes(pid: int) -> int:
    """Resident set size of process ``pid`` from ``/proc/<pid>/status`` (VmRSS, kB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


class JupyterLab:
    """A JupyterLab server on a free localhost port with a random token, serving ``root``.

    Offline and isolated: no browser opened, no news or update fetching, read-only extension manager, user settings
    (:attr:`SETTINGS`),
    workspaces and runtime files in ``root/.jupyter-home`` (so nothing of the user's set-up leaks in and the
    kernels this server starts can be found by their connection files). ``env`` is added to the server's (and
    so the kernels') environment. Use as a context manager: the server, and every kernel it started, is shut
    down on exit, by REST, then SIGTERM, then SIGKILL.
    """

    def __init__(self, root: Path, env: dict[str, str] | None = None, start_timeout: float = 90.0,
                 windowing: str | None = None, args: tuple[str, ...] = ()):
        self.root = Path(root)
        self.port = free_port()
        self.token = uuid.uuid4().hex
        self.url = f"http://127.0.0.1:{self.port}"
        self.home = self.root / ".jupyter-home"
        self.start_timeout = start_timeout
        self.args = tuple(args)  # more command-line options for the server
        self.env = {**os.environ, **(env or {}),
                    "JUPYTER_CONFIG_DIR": str(self.home / "config"),
                    "JUPYTER_RUNTIME_DIR": str(self.home / "runtime"),
                    "JUPYTERLAB_SETTINGS_DIR": str(self.home / "settings"),
                    "JUPYTERLAB_WORKSPACES_DIR": str(self.home / "workspaces")}
        self.proc: subprocess.Popen | None = None
        self.log = self.home / "server.log"
        self.settings = {name: dict(values) for name, values in self.SETTINGS.items()}
        if windowing is not None:  # JupyterLab's default ("contentVisibility") when None: what users get
            self.settings["@jupyterlab/notebook-extension/tracker"]["windowingMode"] = windowing

    # user settings: start the notebook's kernel without asking, never fetch news
    SETTINGS = {
        "@jupyterlab/notebook-extension/tracker": {"autoStartDefaultKernel": True},
        "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    }

    def __enter__(self) -> JupyterLab:
        for name, values in self.settings.items():
            path = self.home / "settings" / f"{name}.jupyterlab-settings"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))
        cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.open_browser=False",
               f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0", "--ServerApp.ip=127.0.0.1",
               f"--ServerApp.token={self.token}", f"--ServerApp.root_dir={self.root}",
               "--LabApp.news_url=None", "--LabApp.extension_manager=readonly",
               "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", *self.args]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--ServerApp.allow_root=True")
        self._log = open(self.log, "wb")
        self.proc = subprocess.Popen(cmd, cwd=self.root, env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        try:
            self._wait_ready()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def api(self, path: str, method: str = "GET") -> Any:
        req = urllib.request.Request(f"{self.url}{path}", method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            body = r.read()
        return json.loads(body) if body else None

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                self.api("/api/status")
                return
            except OSError:
                time.sleep(0.3)
        raise TimeoutError(f"JupyterLab did not answer /api/status within {self.start_timeout:.0f} s:\n"
                           f"{self.log.read_text()[-3000:]}")

    def lab_url(self, notebook: str) -> str:
        return f"{self.url}/lab/tree/{notebook}?token={self.token}&reset"

    def wait_kernel_connected(self, timeout_s: float = 60.0) -> dict:
        """Wait until a kernel of this server has a client connected and is idle; return its REST model."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                kernels = self.api("/api/kernels")
            except urllib.error.HTTPError as err:
                # jupyter_server 2.x lists a kernel before its start sets ``last_activity``; a listing in that
                # window answers 500 (AttributeError in kernel_model). It is transient: ask again.
                if err.code < 500:
                    raise
                time.sleep(0.3)
                continue
            ready = [k for k in kernels if k.get("connections", 0) > 0 and k.get("execution_state") == "idle"]
            if ready:
                return ready[0]
            time.sleep(0.3)
        raise TimeoutError(f"no kernel connected and idle within {timeout_s:.0f} s: {self.api('/api/kernels')}")

    def kernel_pids(self) -> list[int]:
        """PIDs of the kernels this server started (their connection files live in our runtime dir)."""
        runtime = str(self.home / "runtime")
        pids = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(runtime.encode() in part for part in cmdline) and any(b"ipykernel" in p for p in cmdline):
                pids.append(int(proc.name))
        return pids

    def __exit__(self, *exc: Any) -> None:
        if self.proc is None:
            return
        kernels = self.kernel_pids()
        if self.proc.poll() is None:
            try:
                self.api("/api/shutdown", method="POST")  # stops the kernels, then the server
                self.proc.wait(timeout=15)
            except (OSError, subprocess.TimeoutExpired):
                pass
        for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
            if self.proc.poll() is None:
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    pass
                try:
                    self.proc.wait(timeout=wait)
                except subprocess.TimeoutExpired:
                    pass
        for pid in kernels:  # kernels run in sessions of their own: end any that outlived the server
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._log.close()
        self.proc = None


def copy_notebook(notebook: Path, root: Path) -> str:
    """Copy ``notebook`` and its sibling ``data/`` folder (if any) into ``root``; return the name to open."""
    shutil.copy2(notebook, root / notebook.name)
    if (notebook.parent / "data").is_dir():
        shutil.copytree(notebook.parent / "data", root / "data", dirs_exist_ok=True)
    return notebook.name


# ------------------------------------------------------------------------------------------ the page
def open_and_run(page: Any, lab: JupyterLab, notebook: str, timeout_s: float = 120.0) -> None:
    """Open ``notebook`` in JupyterLab, wait until its kernel is connected and idle, *Run > Run All Cells*, and
    wait until every code cell has an execution count (no ``[*]`` / ``[ ]`` prompt left)."""
    ms = timeout_s * 1000
    page.goto(lab.lab_url(notebook), wait_until="domcontentloaded", timeout=ms)
    page.wait_for_selector(".jp-Notebook .jp-CodeCell", timeout=ms)
    lab.wait_kernel_connected(timeout_s)
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=ms)
    started = """() => [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')]
                        .some(p => /\\[(\\*|\\d+)\\]/.test(p.textContent))"""
    for attempt in range(3):  # a click that lands while the front end re-opens its kernel socket can be lost
        page.locator("#jp-MainMenu .lm-MenuBar-item", has_text=re.compile(r"^Run$")).click()
        page.locator(".lm-Menu-item", has=page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$"))
                     ).click()
        try:
            page.wait_for_function(started, timeout=15_000)
            break
        except Exception:
            if attempt == 2:
                raise
    # done when every cell ran, or as soon as one shows an error (Run All stops there: waiting on would only
    # run into the hang guard; the caller's error_outputs check then fails with the traceback)
    page.wait_for_function(
        """() => {
            const prompts = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')];
            const failed = [...document.querySelectorAll(
                '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')]
                .some(o => /Traceback \\(most recent call last\\)|^\\w*Error\\b/m.test(o.textContent));
            return failed || (prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p.textContent)));
        }""", timeout=ms)


def error_outputs(page: Any) -> list[str]:
    """Texts of error outputs (IPython tracebacks) on the page."""
    texts = page.locator(".jp-OutputArea-output").all_inner_texts()
    return [t for t in texts if re.search(r"Traceback \(most recent call last\)|^\w*Error\b", t, re.M)]


def dropdown(page: Any, label: str) -> Any:
    """The first ``<select>`` (in page order) of an ipywidgets Dropdown whose description is ``label`` (a
    dashboard shown again inside ``combine(...)`` tabs repeats its controls further down)."""
    box = page.locator(".widget-dropdown", has=page.locator("label", has_text=re.compile(f"^{re.escape(label)}$")))
    return box.locator("select").first


def plot_traces(plot: Any) -> list[dict]:
    """Name, x and y of every trace plotly holds for the drawn figure (``gd.data``)."""
    return plot.evaluate("""gd => gd.data.map(t => ({name: t.name ?? null,
        x: Array.from(t.x ?? [], String), y: Array.from(t.y ?? [], Number)}))""")


def plot_svg_paths(plot: Any) -> list[str]:
    """The ``d`` attributes of the drawn line paths: what is on screen, not what plotly was told."""
    return plot.evaluate("gd => [...gd.querySelectorAll('.scatterlayer path.js-line')].map(p => p.getAttribute('d'))")


def assert_legend_visible(plot: Any) -> None:
    """Every legend entry of ``plot`` lies inside the notebook output area that shows it (an output area clips
    what overflows it: a plot wider than its box loses the right edge of its legend)."""
    entries = plot.locator(".legend .traces")
    area = plot.evaluate("""gd => { const r = gd.closest('.jp-OutputArea-output').getBoundingClientRect();
                                    return {x: r.x, width: r.width}; }""")
    for i in range(entries.count()):
        box = entries.nth(i).bounding_box()
        assert box is not None
        assert area["x"] - 1 <= box["x"] and box["x"] + box["width"] <= area["x"] + area["width"] + 1, \
            f"legend entry {i} ({box}) is cut by its output area ({area})"


# ------------------------------------------------------------------------------------------ what the page holds
# The truth is the kernel's figure, as the notebook file keeps it: after its widget, each dashboard writes a marker
# (a ``wb-snapshot-*`` div) and a static copy of each of its figures, updated on every change
# (workbench.dashboards.Snapshot). Saved, the file holds the kernel's figures at that moment; the page's plots are
# compared with them. (On the page the copies are hidden while the widget lives, and JupyterLab's plotly renderer
# does not redraw an existing graph when its output is updated, so the file, not the page, is read.)
# Figures are compared as their traces' (type, name, x, y, z) in JS, numbers to 9 significant digits (typed arrays,
# nested lists and plotly's base64 arrays all become flat arrays).
CELL_FIGURES_JS = """
(cell, saved) => {
    const DTYPES = {f8: Float64Array, f4: Float32Array, i4: Int32Array, i2: Int16Array, i1: Int8Array,
                    u4: Uint32Array, u2: Uint16Array, u1: Uint8Array};
    const decode = (a) => {  // plotly's JSON form of a numpy array: {dtype, bdata (base64), shape}
        const bytes = Uint8Array.from(atob(a.bdata), c => c.charCodeAt(0));
        return new DTYPES[a.dtype](bytes.buffer);
    };
    const flat = (v) => {
        if (v === undefined || v === null) return null;
        const out = [];
        const walk = (a) => {
            if (a === null || a === undefined) out.push(null);
            else if (typeof a === 'number') out.push(Number.isFinite(a) ? Number(a.toPrecision(9)) : String(a));
            else if (typeof a === 'string' || typeof a === 'boolean') out.push(a);
            else if (ArrayBuffer.isView(a) || Array.isArray(a)) { for (const b of a) walk(b); }
            else if (a.bdata !== undefined && a.dtype) walk(decode(a));
            else out.push(String(a));
        };
        walk(v);
        return out;
    };
    const fig = data => JSON.stringify((data || []).map(t => ({type: t.type || 'scatter', name: t.name ?? null,
                                                                x: flat(t.x), y: flat(t.y), z: flat(t.z)})));
    const visible = el => el.offsetParent !== null && el.getBoundingClientRect().width > 0;
    const copies = [];
    for (const marker of cell.querySelectorAll('div[class^="wb-snapshot-"]')) {
        let child = marker.closest('.jp-OutputArea-child');
        while (child && (child = child.nextElementSibling)) {
            const gd = child.querySelector('.js-plotly-plot');
            if (!gd || gd.closest('.jupyter-widgets')) break;
            copies.push({visible: visible(gd), fig: fig(gd.data), n: (gd.data || []).length});
        }
    }
    const plots = [...cell.querySelectorAll('.jupyter-widgets .js-plotly-plot')].map(gd => ({
        visible: visible(gd), fig: fig(gd.data), n: (gd.data || []).length,
        drawn: gd.querySelectorAll('.scatterlayer .trace, .barlayer .trace, .heatmaplayer .hm, .imagelayer image, '
                                    + '.gl-container canvas').length}));
    const areas = [...cell.querySelectorAll('.jp-OutputArea-output')].filter(a => a.querySelector('.jupyter-widgets'));
    // wider than the output area: scrolled or clipped (anything reaching past the area's or the notebook's edge;
    // ipywidgets boxes scroll their overflow, so a wide child means a scrollbar inside the dashboard)
    const overflow = areas.map(a => a.scrollWidth - a.clientWidth).filter(d => d > 1);
    const panel = cell.closest('.jp-WindowedPanel-outer') || cell;
    for (const a of areas) {
        const right = Math.min(a.getBoundingClientRect().right, panel.getBoundingClientRect().right) + 1;
        const wide = [...a.querySelectorAll('.jupyter-widgets *')].find(el => {
            const r = el.getBoundingClientRect();
            return r.width > 0 && r.right > right;
        });
        if (wide) overflow.push(Math.round(wide.getBoundingClientRect().right - right));
    }
    const errors = [...cell.querySelectorAll('.jp-OutputArea-output')].map(a => a.innerText)
        .filter(t => /Error displaying widget|Traceback/.test(t));
    return {saved: saved.map(f => ({fig: fig(f.data), n: (f.data || []).length})), copies, plots, overflow, errors};
}
"""


# scroll the open notebook to ``top`` (a number) or one screen further (null); false once at the bottom
SCROLL_JS = """
(top) => {
    const outer = [...document.querySelectorAll('.jp-NotebookPanel .jp-WindowedPanel-outer')]
        .find(o => o.offsetParent !== null);
    if (top !== null) { outer.scrollTop = top; return true; }
    const before = outer.scrollTop;
    outer.scrollTop = before + 0.7 * outer.clientHeight;
    return outer.scrollTop > before;
}
"""


def saved_figures(notebook: str | Path) -> dict[int, list[dict]]:
    """Per cell index: the static copies of dashboard figures a saved notebook (its text or its path) holds."""
    nb = json.loads(notebook.read_text() if isinstance(notebook, Path) else notebook)
    out: dict[int, list[dict]] = {}
    for index, cell in enumerate(nb["cells"]):
        figs, after_marker = [], False
        for o in cell.get("outputs", []):
            data = o.get("data", {})
            if 'class="wb-snapshot-' in "".join(data.get("text/html", "")):
                after_marker = True
            elif after_marker and "application/vnd.plotly.v1+json" in data:
                figs.append(data["application/vnd.plotly.v1+json"])
            else:
                after_marker = False
        if figs:
            out[index] = figs
    return out


# After a page reload JupyterLab's widget manager sometimes gives up on a widget it restores from the live kernel
# ("Error displaying widget: model not found"; jupyter-widgets/ipywidgets#3231 and kin; seen here on the outputs at
# the top of notebook 08, plain ipywidgets sliders included). The reader must then see the static copy instead.
MODEL_NOT_FOUND = "Error displaying widget: model not found"


def cell_problems(state: dict, *, live: bool = True, reloaded: bool = False) -> list[str]:
    """What is wrong with one dashboard cell (empty: nothing). ``live``: the kernel holds the widgets, so every
    plot shown must draw one of the kernel's figures (as saved), and the static copies are hidden; otherwise —
    or, after a reload, where JupyterLab could not restore the widget — the copies must be visible and equal
    the saved figures."""
    saved, copies, plots = state["saved"], state["copies"], state["plots"]
    problems = [] if saved else ["the saved notebook holds no static copy of the dashboard figure"]
    if not live or (reloaded and any(MODEL_NOT_FOUND in e for e in state["errors"])):
        problems += [f"static copy {i} is hidden or empty" for i, c in enumerate(copies)
                     if not c["visible"] or not c["n"]]
        if [c["fig"] for c in copies] != [s["fig"] for s in saved]:
            problems.append("the static copies shown differ from the saved figures")
        return problems
    problems += [f"static copy {i} is visible next to the live widget" for i, c in enumerate(copies) if c["visible"]]
    problems += state["errors"]
    shown = [p for p in plots if p["visible"]]
    if not shown:
        problems.append("the widget shows no plot")
    figs = {p["fig"] for p in plots}
    problems += [f"no plot of the widget draws the kernel's figure {i} ({s['n']} traces; the plots hold "
                 f"{[p['n'] for p in plots]})" for i, s in enumerate(saved) if s["fig"] not in figs]
    for i, p in enumerate(shown):
        if p["n"] and not p["drawn"]:
            problems.append(f"plot {i} holds {p['n']} traces but drew nothing")
        if p["n"] and p["fig"] not in {s["fig"] for s in saved}:
            problems.append(f"plot {i} shows a figure the kernel does not hold (stale or foreign data)")
    if state["overflow"]:
        problems.append(f"the dashboard is wider than its output area by {state['overflow']} px (scrolled or cut)")
    return problems


class Notebook:
    """The notebook open in ``page``, saved to ``path`` on demand."""

    def __init__(self, page: Any, path: Path, timeout_s: float):
        self.page, self.path, self.timeout_s = page, path, timeout_s

    def save(self) -> dict[int, list[dict]]:
        """Save (toolbar button, as a user would) and return the static copies the file now holds."""
        clicked = time.time()
        self.page.locator('.jp-NotebookPanel-toolbar [data-command="docmanager:save"]').first.click()
        self.page.wait_for_function("() => !document.querySelector('.lm-TabBar-tab.jp-mod-current.jp-mod-dirty')",
                                    timeout=self.timeout_s * 1000)
        # the server writes the file in place (truncate, write): read it once this save has landed and it parses
        deadline, last = time.monotonic() + 60, None
        while True:
            try:
                if self.path.stat().st_mtime >= clicked - 1:
                    text = self.path.read_text()
                    if text == last:
                        return saved_figures(text)
                    last = text if text.strip() else None
            except (OSError, ValueError):
                last = None
            if time.monotonic() > deadline:
                pytest.fail(f"{self.path.name} was not saved within 60 s of pressing save")
            self.page.wait_for_timeout(200)

    def cell(self, index: int) -> Any:
        """Code cell ``index``, scrolled into view. In JupyterLab's "full" windowing a cell off screen is not in the
        page at all: scroll down from the top, as a reader does, until it is."""
        cell = self.page.locator(f'.jp-Notebook .jp-Cell[data-windowed-list-index="{index}"]')
        self.page.evaluate(SCROLL_JS, 0)
        deadline = time.monotonic() + 120
        while cell.count() == 0:
            if not self.page.evaluate(SCROLL_JS, None) and time.monotonic() > deadline:
                pytest.fail(f"cell {index} never appeared while scrolling through the notebook")
            self.page.wait_for_timeout(100)
        cell.scroll_into_view_if_needed()
        return cell

    def check_cell(self, cell: Any, saved: dict[int, list[dict]], *, live: bool = True, reloaded: bool = False,
                   changed_from: list | None = None, timeout_s: float = 60.0) -> dict:
        """Poll until ``cell`` shows no problem against the saved figures (and, with ``changed_from``, its plots
        differ from those); return its state, or fail with the problems still seen at the deadline."""
        index = int(cell.get_attribute("data-windowed-list-index"))
        deadline = time.monotonic() + timeout_s
        while True:
            state = cell.evaluate(CELL_FIGURES_JS, saved.get(index, []))
            problems = cell_problems(state, live=live, reloaded=reloaded)
            if changed_from is not None and [p["fig"] for p in state["plots"]] == changed_from:
                problems.append("the plot did not change after the control moved")
            if not problems:
                return state
            if time.monotonic() > deadline:
                pytest.fail(f"cell {index}: " + "; ".join(problems))
            self.page.wait_for_timeout(250)

    def walk(self, shots: Path, tag: str, *, live: bool = True, reloaded: bool = False) -> int:
        """Save (when live), then scroll to each dashboard cell of the saved notebook in turn, check it against
        the saved figures and screenshot it; return how many there were."""
        saved = self.save() if live else saved_figures(self.path)
        for i, index in enumerate(sorted(saved)):
            cell = self.cell(index)
            state = self.check_cell(cell, saved, live=live, reloaded=reloaded)
            if reloaded and any(MODEL_NOT_FOUND in e for e in state["errors"]):
                print(f"{self.path.name}: cell {index}: JupyterLab did not restore the widget; the static copy shows")
            elif live:
                for plot in cell.locator(f".jupyter-widgets {PLOT}").all():
                    if plot.is_visible():
                        assert_legend_visible(plot)
            screenshot(self.page, cell, shots / f"{tag}_{i}.png")
        return len(saved)


def screenshot(page: Any, cell: Any, path: Path) -> None:
    """A screenshot of the cell's outputs, whole: the window grows to fit a tall dashboard, then shrinks back."""
    outputs = cell.locator(".jp-Cell-outputWrapper")
    size = page.viewport_size
    height = int(outputs.bounding_box()["height"]) + 200
    if height > size["height"]:
        page.set_viewport_size({"width": size["width"], "height": height})
    try:
        outputs.scroll_into_view_if_needed()
        outputs.screenshot(path=str(path))
    finally:
        page.set_viewport_size(size)


def pick_option(select: Any, option: str | None) -> str:
    """Select ``option`` (a label) or, when None, the first option other than the current one; return its label."""
    if option is None:
        option = select.evaluate("s => [...s.options].find(o => !o.selected).textContent")
    select.select_option(label=option)
    return option


# ------------------------------------------------------------------------------------------ the cases
def layer_series(results: pd.DataFrame, measure: str, run: str, split: str | None) -> tuple[list[str], list[float]]:
    """Layers (forward order) and values of one run for one measure/split, straight from the tidy table."""
    sub = results[(results["measure"] == measure) & (results["run"] == run)]
    if split is not None:
        sub = sub[sub["split"] == split]
    sub = sub.sort_values("layer_index")
    return sub["layer"].astype(str).tolist(), sub["value"].astype(float).tolist()


def _layer_dashboard_expected(store: str) -> dict[str, tuple[list[str], list[float]]]:
    """Notebook 05's table computed here, as the notebook computes it (the demo's analysis of the demo's runs in the
    same store): each run's RankMe per layer, the values its trace must carry."""
    from workbench.demo import analyze, demo_configs
    from workbench.runs import RunStore

    results = analyze(RunStore(store), demo_configs(quick=True))["results"]
    return {run: layer_series(results, "rankme", run, None) for run in ("clean", "noise-30%", "random-init")}


@dataclass(frozen=True)
class NotebookCase:
    """A notebook with dashboards and the control a user moves in it.

    control:  description of the Dropdown to move (the first one in page order); option: the label to pick
              (None: the first option other than the current one).
    expected: given the run store, traces (name → (x, y)) the plot must show after the change, computed
              independently of the dashboard (from the results table with pandas); None: the kernel's figure.
    windowing: JupyterLab's notebook windowing mode (None: its default, what users get).
    width:    the browser window's width in pixels (1280: a laptop; the file browser stays open).
    """

    notebook: str
    control: str
    option: str | None = None
    expected: Callable[[Path], dict[str, tuple[list[str], list[float]]]] | None = None
    windowing: str | None = None
    width: int = 1280

    @property
    def id(self) -> str:
        return self.notebook + (f"-{self.windowing}" if self.windowing else "") + \
            (f"-{self.width}px" if self.width != 1280 else "")


CASES = [
    NotebookCase("01_quickstart.ipynb", control="measure", option="rankme"),
    # windowing "full": cells off screen are detached from the page, so a dashboard is drawn while detached; in a
    # narrow window the plot must wrap under the controls instead of scrolling
    NotebookCase("02_probing.ipynb", control="measure", windowing="full", width=960),
    NotebookCase("05_layer_dashboard.ipynb", control="measure", option="rankme", expected=_layer_dashboard_expected),
    NotebookCase("06_pretraining_lab.ipynb", control="measure"),
    NotebookCase("07_saliency.ipynb", control="method"),
    NotebookCase("08_dashboards.ipynb", control="split", option="ood"),
]


# ------------------------------------------------------------------------------------------ the test
def browser_available() -> bool:
    """Chromium and Playwright are installed: the browser test runs (test_notebooks.py then leaves it the
    notebooks it opens)."""
    import importlib.util

    return CHROMIUM.exists() and importlib.util.find_spec("playwright") is not None


def _playwright():
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    return pytest.importorskip("playwright.sync_api", reason="pip install playwright")


def _traces_by_name(traces: list[dict]) -> dict[str, tuple[list[str], list[float]]]:
    return {t["name"]: (t["x"], t["y"]) for t in traces if t["name"] and not t["name"].endswith(" CI")}


@pytest.fixture(scope="module")
def run_store(demo_store) -> str:
    """The run store the notebooks read (conftest's ``demo_store``: CI's ``WORKBENCH_HOME`` or one per session),
    with the demo's quick runs trained here first. Run All then reuses them, so the browser waits for analysis and
    drawing, not for training, whose duration depends on the machine's load (on a busy 2-core machine a notebook
    that trained its runs inside JupyterLab once took longer than the hang guard below)."""
    from workbench.demo import demo_configs
    from workbench.runs import RunStore
    from workbench.train import train

    root = str(demo_store)
    store = RunStore(root)
    for name, cfg in demo_configs(quick=True).items():
        train(cfg, store, name=name, progress=False)
    return root


def _check_expected(cell: Any, want: dict[str, tuple[list[str], list[float]]] | None, option: str) -> None:
    """Each of ``want``'s traces (computed in this process) is drawn in the cell's first plot with its values."""
    if want is None:
        return
    got = _traces_by_name(plot_traces(cell.locator(f".jupyter-widgets {PLOT}").first))
    assert set(want) <= set(got), f"after picking {option!r}: traces {sorted(got)}"
    for name, (x, y) in want.items():
        assert got[name][0] == x, f"after picking {option!r}: {name} layers {got[name][0]}"
        np.testing.assert_allclose(got[name][1], y, rtol=1e-6, err_msg=f"{name} after {option!r}")


def wait_plots_equal(page: Any, cell: Any, want: list[str], what: str, *, timeout_s: float = 60.0) -> None:
    """Poll until the cell's visible live plots hold ``want`` (figures as ``CELL_FIGURES_JS`` writes them), each
    drawn, with no widget error. The end state, not the first change: a figure whose traces change kind is cleared
    before the new ones arrive, and that empty moment is a change. At the deadline, fail with ``what`` and the
    last state (a plot that stayed on its old figure, or shows one the kernel did not draw for that choice)."""
    deadline = time.monotonic() + timeout_s
    while True:
        state = cell.evaluate(CELL_FIGURES_JS, [])
        shown = [p for p in state["plots"] if p["visible"]]
        drawn = shown and all(p["drawn"] or not p["n"] for p in shown)
        if [p["fig"] for p in shown] == want and drawn and not state["errors"]:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: the plot did not come to the kernel's figure within {timeout_s:.0f} s "
                        f"(errors: {state['errors']}; plots (visible, traces, drawn): "
                        f"{[(p['visible'], p['n'], p['drawn']) for p in state['plots']]})")
        page.wait_for_timeout(250)


# Every page runs as on a slow machine where a widget's front-end module takes 3 s to load: a JavaScript module
# over 1 MB made from a Blob (how anywidget loads a widget's module; plotly's is 5 MB) waits 3 s before it runs.
# anywidget gives a model 2 s to load its module and afterwards drops every message the kernel sends it, so a
# plotly FigureWidget then kept its first figure whatever the controls said (workbench's LiveFigure defers that
# import; on this 2-core machine it happened without the delay in 5 of 12 reloads of notebook 06).
SLOW_MODULES_JS = """(() => {
  const Blob0 = window.Blob;
  window.Blob = class extends Blob0 {
    constructor(parts, options) {
      if (options && options.type === "text/javascript" && parts && parts.length === 1
          && typeof parts[0] === "string" && parts[0].length > 1e6) {
        parts = ["await new Promise((resolve) => setTimeout(resolve, 3000));\\n" + parts[0]];
      }
      super(parts, options);
    }
  };
})();"""


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.timeout(2700)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_dashboards_on_the_users_path(case: NotebookCase, tmp_path: Path, run_store: str):
    sync_api = _playwright()
    t0 = time.perf_counter()
    laps: dict[str, float] = {}  # seconds per step, printed at the end (where a case spends its time)

    def lap(step: str) -> None:
        laps[step] = time.perf_counter() - t0 - sum(laps.values())
    root = tmp_path / "lab"
    root.mkdir()
    name = copy_notebook(NOTEBOOKS / case.notebook, root)
    shots = Path(os.environ.get("WORKBENCH_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    stem = Path(case.id).stem.replace(".ipynb", "")
    timeout_s = 1200.0  # a hang guard only: the demo runs are trained (run_store); 06 trains its small study
    with JupyterLab(root, env={"WORKBENCH_HOME": run_store, "WORKBENCH_QUICK": "1"}, windowing=case.windowing) as lab, \
            sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM))
        try:
            page = browser.new_page(viewport={"width": case.width, "height": 800})
            page.add_init_script(SLOW_MODULES_JS)
            lap("start")
            open_and_run(page, lab, name, timeout_s=timeout_s)
            assert not error_outputs(page), error_outputs(page)
            lap("run all")

            nb = Notebook(page, root / name, timeout_s)

            # 1. scroll to every dashboard: each draws the kernel's figure
            n = nb.walk(shots, f"{stem}_run_all")
            assert n >= 1
            # it ends with the export of a paper figure (test_notebooks.py's check, on the notebook as saved)
            import nbformat

            last = [c for c in nbformat.read(root / name, as_version=4).cells if c.cell_type == "code"][-1]
            check_export("".join(output_text(o) for o in last.get("outputs", [])), root)
            lap("walk")

            # 2. move a control: the plot changes and equals the kernel's new figure (and the table's values)
            control = dropdown(page, case.control)
            cell = page.locator(".jp-Notebook .jp-CodeCell", has=control).first
            cell.scroll_into_view_if_needed()
            state = nb.check_cell(cell, nb.save())
            before = [p["fig"] for p in state["plots"]]
            before_shown = [p["fig"] for p in state["plots"] if p["visible"]]
            first = control.evaluate("s => s.options[s.selectedIndex].textContent")
            option = pick_option(control, case.option)
            page.wait_for_function("() => document.querySelector('.lm-TabBar-tab.jp-mod-current.jp-mod-dirty')",
                                   timeout=60_000)  # the kernel updated the static copy
            state = nb.check_cell(cell, nb.save(), changed_from=before)
            after_shown = [p["fig"] for p in state["plots"] if p["visible"]]
            want = case.expected(run_store) if case.expected is not None else None
            _check_expected(cell, want, option)
            screenshot(page, cell, shots / f"{stem}_{case.control}.png")

            lap("control")
            # 3. every tab of a combine(...) view: shown after being hidden, drawn and right
            saved = nb.save()
            for tab_bar in page.locator(".jupyter-widgets .lm-TabBar").all():
                tab_cell = page.locator(".jp-Notebook .jp-CodeCell", has=tab_bar).first
                for k, tab in enumerate(tab_bar.locator(".lm-TabBar-tab").all()):
                    tab.scroll_into_view_if_needed()
                    tab.click()
                    nb.check_cell(tab_cell, saved)
                    screenshot(page, tab_cell, shots / f"{stem}_tab{k}.png")

            lap("tabs")
            # 4. reload: every dashboard comes back with the current figure under the current controls
            page.reload(wait_until="domcontentloaded")
            page.wait_for_selector(".jp-Notebook .jp-CodeCell", timeout=timeout_s * 1000)
            lab.wait_kernel_connected(timeout_s)
            nb.walk(shots, f"{stem}_reloaded", reloaded=True)
            control = dropdown(page, case.control)
            if control.count():  # (absent only where JupyterLab could not restore the widget)
                assert control.evaluate("s => s.options[s.selectedIndex].textContent") == option
                # the restored controls still drive the kernel: move away and back; the plot follows each move
                # and comes back to the very figure the kernel drew for that choice before the reload
                cell = page.locator(".jp-Notebook .jp-CodeCell", has=control).first
                cell.scroll_into_view_if_needed()
                pick_option(control, first)
                wait_plots_equal(page, cell, before_shown, f"after the reload, picking {first!r}")
                pick_option(control, option)
                wait_plots_equal(page, cell, after_shown, f"after the reload, picking {option!r} again")
                _check_expected(cell, want, option)
                screenshot(page, cell, shots / f"{stem}_reloaded_{case.control}.png")

            lap("reload")
            # 5. no kernel (a fresh one has no widget models): the saved static copies are what the reader sees
            for session in lab.api("/api/sessions"):
                lab.api(f"/api/sessions/{session['id']}", method="DELETE")
            page.reload(wait_until="domcontentloaded")
            page.wait_for_selector(".jp-Notebook .jp-CodeCell", timeout=timeout_s * 1000)
            assert nb.walk(shots, f"{stem}_no_kernel", live=False) == n
            lap("no kernel")
        finally:
            browser.close()
    pids = lab.kernel_pids()
    assert not pids, f"kernels outlived the server: {pids}"
    lap("shutdown")
    print(f"{case.id}: {time.perf_counter() - t0:.1f} s in the browser ("
          + ", ".join(f"{step} {seconds:.0f} s" for step, seconds in laps.items()) + ")")

"""Dashboards in a real browser: JupyterLab on localhost, driven by Chromium through Python Playwright.

For every entry of :data:`DASHBOARDS` the test copies the notebook (and its ``data/`` folder) into a temporary
JupyterLab root, opens it in Chromium, runs all cells from the *Run* menu, checks that the plotly plot and the
ipywidgets controls rendered, moves one dropdown to another option as a user would, and checks that the drawn
figure changed to the values the results table holds for that option (read from the table with pandas, not
from the dashboard). Screenshots go to ``assets/screenshots/`` (shown by the README).

Adding a dashboard is one more :class:`DashboardCase`. The helpers (:class:`JupyterLab`, :func:`open_and_run`,
:func:`plot_traces`, ...) are reused by ``benchmarks/bench_dashboard.py``.

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

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
SCREENSHOTS = ROOT / "assets" / "screenshots"
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

    def __init__(self, root: Path, env: dict[str, str] | None = None, start_timeout: float = 90.0):
        self.root = Path(root)
        self.port = free_port()
        self.token = uuid.uuid4().hex
        self.url = f"http://127.0.0.1:{self.port}"
        self.home = self.root / ".jupyter-home"
        self.start_timeout = start_timeout
        self.env = {**os.environ, **(env or {}),
                    "JUPYTER_CONFIG_DIR": str(self.home / "config"),
                    "JUPYTER_RUNTIME_DIR": str(self.home / "runtime"),
                    "JUPYTERLAB_SETTINGS_DIR": str(self.home / "settings"),
                    "JUPYTERLAB_WORKSPACES_DIR": str(self.home / "workspaces")}
        self.proc: subprocess.Popen | None = None
        self.log = self.home / "server.log"

    # user settings: start the notebook's kernel without asking, never fetch news, attach every cell to the DOM
    SETTINGS = {
        "@jupyterlab/notebook-extension/tracker": {"autoStartDefaultKernel": True, "windowingMode": "none"},
        "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    }

    def __enter__(self) -> "JupyterLab":
        for name, values in self.SETTINGS.items():
            path = self.home / "settings" / f"{name}.jupyterlab-settings"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))
        cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.open_browser=False",
               f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0", "--ServerApp.ip=127.0.0.1",
               f"--ServerApp.token={self.token}", f"--ServerApp.root_dir={self.root}",
               "--LabApp.news_url=None", "--LabApp.extension_manager=readonly",
               "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--ServerApp.allow_root=True")
        self._log = open(self.log, "wb")  # noqa: SIM115 — closed in __exit__
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
        except Exception:  # noqa: BLE001 — playwright's TimeoutError; try again
            if attempt == 2:
                raise
    page.wait_for_function(
        """() => {
            const prompts = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')];
            return prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p.textContent));
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


# ------------------------------------------------------------------------------------------ the cases
def layer_series(results: pd.DataFrame, measure: str, run: str, split: str | None) -> tuple[list[str], list[float]]:
    """Layers (forward order) and values of one run for one measure/split, straight from the tidy table."""
    sub = results[(results["measure"] == measure) & (results["run"] == run)]
    if split is not None:
        sub = sub[sub["split"] == split]
    sub = sub.sort_values("layer_index")
    return sub["layer"].astype(str).tolist(), sub["value"].astype(float).tolist()


@dataclass(frozen=True)
class DashboardCase:
    """A dashboard notebook and one user action on it.

    notebook:  file under ``notebooks/``; its first rendered plotly plot next to the controls is the dashboard's.
    control:   description of the Dropdown to move; option: the option label to pick.
    expected:  given the notebook folder, the traces (name → (x, y)) the figure must show after the change,
               computed independently of the dashboard (e.g. from the results table with pandas); None when
               no cheap independent computation exists: then the drawn y values must change.
    screenshot: file stem under ``assets/screenshots/``.
    legend_inside: check that the legend is not cut off by the output area (the figure fits its box).
    shared_store: run the kernel on ``$WORKBENCH_HOME`` when it is set (the run store the notebook and demo
               tests fill, so the demo's runs are not trained again), else on a fresh store.
    """

    notebook: str
    control: str
    option: str
    expected: Callable[[Path], dict[str, tuple[list[str], list[float]]]] | None
    screenshot: str
    shared_store: bool = False
    legend_inside: bool = True


def _layer_dashboard_expected(folder: Path) -> dict[str, tuple[list[str], list[float]]]:
    results = pd.read_csv(folder / "data" / "demo_results.csv")
    # the notebook calls dash.select(split="ood") before the change; rankme has no split choice (test only)
    return {run: layer_series(results, "rankme", run, None) for run in ("clean", "noise-30%", "random-init")}


DASHBOARDS = [
    DashboardCase("05_layer_dashboard.ipynb", control="measure", option="rankme",
                  expected=_layer_dashboard_expected, screenshot="layer_dashboard"),
    # the tour computes its tables in the kernel (demo.analyze): the check is that the probe curves redraw
    DashboardCase("08_dashboards.ipynb", control="split", option="ood", expected=None,
                  screenshot="dashboards_tour", shared_store=True),
]


# ------------------------------------------------------------------------------------------ the test
def _playwright():
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    return pytest.importorskip("playwright.sync_api", reason="pip install playwright")


def _traces_by_name(traces: list[dict]) -> dict[str, tuple[list[str], list[float]]]:
    return {t["name"]: (t["x"], t["y"]) for t in traces if t["name"] and not t["name"].endswith(" CI")}


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("case", DASHBOARDS, ids=[c.notebook for c in DASHBOARDS])
def test_dashboard_in_jupyterlab(case: DashboardCase, tmp_path: Path):
    sync_api = _playwright()
    t0 = time.perf_counter()
    root = tmp_path / "lab"
    root.mkdir()
    name = copy_notebook(NOTEBOOKS / case.notebook, root)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    store = os.environ.get("WORKBENCH_HOME") if case.shared_store else None
    with JupyterLab(root, env={"WORKBENCH_HOME": store or str(tmp_path / "store")}) as lab, \
            sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM))
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            open_and_run(page, lab, name, timeout_s=240.0 if case.shared_store and not store else 120.0)
            assert not error_outputs(page), error_outputs(page)

            # the widgets rendered: a live plotly plot next to real ipywidgets controls
            control = dropdown(page, case.control)
            control.wait_for(timeout=60_000)
            widget = page.locator(".jupyter-widgets.widget-vbox", has=control).first
            plot = widget.locator(PLOT).first
            plot.wait_for(timeout=60_000)
            assert widget.locator(".widget-select-multiple, .widget-dropdown").count() >= 2
            before, paths_before = plot_traces(plot), plot_svg_paths(plot)
            assert before and paths_before, "the plot drew no traces"
            widget.scroll_into_view_if_needed()
            if case.legend_inside:
                assert_legend_visible(plot)
            widget.screenshot(path=str(SCREENSHOTS / f"{case.screenshot}.png"))

            # a user picks another option: the figure must redraw to the table's values for it
            control.select_option(label=case.option)
            if case.expected is None:  # no independent values: the drawn numbers must change
                # compared in JS on both sides (a Python json.dumps string never equals JSON.stringify's: the
                # separators differ, so such a wait would return at once)
                page.wait_for_function(
                    """([gd, before]) => JSON.stringify(gd.data.map(t => Array.from(t.y ?? [], Number)))
                                        !== JSON.stringify(before.map(ys => Array.from(ys ?? [], Number)))""",
                    arg=[plot.element_handle(), [t["y"] for t in before]], timeout=60_000)
            else:
                want = case.expected(root)
                page.wait_for_function(
                    """([gd, want]) => want.every(([name, ys]) => {
                        const t = gd.data.find(t => t.name === name);
                        return t && t.y && t.y.length === ys.length &&
                               Array.from(t.y).every((v, i) => Math.abs(v - ys[i]) <= 1e-9 * Math.max(1, Math.abs(ys[i])));
                    })""", arg=[plot.element_handle(), [[k, v[1]] for k, v in want.items()]], timeout=60_000)
            try:  # gd.data is set before plotly has redrawn the SVG: give the drawing a moment
                page.wait_for_function(
                    """([gd, before]) => JSON.stringify([...gd.querySelectorAll('.scatterlayer path.js-line')]
                                                        .map(p => p.getAttribute('d'))) !== JSON.stringify(before)""",
                    arg=[plot.element_handle(), paths_before], timeout=10_000)
            except Exception:  # noqa: BLE001 — playwright's TimeoutError: the assertion below says what is wrong
                pass
            after, paths_after = plot_traces(plot), plot_svg_paths(plot)
            if case.expected is not None:
                assert _traces_by_name(after) == want
            assert paths_after != paths_before, "plotly's data changed but the drawn lines did not"
            assert after != before
            widget.screenshot(path=str(SCREENSHOTS / f"{case.screenshot}_{case.option}.png"))
            page.screenshot(path=str(SCREENSHOTS / f"{case.screenshot}_lab.png"), full_page=False)
            assert not error_outputs(page), error_outputs(page)
        finally:
            browser.close()
    pids = lab.kernel_pids()
    assert not pids, f"kernels outlived the server: {pids}"
    print(f"{case.notebook}: {time.perf_counter() - t0:.1f} s in the browser")

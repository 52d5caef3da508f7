"""Write figures to disk: SVG / PDF / PNG (via kaleido and the system Chromium) plus the plotted data.

``export(fig, "out/cka.svg")`` writes ``out/cka.svg``, ``out/cka.csv`` (the tidy rows drawn, see
:func:`~workbench.figures.plotted_data`) and ``out/cka.json`` (the plotly spec). The CSV and JSON
are written first, so they exist even when no browser is available.

Sizes: the exported figure uses the ``"workbench_paper"`` template, where one figure unit is one
point. ``width="single"`` is 3.5 in = 252 pt; SVG gets ``width="252pt"`` (with a viewBox), the PDF
page is 252 pt wide, and the PNG is ``width_in × dpi`` pixels (1050 px at 300 dpi).

Chromium: kaleido 1.x drives a Chrome/Chromium through *choreographer*. We locate the browser
ourselves (:func:`find_chromium`: ``$WORKBENCH_CHROMIUM``, then choreographer's ``$BROWSER_PATH``,
then ``chromium``/``chrome`` on ``PATH``, then the usual ``/usr/bin`` paths) and pass it to
``kaleido.Kaleido(path=...)``, so choreographer never searches for — or offers to download — its own
copy (kaleido only downloads through the explicit ``kaleido.get_chrome()``, which is never called).
MathJax is disabled and plotly.js comes from the installed plotly package, so nothing is fetched.

One browser is started on first use and kept for the session (a background thread with its own
event loop), so after the first export (~2–3 s) each one costs a few hundred ms; :func:`close_browser`
stops it (also done at interpreter exit).
"""
from __future__ import annotations

import asyncio
import atexit
import html
import numbers
import os
import re
import shutil
import threading
from pathlib import Path
from typing import Iterable, Mapping

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio

from .._validation import Data, Flag, Instance, Interval, declare
from ..results import COLUMNS, check_tidy
from . import _style
from ._builders import META_KEY, plotted_data

__all__ = ["export", "to_html", "find_chromium", "close_browser", "CHROMIUM_ENV", "IMAGE_FORMATS"]

CHROMIUM_ENV = "WORKBENCH_CHROMIUM"
IMAGE_FORMATS = ("svg", "pdf", "png")
_CSS_PX_PER_PT = 96.0 / 72.0
_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
_TYPICAL = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/lib/chromium/chromium",
            "/snap/bin/chromium", "/usr/bin/google-chrome", "/usr/bin/google-chrome-stable")
# declared rules (workbench._validation.declare): the valid examples write into the temporary directory
_INSTALL_HINT = ("Static export needs a Chrome/Chromium browser and none was found. On Debian/Ubuntu: "
                 "`sudo apt-get install chromium` (or set WORKBENCH_CHROMIUM=/path/to/chrome). "
                 "The .csv and .json next to the figure were written anyway.")


# --------------------------------------------------------------------------------------------------
# the browser
# --------------------------------------------------------------------------------------------------

def _is_exe(p: str | os.PathLike) -> bool:
    return os.path.isfile(p) and os.access(p, os.X_OK)


@declare()
def find_chromium() -> str | None:
    """Path of a Chrome/Chromium executable, or None. Never downloads anything.

    ``$WORKBENCH_CHROMIUM`` (if set, it is the only place looked at), then ``$BROWSER_PATH``
    (choreographer's own override), then ``PATH``, then the usual install locations.
    """
    env = os.environ.get(CHROMIUM_ENV)
    if env:
        return env if _is_exe(env) else None
    env = os.environ.get("BROWSER_PATH")
    if env and _is_exe(env):
        return env
    for name in _CANDIDATES:
        p = shutil.which(name)
        if p and _is_exe(p):
            return p
    for p in _TYPICAL:
        if _is_exe(p):
            return p
    return None


class _Session:
    """A kaleido browser on its own thread + event loop, so sync callers (and Jupyter's running loop)
    can share it. Every wait has a timeout, so a dead browser raises instead of hanging."""

    def __init__(self, chromium: str, timeout: float):
        import kaleido

        self.chromium = chromium
        self.timeout = timeout
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="workbench-kaleido", daemon=True)
        self.thread.start()
        self.k = None

        async def _open():
            k = kaleido.Kaleido(path=chromium, mathjax=False, timeout=timeout, n=1)
            await k.open()
            return k

        try:
            self.k = self._run(_open(), timeout + 30)
        except BaseException:
            self.close()
            raise

    def _run(self, coro, timeout: float):
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result(timeout)
        except TimeoutError:
            fut.cancel()
            raise RuntimeError(f"the headless browser did not answer within {timeout:.0f} s") from None

    def render(self, specs: list[dict]) -> None:
        assert self.k is not None
        self._run(self.k.write_fig_from_object(specs, cancel_on_error=True), self.timeout * len(specs) + 10)

    def close(self) -> None:
        try:
            if self.k is not None and self.loop.is_running():
                self._run(self.k.close(), 20)
        except Exception:
            pass
        finally:
            self.k = None
            if self.loop.is_running():
                self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            if not self.loop.is_running() and not self.loop.is_closed():
                self.loop.close()


_session: _Session | None = None
_session_lock = threading.Lock()


def _get_session(chromium: str, timeout: float) -> _Session:
    global _session
    if _session is not None and (_session.chromium != chromium or not _session.thread.is_alive()):
        _session.close()
        _session = None
    if _session is None:
        _session = _Session(chromium, timeout)
    return _session


@declare()
def close_browser() -> None:
    """Stop the shared headless browser (the next export starts a new one)."""
    global _session
    with _session_lock:
        if _session is not None:
            _session.close()
            _session = None


atexit.register(close_browser)


def _render(specs: list[dict], timeout: float) -> None:
    chromium = find_chromium()
    if chromium is None:
        raise RuntimeError(_INSTALL_HINT)
    global _session
    with _session_lock:
        for attempt in (1, 2):
            try:
                _get_session(chromium, timeout).render(specs)
                return
            except Exception as e:
                # a crashed/stale browser: start a fresh one once, then give up with the real error
                if _session is not None:
                    _session.close()
                    _session = None
                if attempt == 2 or "KaleidoError" in type(e).__name__:
                    raise RuntimeError(f"rendering with {chromium} failed: {type(e).__name__}: {e}") from e


# --------------------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------------------

def _paper_figure(fig: go.Figure | Mapping, width_pt: float, height_pt: float, paper: bool) -> go.Figure:
    out = go.Figure(fig)  # a copy; also turns a FigureWidget into a plain Figure
    if paper:
        out.update_layout(template=_style.PAPER_TEMPLATE)
        for a in out.layout.annotations:  # facet titles: small, not the 16 px make_subplots default
            if a.font.size is not None and a.font.size > 12:
                a.font.size = None
        if _style.has_panel_titles(out):  # their room in points, without the screen's toolbar band
            _style.panel_margin(out, "paper")
    out.update_layout(width=width_pt, height=height_pt, autosize=False)
    return out


def _strip_meta(d: dict) -> dict:
    meta = d.get("layout", {}).get("meta")
    if isinstance(meta, dict) and META_KEY in meta:
        d = dict(d)
        d["layout"] = dict(d["layout"])
        rest = {k: v for k, v in meta.items() if k != META_KEY}
        if rest:
            d["layout"]["meta"] = rest
        else:
            d["layout"].pop("meta")
    return d


def _svg_in_points(path: Path, width_pt: float, height_pt: float) -> None:
    """Give the root <svg> physical units (pt), keeping the viewBox so the drawing scales with it."""
    text = path.read_text(encoding="utf-8")
    m = re.search(r"<svg\b[^>]*>", text)
    if not m:
        raise RuntimeError(f"{path} does not look like an SVG")
    tag = m.group(0)
    new = re.sub(r'\swidth="[^"]*"', f' width="{width_pt:g}pt"', tag, count=1)
    new = re.sub(r'\sheight="[^"]*"', f' height="{height_pt:g}pt"', new, count=1)
    if "viewBox" not in new:
        new = new[:-1] + f' viewBox="0 0 {width_pt:g} {height_pt:g}">'
    path.write_text(text[:m.start()] + new + text[m.end():], encoding="utf-8")


def _targets(path: Path, formats: Iterable[str] | None) -> tuple[Path, list[str]]:
    suffix = path.suffix.lower().lstrip(".")
    if formats is not None:
        fmts = [f.lower().lstrip(".") for f in ([formats] if isinstance(formats, str) else formats)]
        stem = path.with_suffix("") if suffix in IMAGE_FORMATS + ("csv", "json") else path
    elif suffix in IMAGE_FORMATS:
        fmts, stem = [suffix], path.with_suffix("")
    elif suffix in ("csv", "json"):
        fmts, stem = [], path.with_suffix("")  # data only: no browser needed
    elif suffix == "":
        fmts, stem = list(IMAGE_FORMATS), path
    else:
        raise ValueError(f"unknown figure format {path.suffix!r}; use one of {IMAGE_FORMATS} (or .csv/.json)")
    bad = [f for f in fmts if f not in IMAGE_FORMATS]
    if bad:
        raise ValueError(f"unknown format(s) {bad}; choose from {IMAGE_FORMATS}")
    return stem, list(dict.fromkeys(fmts))


@declare(fig=Data("any", example=go.Figure, bad=["fig", 3]),
         path=Instance(str, os.PathLike, example="workbench-declared-example.json"),
         width=Instance(str, numbers.Real, none=True), height=Interval(float, none=True), dpi=Interval(float, 10, 2400),
         formats=Instance(Iterable, none=True), paper=Flag(), timeout=Interval(float, 0, closed="neither"))
def export(fig: go.Figure, path: str | os.PathLike, *, width: str | float | None = None,
           height: float | None = None, dpi: int = 300, formats: Iterable[str] | None = None,
           paper: bool = True, timeout: float = 60) -> dict[str, Path]:
    """Write ``fig`` as a paper figure, plus ``<stem>.csv`` (data drawn) and ``<stem>.json`` (spec).

    path:    ``x.svg`` / ``x.pdf`` / ``x.png`` picks the format; ``x`` (no suffix) writes all three;
             ``x.csv`` / ``x.json`` writes only the data and spec.
    width:   ``"single"`` (3.5 in, default), ``"double"`` (7.16 in) or inches.
    height:  inches; default from the style (2.4 in single, 2.8 in double; proportional otherwise).
    dpi:     PNG resolution: the PNG is ``round(width × dpi)`` pixels wide.
    formats: e.g. ``["svg", "pdf", "png"]``: all share ``path``'s stem.
    paper:   apply the ``"workbench_paper"`` template (point-sized fonts); False keeps the figure's own.

    Returns ``{format: Path}`` for every file written (including ``"csv"`` and ``"json"``).
    Raises RuntimeError (after writing the CSV and JSON) when no Chromium is installed.
    """
    if not (hasattr(fig, "to_plotly_json") or isinstance(fig, Mapping)):
        raise TypeError(f"export(fig) needs a plotly figure, got {type(fig).__name__}")
    if not (isinstance(dpi, (int, float)) and 10 <= dpi <= 2400):
        raise ValueError(f"dpi must be a number between 10 and 2400, got {dpi!r}")
    stem, fmts = _targets(Path(path), formats)
    w_in = _style.width_inches(width)
    h_in = _style.height_inches(height, width)
    w_pt, h_pt = round(w_in * _style.POINTS_PER_INCH, 3), round(h_in * _style.POINTS_PER_INCH, 3)
    out = _paper_figure(fig, w_pt, h_pt, paper)

    stem.parent.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    csv_path = stem.with_name(stem.name + ".csv")
    plotted_data(fig).to_csv(csv_path, index=False)
    written["csv"] = csv_path
    json_path = stem.with_name(stem.name + ".json")
    json_path.write_text(out.to_json(), encoding="utf-8")
    written["json"] = json_path
    if not fmts:
        return written

    spec_fig = _strip_meta(out.to_plotly_json())
    specs = []
    for f in fmts:
        target = stem.with_name(stem.name + "." + f)
        if f == "png":
            scale = round(w_in * dpi) / w_pt
        elif f == "pdf":
            scale = _CSS_PX_PER_PT  # Chrome prints CSS px at 96/in: scale so the page is w_pt points
        else:
            scale = 1.0
        specs.append(dict(fig=spec_fig, path=str(target),
                          opts=dict(format=f, width=w_pt, height=h_pt, scale=scale)))
        written[f] = target
    _render(specs, timeout)
    if "svg" in fmts:
        _svg_in_points(written["svg"], w_pt, h_pt)
    return written


# --------------------------------------------------------------------------------------------------
# HTML report
# --------------------------------------------------------------------------------------------------

_CSS = """
body { font-family: Helvetica, Arial, "Liberation Sans", "DejaVu Sans", sans-serif; margin: 2em auto;
       max-width: 1100px; color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table.results { border-collapse: collapse; font-size: 0.85em; }
table.results th, table.results td { padding: 3px 8px; border-bottom: 1px solid #eee; text-align: right; }
table.results th { background: #f6f6f6; }
"""


@declare(figs=Data("any", example=lambda: {"example": go.Figure()}, bad=[[go.Figure()], "figs"]),
         path=Instance(str, os.PathLike, example="workbench-declared-example.html"),
         title=Instance(str), table=Data("any", none=True, bad=["table", {"measure": ["m"], "value": [1.0]}]),
         table_title=Instance(str), notes=Instance(Mapping, none=True))
def to_html(figs: Mapping[str, go.Figure], path: str | os.PathLike, title: str = "workbench report", *,
            table: pd.DataFrame | None = None, table_title: str = "Results",
            notes: Mapping[str, str] | None = None) -> Path:
    """One self-contained, offline HTML file: plotly.js inlined once in <head>, one section per figure
    (``{section title: figure}``), then ``table`` as an HTML table. ``notes`` maps a section title to a short
    paragraph shown under its heading.

    ``table``: any DataFrame; a labelled index (``run``, ``layer`` … of a pivot) becomes leading columns, so
    every row says what it is. A table in the results schema (:mod:`workbench.results`) is shown with the
    schema's columns first, in schema order (``run, step, layer, layer_index, measure, split, value, ci_low,
    ci_high``), then its extra columns that hold a value in some row."""
    from plotly.offline import get_plotlyjs

    if not isinstance(figs, Mapping):
        raise TypeError("figs must be a mapping {section title: figure}")
    parts = [
        "<!DOCTYPE html>", "<html><head>", '<meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>", f"<style>{_CSS}</style>",
        # plotly.js is inlined exactly once, here; no <script src=...> anywhere.
        f'<script type="text/javascript">{get_plotlyjs()}</script>',
        "</head><body>", f"<h1>{html.escape(title)}</h1>",
    ]
    for i, (name, fig) in enumerate(figs.items()):
        fig = go.Figure(_strip_meta(go.Figure(fig).to_plotly_json()))
        div = pio.to_html(fig, full_html=False, include_plotlyjs=False, include_mathjax=False,
                          div_id=f"wb-fig-{i}", config={"displaylogo": False, "responsive": True})
        note = (notes or {}).get(name)
        parts += [f'<section id="fig-{i}">', f"<h2>{html.escape(str(name))}</h2>",
                  f"<p>{html.escape(note)}</p>" if note else "", div, "</section>"]
    if table is not None:
        if not isinstance(table, pd.DataFrame):
            raise TypeError(f"table must be a pandas DataFrame, got {type(table).__name__}")
        if any(name is not None for name in table.index.names):  # a labelled index (run, layer, …) is data
            table = table.reset_index()
        table = table.rename_axis(columns=None)  # a named column axis (a pivot's) would add a stray header cell
        if set(COLUMNS) <= set(table.columns):  # a results table: the schema's columns, then the used extras
            table = check_tidy(table, "to_html(table)")
            table = table[[*COLUMNS, *[c for c in table.columns if c not in COLUMNS and table[c].notna().any()]]]
        parts += ['<section id="table">', f"<h2>{html.escape(table_title)}</h2>",
                  table.to_html(index=False, classes="results", border=0, na_rep="",
                                float_format=lambda v: f"{v:.4g}"), "</section>"]
    parts += ["</body></html>"]
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("\n".join(parts), encoding="utf-8")
    return p

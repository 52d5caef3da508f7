"""What every dashboard shares: the base contract, an in-place FigureWidget update, export, display, and
combining views.

A dashboard holds the library's frame (state lives in the library object, not in the widgets), filters it
with its controls and hands the rows to a :mod:`workbench.figures` builder; :func:`update_figure` copies
the new figure into the one ``FigureWidget`` (``dash.figure``), which is never replaced. Every dashboard
subclasses :class:`Dashboard` and so answers the same four calls (:data:`CONTRACT`).
"""
from __future__ import annotations

import abc
import copy
import contextlib
import functools
import html
import json
import uuid
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
import traitlets

from .. import figures

try:  # plotly >= 6 builds FigureWidget on anywidget
    import anywidget as _anywidget
except ImportError:  # pragma: no cover - depends on the environment
    _anywidget = None

__all__ = ["Dashboard", "CONTRACT", "Combined", "combine", "LiveFigure", "update_figure", "clear_figure", "sync_state",
           "row", "Snapshot", "uniq", "set_options", "LATEST", "LATEST_LABEL", "FIGURE_WIDTH", "FIGURE_HEIGHT",
           "keep_latest"]

#: the calls every dashboard answers (:class:`Dashboard`)
CONTRACT = ("select", "current_frame", "plotted_data", "export")

ERROR_STYLE = "color:#D55E00"


def _widgets():
    """ipywidgets, imported on first use (``import workbench`` stays free of it)."""
    import ipywidgets as W

    if _anywidget is None:
        raise ImportError("the dashboards need plotly's FigureWidget, which (plotly >= 6) needs anywidget: "
                          "pip install anywidget")
    return W


def uniq(values: Iterable[Any]) -> list[Any]:
    """Unique non-null values, first-appearance order, as plain Python scalars."""
    return [v.item() if hasattr(v, "item") else v for v in pd.unique(pd.Series(list(values)).dropna())]


def set_options(w: Any, values: Sequence[Any], want: Any = None, *, labels: Sequence[str] | None = None) -> None:
    """Give a Dropdown/SelectionSlider ``values`` (labelled ``labels`` or ``str(value)``) and keep ``want``
    selected when it is among them, else the first value (a SelectMultiple keeps the wanted values present)."""
    labels = [str(v) for v in values] if labels is None else list(labels)
    w.options = list(zip(labels, values))
    if isinstance(w, _widgets().SelectMultiple):
        want = [] if want is None else list(want)
        w.value = tuple(v for v in values if v in want)
    elif values:
        w.value = want if want in values else values[0]


LATEST = "latest"  # step choice: each run at its own latest step (runs may end at different steps)
LATEST_LABEL = "latest (each run)"
#: the plot's size in pixels: next to a 300 px control column it fits a JupyterLab notebook at 1280 px with the
#: file browser open (~850 px of output area); narrower, :func:`row` wraps it under the controls. A fixed size:
#: plotly's widget has no resize handling under anywidget (without a width it takes 700 px whatever its box)
FIGURE_WIDTH, FIGURE_HEIGHT = 520, 420


def keep_latest(frame: pd.DataFrame, group: str) -> pd.DataFrame:
    """Rows of each ``group`` value at that group's own largest ``step`` (rows without a step are kept), so a
    baseline that ends early — a random-init twin at step 0 — stays visible next to runs trained longer."""
    last = frame.groupby(frame[group].astype(str))["step"].transform("max")
    return frame[(frame["step"] == last) | frame["step"].isna()]


# The front-end module of :class:`LiveFigure`: ready at once; plotly's own module (its ``_plotly_esm``) is imported
# afterwards, initialised on the same model, and each view waits for it before plotly draws.
_DEFERRED_ESM = """
let plotly = null;
function load(model) {
  plotly ??= (async () => {
    const url = URL.createObjectURL(new Blob([model.get("_plotly_esm")], { type: "text/javascript" }));
    try {
      const mod = await import(url);
      const widget = typeof mod.default === "function" ? await mod.default() : mod.default;
      await widget.initialize?.({ model });
      return widget;
    } finally {
      URL.revokeObjectURL(url);
    }
  })();
  return plotly;
}
export default {
  initialize({ model }) { load(model).catch((err) => console.error("[workbench] plotly widget module", err)); },
  async render({ model, el }) { return (await load(model)).render({ model, el }); },
};
"""


class LiveFigure(go.FigureWidget):
    """plotly's ``FigureWidget`` whose front-end model is ready before plotly's 5 MB module has loaded.

    anywidget gives a model 2 s from its creation to import its module and initialise; after that its ``ready``
    promise is rejected for good and the front end drops every later message from the kernel to that model
    (``_handle_comm_msg`` awaits ``ready``). Importing plotly's module takes longer than that on a busy 2-core
    machine — two figures restored together after a page reload often do — and the plot then stays on its old
    figure whatever the controls say (notebook 06, 5 of 12 reloads, in Chromium). Here the model's module is a
    few lines that return at once and import plotly's module (kept as the ``_plotly_esm`` trait) afterwards;
    each view awaits it, then plotly draws from ``_widget_data`` (kept current by :func:`sync_state`).
    Everything else is plotly's ``FigureWidget``.
    """

    _esm = _DEFERRED_ESM
    _plotly_esm = traitlets.Unicode().tag(sync=True)

    @traitlets.default("_plotly_esm")
    def _plotly_module(self) -> str:
        return _plotly_module_source()


@functools.cache
def _plotly_module_source() -> str:
    return str(go.FigureWidget._esm)  # plotly's bundle (anywidget keeps a class's module file as its text)


def _trace_signature(traces) -> list:
    """Which properties each trace sets (``uid`` is the widget's own bookkeeping)."""
    return [(t.type, tuple(sorted(k for k in t.to_plotly_json() if k != "uid"))) for t in traces]


def sync_state(fw: go.FigureWidget) -> None:
    """Make the state ``fw`` shares with the front end equal the figure it shows, then tell its listeners.

    plotly's ``FigureWidget`` sends every change as a one-off message (``restyle``, ``addTraces``, …) that
    only views already listening apply; its synced ``_widget_data`` / ``_widget_layout`` keep the figure as it
    was when the widget was created or last displayed. Every view made later starts from that stale state: a
    page reload shows the first view under the current controls, and a view whose front-end model missed
    the messages while plotly's 5 MB module was still loading draws empty axes. After each change we set
    both traits to the full figure (what plotly itself does in ``_repr_mimebundle_``), so any view, made at
    any time, draws what the kernel holds.
    """
    # plotly's own form of the figure (``_repr_mimebundle_`` sets the same), not ``to_plotly_json()``: from the
    # latter the front end computed "trace deltas" holding every array again (10.8 MB for 2 000 points with
    # customdata), over the Jupyter server's 10 MiB websocket message limit: the kernel connection dropped and
    # the widget's later messages (hover, relayout, the explorer's lasso) never reached the kernel
    with fw.hold_sync():
        fw._widget_data = copy.deepcopy(fw._data)
        fw._widget_layout = copy.deepcopy(fw._layout_obj._props)
    for listener in getattr(fw, "_workbench_listeners", ()):
        listener()


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.shape == b.shape
                and bool(np.array_equal(a, b)))
    try:
        return bool(a == b)
    except (ValueError, TypeError):  # arrays nested in lists/dicts: call it a change (a harmless re-send)
        return False


def _set_layout(fw: go.FigureWidget, layout: go.Layout) -> None:
    """Give ``fw`` exactly ``layout``, sending only the top-level entries that change (the template is sent
    once, not on every redraw) and removing those it no longer has: assigning ``fw.layout`` never removed them
    on the front end (a "waiting…" annotation stayed over the live curve). plotly.js replaces an entry given
    whole, such as an axis, so only missing top-level entries are stale. Call inside ``fw.batch_update()``."""
    old, want = fw.layout.to_plotly_json(), layout.to_plotly_json()
    for key in old.keys() - want.keys():
        fw.layout[key] = None
    changed = {k: v for k, v in want.items() if not _same(old.get(k), v)}
    if changed:
        fw.layout.update(changed, overwrite=True)


def update_figure(fw: go.FigureWidget, new: go.Figure) -> None:
    """Make ``fw`` show ``new`` without replacing the widget. Same traces: only the properties that change are
    sent, with the layout's changes, as one update (one redraw on the front end); otherwise the traces are
    swapped and the layout follows."""
    if _trace_signature(fw.data) == _trace_signature(new.data):
        with fw.batch_update():
            for old, nt in zip(fw.data, new.data):
                have, want = old.to_plotly_json(), nt.to_plotly_json()
                changed = {k: v for k, v in want.items() if k not in ("type", "uid") and not _same(have.get(k), v)}
                if changed:
                    old.update(changed, overwrite=True)
            _set_layout(fw, new.layout)
    else:  # the layout first: traces added before their subplot axes exist were drawn on the default axes
        with fw.batch_update():  # (the explorer's example grid: one image over the whole plot)
            fw.data = []
            _set_layout(fw, new.layout)
        fw.add_traces(list(new.data))
    sync_state(fw)


def clear_figure(fw: go.FigureWidget, message: str) -> None:
    """Empty the plot and write ``message`` in its middle."""
    with fw.batch_update():
        fw.data = []
    with fw.batch_update():
        _set_layout(fw, go.Layout(template=figures.TEMPLATE, xaxis=dict(visible=False), yaxis=dict(visible=False),
                                  annotations=[dict(text=message, showarrow=False, xref="paper", yref="paper",
                                                    x=0.5, y=0.5)]))
    sync_state(fw)


def row(*children: Any) -> Any:
    """Controls and plots side by side, wrapping onto the next line when the notebook is too narrow for both
    (no horizontal scrolling)."""
    W = _widgets()
    return W.HBox(list(children), layout=W.Layout(flex_flow="row wrap", align_items="flex-start"))


# ------------------------------------------------------------------ static copy kept by a saved notebook
_SNAPSHOT_ROWS = 200


def _snapshot_bundle(fig: go.Figure) -> dict[str, Any]:
    """A figure as output data every notebook viewer can show without a kernel: plotly's own JSON mime type
    (interactive in JupyterLab, VS Code, Colab) and an HTML table of the plotted rows (GitHub, nbviewer)."""
    spec = json.loads(pio.to_json(fig, validate=False))
    title = (fig.layout.title.text or "figure") if fig.layout.title else "figure"
    rows = figures.plotted_data(fig)
    note = ""
    if len(rows) > _SNAPSHOT_ROWS:
        note = f"<p><i>first {_SNAPSHOT_ROWS} of {len(rows)} plotted rows</i></p>"
        rows = rows.head(_SNAPSHOT_ROWS)
    table = rows.to_html(index=False, border=0, float_format=lambda v: f"{v:.4g}", na_rep="")
    return {"application/vnd.plotly.v1+json": {"data": spec.get("data", []), "layout": spec.get("layout", {})},
            "text/html": f"<b>{html.escape(str(title))}</b> <i>(static copy of the dashboard)</i>{note}{table}",
            "text/plain": f"{title} (static copy of the dashboard; run the notebook for the live one)"}


class Snapshot:
    """The static copy of a dashboard's figures that a saved notebook keeps, so it reads without a kernel.

    :meth:`show` writes, under the live widget, one output per figure (plotly JSON + an HTML table of the
    plotted rows) with a display id, and every change of a figure (:func:`sync_state`) updates it. While the
    widget is live, a style rule inside the widget hides these outputs (``:has()``), so the figure is not
    shown twice; opened without a kernel — in JupyterLab, on GitHub, in nbviewer — the widget cannot render,
    its style rule is absent, and the static copy shows.
    """

    def __init__(self, figures_of: Callable[[], Sequence[go.FigureWidget]]):
        self.id = f"wb-snapshot-{uuid.uuid4().hex[:12]}"
        self._figures_of = figures_of
        self._handles: list[tuple[go.FigureWidget, Any]] = []

    def style(self) -> str:
        """CSS hiding this snapshot's outputs (the marker and each figure after it) in JupyterLab and
        Jupyter Notebook 7 (``.jp-OutputArea-child``) and the classic notebook (``.output_area``)."""
        n = len(self._figures_of())
        rules = []
        for child in (".jp-OutputArea-child", ".output_area"):
            marker = f"{child}:has(.{self.id})"
            rules += [marker + f" + {child}" * k for k in range(n + 1)]
        return f"<style>{', '.join(rules)} {{ display: none !important; }}</style>"

    def show(self) -> None:
        from IPython.display import display

        display({"text/html": f'<div class="{self.id}"></div>'}, raw=True)
        for fw in self._figures_of():
            handle = display(_snapshot_bundle(go.Figure(fw)), raw=True, display_id=True)
            self._handles.append((fw, handle))
            listeners = fw.__dict__.setdefault("_workbench_listeners", [])  # called by sync_state
            if self._refresh not in listeners:
                listeners.append(self._refresh)

    def _refresh(self) -> None:
        for fw, handle in self._handles:
            handle.update(_snapshot_bundle(go.Figure(fw)), raw=True)


class Dashboard(abc.ABC):
    """Base and contract of every dashboard: ``figure`` (a FigureWidget updated in place), ``widget`` (the
    layout shown), ``status``, an export row (*save as* + Export) and notebook display.

    The contract (:data:`CONTRACT`), the same on every dashboard:

    - ``select(**choices) -> self`` sets controls from code, by the names the constructor takes for its
      initial selection (a choice left out or None keeps its value), and redraws once; a value the
      dashboard does not offer is a ``ValueError`` naming it;
    - ``current_frame() -> DataFrame`` the rows the current view is drawn from (in the results schema,
      :mod:`workbench.results`, where the dashboard's input is);
    - ``plotted_data() -> DataFrame`` the rows the plot shows, read back from the figure;
    - ``export(path, **kwargs) -> dict`` writes the current view (:func:`workbench.figures._export`).

    Subclasses implement :meth:`select` and :meth:`current_frame` (abstract: a dashboard without them cannot
    be made), build ``self.widget``, implement :meth:`_build_figure` (None: nothing to show, with a message in
    ``self._empty``) and call :meth:`_update`."""

    figure: go.FigureWidget
    widget: Any

    def _init_base(self, export_path: str) -> None:
        W = _widgets()
        self._W = W
        self._hold_depth = 0
        self._empty = "no rows for this selection"
        self.figure = LiveFigure()
        self.status = W.HTML()
        self.path_w = W.Text(value=export_path, description="save as", placeholder="figs/view.svg")
        self.export_button = W.Button(description="Export", icon="download", tooltip="figures.export(current view)")
        self.export_button.on_click(self._on_export)
        self.export_row = W.HBox([self.path_w, self.export_button])

    # ------------------------------------------------------------------ redraw
    @contextlib.contextmanager
    def _hold(self):
        """Widget changes inside do not redraw (one redraw after a programmatic ``select``)."""
        self._hold_depth += 1
        try:
            yield
        finally:
            self._hold_depth -= 1

    def _on_change(self, _change=None) -> None:
        if not self._hold_depth:
            self._update()

    def _build_figure(self) -> go.Figure | None:  # pragma: no cover - abstract
        raise NotImplementedError

    # ------------------------------------------------------------------ the contract
    @abc.abstractmethod
    def select(self, **choices: Any) -> Dashboard:
        """Set controls from code (None keeps a control's value) and redraw once; returns the dashboard."""

    @abc.abstractmethod
    def current_frame(self) -> pd.DataFrame:
        """The rows the current view is drawn from."""

    def _update(self) -> None:
        try:
            new = self._build_figure()
        except ValueError as e:  # a selection the builder refuses: say why in the widget
            clear_figure(self.figure, "cannot draw this selection")
            self.status.value = f"<span style='{ERROR_STYLE}'>{html.escape(str(e))}</span>"
            return
        if new is None:
            clear_figure(self.figure, self._empty)
            self.status.value = f"<i>{html.escape(self._empty)}</i>"
            return
        update_figure(self.figure, new)
        self.status.value = ""

    # ------------------------------------------------------------------ export & display
    def current_figure(self) -> go.Figure:
        """A plain ``go.Figure`` copy of what is shown (what Export writes)."""
        return go.Figure(self.figure)

    def plotted_data(self) -> pd.DataFrame:
        """The rows the plot shows (:func:`workbench.figures.plotted_data`)."""
        return figures.plotted_data(self.figure)

    def export(self, path: str, **kwargs: Any) -> dict:
        """``figures.export`` of the current view (keyword arguments are passed through)."""
        return figures.export(self.current_figure(), path, **kwargs)

    def _on_export(self, _button=None) -> None:
        path = self.path_w.value.strip()
        if not path:
            self.status.value = f"<span style='{ERROR_STYLE}'>give a file name first</span>"
            return
        try:
            written = self.export(path)
        except Exception as e:  # show it in the widget instead of losing it in a callback
            self.status.value = f"<span style='{ERROR_STYLE}'>export failed: {html.escape(str(e))}</span>"
            return
        self.status.value = "wrote " + ", ".join(html.escape(str(p)) for p in written.values())

    def _figures(self) -> list[go.FigureWidget]:
        """The plots this dashboard draws (kept as static copies in a saved notebook)."""
        return [self.figure]

    def _ipython_display_(self) -> None:
        from IPython.display import display

        snapshot = _snapshot_of(self)
        display(self.widget)
        snapshot.show()

    def _repr_mimebundle_(self, **kwargs: Any):
        return self.widget._repr_mimebundle_(**kwargs)

    # ------------------------------------------------------------------ helpers for subclasses
    @staticmethod
    def _check_choice(value: Any, options: Sequence[Any], name: str) -> Any:
        if value not in options:
            raise ValueError(f"{name}={value!r} is not available; choose from {list(options)}")
        return value


class Combined:
    """Several dashboards in one view (tabs, or stacked); each keeps working on its own."""

    def __init__(self, dashboards: Sequence[Any], titles: Sequence[str] | None = None, layout: str = "tabs"):
        W = _widgets()
        if not dashboards:
            raise ValueError("combine needs at least one dashboard")
        bad = [type(d).__name__ for d in dashboards if not hasattr(d, "widget")]
        if bad:
            raise TypeError(f"combine takes dashboards (objects with a .widget), got {bad}")
        if layout not in ("tabs", "vbox"):
            raise ValueError(f"layout must be 'tabs' or 'vbox', got {layout!r}")
        self.dashboards = list(dashboards)
        titles = list(titles) if titles is not None else [type(d).__name__.replace("Dashboard", "") or "view"
                                                           for d in self.dashboards]
        if len(titles) != len(self.dashboards):
            raise ValueError(f"titles has {len(titles)} entries for {len(self.dashboards)} dashboards")
        children = [d.widget for d in self.dashboards]
        if layout == "tabs":
            self.widget = W.Tab(children=children, titles=tuple(str(t) for t in titles))
        else:
            self.widget = W.VBox([w for t, c in zip(titles, children)
                                  for w in (W.HTML(f"<h3>{html.escape(str(t))}</h3>"), c)])

    def __getitem__(self, i: int) -> Any:
        return self.dashboards[i]

    def __len__(self) -> int:
        return len(self.dashboards)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        snapshots = [_snapshot_of(d) for d in self.dashboards if hasattr(d, "_figures")]
        display(self.widget)
        for snapshot in snapshots:
            snapshot.show()

    def _repr_mimebundle_(self, **kwargs: Any):
        return self.widget._repr_mimebundle_(**kwargs)


def _snapshot_of(dashboard: Any) -> Snapshot:
    """The dashboard's :class:`Snapshot`, made on first display together with the style rule (an HTML widget
    appended to the dashboard's widget) that hides it while the widget is live."""
    snapshot = getattr(dashboard, "_snapshot", None)
    if snapshot is None:
        snapshot = dashboard._snapshot = Snapshot(dashboard._figures)
        W = _widgets()
        dashboard.widget.children = (*dashboard.widget.children,
                                     W.HTML(snapshot.style(), layout=W.Layout(display="none")))
    return snapshot


def combine(*dashboards: Any, titles: Sequence[str] | None = None, layout: str = "tabs") -> Combined:
    """Show several dashboards together: ``layout="tabs"`` (an ``ipywidgets.Tab``) or ``"vbox"`` (stacked)."""
    return Combined(dashboards, titles=titles, layout=layout)

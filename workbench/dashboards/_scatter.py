"""The embedding explorer's engine for many points: a WebGL scatter widget (jupyter-scatter) with the explorer's
linked selection.

Why jupyter-scatter (``pip install jupyter-scatter``, module ``jscatter``): it is an anywidget (the same front-end
route as plotly >= 6's FigureWidget, already a dependency of the dashboards), its JavaScript (regl-scatterplot,
WebGL) ships inside the wheel (``jscatter/bundle.js``; no CDN, no server port: it works offline in JupyterLab 4 with
ipywidgets 8), it draws 10⁶ points interactively, and its selection is a synced trait (``widget.selection``, the
drawn rows) that the kernel can observe and set. datashader, the alternative, rasterises on the server: every
pan/zoom is a round trip through the kernel and a lasso needs a separate hit-test layer (holoviews/bokeh), i.e.
another widget stack. plotly's ``scattergl`` stays below :data:`LARGE_THRESHOLD` points, where it is fast enough
and keeps SVG/PDF export and the hover of :func:`workbench.figures.embedding_scatter`
(``benchmarks/bench_explorer.py`` times both at 10⁴, 10⁵, 10⁶ points).

The engine draws what :func:`workbench.figures.project` returned (no science here): the frame's ``x``/``y``, its
example ``index`` (what a selection reports), coloured by a column with the figures' palette (categorical: one
palette colour per sorted level, as in :func:`~workbench.figures.embedding_scatter`; numeric: the style's colour
scale).

>>> from workbench.dashboards._scatter import LargeScatter
>>> view = LargeScatter(on_select=print)
>>> view.draw(frame, color="label")      # frame = figures.project(x, labels=y)
>>> view.widget                          # shown in the notebook; a lasso calls print(example indices)
"""
from __future__ import annotations

import html
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from .. import figures

__all__ = ["LARGE_THRESHOLD", "ENGINES", "have_webgl_widget", "choose_engine", "LargeScatter"]

#: above this many drawn points the explorer uses the WebGL widget (jupyter-scatter) instead of plotly's
#: ``scattergl``: plotly sends every point through the FigureWidget and redraws all of them on each selection.
#: ``benchmarks/bench_explorer.py`` (JupyterLab + Chromium, 2 cores, software WebGL): first render plotly / WebGL
#: 7.2 / 7.5 s at 10⁴ points, 15.2 / 7.0 s at 10⁵, 74 / 11 s at 10⁶; a lasso to the linked list 0.19 / 0.14,
#: 1.3 / 0.44, 10.2 / 4.7 s (``benchmarks/results/explorer.json``)
LARGE_THRESHOLD = 50_000
#: ``engine=`` choices: ``"auto"`` (plotly up to :data:`LARGE_THRESHOLD` points, the WebGL widget above),
#: ``"plotly"`` or ``"webgl"`` (always that one)
ENGINES = ("auto", "plotly", "webgl")
_MAX_LEVELS = 24  # integer columns with at most this many values are categorical (as figures.embedding_scatter)


def have_webgl_widget() -> bool:
    """Whether jupyter-scatter (the WebGL widget) can be imported."""
    try:
        import jscatter  # noqa: F401
    except ImportError:
        return False
    return True


def _need_jscatter():
    try:
        import jscatter
    except ImportError:
        raise ImportError("the WebGL scatter for many points needs jupyter-scatter: pip install jupyter-scatter "
                          "(or pip install 'workbench[embed]'); or pass engine='plotly'") from None
    return jscatter


def choose_engine(n_points: int, *, engine: str = "auto", threshold: int = LARGE_THRESHOLD) -> str:
    """``"plotly"`` or ``"webgl"``: the engine that draws ``n_points`` points.

    ``engine="auto"`` picks plotly for ``n_points <= threshold`` and the WebGL widget above (plotly when
    jupyter-scatter is not installed, with a warning that it will be slow); ``"plotly"`` / ``"webgl"`` force one.

    >>> choose_engine(10_000), choose_engine(10**6)          # doctest: +SKIP
    ('plotly', 'webgl')
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {list(ENGINES)}, got {engine!r}")
    if isinstance(n_points, bool) or not isinstance(n_points, (int, np.integer)) or n_points < 0:
        raise TypeError(f"n_points must be a non-negative int, got {n_points!r}")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, np.integer)) or threshold < 1:
        raise ValueError(f"threshold must be a positive int, got {threshold!r}")
    if engine == "webgl":
        _need_jscatter()
        return "webgl"
    if engine == "plotly" or n_points <= threshold:
        return "plotly"
    if not have_webgl_widget():
        import warnings

        warnings.warn(f"{n_points} points are drawn with plotly, which is slow above {threshold}: "
                      "pip install jupyter-scatter for the WebGL widget", stacklevel=2)
        return "plotly"
    return "webgl"


def _is_categorical(s: pd.Series) -> bool:
    """The colouring rule of :func:`workbench.figures.embedding_scatter`: strings, booleans and integers with few
    levels are categorical, other numbers continuous."""
    return not pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s) or \
        (pd.api.types.is_integer_dtype(s) and s.nunique() <= _MAX_LEVELS)


def _levels(s: pd.Series) -> list[Any]:
    levels = [v.item() if hasattr(v, "item") else v for v in pd.unique(s.dropna())]
    try:
        return sorted(levels)
    except TypeError:
        return levels


class LargeScatter:
    """A jupyter-scatter view of a projection frame with selection linked to example indices.

    on_select: called with the list of example indices (the frame's ``index`` column) whenever the selection in
               the widget changes (lasso, click, or ``widget.selection`` set from Python); not called by
               :meth:`set_selection`, which the caller makes.
    height, width: the plot's size in pixels (the dashboards' ``FIGURE_HEIGHT`` x ``FIGURE_WIDTH`` by default).

    ``widget`` is an ipywidgets Box that holds the current scatter widget (``scatter_widget``); :meth:`draw`
    replaces the scatter when the frame or the colouring changes, so the Box is what a layout embeds.
    """

    def __init__(self, *, on_select: Callable[[list[int]], Any] | None = None, height: int = 420,
                 width: int = 520):
        import ipywidgets as W

        self._jscatter = _need_jscatter()
        if on_select is not None and not callable(on_select):
            raise TypeError(f"on_select must be callable or None, got {type(on_select).__name__}")
        for name, v in (("height", height), ("width", width)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 50:
                raise ValueError(f"{name} must be an int of at least 50 pixels, got {v!r}")
        self.on_select, self.height = on_select, height
        self.title = W.HTML()
        self.widget = W.VBox([self.title], layout=W.Layout(width=f"{width}px"))
        self.scatter: Any = None          # the jscatter.Scatter
        self.scatter_widget: Any = None   # its JupyterScatter widget (anywidget)
        self.frame: pd.DataFrame | None = None
        self.color: str | None = None
        self._row_of: pd.Index | None = None
        self._echo = False

    # ------------------------------------------------------------------ drawing
    def draw(self, frame: pd.DataFrame, color: str | None = None, *, x: str = "x", y: str = "y",
             title: str | None = None) -> LargeScatter:
        """Draw ``frame`` (:func:`workbench.figures.project`'s: ``index``, ``x``, ``y`` and ``color``'s column),
        coloured by ``color`` (None: one colour). The selection is cleared."""
        if not isinstance(frame, pd.DataFrame):
            raise TypeError(f"frame must be a DataFrame (figures.project's), got {type(frame).__name__}")
        need = ["index", x, y] + ([color] if color is not None else [])
        missing = [c for c in need if c not in frame.columns]
        if missing:
            raise ValueError(f"frame has no column(s) {missing}; it has {list(frame.columns)}")
        if frame.empty:
            raise ValueError("frame has no rows: nothing to draw")
        xy = frame[[x, y]].to_numpy(dtype=np.float64)
        if not np.isfinite(xy).all():
            raise ValueError(f"frame columns {x!r}, {y!r} hold NaN or infinite values; drop those rows first")
        data = pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1], "index": frame["index"].to_numpy()})
        st = figures.get_style()
        options: dict[str, Any] = dict(color=st["palette"][0])
        if color is not None:
            col = frame[color]
            if _is_categorical(col):
                levels = _levels(col)
                names = [str(v) for v in levels]
                data["color"] = pd.Categorical(col.map(str).to_numpy(), categories=names)
                options = dict(color_by="color", color_map=figures.color_map(names))
            else:
                data["color"] = col.to_numpy(dtype=np.float64)
                options = dict(color_by="color", color_map=str(st["heatmap_colorscale"]).lower())
        old = self.scatter_widget
        self.scatter = self._jscatter.Scatter(x="x", y="y", data=data, height=self.height, axes=True,
                                              axes_grid=False, legend=color is not None, lasso_initiator=True,
                                              **options)
        self.scatter_widget = self.scatter.widget
        self.scatter_widget.observe(self._on_selection, names="selection")
        self.frame, self.color = data, color
        self._row_of = pd.Index(data["index"].to_numpy())
        self.title.value = f"<b>{html.escape(title)}</b>" if title else ""
        self.widget.children = (self.title, self.scatter_widget)
        if old is not None:
            old.close()
        return self

    # ------------------------------------------------------------------ selection
    def _on_selection(self, change: dict) -> None:
        if self._echo or self.on_select is None:
            return
        self.on_select(self.selected())

    def selected(self) -> list[int]:
        """The example indices selected in the widget (in the order of the drawn rows)."""
        if self.scatter_widget is None or self.scatter_widget.selection is None:
            return []
        rows = np.asarray(self.scatter_widget.selection, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= len(self.frame)):
            raise ValueError(f"the widget's selection holds rows outside 0..{len(self.frame) - 1}")
        return [int(i) for i in self.frame["index"].to_numpy()[rows]]

    def set_selection(self, indices: Sequence[int]) -> list[int]:
        """Select the points of these example indices in the widget (without calling ``on_select``); returns the
        indices that are drawn (an index outside the drawn subset cannot be shown)."""
        if self.scatter_widget is None:
            raise ValueError("nothing is drawn yet: call draw(frame) first")
        ids = np.asarray(list(indices), dtype=np.int64)
        rows = self._row_of.get_indexer(ids) if ids.size else np.zeros(0, dtype=np.int64)
        rows = rows[rows >= 0]
        self._echo = True
        try:
            self.scatter_widget.selection = rows.astype(np.uint32)
        finally:
            self._echo = False
        return [int(i) for i in self.frame["index"].to_numpy()[rows]]

    # ------------------------------------------------------------------ read back
    def plotted_data(self) -> pd.DataFrame:
        """The points the widget holds, read back from its synced state: ``index``, ``x``, ``y`` (the widget's
        normalised ``points`` mapped back through its ``x_scale_domain``/``y_scale_domain``) and the colour
        value (category name from ``color_domain``, or the numeric value)."""
        w = self.scatter_widget
        if w is None:
            return pd.DataFrame(columns=["index", "x", "y"])
        p = np.asarray(w.points, dtype=np.float64)
        out = pd.DataFrame({"index": self.frame["index"].to_numpy()})
        for k, name, dom in ((0, "x", w.x_scale_domain), (1, "y", w.y_scale_domain)):
            lo, hi = float(dom[0]), float(dom[1])
            out[name] = (p[:, k] + 1.0) / 2.0 * (hi - lo) + lo
        if self.color is not None:
            if isinstance(w.color_domain, dict):  # categorical: value -> code
                name_of = {int(code): name for name, code in w.color_domain.items()}
                out[self.color] = [name_of[int(c)] for c in p[:, 2]]
            else:
                out[self.color] = self.frame["color"].to_numpy()
        return out

    def point_colors(self) -> list[str]:
        """The colour (``#rrggbb``) the widget gives each drawn point, read from its ``points`` colour channel and
        ``color`` list (categorical colourings only)."""
        w = self.scatter_widget
        if w is None or not isinstance(w.color_domain, dict):
            raise ValueError("point_colors needs a categorical colouring")
        palette = ["#" + "".join(f"{round(255 * c):02x}" for c in rgba[:3]) for rgba in w.color]
        return [palette[int(c)] for c in np.asarray(w.points)[:, 2]]

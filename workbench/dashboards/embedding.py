"""Embedding explorer: PCA / UMAP of a layer at a checkpoint, coloured by label or factor; selecting points
(lasso / box / click) shows those examples.

Above :data:`~workbench.dashboards._scatter.LARGE_THRESHOLD` drawn points (50 000) the scatter is the WebGL widget
of jupyter-scatter (:class:`~workbench.dashboards._scatter.LargeScatter`) instead of plotly, with the same linked
selection (its ``selection`` trait → :meth:`EmbeddingExplorer.select_points`) and colouring; ``max_points=None``
draws every example (10⁶ stay interactive), ``engine=`` forces one engine.

The projection is :func:`workbench.figures.project` (a pure function, cached here per source × layer ×
method); the scatter is :func:`workbench.figures.embedding_scatter` (WebGL above
:data:`workbench.figures._embedding.WEBGL_THRESHOLD` points); the examples are drawn by
:func:`workbench.figures.example_grid` (images, signals) or listed as text (tokens, sentences).

>>> ex = EmbeddingExplorer({"simclr @ 1000": acts}, examples=ds["test"], vocab=ds.vocab)
>>> ex.select(layer="block3", method="umap", color="shape")
>>> ex.select_points([3, 17, 42])          # what a lasso selection does
"""
from __future__ import annotations

import html
import re
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from .. import figures
from ._base import ERROR_STYLE, Dashboard, LiveFigure, clear_figure, set_options, update_figure
from ._scatter import LARGE_THRESHOLD, LargeScatter, choose_engine

__all__ = ["EmbeddingExplorer"]

_NONE = "(none)"


class EmbeddingExplorer(Dashboard):
    """Interactive projection of activations.

    activations: an :class:`~workbench.activations.Activations` (layer → ``[N, D]``, with ``labels`` and
                 ``factors``) or a mapping ``{source name: Activations}`` (runs / checkpoints on the same examples).
    examples:    what to show for selected points: a :class:`~workbench.data.Split` (its ``inputs``), an array
                 ``[N, ...]`` of images / signals / token ids, or a list of N strings. None: indices only.
    vocab:       token strings for integer token ids (``Dataset.vocab``).
    method:      ``"pca"`` or ``"umap"``; color: ``"label"``, a factor name, or None.
    max_points:  project a fixed random subset (seeded) of this many examples when N is larger (None: all).
    engine:      ``"auto"`` (plotly up to :attr:`large_threshold` drawn points, jupyter-scatter's WebGL widget
                 above), ``"plotly"`` or ``"webgl"``.
    max_shown:   at most this many selected examples are drawn.
    """

    #: drawn points above which ``engine="auto"`` uses the WebGL widget (:data:`~._scatter.LARGE_THRESHOLD`)
    large_threshold: int = LARGE_THRESHOLD

    def __init__(self, activations: Any, examples: Any = None, *, source: str | None = None,
                 layer: str | None = None, method: str = "pca", color: str | None = "label",
                 max_points: int | None = 5000, max_shown: int = 16, seed: int = 0,
                 vocab: Sequence[str] | None = None, export_path: str = "embedding.svg", engine: str = "auto"):
        self._init_base(export_path)
        W = self._W
        if hasattr(activations, "layers") and hasattr(activations, "labels"):
            activations = {"activations": activations}
        if not isinstance(activations, Mapping) or not activations:
            raise TypeError("activations must be an Activations or a non-empty mapping {name: Activations}")
        self.sources = {str(k): v for k, v in activations.items()}
        sizes = {k: len(v[next(iter(v))]) for k, v in self.sources.items()}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"every source must hold the same examples; sizes: {sizes}")
        self.n = next(iter(sizes.values()))
        self.examples = self._examples(examples)
        self.vocab = list(vocab) if vocab is not None else None
        self.max_points = self.n if max_points is None else int(max_points)
        self.max_shown, self.seed = int(max_shown), int(seed)
        choose_engine(0, engine=engine)  # checks the name (and that jupyter-scatter is there for "webgl")
        self.engine, self._large = engine, None
        self.selected: list[int] = []
        self._pending: list[int] = []
        self._cache: dict[tuple, pd.DataFrame] = {}
        self._hooked: set[str] = set()
        self._shapes: tuple = ()

        self.source_w = W.Dropdown(description="source")
        self.layer_w = W.Dropdown(description="layer")
        self.method_w = W.ToggleButtons(options=list(figures.PROJECTIONS), description="method")
        self.color_w = W.Dropdown(description="colour")
        self.examples_figure = LiveFigure()
        self.examples_box = W.Box([self.examples_figure], layout=W.Layout(display="none"))  # shown with a selection
        self.examples_html = W.HTML()
        self.selection_info = W.HTML("<small>select points (lasso, box or click) to see the examples</small>")
        with self._hold():
            set_options(self.source_w, list(self.sources), source)
            self._set_dependent(layer=layer, color=color)
            self.method_w.value = self._check_choice(method, figures.PROJECTIONS, "method")
        for w in [self.source_w, self.layer_w, self.method_w, self.color_w]:
            w.observe(self._on_change, names="value")
        controls = W.HBox([W.VBox([self.source_w, self.layer_w]), W.VBox([self.method_w, self.color_w])])
        self.plot_box = W.Box([self.figure])  # the plotly figure, or the WebGL widget above large_threshold
        self._update()
        self.widget = W.VBox([controls, self.plot_box, self.selection_info, self.examples_box, self.examples_html,
                              self.export_row, self.status])

    # ------------------------------------------------------------------ inputs
    def _examples(self, examples: Any) -> Any:
        if examples is None:
            return None
        if hasattr(examples, "inputs"):  # a workbench Split
            examples = examples.inputs
        if isinstance(examples, (list, tuple)) and examples and isinstance(examples[0], str):
            out: Any = list(examples)
        else:
            out = examples.detach().cpu().numpy() if hasattr(examples, "detach") else np.asarray(examples)
        if len(out) != self.n:
            raise ValueError(f"examples has {len(out)} rows but the activations hold {self.n} examples")
        return out

    def _acts(self):
        return self.sources[self.source_w.value]

    def _set_dependent(self, *, layer, color) -> None:
        acts = self._acts()
        set_options(self.layer_w, [str(v) for v in acts], layer)
        colors = (["label"] if getattr(acts, "labels", None) is not None else []) + list(getattr(acts, "factors", {}))
        set_options(self.color_w, [None] + colors, color if color in colors else
                    (colors[0] if colors else None), labels=[_NONE] + colors)

    def _on_change(self, change=None) -> None:
        if self._hold_depth:
            return
        if change is not None and change["owner"] is self.source_w:
            with self._hold():
                self._set_dependent(layer=self.layer_w.value, color=self.color_w.value)
        self._update()

    # ------------------------------------------------------------------ projection (the library's) and figure
    def _rows(self) -> np.ndarray:
        if self.n <= self.max_points:
            return np.arange(self.n)
        return np.sort(np.random.default_rng(self.seed).choice(self.n, self.max_points, replace=False))

    def current_frame(self) -> pd.DataFrame:
        """The projection drawn: :func:`workbench.figures.project` of the chosen layer (cached), ``index`` =
        example row in the activations."""
        key = (self.source_w.value, self.layer_w.value, self.method_w.value)
        if key not in self._cache:
            acts = self._acts()
            rows = self._rows()
            labels = getattr(acts, "labels", None)
            factors = getattr(acts, "factors", {}) or {}
            x = acts[self.layer_w.value]
            x = x.numpy() if hasattr(x, "numpy") else np.asarray(x)
            frame = figures.project(x[rows], method=self.method_w.value, seed=self.seed,
                                    labels=None if labels is None else np.asarray(labels)[rows],
                                    factors={k: np.asarray(v)[rows] for k, v in factors.items()})
            frame["index"] = rows[frame["index"].to_numpy()]
            self._cache[key] = frame
        return self._cache[key]

    def _color_column(self) -> str | None:
        """The frame column of the chosen colouring: ``label``, or the factor's column
        (:func:`workbench.figures.factor_column`: the ``shapes`` factors ``x``/``y`` are not the coordinates)."""
        name = self.color_w.value
        if name is None or (name == "label" and getattr(self._acts(), "labels", None) is not None):
            return name
        return figures.factor_column(name)

    def _build_figure(self) -> go.Figure:
        frame = self.current_frame()
        return figures.embedding_scatter(frame, color=self._color_column(),
                                         title=f"{self.source_w.value} · {self.layer_w.value}")

    def drawn_engine(self) -> str:
        """``"plotly"`` or ``"webgl"``: the engine that draws the current number of points."""
        return choose_engine(min(self.n, self.max_points), engine=self.engine, threshold=self.large_threshold)

    def _update(self) -> None:
        if self.drawn_engine() == "webgl":
            if self._large is None:
                self._large = LargeScatter(on_select=self.select_points)
            try:
                self._large.draw(self.current_frame(), self._color_column(),
                                 title=f"{self.source_w.value} · {self.layer_w.value}")
            except ValueError as e:
                self.status.value = f"<span style='{ERROR_STYLE}'>{html.escape(str(e))}</span>"
                return
            clear_figure(self.figure, "drawn by the WebGL widget")
            self.plot_box.children = (self._large.widget,)
            self.status.value = ""
            return
        self.plot_box.children = (self.figure,)
        super()._update()
        self._shapes = _selection_key(self._drawn_selections())  # a redraw's own selections are not a lasso
        if not self._hooked:  # the layout object is kept across redraws: hook it once
            self.figure.layout.on_change(self._on_shapes, "selections")
        for trace in self.figure.data:  # traces are replaced when the colouring changes: hook new ones
            if trace.uid not in self._hooked:
                trace.on_selection(self._on_points)
                trace.on_click(self._on_points)
                self._hooked.add(trace.uid)

    # ------------------------------------------------------------------ selection -> examples
    def _drawn_selections(self) -> list[dict]:
        # the layout as synced (a relayout from the browser updates the layout's JSON; its ``selections`` tuple of
        # objects is not rebuilt)
        return list(self.figure.layout.to_plotly_json().get("selections") or [])

    def _on_shapes(self, _layout, _selections) -> None:
        """A lasso or box drawn in the browser: plotly.js stores it in ``layout.selections`` (data coordinates) and
        the FigureWidget syncs that layout change to the kernel. The points inside are selected here, in the kernel,
        from the drawn coordinates. (Why not only ``on_selection``: plotly's widget sends the selected points
        through the same synced field as hover events, and ipywidgets merges a field's pending updates, so a hover
        right after the mouse-up — the usual case — overwrote the selection before it reached the kernel: the
        lasso showed in the browser and nothing was selected. The layout's selections travel in their own field.)"""
        selections = self._drawn_selections()
        key = _selection_key(selections)
        if key == self._shapes:
            return
        self._shapes = key
        ids: list[int] = []
        for trace in self.figure.data:
            if trace.customdata is None or trace.x is None:
                continue
            inside = _inside_selections(np.asarray(trace.x, dtype=float), np.asarray(trace.y, dtype=float),
                                        selections)
            ids.extend(int(c[0]) for c in np.asarray(trace.customdata, dtype=object)[inside])
        self.select_points(ids)

    def _on_points(self, trace, points, _selector=None) -> None:
        """plotly calls this once per trace for each event (in trace order, also for traces with no points):
        gather the example ids and commit after the last trace."""
        self._pending.extend(int(trace.customdata[i][0]) for i in points.point_inds)
        if points.trace_index == len(self.figure.data) - 1:
            ids, self._pending = self._pending, []
            self.select_points(ids)

    def select_points(self, indices: Sequence[int]) -> EmbeddingExplorer:
        """Show the examples with these row indices (what a lasso / box selection or click does)."""
        ids = [int(i) for i in indices]
        bad = [i for i in ids if not 0 <= i < self.n]
        if bad:
            raise ValueError(f"indices {bad[:5]} are outside 0..{self.n - 1}")
        self.selected = list(dict.fromkeys(ids))
        if self._large is not None and self.plot_box.children[0] is self._large.widget:
            self._large.set_selection(self.selected)  # no echo: set_selection does not call back
        shown = self.selected[:self.max_shown]
        more = f" (showing {len(shown)})" if len(shown) < len(self.selected) else ""
        self.selection_info.value = f"<b>{len(self.selected)} selected</b>{more}: {shown}"
        self.examples_html.value = ""
        self.examples_box.layout.display = "none"  # no empty placeholder plot: the grid shows only with images
        if not shown:
            return self
        if self.examples is None:
            self.examples_html.value = "<small>no examples were given to show</small>"
            return self
        titles = self._titles(shown)
        ex = self.examples
        if isinstance(ex, list) or (ex.dtype.kind in "iu" and ex.ndim == 2 and self.vocab is not None) \
                or ex.dtype.kind in "US":
            items = "".join(f"<li><b>{html.escape(t)}</b>: {html.escape(self._text(ex[i]))}</li>"
                            for i, t in zip(shown, titles))
            self.examples_html.value = f"<ul style='font-family:monospace'>{items}</ul>"
        else:
            update_figure(self.examples_figure, figures.example_grid(np.asarray(ex[shown], dtype=float), titles))
            self.examples_box.layout.display = ""
        return self

    def _titles(self, ids: Sequence[int]) -> list[str]:
        acts = self._acts()
        col = self.color_w.value
        if col == "label" and getattr(acts, "labels", None) is not None:
            values = np.asarray(acts.labels)
        elif col is not None and col in (getattr(acts, "factors", {}) or {}):
            values = np.asarray(acts.factors[col])
        else:
            return [f"#{i}" for i in ids]
        return [f"#{i} {col}={values[i]}" for i in ids]

    def _text(self, row: Any) -> str:
        if isinstance(row, str):
            return row
        toks = np.asarray(row).tolist()
        if self.vocab is not None:
            return " ".join(self.vocab[t] for t in toks if 0 <= t < len(self.vocab))
        return " ".join(map(str, toks))

    def select(self, *, source: str | None = None, layer: str | None = None, method: str | None = None,
               color: Any = "keep") -> EmbeddingExplorer:
        """Set controls programmatically (None / "keep" keeps a control's value; ``color=None`` is one colour
        only when passed explicitly as ``color=None``) and redraw once."""
        with self._hold():
            if source is not None:
                self.source_w.value = self._check_choice(str(source), list(self.sources), "source")
                self._set_dependent(layer=layer or self.layer_w.value, color=self.color_w.value)
            if layer is not None:
                self.layer_w.value = self._check_choice(str(layer), [v for _l, v in self.layer_w.options], "layer")
            if method is not None:
                self.method_w.value = self._check_choice(method, figures.PROJECTIONS, "method")
            if color != "keep":
                self.color_w.value = self._check_choice(color, [v for _l, v in self.color_w.options], "color")
        self._update()
        return self

    def plotted_data(self) -> pd.DataFrame:
        """The rows the plot shows (read back from the WebGL widget above :attr:`large_threshold` points)."""
        if self.plot_box.children[0] is not self.figure:
            return self._large.plotted_data()
        return super().plotted_data()

    def current_figure(self) -> go.Figure:
        """What Export writes: the plotly figure; above :attr:`large_threshold` points it is built here from the
        drawn frame (plotly WebGL; slow for 10⁶ points)."""
        if self.plot_box.children[0] is not self.figure:
            return self._build_figure()
        return super().current_figure()

    def __repr__(self) -> str:
        return (f"EmbeddingExplorer(source={self.source_w.value!r}, layer={self.layer_w.value!r}, "
                f"method={self.method_w.value!r}, color={self.color_w.value!r}, selected={len(self.selected)})")


def _selection_key(selections) -> tuple:
    """A comparable form of ``layout.selections`` (as JSON dicts)."""
    return tuple(tuple(sorted((k, str(v)) for k, v in d.items() if k in ("type", "path", "x0", "x1", "y0", "y1")))
                 for d in selections)


def _inside_selections(x: np.ndarray, y: np.ndarray, selections) -> np.ndarray:
    """Which points ``(x, y)`` lie inside any of plotly's ``layout.selections``: a ``rect`` (``x0, x1, y0, y1``)
    or a lasso ``path`` (``"M x,y L x,y ... Z"``, a closed polygon; even-odd rule by ray casting: a point is
    inside when a ray to its right crosses the polygon's edges an odd number of times)."""
    inside = np.zeros(len(x), dtype=bool)
    for d in selections:
        if d.get("path"):
            pts = np.array([[float(v) for v in p.split(",")] for p in re.findall(r"[ML]\s*([^MLZ]+)", d["path"])])
            if len(pts) < 3:
                continue
            hit = np.zeros(len(x), dtype=bool)
            for (xa, ya), (xb, yb) in zip(pts, np.roll(pts, -1, axis=0)):
                crosses = (ya > y) != (yb > y)
                with np.errstate(divide="ignore", invalid="ignore"):
                    x_cross = xa + (y - ya) * (xb - xa) / (yb - ya)
                hit ^= crosses & (x < x_cross)
            inside |= hit
        elif all(d.get(k) is not None for k in ("x0", "x1", "y0", "y1")):
            x0, x1 = sorted((float(d["x0"]), float(d["x1"])))
            y0, y1 = sorted((float(d["y0"]), float(d["y1"])))
            inside |= (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
    return inside

"""Layer dashboard: pick runs / measure / split / checkpoint / layer and see the per-layer curve.

The dashboard keeps no results of its own: it holds the frame returned by the library (or by the
function you pass, re-called by *Reload*), filters it with the controls and draws it with
:func:`workbench.figures.layer_curve`. The plot is one ``plotly.graph_objects.FigureWidget``
(``dash.figure``) that is updated in place — the object never changes, so a handle kept in a
notebook stays live. No custom JavaScript; plotly's widget bundle ships with plotly (no CDN).

>>> dash = LayerDashboard(results, baseline="random-init")
>>> dash                                  # shows the widget in Jupyter
>>> dash.select(runs=["mae", "simclr"], measure="probe_accuracy", split="ood", layer="block4")
>>> dash.layer_values()                   # the readout table as a DataFrame
"""
from __future__ import annotations

import html
from typing import Any, Callable, Sequence

import pandas as pd
import plotly.graph_objects as go

from .. import figures
from ..results import check_tidy
from ._base import (FIGURE_HEIGHT, FIGURE_WIDTH, LATEST, LATEST_LABEL, Dashboard, LiveFigure, _widgets, clear_figure,
                    keep_latest, row, uniq, update_figure)

__all__ = ["LayerDashboard"]

_FILTERS = ("split", "target", "step")  # extra dimensions that get a Dropdown when present
_NONE_LABEL = "(none)"
_NA_LABEL = "(n/a)"


class LayerDashboard(Dashboard):
    """Interactive per-layer curves over runs.

    results:  per-layer results in the results schema (:mod:`workbench.results`: ``run, step, layer,
              layer_index, measure, split, value, ci_low, ci_high`` [+ extras such as ``target``]) or a
              zero-argument callable returning them.
    runs, measure, split, layer, step, target: initial selection (default: all runs, first measure,
              ``"test"`` split if present, no highlighted layer, ``step="latest"``: every run at its own
              latest step, so a baseline that ends early — a random-init twin at step 0 — stays visible;
              an explicit step shows only the rows at that step).
    baseline: run name(s) drawn dashed grey when selected (e.g. ``"random-init"``).
    error:    passed to :func:`~workbench.figures.layer_curve` (``True``/``"band"``, ``"bars"``, False).
    export_path: initial value of the *save as* box used by the Export button.
    """

    def __init__(self, results: pd.DataFrame | Callable[[], pd.DataFrame], *, runs: Sequence[str] | None = None,
                 measure: str | None = None, split: Any = None, layer: str | None = None, step: Any = None,
                 target: Any = None, baseline: str | Sequence[str] | None = None, error: bool | str = True,
                 export_path: str = "layer_curve.svg", title: str | None = None):
        W = _widgets()  # imported here: keep `import workbench` free of ipywidgets
        self._W = W
        self._source = results
        self.baseline = [baseline] if isinstance(baseline, str) else list(baseline or [])
        self.error = error
        self.title = title
        self._hold_depth = 0
        self.data = self._load()

        self.runs_w = W.SelectMultiple(description="runs", rows=6)
        self.measure_w = W.Dropdown(description="measure")
        self.filter_ws: dict[str, Any] = {c: W.Dropdown(description=c) for c in _FILTERS if c in self.data.columns}
        self.layer_w = W.Dropdown(description="layer")
        self.readout = W.HTML()
        self.status = W.HTML()
        self.path_w = W.Text(value=export_path, description="save as", placeholder="figs/layers.svg")
        self.export_button = W.Button(description="Export", icon="download", tooltip="figures.export(current view)")
        self.reload_button = W.Button(description="Reload", icon="refresh",
                                      tooltip="call the results function again", disabled=not callable(results))
        self.export_button.on_click(self._on_export)
        self.reload_button.on_click(lambda _b: self.refresh())

        # the user's last choice per filter, remembered across measures that lack that dimension
        self._wanted: dict[str, Any] = {"split": split, "target": target, "step": LATEST if step is None else step}
        with self._hold():
            self._set_options(runs=runs, measure=measure, layer=layer)
        self.figure = LiveFigure(self._build_figure() or go.Figure())
        self._refresh_readout()

        for w in [self.runs_w, self.measure_w, self.layer_w, *self.filter_ws.values()]:
            w.observe(self._on_change, names="value")

        controls = W.VBox([self.runs_w, self.measure_w, *self.filter_ws.values(), self.layer_w, self.readout],
                          layout=W.Layout(min_width="300px"))
        self.widget = W.VBox([
            row(controls, self.figure),
            W.HBox([self.path_w, self.export_button, self.reload_button]),
            self.status,
        ])

    # ------------------------------------------------------------------ data
    def _load(self) -> pd.DataFrame:
        df = self._source() if callable(self._source) else self._source
        if not isinstance(df, pd.DataFrame):
            raise TypeError(f"LayerDashboard needs a DataFrame (or a function returning one), got {type(df).__name__}")
        check_tidy(df, "LayerDashboard(results)")
        if df.empty:
            raise ValueError("LayerDashboard: the results frame is empty")
        return df

    def refresh(self) -> LayerDashboard:
        """Re-read the results (re-calls the function, if one was given) and redraw, keeping the selection."""
        self.data = self._load()
        for c in _FILTERS:
            if c in self.data.columns and c not in self.filter_ws:
                self.status.value = f"note: column {c!r} appeared; recreate the dashboard to get its control"
        with self._hold():
            self._set_options(runs=list(self.runs_w.value), measure=self.measure_w.value, layer=self.layer_w.value)
        self._update()
        return self

    def _set_options(self, *, runs, measure, layer) -> None:
        df = self.data
        all_runs = [str(r) for r in uniq(df["run"])]
        self.color_map = figures.color_map([r for r in all_runs if r not in self.baseline])
        self.runs_w.options = all_runs
        keep = [r for r in (runs if runs is not None else all_runs) if r in all_runs]
        self.runs_w.value = tuple(keep)
        measures = [str(m) for m in uniq(df["measure"])]
        self.measure_w.options = measures
        self.measure_w.value = measure if measure in measures else measures[0]
        self._set_dependent_options(layer=layer)

    def _set_dependent_options(self, *, layer) -> None:
        """Options that depend on the measure: filter values present for it, and its layers."""
        sub = self.data[self.data["measure"] == self.measure_w.value]
        for c, w in self.filter_ws.items():
            vals = uniq(sub[c])
            if c == "step":
                vals = sorted(vals)
            if not vals:  # this measure does not depend on c (e.g. rankme has no split)
                w.options, w.value, w.disabled = [(_NA_LABEL, None)], None, True
                continue
            w.disabled = False
            w.options = [(str(v), v) for v in vals]
            if c == "step":
                w.options = [(LATEST_LABEL, LATEST), *w.options]
                vals = [LATEST, *vals]
            want = self._wanted.get(c)
            if want in vals:
                w.value = want
            elif c == "split" and "test" in vals:
                w.value = "test"
            elif c == "step":
                w.value = LATEST
            else:
                w.value = vals[0]
        layers = sub.sort_values("layer_index", kind="stable")["layer"].astype(str)
        layer_opts = list(pd.unique(layers))
        self.layer_w.options = [(_NONE_LABEL, None)] + [(v, v) for v in layer_opts]
        self.layer_w.value = layer if layer in layer_opts else None

    # ------------------------------------------------------------------ selection
    def current_frame(self) -> pd.DataFrame:
        """The rows the plot shows: chosen measure and runs; for split/target/step the chosen value
        (rows where that column is empty are kept: the measure does not depend on it). ``step="latest"``
        keeps each run's rows at that run's own largest step (after the other filters)."""
        df = self.data
        mask = (df["measure"] == self.measure_w.value) & df["run"].astype(str).isin(list(self.runs_w.value))
        for c, w in self.filter_ws.items():
            if w.value is not None and not (c == "step" and w.value == LATEST):
                mask &= (df[c] == w.value) | df[c].isna()
        out = df[mask]
        step_w = self.filter_ws.get("step")
        if step_w is not None and step_w.value == LATEST:
            out = keep_latest(out, "run")
        return out

    def _build_figure(self) -> go.Figure | None:
        frame = self.current_frame()
        if frame.empty:
            return None
        runs = set(frame["run"].astype(str))
        layer = self.layer_w.value if self.layer_w.value in set(frame["layer"].astype(str)) else None
        fig = figures.layer_curve(
            frame, measure=self.measure_w.value, color="run", error=self.error,
            baseline=[b for b in self.baseline if b in runs] or None, title=self.title,
            highlight=layer, color_map=self.color_map)
        return fig.update_layout(width=FIGURE_WIDTH, height=FIGURE_HEIGHT, autosize=False)

    def layer_values(self) -> pd.DataFrame:
        """Values at the highlighted layer, one row per run (empty when no layer is highlighted)."""
        cols = [c for c in ("run", "value", "ci_low", "ci_high") if c in self.data.columns]
        if self.layer_w.value is None:
            return pd.DataFrame(columns=cols)
        frame = self.current_frame()
        at = frame[frame["layer"].astype(str) == self.layer_w.value]
        return at[cols].reset_index(drop=True)

    def select(self, *, runs: Sequence[str] | None = None, measure: str | None = None, split: Any = None,
               layer: str | None = None, step: Any = None, target: Any = None, clear_layer: bool = False
               ) -> LayerDashboard:
        """Set controls programmatically (arguments left as None keep their value) and redraw once."""
        with self._hold():
            if measure is not None:
                if measure not in self.measure_w.options:
                    raise ValueError(f"unknown measure {measure!r}; choose from {list(self.measure_w.options)}")
                if measure != self.measure_w.value:
                    self.measure_w.value = measure
                    self._set_dependent_options(layer=layer if layer is not None else self.layer_w.value)
            if runs is not None:
                runs = [runs] if isinstance(runs, str) else [str(r) for r in runs]
                bad = [r for r in runs if r not in self.runs_w.options]
                if bad:
                    raise ValueError(f"unknown run(s) {bad}; choose from {list(self.runs_w.options)}")
                self.runs_w.value = tuple(runs)
            for c, v in (("split", split), ("target", target), ("step", step)):
                if v is None:
                    continue
                w = self.filter_ws.get(c)
                if w is None:
                    raise ValueError(f"the results have no {c!r} column")
                allowed = [val for _lab, val in w.options]
                if v not in allowed:
                    raise ValueError(f"{c}={v!r} is not available for measure {self.measure_w.value!r}; "
                                     f"choose from {allowed}")
                w.value = v
                self._wanted[c] = v
            if clear_layer:
                self.layer_w.value = None
            elif layer is not None:
                allowed = [val for _lab, val in self.layer_w.options if val is not None]
                if str(layer) not in allowed:
                    raise ValueError(f"unknown layer {layer!r}; choose from {allowed}")
                self.layer_w.value = str(layer)
        self._update()
        return self

    # ------------------------------------------------------------------ drawing
    def _on_change(self, change) -> None:
        if self._hold_depth:
            return
        for c, w in self.filter_ws.items():
            if change["owner"] is w and not w.disabled:
                self._wanted[c] = change["new"]
        if change["owner"] is self.measure_w:
            with self._hold():
                self._set_dependent_options(layer=self.layer_w.value)
        self._update()

    def _update(self) -> None:
        new = self._build_figure()
        fw = self.figure
        if new is None:
            clear_figure(fw, "no rows for this selection")
            self.status.value = "<i>no rows for this selection</i>"
            self._refresh_readout()
            return
        update_figure(fw, new)
        if "no rows" in self.status.value:
            self.status.value = ""
        self._refresh_readout()

    def _refresh_readout(self) -> None:
        vals = self.layer_values()
        if self.layer_w.value is None:
            self.readout.value = "<small>pick a layer to read values off it</small>"
            return
        if vals.empty:
            self.readout.value = f"<small>no values at {html.escape(str(self.layer_w.value))}</small>"
            return
        table = vals.to_html(index=False, border=0, float_format=lambda v: f"{v:.4f}", na_rep="")
        self.readout.value = f"<b>{html.escape(str(self.layer_w.value))}</b>{table}"

    # ------------------------------------------------------------------ export & display
    def __repr__(self) -> str:
        return (f"LayerDashboard(runs={list(self.runs_w.value)}, measure={self.measure_w.value!r}, "
                + "".join(f"{c}={w.value!r}, " for c, w in self.filter_ws.items())
                + f"layer={self.layer_w.value!r})")

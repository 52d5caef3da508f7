"""Probe dashboard: accuracy by layer for several runs or checkpoints, switching method, target and split,
with the random-init baseline and control-task selectivity drawn in (:func:`workbench.figures.probe_curve`).

>>> dash = ProbeDashboard(probe_table, baseline="random-init")     # a results-schema table with a run column
>>> dash.select(runs=["supervised", "simclr"], method="logistic", target="shape", split="ood")
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import pandas as pd
import plotly.graph_objects as go

from .. import figures
from ..results import check_tidy
from ._base import FIGURE_HEIGHT, FIGURE_WIDTH, LATEST, LATEST_LABEL, Dashboard, keep_latest, row, set_options, uniq

__all__ = ["ProbeDashboard"]

FILTERS = ("method", "target", "split", "step")  # columns that get a Dropdown when present
_SECONDARY = ("control_accuracy", "selectivity")


class ProbeDashboard(Dashboard):
    """Interactive :func:`~workbench.figures.probe_curve`.

    results:   probe table in the results schema (:mod:`workbench.results`: ``run, step, layer, layer_index,
               measure, split, value, ci_low, ci_high`` [+ ``method``, ``target``, ``baseline``]) or a
               zero-argument callable returning one (re-read by :meth:`refresh`).
    color:     the column drawn one line per value: ``"run"`` (default), or ``"step"`` to compare
               checkpoints of one run (the step control then disappears). Rows without a value there (a probe
               on bare arrays has no ``run``) are named by their ``method``.
    runs:      initial values of ``color`` shown (default all).
    baseline:  value(s) of ``color`` drawn dashed grey (e.g. ``"random-init"``).
    method, target, split, step, measure: initial selection (default: first value; ``"test"`` split if
               present; ``step="latest"``: every run at its own latest step). A filter column that is empty on
               every row (``step`` of a probe on bare arrays) gets no control.
    """

    def __init__(self, results: pd.DataFrame | Callable[[], pd.DataFrame], *, color: str = "run",
                 runs: Sequence[Any] | None = None, baseline: str | Sequence[str] | None = None,
                 method: Any = None, target: Any = None, split: Any = None, step: Any = None,
                 measure: str | None = None, control: bool = True, selectivity: bool = True,
                 export_path: str = "probe_curve.svg", title: str | None = None):
        self._init_base(export_path)
        W = self._W
        self._source, self.color, self.title = results, color, title
        self.baseline = [baseline] if isinstance(baseline, str) else list(baseline or [])
        self.data = self._load()
        self.runs_w = W.SelectMultiple(description=color, rows=6)
        self.measure_w = W.Dropdown(description="measure")
        self.filter_ws = {c: W.Dropdown(description=c) for c in FILTERS
                          if c in self.data.columns and c != color and self.data[c].notna().any()}
        self.control_w = W.Checkbox(value=bool(control), description="control task (dotted)")
        self.selectivity_w = W.Checkbox(value=bool(selectivity), description="selectivity panel")
        with self._hold():
            self._set_options(runs=runs, measure=measure,
                              wanted=dict(method=method, target=target, split=split, step=step))
        self._update()
        for w in [self.runs_w, self.measure_w, self.control_w, self.selectivity_w, *self.filter_ws.values()]:
            w.observe(self._on_change, names="value")
        controls = W.VBox([self.runs_w, self.measure_w, *self.filter_ws.values(), self.control_w, self.selectivity_w],
                          layout=W.Layout(min_width="300px"))
        self.widget = W.VBox([row(controls, self.figure), self.export_row, self.status])

    def _load(self) -> pd.DataFrame:
        df = self._source() if callable(self._source) else self._source
        check_tidy(df, "ProbeDashboard(results)", require=[self.color])
        if df.empty:
            raise ValueError("ProbeDashboard: the results frame is empty")
        if df[self.color].isna().any() and "method" in df.columns:  # a probe on bare arrays has no run: its method
            df = df.assign(**{self.color: df[self.color].astype(object).where(df[self.color].notna(), df["method"])})
        return df

    def refresh(self) -> ProbeDashboard:
        """Re-read the results (re-calls the function, if one was given) and redraw, keeping the selection."""
        self.data = self._load()
        with self._hold():
            self._set_options(runs=list(self.runs_w.value), measure=self.measure_w.value,
                              wanted={c: w.value for c, w in self.filter_ws.items()})
        self._update()
        return self

    def _set_options(self, *, runs, measure, wanted) -> None:
        df = self.data
        groups = [str(g) for g in uniq(df[self.color])]
        set_options(self.runs_w, groups, groups if runs is None else [str(r) for r in runs])
        measures = [m for m in uniq(df["measure"]) if m not in _SECONDARY]
        default = next((m for m in figures.ACCURACY_MEASURES if m in measures),
                       measures[0] if measures else None)
        set_options(self.measure_w, measures, measure if measure in measures else default)
        for c, w in self.filter_ws.items():
            vals = uniq(df[c])
            if c == "step":  # first choice: every run at its own latest step (keeps an early-ending baseline)
                vals = sorted(vals)
                set_options(w, [LATEST, *vals], wanted.get(c) if wanted.get(c) in vals else LATEST,
                            labels=[LATEST_LABEL, *map(str, vals)])
                continue
            want = wanted.get(c)
            if want not in vals:
                want = "test" if c == "split" and "test" in vals else None
            set_options(w, vals, want)

    # ------------------------------------------------------------------ selection
    def current_frame(self) -> pd.DataFrame:
        """The rows drawn: chosen groups, and for method/target/split/step the chosen value (rows where that
        column is empty are kept)."""
        df = self.data
        mask = df[self.color].astype(str).isin(list(self.runs_w.value))
        for c, w in self.filter_ws.items():
            if w.value is not None and not (c == "step" and w.value == LATEST):
                mask &= (df[c] == w.value) | df[c].isna()
        out = df[mask]
        step_w = self.filter_ws.get("step")
        return keep_latest(out, self.color) if step_w is not None and step_w.value == LATEST else out

    def _build_figure(self) -> go.Figure | None:
        frame = self.current_frame()
        if frame.empty or self.measure_w.value not in set(frame["measure"]):
            return None
        present = set(frame[self.color].astype(str))
        fig = figures.probe_curve(frame, self.measure_w.value, color=self.color,
                                  baseline=[b for b in self.baseline if b in present] or None,
                                  control=self.control_w.value, selectivity=self.selectivity_w.value,
                                  title=self.title)
        return fig.update_layout(width=FIGURE_WIDTH, height=FIGURE_HEIGHT + 60, autosize=False)

    def select(self, *, runs: Sequence[Any] | None = None, measure: str | None = None, method: Any = None,
               target: Any = None, split: Any = None, step: Any = None, control: bool | None = None,
               selectivity: bool | None = None) -> ProbeDashboard:
        """Set controls programmatically (None keeps a control's value) and redraw once."""
        with self._hold():
            if runs is not None:
                runs = [runs] if isinstance(runs, str) else [str(r) for r in runs]
                allowed = [v for _l, v in self.runs_w.options]
                bad = [r for r in runs if r not in allowed]
                if bad:
                    raise ValueError(f"unknown {self.color}(s) {bad}; choose from {allowed}")
                self.runs_w.value = tuple(runs)
            if measure is not None:
                self.measure_w.value = self._check_choice(measure, [v for _l, v in self.measure_w.options], "measure")
            for c, v in (("method", method), ("target", target), ("split", split), ("step", step)):
                if v is None:
                    continue
                if c not in self.filter_ws:
                    raise ValueError(f"the results have no {c!r} control (column absent, or it is the colour)")
                w = self.filter_ws[c]
                w.value = self._check_choice(v, [val for _l, val in w.options], c)
            if control is not None:
                self.control_w.value = bool(control)
            if selectivity is not None:
                self.selectivity_w.value = bool(selectivity)
        self._update()
        return self

    def __repr__(self) -> str:
        return (f"ProbeDashboard({self.color}={list(self.runs_w.value)}, measure={self.measure_w.value!r}, "
                + ", ".join(f"{c}={w.value!r}" for c, w in self.filter_ws.items()) + ")")

"""Probe dashboard: accuracy by layer for several runs or checkpoints, switching probe, target and split,
with the random-init baseline and control-task selectivity drawn in (:func:`workbench.figures.probe_curve`).

>>> dash = ProbeDashboard(probe_table, baseline="random-init")     # columns layer, probe, target, split,
>>> dash.select(runs=["supervised", "simclr"], probe="logistic", target="shape", split="ood")
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import pandas as pd
import plotly.graph_objects as go

from .. import figures
from ._base import FIGURE_HEIGHT, FIGURE_WIDTH, LATEST, LATEST_LABEL, Dashboard, keep_latest, row, set_options, uniq

__all__ = ["ProbeDashboard"]

FILTERS = ("probe", "target", "split", "step")  # columns that get a Dropdown when present
_SECONDARY = ("control_accuracy", "selectivity")


class ProbeDashboard(Dashboard):
    """Interactive :func:`~workbench.figures.probe_curve`.

    results:   probe table (``layer, metric, value`` [+ ``ci_low, ci_high``, ``probe``, ``target``, ``split``,
               ``step``, ``run``, ``layer_index``, ``baseline``]) or a zero-argument callable returning one
               (re-read by :meth:`refresh`).
    color:     the column drawn one line per value: ``"run"`` (default), or ``"step"`` to compare
               checkpoints of one run (the step control then disappears).
    runs:      initial values of ``color`` shown (default all).
    baseline:  value(s) of ``color`` drawn dashed grey (e.g. ``"random-init"``).
    probe, target, split, step, metric: initial selection (default: first value; ``"test"`` split if present;
               ``step="latest"``: every run at its own latest step).
    """

    def __init__(self, results: pd.DataFrame | Callable[[], pd.DataFrame], *, color: str = "run",
                 runs: Sequence[Any] | None = None, baseline: str | Sequence[str] | None = None,
                 probe: Any = None, target: Any = None, split: Any = None, step: Any = None,
                 metric: str | None = None, control: bool = True, selectivity: bool = True,
                 export_path: str = "probe_curve.svg", title: str | None = None):
        self._init_base(export_path)
        W = self._W
        self._source, self.color, self.title = results, color, title
        self.baseline = [baseline] if isinstance(baseline, str) else list(baseline or [])
        self.data = self._load()
        self.runs_w = W.SelectMultiple(description=color, rows=6)
        self.metric_w = W.Dropdown(description="metric")
        self.filter_ws = {c: W.Dropdown(description=c) for c in FILTERS if c in self.data.columns and c != color}
        self.control_w = W.Checkbox(value=bool(control), description="control task (dotted)")
        self.selectivity_w = W.Checkbox(value=bool(selectivity), description="selectivity panel")
        with self._hold():
            self._set_options(runs=runs, metric=metric, wanted=dict(probe=probe, target=target, split=split, step=step))
        self._update()
        for w in [self.runs_w, self.metric_w, self.control_w, self.selectivity_w, *self.filter_ws.values()]:
            w.observe(self._on_change, names="value")
        controls = W.VBox([self.runs_w, self.metric_w, *self.filter_ws.values(), self.control_w, self.selectivity_w],
                          layout=W.Layout(min_width="300px"))
        self.widget = W.VBox([row(controls, self.figure), self.export_row, self.status])

    def _load(self) -> pd.DataFrame:
        df = self._source() if callable(self._source) else self._source
        if not isinstance(df, pd.DataFrame):
            raise TypeError(f"ProbeDashboard: results must be a DataFrame (or a function returning one), "
                            f"got {type(df).__name__}")
        missing = [c for c in ("layer", "metric", "value", self.color) if c not in df.columns]
        if missing:
            raise ValueError(f"ProbeDashboard: results lack column(s) {missing}; got {list(df.columns)} "
                             "(a probe table from workbench.probing with a 'run' column added)")
        if df.empty:
            raise ValueError("ProbeDashboard: the results frame is empty")
        return figures.with_layer_index(df)

    def refresh(self) -> "ProbeDashboard":
        """Re-read the results (re-calls the function, if one was given) and redraw, keeping the selection."""
        self.data = self._load()
        with self._hold():
            self._set_options(runs=list(self.runs_w.value), metric=self.metric_w.value,
                              wanted={c: w.value for c, w in self.filter_ws.items()})
        self._update()
        return self

    def _set_options(self, *, runs, metric, wanted) -> None:
        df = self.data
        groups = [str(g) for g in uniq(df[self.color])]
        set_options(self.runs_w, groups, groups if runs is None else [str(r) for r in runs])
        metrics = [m for m in uniq(df["metric"]) if m not in _SECONDARY]
        default = next((m for m in figures.probes.ACCURACY_METRICS if m in metrics), metrics[0] if metrics else None)
        set_options(self.metric_w, metrics, metric if metric in metrics else default)
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
        """The rows drawn: chosen groups, and for probe/target/split/step the chosen value (rows where that
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
        if frame.empty or self.metric_w.value not in set(frame["metric"]):
            return None
        present = set(frame[self.color].astype(str))
        fig = figures.probe_curve(frame, self.metric_w.value, color=self.color,
                                  baseline=[b for b in self.baseline if b in present] or None,
                                  control=self.control_w.value, selectivity=self.selectivity_w.value,
                                  title=self.title)
        return fig.update_layout(width=FIGURE_WIDTH, height=FIGURE_HEIGHT + 60, autosize=False)

    def select(self, *, runs: Sequence[Any] | None = None, metric: str | None = None, probe: Any = None,
               target: Any = None, split: Any = None, step: Any = None, control: bool | None = None,
               selectivity: bool | None = None) -> "ProbeDashboard":
        """Set controls programmatically (None keeps a control's value) and redraw once."""
        with self._hold():
            if runs is not None:
                runs = [runs] if isinstance(runs, str) else [str(r) for r in runs]
                allowed = [v for _l, v in self.runs_w.options]
                bad = [r for r in runs if r not in allowed]
                if bad:
                    raise ValueError(f"unknown {self.color}(s) {bad}; choose from {allowed}")
                self.runs_w.value = tuple(runs)
            if metric is not None:
                self.metric_w.value = self._check_choice(metric, [v for _l, v in self.metric_w.options], "metric")
            for c, v in (("probe", probe), ("target", target), ("split", split), ("step", step)):
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
        return (f"ProbeDashboard({self.color}={list(self.runs_w.value)}, metric={self.metric_w.value!r}, "
                + ", ".join(f"{c}={w.value!r}" for c, w in self.filter_ws.items()) + ")")

"""Probe accuracy by layer, with the random-init baseline, control-task accuracy and selectivity.

Input: a probe table as :mod:`workbench.probing` returns it (``layer, probe, target, split, metric, value,
ci_low, ci_high`` [+ ``run``, ``step``, ``layer_index``]), filtered by the caller to one probe, target,
split and step. :func:`workbench.probing.selectivity` adds the metrics ``task_accuracy``,
``control_accuracy`` and ``selectivity`` (= task − control, Hewitt & Liang 2019);
:func:`workbench.probing.with_baseline` adds ``baseline`` (+ ``baseline_ci_low/high``) columns with the
random-init twin's score of the same row. No number is computed here: every value drawn is a row given.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from . import style as _style
from .builders import _as_list, _require, _unique, attach_data, layer_curve

__all__ = ["probe_curve", "with_layer_index", "ACCURACY_METRICS"]

#: the probe-table metrics drawn in the top panel, first present wins when ``metric`` is not given
ACCURACY_METRICS = ("accuracy", "task_accuracy")


def with_layer_index(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with a ``layer_index`` column: kept when present, else each layer's first-appearance position
    (probe tables list layers in forward order)."""
    _require(df, ["layer"], "with_layer_index")
    if "layer_index" in df.columns:
        return df
    order = {v: i for i, v in enumerate(_unique(df["layer"].astype(str)))}
    return df.assign(layer_index=df["layer"].astype(str).map(order).astype(int))


def probe_curve(df: pd.DataFrame, metric: str | None = None, *, color: str = "run",
                baseline: str | Sequence[str] | None = None, control: bool = True, selectivity: bool = True,
                error: bool | str = True, highlight: str | None = None, title: str | None = None,
                color_map: Mapping[str, str] | None = None) -> go.Figure:
    """Probe accuracy across layers, one line per ``color`` group.

    df:          probe table rows for one probe / target / split / step (each (group, layer, metric) once).
    metric:      the accuracy metric of the top panel (default: the first of :data:`ACCURACY_METRICS` present).
    color:       column giving one line per value (``"run"``; ``"step"`` for checkpoints of one run).
    baseline:    value(s) of ``color`` drawn dashed grey, e.g. the ``"random-init"`` run.
    control:     draw ``control_accuracy`` rows (if any) as dotted lines in the group's colour; the gap to
                 the solid line is the selectivity.
    selectivity: add a lower panel with the ``selectivity`` rows (if any).
    error:       CI band / bars from ``ci_low``, ``ci_high`` (see :func:`~workbench.figures.layer_curve`).

    When ``df`` has a ``baseline`` column (:func:`workbench.probing.with_baseline`), each group's baseline
    score is drawn dashed in the group's colour and named ``"<group> · random init"``.
    The attached data (CSV on export) are the rows drawn, with a ``panel`` column.
    """
    _require(df, ["layer", "metric", "value", color], "probe_curve")
    data = with_layer_index(df)
    metrics = _unique(data["metric"])
    if metric is None:
        metric = next((m for m in ACCURACY_METRICS if m in metrics), None)
        if metric is None:
            raise ValueError(f"probe_curve: no accuracy rows (metric one of {ACCURACY_METRICS}); metrics present: "
                             f"{metrics}; pass metric=...")
    elif metric not in metrics:
        raise ValueError(f"probe_curve: metric {metric!r} not in the data; available: {metrics}")
    base_groups = [str(b) for b in _as_list(baseline)]
    groups = [g for g in _unique(data[color].astype(str)) if g not in base_groups]
    cmap = {**_style.color_map(groups), **{str(k): v for k, v in (color_map or {}).items()}}

    acc = data[data["metric"] == metric]
    top = layer_curve(acc, color=color, error=error, color_map=cmap,
                      baseline=[b for b in base_groups if b in set(acc[color].astype(str))] or None)
    drawn = [acc.assign(panel=metric)]
    extra: list[go.Scatter] = []
    if control and "control_accuracy" in metrics:
        ctrl = data[(data["metric"] == "control_accuracy") & ~data[color].astype(str).isin(base_groups)]
        if not ctrl.empty:
            f = layer_curve(ctrl, color=color, error=False, color_map=cmap)
            for t in f.data:
                t.update(name=f"{t.name} · control", line_dash="dot", showlegend=True)
            extra += list(f.data)
            drawn.append(ctrl.assign(panel=metric))
    if "baseline" in acc.columns and acc["baseline"].notna().any():
        b = acc[~acc[color].astype(str).isin(base_groups)].dropna(subset=["baseline"])
        b = b.assign(value=b["baseline"], ci_low=b.get("baseline_ci_low"), ci_high=b.get("baseline_ci_high"))
        f = layer_curve(b, color=color, error=False, color_map=cmap)
        for t in f.data:
            t.update(name=f"{t.name} · random init", line_dash="dash", opacity=0.7)
        extra += list(f.data)
        drawn.append(b.assign(panel=f"{metric} (random init)"))

    sel = data[data["metric"] == "selectivity"] if selectivity and "selectivity" in metrics else data.iloc[:0]
    sel = sel[~sel[color].astype(str).isin(base_groups)]
    rows = 2 if not sel.empty else 1
    fig = make_subplots(rows=rows, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        row_heights=[0.68, 0.32] if rows == 2 else None)
    fig.update_layout(template=_style.TEMPLATE)
    for t in list(top.data) + extra:
        fig.add_trace(t, row=1, col=1)
    if rows == 2:
        f = layer_curve(sel, color=color, error=False, color_map=cmap)
        for t in f.data:
            t.update(showlegend=False)
            fig.add_trace(t, row=2, col=1)
        fig.add_hline(y=0, line=dict(color=_style.get_style()["baseline_color"], width=1, dash="dot"), row=2, col=1)
        fig.update_yaxes(title_text="selectivity", row=2, col=1)
        drawn.append(sel.assign(panel="selectivity"))
    layers = [str(v) for v in pd.unique(data.sort_values("layer_index", kind="stable")["layer"].astype(str))]
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=layers)
    fig.update_xaxes(title_text="layer", row=rows, col=1)
    fig.update_yaxes(title_text=metric.replace("_", " "), row=1, col=1)
    if highlight is not None:
        if str(highlight) not in layers:
            raise ValueError(f"highlight layer {highlight!r} is not among the plotted layers {layers}")
        for r in range(1, rows + 1):
            fig.add_vline(x=str(highlight), line=dict(color=_style.get_style()["axis_color"], width=1, dash="dot"),
                          row=r, col=1)
    if title:
        fig.update_layout(title_text=title)
    return attach_data(fig, pd.concat(drawn, ignore_index=True), "probe_curve")

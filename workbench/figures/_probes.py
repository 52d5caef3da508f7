"""Probe accuracy by layer, with the random-init baseline, control-task accuracy and selectivity.

Input: a probe table as :mod:`workbench.probing` returns it, in the one results schema
(:mod:`workbench.results`: ``run, step, layer, layer_index, measure, split, value, ci_low, ci_high`` +
``target``, ``method``), filtered by the caller to one method, target, split and step.
:func:`workbench.probing.selectivity` gives the measures ``task_accuracy``, ``control_accuracy`` and
``selectivity`` (= task − control, Hewitt & Liang 2019);
:func:`workbench.probing.with_baseline` adds ``baseline`` (+ ``baseline_ci_low/high``) columns with the
random-init twin's score of the same row. No number is computed here: every value drawn is a row given.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .._validation import Data, Flag, Instance, declare
from ..results import check_tidy
from . import _style
from ._builders import (_COLOR_MAP, _ERROR, _MEASURE, _TITLE, _as_list, _example_table, _plottable, _unique,
                        attach_data, layer_curve)

__all__ = ["probe_curve", "with_layer_index", "ACCURACY_MEASURES"]

#: the probe-table measures drawn in the top panel, first present wins when ``measure`` is not given
ACCURACY_MEASURES = ("accuracy", "task_accuracy")


@declare(df=Data("any", example=lambda: _example_table().drop(columns="layer_index"),
                 bad=[pd.DataFrame({"value": [1.0]}), "df"]))
def with_layer_index(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with a ``layer_index`` column: kept when present, else each layer's first-appearance position
    (probe tables list layers in forward order)."""
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"with_layer_index(df) needs a pandas DataFrame, got {type(df).__name__}")
    if "layer" not in df.columns:
        raise ValueError(f"with_layer_index(df): missing column(s) ['layer']; got columns {list(df.columns)}")
    if "layer_index" in df.columns:
        return df
    order = {v: i for i, v in enumerate(_unique(df["layer"].astype(str)))}
    return df.assign(layer_index=df["layer"].astype(str).map(order).astype(int))


@declare(df=Data("any", example=_example_table, bad=[pd.DataFrame({"measure": ["accuracy"], "value": [0.5]}), "df"]),
         measure=_MEASURE, color=Instance(str), baseline=Instance(str, int, float, Iterable, none=True),
         control=Flag(), selectivity=Flag(), error=_ERROR, highlight=Instance(str, none=True), title=_TITLE,
         color_map=_COLOR_MAP)
def probe_curve(df: pd.DataFrame, measure: str | None = None, *, color: str = "run",
                baseline: str | Sequence[str] | None = None, control: bool = True, selectivity: bool = True,
                error: bool | str = True, highlight: str | None = None, title: str | None = None,
                color_map: Mapping[str, str] | None = None) -> go.Figure:
    """Probe accuracy across layers, one line per ``color`` group.

    df:          probe table rows (results schema) for one method / target / split / step (each (group, layer,
                 measure) once); layers are ordered by ``layer_index``.
    measure:     the accuracy measure of the top panel (default: the first of :data:`ACCURACY_MEASURES` present).
    color:       column giving one line per value (``"run"``; ``"step"`` for checkpoints of one run). Rows whose
                 ``color`` is empty (a probe on bare arrays has no ``run``) are named by their ``method``.
    baseline:    value(s) of ``color`` drawn dashed grey, e.g. the ``"random-init"`` run.
    control:     draw ``control_accuracy`` rows (if any) as dotted lines in the group's colour; the gap to
                 the solid line is the selectivity.
    selectivity: add a lower panel with the ``selectivity`` rows (if any).
    error:       CI band / bars from ``ci_low``, ``ci_high`` (see :func:`~workbench.figures.layer_curve`).

    When ``df`` has a ``baseline`` column (:func:`workbench.probing.with_baseline`), each group's baseline
    score is drawn dashed in the group's colour and named ``"<group> · random init"``.
    The attached data (CSV on export) are the rows drawn, with a ``panel`` column.
    """
    data = _plottable(check_tidy(df, "probe_curve(df)", require=[color]), "probe_curve(df)")
    if data[color].isna().any() and "method" in data.columns:
        data = data.assign(**{color: data[color].astype(object).where(data[color].notna(), data["method"])})
    measures = _unique(data["measure"])
    if measure is None:
        measure = next((m for m in ACCURACY_MEASURES if m in measures), None)
        if measure is None:
            raise ValueError(f"probe_curve: no accuracy rows (measure one of {ACCURACY_MEASURES}); measures present: "
                             f"{measures}; pass measure=...")
    elif measure not in measures:
        raise ValueError(f"probe_curve: measure {measure!r} not in the data; available: {measures}")
    base_groups = [str(b) for b in _as_list(baseline)]
    groups = [g for g in _unique(data[color].astype(str)) if g not in base_groups]
    cmap = {**_style.color_map(groups), **{str(k): v for k, v in (color_map or {}).items()}}

    acc = data[data["measure"] == measure]
    top = layer_curve(acc, color=color, error=error, color_map=cmap,
                      baseline=[b for b in base_groups if b in set(acc[color].astype(str))] or None)
    drawn = [acc.assign(panel=measure)]
    extra: list[go.Scatter] = []
    if control and "control_accuracy" in measures:
        ctrl = data[(data["measure"] == "control_accuracy") & ~data[color].astype(str).isin(base_groups)]
        if not ctrl.empty:
            f = layer_curve(ctrl, color=color, error=False, color_map=cmap)
            for t in f.data:
                t.update(name=f"{t.name} · control", line_dash="dot", showlegend=True)
            extra += list(f.data)
            drawn.append(ctrl.assign(panel=measure))
    if "baseline" in acc.columns and acc["baseline"].notna().any():
        b = acc[~acc[color].astype(str).isin(base_groups)].dropna(subset=["baseline"])
        b = b.assign(value=b["baseline"], ci_low=b.get("baseline_ci_low"), ci_high=b.get("baseline_ci_high"))
        f = layer_curve(b, color=color, error=False, color_map=cmap)
        for t in f.data:
            t.update(name=f"{t.name} · random init", line_dash="dash", opacity=0.7)
        extra += list(f.data)
        drawn.append(b.assign(panel=f"{measure} (random init)"))

    sel = data[data["measure"] == "selectivity"] if selectivity and "selectivity" in measures else data.iloc[:0]
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
    fig.update_yaxes(title_text=measure.replace("_", " "), row=1, col=1)
    if highlight is not None:
        if str(highlight) not in layers:
            raise ValueError(f"highlight layer {highlight!r} is not among the plotted layers {layers}")
        for r in range(1, rows + 1):
            fig.add_vline(x=str(highlight), line=dict(color=_style.get_style()["axis_color"], width=1, dash="dot"),
                          row=r, col=1)
    if title:
        fig.update_layout(title_text=title)
    return attach_data(fig, pd.concat(drawn, ignore_index=True), "probe_curve")

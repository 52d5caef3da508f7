"""Figures of the interventions (:mod:`workbench.interventions`): INLP's held-out accuracy against iteration, the
patched fraction per layer, and amnesic probing's task score per condition. Tables in, figures out: every value
drawn is a row given (no number is computed here but the band/bar geometry)."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from .._validation import Data, Instance, Interval, Options, declare
from ..results import check_tidy, tidy
from . import _style
from ._builders import _COLOR_MAP, _TITLE, _layer_order, _plottable, _unique, attach_data

__all__ = ["inlp_curve", "patching_curve", "amnesic_bars"]


def _example_inlp() -> pd.DataFrame:
    rows = [{"measure": "accuracy", "value": v, "ci_low": v - 0.03, "ci_high": v + 0.03, "iteration": i}
            for i, v in enumerate((0.95, 0.62, 0.51))]
    return tidy(rows, split="heldout", method="inlp")


def _example_patching() -> pd.DataFrame:
    rows = [{"layer": layer, "measure": "patched_fraction", "value": v, "ci_low": v - 0.1, "ci_high": v + 0.1,
             "method": "patched"} for layer, v in (("enc", 0.0), ("mid", 0.8), ("head", 1.0))]
    return tidy(rows, run="a", run_b="b")


def _example_amnesic() -> pd.DataFrame:
    return tidy([{"layer": "enc", "measure": m, "value": v, "ci_low": v - 0.02, "ci_high": v + 0.02, "method": k}
                 for m, values in (("accuracy", (0.97, 0.5, 0.96)), ("loss", (0.1, 0.69, 0.12)))
                 for k, v in zip(("none", "amnesic", "control"), values)], target="task")


def _groups(data: pd.DataFrame, color: str, unnamed: str) -> pd.Series:
    """The line / bar group of each row: its ``color`` value, ``unnamed`` where empty (or the column is absent)."""
    if color not in data.columns:
        return pd.Series(unnamed, index=data.index)
    return data[color].astype(object).where(data[color].notna(), unnamed).astype(str)


def _has_ci(data: pd.DataFrame) -> bool:
    return bool(data["ci_low"].notna().any() and data["ci_high"].notna().any())


def _error_y(part: pd.DataFrame) -> dict[str, Any]:
    return dict(type="data", symmetric=False, array=(part["ci_high"] - part["value"]).clip(lower=0).tolist(),
                arrayminus=(part["value"] - part["ci_low"]).clip(lower=0).tolist())


@declare(df=Data("any", example=_example_inlp, bad=[pd.DataFrame({"value": [1.0]}), "df"]), color=Instance(str),
         error=Options(True, False, "band", "bars"), chance=Interval(float, 0, 1, none=True), title=_TITLE,
         color_map=_COLOR_MAP)
def inlp_curve(df: pd.DataFrame, *, color: str = "run", error: bool | str = True, chance: float | None = None,
               title: str | None = None, color_map: Mapping[str, str] | None = None) -> go.Figure:
    """Held-out probe accuracy against INLP iteration (``NullspaceProjection.table`` of
    :func:`workbench.interventions.nullspace_projection`; several tables concatenated for several runs or layers).

    df:     rows in the results schema with an ``iteration`` column and measure ``accuracy`` (one row per iteration
            and group; other measures are ignored).
    color:  column giving one line per value (rows where it is empty form one line named ``INLP``).
    error:  True / ``"band"``: shaded band from ``ci_low``..``ci_high``; ``"bars"``: error bars; False: none.
    chance: the chance accuracy (``NullspaceProjection.chance``), drawn as a dashed grey line; None: none.

    Iteration ``i`` is the accuracy of a fresh classifier after the directions of ``i`` classifiers were removed;
    the curve falls to chance where nothing linear is left. The attached data are the rows drawn.
    """
    data = check_tidy(df, "inlp_curve(df)", require=["iteration"])
    acc = data[data["measure"] == "accuracy"]
    if acc.empty:
        raise ValueError(f"inlp_curve(df): no 'accuracy' rows; measures present: {_unique(data['measure'])} — pass "
                         "NullspaceProjection.table")
    _plottable(acc, "inlp_curve(df)")
    if acc["iteration"].isna().any():
        raise ValueError("inlp_curve(df): every 'accuracy' row needs its 'iteration'")
    acc = acc.assign(_g=_groups(acc, color, "INLP")).sort_values(["_g", "iteration"], kind="stable")
    groups = _unique(acc["_g"])
    cmap = {**_style.color_map(groups), **{str(k): v for k, v in (color_map or {}).items()}}
    fig = go.Figure()
    fig.update_layout(template=_style.TEMPLATE)
    for g in groups:
        part = acc[acc["_g"] == g]
        x, y = part["iteration"].astype(float).tolist(), part["value"].tolist()
        if error in (True, "band") and _has_ci(part):
            fig.add_trace(go.Scatter(x=x + x[::-1], y=part["ci_high"].tolist() + part["ci_low"].tolist()[::-1],
                                     fill="toself", fillcolor=cmap[g], opacity=0.2, line=dict(width=0),
                                     hoverinfo="skip", showlegend=False, legendgroup=g, name=f"{g} CI"))
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=g, legendgroup=g, line=dict(color=cmap[g]),
                                 error_y=_error_y(part) if error == "bars" and _has_ci(part) else None))
    if chance is not None:
        fig.add_hline(y=float(chance), line=dict(color=_style.get_style()["baseline_color"], width=1, dash="dash"),
                      annotation_text="chance", annotation_position="bottom right")
    fig.update_xaxes(title_text="INLP iteration (classifiers' directions removed)", dtick=1)
    fig.update_yaxes(title_text="held-out probe accuracy")
    if title:
        fig.update_layout(title_text=title)
    return attach_data(fig, acc.drop(columns="_g"), "inlp_curve")


@declare(df=Data("any", example=_example_patching, bad=[pd.DataFrame({"value": [1.0]}), "df"]), color=Instance(str),
         kind=Options("bar", "line"), error=Options(True, False), title=_TITLE, color_map=_COLOR_MAP)
def patching_curve(df: pd.DataFrame, *, color: str = "run_b", kind: str = "bar", error: bool = True,
                   title: str | None = None, color_map: Mapping[str, str] | None = None) -> go.Figure:
    """The fraction of the downstream gap moved by patching each layer (``patched_fraction`` rows of
    :func:`workbench.interventions.patch_layers`), layers in forward order, with reference lines at 0 (nothing
    moves) and 1 (the whole gap).

    df:    rows in the results schema with measure ``patched_fraction`` per layer (other measures are ignored);
           NaN fractions (no gap) are left out.
    color: column giving one bar group / line per value (``run_b``: the model patched in; empty → ``fraction``).
    kind:  ``"bar"`` (grouped bars) or ``"line"`` (one line per group).
    error: error bars from ``ci_low``..``ci_high`` when present.
    """
    data = check_tidy(df, "patching_curve(df)")
    frac = data[(data["measure"] == "patched_fraction") & data["layer"].notna()]
    if frac.empty:
        raise ValueError(f"patching_curve(df): no 'patched_fraction' rows with a layer; measures present: "
                         f"{_unique(data['measure'])} — pass the table of patch_layers")
    _plottable(frac, "patching_curve(df)")
    frac = frac[np.isfinite(frac["value"].astype(float))]
    layers = _layer_order(frac)
    frac = frac.assign(_g=_groups(frac, color, "fraction"))
    keys = ["_g", "layer"]
    if frac.duplicated(keys).any():
        raise ValueError(f"patching_curve(df): several rows per ({color}, layer); filter the table or pass another "
                         "color column")
    groups = _unique(frac["_g"])
    cmap = {**_style.color_map(groups), **{str(k): v for k, v in (color_map or {}).items()}}
    fig = go.Figure()
    fig.update_layout(template=_style.TEMPLATE, barmode="group")
    for g in groups:
        part = frac[frac["_g"] == g].set_index(frac.loc[frac["_g"] == g, "layer"].astype(str)).reindex(
            [lay for lay in layers if lay in set(frac.loc[frac["_g"] == g, "layer"].astype(str))])
        err = _error_y(part) if error and _has_ci(part) else None
        if kind == "bar":
            fig.add_trace(go.Bar(x=part.index.tolist(), y=part["value"].tolist(), name=g, marker_color=cmap[g],
                                 error_y=err))
        else:
            fig.add_trace(go.Scatter(x=part.index.tolist(), y=part["value"].tolist(), name=g, mode="lines+markers",
                                     line=dict(color=cmap[g]), error_y=err))
    for level in (0.0, 1.0):
        fig.add_hline(y=level, line=dict(color=_style.get_style()["baseline_color"], width=1, dash="dot"))
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=layers, title_text="patched layer")
    fig.update_yaxes(title_text="fraction of the gap moved")
    if title:
        fig.update_layout(title_text=title)
    return attach_data(fig, frac.drop(columns="_g"), "patching_curve")


@declare(df=Data("any", example=_example_amnesic, bad=[pd.DataFrame({"value": [1.0]}), "df"]),
         measure=Instance(str), error=Options(True, False), title=_TITLE)
def amnesic_bars(df: pd.DataFrame, measure: str = "accuracy", *, error: bool = True,
                 title: str | None = None) -> go.Figure:
    """Amnesic probing's task ``measure`` per condition (the table of :func:`workbench.interventions.amnesic_probe`):
    ``none`` (the model), ``amnesic`` (the property's directions removed) and ``control`` (as many random directions
    removed), one bar group per layer, with error bars from the CI columns.

    A drop under ``amnesic`` far below ``control`` says the model uses the property (Elazar et al. 2021).
    """
    data = check_tidy(df, "amnesic_bars(df)", require=["method"])
    rows = data[(data["measure"] == measure) & data["method"].isin(["none", "amnesic", "control"])]
    if rows.empty:
        raise ValueError(f"amnesic_bars: no rows of measure {measure!r} for methods none/amnesic/control; measures "
                         f"present: {_unique(data['measure'])}")
    _plottable(rows, "amnesic_bars(df)")
    if rows.duplicated(["layer", "method"]).any():
        raise ValueError("amnesic_bars(df): several rows per (layer, method); filter run/step first")
    methods = [m for m in ("none", "amnesic", "control") if m in set(rows["method"])]
    cmap = _style.color_map(methods)
    layers = _layer_order(rows) if rows["layer"].notna().any() else ["layer"]
    rows = rows.assign(layer=rows["layer"].astype(object).where(rows["layer"].notna(), "layer").astype(str))
    fig = go.Figure()
    fig.update_layout(template=_style.TEMPLATE, barmode="group")
    for m in methods:
        present = set(rows.loc[rows["method"] == m, "layer"])
        part = rows[rows["method"] == m].set_index("layer").reindex([lay for lay in layers if lay in present])
        fig.add_trace(go.Bar(x=part.index.tolist(), y=part["value"].tolist(), name=m, marker_color=cmap[m],
                             error_y=_error_y(part) if error and _has_ci(part) else None))
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=layers, title_text="layer")
    fig.update_yaxes(title_text=f"task {measure.replace('_', ' ')}")
    if title:
        fig.update_layout(title_text=title)
    return attach_data(fig, rows, "amnesic_bars")

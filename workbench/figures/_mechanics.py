"""Figures of the transfer-mechanics tables (:mod:`workbench.mechanics`, Neyshabur, Sedghi & Zhang 2020).

- :func:`interpolation_curve` — loss / accuracy along the linear path ``θ(α)`` between two networks
  (:func:`workbench.mechanics.interpolate`), the chord between the endpoints dotted and the barrier
  (:func:`workbench.mechanics.barrier`) marked where it is reached;
- :func:`shuffle_curve` — downstream accuracy against the block size of the shuffled images, pretrained vs
  random init (:func:`workbench.mechanics.shuffle_transfer`; the paper's Fig. 2);
- :func:`criticality_heatmap` — modules × mode of :func:`workbench.mechanics.module_criticality`.

Every figure carries the rows it drew (:func:`~workbench.figures.plotted_data`).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .._validation import Data, Flag, Instance, declare
from ..results import check_tidy, tidy
from . import _style
from ._builders import _COLOR_MAP, _TITLE, _plottable, _pretty, _unique, attach_data

__all__ = ["interpolation_curve", "shuffle_curve", "criticality_heatmap"]


def _example_path() -> pd.DataFrame:
    return tidy([{"run": "ft-seed1", "run_b": "ft-seed2", "split": "test", "measure": m, "mix": a, "value": v}
                 for a, loss, acc in [(0.0, 0.3, 0.9), (0.5, 0.8, 0.7), (1.0, 0.4, 0.88)]
                 for m, v in (("loss", loss), ("accuracy", acc))])


def _example_shuffle() -> pd.DataFrame:
    return tidy([{"run": run, "measure": "accuracy", "split": "test", "value": v + 0.01 * s, "method": "finetune",
                  "block_size": b, "seed": s}
                 for run, values in (("pretrained", (0.6, 0.7, 0.9)), ("random-init", (0.5, 0.55, 0.7)))
                 for b, v in zip((1, 4, 16), values) for s in (0, 1)])


def _example_criticality() -> pd.DataFrame:
    return tidy([{"layer": layer, "layer_index": i, "measure": "accuracy_drop", "split": "test", "value": v,
                  "method": mode}
                 for mode, values in (("reinit", (0.5, 0.1)), ("rewind", (0.05, 0.0)))
                 for i, (layer, v) in enumerate(zip(("stage1", "stage2"), values))])


def _path_label(frame: pd.DataFrame, split_varies: bool) -> pd.Series:
    a = frame["run"].astype(object).where(frame["run"].notna(), "a").astype(str)
    b = frame["run_b"].astype(object).where(frame["run_b"].notna(), "b").astype(str) if "run_b" in frame.columns \
        else pd.Series("b", index=frame.index)
    label = a + " ↔ " + b
    if split_varies:
        label = label + " · " + frame["split"].astype(str)
    return label


@declare(df=Data("any", example=_example_path, bad=[tidy([{"measure": "loss", "value": 1.0}]), "df"]),
         measures=Instance(str, Sequence, none=True), mark_barrier=Flag(), title=_TITLE, color_map=_COLOR_MAP)
def interpolation_curve(df: pd.DataFrame, measures: str | Sequence[str] | None = None, *, mark_barrier: bool = True,
                        title: str | None = None, color_map: Mapping[str, str] | None = None) -> go.Figure:
    """Loss / accuracy against the interpolation coefficient ``α`` of :func:`workbench.mechanics.interpolate`.

    One panel per measure (``measures``, default every one of ``loss`` and ``accuracy`` present), one line per
    path (``run`` ↔ ``run_b``, and ``split`` when several). The straight chord between the endpoints' values is
    dotted; with ``mark_barrier`` a vertical segment at the ``α`` of the barrier joins the chord and the curve and
    is labelled with the height (:func:`workbench.mechanics.barrier`, ``reference="linear"``: the loss barrier,
    or the error barrier on the accuracy panel). A flat path (two fine-tunes of one checkpoint, Neyshabur et al.
    2020) hugs its chord; a barrier shows as a bump above the loss chord or a dip below the accuracy chord.
    """
    from ..mechanics import barrier

    data = _plottable(check_tidy(df, "interpolation_curve(df)", require=["mix"]), "interpolation_curve(df)")
    present = [m for m in ("loss", "accuracy") if m in set(data["measure"])]
    if measures is None:
        wanted = present
    else:
        wanted = [measures] if isinstance(measures, str) else list(measures)
        for m in wanted:
            if m not in ("loss", "accuracy"):
                raise ValueError(f"measures: {m!r} is not 'loss' or 'accuracy'")
            if m not in present:
                raise ValueError(f"measures: no {m!r} rows in df (measures present: {_unique(data['measure'])})")
    if not wanted:
        raise ValueError(f"interpolation_curve(df): no loss or accuracy rows (measures present: "
                         f"{_unique(data['measure'])}); pass the table of workbench.mechanics.interpolate")
    data = data[data["measure"].isin(wanted)].copy()
    split_varies = data["split"].nunique(dropna=False) > 1
    data["path"] = _path_label(data, split_varies)
    if data.duplicated(["path", "measure", "mix"]).any():
        raise ValueError("interpolation_curve(df): several rows per (path, measure, alpha); filter to one step or "
                         "give each path distinct run / run_b names")
    paths = _unique(data["path"])
    cmap = dict(color_map or {}) or _style.color_map(paths)
    for p in paths:
        cmap.setdefault(p, _style.color_map(paths)[p])
    marks = barrier(data.drop(columns="path")) if mark_barrier else None
    fig = make_subplots(rows=1, cols=len(wanted), horizontal_spacing=0.14)
    fig.update_layout(template=_style.TEMPLATE)
    drawn = []
    for col, m in enumerate(wanted, start=1):
        for p in paths:
            sub = data[(data["path"] == p) & (data["measure"] == m)].sort_values("mix")
            if sub.empty:
                continue
            x, y = sub["mix"].to_numpy(float), sub["value"].to_numpy(float)
            fig.add_trace(go.Scatter(x=x.tolist(), y=y.tolist(), name=p, legendgroup=p, showlegend=col == 1,
                                     mode="lines+markers", line=dict(color=cmap[p]), marker=dict(size=5)),
                          row=1, col=col)
            drawn.append(sub.assign(panel=m, mark="path"))
            ends = sub[sub["mix"].isin([0.0, 1.0])]
            if len(ends) == 2:
                ya, yb = (float(ends.loc[ends["mix"] == a, "value"].iloc[0]) for a in (0.0, 1.0))
                fig.add_trace(go.Scatter(x=[0.0, 1.0], y=[ya, yb], mode="lines", showlegend=False, legendgroup=p,
                                         line=dict(color=cmap[p], dash="dot", width=1), hoverinfo="skip"),
                              row=1, col=col)
                if marks is not None:
                    first = sub.iloc[0]
                    hit = marks[(marks["measure"] == ("loss_barrier" if m == "loss" else "error_barrier"))
                                & (marks["run"].astype(str) == str(first["run"]))
                                & (marks["split"].astype(str) == str(first["split"]))]
                    if "run_b" in marks.columns:
                        hit = hit[hit["run_b"].astype(str) == str(first.get("run_b"))]
                    if len(hit):
                        height, at = float(hit["value"].iloc[0]), float(hit["mix"].iloc[0])
                        chord = (1 - at) * ya + at * yb
                        curve = float(np.interp(at, x, y))
                        fig.add_trace(go.Scatter(x=[at, at], y=[chord, curve], mode="lines+text", showlegend=False,
                                                 legendgroup=p, line=dict(color=cmap[p], width=1.5),
                                                 text=["", f" barrier {height:.3g}"], textposition="middle right",
                                                 textfont=dict(color=cmap[p]), hoverinfo="skip"),
                                      row=1, col=col)
                        drawn.append(hit.assign(path=p, panel=m, mark="barrier"))
        fig.update_xaxes(title_text="α  (θ = (1 − α) θ_a + α θ_b)", range=[-0.03, 1.03]
                         if data["mix"].between(0, 1).all() else None, row=1, col=col)
        fig.update_yaxes(title_text=_pretty(m), row=1, col=col)
    if title:
        fig.update_layout(title_text=title)
    return attach_data(fig, pd.concat(drawn, ignore_index=True), "interpolation_curve")


@declare(df=Data("any", example=_example_shuffle, bad=[tidy([{"measure": "accuracy", "value": 1.0}]), "df"]),
         measure=Instance(str), split=Instance(str, none=True), title=_TITLE, color_map=_COLOR_MAP)
def shuffle_curve(df: pd.DataFrame, measure: str = "accuracy", *, split: str | None = None,
                  title: str | None = None, color_map: Mapping[str, str] | None = None) -> go.Figure:
    """Downstream ``measure`` against the block size of :func:`workbench.mechanics.block_shuffle` (log₂ axis), one
    line per ``run`` (the pretrained network and ``"random-init"``): the mean over ``seed`` with error bars of one
    standard deviation (ddof 1) when there are several seeds. The paper's Fig. 2 (Neyshabur et al. 2020): the gap
    between the lines at the smallest blocks is the benefit of pretraining that is not feature reuse.

    ``split`` picks one evaluation split (default: the only one present).
    """
    data = _plottable(check_tidy(df, "shuffle_curve(df)", require=["block_size"]), "shuffle_curve(df)")
    if measure not in set(data["measure"]):
        raise ValueError(f"measure {measure!r} not in df (measures present: {_unique(data['measure'])})")
    data = data[data["measure"] == measure]
    splits = _unique(data["split"])
    if split is None:
        if len(splits) > 1:
            raise ValueError(f"several splits in df {splits}; pass split=...")
    else:
        if split not in splits:
            raise ValueError(f"split {split!r} not in df (splits: {splits})")
        data = data[data["split"] == split]
    data = data.assign(run=data["run"].astype(object).where(data["run"].notna(), "model").astype(str))
    runs = _unique(data["run"])
    cmap = {**_style.color_map(runs), **dict(color_map or {})}
    keys = ["run", "block_size"]
    if data.duplicated([*keys, "seed"] if "seed" in data.columns else keys).any():
        raise ValueError("shuffle_curve(df): several rows per (run, block_size, seed); filter to one method / task")
    summary = (data.groupby(keys, sort=False)["value"].agg(["mean", "std", "count"]).reset_index()
               .sort_values(keys))
    fig = go.Figure()
    fig.update_layout(template=_style.TEMPLATE)
    for r in runs:
        sub = summary[summary["run"] == r]
        err = sub["std"].fillna(0.0).to_numpy(float) if (sub["count"] > 1).any() else None
        fig.add_trace(go.Scatter(x=sub["block_size"].astype(float).tolist(), y=sub["mean"].tolist(), name=r,
                                 mode="lines+markers", line=dict(color=cmap[r], dash="dash" if r == "random-init"
                                                                 else "solid"),
                                 error_y=dict(type="data", array=err.tolist(), visible=True) if err is not None
                                 else None))
    sizes = sorted(set(summary["block_size"].astype(int)))
    fig.update_xaxes(title_text="block size (pixels)", type="log", tickvals=sizes, ticktext=[str(s) for s in sizes])
    fig.update_yaxes(title_text=_pretty(measure))
    if title:
        fig.update_layout(title_text=title)
    drawn = summary.rename(columns={"mean": "value", "std": "sd", "count": "n_seeds"}).assign(measure=measure)
    return attach_data(fig, drawn, "shuffle_curve")


@declare(df=Data("any", example=_example_criticality, bad=[tidy([{"measure": "accuracy_drop", "value": 1.0}]),
                                                            "df"]),
         measure=Instance(str), title=_TITLE)
def criticality_heatmap(df: pd.DataFrame, measure: str = "accuracy_drop", *, title: str | None = None) -> go.Figure:
    """Modules (rows, forward order by ``layer_index``) × mode (columns: the ``method`` of
    :func:`workbench.mechanics.module_criticality`, ``reinit`` / ``rewind``) coloured by ``measure`` (default
    ``accuracy_drop``; ``loss_increase``, ``accuracy``, ``loss`` also work), each cell labelled with its value.
    A critical module is a dark row cell; a robust one is near 0 (Zhang, Bengio & Singer 2019).
    """
    data = _plottable(check_tidy(df, "criticality_heatmap(df)", require=["method"]), "criticality_heatmap(df)")
    if measure not in set(data["measure"]):
        raise ValueError(f"measure {measure!r} not in df (measures present: {_unique(data['measure'])})")
    data = data[data["measure"] == measure].copy()
    if data.duplicated(["layer", "method"]).any():
        varying = [c for c in ("run", "step", "split") if data[c].nunique() > 1]
        raise ValueError(f"criticality_heatmap(df): several values per (layer, method); these columns vary: "
                         f"{varying or 'unknown'} — filter to one network and split first")
    data["_pos"] = range(len(data))
    rows = [str(v) for v in pd.unique(data.sort_values(["layer_index", "_pos"], kind="stable")["layer"].astype(str))]
    cols = [str(v) for v in _unique(data["method"].astype(str))]
    z = (data.assign(layer=data["layer"].astype(str), method=data["method"].astype(str))
         .pivot(index="layer", columns="method", values="value").reindex(index=rows, columns=cols).to_numpy(float))
    text = [["" if np.isnan(v) else f"{v:.3g}" for v in row] for row in z]
    fig = go.Figure(go.Heatmap(z=z, x=cols, y=rows, text=text, texttemplate="%{text}", colorscale="Reds"
                               if measure in ("accuracy_drop", "loss_increase", "loss") else "Viridis",
                               colorbar=dict(title=dict(text=_pretty(measure))),
                               hovertemplate="%{y} · %{x}: %{z:.4f}<extra></extra>"))
    fig.update_layout(template=_style.TEMPLATE)
    fig.update_xaxes(type="category", title_text="mode", showgrid=False)
    fig.update_yaxes(type="category", title_text="module", showgrid=False, autorange="reversed")
    if title:
        fig.update_layout(title_text=title)
    return attach_data(fig, data.drop(columns="_pos"), "criticality_heatmap")

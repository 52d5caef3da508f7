"""Figure builders: tidy DataFrame in, ``plotly.graph_objects.Figure`` out. No science here.

Every builder stores the rows it drew *on the figure itself*, in ``fig.layout.meta["workbench"]``
(columns, dtypes and rows as plain JSON). That survives everything a figure goes through —
``go.FigureWidget(fig)``, ``go.Figure(fig)``, ``copy.deepcopy``, ``fig.to_json()`` /
``plotly.io.from_json`` — unlike a Python attribute (lost on conversion) or a weak-key registry
(keyed by object identity, so also lost on conversion). :func:`plotted_data` reads it back; for a
figure not made here it falls back to rebuilding a long table from the traces themselves.
:func:`workbench.figures._export` writes that table as ``<stem>.csv``.
"""
from __future__ import annotations

import base64

import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .._validation import Data, Flag, Instance, Interval, Options, declare
from ..results import check_tidy, tidy
from . import _style

__all__ = ["layer_curve", "layer_heatmap", "spectrum_plot", "step_curve", "plotted_data", "attach_data", "META_KEY"]

META_KEY = "workbench"

# declared rules (workbench._validation.declare): the options every builder shares, and small valid example tables
_TITLE = Instance(str, none=True)
_MEASURE = Instance(str, none=True)
_ERROR = Options(True, False, "band", "bars")
_COLOR_MAP = Instance(Mapping, none=True)


def _example_table() -> pd.DataFrame:
    """Per-layer results of two runs (one measure, one split, one step, with a CI): a valid figure input."""
    return tidy([{"run": run, "step": 100, "layer": layer, "measure": "accuracy", "split": "test", "value": v,
                  "ci_low": v - 0.05, "ci_high": v + 0.05}
                 for run, values in (("trained", (0.6, 0.8)), ("random-init", (0.5, 0.5)))
                 for layer, v in zip(("block1", "block2"), values)])


def _example_pairs() -> pd.DataFrame:
    """A layer-pair table (linear CKA of two layers against themselves)."""
    return tidy([{"layer": a, "layer_b": b, "measure": "cka", "value": 1.0 if a == b else 0.5}
                 for a in ("block1", "block2") for b in ("block1", "block2")])


def _example_spectra() -> pd.DataFrame:
    """Eigenvalues of two layers (one row per eigenvalue)."""
    return tidy([{"layer": layer, "measure": "eigenvalue", "value": v}
                 for layer in ("block1", "block2") for v in (4.0, 2.0, 1.0)])


# --------------------------------------------------------------------------------------------------
# plotted data stored on the figure
# --------------------------------------------------------------------------------------------------

def _json_scalar(v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return None if math.isnan(f) or math.isinf(f) else f
    if isinstance(v, str):
        return v
    try:
        if pd.isna(v):
            return None
    except (TypeError, ValueError):
        pass
    return str(v)


@declare(fig=Data("any", example=go.Figure, bad=["fig", {"data": []}]),
         df=Data("any", example=_example_table, bad=["df", {"value": [1.0]}]), kind=Instance(str))
def attach_data(fig: go.Figure, df: pd.DataFrame, kind: str) -> go.Figure:
    """Store ``df`` (the rows drawn) in ``fig.layout.meta["workbench"]``; returns ``fig``."""
    if not hasattr(fig, "layout"):
        raise TypeError(f"attach_data(fig) needs a plotly figure, got {type(fig).__name__}")
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"attach_data(df) needs a pandas DataFrame, got {type(df).__name__}")
    df = df.reset_index(drop=True)
    payload = {
        "kind": kind,
        "columns": [str(c) for c in df.columns],
        "dtypes": {str(c): str(t) for c, t in df.dtypes.items()},
        "data": [[_json_scalar(v) for v in row] for row in df.itertuples(index=False, name=None)],
    }
    meta = fig.layout.meta
    meta = dict(meta) if isinstance(meta, dict) else {}
    meta[META_KEY] = payload
    fig.layout.meta = meta
    return fig


@declare(fig=Data("any", example=lambda: layer_curve(_example_table()), bad=["fig", 3]))
def plotted_data(fig: go.Figure | Mapping) -> pd.DataFrame:
    """The tidy rows a figure shows.

    Figures from this module carry them in ``layout.meta``; for any other figure a long table is
    rebuilt from the traces (``trace``, ``x``, ``y`` / ``z``, error arrays if present).
    """
    if not (hasattr(fig, "to_plotly_json") or isinstance(fig, Mapping)):
        raise TypeError(f"plotted_data(fig) needs a plotly figure or its dict, got {type(fig).__name__}")
    d = fig.to_plotly_json() if hasattr(fig, "to_plotly_json") else dict(fig)
    meta = (d.get("layout") or {}).get("meta")
    if isinstance(meta, dict) and isinstance(meta.get(META_KEY), dict):
        p = meta[META_KEY]
        df = pd.DataFrame(p["data"], columns=p["columns"])
        for c, t in p.get("dtypes", {}).items():
            if c not in df:
                continue
            try:
                if (t.startswith(("int", "uint")) and not df[c].isna().any()) or t.startswith("float"):
                    df[c] = df[c].astype(t)
                elif t == "bool" and not df[c].isna().any():
                    df[c] = df[c].astype(bool)
            except (TypeError, ValueError):
                pass
        return df
    return _data_from_traces(d.get("data") or [])


def _array(v: Any) -> np.ndarray:
    """A trace array as numpy: plain lists, or plotly >= 6's base64 typed arrays ``{"dtype", "bdata"[, "shape"]}``."""
    if isinstance(v, Mapping) and "bdata" in v:
        out = np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
        shape = v.get("shape")
        if shape is not None:
            out = out.reshape([int(s) for s in str(shape).split(",")] if isinstance(shape, str) else shape)
        return out
    return np.asarray(v)


def _data_from_traces(traces: Sequence[Mapping]) -> pd.DataFrame:
    frames = []
    for i, t in enumerate(traces):
        name = t.get("name") or f"trace {i}"
        if t.get("type") == "heatmap" and t.get("z") is not None:
            z = _array(t["z"]).astype(float)
            ys = list(t.get("y") if t.get("y") is not None else range(z.shape[0]))
            xs = list(t.get("x") if t.get("x") is not None else range(z.shape[1]))
            frames.append(pd.DataFrame([{"trace": name, "y": ys[r], "x": xs[c], "z": z[r, c]}
                                        for r in range(z.shape[0]) for c in range(z.shape[1])]))
        elif t.get("y") is not None:
            y = list(_array(t["y"]).tolist())
            x = list(_array(t["x"]).tolist()) if t.get("x") is not None else list(range(len(y)))
            cols = {"trace": [name] * len(y), "x": x, "y": y}
            for key in ("error_y", "error_x"):
                e = t.get(key) or {}
                if e.get("array") is not None:
                    cols[f"{key}_plus"] = list(_array(e["array"]).tolist())
                    cols[f"{key}_minus"] = list(_array(e.get("arrayminus", e["array"])).tolist())
            frames.append(pd.DataFrame(cols))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["trace", "x", "y"])


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------

def _plottable(df: pd.DataFrame, what: str, column: str = "value") -> pd.DataFrame:
    """``df`` if its ``column`` holds something to draw: complex numbers are refused (TypeError), and a column without
    one finite number (all NaN/Inf) is a ValueError rather than a blank plot. Both name the column."""
    values = df[column]
    if pd.api.types.is_complex_dtype(values):
        raise TypeError(f"{what}: column {column!r} is complex (dtype {values.dtype}); plot its real part "
                        f"(df[{column!r}].to_numpy().real) or its magnitude (abs) explicitly")
    if len(values) and not np.isfinite(pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)).any():
        raise ValueError(f"{what}: column {column!r} has no finite number ({len(values)} rows, all NaN/Inf); "
                         "nothing to plot — check the measure that produced the table")
    return df


def _require(df: pd.DataFrame, cols: Iterable[str], what: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{what} needs a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"{what}: missing column(s) {missing}; got columns {list(df.columns)}")


def _pretty(name: Any) -> str:
    return str(name).replace("_", " ")


def _unique(values: Iterable[Any]) -> list[Any]:
    """Unique non-null values in first-appearance order."""
    return list(pd.unique(pd.Series(list(values)).dropna()))


def _layer_order(df: pd.DataFrame) -> list[str]:
    """Layers in forward order (``layer_index``, then first appearance)."""
    sub = df[["layer", "layer_index"]].copy()
    sub["_pos"] = range(len(sub))
    sub = sub.sort_values(["layer_index", "_pos"], kind="stable")
    return [str(v) for v in pd.unique(sub["layer"].astype(str))]


def _as_list(x: Any) -> list:
    if x is None:
        return []
    if isinstance(x, (str, bytes)) or not isinstance(x, Iterable):
        return [x]
    return list(x)


# --------------------------------------------------------------------------------------------------
# layer_curve
# --------------------------------------------------------------------------------------------------

@declare(df=Data("any", example=_example_table, bad=[pd.DataFrame({"measure": ["accuracy"], "value": [1.0]}), "df"]),
         measure=_MEASURE, color=Instance(str), facet=Instance(str, none=True), x=Options("layer", "layer_index"),
         error=_ERROR, baseline=Instance(str, list, tuple, int, float, none=True), title=_TITLE,
         highlight=Instance(str, none=True), color_map=_COLOR_MAP)
def layer_curve(df: pd.DataFrame, measure: str | None = None, color: str = "run", facet: str | None = None,
                x: str = "layer", error: bool | str = True, baseline: str | Sequence[str] | float | None = None,
                title: str | None = None, *, highlight: str | None = None,
                color_map: Mapping[str, str] | None = None) -> go.Figure:
    """One line per ``color`` group across layers (forward order, categorical axis).

    df:        per-layer results in the results schema (:mod:`workbench.results`: ``run, step, layer,
               layer_index, measure, split, value, ci_low, ci_high`` [+ extras such as ``target``]). Filter
               ``step``/``split`` first, or use them as ``color``/``facet``: each (facet, colour, layer) must
               hold exactly one row. Rows with an empty ``color`` (e.g. ``run`` of a measure computed on
               bare arrays) form one line named after the measure.
    measure:   which ``measure`` to draw; may be omitted when only one is present (or ``facet="measure"``).
    color:     column giving one line per value.
    facet:     column giving one panel per value (shared y axis).
    x:         ``"layer"`` (categorical, names) or ``"layer_index"`` (numeric).
    error:     True / ``"band"``: shaded band from ``ci_low``..``ci_high``; ``"bars"``: error bars;
               False: none. Ignored when the CI columns are absent.
    baseline:  a value (or values) of ``color`` drawn dashed grey, e.g. ``"random-init"``; or a number,
               drawn as a dashed grey horizontal reference line (e.g. chance accuracy).
    highlight: a layer name marked with a vertical dotted line in every panel.
    color_map: fixed ``{group: colour}`` (keeps colours stable when groups come and go).
    """
    _plottable(check_tidy(df, "layer_curve(df)", require=[color] + ([facet] if facet is not None else [])),
               "layer_curve(df)")
    if x not in ("layer", "layer_index"):
        raise ValueError(f"x must be 'layer' or 'layer_index', got {x!r}")
    if error not in (True, False, "band", "bars"):
        raise ValueError(f"error must be True, False, 'band' or 'bars', got {error!r}")
    data = df.copy()
    measures = _unique(data["measure"])
    if measure is not None:
        if measure not in measures:
            raise ValueError(f"measure {measure!r} not in the data; available: {measures}")
        data = data[data["measure"] == measure]
    elif len(measures) > 1 and facet != "measure" and color != "measure":
        raise ValueError(f"several measures in the data {measures}; pass measure=... (or facet='measure')")
    elif len(measures) == 1:
        measure = measures[0]
    if data.empty:
        raise ValueError("layer_curve: nothing to draw (no rows left after selecting the measure)")

    keys = ([facet] if facet else []) + [color, "layer"]
    dup = data.duplicated(keys, keep=False)
    if dup.any():
        varying = [c for c in ("step", "split", "target", "measure", "run") if c in data.columns
                   and c not in keys and data.loc[dup, c].nunique(dropna=False) > 1]
        raise ValueError(f"layer_curve: several rows per {tuple(keys)} (e.g. {data.loc[dup, keys].iloc[0].tolist()}); "
                         f"these columns vary: {varying or 'unknown'} — filter them first or use them as color/facet")

    baseline_groups = [str(b) for b in _as_list(baseline)] if isinstance(baseline, (str, list, tuple)) else []
    baseline_value = float(baseline) if isinstance(baseline, (int, float)) and not isinstance(baseline, bool) else None
    if baseline is not None and not baseline_groups and baseline_value is None:
        raise TypeError(f"baseline must be a group name, a list of them, or a number; got {type(baseline).__name__}")

    st = _style.get_style()
    layers = _layer_order(data)
    # rows without a group (e.g. ``run`` of a measure on bare arrays) form one line named after the measure
    data["_g"] = data[color].astype(object).where(data[color].notna(), str(measure or "value")).astype(str)
    groups = _unique(data["_g"])  # groups and panels keep first-appearance order
    order = {g: i for i, g in enumerate(groups)}
    data = data.assign(_o=data["_g"].map(order))
    sort_by = ["_o", "layer_index"]
    if facet:
        forder = {v: i for i, v in enumerate(_unique(data[facet]))}
        data = data.assign(_fo=data[facet].map(forder))
        sort_by = ["_fo"] + sort_by
    data = data.sort_values(sort_by, kind="stable").drop(columns=[c for c in ("_o", "_fo") if c in data])
    missing_base = [b for b in baseline_groups if b not in groups]
    if missing_base:
        raise ValueError(f"baseline group(s) {missing_base} not found in column {color!r}; have {groups}")
    groups = [g for g in groups if g not in baseline_groups] + [g for g in groups if g in baseline_groups]
    cmap = dict(_style.color_map([g for g in groups if g not in baseline_groups]))
    if color_map:
        cmap.update({str(k): v for k, v in color_map.items()})
    facets = _unique(data[facet]) if facet else [None]

    if facet:
        fig = make_subplots(rows=1, cols=len(facets), shared_yaxes=True, horizontal_spacing=0.04,
                            subplot_titles=[f"{_pretty(v)}" for v in facets])
        for a in fig.layout.annotations:  # make_subplots hard-codes 16 px; let the template decide
            a.font.size = None
        # panel titles sit where a top legend would: put the legend at the right instead
        fig.update_layout(legend=dict(orientation="v", x=1.01, xanchor="left", y=1, yanchor="top"))
    else:
        fig = go.Figure()
    fig.update_layout(template=_style.TEMPLATE)

    has_ci = {"ci_low", "ci_high"} <= set(data.columns) and data[["ci_low", "ci_high"]].notna().any().any()
    mode = None if (error is False or not has_ci) else ("bars" if error == "bars" else "band")
    hover_extra = "<br>CI [%{customdata[1]:.4g}, %{customdata[2]:.4g}]" if has_ci else ""

    for col, fval in enumerate(facets, start=1):
        fdata = data if facet is None else data[data[facet] == fval]
        for g in groups:
            sub = fdata[fdata["_g"] == g]
            if sub.empty:
                continue
            is_base = g in baseline_groups
            c = st["baseline_color"] if is_base else cmap.get(g, st["palette"][0])
            xs = sub[x].astype(str).tolist() if x == "layer" else sub[x].tolist()
            ys = sub["value"].astype(float).tolist()
            where = dict(row=1, col=col) if facet else {}
            if mode == "band":
                band = sub.dropna(subset=["ci_low", "ci_high"])
                if not band.empty:
                    bx = band[x].astype(str).tolist() if x == "layer" else band[x].tolist()
                    fig.add_trace(go.Scatter(
                        x=bx + bx[::-1],
                        y=band["ci_high"].astype(float).tolist() + band["ci_low"].astype(float).tolist()[::-1],
                        fill="toself", fillcolor=_style.rgba(c, st["band_opacity"]), line=dict(width=0, color=c),
                        mode="lines", hoverinfo="skip", showlegend=False, legendgroup=g, name=f"{g} CI"), **where)
            err = None
            if mode == "bars":
                err = dict(type="data", array=(sub["ci_high"] - sub["value"]).astype(float).tolist(),
                           arrayminus=(sub["value"] - sub["ci_low"]).astype(float).tolist(),
                           thickness=1, width=2, color=c)
            custom = np.column_stack([sub["layer"].astype(str).to_numpy(dtype=object),
                                      sub["ci_low"].to_numpy(dtype=object) if has_ci else np.full(len(sub), None),
                                      sub["ci_high"].to_numpy(dtype=object) if has_ci else np.full(len(sub), None)])
            fig.add_trace(go.Scatter(
                x=xs, y=ys, name=g, legendgroup=g, showlegend=(col == 1), mode="lines+markers",
                line=dict(color=c, dash="dash" if is_base else "solid"), marker=dict(color=c),
                error_y=err, customdata=custom,
                hovertemplate=f"<b>{g}</b><br>%{{customdata[0]}}: %{{y:.4g}}{hover_extra}<extra></extra>"), **where)
        if baseline_value is not None:
            xs_all = layers if x == "layer" else sorted(data["layer_index"].unique().tolist())
            fig.add_trace(go.Scatter(
                x=xs_all, y=[baseline_value] * len(xs_all), name="baseline", legendgroup="__baseline",
                showlegend=(col == 1), mode="lines", line=dict(color=st["baseline_color"], dash="dot"),
                hovertemplate=f"baseline: {baseline_value:.4g}<extra></extra>"),
                **(dict(row=1, col=col) if facet else {}))

    if x == "layer":
        fig.update_xaxes(type="category", categoryorder="array", categoryarray=layers, title_text="layer")
    else:
        fig.update_xaxes(type="linear", title_text="layer index")
    fig.update_layout(yaxis_title_text=_pretty(measure) if measure is not None else "value")
    if highlight is not None:
        hl = str(highlight)
        if x == "layer" and hl not in layers:
            raise ValueError(f"highlight layer {hl!r} is not among the plotted layers {layers}")
        pos = hl if x == "layer" else float(data.loc[data["layer"].astype(str) == hl, "layer_index"].iloc[0])
        for col in range(1, len(facets) + 1):
            xref = "x" if col == 1 else f"x{col}"
            fig.add_shape(type="line", xref=xref, yref="paper" if not facet else f"y{'' if col == 1 else col} domain",
                          x0=pos, x1=pos, y0=0, y1=1, line=dict(color=st["axis_color"], width=1, dash="dot"),
                          layer="below", name="highlight")
    if title:
        fig.update_layout(title_text=title)
    if facet:  # room above the panels for their titles (and on screen the toolbar's band)
        _style.panel_margin(fig)
    drawn = data.drop(columns=["_g"])
    return attach_data(fig, drawn, "layer_curve")


# --------------------------------------------------------------------------------------------------
# layer_heatmap
# --------------------------------------------------------------------------------------------------

@declare(df_or_matrix=Data("any", example=_example_pairs, bad=[np.zeros(3), "df_or_matrix"]), title=_TITLE,
         zmin=Interval(float, none=True), zmax=Interval(float, none=True), measure=_MEASURE, square=Flag())
def layer_heatmap(df_or_matrix: pd.DataFrame | np.ndarray, title: str | None = None, zmin: float | None = 0,
                  zmax: float | None = 1, *, measure: str | None = None, square: bool = False) -> go.Figure:
    """Layer × layer heatmap (e.g. CKA), rows and columns in forward layer order, layer 0 top-left.

    Accepts a layer-pair table in the results schema (:mod:`workbench.results`; what every
    ``similarity.*_matrix(..., output="tidy")`` and :func:`workbench.study.cross_run_similarity` return:
    rows ``layer`` / ``layer_index``, columns ``layer_b`` / ``layer_index_b``, ``measure``, ``value`` [+
    ``run``, ``run_b``, ``step``]), a square/rectangular matrix DataFrame (index = rows, columns = columns;
    ``output="matrix"``) or a 2-D array. Axis titles name the runs when ``run``/``run_b`` hold one value each.
    ``zmin``/``zmax`` fix the colour range (0..1 suits CKA; None = data range); ``square=True`` makes
    cells square (leaves a gap before the colour bar in a wide figure).
    """
    xtitle = ytitle = "layer"
    cbar = measure or "value"
    if isinstance(df_or_matrix, pd.DataFrame) and "layer_b" in df_or_matrix.columns:
        data = _plottable(check_tidy(df_or_matrix, "layer_heatmap(df_or_matrix)", require=["layer_b"]),
                          "layer_heatmap(df_or_matrix)").copy()
        ms = _unique(data["measure"])
        if measure is not None:
            if measure not in ms:
                raise ValueError(f"measure {measure!r} not in the data; available: {ms}")
            data = data[data["measure"] == measure]
        elif len(ms) > 1:
            raise ValueError(f"several measures in the data {ms}; pass measure=...")
        elif ms:
            cbar = ms[0]
        if data.empty:
            raise ValueError("layer_heatmap: nothing to draw")
        if data.duplicated(["layer", "layer_b"]).any():
            varying = [c for c in ("run", "run_b", "step", "split") if c in data.columns and data[c].nunique() > 1]
            raise ValueError(f"layer_heatmap: several values per (layer, layer_b); these columns vary: "
                             f"{varying or 'unknown'} — filter to one pair of runs / one step first")
        data["_pos"] = range(len(data))
        ib = "layer_index_b" if "layer_index_b" in data.columns else "_pos"
        by_row = data.sort_values(["layer_index", "_pos"], kind="stable")
        rows = [str(v) for v in pd.unique(by_row["layer"].astype(str))]
        cols = [str(v) for v in pd.unique(data.sort_values([ib, "_pos"], kind="stable")["layer_b"].astype(str))]
        piv = (data.assign(layer=data["layer"].astype(str), layer_b=data["layer_b"].astype(str))
               .pivot(index="layer", columns="layer_b", values="value").reindex(index=rows, columns=cols))
        z = piv.to_numpy(dtype=float)
        for key, setter in (("run", "y"), ("run_b", "x")):
            if key in data.columns and data[key].nunique() == 1 and data[key].notna().all():
                if setter == "y":
                    ytitle = f"{data[key].iloc[0]} layer"
                else:
                    xtitle = f"{data[key].iloc[0]} layer"
        data["_r"] = data["layer"].astype(str).map({v: i for i, v in enumerate(rows)})
        data["_c"] = data["layer_b"].astype(str).map({v: i for i, v in enumerate(cols)})
        drawn = data.sort_values(["_r", "_c"], kind="stable").drop(columns=["_pos", "_r", "_c"])
    elif isinstance(df_or_matrix, pd.DataFrame):
        m = df_or_matrix
        try:
            z = m.to_numpy(dtype=float)
        except (TypeError, ValueError):
            hint = (" (the column 'layer_a' is called 'layer')" if "layer_a" in m.columns else "")
            raise ValueError("layer_heatmap(df_or_matrix): a matrix DataFrame must be all numeric; a layer-pair table "
                             f"needs the results schema with the extra column layer_b{hint}") from None
        rows = [str(v) for v in m.index]
        cols = [str(v) for v in m.columns]
        # a matrix from output="matrix" names its axes layer × layer_b: both are "layer" on the plot
        ytitle = str(m.index.name) if m.index.name not in (None, "layer", "layer_b") else "layer"
        xtitle = str(m.columns.name) if m.columns.name not in (None, "layer", "layer_b") else "layer"
        drawn = _melt(z, rows, cols, measure)
    else:
        try:
            z = np.asarray(df_or_matrix, dtype=float)
        except (TypeError, ValueError):
            raise TypeError("df_or_matrix must be a layer-pair table, a matrix DataFrame or a 2-D array, got "
                            f"{type(df_or_matrix).__name__}") from None
        if z.ndim != 2:
            raise ValueError(f"layer_heatmap(df_or_matrix) needs a 2-D matrix, got shape {z.shape}")
        rows = [str(i) for i in range(z.shape[0])]
        cols = [str(i) for i in range(z.shape[1])]
        drawn = _melt(z, rows, cols, measure)
    if z.size == 0:
        raise ValueError("layer_heatmap: empty matrix")

    fig = go.Figure(go.Heatmap(
        z=z, x=cols, y=rows, zmin=zmin, zmax=zmax, colorbar=dict(title=dict(text=_pretty(cbar))),
        hovertemplate="%{y} × %{x}: %{z:.3f}<extra></extra>"))
    fig.update_layout(template=_style.TEMPLATE)
    fig.update_xaxes(type="category", title_text=xtitle, showgrid=False, tickangle=-45 if len(cols) > 8 else None)
    fig.update_yaxes(type="category", title_text=ytitle, showgrid=False, autorange="reversed")
    if square:
        fig.update_yaxes(scaleanchor="x", scaleratio=1, constrain="domain")
    if title:
        fig.update_layout(title_text=title)
    return attach_data(fig, drawn, "layer_heatmap")


def _melt(z: np.ndarray, rows: list[str], cols: list[str], measure: str | None) -> pd.DataFrame:
    """The drawn matrix as pair rows with the schema's names (``layer``, ``layer_index``, ``layer_b`` …)."""
    out = pd.DataFrame({
        "layer": np.repeat(np.asarray(rows, dtype=object), len(cols)),
        "layer_index": np.repeat(np.arange(len(rows)), len(cols)),
        "value": z.reshape(-1),
        "layer_b": np.tile(np.asarray(cols, dtype=object), len(rows)),
        "layer_index_b": np.tile(np.arange(len(cols)), len(rows)),
    })
    if measure is not None:
        out.insert(2, "measure", measure)
    return out


# --------------------------------------------------------------------------------------------------
# spectrum_plot
# --------------------------------------------------------------------------------------------------

@declare(spectra=Data("any", example=_example_spectra, bad=[pd.DataFrame({"value": [1.0]}), {}, "spectra"]),
         normalize=Flag(), log=Flag(), title=_TITLE)
def spectrum_plot(spectra: Mapping[str, Any] | pd.DataFrame, normalize: bool = True, log: bool = True,
                  title: str | None = None) -> go.Figure:
    """Eigenvalue against rank (1 = largest), one line per spectrum, log–log by default.

    spectra:   ``{label: 1-D eigenvalues}``, or a table in the results schema (:mod:`workbench.results`)
               whose ``value`` column holds the eigenvalues (``measure`` e.g. ``"eigenvalue"``; one row per
               eigenvalue, as :func:`workbench.dashboards.spectrum_frames` makes): the columns among
               ``run``/``step``/``layer``/``split``/``measure`` that vary tell the spectra apart and form
               their labels.
    normalize: divide each spectrum by its sum (so curves from different widths compare).
    log:       log axes; non-positive eigenvalues cannot be shown there and are left out.
    """
    parts: list[pd.DataFrame] = []
    if isinstance(spectra, pd.DataFrame):
        _plottable(check_tidy(spectra, "spectrum_plot(spectra)"), "spectrum_plot(spectra)")
        if spectra.empty:
            raise ValueError("spectrum_plot: no spectra given (the table is empty)")
        keys = ("run", "step", "layer", "split", "measure")
        varying = ([c for c in keys if spectra[c].nunique() > 1]
                   or [next(c for c in keys if spectra[c].notna().any())])  # measure is never empty
        for gkey, sub in spectra.groupby(varying, sort=False, dropna=False):
            gkey = gkey if isinstance(gkey, tuple) else (gkey,)
            label = " · ".join(str(v) for v in gkey)
            parts.append(_spectrum_rows(label, sub["value"].to_numpy(dtype=float),
                                        dict(zip(varying, gkey)), normalize, log))
    elif isinstance(spectra, Mapping):
        if not spectra:
            raise ValueError("spectrum_plot: no spectra given")
        for label, arr in spectra.items():
            a = np.asarray(arr, dtype=float)
            if a.ndim != 1:
                raise ValueError(f"spectrum {label!r} must be 1-D eigenvalues, got shape {a.shape}")
            parts.append(_spectrum_rows(str(label), a, {}, normalize, log))
    else:
        raise TypeError("spectra must be a mapping label -> eigenvalues or a results-schema DataFrame, got "
                        f"{type(spectra).__name__}")

    drawn = pd.concat(parts, ignore_index=True)
    if drawn.empty:
        raise ValueError("spectrum_plot: nothing to draw (all eigenvalues non-positive on log axes?)")
    ycol = "normalized" if normalize else "eigenvalue"
    fig = go.Figure()
    fig.update_layout(template=_style.TEMPLATE)
    labels = _unique(drawn["spectrum"])
    cmap = _style.color_map(labels)
    for lab in labels:
        sub = drawn[drawn["spectrum"] == lab]
        fig.add_trace(go.Scatter(x=sub["rank"].tolist(), y=sub[ycol].tolist(), name=lab, mode="lines",
                                 line=dict(color=cmap[lab]),
                                 hovertemplate=f"<b>{lab}</b><br>rank %{{x}}: %{{y:.3g}}<extra></extra>"))
    axis_type = "log" if log else "linear"
    fig.update_xaxes(type=axis_type, title_text="rank", exponentformat="power")
    fig.update_yaxes(type=axis_type, title_text="eigenvalue / sum" if normalize else "eigenvalue",
                     exponentformat="power")
    if title:
        fig.update_layout(title_text=title)
    return attach_data(fig, drawn, "spectrum_plot")


def _spectrum_rows(label: str, values: np.ndarray, extra: Mapping[str, Any], normalize: bool,
                   log: bool) -> pd.DataFrame:
    v = np.sort(values[np.isfinite(values)])[::-1]
    ranks = np.arange(1, len(v) + 1)
    total = v.sum()
    out = pd.DataFrame({"spectrum": label, **dict(extra), "rank": ranks, "eigenvalue": v})
    if normalize:
        if not total > 0:
            raise ValueError(f"spectrum {label!r}: cannot normalise, the eigenvalues sum to {total}")
        out["normalized"] = v / total
    if log:
        out = out[out["eigenvalue"] > 0]
    return out.reset_index(drop=True)


@declare(df=Data("any", example=_example_table,
                 bad=[tidy([{"run": "a", "measure": "loss", "value": 1.0}]), "df"]),
         measure=_MEASURE, color=Instance(str), dash=Instance(str, none=True), log_x=Flag(), title=_TITLE)
def step_curve(df: pd.DataFrame, measure: str | None = None, color: str = "run", dash: str | None = "split",
               log_x: bool = True, title: str | None = None) -> go.Figure:
    """A value against training step (a run's history or a measure across checkpoints).

    df:      rows in the results schema (:mod:`workbench.results`) with ``step`` filled, e.g.
             ``Run.history()`` or per-checkpoint measures.
    measure: which ``measure`` to draw. Needed when several are present, unless ``color`` / ``dash`` give
             every line one measure (e.g. ``color="measure"``).
    color:   one colour per value of this column; ``dash``: one line style per value of this column (no
             styles when it is absent or empty). Rows with an empty ``color`` form one line named after
             the measure.
    log_x:   log-scaled step axis (checkpoints are log-spaced); step 0 is drawn at the axis' left end.
    """
    _plottable(check_tidy(df, "step_curve(df)", require=[color]), "step_curve(df)")
    data = df.copy()
    measures = _unique(data["measure"])
    if not measures:
        raise ValueError("step_curve: nothing to draw (the table is empty)")
    if dash is not None and (dash not in data.columns or data[dash].isna().all()):
        dash = None
    if measure is not None:
        if measure not in measures:
            raise ValueError(f"measure {measure!r} not in the data; available: {measures}")
        data = data[data["measure"] == measure]
    elif len(measures) == 1:
        measure = measures[0]
    elif (data.groupby([color] + ([dash] if dash else []), dropna=False)["measure"].nunique() > 1).any():
        raise ValueError(f"several measures in the data {measures}; pass measure=... (or color/dash columns that "
                         "give each line one measure)")
    if data["step"].isna().all():
        raise ValueError("step_curve(df): no row has a step; draw per-checkpoint rows (a history or a measure "
                         "at several steps)")
    data = data.sort_values("step")
    unnamed = data["measure"] if measure is None else str(measure)
    group = data[color].astype(object).where(data[color].notna(), unnamed).astype(str)
    style_of = data[dash].astype(object).where(data[dash].notna(), "").astype(str) if dash else None
    fig = go.Figure()
    fig.update_layout(template=_style.TEMPLATE)
    groups = _unique(group)
    cmap = _style.color_map(groups)
    styles = ["solid", "dash", "dot", "dashdot", "longdash"]
    dashes = {v: styles[i % len(styles)] for i, v in enumerate(_unique(style_of))} if dash else {None: "solid"}
    for g in groups:
        for d, style in dashes.items():
            sub = data[(group == g) & ((style_of == d) if dash else True)]
            if sub.empty:
                continue
            x = sub["step"].to_numpy(dtype=float)
            if log_x:
                x = np.where(x <= 0, 0.5, x)  # step 0 shown just left of step 1 on a log axis
            name = f"{g} · {d}" if dash and d else str(g)
            fig.add_trace(go.Scatter(x=x.tolist(), y=sub["value"].tolist(), name=name, mode="lines+markers",
                                     line=dict(color=cmap[g], dash=style), marker=dict(size=4)))
    fig.update_xaxes(title_text="step", type="log" if log_x else "linear")
    fig.update_yaxes(title_text=_pretty(measure) if measure is not None else "value")
    if title:
        fig.update_layout(title_text=title)
    return attach_data(fig, data, "step_curve")

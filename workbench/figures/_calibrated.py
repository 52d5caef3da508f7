"""Figures of calibrated similarity (:mod:`workbench.similarity._calibrated`): a permutation null with the observed
score, or a layer x layer heatmap of calibrated scores with the non-significant cells marked. No science here."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from .._validation import Data, Instance, Interval, Options, declare
from ..results import check_tidy, tidy
from ..similarity import PermutationResult
from . import _style
from ._builders import attach_data

__all__ = ["null_figure"]

_VALUES = ("calibrated", "value", "z_score")


def _example_table() -> pd.DataFrame:
    """A 2 x 2 layer-pair table as :func:`workbench.similarity.permutation_matrix` returns it."""
    return tidy([{"layer": a, "layer_b": b, "measure": "cka", "value": v, "p_value": p, "null_mean": 0.1,
                  "null_sd": 0.02, "calibrated": (v - 0.1) / 0.9, "z_score": (v - 0.1) / 0.02, "n_permutations": 99}
                 for (a, b, v, p) in (("l0", "l0", 1.0, 0.01), ("l0", "l1", 0.12, 0.3),
                                      ("l1", "l0", 0.12, 0.3), ("l1", "l1", 1.0, 0.01))])


@declare(result_or_table=Data("any", example=_example_table, bad=["result_or_table", 3]),
         alpha=Interval(float, 0, 1, closed="neither"), value=Options(*_VALUES), title=Instance(str, none=True),
         bins=Interval(int, 1, None))
def null_figure(result_or_table: PermutationResult | pd.DataFrame, *, alpha: float = 0.05, value: str = "calibrated",
                title: str | None = None, bins: int = 40) -> go.Figure:
    """Draw a permutation test: its null distribution, or a table of them as a heatmap.

    * A :class:`~workbench.similarity.PermutationResult` (from :func:`~workbench.similarity.permutation_test`):
      a histogram of the permuted scores (``bins`` bins) with the observed score as a vertical line, annotated
      with the p-value and the calibrated score. Stored rows: the permuted scores (``measure`` = "<measure>_null")
      and the observed one, with ``p_value``, ``null_mean``, ``calibrated``.
    * A layer-pair table (from :func:`~workbench.similarity.permutation_matrix`; results schema with ``layer_b``,
      ``p_value`` and the ``value`` column chosen): a heatmap of ``value`` ("calibrated" by default, or the raw
      "value", or "z_score"), layers of ``a`` as rows in table order; cells with ``p_value > alpha`` show "n.s."
      (no multiple-comparison correction). Stored rows: the table's rows drawn.

    Examples
    --------
    >>> import numpy as np
    >>> from workbench.similarity import permutation_test
    >>> x = np.random.default_rng(0).normal(size=(50, 3))
    >>> fig = null_figure(permutation_test(x, x, n_permutations=99))
    >>> [t.type for t in fig.data]
    ['histogram']
    """
    if isinstance(result_or_table, PermutationResult):
        return _null_histogram(result_or_table, title, bins)
    if not isinstance(result_or_table, pd.DataFrame):
        raise TypeError("result_or_table must be a PermutationResult (permutation_test) or a layer-pair table "
                        f"(permutation_matrix), got {type(result_or_table).__name__}")
    table = check_tidy(result_or_table, "null_figure(result_or_table)", require=["layer_b", "p_value", value])
    return _calibrated_heatmap(table, alpha, value, title)


def _null_histogram(r: PermutationResult, title: str | None, bins: int) -> go.Figure:
    colors = _style.palette()
    if len(r.null) == 0:  # method="moments": no permuted scores, the null's closed-form Pearson III density
        return _null_density(r, title, colors)
    fig = go.Figure(go.Histogram(x=r.null, nbinsx=bins, name="permuted", marker_color=colors[0], opacity=0.8,
                                 hovertemplate="%{x:.3f}: %{y}<extra>permuted</extra>"))
    fig.add_vline(x=r.score, line_color=colors[1 % len(colors)], line_width=2,
                  annotation_text=f"observed {r.score:.3f}<br>p = {r.p_value:.3g}, calibrated {r.calibrated:.3f}",
                  annotation_position="top left")
    fig.update_layout(template=_style.TEMPLATE, showlegend=False, bargap=0.02,
                      title_text=title if title else f"{r.measure}: permutation null (T = {r.n_permutations})")
    fig.update_xaxes(title_text=r.measure)
    fig.update_yaxes(title_text="permutations")
    stats = {"p_value": r.p_value, "null_mean": r.null_mean, "calibrated": r.calibrated}
    drawn = tidy([{"measure": f"{r.measure}_null", "value": float(v), **stats} for v in r.null]
                 + [{"measure": r.measure, "value": r.score, **stats}])
    return attach_data(fig, drawn, "null_figure")


def _null_density(r: PermutationResult, title: str | None, colors: list) -> go.Figure:
    """The Pearson type III law with the null's exact mean, sd and skewness (what the moments p-value integrates)."""
    from scipy import stats

    law = stats.pearson3(r.null_skew, loc=r.null_mean, scale=r.null_sd) if r.null_sd > 0 else None
    lo, hi = (law.ppf(1e-4), law.ppf(1 - 1e-4)) if law is not None else (r.null_mean, r.null_mean)
    x = np.linspace(min(lo, r.score), max(hi, r.score), 400) if hi > lo else np.array([r.null_mean])
    y = law.pdf(x) if law is not None else np.array([1.0])
    fig = go.Figure(go.Scatter(x=x, y=y, mode="lines", name="null (moments)", line_color=colors[0],
                               hovertemplate="%{x:.3f}: %{y:.3g}<extra>null density</extra>"))
    fig.add_vline(x=r.score, line_color=colors[1 % len(colors)], line_width=2,
                  annotation_text=f"observed {r.score:.3f}<br>p = {r.p_value:.3g}, calibrated {r.calibrated:.3f}",
                  annotation_position="top left")
    fig.update_layout(template=_style.TEMPLATE, showlegend=False,
                      title_text=title if title else f"{r.measure}: permutation null (exact moments, Pearson III)")
    fig.update_xaxes(title_text=r.measure)
    fig.update_yaxes(title_text="density")
    stats_ = {"p_value": r.p_value, "null_mean": r.null_mean, "calibrated": r.calibrated}
    drawn = tidy([{"measure": f"{r.measure}_null_density", "value": float(v), **stats_} for v in y]
                 + [{"measure": r.measure, "value": r.score, **stats_}])
    return attach_data(fig, drawn, "null_figure")


def _calibrated_heatmap(table: pd.DataFrame, alpha: float, value: str, title: str | None) -> go.Figure:
    if table.empty:
        raise ValueError("null_figure(result_or_table): the table is empty; nothing to draw")
    measures = list(pd.unique(table["measure"]))
    if len(measures) > 1:
        raise ValueError(f"null_figure(result_or_table) holds several measures {measures}; filter to one")
    if table.duplicated(["layer", "layer_b"]).any():
        raise ValueError("null_figure(result_or_table) has several rows per (layer, layer_b); filter to one run / "
                         "one step first")
    rows = [str(v) for v in pd.unique(table["layer"].astype(str))]
    cols = [str(v) for v in pd.unique(table["layer_b"].astype(str))]
    keyed = table.assign(layer=table["layer"].astype(str), layer_b=table["layer_b"].astype(str))
    z = keyed.pivot(index="layer", columns="layer_b", values=value).reindex(index=rows, columns=cols)
    p = keyed.pivot(index="layer", columns="layer_b", values="p_value").reindex(index=rows, columns=cols)
    p_np = p.to_numpy(dtype=float)
    text = np.where(p_np <= alpha, "", "n.s.")
    zmin, zmax = (0.0, 1.0) if value != "z_score" else (None, None)
    fig = go.Figure(go.Heatmap(
        z=z.to_numpy(dtype=float), x=cols, y=rows, zmin=zmin, zmax=zmax, text=text, texttemplate="%{text}",
        customdata=p_np, colorbar=dict(title=dict(text=f"{measures[0]} ({value})")),
        hovertemplate="%{y} × %{x}: %{z:.3f}, p = %{customdata:.3g}<extra></extra>"))
    fig.update_layout(template=_style.TEMPLATE,
                      title_text=title if title else f"{measures[0]}: {value}; n.s. = p > {alpha:g}")
    fig.update_xaxes(type="category", title_text="layer", showgrid=False)
    fig.update_yaxes(type="category", title_text="layer", showgrid=False, autorange="reversed")
    order = {v: i for i, v in enumerate(rows)}, {v: i for i, v in enumerate(cols)}
    drawn = keyed.assign(_r=keyed["layer"].map(order[0]), _c=keyed["layer_b"].map(order[1]))
    drawn = drawn.sort_values(["_r", "_c"], kind="stable").drop(columns=["_r", "_c"])
    return attach_data(fig, table.loc[drawn.index], "null_figure")

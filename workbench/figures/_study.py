"""A measure against downstream performance across the runs of a study, one point per run.

Input: the study table (:meth:`workbench.study.Study.run`: the results schema — ``run``, ``step``, ``layer``,
``layer_index``, ``measure``, ``split``, ``value`` … — then ``kind``, ``task``, ``method``, ``label_fraction``,
the varied fields and ``seed``). The selections follow :meth:`~workbench.study.Study.correlate`: a dict of
column values that must leave one row per run (the last checkpoint of each run unless ``step`` is given), e.g.
``{"kind": "measure", "measure": "rankme", "layer": "pool"}``; a value of None selects empty cells.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from . import _style
from .._validation import Data, Instance, Options, declare
from ..results import check_tidy, tidy
from ..study import select_per_run
from ._builders import _plottable, _unique, attach_data

__all__ = ["per_run_values", "study_scatter", "RANK_METHODS"]

RANK_METHODS = ("spearman", "kendall")


# declared rules (workbench._validation.declare): a small study table of four runs, and the two selections
def _example_study() -> pd.DataFrame:
    return tidy([{"run": f"r{i}", "step": 10, "layer": "l1", "measure": "rankme", "value": 1.0 + i, "kind": "measure"}
                 for i in range(4)] + [{"run": f"r{i}", "step": 10, "measure": "accuracy", "split": "test",
                                        "value": 0.5 + 0.1 * i ** 2, "kind": "downstream"} for i in range(4)])


_TABLE = Data("any", example=_example_study, bad=[pd.DataFrame({"measure": ["rankme"], "value": [1.0]}), "table"])
_SELECTIONS = {"measure": Data("any", example={"kind": "measure", "measure": "rankme"}, bad=["rankme", {}]),
               "downstream": Data("any", example={"kind": "downstream", "measure": "accuracy"}, bad=["accuracy", {}])}


@declare(table=_TABLE, **_SELECTIONS, keep=Instance(Iterable))
def per_run_values(table: pd.DataFrame, measure: Mapping[str, Any], downstream: Mapping[str, Any], *,
                   keep: tuple[str, ...] = ()) -> pd.DataFrame:
    """One row per run with both values: ``run``, ``keep`` columns (e.g. the varied choices, taken from the
    measure row), ``measure`` and ``downstream`` (the two selected values). Runs lacking either value are left
    out."""
    _plottable(check_tidy(table, "per_run_values(table)"), "per_run_values(table)")
    a = select_per_run(table, measure, "measure")
    b = select_per_run(table, downstream, "downstream")
    missing = [c for c in keep if c not in a.columns]
    if missing:
        raise ValueError(f"keep names column(s) {missing} the table lacks")
    left = a[["run", *keep, "value"]].rename(columns={"value": "measure"})
    right = b[["run", "value"]].rename(columns={"value": "downstream"})
    out = left.merge(right, on="run", how="inner")
    return out.reset_index(drop=True)


@declare(table=_TABLE, **_SELECTIONS, color=Instance(str, none=True), method=Options(*RANK_METHODS),
         correlation=Data("any", none=True, bad=[pd.DataFrame(), "correlation"]), title=Instance(str, none=True))
def study_scatter(table: pd.DataFrame, measure: Mapping[str, Any], downstream: Mapping[str, Any], *,
                  color: str | None = None, method: str = "spearman", correlation: pd.DataFrame | None = None,
                  title: str | None = None) -> go.Figure:
    """Scatter of a measure (x) against a downstream score (y), one point per run, coloured by ``color``
    (a varied choice, e.g. ``"label_noise"``), with the rank correlation over the drawn runs in the title.

    The correlation is Spearman's ρ (or Kendall's τ-b, ``method="kendall"``) from ``scipy.stats`` over exactly
    the plotted points; pass ``correlation`` (the one-row frame :meth:`Study.correlate` returns for the
    same selections) to show its value and bootstrap interval instead. Fewer than 3 runs, or a constant
    coordinate, give no correlation ("n/a" in the title).
    """
    from scipy import stats

    if method not in RANK_METHODS:
        raise ValueError(f"method must be one of {RANK_METHODS}, got {method!r}")
    _plottable(check_tidy(table, "study_scatter(table)"), "study_scatter(table)")
    if color is not None and color not in table.columns:
        raise ValueError(f"study_scatter: color={color!r} is not a column of the table; columns: {list(table.columns)}")
    rows = per_run_values(table, measure, downstream, keep=(color,) if color else ())
    x, y = rows["measure"].to_numpy(float), rows["downstream"].to_numpy(float)
    symbol = "ρ" if method == "spearman" else "τ"
    if correlation is not None:
        if not isinstance(correlation, pd.DataFrame) or "value" not in correlation.columns or correlation.empty:
            raise ValueError("study_scatter: correlation must be the one-row DataFrame Study.correlate returns "
                             "(with a 'value' column)")
        c = correlation.iloc[0]
        rho = float(c["value"])
        ci = f" [{c['ci_low']:.2f}, {c['ci_high']:.2f}]" if {"ci_low", "ci_high"} <= set(correlation.columns) else ""
    elif len(rows) >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0:
        rho = float((stats.spearmanr if method == "spearman" else stats.kendalltau)(x, y)[0])
        ci = ""
    else:
        rho, ci = float("nan"), ""
    rows.attrs["correlation"] = rho
    mname = _label(measure)
    dname = _label(downstream)
    fig = go.Figure()
    fig.update_layout(template=_style.TEMPLATE)
    groups = _unique(rows[color]) if color else [None]
    try:
        groups = sorted(groups, key=lambda v: (v is None, v))
    except TypeError:
        pass
    cmap = _style.color_map([str(g) for g in groups])
    for g in groups:
        sub = rows if g is None else rows[rows[color] == g]
        fig.add_trace(go.Scatter(
            x=sub["measure"].tolist(), y=sub["downstream"].tolist(), mode="markers",
            name=f"{color}={g}" if color else "runs", showlegend=color is not None,
            marker=dict(color=cmap[str(g)], size=9, line=dict(width=0.5, color="white")),
            customdata=sub[["run"]].to_numpy(dtype=object),
            hovertemplate="%{customdata[0]}<br>" + f"{mname}: %{{x:.4g}}<br>{dname}: %{{y:.4g}}<extra></extra>"))
    fig.update_xaxes(title_text=_wrap(mname))
    fig.update_yaxes(title_text=_wrap(dname))
    corr = "n/a" if np.isnan(rho) else f"{rho:+.2f}{ci}"
    head = f"{method} {symbol} = {corr} (n = {len(rows)} runs)"
    fig.update_layout(title_text=f"{title} — {head}" if title else head)
    return attach_data(fig, rows, "study_scatter")


def _wrap(text: str, width: int = 40) -> str:
    """``text`` broken into lines of about ``width`` characters after its commas (``<br>``, plotly's line break):
    a long selection such as ``probe_accuracy (task=label, method=linear, label_fraction=1.0, split=test)`` ran
    past the plot's height as one vertical axis title and was cut off."""
    lines: list[str] = []
    for part in text.split(", "):
        if lines and len(lines[-1]) + 2 + len(part) <= width:
            lines[-1] += ", " + part
        else:
            lines.append(part)
    return ",<br>".join(lines)


def _label(sel: Mapping[str, Any]) -> str:
    main = sel.get("measure", next(iter(sel.values())))
    rest = [f"{k}={v}" for k, v in sel.items() if k not in ("measure", "kind")]
    return f"{main}" + (f" ({', '.join(rest)})" if rest else "")

"""Saliency sanity-check curves: similarity to the trained model's maps as layers are randomized top-down.

Draws the table of :func:`workbench.saliency.randomization_check` as in Adebayo et al. 2018 ("Sanity Checks for
Saliency Maps", NeurIPS, Fig. 2): x = ``original`` (nothing randomized), then the layers re-initialized, from the
output layer down; y = mean similarity per example with its bootstrap band; one line per similarity measure (and
method, when the table holds several). Works on the table alone (no captum, no model).
"""
from __future__ import annotations

from typing import Sequence

import pandas as pd
import plotly.graph_objects as go

from .._validation import Data, Instance, Interval, declare
from ..results import check_tidy, tidy
from ._builders import attach_data, layer_curve

__all__ = ["randomization_figure"]

ORIGINAL = "original"  # x label of step 0 (no layer randomized)


def _example_table() -> pd.DataFrame:
    """A cascading randomization table of one method, two measures and two layers (with intervals)."""
    rows = []
    for measure, values in (("spearman_abs", (1.0, 0.6, 0.2)), ("ssim", (1.0, 0.5, 0.1))):
        for step, (layer, index, v) in enumerate(zip((None, "head", "stem"), (None, 1, 0), values)):
            rows.append({"layer": layer, "layer_index": index, "measure": measure, "value": v,
                         "ci_low": v - 0.05 * (step > 0), "ci_high": v + 0.05 * (step > 0), "method": "saliency",
                         "order": "cascading", "n_randomized": step})
    return tidy(rows)


@declare(table=Data("any", example=_example_table,
                    bad=["table", pd.DataFrame({"measure": ["ssim"], "value": [1.0]}),
                         tidy([{"measure": "ssim", "value": 1.0}])]),
         similarity=Instance(str, list, tuple, none=True), reference=Interval(float, none=True),
         title=Instance(str, none=True))
def randomization_figure(table: pd.DataFrame, *, similarity: str | Sequence[str] | None = None,
                         reference: float | None = None, title: str | None = None) -> go.Figure:
    """Similarity of saliency maps to the trained model's maps vs the layers randomized (Adebayo et al. 2018).

    Parameters
    ----------
    table : the table of :func:`workbench.saliency.randomization_check` (results schema with the extra columns
        ``method``, ``order`` and ``n_randomized``); tables of several methods or both orders may be
        concatenated (one line per measure and method; one panel per order).
    similarity : measure name(s) to draw (default every measure in the table).
    reference : a similarity drawn as a dotted horizontal line, e.g. the value between two unrelated models.
    title : figure title.

    The x axis is ``original`` (step 0), then the randomized layers from the top (output) layer down: the
    cascading steps in order, or, for ``order="independent"``, each layer alone in the same top-down order.
    Attached data (:func:`workbench.figures.plotted_data`): the drawn rows of ``table`` with the columns
    ``x`` (axis label) and ``series`` (line name) added.

    >>> fig = randomization_figure(_example_table())
    >>> [t.name for t in fig.data if t.showlegend is not False]
    ['spearman_abs', 'ssim']
    >>> list(fig.layout.xaxis.categoryarray)
    ['original', 'head', 'stem']
    """
    check_tidy(table, "randomization_figure(table)", require=["method", "order", "n_randomized"])
    if table.empty:
        raise ValueError("table is empty; pass the table of workbench.saliency.randomization_check")
    data = table.copy()
    if similarity is not None:
        wanted = [similarity] if isinstance(similarity, str) else list(similarity)
        have = list(pd.unique(data["measure"]))
        missing = [m for m in wanted if m not in have]
        if missing or not wanted:
            raise ValueError(f"similarity {missing or wanted} is not in the table; measures: {have}")
        data = data[data["measure"].isin(wanted)]
    step0 = data["n_randomized"] == 0
    if data.loc[~step0, "layer"].isna().any():
        raise ValueError("table has randomization steps (n_randomized > 0) without a layer name; pass the table of "
                         "randomization_check unchanged")
    # x order: original, then layers from the top down (highest layer_index first)
    layers = (data.loc[~step0, ["layer", "layer_index"]].drop_duplicates("layer")
              .sort_values("layer_index", ascending=False, kind="stable")["layer"].astype(str).tolist())
    position = {name: i + 1 for i, name in enumerate(layers)}
    data["x"] = data["layer"].astype(object).where(~step0, ORIGINAL).astype(str)
    methods = list(pd.unique(data["method"].astype(str)))
    data["series"] = data["measure"].astype(str) if len(methods) == 1 else \
        data["measure"].astype(str) + " · " + data["method"].astype(str)

    drawn = data.assign(layer=data["x"], layer_index=data["x"].map(position).fillna(0).astype(int),
                        measure="similarity")
    orders = list(pd.unique(drawn["order"].astype(str)))
    fig = layer_curve(drawn, measure="similarity", color="series", facet="order" if len(orders) > 1 else None,
                      error="band", baseline=None if reference is None else float(reference), title=title)
    what = "layer randomized alone" if orders == ["independent"] else "layers randomized (top down)"
    fig.update_xaxes(categoryarray=[ORIGINAL] + layers, title_text=what)
    fig.update_layout(yaxis_title_text="similarity to the trained model's maps")
    return attach_data(fig, data, "randomization_figure")

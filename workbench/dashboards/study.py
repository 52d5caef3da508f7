"""Study dashboard: each measure against downstream performance across runs, one point per run, coloured by
the varied pretraining choice, rank correlation in the title (:func:`workbench.figures.study_scatter`).

>>> study = Study(base, vary={"label_noise": [0, 0.2, 0.4]}, seeds=[0, 1]); study.run()
>>> dash = StudyDashboard(study)                         # or StudyDashboard(study.table, color="label_noise")
>>> dash.select(measure="effective_rank", layer="block3", downstream={"method": "linear", "measure": "accuracy"})
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from .. import figures
from ..results import COLUMNS, EXTRA_COLUMNS, check_tidy
from ._base import Dashboard, set_options, uniq

__all__ = ["StudyDashboard"]

#: columns of a study table that are not pretraining choices: the results schema and its named extras
STUDY_COLUMNS = (*COLUMNS, *EXTRA_COLUMNS)
_DOWNSTREAM_KEYS = ("task", "method", "label_fraction", "split", "measure")


def _plain(v: Any) -> Any:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return None
    return v.item() if hasattr(v, "item") else v


class StudyDashboard(Dashboard):
    """Interactive :func:`~workbench.figures.study_scatter` over a study table.

    study:  a :class:`workbench.study.Study` after ``.run()`` (its ``table``; colour choices from ``vary``) or
            the study table itself.
    color:  initial colour column (default: the first varied field).
    measure, layer, downstream: initial selection; ``downstream`` is a dict over ``task, method,
            label_fraction, split, measure`` naming one of the downstream rows' combinations.
    method: ``"spearman"`` or ``"kendall"``.
    """

    def __init__(self, study: Any, *, color: str | None = None, measure: str | None = None, layer: Any = None,
                 downstream: Mapping[str, Any] | None = None, method: str = "spearman",
                 export_path: str = "study_scatter.svg"):
        self._init_base(export_path)
        W = self._W
        table = getattr(study, "table", study)
        if not isinstance(table, pd.DataFrame):
            raise TypeError("StudyDashboard needs a Study after .run() or its table (a DataFrame), got "
                            f"{type(study).__name__}"
                            + (" without a table: call .run() first" if hasattr(study, "vary") else ""))
        check_tidy(table, "StudyDashboard(study)", require=["kind"])
        if method not in figures.RANK_METHODS:
            raise ValueError(f"method must be one of {figures.RANK_METHODS}, got {method!r}")
        self.table, self.method = table, method
        varied = list(getattr(study, "vary", {}) or [c for c in table.columns if c not in STUDY_COLUMNS])
        self.choices = [c for c in varied if c in table.columns] + (["seed"] if "seed" in table.columns
                                                                     and "seed" not in varied else [])
        m = table[table["kind"] == "measure"]
        d = table[table["kind"] == "downstream"]
        if m.empty or d.empty:
            raise ValueError("StudyDashboard: the table needs rows of kind 'measure' and 'downstream' "
                             f"(kinds present: {sorted(table['kind'].dropna().unique())})")
        keys = [k for k in _DOWNSTREAM_KEYS if k in d.columns]
        combos = d[keys].drop_duplicates().to_dict("records")
        self.downstream_options = [{k: _plain(v) for k, v in c.items()} for c in combos]

        self.measure_w = W.Dropdown(description="measure")
        self.layer_w = W.Dropdown(description="layer")
        self.downstream_w = W.Dropdown(description="downstream", layout=W.Layout(width="540px"),
                                       style={"description_width": "initial"})  # the label and choice uncut
        self.color_w = W.Dropdown(description="colour")
        with self._hold():
            set_options(self.measure_w, [str(v) for v in uniq(m["measure"])], measure)
            self._set_layers(layer)
            labels = [", ".join(f"{k}={v}" for k, v in c.items() if v is not None) for c in self.downstream_options]
            idx = list(range(len(self.downstream_options)))
            want = self._downstream_index(downstream) if downstream is not None else self._default_downstream()
            set_options(self.downstream_w, idx, want, labels=labels)
            set_options(self.color_w, [None] + self.choices, color if color is not None else
                        (self.choices[0] if self.choices else None), labels=["(none)"] + self.choices)
        self._update()
        for w in [self.measure_w, self.layer_w, self.downstream_w, self.color_w]:
            w.observe(self._on_change, names="value")
        controls = W.HBox([W.VBox([self.measure_w, self.layer_w]), W.VBox([self.downstream_w, self.color_w])])
        self.widget = W.VBox([controls, self.figure, self.export_row, self.status])

    def _default_downstream(self) -> int:
        """The first combination scored by accuracy on a test split, else the first one."""
        for i, c in enumerate(self.downstream_options):
            if c.get("measure") == "accuracy" and c.get("split") in ("test", None):
                return i
        return 0

    def _downstream_index(self, sel: Mapping[str, Any]) -> int:
        hits = [i for i, c in enumerate(self.downstream_options) if all(c.get(k) == v for k, v in sel.items())]
        if len(hits) != 1:
            raise ValueError(f"downstream={dict(sel)} matches {len(hits)} of the combinations "
                             f"{self.downstream_options}; name one exactly")
        return hits[0]

    def _set_layers(self, layer: Any) -> None:
        t = self.table
        sub = t[(t["kind"] == "measure") & (t["measure"] == self.measure_w.value)]
        layers = [str(v) for v in uniq(sub["layer"])] if "layer" in sub else []
        set_options(self.layer_w, layers or [None], layer if layer in layers else None)
        self.layer_w.disabled = not layers

    def _on_change(self, change=None) -> None:
        if self._hold_depth:
            return
        if change is not None and change["owner"] is self.measure_w:
            with self._hold():
                self._set_layers(self.layer_w.value)
        self._update()

    def selections(self) -> tuple[dict, dict]:
        """The ``(measure, downstream)`` selections drawn (as for :meth:`Study.correlate`)."""
        m = {"kind": "measure", "measure": self.measure_w.value}
        if self.layer_w.value is not None:
            m["layer"] = self.layer_w.value
        d = {"kind": "downstream", **self.downstream_options[self.downstream_w.value]}
        return m, d

    def current_frame(self) -> pd.DataFrame:
        """One row per run: ``run``, the colour column, ``measure``, ``downstream``."""
        m, d = self.selections()
        color = self.color_w.value
        return figures.per_run_values(self.table, m, d, keep=(color,) if color else ())

    def _build_figure(self) -> go.Figure | None:
        m, d = self.selections()
        return figures.study_scatter(self.table, m, d, color=self.color_w.value, method=self.method)

    def select(self, *, measure: str | None = None, layer: Any = None, downstream: Mapping[str, Any] | None = None,
               color: str | None = None) -> StudyDashboard:
        """Set controls programmatically (None keeps a control's value) and redraw once."""
        with self._hold():
            if measure is not None:
                self.measure_w.value = self._check_choice(measure, [v for _l, v in self.measure_w.options], "measure")
                self._set_layers(layer if layer is not None else self.layer_w.value)
            if layer is not None:
                self.layer_w.value = self._check_choice(str(layer), [v for _l, v in self.layer_w.options], "layer")
            if downstream is not None:
                self.downstream_w.value = self._downstream_index(downstream)
            if color is not None:
                self.color_w.value = self._check_choice(color, self.choices, "color")
        self._update()
        return self

    def __repr__(self) -> str:
        m, d = self.selections()
        return f"StudyDashboard(measure={m}, downstream={d}, color={self.color_w.value!r})"

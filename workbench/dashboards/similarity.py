"""Similarity dashboard: layer × layer heatmap of a measure between two runs, with a checkpoint slider.

Input: layer-pair tables in the results schema (:mod:`workbench.results`) with the first run in ``run``, the
second in the extra column ``run_b`` and the checkpoint in ``step`` — what
:func:`workbench.study.cross_run_similarity` returns (``similarity.*_matrix(a, b)``'s rows ``layer`` ×
``layer_b`` with ``run``, ``run_b`` set), concatenated over run pairs and checkpoints.

>>> dash = SimilarityDashboard(pairs)
>>> dash.select(pair=("supervised", "simclr"), step=1000)
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import pandas as pd
import plotly.graph_objects as go

from .. import figures
from ..results import check_tidy
from ._base import Dashboard, set_options, uniq

__all__ = ["SimilarityDashboard"]

#: the extra columns a pairs table needs besides the results schema
REQUIRED = ("layer_b", "run_b")


def _auto_range(measure: str) -> tuple[float | None, float | None]:
    """Biased CKA lies in [0, 1]: fix that range so checkpoints compare; anything else: the data range."""
    return (0.0, 1.0) if str(measure).startswith("cka") and "debiased" not in str(measure) else (None, None)


class SimilarityDashboard(Dashboard):
    """Interactive :func:`~workbench.figures.layer_heatmap` over run pairs, measures and checkpoints.

    pairs:  tidy frame (module docstring) or a zero-argument callable returning one.
    pair:   initial ``(run, run_b)``; measure, step: initial measure and checkpoint (default latest).
    zrange: ``"auto"`` (0..1 for biased CKA, data range otherwise), None (data range) or ``(zmin, zmax)``.
    """

    def __init__(self, pairs: pd.DataFrame | Callable[[], pd.DataFrame], *, pair: Sequence[str] | None = None,
                 measure: str | None = None, step: Any = None, zrange: Any = "auto",
                 export_path: str = "similarity.svg", title: str | None = None):
        self._init_base(export_path)
        W = self._W
        if not (zrange in ("auto", None) or (isinstance(zrange, (tuple, list)) and len(zrange) == 2)):
            raise ValueError(f"zrange must be 'auto', None or (zmin, zmax), got {zrange!r}")
        self._source, self.zrange, self.title = pairs, zrange, title
        self.data = self._load()
        self.pair_w = W.Dropdown(description="runs")
        self.measure_w = W.Dropdown(description="measure")
        all_steps = sorted(uniq(self.data["step"])) if "step" in self.data.columns else []
        self.step_w = W.SelectionSlider(description="step", options=all_steps, continuous_update=False) \
            if all_steps else None
        with self._hold():
            self._set_options(pair=tuple(pair) if pair is not None else None, measure=measure, step=step)
        self._update()
        for w in [self.pair_w, self.measure_w, self.step_w]:
            if w is not None:
                w.observe(self._on_change, names="value")
        controls = [self.pair_w, self.measure_w] + ([self.step_w] if self.step_w is not None else [])
        self.widget = W.VBox([W.HBox(controls), self.figure, self.export_row, self.status])

    def _load(self) -> pd.DataFrame:
        df = self._source() if callable(self._source) else self._source
        if not isinstance(df, pd.DataFrame):
            raise TypeError(f"SimilarityDashboard: pairs must be a DataFrame (or a function returning one), "
                            f"got {type(df).__name__}")
        check_tidy(df, "SimilarityDashboard(pairs)", require=REQUIRED)
        if df.empty:
            raise ValueError("SimilarityDashboard: the pairs frame is empty")
        return df

    def refresh(self) -> SimilarityDashboard:
        """Re-read the frame (re-calls the function, if one was given) and redraw, keeping the selection."""
        self.data = self._load()
        with self._hold():
            self._set_options(pair=self.pair_w.value, measure=self.measure_w.value,
                              step=self.step_w.value if self.step_w is not None else None)
        self._update()
        return self

    def _set_options(self, *, pair, measure, step) -> None:
        df = self.data
        pairs = [tuple(p) for p in uniq(zip(df["run"].astype(str), df["run_b"].astype(str)))]
        set_options(self.pair_w, pairs, pair, labels=[f"{a}  ×  {b}" for a, b in pairs])
        self._set_dependent(measure=measure, step=step)

    def _set_dependent(self, *, measure, step) -> None:
        sub = self._pair_rows()
        set_options(self.measure_w, [str(m) for m in uniq(sub["measure"])], measure)
        if self.step_w is not None:
            steps = sorted(uniq(sub.loc[sub["measure"] == self.measure_w.value, "step"]))
            if steps:
                set_options(self.step_w, steps, step if step in steps else steps[-1])

    def _pair_rows(self) -> pd.DataFrame:
        a, b = self.pair_w.value
        df = self.data
        return df[(df["run"].astype(str) == a) & (df["run_b"].astype(str) == b)]

    def _on_change(self, change=None) -> None:
        if self._hold_depth:
            return
        if change is not None and change["owner"] is not self.step_w:
            with self._hold():  # another pair/measure may have other checkpoints
                self._set_dependent(measure=self.measure_w.value,
                                    step=self.step_w.value if self.step_w is not None else None)
        self._update()

    def current_frame(self) -> pd.DataFrame:
        """The rows drawn: the chosen pair, measure and checkpoint."""
        sub = self._pair_rows()
        sub = sub[sub["measure"] == self.measure_w.value]
        if self.step_w is not None and self.step_w.value is not None:
            sub = sub[sub["step"] == self.step_w.value]
        return sub

    def _build_figure(self) -> go.Figure | None:
        frame = self.current_frame()
        if frame.empty:
            return None
        zmin, zmax = _auto_range(self.measure_w.value) if self.zrange == "auto" else (self.zrange or (None, None))
        a, b = self.pair_w.value
        at = f" · step {self.step_w.value}" if self.step_w is not None and self.step_w.value is not None else ""
        return figures.layer_heatmap(frame, measure=self.measure_w.value, zmin=zmin, zmax=zmax,
                                     title=self.title or f"{self.measure_w.value}: {a} vs {b}{at}")

    def select(self, *, pair: Sequence[str] | None = None, measure: str | None = None,
               step: Any = None) -> SimilarityDashboard:
        """Set controls programmatically (None keeps a control's value) and redraw once."""
        with self._hold():
            if pair is not None:
                self.pair_w.value = self._check_choice(tuple(str(p) for p in pair),
                                                       [v for _l, v in self.pair_w.options], "pair")
                self._set_dependent(measure=measure or self.measure_w.value,
                                    step=step if step is not None else (self.step_w.value if self.step_w else None))
            if measure is not None:
                self.measure_w.value = self._check_choice(measure, [v for _l, v in self.measure_w.options], "measure")
                self._set_dependent(measure=measure, step=step if step is not None else
                                    (self.step_w.value if self.step_w else None))
            if step is not None:
                if self.step_w is None:
                    raise ValueError("the pairs frame has no 'step' column")
                self.step_w.value = self._check_choice(step, [v for _l, v in self.step_w.options], "step")
        self._update()
        return self

    def __repr__(self) -> str:
        return (f"SimilarityDashboard(pair={self.pair_w.value}, measure={self.measure_w.value!r}, "
                f"step={self.step_w.value if self.step_w is not None else None!r})")

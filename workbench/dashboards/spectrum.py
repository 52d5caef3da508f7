"""Spectrum dashboard: eigen-spectra of a layer at chosen checkpoints, and rank measures across layers.

Two tables in the results schema (:mod:`workbench.results`): ``spectra`` (one row per eigenvalue, ``measure``
``"eigenvalue"``, the eigenvalue in ``value`` and its position, 1 = largest, in the extra column ``rank``;
from :func:`workbench.spectrum.spectrum`) and ``measures`` (one row per layer and measure; from
:func:`workbench.spectrum.layer_spectrum_table`), both with ``run`` and ``step`` set.
:func:`spectrum_frames` makes both from activations; the dashboard only filters them.

>>> spectra, measures = spectrum_frames({("simclr", 0): acts0, ("simclr", 1000): acts1000})
>>> dash = SpectrumDashboard(spectra, measures)
>>> dash.select(run="simclr", layer="block3", steps=[0, 1000], measure="effective_rank")
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import pandas as pd
import plotly.graph_objects as go

from .. import figures
from ..results import check_tidy, tidy
from ._base import Dashboard, LiveFigure, clear_figure, row, set_options, uniq, update_figure

__all__ = ["SpectrumDashboard", "spectrum_frames"]


def spectrum_frames(acts: Mapping[tuple[str, int], Mapping[str, Any]], *,
                    measures: Sequence[str] = ("effective_rank", "rankme", "participation_ratio"),
                    centered: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``{(run, step): activations}`` → ``(spectra, measures)`` in the results schema (module docstring).

    Eigenvalues: :func:`workbench.spectrum.spectrum` (covariance eigenvalues when ``centered``); measures:
    :func:`workbench.spectrum.layer_spectrum_table` — both computed by the library, only stacked here.
    """
    from ..spectrum import layer_spectrum_table, spectrum

    if not isinstance(acts, Mapping) or not acts:
        raise TypeError("acts must be a non-empty mapping (run, step) -> activations (layer -> [N, D])")
    spec_parts, meas_parts = [], []
    for key, layers in acts.items():
        if not (isinstance(key, tuple) and len(key) == 2):
            raise TypeError(f"acts keys must be (run, step) tuples, got {key!r}")
        run, step = key
        for i, layer in enumerate(layers):
            lam = spectrum(layers[layer], centered=centered)
            spec_parts.append(pd.DataFrame({"run": run, "step": step, "layer": layer, "layer_index": i,
                                            "measure": "eigenvalue", "value": lam,
                                            "rank": range(1, len(lam) + 1)}))
        meas_parts.append(layer_spectrum_table(layers, measures).assign(run=run, step=step))
    return (tidy(pd.concat(spec_parts, ignore_index=True)),
            tidy(pd.concat(meas_parts, ignore_index=True)))


class SpectrumDashboard(Dashboard):
    """Eigen-spectra (``dash.figure``: :func:`~workbench.figures.spectrum_plot`, one line per checkpoint) and a
    rank measure per layer (``dash.rank_figure``: :func:`~workbench.figures.layer_curve`, one line per
    checkpoint, the chosen layer marked).

    spectra, measures: frames as in the module docstring (``measures`` may be None: no second plot).
    run, layer, steps, measure: initial selection (default: first run, first layer, all checkpoints,
              ``effective_rank`` if present).
    normalize: divide each spectrum by its sum (curves from different widths compare).
    """

    def __init__(self, spectra: pd.DataFrame, measures: pd.DataFrame | None = None, *, run: str | None = None,
                 layer: str | None = None, steps: Sequence[Any] | None = None, measure: str | None = None,
                 normalize: bool = True, export_path: str = "spectrum.svg"):
        self._init_base(export_path)
        W = self._W
        for name, df in (("spectra", spectra), ("measures", measures)):
            if df is None and name == "measures":
                continue
            check_tidy(df, f"SpectrumDashboard({name})")
            if df.empty:
                raise ValueError(f"SpectrumDashboard: {name} is empty")
        self.spectra = spectra
        self.measures = measures
        self.rank_figure = LiveFigure() if measures is not None else None
        self.run_w = W.Dropdown(description="run")
        self.layer_w = W.Dropdown(description="layer")
        self.steps_w = W.SelectMultiple(description="steps", rows=5)
        self.measure_w = W.Dropdown(description="measure", disabled=measures is None)
        self.normalize_w = W.Checkbox(value=bool(normalize), description="normalise (λ / Σλ)")
        with self._hold():
            set_options(self.run_w, [str(r) for r in uniq(spectra["run"])], run)
            self._set_dependent(layer=layer, steps=steps, measure=measure)
        self._update()
        for w in [self.run_w, self.layer_w, self.steps_w, self.measure_w, self.normalize_w]:
            w.observe(self._on_change, names="value")
        controls = W.VBox([self.run_w, self.layer_w, self.steps_w, self.measure_w, self.normalize_w],
                          layout=W.Layout(min_width="280px"))
        plots = [self.figure] + ([self.rank_figure] if self.rank_figure is not None else [])
        self.widget = W.VBox([row(controls, W.VBox(plots)), self.export_row, self.status])

    def _set_dependent(self, *, layer, steps, measure) -> None:
        sub = self.spectra[self.spectra["run"].astype(str) == self.run_w.value]
        order = sub.sort_values("layer_index", kind="stable") if "layer_index" in sub else sub
        set_options(self.layer_w, [str(v) for v in uniq(order["layer"].astype(str))], layer)
        all_steps = sorted(uniq(sub["step"]))
        set_options(self.steps_w, all_steps, all_steps if steps is None else list(steps))
        if self.measures is not None:
            ms = [str(m) for m in uniq(self.measures["measure"])]
            set_options(self.measure_w, ms, measure if measure in ms else
                        ("effective_rank" if "effective_rank" in ms else None))

    def _on_change(self, change=None) -> None:
        if self._hold_depth:
            return
        if change is not None and change["owner"] is self.run_w:
            with self._hold():
                self._set_dependent(layer=self.layer_w.value, steps=list(self.steps_w.value),
                                    measure=self.measure_w.value)
        self._update()

    # ------------------------------------------------------------------ frames and figures
    def current_frame(self) -> pd.DataFrame:
        """Spectrum rows drawn: chosen run and layer, chosen checkpoints."""
        s = self.spectra
        return s[(s["run"].astype(str) == self.run_w.value) & (s["layer"].astype(str) == self.layer_w.value)
                 & s["step"].isin(list(self.steps_w.value))]

    def current_measures(self) -> pd.DataFrame:
        """Measure rows drawn in ``rank_figure``: chosen run, measure and checkpoints, every layer."""
        if self.measures is None:
            return pd.DataFrame()
        m = self.measures
        return m[(m["run"].astype(str) == self.run_w.value) & (m["measure"] == self.measure_w.value)
                 & m["step"].isin(list(self.steps_w.value))]

    def _build_figure(self) -> go.Figure | None:
        frame = self.current_frame()
        if frame.empty:
            return None
        # one run and layer: each line is labelled by its checkpoint (run and layer are in the title)
        return figures.spectrum_plot(frame, normalize=self.normalize_w.value,
                                     title=f"{self.run_w.value} · {self.layer_w.value}")

    def _figures(self) -> list[go.FigureWidget]:
        return [self.figure] + ([self.rank_figure] if self.rank_figure is not None else [])

    def _build_rank_figure(self) -> go.Figure | None:
        frame = self.current_measures()
        if frame.empty:
            return None
        fig = figures.layer_curve(frame.assign(step=frame["step"].astype(str)), measure=self.measure_w.value,
                                  color="step", error=False, title=f"{self.run_w.value}: {self.measure_w.value}",
                                  highlight=self.layer_w.value if self.layer_w.value in set(frame["layer"].astype(str))
                                  else None)
        return fig.update_layout(legend_title_text="step")

    def _update(self) -> None:
        super()._update()
        if self.rank_figure is not None:
            new = self._build_rank_figure()
            if new is None:
                clear_figure(self.rank_figure, "no measure rows for this selection")
            else:
                update_figure(self.rank_figure, new)

    def select(self, *, run: str | None = None, layer: str | None = None, steps: Sequence[Any] | None = None,
               measure: str | None = None, normalize: bool | None = None) -> SpectrumDashboard:
        """Set controls programmatically (None keeps a control's value) and redraw once."""
        with self._hold():
            if run is not None:
                self.run_w.value = self._check_choice(str(run), [v for _l, v in self.run_w.options], "run")
                self._set_dependent(layer=self.layer_w.value, steps=list(self.steps_w.value),
                                    measure=self.measure_w.value)
            if layer is not None:
                self.layer_w.value = self._check_choice(str(layer), [v for _l, v in self.layer_w.options], "layer")
            if steps is not None:
                allowed = [v for _l, v in self.steps_w.options]
                for s in steps:
                    self._check_choice(s, allowed, "steps")
                self.steps_w.value = tuple(steps)
            if measure is not None:
                if self.measures is None:
                    raise ValueError("no measures frame was given")
                self.measure_w.value = self._check_choice(measure, [v for _l, v in self.measure_w.options], "measure")
            if normalize is not None:
                self.normalize_w.value = bool(normalize)
        self._update()
        return self

    def __repr__(self) -> str:
        return (f"SpectrumDashboard(run={self.run_w.value!r}, layer={self.layer_w.value!r}, "
                f"steps={list(self.steps_w.value)}, measure={self.measure_w.value!r})")

"""Figures: tidy DataFrames in, plotly figures out; paper export and offline HTML reports.

>>> fig = workbench.figures.layer_curve(results, measure="probe_accuracy", baseline="random-init")
>>> workbench.figures.export(fig, "figs/probe.pdf", width="single")   # + figs/probe.csv, figs/probe.json

Builders store the rows they drew in ``fig.layout.meta["workbench"]`` (:func:`plotted_data` reads
them back), so the CSV written next to an exported figure is exactly what it shows.
Importing this package does not import ipywidgets or kaleido.
"""
from __future__ import annotations

from .builders import attach_data, layer_curve, layer_heatmap, plotted_data, spectrum_plot, step_curve
from .embedding import embedding_scatter, example_grid, project
from .probes import probe_curve, with_layer_index
from .saliency import attribution_map, saliency_grid
from .study import per_run_values, study_scatter
from .export import close_browser, export, find_chromium, to_html
from .style import (DEFAULT_STYLE, PAPER_TEMPLATE, TEMPLATE, color_map, get_style, load_style, palette,
                    register_templates, use_style)

__all__ = ["layer_curve", "layer_heatmap", "spectrum_plot", "step_curve", "plotted_data", "attach_data",
           "probe_curve", "with_layer_index", "project", "embedding_scatter", "example_grid", "saliency_grid",
           "attribution_map", "per_run_values", "study_scatter",
           "export", "to_html", "find_chromium", "close_browser",
           "DEFAULT_STYLE", "TEMPLATE", "PAPER_TEMPLATE", "get_style", "load_style", "use_style",
           "register_templates", "palette", "color_map"]

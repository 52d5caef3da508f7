"""Figures: tidy DataFrames in, plotly figures out; paper export and offline HTML reports.

>>> fig = workbench.figures.layer_curve(results, measure="probe_accuracy", baseline="random-init")
>>> workbench.figures.export(fig, "figs/probe.pdf", width="single")   # + figs/probe.csv, figs/probe.json

Builders store the rows they drew in ``fig.layout.meta["workbench"]`` (:func:`plotted_data` reads
them back), so the CSV written next to an exported figure is exactly what it shows.
Importing this package does not import ipywidgets or kaleido.
"""
from __future__ import annotations

from .builders import attach_data, layer_curve, layer_heatmap, plotted_data, spectrum_plot, step_curve
from .export import close_browser, export, find_chromium, to_html
from .style import (DEFAULT_STYLE, PAPER_TEMPLATE, TEMPLATE, color_map, get_style, load_style, palette,
                    register_templates, use_style)

__all__ = ["layer_curve", "layer_heatmap", "spectrum_plot", "step_curve", "plotted_data", "attach_data",
           "export", "to_html", "find_chromium", "close_browser",
           "DEFAULT_STYLE", "TEMPLATE", "PAPER_TEMPLATE", "get_style", "load_style", "use_style",
           "register_templates", "palette", "color_map"]

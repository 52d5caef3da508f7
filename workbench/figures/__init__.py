"""Figures: tidy DataFrames in, plotly figures out; paper export and offline HTML reports.

>>> import workbench.figures
>>> from workbench.results import tidy
>>> results = tidy([{"run": run, "layer": layer, "measure": "probe_accuracy", "value": value}
...                 for run, values in {"trained": [0.5, 0.8], "random-init": [0.4, 0.4]}.items()
...                 for layer, value in zip(["block1", "block2"], values)])
>>> fig = workbench.figures.layer_curve(results, measure="probe_accuracy", baseline="random-init")
>>> [trace.name for trace in fig.data]
['trained', 'random-init']
>>> workbench.figures._export(fig, "figs/probe.pdf", width="single")  # doctest: +SKIP

Builders store the rows they drew in ``fig.layout.meta["workbench"]`` (:func:`plotted_data` reads
them back), so the CSV written next to an exported figure is exactly what it shows.
Importing this package does not import ipywidgets or kaleido.
"""
from __future__ import annotations

from ._builders import attach_data, layer_curve, layer_heatmap, plotted_data, spectrum_plot, step_curve
from ._embedding import PROJECTIONS, embedding_scatter, example_grid, factor_column, project
from ._probes import ACCURACY_MEASURES, probe_curve, with_layer_index
from ._saliency import attribution_map, saliency_grid
from ._study import RANK_METHODS, per_run_values, study_scatter
from ._export import close_browser, export, find_chromium, to_html
from ._calibrated import null_figure
from ._interventions import amnesic_bars, inlp_curve, patching_curve
from ._mechanics import criticality_heatmap, interpolation_curve, shuffle_curve
from ._sanity import randomization_figure
from ._style import (DEFAULT_STYLE, PAPER_TEMPLATE, TEMPLATE, color_map, get_style, load_style, palette,
                    register_templates, use_style)

__all__ = ["layer_curve", "layer_heatmap", "spectrum_plot", "step_curve", "plotted_data", "attach_data",
           "probe_curve", "with_layer_index", "project", "embedding_scatter", "example_grid", "factor_column",
           "saliency_grid",
           "attribution_map", "per_run_values", "study_scatter",
           "export", "to_html", "find_chromium", "close_browser",
           "DEFAULT_STYLE", "TEMPLATE", "PAPER_TEMPLATE", "get_style", "load_style", "use_style",
           "register_templates", "palette", "color_map", "PROJECTIONS", "ACCURACY_MEASURES", "RANK_METHODS",
           "null_figure", "randomization_figure", "inlp_curve", "patching_curve", "amnesic_bars",
           "interpolation_curve", "shuffle_curve", "criticality_heatmap"]

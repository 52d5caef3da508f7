"""Notebook dashboards (ipywidgets 8 + plotly FigureWidget, as :class:`~workbench.dashboards._base.LiveFigure`; no
CDN). Each one draws a frame the library produced (or calls the library for it) through a :mod:`workbench.figures`
builder; none holds results of its own. ``dash.figure`` is the FigureWidget, updated in place; every dashboard
answers the same four calls (the base contract, :class:`~workbench.dashboards._base.Dashboard`):
``dash.select(...)`` sets the controls from code, ``dash.current_frame()`` is the rows the view is drawn from,
``dash.plotted_data()`` the rows the plot shows, ``dash.export(path)`` writes the view; ``display(dash)`` or ending
a cell with ``dash`` shows it.

>>> from workbench.dashboards import LayerDashboard, ProbeDashboard, combine
>>> combine(LayerDashboard(results, baseline="random-init"), ProbeDashboard(probes), titles=["layers", "probes"])
"""
from __future__ import annotations

from ._base import Combined, combine
from ._scatter import LARGE_THRESHOLD, LargeScatter
from .embedding import EmbeddingExplorer
from .lab import DEFAULT_LAB_CONFIG, PretrainingLab, TrainingCancelled, TrainingJob
from .layers import LayerDashboard
from .probes import ProbeDashboard
from .saliency import SaliencyDashboard
from .similarity import SimilarityDashboard
from .spectrum import SpectrumDashboard, spectrum_frames
from .study import StudyDashboard

__all__ = ["LayerDashboard", "ProbeDashboard", "SimilarityDashboard", "SpectrumDashboard", "spectrum_frames",
           "EmbeddingExplorer", "SaliencyDashboard", "StudyDashboard", "PretrainingLab", "TrainingJob",
           "TrainingCancelled", "DEFAULT_LAB_CONFIG", "combine", "Combined", "LargeScatter", "LARGE_THRESHOLD"]

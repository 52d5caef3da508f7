"""Notebook dashboards (ipywidgets + plotly FigureWidget). Each one draws a frame the library
produced; none holds results of its own.

>>> from workbench.dashboards import LayerDashboard
>>> LayerDashboard(results, baseline="random-init")
"""
from __future__ import annotations

from .layers import LayerDashboard

__all__ = ["LayerDashboard"]

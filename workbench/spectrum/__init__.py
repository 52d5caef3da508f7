"""Eigen-spectra of layer representations and rank-like summaries (RankMe, effective rank,
participation ratio). See :mod:`workbench.spectrum.rank` for how the three measures differ."""
from __future__ import annotations

from .rank import MEASURES, effective_rank, layer_spectrum_table, participation_ratio, rankme, spectrum

__all__ = ["rankme", "effective_rank", "participation_ratio", "spectrum", "layer_spectrum_table", "MEASURES"]

"""Eigen-spectra and geometry of layer representations.

* :mod:`~workbench.spectrum._moments` - :func:`second_moments`: one centering and at most one centered and
  one uncentered decomposition per representation, shared by every second-moment measure.
* :mod:`~workbench.spectrum._rank` - rank-like summaries of the spectrum: RankMe, effective rank,
  participation ratio, stable rank, alpha-ReQ, singular value entropy, largest singular value ratio,
  and :func:`layer_spectrum_table` (all of them per layer, tidy).
* :mod:`~workbench.spectrum._classes` - class structure: neural collapse NC1-NC4, CDNV, LiDAR.
* :mod:`~workbench.spectrum._dense` - DSE, the dense representation structure estimator of patch tokens.
* :mod:`~workbench.spectrum._contrastive` - alignment, uniformity and tolerance on the hypersphere.
* :mod:`~workbench.spectrum._subclass` - subclass spread inside superclasses (class collapse).
"""
from __future__ import annotations

from ._classes import cdnv, lidar, neural_collapse
from ._contrastive import alignment, tolerance, uniformity
from ._dense import DSEResult, dse
from ._moments import Moments, second_moments
from ._rank import (MEASURES, AlphaReqResult, alpha_req, effective_rank, largest_singular_value_ratio,
                   layer_spectrum_table, participation_ratio, rankme, singular_value_entropy, spectrum,
                   stable_rank)
from ._subclass import subclass_spread

__all__ = ["Moments", "second_moments", "rankme", "effective_rank", "participation_ratio", "stable_rank",
           "alpha_req", "AlphaReqResult", "singular_value_entropy", "largest_singular_value_ratio", "spectrum",
           "layer_spectrum_table", "MEASURES", "neural_collapse", "cdnv", "lidar", "dse", "DSEResult", "alignment",
           "uniformity", "tolerance", "subclass_spread"]

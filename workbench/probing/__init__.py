"""Probes that read labels or factors out of frozen representations.

* :func:`linear_probe` - L2-regularised multinomial logistic regression per layer (sklearn-equivalent
  objective, L-BFGS in torch), with C chosen by stratified cross-validation; returns a tidy table.
"""
from __future__ import annotations

from .linear import linear_probe

__all__ = ["linear_probe"]

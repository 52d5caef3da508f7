"""Representation similarity between layers, checkpoints and runs.

* :func:`cka` - centered kernel alignment of two representations (linear or RBF kernel, biased or
  debiased HSIC).
* :func:`cka_matrix` - CKA for every pair of layers of one or two models, as a tidy table or a matrix.
"""
from __future__ import annotations

from .cka import cka, cka_matrix

__all__ = ["cka", "cka_matrix"]

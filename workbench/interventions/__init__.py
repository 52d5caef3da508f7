"""Interventions: is the information a probe reads *used* by the model? Remove it, or swap it in from another model,
inside the forward pass, and measure what changes downstream. Every function returns a tidy table
(:mod:`workbench.results`) or a small result object holding one.

==============================  ===========================================================================
function                        what it does
==============================  ===========================================================================
:func:`nullspace_projection`    INLP (Ravfogel et al. 2020): the projection P removing every linear direction
                                from which labels can be read, its directions and the accuracy per iteration
:func:`leace_projection`        LEACE (Belrose et al. 2023): the closed-form least-change eraser after which
                                every class has the same mean
:func:`random_projection`       P removing k uniformly random directions (amnesic probing's control)
:func:`amnesic_probe`           amnesic probing (Elazar et al. 2021): the task's accuracy and loss with P
                                applied to a layer's output inside the forward pass, against random removal
:func:`projection_hook`         the forward hook that applies ``μ + (h − μ) P`` to a layer's output
:func:`patch`                   activation patching between two models of one architecture: the fraction of
                                the downstream gap that one layer's output carries
:func:`patch_layers`            :func:`patch` at every probe point (one row per layer)
:func:`patched_outputs`         the outputs of model_a with one layer's output taken from model_b
==============================  ===========================================================================

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> y = rng.integers(0, 2, 400)
>>> x = rng.normal(size=(400, 6)); x[:, 0] += 2 * (2 * y - 1)
>>> r = nullspace_projection(x, y, n_boot=0)
>>> r.n_removed >= 1, bool(np.allclose(r.projection @ r.projection, r.projection))
(True, True)
"""
from __future__ import annotations

from ._amnesic import amnesic_probe, projection_hook
from ._leace import leace_projection
from ._nullspace import NullspaceProjection, nullspace_projection, orthonormal_basis, random_projection
from ._patching import patch, patch_layers, patched_outputs

__all__ = ["nullspace_projection", "leace_projection", "random_projection", "NullspaceProjection", "orthonormal_basis",
           "amnesic_probe", "projection_hook", "patch", "patch_layers", "patched_outputs"]

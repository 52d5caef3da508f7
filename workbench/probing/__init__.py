"""Probes that read labels or factors out of frozen representations, with the controls that make them mean
something. Every probe takes the representation ``x`` - one array or tensor, an
:class:`~workbench.activations.Activations` or a layer → array mapping (widths may differ) - then ``labels``
and the evaluation sets ``evals``, options keyword-only, and returns a table in the one results schema
(:mod:`workbench.results`: run, step, layer, layer_index, measure, split, value, ci_low, ci_high) followed by
``target``, ``method`` (the probe: logistic, ridge, knn …) and its parameters.

* :func:`linear_probe` — L2 multinomial logistic regression (sklearn's objective), all layers × strengths ×
  folds in one batched solve.
* :func:`ridge_probe` (classification / regression R², all strengths from one eigendecomposition, exact LOO),
  :func:`knn_probe`, :func:`prototype_probe`, :func:`gaussian_nb_probe`, :func:`mlp_probe`.
* :func:`circular_probe` — circular factors (an angle, e.g. rotation; k-fold symmetry): ridge onto
  (sin kθ, cos kθ), scored by the mean cosine of the angle error.
* token-level: :func:`token_rows`, :func:`sentence_split` (split by sentence, no leakage).
* controls: :func:`control_task`, :func:`selectivity` (Hewitt & Liang 2019), :func:`random_init_twin`,
  :func:`with_baseline`; :func:`online_codelength` (MDL, Voita & Titov 2020, bits);
  :func:`label_efficiency`, :func:`stratified_subsample`, :func:`combine_seeds`, :func:`bootstrap_ci`.
"""
from __future__ import annotations

from ._linear import linear_probe
from ._circular import circular_probe
from ._controls import (combine_seeds, control_task, label_efficiency, random_init_twin, selectivity,
                       stratified_subsample, with_baseline)
from ._mdl import VOITA_TITOV_FRACTIONS, block_ends, online_codelength
from ._probes import gaussian_nb_probe, knn_probe, mlp_probe, prototype_probe, ridge_probe
from ._stats import bootstrap_ci
from ._tokens import TokenRows, sentence_split, token_rows

__all__ = ["linear_probe", "ridge_probe", "circular_probe", "knn_probe", "prototype_probe", "gaussian_nb_probe",
           "mlp_probe", "token_rows", "sentence_split", "TokenRows", "control_task", "selectivity", "random_init_twin",
           "with_baseline", "stratified_subsample", "label_efficiency", "combine_seeds", "online_codelength",
           "block_ends", "VOITA_TITOV_FRACTIONS", "bootstrap_ci"]

"""Representation similarity between layers, checkpoints and runs.

Every measure compares two representations of the same N examples; every ``*_matrix`` compares all layer
pairs of one or two models, preparing each layer once, and returns a tidy table or a matrix.

* CKA (:mod:`~workbench.similarity._cka`): :func:`cka`, :func:`cka_matrix` (linear/RBF, biased/debiased),
  minibatch CKA (Nguyen et al. 2021).
* CCA family (:mod:`~workbench.similarity._cca`): :func:`canonical_correlations`, :func:`cca` (mean ρ, R²CCA),
  :func:`svcca`, :func:`pwcca`.
* Shape metrics (:mod:`~workbench.similarity._shape`): :func:`shape_distance` (Williams et al. 2021; α=1
  Procrustes, α=0 CCA), angular or Euclidean.
* RSA (:mod:`~workbench.similarity._rsa`): :func:`rdm`, :func:`rsa`.
* Unit matching (:mod:`~workbench.similarity._matching`; Li et al. 2016, "Convergent learning"):
  :func:`unit_correlations`, :func:`match_units`, :func:`unit_matching` (Hungarian one-to-one matching or
  semi-matching on ``|correlation|``), :func:`unit_matching_matrix` — not invariant to rotations, unlike CKA.
* Neighbourhoods (:mod:`~workbench.similarity._neighbors`): :func:`knn_indices`, :func:`mutual_knn`,
  :func:`jaccard_knn`.
* Invariance to a transformation (:mod:`~workbench.similarity._invariance`): :func:`invariance` (Mahalanobis
  cosine of z(x) and z(T(x)) above chance; Ericsson et al. 2021).
* Calibrated similarity (:mod:`~workbench.similarity._calibrated`): :func:`permutation_test` (permutation null,
  p-value, chance-corrected score), :func:`permutation_matrix` (every layer pair, shared permutations, batched),
  :func:`bootstrap_similarity` (half-sampling interval).
"""
from __future__ import annotations

from ._cca import canonical_correlations, cca, cca_matrix, pwcca, pwcca_matrix, svcca, svcca_matrix
from ._cka import MinibatchCKA, cka, cka_matrix, minibatch_cka
from ._invariance import invariance
from ._matching import match_units, unit_correlations, unit_matching, unit_matching_matrix
from ._neighbors import jaccard_knn, jaccard_knn_matrix, knn_indices, mutual_knn, mutual_knn_matrix
from ._rsa import rdm, rsa, rsa_matrix
from ._shape import shape_distance, shape_matrix
from ._calibrated import PermutationResult, bootstrap_similarity, permutation_matrix, permutation_test

__all__ = ["cka", "cka_matrix", "MinibatchCKA", "minibatch_cka", "canonical_correlations", "cca", "svcca", "pwcca",
           "cca_matrix", "svcca_matrix", "pwcca_matrix", "shape_distance", "shape_matrix", "rdm", "rsa", "rsa_matrix",
           "knn_indices", "mutual_knn", "jaccard_knn", "mutual_knn_matrix", "jaccard_knn_matrix", "unit_correlations",
           "match_units", "unit_matching", "unit_matching_matrix", "invariance",
           "permutation_test", "permutation_matrix", "bootstrap_similarity", "PermutationResult"]

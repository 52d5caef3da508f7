"""Generalized shape metrics (Williams, Kunz, Kornblith & Linderman 2021, "Generalized shape metrics on neural
representations", NeurIPS): Procrustes distances after partial whitening, which interpolate between a
rotation-invariant shape distance (``alpha = 1``) and a CCA-based distance (``alpha = 0``).

Definitions
-----------
For ``X`` [N, p] with column-centered ``Xc`` and covariance ``Cx = Xc^T Xc / N``:

* partial whitening (Williams et al. 2021)::

      phi_alpha(X) = Xc (alpha I + (1 - alpha) Cx^{-1/2}),   0 <= alpha <= 1

  ``alpha = 1`` leaves ``Xc`` as is; ``alpha = 0`` whitens it (``phi^T phi / N = I`` on its column space).
* after zero-padding the narrower of ``phi_alpha(X)``, ``phi_alpha(Y)`` with zero columns to a common width,
  the **angular** (Riemannian shape) distance::

      theta_alpha(X, Y) = min_{Q orthogonal} arccos( <phi(X), phi(Y) Q>_F / (||phi(X)||_F ||phi(Y)||_F) )
                        = arccos( ||phi(X)^T phi(Y)||_* / (||phi(X)||_F ||phi(Y)||_F) )      in [0, pi/2]

  and the **Euclidean** (Procrustes size-and-shape) distance, here per example (root mean square)::

      d_alpha(X, Y) = min_Q ||phi(X) - phi(Y) Q||_F / sqrt(N)
                    = sqrt( (||phi(X)||_F^2 + ||phi(Y)||_F^2 - 2 ||phi(X)^T phi(Y)||_*) / N )

  (``||.||_*`` = nuclear norm: the optimal ``Q`` is the orthogonal Procrustes solution, Schoenemann 1966).
  Both are metrics (symmetric, triangle inequality) for every ``alpha`` because ``phi_alpha`` is a fixed map of
  each representation and the alignment group is orthogonal.

Special cases and identities:

* ``alpha = 1``, angular: the rotation-, reflection-, translation- and isotropic-scale-invariant shape
  distance of Kendall / Williams et al. (often "angular Procrustes distance"). ``alpha = 1``, Euclidean: the
  orthogonal Procrustes distance of the centered data (not scale invariant; in activation units).
* ``alpha = 0``: ``phi(X)/sqrt(N)`` is an orthonormal basis of the centered column space, so the singular
  values of ``phi(X)^T phi(Y) / N`` are the canonical correlations ``rho_i`` and
  ``cos theta_0 = sum_i rho_i / sqrt(rx ry)`` - the mean canonical correlation when the ranks are equal
  (``theta_0 = arccos(rho_bar)``, as noted by Williams et al. 2021), and ``d_0 = sqrt(rx + ry - 2 sum_i rho_i)``.
  Invariant to invertible linear transforms. Degenerate, as CCA, when ``rx + ry > N - 1``: that case raises.
* ``0 < alpha < 1``: invariant to orthogonal transforms and translations only; the mix of ``I`` (unitless)
  and ``Cx^{-1/2}`` depends on the scale of ``X``, so rescaling an input changes the distance.

Normalization and the reference code: the covariance here is ``Xc^T Xc / N``. Williams et al.'s ``netrep``
(``LinearMetric``) uses ``Xc^T Xc`` and rescales the whitened data to preserve total variance: the angular
distance agrees at ``alpha`` in {0, 1}; for ``0 < alpha < 1`` (and for netrep's unscaled Euclidean score) the
values differ, netrep's depending on ``N``.

Rank handling and regularization: ``Cx^{-1/2}`` is applied on the numerical column space of ``Xc`` only
(singular values ``<= rtol * s_max`` count as zero; default ``rtol = max(N, p) * eps`` with ``eps`` the machine
epsilon of the input's dtype, 1.19e-7 for float32 and 2.2e-16 for float64, as numpy's ``matrix_rank``; see
:mod:`workbench.similarity._cca`), since zero-variance directions contribute nothing to ``phi``. Judging float32
activations by float64's epsilon would keep their rounding noise (e.g. the null direction of a LayerNorm output)
and, for ``alpha < 1``, whiten it up to the size of a real direction. Poorly conditioned covariances (near-collinear
neurons, ``p`` close to ``N``) can be regularized by ``shrinkage`` ``s`` in [0, 1]: ``Cx`` is replaced by
``(1 - s) Cx + s (tr Cx / p) I`` (shrinkage towards the isotropic covariance with the same mean variance; it
keeps the scale equivariance, and ``alpha = 0, s = 1`` equals ``alpha = 1`` for the angular distance).
``s > 0`` is regularized CCA at ``alpha = 0``, so the CCA identity no longer holds.

Namesakes: not CKA, not the ``1 - rho_bar`` distance of Morcos et al. (``theta_0`` is ``arccos rho_bar``,
which satisfies the triangle inequality), not netrep's ``angular_distance`` helper (no alignment).
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from .._validation import Data, Interval, Options, as_2d_tensor, check_choice, declare
from ._pairs import OUTPUTS, same_device
from ._cca import _RTOL, _EPS64, _check_rtol, _decompose, _dtype_eps, _pairwise_bases

__all__ = ["shape_distance", "shape_matrix"]

#: the angular distance at alpha 0 or 1 does not depend on the inputs' scales (extreme magnitudes are rescaled
#: exactly); the euclidean one and partial whitening (0 < alpha < 1) do, so extreme magnitudes are refused there
_SCALE = lambda a: "invariant" if a["metric"] == "angular" and a["alpha"] in (0, 1) else "refuse"  # noqa: E731
_METRICS = ("angular", "euclidean")


@dataclass
class _Shape:
    """``phi_alpha(X)`` up to a right orthogonal factor: ``z = U_r diag(w)`` [N, r] with ``Xc = U S V^T``.

    ``phi_alpha(X) = U diag(S (alpha + (1 - alpha) lam^{-1/2})) V^T``; ``V^T`` (orthonormal rows) changes neither
    ``||phi||_F`` nor the nuclear norm of any cross product, so it is dropped. ``sq_norm = ||z||_F^2``.
    """

    name: str
    n: int
    rank: int
    z: torch.Tensor
    sq_norm: float


def _check_alpha(alpha: Any) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
        raise TypeError(f"alpha must be a number in [0, 1], got {type(alpha).__name__}")
    if not (0.0 <= float(alpha) <= 1.0):
        raise ValueError(f"alpha must be in [0, 1] (1 = Procrustes / rotations only, 0 = CCA / any invertible "
                         f"linear map), got {alpha}")
    return float(alpha)


def _check_shrinkage(shrinkage: Any) -> float:
    if isinstance(shrinkage, bool) or not isinstance(shrinkage, numbers.Real):
        raise TypeError(f"shrinkage must be a number in [0, 1], got {type(shrinkage).__name__}")
    if not (0.0 <= float(shrinkage) <= 1.0):
        raise ValueError(f"shrinkage must be in [0, 1] (weight of the isotropic covariance), got {shrinkage}")
    return float(shrinkage)


def _prepare(x: torch.Tensor, name: str, alpha: float, shrinkage: float, rtol: float | None,
             eps: float = _EPS64) -> _Shape:
    basis = _decompose(x, name, rtol, what="its shape distance is", eps=eps)
    n, width, r, s, u = basis.n, basis.width, basis.rank, basis.sv, basis.basis
    lam = s.square() / n  # nonzero eigenvalues of Cx
    if alpha < 1.0:
        lam_reg = (1.0 - shrinkage) * lam + shrinkage * (lam.sum() / width)
        w = s * (alpha + (1.0 - alpha) * lam_reg.rsqrt())
    else:
        w = s
    z = u * w
    return _Shape(name, n, r, z, float(w.square().sum()))


def _nuclear_cross(a: _Shape, b: _Shape) -> float:
    return float(torch.linalg.svdvals(a.z.T @ b.z).sum())


def _distance(a: _Shape, b: _Shape, metric: str, cca_limit: bool) -> float:
    if a is b:
        return 0.0
    if cca_limit and a.rank + b.rank > a.n - 1:
        raise ValueError(
            f"{a.name} (rank {a.rank}) and {b.name} (rank {b.rank}) span more than the {a.n - 1} dimensions of "
            f"centered vectors over N={a.n} examples: at alpha=0 (CCA) at least {a.rank + b.rank - (a.n - 1)} "
            "canonical correlations equal 1 whatever the data, so the distance is degenerate; use alpha > 0, "
            "shrinkage > 0, or more examples")
    nuc = _nuclear_cross(a, b)
    if metric == "angular":
        cos = nuc / math.sqrt(a.sq_norm * b.sq_norm)
        return float(math.acos(min(max(cos, 0.0), 1.0)))
    return float(math.sqrt(max(a.sq_norm + b.sq_norm - 2.0 * nuc, 0.0) / a.n))


def _measure_name(alpha: float, metric: str, shrinkage: float) -> str:
    return f"shape_{metric}_alpha{alpha:g}" + (f"_shrinkage{shrinkage:g}" if shrinkage > 0 else "")


@declare(a=Data("x", scale=_SCALE), b=Data("x", scale=_SCALE), alpha=Interval(float, 0, 1), metric=Options(*_METRICS),
         shrinkage=Interval(float, 0, 1), rtol=_RTOL)
def shape_distance(a: Any, b: Any, *, alpha: float = 1.0, metric: str = "angular", shrinkage: float = 0.0,
                   rtol: float | None = None) -> float:
    """Generalized shape metric of Williams et al. 2021 between two representations of the same examples.

    ``metric="angular"``: ``arccos( ||phi(X)^T phi(Y)||_* / (||phi(X)||_F ||phi(Y)||_F) )`` in ``[0, pi/2]``;
    ``metric="euclidean"``: ``sqrt((||phi(X)||_F^2 + ||phi(Y)||_F^2 - 2 ||phi(X)^T phi(Y)||_*) / N)``, i.e. the
    orthogonal-Procrustes residual ``min_Q ||phi(X) - phi(Y) Q||_F / sqrt(N)`` after zero-padding to equal width;
    with ``phi(X) = Xc (alpha I + (1 - alpha) Cx^{-1/2})``, ``Cx = Xc^T Xc / N`` (partial whitening). See the
    module docstring for the derivation, the special cases and how ``Cx`` is normalized relative to netrep.

    * ``alpha=1, "angular"``: rotation/reflection-, translation- and scale-invariant shape (angular Procrustes)
      distance.
    * ``alpha=1, "euclidean"``: Procrustes distance of the centered data (RMS per example, activation units).
    * ``alpha=0, "angular"``: ``arccos(sum rho_i / sqrt(rank_x rank_y))`` over the canonical correlations, i.e.
      ``arccos(mean rho)`` for equal ranks; invariant to invertible linear maps.

    Parameters
    ----------
    a, b : array or tensor, shapes [N, p] and [N, q]
        The representations ``X`` and ``Y``: rows are examples (same order); widths may differ (the narrower is
        zero-padded). Float64, torch, on the inputs' device.
    alpha : float in [0, 1]
        Whitening strength: 1 = none (Procrustes), 0 = full (CCA).
    metric : {"angular", "euclidean"}
    shrinkage : float in [0, 1]
        Regularizes the whitening: ``Cx -> (1 - s) Cx + s (tr Cx / p) I`` before ``^{-1/2}`` (only used when
        ``alpha < 1``). 0 (default) = the paper's definition.
    rtol : float or None
        Singular values of ``Xc`` ``<= rtol * largest`` count as zero (default ``max(N, p) * eps``, ``eps`` the
        machine epsilon of that input's dtype: 1.19e-7 for float32, 2.2e-16 for float64); only the remaining
        directions are whitened.

    Returns
    -------
    float. 0 for ``X`` vs itself (and, at ``alpha=1``, vs any rotated, translated, rescaled copy for
    "angular").

    Raises
    ------
    ValueError
        NaN/Inf, 1-D input, different ``N``, a constant representation, bad ``alpha``/``shrinkage``/``metric``;
        at ``alpha=0`` with ``shrinkage=0`` when ``rank Xc + rank Yc > N - 1`` (degenerate, as CCA).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(200, 4)); q, _ = np.linalg.qr(rng.normal(size=(4, 4)))    # q: a random rotation
    >>> round(shape_distance(x, 2 * x @ q + 1), 6)          # rotated, rescaled, shifted copy: distance 0
    0.0
    >>> round(shape_distance(x, x @ rng.normal(size=(4, 4)), alpha=0.0), 6)    # alpha=0: any invertible map: 0
    0.0
    """
    alpha = _check_alpha(alpha)
    check_choice(metric, _METRICS, "metric")
    shrinkage = _check_shrinkage(shrinkage)
    rtol = _check_rtol(rtol)
    x = as_2d_tensor(a, "a", min_rows=2)
    y = as_2d_tensor(b, "b", min_rows=2)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"mismatched number of samples: a has {x.shape[0]}, b has {y.shape[0]}; "
                         "pass representations of the same examples (same rows, same order)")
    x, y = same_device([x, y])
    pa = _prepare(x, "a", alpha, shrinkage, rtol, _dtype_eps(a))
    pb = _prepare(y, "b", alpha, shrinkage, rtol, _dtype_eps(b))
    return _distance(pa, pb, metric, cca_limit=(alpha == 0.0 and shrinkage == 0.0))


@declare(a=Data("layers", scale=_SCALE), b=Data("layers", none=True, scale=_SCALE), alpha=Interval(float, 0, 1),
         metric=Options(*_METRICS),
         shrinkage=Interval(float, 0, 1), rtol=_RTOL, output=Options(*OUTPUTS))
def shape_matrix(a: Any, b: Any = None, *, alpha: float = 1.0, metric: str = "angular", shrinkage: float = 0.0,
                 rtol: float | None = None, output: str = "tidy") -> pd.DataFrame:
    """:func:`shape_distance` for every layer of ``a`` against every layer of ``b`` (``b=None``: ``a`` vs itself).

    Each layer is centered, decomposed and partially whitened exactly once (``phi_alpha`` kept as an [N, rank]
    factor); a pair costs one ``[r_a, r_b]`` product and its singular values. With ``b=None`` the matrix is
    symmetric with an exact zero diagonal (only the upper triangle is computed).

    Parameters
    ----------
    a, b : array or tensor [N, d] (the one layer ``"features"``), ``Activations``, or mapping layer name ->
        array or tensor [N, d_layer]
        Same ``N`` examples in the same order everywhere; widths may differ.
    alpha, metric, shrinkage, rtol
        As in :func:`shape_distance`.
    output : {"tidy", "matrix"}
        "tidy": the results schema, one row per pair (``layer``, ``layer_index``, ``layer_b``,
        ``layer_index_b``; as :func:`~workbench.similarity.cka_matrix`) with ``measure`` like
        ``"shape_angular_alpha1"`` (``"_shrinkage{s}"`` appended when ``shrinkage > 0``); "matrix": ``a``'s
        layers as the index (``layer``), ``b``'s as the columns (``layer_b``).

    Returns
    -------
    pandas.DataFrame

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(200, 4)); q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    >>> shape_matrix({"x": x, "rotated": x @ q}, output="matrix").to_numpy().round(6)    # a distance: 0 = same shape
    array([[0., 0.],
           [0., 0.]])
    """
    alpha = _check_alpha(alpha)
    check_choice(metric, _METRICS, "metric")
    shrinkage = _check_shrinkage(shrinkage)
    rtol = _check_rtol(rtol)
    cca_limit = alpha == 0.0 and shrinkage == 0.0
    return _pairwise_bases(a, b, lambda x, name, eps: _prepare(x, name, alpha, shrinkage, rtol, eps),
                           lambda pa, pb: _distance(pa, pb, metric, cca_limit), _measure_name(alpha, metric, shrinkage),
                           output)

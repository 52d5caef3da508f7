"""Canonical correlation analysis (CCA) and the similarity indexes built on it: mean CCA, R^2_CCA, SVCCA, PWCCA.

Definitions
-----------
For ``X`` [N, p] and ``Y`` [N, q] over the same ``N`` examples, with column-centered ``Xc``, ``Yc``, the
canonical correlations ``1 >= rho_1 >= ... >= rho_k >= 0`` (Hotelling 1936) are the cosines of the principal
angles between the column spaces of ``Xc`` and ``Yc``. They are computed here without forming or inverting a
covariance matrix (Bjorck & Golub 1973): take orthonormal bases ``Qx`` [N, rx] and ``Qy`` [N, ry] of the
column spaces (thin SVD of ``Xc`` and ``Yc``; ``rx``, ``ry`` their numerical ranks), then
``rho = singular values of Qx^T Qy``, ``k = min(rx, ry)``. This equals the square roots of the top ``k``
eigenvalues of ``Sxx^-1 Sxy Syy^-1 Syx`` whenever the covariances are invertible, and stays accurate when they
are ill conditioned. Rank handling: singular values ``s_i <= rtol * s_max`` of the centered data count as zero,
with the default ``rtol = max(N, width) * eps`` where ``eps`` is the machine epsilon of the **input's** dtype
(numpy's ``matrix_rank`` rule, ``S.max() * max(M, N) * eps(dtype)``): 1.19e-7 for float32 (and float16/bfloat16
use theirs), 2.2e-16 for float64, integer or bool input, even though everything is computed in float64. So
constant or duplicated columns simply drop out of the column space, and ``k`` counts canonical pairs of the
non-degenerate parts. Why the input's precision: a float32 representation carries rounding noise at about
``eps_float32`` of its scale, and a LayerNorm output (rows of zero mean, so the centered data has one exactly
null direction) keeps that noise as a direction ~1e-8 below the top singular value; judged in float64 it would
count as signal and pair with a random direction of the other representation, pulling the mean CCA down (on
MiniLM's embeddings vs its layer 0, 1000 sentences: 0.77 with the float64 rule, 0.87 with float32's). A float32
array cast to float64 by the caller still carries float32 noise: pass ``rtol=max(N, width) * 1.2e-7`` for it (or
keep it float32).

Similarity indexes (Kornblith et al. 2019, "Similarity of neural network representations revisited", ICML,
Sec. 3 and Table 1; Raghu et al. 2017, "SVCCA", NeurIPS):

* mean CCA ``rho_bar = (1/k) sum_i rho_i`` (the summary used by SVCCA),
* ``R^2_CCA = (1/k) sum_i rho_i^2`` (Yanai's GCD when ``rx = ry``),
* SVCCA (Raghu et al. 2017): reduce each representation to its top singular directions first, then mean CCA,
* PWCCA (Morcos, Raghu & Bengio 2018, "Insights on representational similarity in neural networks with
  canonical correlation", NeurIPS; in Kornblith et al.'s notation, Table 1): with ``h_i = Qx u_i`` the
  unit-norm canonical variates of ``X`` and ``x_j`` the centered neurons (columns) of ``X``,
  ``alpha_i = sum_j |<h_i, x_j>|``, ``PWCCA = sum_i alpha_i rho_i / sum_i alpha_i``.

Morcos et al. report distances ``1 - rho_bar`` and ``1 - PWCCA``; those are one minus the values here.

Sample size. If ``rx + ry > N - 1`` the two centered column spaces (subspaces of the ``N - 1``-dimensional
space of centered vectors) must intersect, so at least ``rx + ry - (N - 1)`` canonical correlations equal 1
whatever the data (all of them once ``N - 1 <= max(rx, ry)``). Every function here refuses that case with a
ValueError instead of returning an inflated value; reduce the dimension first (:func:`svcca` with a smaller
``variance`` or ``dims``) or use more examples. Kornblith et al. (2019, Thm. 1) show that no index invariant
to invertible linear transforms (all of these) is informative when the width reaches ``N``.

Namesakes: not CKA (:mod:`workbench.similarity._cka`; invariant only to orthogonal transforms and isotropic
scaling) and not sklearn's iterative ``CCA`` estimator. Yanai's GCD ``sum_i rho_i^2 / sqrt(rx ry)`` equals
``R^2_CCA`` only when ``rx = ry`` (the repsim package's "yanai" summary divides by ``min(rx, ry)``, i.e. it is
``R^2_CCA``; its "pillai" summary is the mean CCA; its PWCCA averages the two weightings).
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from .._validation import Data, Instance, Interval, Options, as_2d_tensor, check_choice, declare
from ..activations import as_layers
from ._pairs import OUTPUTS, pairwise, same_device

__all__ = ["canonical_correlations", "cca", "svcca", "pwcca", "cca_matrix", "svcca_matrix", "pwcca_matrix"]

_SUMMARIES = ("mean", "r2")
_EPS64 = float(np.finfo(np.float64).eps)
_VARIANCE_SLACK = 1e-10  # cumulative variance fractions within this of the threshold count as reaching it
#: canonical correlations do not depend on the scale of either input: extreme magnitudes are rescaled exactly
_INVARIANT_X = Data("x", scale="invariant")
_INVARIANT_LAYERS = Data("layers", scale="invariant")
_INVARIANT_LAYERS_OR_NONE = Data("layers", none=True, scale="invariant")
_RTOL = Interval(float, 0, 1, closed="left", none=True)  # the declared rule of every ``rtol``
_VARIANCE = Interval(float, 0, 1, closed="right", none=True)
_DIMS = Instance(numbers.Integral, tuple, list, none=True)  # svcca_matrix refuses a pair itself (its message)


@dataclass
class _Basis:
    """One centered representation, decomposed once: ``Xc ~= basis @ diag(sv) @ vh`` (numerical rank ``r``).

    ``basis`` [N, r] has orthonormal columns spanning the centered column space (or its top-``k`` singular
    directions after SVCCA truncation), ``sv`` [r] are the matching singular values and ``vh`` [r, width] the
    right singular vectors; ``full_rank`` is the numerical rank before any truncation.
    """

    name: str
    n: int
    width: int
    full_rank: int
    basis: torch.Tensor
    sv: torch.Tensor
    vh: torch.Tensor

    @property
    def rank(self) -> int:
        return int(self.basis.shape[1])


def _check_rtol(rtol: Any) -> float | None:
    if rtol is None:
        return None
    if isinstance(rtol, bool) or not isinstance(rtol, numbers.Real):
        raise TypeError(f"rtol must be None or a number in [0, 1), got {type(rtol).__name__}")
    if not (0.0 <= float(rtol) < 1.0):
        raise ValueError(f"rtol must be in [0, 1) (singular values <= rtol * largest count as zero), got {rtol}")
    return float(rtol)


def _dtype_eps(x: Any) -> float:
    """Machine epsilon of the precision ``x`` was given in: its floating dtype (torch or numpy), else float64."""
    dt = getattr(x, "dtype", None)
    if isinstance(dt, torch.dtype):
        return float(torch.finfo(dt).eps) if dt.is_floating_point else _EPS64
    if dt is None and hasattr(x, "dtypes"):  # a DataFrame: the widest of its column dtypes
        try:
            dt = np.result_type(*x.dtypes)
        except TypeError:
            return _EPS64
    try:
        dt = np.dtype(dt) if dt is not None else None
    except TypeError:
        return _EPS64
    return float(np.finfo(dt).eps) if dt is not None and np.issubdtype(dt, np.floating) else _EPS64


def _layers_with_eps(x: Any, arg: str) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """``layer_dict(x, arg)`` (float64 tensors) plus each layer's input epsilon, keyed by the name
    :func:`~workbench.similarity._pairs.pairwise` passes to ``prepare`` (``"a['layer']"``); pass the first
    mapping on to ``pairwise`` (its float64 tensors go through unchanged)."""
    layers, _ = as_layers(x, arg)
    tensors, eps = {}, {}
    for k, v in layers.items():
        name = f"{arg}[{str(k)!r}]"
        tensors[str(k)] = as_2d_tensor(v, name, min_rows=2)
        eps[name] = _dtype_eps(v)
    return tensors, eps


def _pairwise_bases(a: Any, b: Any, prepare, compare, measure: str, output: str, symmetric: bool = True):
    """:func:`pairwise` with ``prepare(x, name, eps)`` told each layer's input epsilon (see :func:`_dtype_eps`)."""
    layers_a, eps = _layers_with_eps(a, "a")
    layers_b = None
    if b is not None:
        layers_b, eps_b = _layers_with_eps(b, "b")
        eps.update(eps_b)
    return pairwise(layers_a, layers_b, lambda x, name: prepare(x, name, eps.get(name, _EPS64)), compare, measure,
                    output=output, symmetric=symmetric)


def _decompose(x: torch.Tensor, name: str, rtol: float | None,
               what: str = "its canonical correlations are", eps: float = _EPS64) -> _Basis:
    """Center (float64), thin SVD, drop directions with ``s <= rtol * s_max`` (``rtol=None``: ``max(N, width) *
    eps``, ``eps`` the input dtype's machine epsilon, see :func:`_dtype_eps`). Constant data is an error (the
    message says ``what`` is undefined). Shared with :mod:`workbench.similarity._shape`."""
    n, width = x.shape
    xc = x - x.mean(dim=0, keepdim=True)
    u, s, vh = torch.linalg.svd(xc, full_matrices=False)
    s_max = float(s[0]) if s.numel() else 0.0
    if not s_max > 0.0:
        raise ValueError(f"{name} is constant across all {n} samples (zero variance after centering), so "
                         f"{what} undefined; drop this representation or check the activations")
    tol = (max(n, width) * eps if rtol is None else rtol) * s_max
    r = int((s > tol).sum())
    return _Basis(name, n, width, r, u[:, :r], s[:r], vh[:r])


def _truncate(b: _Basis, variance: float | None, dims: int | None) -> _Basis:
    """SVCCA step 1: keep the top singular directions of one representation (Raghu et al. 2017).

    With ``variance``: the smallest ``k`` whose cumulative variance fraction ``sum_{i<=k} s_i^2 / sum_i s_i^2``
    reaches ``variance`` (up to ``1e-10`` rounding slack). With ``dims``: exactly ``k = dims``.
    """
    if dims is not None:
        if dims > b.full_rank:
            raise ValueError(f"{b.name}: dims={dims} exceeds its numerical rank {b.full_rank} after centering "
                             f"(width {b.width}, N={b.n}); pass dims <= {b.full_rank}")
        k = dims
    else:
        var = b.sv.square()
        frac = torch.cumsum(var, 0) / var.sum()
        k = min(int((frac < variance - _VARIANCE_SLACK).sum()) + 1, b.rank)
    return _Basis(b.name, b.n, b.width, b.full_rank, b.basis[:, :k], b.sv[:k], b.vh[:k])


def _check_samples(a: _Basis, b: _Basis, hint: str) -> None:
    n = a.n
    if a.rank + b.rank > n - 1:
        forced = a.rank + b.rank - (n - 1)
        raise ValueError(
            f"{a.name} (rank {a.rank}) and {b.name} (rank {b.rank}) span more than the {n - 1} dimensions of "
            f"centered vectors over N={n} examples, so at least {forced} of their canonical correlations equal 1 "
            f"whatever the data (CCA is degenerate unless rank_x + rank_y <= N - 1). {hint}")


_HINT_CCA = ("Reduce the dimension first with svcca(a, b, variance=...) or svcca(a, b, dims=...), "
             "or use more examples")
_HINT_SVCCA = "Keep fewer directions (smaller variance, or dims) or use more examples"


def _correlations(a: _Basis, b: _Basis, with_vectors: bool = False):
    """Canonical correlations (descending) of two bases; with the left singular vectors (X side) if asked."""
    m = a.basis.T @ b.basis
    if with_vectors:
        u, rho, _ = torch.linalg.svd(m, full_matrices=False)
        return rho.clamp(0.0, 1.0), u
    return torch.linalg.svdvals(m).clamp(0.0, 1.0)


def _summary(rho: torch.Tensor, summary: str) -> float:
    return float(rho.mean()) if summary == "mean" else float(rho.square().mean())


def _pwcca_value(a: _Basis, b: _Basis) -> float:
    """sum_i alpha_i rho_i / sum_i alpha_i with alpha_i = sum_j |<h_i, x_j>| (weights from ``a``)."""
    rho, u = _correlations(a, b, with_vectors=True)
    # h_i = Qx u_i, x_j = Qx diag(sv) vh[:, j] (centered), so <h_i, x_j> = (u^T diag(sv) vh)_{ij}
    proj = u.T @ (a.sv[:, None] * a.vh)
    alpha = proj.abs().sum(dim=1)
    return float((alpha * rho).sum() / alpha.sum())


def _pair(a: Any, b: Any, rtol: float | None) -> tuple[_Basis, _Basis]:
    x = as_2d_tensor(a, "a", min_rows=2)
    y = as_2d_tensor(b, "b", min_rows=2)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"mismatched number of samples: a has {x.shape[0]}, b has {y.shape[0]}; "
                         "pass representations of the same examples (same rows, same order)")
    x, y = same_device([x, y])
    return _decompose(x, "a", rtol, eps=_dtype_eps(a)), _decompose(y, "b", rtol, eps=_dtype_eps(b))


def _check_svcca_args(variance: Any, dims: Any) -> tuple[float | None, tuple[int, int] | None]:
    if variance is not None and dims is not None:
        raise ValueError("pass either variance or dims to svcca, not both")
    if dims is not None:
        pair = tuple(dims) if isinstance(dims, (tuple, list)) else (dims, dims)
        if len(pair) != 2:
            raise ValueError(f"dims must be an int or a pair (dims_x, dims_y), got {dims!r}")
        for d in pair:
            if isinstance(d, bool) or not isinstance(d, numbers.Integral):
                raise TypeError(f"dims must hold positive integers, got {type(d).__name__}")
            if int(d) < 1:
                raise ValueError(f"dims must be >= 1, got {d}")
        return None, (int(pair[0]), int(pair[1]))
    if variance is None:
        variance = 0.99
    if isinstance(variance, bool) or not isinstance(variance, numbers.Real):
        raise TypeError(f"variance must be a number in (0, 1], got {type(variance).__name__}")
    if not (0.0 < float(variance) <= 1.0):
        raise ValueError(f"variance must be in (0, 1] (fraction of variance to keep), got {variance}")
    return float(variance), None


@declare(a=_INVARIANT_X, b=_INVARIANT_X, rtol=_RTOL)
def canonical_correlations(a: Any, b: Any, *, rtol: float | None = None) -> np.ndarray:
    """All canonical correlations of two representations of the same examples, largest first.

    ``rho_i`` = singular values of ``Qx^T Qy`` with ``Qx``, ``Qy`` orthonormal bases of the centered column
    spaces (cosines of the principal angles; Bjorck & Golub 1973), i.e. the square roots of the eigenvalues of
    ``Sxx^-1 Sxy Syy^-1 Syx`` (Hotelling 1936) without inverting a covariance. See the module docstring for
    the rank handling and the sample-size condition.

    Parameters
    ----------
    a, b : array or tensor, shapes [N, p] and [N, q]
        The representations ``X`` and ``Y``: rows are examples (same order in both); computed in float64 on
        the inputs' device.
    rtol : float or None
        Singular values of a centered representation ``<= rtol * largest`` count as zero. Default
        ``max(N, width) * eps`` with ``eps`` the machine epsilon of that input's dtype (1.19e-7 for float32,
        2.2e-16 for float64, integer or bool), as numpy's ``matrix_rank``; so float32 activations lose their
        rounding-level directions (e.g. the null direction of a LayerNorm output) although the computation runs
        in float64. Pass a number to override (the same for both inputs).

    Returns
    -------
    numpy.ndarray, float64, shape ``[k]``, ``k = min(rank Xc, rank Yc)``, values in ``[0, 1]``.

    Raises
    ------
    ValueError
        NaN/Inf, 1-D input, different ``N``, a constant representation, or ``rank Xc + rank Yc > N - 1``
        (some correlations would be 1 whatever the data; use :func:`svcca` or more examples).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(500, 3)); y = np.c_[x[:, :2] @ rng.normal(size=(2, 2)), rng.normal(size=500)]
    >>> canonical_correlations(x, y).round(2)          # two shared directions; the third of y is independent noise
    array([1.  , 1.  , 0.07])
    """
    pa, pb = _pair(a, b, _check_rtol(rtol))
    _check_samples(pa, pb, _HINT_CCA)
    return _correlations(pa, pb).cpu().numpy()


@declare(a=_INVARIANT_X, b=_INVARIANT_X, summary=Options(*_SUMMARIES), rtol=_RTOL)
def cca(a: Any, b: Any, *, summary: str = "mean", rtol: float | None = None) -> float:
    """CCA similarity of two representations: mean canonical correlation or ``R^2_CCA``.

    ``summary="mean"``: ``rho_bar = (1/k) sum_i rho_i``; ``summary="r2"``: ``R^2_CCA = (1/k) sum_i rho_i^2``
    (Kornblith et al. 2019, Table 1; mean CCA as used by Raghu et al. 2017), over the ``k = min(rank Xc,
    rank Yc)`` canonical correlations of :func:`canonical_correlations`.

    Invariant to invertible linear transforms and translations of either input; symmetric in ``X``, ``Y``.
    Differs from :func:`svcca` (no dimensionality reduction) and :func:`pwcca` (unweighted mean).
    Morcos et al.'s distance is ``1 - cca(a, b)``.

    Parameters
    ----------
    a, b : array or tensor, shapes [N, p] and [N, q]
        The representations ``X`` and ``Y``.
    summary : {"mean", "r2"}
    rtol : float or None
        Rank tolerance, see :func:`canonical_correlations`.

    Returns
    -------
    float in ``[0, 1]``; 1 when one representation is an invertible linear map of the other
    (``Y = X A + b``).

    Raises
    ------
    ValueError
        As :func:`canonical_correlations`, in particular when ``rank Xc + rank Yc > N - 1`` (e.g. ``N <=
        max(p, q)``): CCA is degenerate there; use :func:`svcca` or more examples.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(500, 3)); y = np.c_[x[:, :2] @ rng.normal(size=(2, 2)), rng.normal(size=500)]
    >>> round(cca(x, x @ rng.normal(size=(3, 3)) + 5), 6), round(cca(x, y), 2)   # invertible map: 1; (1 + 1 + 0.07) / 3
    (1.0, 0.69)
    """
    check_choice(summary, _SUMMARIES, "summary")
    pa, pb = _pair(a, b, _check_rtol(rtol))
    _check_samples(pa, pb, _HINT_CCA)
    return _summary(_correlations(pa, pb), summary)


@declare(a=_INVARIANT_X, b=_INVARIANT_X, variance=_VARIANCE, dims=_DIMS, rtol=_RTOL)
def svcca(a: Any, b: Any, *, variance: float | None = None, dims: int | tuple[int, int] | None = None,
          rtol: float | None = None) -> float:
    """Singular vector CCA (Raghu et al. 2017, "SVCCA", NeurIPS): truncated SVD of each, then mean CCA.

    Step 1, for each centered representation separately with singular values ``s_1 >= s_2 >= ...``: keep the
    top ``k`` left singular directions, where ``k`` is the **smallest** integer with cumulative variance fraction
    ``sum_{i<=k} s_i^2 / sum_i s_i^2 >= variance`` (``variance`` defaults to 0.99, the paper's 99%; fractions
    within ``1e-10`` of the threshold count as reaching it), or exactly ``dims`` directions if ``dims`` is
    given. Step 2: mean canonical correlation ``(1/k) sum rho_i`` of the two reduced representations,
    ``k = min(kx, ky)``.

    Raghu et al.'s reference code additionally drops near-zero neurons and uses its own ``epsilon``; the rule
    here is exactly the one stated. Invariant to orthogonal transforms, isotropic scaling and translations of
    either input (not to general invertible maps, which change the singular values); symmetric.

    Parameters
    ----------
    a, b : array or tensor, shapes [N, p] and [N, q]
        The representations ``X`` and ``Y``.
    variance : float in (0, 1] or None
        Fraction of each representation's variance to keep (default 0.99 when ``dims`` is None).
    dims : int or (int, int) or None
        Keep exactly this many directions (one number for both, or ``(dims_x, dims_y)``); must not exceed the
        numerical rank. Mutually exclusive with ``variance``.
    rtol : float or None
        Rank tolerance, see :func:`canonical_correlations`.

    Returns
    -------
    float in ``[0, 1]``.

    Raises
    ------
    ValueError
        Both ``variance`` and ``dims``; ``dims`` above the rank; ``kx + ky > N - 1`` (keep fewer directions);
        otherwise as :func:`canonical_correlations`.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(500, 3)) @ np.diag([10.0, 5.0, 0.01])         # the third direction holds ~0 variance
    >>> y = np.c_[x[:, :2], rng.normal(size=500)]                           # same two directions, plus noise
    >>> round(svcca(x, y, dims=2), 6)                                       # keep the top-2 SVD directions of each: 1
    1.0
    """
    variance, dims_pair = _check_svcca_args(variance, dims)
    pa, pb = _pair(a, b, _check_rtol(rtol))
    pa = _truncate(pa, variance, None if dims_pair is None else dims_pair[0])
    pb = _truncate(pb, variance, None if dims_pair is None else dims_pair[1])
    _check_samples(pa, pb, _HINT_SVCCA)
    return _summary(_correlations(pa, pb), "mean")


@declare(a=_INVARIANT_X, b=_INVARIANT_X, rtol=_RTOL)
def pwcca(a: Any, b: Any, *, rtol: float | None = None) -> float:
    """Projection-weighted CCA (Morcos, Raghu & Bengio 2018, NeurIPS; Kornblith et al. 2019, Table 1).

    ``PWCCA(X, Y) = sum_i alpha_i rho_i / sum_i alpha_i`` with ``alpha_i = sum_j |<h_i, x_j>|``: ``rho_i`` the
    ``k`` canonical correlations, ``h_i`` the unit-norm canonical variates of ``X`` (sample-space vectors
    ``Xc w_i``) and ``x_j`` the centered neurons (columns) of ``X``. Directions that account for more of ``X``'s
    neurons weigh more. Uniform weights give :func:`cca` (mean).

    **Asymmetric: the weights always come from the first argument, a (``X`` above).** Morcos et al.'s reference code
    (google/svcca ``compute_pwcca``) instead takes the weights from whichever representation has fewer neurons,
    and projects the *uncentered* activations onto a QR basis of the variates; for that convention pass the
    narrower representation first (values then differ only through the centering). Morcos et al.'s distance
    is ``1 - pwcca(a, b)``. When canonical correlations are tied (e.g. several exactly 1) the variates within
    a tie are not unique and neither are their weights; the value is unique when the ``rho_i`` are distinct
    or all equal.

    Parameters
    ----------
    a : array or tensor [N, p]
        The representation ``X`` whose neurons define the weights.
    b : array or tensor [N, q]
        The representation ``Y``.
    rtol : float or None
        Rank tolerance, see :func:`canonical_correlations`.

    Returns
    -------
    float in ``[0, 1]``. Invariant to translations, to isotropic scaling of either input and to invertible
    linear transforms of ``Y``; not to general linear transforms of ``X`` (they change its neurons).

    Raises
    ------
    ValueError
        As :func:`cca`.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(500, 3))
    >>> round(pwcca(x, 2 * x @ rng.normal(size=(3, 3)) - 1), 6)      # an invertible linear map of x: 1
    1.0
    """
    pa, pb = _pair(a, b, _check_rtol(rtol))
    _check_samples(pa, pb, _HINT_CCA)
    return _pwcca_value(pa, pb)


# ---------------------------------------------------------------- all pairs of layers


@declare(a=_INVARIANT_LAYERS, b=_INVARIANT_LAYERS_OR_NONE, summary=Options(*_SUMMARIES), rtol=_RTOL,
         output=Options(*OUTPUTS))
def cca_matrix(a: Any, b: Any = None, *, summary: str = "mean", rtol: float | None = None,
               output: str = "tidy") -> pd.DataFrame:
    """:func:`cca` for every layer of ``a`` against every layer of ``b`` (``b=None``: ``a`` against itself).

    Each layer is centered and decomposed (thin SVD) exactly once; a pair costs one ``[rx, ry]`` product of the
    orthonormal bases and its singular values. Same definition, rank handling and sample-size condition as
    :func:`cca` (a pair with ``rank_a + rank_b > N - 1`` raises, naming both layers).

    Parameters
    ----------
    a, b : array or tensor [N, d] (the one layer ``"features"``), ``Activations``, or mapping layer name ->
        array or tensor [N, d_layer]
        Same ``N`` examples in the same order everywhere; widths may differ.
    summary : {"mean", "r2"}
    rtol : float or None
    output : {"tidy", "matrix"}
        "tidy": the results schema (:mod:`workbench.results`), one row per pair, with ``layer``/``layer_index``
        from ``a``, ``layer_b``/``layer_index_b`` from ``b`` and ``measure`` "cca_mean" or "cca_r2" (as
        :func:`~workbench.similarity.cka_matrix`); "matrix": ``a``'s layers as the index (``layer``), ``b``'s as
        the columns (``layer_b``).

    Returns
    -------
    pandas.DataFrame

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(500, 3)); y = np.c_[x[:, :2] @ rng.normal(size=(2, 2)), rng.normal(size=500)]
    >>> cca_matrix({"x": x, "y": y}, output="matrix").to_numpy().round(2)        # off-diagonal: cca(x, y)
    array([[1.  , 0.69],
           [0.69, 1.  ]])
    """
    check_choice(summary, _SUMMARIES, "summary")
    rtol = _check_rtol(rtol)

    def compare(a: _Basis, b: _Basis) -> float:
        _check_samples(a, b, _HINT_CCA)
        return _summary(_correlations(a, b), summary)

    return _pairwise_bases(a, b, lambda x, name, eps: _decompose(x, name, rtol, eps=eps), compare, f"cca_{summary}",
                           output)


@declare(a=_INVARIANT_LAYERS, b=_INVARIANT_LAYERS_OR_NONE, variance=_VARIANCE, dims=_DIMS, rtol=_RTOL,
         output=Options(*OUTPUTS))
def svcca_matrix(a: Any, b: Any = None, *, variance: float | None = None, dims: int | None = None,
                 rtol: float | None = None, output: str = "tidy") -> pd.DataFrame:
    """:func:`svcca` for every layer pair; each layer is decomposed and truncated exactly once.

    Same rule as :func:`svcca`: per layer, the smallest ``k`` whose cumulative variance fraction reaches
    ``variance`` (default 0.99), or exactly ``dims`` directions for every layer (one int here). ``measure`` is
    ``"svcca_var{variance}"`` or ``"svcca_dims{dims}"``. Other parameters and the output as :func:`cca_matrix`.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(500, 3)) @ np.diag([10.0, 5.0, 0.01]); y = np.c_[x[:, :2], rng.normal(size=500)]
    >>> svcca_matrix({"x": x, "y": y}, dims=2, output="matrix").to_numpy().round(6)   # as svcca(x, y, dims=2)
    array([[1., 1.],
           [1., 1.]])
    """
    if isinstance(dims, (tuple, list)):
        raise TypeError("svcca_matrix takes one int for dims (applied to every layer); "
                        "call svcca(a, b, dims=(dx, dy)) for a single pair with different dims")
    variance, dims_pair = _check_svcca_args(variance, dims)
    rtol = _check_rtol(rtol)
    keep = None if dims_pair is None else dims_pair[0]

    def prepare(x: torch.Tensor, name: str, eps: float) -> _Basis:
        return _truncate(_decompose(x, name, rtol, eps=eps), variance, keep)

    def compare(a: _Basis, b: _Basis) -> float:
        _check_samples(a, b, _HINT_SVCCA)
        return _summary(_correlations(a, b), "mean")

    measure = f"svcca_var{variance:g}" if keep is None else f"svcca_dims{keep}"
    return _pairwise_bases(a, b, prepare, compare, measure, output)


@declare(a=_INVARIANT_LAYERS, b=_INVARIANT_LAYERS_OR_NONE, rtol=_RTOL, output=Options(*OUTPUTS))
def pwcca_matrix(a: Any, b: Any = None, *, rtol: float | None = None, output: str = "tidy") -> pd.DataFrame:
    """:func:`pwcca` for every layer pair, weights from the **row** layer: ``value[i, j] = pwcca(a[i], b[j])``.

    Each layer is decomposed once. PWCCA is asymmetric, so with ``b=None`` the full matrix is computed (not
    mirrored): ``value[i, j]`` uses ``a[i]``'s weights, ``value[j, i]`` ``a[j]``'s. ``measure`` is "pwcca".
    Other parameters and the output as :func:`cca_matrix`.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(500, 3))
    >>> pwcca_matrix({"x": x, "mixed": x @ rng.normal(size=(3, 3))}, output="matrix").to_numpy().round(6)
    array([[1., 1.],
           [1., 1.]])
    """
    rtol = _check_rtol(rtol)

    def compare(a: _Basis, b: _Basis) -> float:
        _check_samples(a, b, _HINT_CCA)
        return _pwcca_value(a, b)

    return _pairwise_bases(a, b, lambda x, name, eps: _decompose(x, name, rtol, eps=eps), compare, "pwcca", output,
                           symmetric=False)

"""Eigen-spectra of representations and the rank-like summaries drawn from them.

Every measure here needs only the second moments of ``Z`` [N, D], so each accepts either the data or a
:class:`~workbench.spectrum.Moments` computed once by
:func:`~workbench.spectrum.second_moments` (one float64 centering, at most one centered and one
uncentered decomposition). :func:`layer_spectrum_table` does exactly that per layer.

Two spectra, two weightings - the measures do not share a definition:

* centered: ``lambda_k`` = eigenvalues of the covariance of the *centered* data (= ``sigma_k(Zc)^2``
  up to ``1/(N-1)``). Used by :func:`effective_rank` (Shannon), :func:`participation_ratio` (Renyi-2),
  :func:`stable_rank` (Renyi-infinity, default) and :func:`alpha_req` (power-law decay).
* uncentered: ``sigma_k`` = singular values of ``Z`` itself, weighted by ``sigma`` (not ``sigma^2``).
  Used by :func:`rankme` (Garrido et al. 2023), :func:`singular_value_entropy` and
  :func:`largest_singular_value_ratio` (NMTune, Chen et al. 2024).

With ``p_k = lambda_k / sum lambda``: ``stable_rank = 1 / max p = exp(H_inf) <= participation_ratio =
exp(H_2) <= effective_rank = exp(H_1)``, with equality iff the non-zero ``lambda_k`` are equal. RankMe and
SVE use ``p_k = sigma_k / sum sigma`` and keep the mean: a large mean embedding (a direction shared by all
samples) adds one dominant singular value and lowers them, while the covariance-based measures ignore it.
For isotropic Gaussian data with ``N >> D`` all rank-like measures are close to ``D``.

All computations run in float64 in torch on the input's device; only the final scalars leave it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable

import numpy as np
import pandas as pd
import torch

from .._validation import (Data, Flag, Instance, Interval, Options, check_choice, check_layers_and_measures,
                           declare)
from ..activations import as_layers
from ..results import tidy
from ._moments import METHODS, Moments, second_moments

__all__ = ["rankme", "effective_rank", "participation_ratio", "stable_rank", "alpha_req", "AlphaReqResult",
           "singular_value_entropy", "largest_singular_value_ratio", "spectrum", "layer_spectrum_table",
           "MEASURES"]

#: Measures :func:`layer_spectrum_table` computes from one :class:`Moments` per layer.
MEASURES = ("rankme", "effective_rank", "participation_ratio", "stable_rank", "alpha_req",
            "singular_value_entropy", "largest_singular_value_ratio")
_CENTERED = {"effective_rank", "participation_ratio", "stable_rank", "alpha_req"}
_UNCENTERED = {"rankme", "singular_value_entropy", "largest_singular_value_ratio"}
ALPHA_K_RANGE = (6, 100)
# declared rules (:func:`~workbench._validation.declare`): ``x`` is data or a :class:`Moments`; the body checks
# the pair of ranks of ``k_range`` itself
_METHOD = Options(*METHODS)
_EPS_RULE = Interval(float, 0)
#: the data rule of the measures that do not depend on the scale of x (extreme magnitudes are rescaled exactly)
_INVARIANT = Data("x", scale="invariant")
_K_RANGE = Instance(tuple, list)
_WIDE = Data("x", example=lambda: np.random.default_rng(0).normal(size=(200, 20)))  # alpha_req fits ranks 6..20


# ----------------------------------------------------------------------------------------- helpers
def _shannon(p: torch.Tensor) -> torch.Tensor:
    """``-sum p log p`` (nats) of non-negative weights (summing to ~1); ``0 log 0 = 0``."""
    return -torch.special.xlogy(p, p).sum()


def _check_eps(eps: Any, name: str = "eps") -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a small non-negative number, got {type(eps).__name__}")
    if not (np.isfinite(eps) and eps >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {eps}")
    return float(eps)


def _check_bool(value: Any, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__}")
    return bool(value)


def _moments(x: Any, *, centered: bool, uncentered: bool, method: str = "auto", name: str = "x") -> Moments:
    """Use a given :class:`Moments` as is, or compute the decompositions a measure needs."""
    if isinstance(x, Moments):
        return x
    return second_moments(x, centered=centered, uncentered=uncentered, method=method, name=name)


def _sigma(m: Moments, centered: bool, what: str) -> torch.Tensor:
    """Singular values of ``Zc`` (centered) or ``Z`` (uncentered), largest first."""
    if centered:
        return m.centered_eigenvalues(what).sqrt()
    return m.uncentered_singular_values(what)


# ------------------------------------------------------------------------------ measures from moments
def _rankme_value(m: Moments, eps: float) -> float:
    sv = m.uncentered_singular_values("RankMe")
    return float(torch.exp(_shannon(sv / sv.sum() + eps)))


def _effective_rank_value(m: Moments) -> float:
    lam = m.centered_eigenvalues("the effective rank")
    return float(torch.exp(_shannon(lam / lam.sum())))


def _participation_ratio_value(m: Moments) -> float:
    lam = m.centered_eigenvalues("the participation ratio")
    return float(lam.sum() ** 2 / lam.square().sum())


def _stable_rank_value(m: Moments, centered: bool) -> float:
    if centered:
        lam = m.centered_eigenvalues("the stable rank")
    else:
        lam = m.uncentered_singular_values("the stable rank").square()
    return float(lam.sum() / lam[0])


def _sve_value(m: Moments, centered: bool) -> float:
    sv = _sigma(m, centered, "the singular value entropy")
    return float(_shannon(sv / sv.sum()))


def _lsvr_value(m: Moments, centered: bool, negative_log: bool) -> float:
    sv = _sigma(m, centered, "the largest singular value ratio")
    ratio = sv[0] / sv.sum()
    return float(-torch.log(ratio)) if negative_log else float(ratio)


# --------------------------------------------------------------------------------- public measures
@declare(x=_INVARIANT, eps=_EPS_RULE, method=_METHOD)
def rankme(x: Any, *, eps: float = 1e-7, method: str = "auto") -> float:
    """RankMe of an embedding matrix (Garrido et al. 2023, "RankMe: assessing the downstream performance
    of pretrained self-supervised representations by their rank", ICML, Eq. 1).

    ``RankMe(Z) = exp(-sum_k p_k log p_k)`` with ``p_k = sigma_k / ||sigma||_1 + eps`` and
    ``sigma_1 >= ... >= sigma_min(N,D)`` the singular values of the **uncentered** matrix ``Z`` [N, D].

    Differs from :func:`effective_rank` (Roy & Vetterli 2007 applied to the covariance: eigenvalues
    ``lambda = sigma(Zc)^2`` of the *centered* data) and from :func:`participation_ratio`
    (``(sum lambda)^2 / sum lambda^2``): RankMe uses ``sigma`` rather than ``sigma^2`` and keeps the mean,
    so values are not comparable across the three. ``eps`` follows the paper (it slightly raises the
    value: each of the ``min(N, D)`` terms gets ``eps``). ``log RankMe`` with ``eps = 0`` is
    :func:`singular_value_entropy`.

    Parameters
    ----------
    x : array or tensor [N, D] (``Z`` above), or :class:`Moments` computed with ``uncentered=True``
    eps : float
        Added to every normalized singular value (paper default 1e-7).
    method : {"auto", "gram", "svd"}
        How the singular values are obtained when ``Z`` is data (see :mod:`workbench.spectrum._moments`).

    Returns
    -------
    float in ``[1, min(N, D)]`` (up to the ``eps`` term).

    Examples
    --------
    >>> import numpy as np
    >>> z = np.array([[2.0, 0], [-2, 0], [0, 1], [0, -1]])    # centered; singular values 2*sqrt(2), sqrt(2)
    >>> round(rankme(z), 4)          # exp(entropy of sigma / sum(sigma) = [2/3, 1/3])
    1.8899
    """
    eps = _check_eps(eps)
    return _rankme_value(_moments(x, centered=False, uncentered=True, method=method), eps)


@declare(x=_INVARIANT, method=_METHOD)
def effective_rank(x: Any, *, method: str = "auto") -> float:
    """Effective rank of the covariance of ``Z`` (Roy & Vetterli 2007, "The effective rank: a measure of
    effective dimensionality", EUSIPCO, Def. 1, applied to the covariance matrix).

    ``erank = exp(-sum_k p_k log p_k)``, ``p_k = lambda_k / sum_j lambda_j``, with ``lambda_k`` the
    eigenvalues of the sample covariance of the **centered** data (equivalently the squared singular
    values of ``Zc``; the 1/(N-1) factor cancels) and ``0 log 0 = 0``.

    Not :func:`rankme` (singular values, uncentered, ``+eps``) and not :func:`participation_ratio`.
    Roy & Vetterli define erank for any matrix via its singular values; applied to ``Z`` itself it would
    use ``sigma`` instead of ``sigma^2`` - this function applies it to the covariance matrix.

    Returns
    -------
    float in ``[1, min(N - 1, D)]``. Isotropic data with ``N >> D`` gives about ``D``.

    Raises
    ------
    ValueError
        ``N < 2`` or constant data (zero covariance).

    Examples
    --------
    >>> import numpy as np
    >>> z = np.array([[2.0, 0], [-2, 0], [0, 1], [0, -1]])    # centered; singular values 2*sqrt(2), sqrt(2)
    >>> round(effective_rank(z), 4)    # exp(entropy of lambda / sum(lambda) = [0.8, 0.2])
    1.6494
    """
    return _effective_rank_value(_moments(x, centered=True, uncentered=False, method=method))


@declare(x=_INVARIANT, method=_METHOD)
def participation_ratio(x: Any, *, method: str = "auto") -> float:
    """Participation ratio ``(sum_k lambda_k)^2 / sum_k lambda_k^2`` of the covariance eigenvalues.

    Same ``lambda_k`` as :func:`effective_rank` (centered data); it is the exponential of the Renyi-2
    entropy of ``p_k = lambda_k / sum lambda`` instead of the Shannon entropy, hence never larger than
    the effective rank. Used for neural representations by Gao et al. 2017 ("A theory of multineuronal
    dimensionality, dynamics and measurement", bioRxiv) and Recanatesi et al. 2019.

    Returns
    -------
    float in ``[1, min(N - 1, D)]``.

    Raises
    ------
    ValueError
        ``N < 2`` or constant data (zero covariance).

    Examples
    --------
    >>> import numpy as np
    >>> z = np.array([[2.0, 0], [-2, 0], [0, 1], [0, -1]])    # centered; singular values 2*sqrt(2), sqrt(2)
    >>> round(participation_ratio(z), 4)   # (8 + 2)^2 / (8^2 + 2^2) = 25 / 17
    1.4706
    """
    return _participation_ratio_value(_moments(x, centered=True, uncentered=False, method=method))


@declare(x=_INVARIANT, centered=Flag(), method=_METHOD)
def stable_rank(x: Any, *, centered: bool = True, method: str = "auto") -> float:
    """Stable (numerical) rank ``||A||_F^2 / ||A||_2^2 = sum_k sigma_k(A)^2 / sigma_1(A)^2``.

    Rudelson & Vershynin 2007 ("Sampling from large matrices: an approach through geometric functional
    analysis", J. ACM 54(4), where it is called the numerical rank). ``A = Zc`` (column-centered) when
    ``centered=True`` - the **default** - and ``A = Z`` otherwise.

    Why centered by default: applied to ``Zc`` it equals ``sum lambda / lambda_max`` of the covariance
    eigenvalues, i.e. ``exp`` of the Renyi-infinity entropy of ``p_k = lambda_k / sum lambda``, which
    completes the family ``stable_rank <= participation_ratio <= effective_rank`` on the same spectrum.
    Uncentered, a mean embedding far from the origin becomes ``sigma_1`` and drives the value to 1
    whatever the spread of the data (use ``centered=False`` for the matrix quantity of the paper applied
    to raw features, e.g. to compare with work that does so).

    Returns
    -------
    float in ``[1, rank(A)]``: 1 for a rank-1 matrix, ``D`` for isotropic data with ``N >> D``.
    Robust to small singular values (they enter squared), unlike rank.

    Raises
    ------
    ValueError
        ``N < 2`` or constant data (centered); all-zero data (uncentered).

    Examples
    --------
    >>> import numpy as np
    >>> z = np.array([[2.0, 0], [-2, 0], [0, 1], [0, -1]])    # centered; singular values 2*sqrt(2), sqrt(2)
    >>> stable_rank(z)        # (8 + 2) / 8
    1.25
    """
    centered = _check_bool(centered, "centered")
    return _stable_rank_value(_moments(x, centered=centered, uncentered=not centered, method=method), centered)


@dataclass(frozen=True)
class AlphaReqResult:
    """Power-law fit ``lambda_k ~ c k^(-alpha)`` of a covariance spectrum (see :func:`alpha_req`).

    ``alpha``: decay exponent; ``r2``: coefficient of determination of the fit in log-log space over the
    fitted ranks (1 = a perfect power law); ``k_min``/``k_max``: first/last rank (1-based, inclusive)
    actually fitted; ``n_points``: their number; ``log_c``: intercept, ``log`` of the fitted covariance
    eigenvalue at ``k = 1``.
    """

    alpha: float
    r2: float
    k_min: int
    k_max: int
    n_points: int
    log_c: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@declare(x=_WIDE, k_range=_K_RANGE, weighting=Options("uniform", "inverse_rank"), method=_METHOD)
def alpha_req(x: Any, *, k_range: tuple[int, int] = ALPHA_K_RANGE, weighting: str = "uniform",
              method: str = "auto") -> AlphaReqResult:
    """Eigenspectrum decay coefficient alpha (Agrawal et al. 2022, "alpha-ReQ: assessing representation
    quality in self-supervised learning by measuring eigenspectrum decay", NeurIPS).

    Fits ``lambda_k = c k^(-alpha)`` to the eigenvalues ``lambda_1 >= lambda_2 >= ...`` of the sample
    covariance of the **centered** data by least squares on ``log lambda_k = log c - alpha log k`` over the
    ranks ``k_range = (k_min, k_max)`` (1-based, inclusive) and reports alpha *with* the fit quality.

    Fit range and weights. The default, ranks ``(6, 100)`` with uniform weights (ordinary least squares), is
    **not** the reference implementation's. It is the range of an early version of the paper group's
    ``reptrix`` (``get_alpha(fit_range=np.arange(5, 100))``, 0-based, until Feb 2024) without that code's
    weights. The current ``reptrix`` (``reptrix/alpha.py``, ``get_alpha`` / ``get_powerlaw``, since commit
    e5adeca, 2024-02-23) fits ranks **11 to 100** (``np.arange(10, 100)``, 0-based) by weighted least squares
    with weight ``1/k`` on rank ``k`` (after Stringer et al. 2019); that fit is
    ``alpha_req(x, k_range=(11, 100), weighting="inverse_rank")``, which gives reptrix's alpha exactly (its
    eigenvalues are explained-variance *ratios*, which shifts only ``log_c``; its R^2 is unweighted and taken
    over ranks ``k_min .. 500``, not over the fit range as ``r2`` here). ``"inverse_rank"`` counters the
    crowding of points at large ``k`` on a log axis. The first few eigenvalues are skipped in every variant
    because the power law describes the body of the spectrum, not its head. ``k_max`` is clipped to the number
    of non-zero eigenvalues (at most ``min(N - 1, D)``; reptrix fails there instead); fewer than 3 ranks left
    is an error.

    Not the heavy-tailed "alpha" of weight matrices (Martin & Mahoney, a Hill/MLE fit to the *density* of
    eigenvalues of ``W^T W``): this is the decay *by rank* of the activation covariance spectrum.

    Returns
    -------
    AlphaReqResult
        ``alpha`` (0 for a flat spectrum; about 1 was reported as the sweet spot), ``r2`` in ``(-inf, 1]``
        (weighted R^2 with ``"inverse_rank"``; 1.0 for an exactly flat spectrum), the ranks used and the
        intercept ``log_c``. Read ``alpha`` only where ``r2`` is close to 1.

    Raises
    ------
    ValueError
        Bad ``k_range``, fewer than 3 non-zero eigenvalues in the range, ``N < 2`` or constant data.

    Examples
    --------
    >>> import numpy as np
    >>> a = np.random.default_rng(0).normal(size=(300, 120)); a -= a.mean(0)
    >>> q, _ = np.linalg.qr(a)                               # 120 centered orthonormal columns
    >>> fit = alpha_req(q * np.arange(1, 121) ** -0.75)      # covariance eigenvalues exactly k^-1.5
    >>> round(fit.alpha, 6), round(fit.r2, 6)
    (1.5, 1.0)
    """
    k_min, k_max = _check_k_range(k_range)
    check_choice(weighting, ("uniform", "inverse_rank"), "weighting")
    m = _moments(x, centered=True, uncentered=False, method=method)
    return _alpha_req_value(m, k_min, k_max, weighting)


def _check_k_range(k_range: Any) -> tuple[int, int]:
    if (not isinstance(k_range, (tuple, list)) or len(k_range) != 2
            or not all(isinstance(k, (int, np.integer)) and not isinstance(k, bool) for k in k_range)):
        raise TypeError(f"k_range must be a pair of integer ranks (k_min, k_max), got {k_range!r}")
    k_min, k_max = int(k_range[0]), int(k_range[1])
    if not 1 <= k_min < k_max:
        raise ValueError(f"k_range must satisfy 1 <= k_min < k_max (1-based ranks), got {k_range!r}")
    return k_min, k_max


def _alpha_req_value(m: Moments, k_min: int, k_max: int, weighting: str) -> AlphaReqResult:
    lam = m.centered_eigenvalues("alpha-ReQ") / (m.n - 1)
    n_pos = int((lam > 0).sum())
    hi = min(k_max, n_pos)
    if hi - k_min + 1 < 3:
        raise ValueError(f"alpha_req fits ranks {k_min}..{k_max} but {m.name} has only {n_pos} non-zero covariance "
                         f"eigenvalue(s) (at most min(N-1, D) = {min(m.n - 1, m.d)}); at least 3 ranks are needed: "
                         "lower k_range[0] or use more samples / a wider layer")
    k = torch.arange(k_min, hi + 1, dtype=torch.float64, device=lam.device)
    x = torch.log(k)
    y = torch.log(lam[k_min - 1:hi])
    w = torch.ones_like(x) if weighting == "uniform" else 1.0 / k
    w = w / w.sum()
    xm, ym = (w * x).sum(), (w * y).sum()
    slope = (w * (x - xm) * (y - ym)).sum() / (w * (x - xm).square()).sum()
    intercept = ym - slope * xm
    ss_res = float((w * (y - intercept - slope * x).square()).sum())
    ss_tot = float((w * (y - ym).square()).sum())
    # a spectrum flat to rounding (log-eigenvalues equal up to a few ulps) is fitted perfectly by slope 0
    flat = (hi - k_min + 1) * (64.0 * float(torch.finfo(torch.float64).eps) * (1.0 + float(y.abs().max()))) ** 2
    r2 = 1.0 - ss_res / ss_tot if ss_tot > flat else 1.0
    return AlphaReqResult(alpha=float(-slope), r2=r2, k_min=k_min, k_max=hi, n_points=hi - k_min + 1,
                          log_c=float(intercept))


@declare(x=_INVARIANT, centered=Flag(), method=_METHOD)
def singular_value_entropy(x: Any, *, centered: bool = False, method: str = "auto") -> float:
    """Singular value entropy (SVE) of a feature matrix, as used in NMTune (Chen et al. 2024,
    "Understanding and mitigating the label noise in pre-training on downstream tasks", ICLR).

    ``SVE = -sum_i sbar_i log sbar_i`` (nats) with ``sbar_i = sigma_i / sum_j sigma_j`` and ``sigma`` the
    singular values of the feature matrix ``F = Z`` [N, D] - **uncentered** by default, as the features
    are used as they come out of the (frozen) network; ``centered=True`` uses ``Zc`` instead. No
    normalization of rows or columns is applied (our reading of the paper; pass normalized features if
    your comparison requires it).

    Relation to RankMe: with the same (uncentered) ``sigma``, ``SVE = log RankMe`` computed with
    ``eps = 0``. :func:`rankme` adds ``eps = 1e-7`` to every ``sbar_i`` and exponentiates, so
    ``exp(SVE)`` is slightly below RankMe (by about ``min(N, D) * eps * |log eps|`` relative), and SVE lives
    on a log scale (it differs from ``log RankMe`` by that ``eps`` term only). Not the Shannon entropy of
    the *covariance* spectrum (``log`` :func:`effective_rank`), which weights by ``sigma^2`` and centers.

    Returns
    -------
    float in ``[0, log min(N, D)]``: 0 for a rank-1 matrix.

    Examples
    --------
    >>> import numpy as np
    >>> z = np.array([[2.0, 0], [-2, 0], [0, 1], [0, -1]])    # centered; singular values 2*sqrt(2), sqrt(2)
    >>> round(singular_value_entropy(z), 4)   # entropy (nats) of [2/3, 1/3]
    0.6365
    """
    centered = _check_bool(centered, "centered")
    return _sve_value(_moments(x, centered=centered, uncentered=not centered, method=method), centered)


@declare(x=_INVARIANT, centered=Flag(), negative_log=Flag(), method=_METHOD)
def largest_singular_value_ratio(x: Any, *, centered: bool = False, negative_log: bool = False,
                                 method: str = "auto") -> float:
    """Largest singular value ratio (LSVR) of a feature matrix (NMTune, Chen et al. 2024, ICLR).

    ``LSVR = sigma_1 / sum_i sigma_i`` - the share of the top singular value in the nuclear norm - over the
    singular values of the **uncentered** feature matrix ``Z`` [N, D] (``centered=True`` uses ``Zc``).
    It is the largest ``sbar_i`` of :func:`singular_value_entropy`. With ``negative_log=True`` the
    function returns ``-log(sigma_1 / sum sigma)`` instead: we could not check against the paper text
    in this environment whether its figures report the ratio or this log form, so compare with the
    published numbers in the matching form.

    Not the ``sigma_1^2 / sum sigma^2`` share of explained variance (that is ``1 /`` :func:`stable_rank`
    with ``centered=False``).

    Returns
    -------
    float in ``[1 / min(N, D), 1]`` (ratio) or ``[0, log min(N, D)]`` (``negative_log``).

    Examples
    --------
    >>> import numpy as np
    >>> z = np.array([[2.0, 0], [-2, 0], [0, 1], [0, -1]])    # centered; singular values 2*sqrt(2), sqrt(2)
    >>> round(largest_singular_value_ratio(z), 4)   # 2*sqrt(2) / (2*sqrt(2) + sqrt(2)) = 2/3
    0.6667
    """
    centered = _check_bool(centered, "centered")
    negative_log = _check_bool(negative_log, "negative_log")
    m = _moments(x, centered=centered, uncentered=not centered, method=method)
    return _lsvr_value(m, centered, negative_log)


@declare(x=Data("x"), centered=Flag(), method=_METHOD)
def spectrum(x: Any, *, centered: bool = True, method: str = "auto") -> np.ndarray:
    """The eigen-spectrum a spectrum plot draws, largest first.

    ``centered=True``: eigenvalues of the sample covariance ``Zc^T Zc / (N - 1)`` (``np.cov``
    normalization), i.e. ``sigma_k(Zc)^2 / (N - 1)``. ``centered=False``: eigenvalues of the
    second-moment matrix ``Z^T Z / N``, i.e. ``sigma_k(Z)^2 / N``.

    Returns
    -------
    numpy.ndarray, float64, shape ``[min(N, D)]``, sorted in decreasing order (the remaining
    ``D - min(N, D)`` eigenvalues are exactly zero and are not listed).

    Examples
    --------
    >>> import numpy as np
    >>> z = np.array([[2.0, 0], [-2, 0], [0, 1], [0, -1]])    # centered; singular values 2*sqrt(2), sqrt(2)
    >>> spectrum(z).round(4)      # covariance eigenvalues [8, 2] / (N - 1)
    array([2.6667, 0.6667])
    """
    centered = _check_bool(centered, "centered")
    m = _moments(x, centered=centered, uncentered=not centered, method=method)
    if centered:
        lam = m.covariance_eigenvalues
    else:
        lam = m.uncentered_singular_values("the spectrum").square() / m.n
    return lam.cpu().numpy().copy()


@declare(x=Data("layers", scale="invariant"), measures=Instance(Iterable), eps=_EPS_RULE,
         alpha_k_range=_K_RANGE, method=_METHOD)
def layer_spectrum_table(x: Any, measures: Iterable[str] = ("rankme", "effective_rank"), *, eps: float = 1e-7,
                         alpha_k_range: tuple[int, int] = ALPHA_K_RANGE, method: str = "auto") -> pd.DataFrame:
    """Second-moment measures for every layer, as a table in the results schema (:mod:`workbench.results`).

    Parameters
    ----------
    x : array or tensor [N, D] (the one layer ``"features"``), ``Activations``, or mapping layer name ->
        array or tensor [N, d_layer]
        Widths and even ``N`` may differ between layers.
    measures : iterable of names in :data:`MEASURES`
        ``rankme``, ``effective_rank``, ``participation_ratio``, ``stable_rank`` (centered),
        ``alpha_req`` (adds a second row ``alpha_req_r2`` with the fit quality),
        ``singular_value_entropy`` and ``largest_singular_value_ratio`` (uncentered), each with its
        function's defaults.
    eps : float
        Passed to :func:`rankme`.
    alpha_k_range : (int, int)
        Passed to :func:`alpha_req`.
    method : {"auto", "gram", "svd"}
        See :func:`~workbench.spectrum.second_moments`.

    Returns
    -------
    pandas.DataFrame in the results schema: one row per layer and measure, ``layer``, ``layer_index`` (the
    position of the layer in ``x``), ``measure``, ``value``; ``run``, ``step``, ``split`` and the CIs NaN.
    Per layer the data are centered once and at most one centered and one uncentered decomposition is
    computed, whatever the number of measures.

    Examples
    --------
    >>> import numpy as np
    >>> z = np.array([[2.0, 0], [-2, 0], [0, 1], [0, -1]])    # centered; singular values 2*sqrt(2), sqrt(2)
    >>> iso = np.kron(np.eye(3), [[1.0], [-1.0]])                # three equal covariance eigenvalues
    >>> t = layer_spectrum_table({"z": z, "iso": iso}, measures=["participation_ratio", "stable_rank"])
    >>> t.value.round(4).tolist()     # z: 25/17, 10/8; iso: 3, 3
    [1.4706, 1.25, 3.0, 3.0]
    """
    acts, _ = as_layers(x, "x")
    measures = check_layers_and_measures(acts, measures, MEASURES)
    eps = _check_eps(eps)
    k_min, k_max = _check_k_range(alpha_k_range)
    check_choice(method, METHODS, "method")
    need_c = any(m in _CENTERED for m in measures)
    need_u = any(m in _UNCENTERED for m in measures)
    rows = []
    for idx, (layer, data) in enumerate(acts.items()):
        mom = second_moments(data, centered=need_c, uncentered=need_u, method=method, name=f"x[{layer!r}]")
        for m in measures:
            if m == "rankme":
                rows.append((layer, idx, m, _rankme_value(mom, eps)))
            elif m == "effective_rank":
                rows.append((layer, idx, m, _effective_rank_value(mom)))
            elif m == "participation_ratio":
                rows.append((layer, idx, m, _participation_ratio_value(mom)))
            elif m == "stable_rank":
                rows.append((layer, idx, m, _stable_rank_value(mom, True)))
            elif m == "alpha_req":
                res = _alpha_req_value(mom, k_min, k_max, "uniform")
                rows.append((layer, idx, "alpha_req", res.alpha))
                rows.append((layer, idx, "alpha_req_r2", res.r2))
            elif m == "singular_value_entropy":
                rows.append((layer, idx, m, _sve_value(mom, False)))
            else:
                rows.append((layer, idx, m, _lsvr_value(mom, False, False)))
    return tidy(pd.DataFrame(rows, columns=["layer", "layer_index", "measure", "value"]))

"""Eigen-spectra of representations and the rank-like summaries drawn from them.

Three "effective dimensionality" measures share a name space but not a definition:

* ``rankme`` (Garrido et al. 2023, "RankMe: assessing the downstream performance of pretrained
  self-supervised representations by their rank", ICML, Eq. 1): singular values ``sigma_k`` of the
  *uncentered* embedding matrix ``Z``; ``p_k = sigma_k / ||sigma||_1 + eps``; ``exp(-sum p_k log p_k)``.
* ``effective_rank`` (Roy & Vetterli 2007, "The effective rank: a measure of effective
  dimensionality", EUSIPCO, applied to the covariance matrix): eigenvalues ``lambda_k`` of the
  covariance of the *centered* data (= squared singular values of ``Zc``); ``p_k = lambda_k / sum
  lambda``; ``exp(-sum p_k log p_k)`` with ``0 log 0 = 0``.
* ``participation_ratio`` (Gao et al. 2017; Recanatesi et al. 2019): the same ``lambda_k``;
  ``(sum lambda)^2 / sum lambda^2``, the exponential of the Renyi-2 entropy of ``p``.

RankMe weights by ``sigma`` (not ``sigma^2``) and does not subtract the mean, so a large mean embedding
(a common direction shared by all samples) adds one dominant singular value and lowers RankMe; the
covariance-based measures ignore the mean. For isotropic Gaussian data with ``N >> D`` all three are
close to ``D``; for data of rank ``k`` all three are close to ``k`` when the ``k`` directions carry equal
variance, but they disagree for graded spectra (``participation_ratio <= effective_rank``).

All computations run in float64 in torch (``torch.linalg.svdvals``) on the input's device.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd
import torch

from .._validation import as_2d_tensor, check_choice

__all__ = ["rankme", "effective_rank", "participation_ratio", "spectrum", "layer_spectrum_table", "MEASURES"]

MEASURES = ("rankme", "effective_rank", "participation_ratio")


def _singular_values(z: torch.Tensor, centered: bool) -> torch.Tensor:
    if centered:
        z = z - z.mean(dim=0, keepdim=True)
    return torch.linalg.svdvals(z)


def _entropy_rank(weights: torch.Tensor) -> float:
    """exp of the Shannon entropy (nats) of positive weights that sum to ~1; zero weights contribute 0."""
    w = weights[weights > 0]
    return float(torch.exp(-(w * torch.log(w)).sum()))


def _covariance_eigs(z: torch.Tensor, name: str) -> torch.Tensor:
    lam = _singular_values(z, centered=True).square()
    if not float(lam.sum()) > 0.0:
        raise ValueError(f"{name} is constant across samples (zero covariance), so its spectrum-based rank is "
                         "undefined; drop it or check the activations")
    return lam


def _rankme_from_sv(sv: torch.Tensor, eps: float, name: str) -> float:
    total = sv.sum()
    if not float(total) > 0.0:
        raise ValueError(f"{name} is all zeros, so RankMe is undefined")
    p = sv / total + eps
    return float(torch.exp(-(p * torch.log(p)).sum()))


def _check_eps(eps: Any) -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float, np.floating, np.integer)):
        raise TypeError(f"eps must be a small non-negative number, got {type(eps).__name__}")
    if not (np.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be a finite number >= 0, got {eps}")
    return float(eps)


def rankme(Z: Any, eps: float = 1e-7) -> float:
    """RankMe of an embedding matrix (Garrido et al. 2023, Eq. 1).

    ``RankMe(Z) = exp(-sum_k p_k log p_k)`` with ``p_k = sigma_k / ||sigma||_1 + eps`` and
    ``sigma_1 >= ... >= sigma_min(N,D)`` the singular values of the **uncentered** matrix ``Z`` [N, D].

    Differs from :func:`effective_rank` (Roy & Vetterli 2007 applied to the covariance: eigenvalues
    ``lambda = sigma(Zc)^2`` of the *centered* data) and from :func:`participation_ratio`
    (``(sum lambda)^2 / sum lambda^2``): RankMe uses ``sigma`` rather than ``sigma^2`` and keeps the mean,
    so values are not comparable across the three. ``eps`` follows the paper (it slightly raises the
    value: each of the ``min(N, D)`` terms gets ``eps``).

    Parameters
    ----------
    Z : array or tensor [N, D]
    eps : float
        Added to every normalized singular value (paper default 1e-7).

    Returns
    -------
    float in ``[1, min(N, D)]`` (up to the ``eps`` term).
    """
    eps = _check_eps(eps)
    z = as_2d_tensor(Z, "Z", min_rows=1)
    return _rankme_from_sv(_singular_values(z, centered=False), eps, "Z")


def effective_rank(Z: Any) -> float:
    """Effective rank of the covariance of ``Z`` (Roy & Vetterli 2007, Def. 1, applied to the covariance).

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
    """
    z = as_2d_tensor(Z, "Z", min_rows=2)
    lam = _covariance_eigs(z, "Z")
    return _entropy_rank(lam / lam.sum())


def participation_ratio(Z: Any) -> float:
    """Participation ratio ``(sum_k lambda_k)^2 / sum_k lambda_k^2`` of the covariance eigenvalues.

    Same ``lambda_k`` as :func:`effective_rank` (centered data); it is the exponential of the Renyi-2
    entropy of ``p_k = lambda_k / sum lambda`` instead of the Shannon entropy, hence never larger than
    the effective rank. Used for neural representations by Gao et al. 2017 and Recanatesi et al. 2019.

    Raises
    ------
    ValueError
        ``N < 2`` or constant data (zero covariance).
    """
    z = as_2d_tensor(Z, "Z", min_rows=2)
    lam = _covariance_eigs(z, "Z")
    return float(lam.sum() ** 2 / lam.square().sum())


def spectrum(Z: Any, centered: bool = True) -> np.ndarray:
    """The eigen-spectrum a spectrum plot draws, largest first.

    ``centered=True``: eigenvalues of the sample covariance ``Zc^T Zc / (N - 1)`` (``np.cov``
    normalization), i.e. ``sigma_k(Zc)^2 / (N - 1)``. ``centered=False``: eigenvalues of the
    second-moment matrix ``Z^T Z / N``, i.e. ``sigma_k(Z)^2 / N``.

    Returns
    -------
    numpy.ndarray, float64, shape ``[min(N, D)]``, sorted in decreasing order (the remaining
    ``D - min(N, D)`` eigenvalues are exactly zero and are not listed).
    """
    if not isinstance(centered, (bool, np.bool_)):
        raise TypeError(f"centered must be True or False, got {type(centered).__name__}")
    z = as_2d_tensor(Z, "Z", min_rows=2 if centered else 1)
    n = z.shape[0]
    sv = _singular_values(z, centered=bool(centered))
    lam = sv.square() / ((n - 1) if centered else n)
    return np.sort(lam.cpu().numpy())[::-1].copy()


def layer_spectrum_table(acts: Mapping[str, Any], measures: Iterable[str] = ("rankme", "effective_rank"),
                         *, eps: float = 1e-7) -> pd.DataFrame:
    """Rank measures for every layer, as a tidy table.

    Parameters
    ----------
    acts : mapping layer name -> array or tensor [N, d_layer]
        Widths and even ``N`` may differ between layers.
    measures : iterable of {"rankme", "effective_rank", "participation_ratio"}
    eps : float
        Passed to :func:`rankme`.

    Returns
    -------
    pandas.DataFrame with columns ``layer, index, measure, value`` (``index`` = position of the layer in
    ``acts``), one row per layer and measure. One SVD of the uncentered and/or one of the centered data
    is computed per layer, whatever the number of measures.
    """
    if not isinstance(acts, Mapping):
        raise TypeError(f"acts must be a mapping layer name -> [N, d] array, got {type(acts).__name__}")
    if len(acts) == 0:
        raise ValueError("acts is empty; pass at least one layer")
    if isinstance(measures, str):
        measures = (measures,)
    measures = list(measures)
    if not measures:
        raise ValueError(f"measures is empty; choose from {list(MEASURES)}")
    for m in measures:
        check_choice(m, MEASURES, "measures")
    eps = _check_eps(eps)
    needs_cov = any(m != "rankme" for m in measures)
    rows = []
    for idx, (layer, x) in enumerate(acts.items()):
        name = f"acts[{layer!r}]"
        z = as_2d_tensor(x, name, min_rows=2 if needs_cov else 1)
        lam = _covariance_eigs(z, name) if needs_cov else None
        for m in measures:
            if m == "rankme":
                value = _rankme_from_sv(_singular_values(z, centered=False), eps, name)
            elif m == "effective_rank":
                value = _entropy_rank(lam / lam.sum())
            else:
                value = float(lam.sum() ** 2 / lam.square().sum())
            rows.append((layer, idx, m, value))
    return pd.DataFrame(rows, columns=["layer", "index", "measure", "value"])

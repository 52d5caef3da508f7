"""One pass over a representation for every measure that needs only its second moments.

:func:`second_moments` centers ``Z`` [N, D] (float64, on its device), then computes at most one
*centered* decomposition (eigenvalues of the scatter matrix ``Zc^T Zc``, i.e. the squared singular
values of ``Zc``) and at most one *uncentered* decomposition (singular values of ``Z`` itself). The
returned :class:`Moments` feeds RankMe, effective rank, participation ratio, stable rank, alpha-ReQ,
singular value entropy and the largest singular value ratio (see :mod:`workbench.spectrum._rank`), so a
layer is decomposed once however many of these measures are asked for.

Two ways to the same eigenvalues (``method``)
---------------------------------------------
``"gram"`` (the default, ``"auto"``): form the Gram matrix of the *smaller* side in float64 -
``Zc^T Zc`` [D, D] when ``N >= D``, ``Zc Zc^T`` [N, N] otherwise - with one GEMM and take its
eigenvalues with ``torch.linalg.eigvalsh``. The uncentered Gram needs no second GEMM when ``N >= D``:
``Z^T Z = Zc^T Zc + N mu mu^T`` (a sum of two PSD terms, so nothing cancels). Cost ``N D min(N, D)``
multiply-adds in a GEMM plus a ``min(N, D)^3`` symmetric eigensolve - far cheaper than an SVD of the
tall [N, D] matrix, and GEMM-bound on a GPU.

``"svd"``: ``torch.linalg.svdvals`` of ``Zc`` / ``Z``.

Numerical trade-off. An eigenvalue of the Gram matrix carries an absolute error of a few
``eps * lambda_max`` (``eps`` = 2.2e-16, float64): the GEMM adds about ``sqrt(N) eps ||G||`` (random
rounding), the symmetric eigensolver a modest multiple of ``min(N, D) eps ||G||``; measured on
rank-deficient data it is 1-10 ``eps * lambda_max``. Eigenvalues at that level are rounding noise and may
come out slightly negative, so the Gram path sets every eigenvalue ``<= (min(N, D) + sqrt(max(N, D))) *
eps * lambda_max`` to exactly 0 (no NaN from ``sqrt`` of a negative number, exact rank for rank-deficient
data). In singular-value terms this drops ``sigma_k < tau * sigma_max`` with ``tau = sqrt((min(N, D) +
sqrt(max(N, D))) * eps)`` - about ``5e-7`` for ``N = 10^4, D = 10^3``, i.e. directions at the float32
rounding level of activations stored in float32. Measures that weight by ``lambda`` (effective rank,
participation ratio, stable rank, alpha-ReQ) cannot see the difference; in measures that weight by
``sigma`` (RankMe, singular value entropy) a dropped component has ``p_k < tau`` and so changes the
entropy by less than ``tau |log tau|`` (~7e-6 nats) - and only for data that really has singular values
that small. The SVD path keeps ``sigma`` accurate down to ``eps * sigma_max``, with no clipping (use it
for ill-conditioned data where those directions matter, at a higher cost).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .._validation import Data, Flag, Instance, Options, as_2d_tensor, check_choice, declare

__all__ = ["Moments", "second_moments", "METHODS"]

METHODS = ("auto", "gram", "svd")
_EPS = float(torch.finfo(torch.float64).eps)


@dataclass(frozen=True, eq=False)
class Moments:
    """Second-moment summary of one representation ``Z`` [N, D], computed by :func:`second_moments`.

    Attributes
    ----------
    n, d : int
        Number of samples and features.
    mean : torch.Tensor [D], float64
        Column means of ``Z`` (on the input's device).
    scatter_eigenvalues : torch.Tensor [min(N, D)] or None
        Eigenvalues of the centered scatter matrix ``Zc^T Zc`` (= squared singular values of the
        column-centered ``Zc``; no ``1/(N-1)`` factor), largest first, all ``>= 0``. ``None`` when
        computed with ``centered=False``.
    singular_values : torch.Tensor [min(N, D)] or None
        Singular values of the uncentered ``Z``, largest first. ``None`` unless ``uncentered=True``.
    method : {"gram", "svd"}
        How the decompositions were obtained (see the module docstring for the trade-off).
    abs_max : float
        ``max |Z_ij|``; sets the scale below which the centered data count as constant.
    name : str
        Name of the input used in error messages.
    """

    n: int
    d: int
    mean: torch.Tensor
    scatter_eigenvalues: torch.Tensor | None
    singular_values: torch.Tensor | None
    method: str
    abs_max: float
    name: str = "x"

    @property
    def covariance_eigenvalues(self) -> torch.Tensor:
        """Eigenvalues of the sample covariance ``Zc^T Zc / (N - 1)`` (``np.cov`` normalization)."""
        return self.centered_eigenvalues("the covariance spectrum") / (self.n - 1)

    def centered_eigenvalues(self, what: str) -> torch.Tensor:
        """Scatter eigenvalues, checked to exist and to carry variance; ``what`` names the caller."""
        lam = self.scatter_eigenvalues
        if lam is None:
            raise ValueError(f"{what} needs the centered spectrum, but these Moments of {self.name} were computed "
                             "with centered=False; call second_moments(..., centered=True)")
        # Rounding in the column means leaves residuals of order N * eps * max|Z| even for constant data,
        # so a total variance at that level is treated as zero.
        floor = self.n * self.d * (self.n * _EPS * self.abs_max) ** 2
        if not float(lam.sum()) > floor:
            raise ValueError(f"{self.name} is constant across samples (zero covariance), so {what} is undefined; "
                             "drop it or check the activations")
        return lam

    def uncentered_singular_values(self, what: str) -> torch.Tensor:
        """Singular values of ``Z``, checked to exist and not to be all zero."""
        sv = self.singular_values
        if sv is None:
            raise ValueError(f"{what} needs the singular values of the uncentered {self.name}, but these Moments "
                             "were computed with uncentered=False; call second_moments(..., uncentered=True)")
        if not float(sv.sum()) > 0.0:
            raise ValueError(f"{self.name} is all zeros, so {what} is undefined")
        return sv


def _check_flag(value: Any, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__}")
    return bool(value)


def _gram_noise_floor(n: int, d: int) -> float:
    """Relative level (times ``lambda_max``) below which eigenvalues of an [n, d] Gram are rounding noise."""
    return (min(n, d) + float(np.sqrt(max(n, d)))) * _EPS


def _clip_gram_eigenvalues(lam: torch.Tensor, n: int, d: int) -> torch.Tensor:
    """Set eigenvalues (largest first along the last axis) at or below the noise floor to exactly 0."""
    top = lam[..., :1].clamp_min(0.0)
    return torch.where(lam > _gram_noise_floor(n, d) * top, lam, torch.zeros_like(lam))


def _gram_eigenvalues(gram: torch.Tensor, n: int, d: int) -> torch.Tensor:
    """Eigenvalues of a symmetric PSD Gram matrix, largest first, rounding noise set to exactly 0."""
    return _clip_gram_eigenvalues(torch.linalg.eigvalsh(gram).flip(-1), n, d)


@declare(x=Data("x"), centered=Flag(), uncentered=Flag(), method=Options(*METHODS), name=Instance(str))
def second_moments(x: Any, *, centered: bool = True, uncentered: bool = False, method: str = "auto",
                   name: str = "x") -> Moments:
    """Center ``x`` (``Z`` in the formulas) once and decompose its second moments for all spectrum measures.

    Parameters
    ----------
    x : array or tensor [N, D]
        Integer/bool input is converted to float64; NaN/Inf and 1-D input are errors. A torch tensor
        stays on its device (the computation runs there; nothing is copied to the host).
    centered : bool
        Compute the eigenvalues of the centered scatter matrix ``Zc^T Zc`` (needs ``N >= 2``). Used by
        effective rank, participation ratio, stable rank (default), alpha-ReQ.
    uncentered : bool
        Compute the singular values of ``Z`` itself. Used by RankMe, singular value entropy and the
        largest singular value ratio (their paper definitions do not subtract the mean).
    method : {"auto", "gram", "svd"}
        ``"auto"`` = ``"gram"``: eigenvalues of the float64 Gram matrix of the smaller side (one GEMM, one
        ``eigvalsh``). ``"svd"``: singular values of the [N, D] matrix. See the module docstring for the
        numerical trade-off (the Gram path zeroes eigenvalues at the rounding-noise level,
        ``<= (min(N, D) + sqrt(max(N, D))) * eps * lambda_max``).
    name : str
        Used in error messages (e.g. ``"acts['layer3']"``).

    Returns
    -------
    Moments
        At most one centered and one uncentered decomposition, each of length ``min(N, D)``.

    Examples
    --------
    >>> import numpy as np
    >>> z = np.array([[2.0, 0], [-2, 0], [0, 1], [0, -1]])    # centered; singular values 2*sqrt(2), sqrt(2)
    >>> m = second_moments(z, uncentered=True)
    >>> m.scatter_eigenvalues.tolist(), m.singular_values.square().round(decimals=6).tolist()     # Zc^T Zc; sigma^2
    ([8.0, 2.0], [8.0, 2.0])
    """
    centered = _check_flag(centered, "centered")
    uncentered = _check_flag(uncentered, "uncentered")
    if not (centered or uncentered):
        raise ValueError("second_moments needs centered=True and/or uncentered=True")
    check_choice(method, METHODS, "method")
    method = "gram" if method == "auto" else method
    z = as_2d_tensor(x, name, min_rows=2 if centered else 1)
    n, d = z.shape
    mean = z.mean(dim=0)
    abs_max = float(z.abs().max()) if z.numel() else 0.0
    lam = sv = None
    zc = z - mean if centered else None
    if method == "svd":
        if centered:
            lam = torch.linalg.svdvals(zc).square()
        if uncentered:
            sv = torch.linalg.svdvals(z)
    else:
        tall = n >= d
        gram_c = None
        if centered:
            gram_c = zc.T @ zc if tall else zc @ zc.T
            lam = _gram_eigenvalues(gram_c, n, d)
        if uncentered:
            if tall:
                gram_u = gram_c + n * torch.outer(mean, mean) if gram_c is not None else z.T @ z
            else:
                gram_u = z @ z.T
            sv = _gram_eigenvalues(gram_u, n, d).sqrt()
    return Moments(n=n, d=d, mean=mean, scatter_eigenvalues=lam, singular_values=sv, method=method,
                   abs_max=abs_max, name=name)

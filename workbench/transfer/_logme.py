"""LogME: the maximum log evidence of Bayesian linear regression from features to targets.

Model (You, Liu, Wang & Long 2021, "LogME: Practical assessment of pre-trained models for transfer
learning", ICML): for features ``F`` [N, D] (rows ``f_i``) and one target column ``y`` [N],
``w ~ N(0, alpha^-1 I_D)`` and ``y_i | w ~ N(w^T f_i, beta^-1)``. The evidence is::

    log p(y | F, alpha, beta) = D/2 log alpha + N/2 log beta - N/2 log 2 pi
                                - beta/2 ||F m - y||^2 - alpha/2 ||m||^2 - 1/2 log|A|
    A = alpha I_D + beta F^T F,     m = beta A^-1 F^T y

(the ICML paper's log-evidence equation; Bishop 2006, PRML Eq. 3.86). LogME maximises it over
``(alpha, beta)`` for every target column (a one-hot class indicator for classification, a
regression target otherwise) and reports the average over columns of the maximum divided by ``N``.
The maximiser satisfies MacKay's fixed-point equations (ICML paper, Algorithm 1; Bishop Eqs. 3.91,
3.92, 3.95)::

    gamma = sum_i beta s_i / (alpha + beta s_i),   alpha = gamma / ||m||^2,   beta = (N - gamma) / ||F m - y||^2

with ``s_i`` the eigenvalues of ``F^T F``. The extended version (You et al. 2022, "Ranking and tuning
pre-trained models: a new paradigm for exploiting model hubs", JMLR 23(209); arXiv:2110.10545) rewrites
the updates in terms of the SVD of ``F`` so each iteration costs ``O(min(N, D))``.

Exact SVD form (what is computed here). Let ``F = U diag(sigma) V^T`` with the ``r = rank(F) <=
min(N, D)`` non-zero singular values, ``lambda_i = sigma_i^2``, ``x = U^T y`` [r] and
``res0 = ||y||^2 - ||x||^2`` (the part of ``y`` outside the column space of ``F``; zero when
``r = N``). With ``t = alpha / beta``::

    log|A|          = sum_{i<=r} log(alpha + beta lambda_i) + (D - r) log alpha
    gamma           = sum_{i<=r} lambda_i / (lambda_i + t)
    ||m||^2         = sum_{i<=r} lambda_i x_i^2 / (lambda_i + t)^2
    ||F m - y||^2   = sum_{i<=r} x_i^2 t^2 / (lambda_i + t)^2 + res0
    log evidence    = N/2 log beta - 1/2 sum_{i<=r} log(1 + lambda_i / t)
                      - beta/2 (sum_{i<=r} x_i^2 t / (lambda_i + t) + res0) - N/2 log 2 pi

The ``D - r`` directions in the null space of ``F`` contribute ``(D - r) log alpha`` to ``log|A|``,
which cancels the matching part of ``D/2 log alpha``: the evidence depends on ``D`` only through
``r``. The SVD ("fixed-point") path of the authors' reference implementation (``LogME.py``,
``_fit_fixed_point``, used by default there) sums ``log(alpha + beta lambda_i)`` over the ``r`` non-zero
singular values but keeps ``D/2 log alpha``, i.e. it drops ``(D - r)/2 log alpha``. Its value is
therefore wrong whenever ``r < D``: always when ``N < D`` (by orders of magnitude: e.g. +7.2 instead of
+0.09 per sample for N=200, D=512), and for rank-deficient features with ``N >= D`` whenever its absolute
cut-off (singular values > 1e-10) removes the null directions (rounding often leaves them at ~1e-7, which
keeps them in the sum and happens to give the right value). Its older eigen-decomposition path
(``_fit_icml``) sums over all ``D`` eigenvalues of ``F^T F`` and is correct, at ``O(D^3)`` cost. Both stop
after at most 11 updates (relative tolerance on ``t`` of 1e-3 and 1e-2) and add ``1e-5`` to the
denominators; this module iterates to ``tol`` instead.

Maximisation. ``beta`` has a closed-form optimum for fixed ``t`` (``beta = N / Q(t)`` with ``Q`` the
bracket above), so the evidence is a function of ``t`` alone. It is evaluated on a log-spaced grid
spanning the spectrum, MacKay's update ``t <- gamma ||F m - y||^2 / ((N - gamma) ||m||^2)`` is iterated
from the best grid point, with Aitken (Steffensen) extrapolation of every two updates, accepted only
where it raises the evidence (the plain iteration converges linearly, slowly where the evidence is flat;
an update that leaves the grid outward is sent to the corresponding limit, since the MacKay step always
moves up the evidence gradient and the profile is monotone there; where the iteration has not met ``tol``
after ``max_iter`` iterations, or ended below the best grid value, a golden-section search of ``log t``
between the grid neighbours takes over), and the limits
``t -> infinity`` (``alpha -> infinity``: no linear signal;
``log evidence = N/2 log(N / ||y||^2) - N/2 (1 + log 2 pi)``) and, when ``r = N``, ``t -> 0``
(``beta -> infinity``: noise-free interpolation) are evaluated in closed form. The largest of these is
returned, so the value is the supremum of the evidence even when it is attained only in a limit. When
``r < N`` and ``y`` lies in the column space of ``F`` (``res0 = 0``: the target is an exact linear
function of the features) the evidence is unbounded and a ``ValueError`` is raised.

All computation is float64 torch on the features' device; every target column is handled at once
(``[r, C]`` tensors), without a Python loop over classes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from .._validation import Data, Flag, Interval, as_2d_tensor, check_positive_int, declare
from ._common import check_eps, class_index, one_hot, rank_tolerance

__all__ = ["logme", "logme_targets"]

_LOG_2PI = math.log(2.0 * math.pi)
_GRID_PER_DECADE = 2
_GRID_MARGIN_DECADES = 3.0
_BOUND_DECADES = 10.0  # t is kept within [lambda_min, lambda_max] widened by this many decades
_RES0_REL = 1e-10      # res0 <= this * ||y||^2 counts as "y in the column space of F"
_GOLDEN_STEPS = 80
#: the ``limit`` column of :func:`logme_targets`: where the supremum of the evidence lies
_LIMITS = ("none", "no_signal", "noise_free")


@dataclass
class _Spectrum:
    lam: torch.Tensor    # [r] non-zero eigenvalues of F^T F (= squared singular values)
    x2: torch.Tensor     # [r, C] squared coordinates of each target in the left singular basis
    yy: torch.Tensor     # [C] ||y||^2
    res0: torch.Tensor   # [C] ||y||^2 - ||U^T y||^2 (exactly 0 when r = N)
    n: int
    d: int

    @property
    def r(self) -> int:
        return int(self.lam.numel())


def _spectrum(f: torch.Tensor, y: torch.Tensor) -> _Spectrum:
    """Eigen-decompose the smaller Gram matrix (``F^T F`` or ``F F^T``) and project the targets."""
    n, d = f.shape
    if d <= n:
        lam, vec = torch.linalg.eigh(f.T @ f)
        keep = lam > rank_tolerance(lam, max(n, d))
        lam, vec = lam[keep], vec[:, keep]
        x = (vec.T @ (f.T @ y)) / lam.sqrt()[:, None]      # U^T y with U = F V diag(1/sigma)
    else:
        lam, vec = torch.linalg.eigh(f @ f.T)
        keep = lam > rank_tolerance(lam, max(n, d))
        lam, vec = lam[keep], vec[:, keep]
        x = vec.T @ y
    x2 = x.square()
    yy = y.square().sum(dim=0)
    if lam.numel() == n:
        res0 = torch.zeros_like(yy)
    else:
        res0 = (yy - x2.sum(dim=0)).clamp_min(0.0)
    return _Spectrum(lam, x2, yy, res0, n, d)


def _profile(sp: _Spectrum, t: torch.Tensor) -> dict[str, torch.Tensor]:
    """Everything the evidence and the update need at ``t = alpha / beta`` (one value per column)."""
    lam = sp.lam[:, None]
    den = lam + t[None, :]
    w = t[None, :] / den                                    # t / (lambda + t), in (0, 1]
    gamma = (lam / den).sum(dim=0)
    n_minus_gamma = (sp.n - sp.r) + w.sum(dim=0)            # N - gamma without cancellation
    m2 = (lam * sp.x2 / den.square()).sum(dim=0)            # ||m||^2
    res2 = (sp.x2 * w.square()).sum(dim=0) + sp.res0        # ||F m - y||^2
    q = (sp.x2 * w).sum(dim=0) + sp.res0                    # beta-profile quadratic form
    logdet = torch.log1p(lam / t[None, :]).sum(dim=0)       # sum log(1 + lambda / t)
    beta = sp.n / q
    evidence = 0.5 * sp.n * torch.log(beta) - 0.5 * logdet - 0.5 * sp.n * (1.0 + _LOG_2PI)
    return {"gamma": gamma, "n_minus_gamma": n_minus_gamma, "m2": m2, "res2": res2,
            "beta": beta, "evidence": evidence}


def _limit_infinity(sp: _Spectrum) -> torch.Tensor:
    """Evidence as t -> infinity (weights forced to zero): y ~ N(0, ||y||^2 / N I)."""
    return 0.5 * sp.n * torch.log(sp.n / sp.yy) - 0.5 * sp.n * (1.0 + _LOG_2PI)


def _limit_zero(sp: _Spectrum) -> tuple[torch.Tensor, torch.Tensor]:
    """Evidence and alpha as t -> 0 when r = N (noise-free fit): y ~ N(0, F F^T / alpha)."""
    s = (sp.x2 / sp.lam[:, None]).sum(dim=0)
    value = 0.5 * sp.n * torch.log(sp.n / s) - 0.5 * torch.log(sp.lam).sum() - 0.5 * sp.n * (1.0 + _LOG_2PI)
    return value, sp.n / s


def _golden(sp: _Spectrum, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Golden-section maximisation of the profile evidence over log t in [lo, hi], all columns at once."""
    g = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = lo.clone(), hi.clone()
    c, e = b - g * (b - a), a + g * (b - a)
    fc, fe = _profile(sp, c.exp())["evidence"], _profile(sp, e.exp())["evidence"]
    for _ in range(_GOLDEN_STEPS):
        left = fc >= fe                                     # maximum in [a, e]
        b = torch.where(left, e, b)
        a = torch.where(left, a, c)
        new_c, new_e = b - g * (b - a), a + g * (b - a)
        c_old, e_old, fc_old, fe_old = c, e, fc, fe
        c = torch.where(left, new_c, e_old)
        e = torch.where(left, c_old, new_e)
        probe = torch.where(left, c, e)
        fp = _profile(sp, probe.exp())["evidence"]
        fc = torch.where(left, fp, fe_old)
        fe = torch.where(left, fc_old, fp)
    return torch.where(fc >= fe, c, e)


def _maximise(sp: _Spectrum, tol: float, max_iter: int) -> dict[str, np.ndarray]:
    device = sp.lam.device
    n_cols = sp.yy.numel()
    log_lo = math.log(float(sp.lam.min())) - _BOUND_DECADES * math.log(10.0)
    log_hi = math.log(float(sp.lam.max())) + _BOUND_DECADES * math.log(10.0)

    # 1) grid over log t, spanning the spectrum with a margin
    g_lo = math.log(float(sp.lam.min())) - _GRID_MARGIN_DECADES * math.log(10.0)
    g_hi = math.log(float(sp.lam.max())) + _GRID_MARGIN_DECADES * math.log(10.0)
    n_grid = max(3, math.ceil((g_hi - g_lo) / math.log(10.0) * _GRID_PER_DECADE) + 1)
    grid = torch.linspace(g_lo, g_hi, n_grid, dtype=torch.float64, device=device)
    best_val = torch.full((n_cols,), -math.inf, dtype=torch.float64, device=device)
    best_k = torch.zeros(n_cols, dtype=torch.long, device=device)
    for k in range(n_grid):
        val = _profile(sp, grid[k].exp().expand(n_cols))["evidence"]
        better = val > best_val
        best_val = torch.where(better, val, best_val)
        best_k = torch.where(better, torch.full_like(best_k, k), best_k)
    grid_logt = grid[best_k]

    # 2) MacKay's fixed point from the best grid point, with Aitken (Steffensen) acceleration: from u,
    #    u1 = g(u), u2 = g(u1), the extrapolate u - (u1 - u)^2 / (u2 - 2 u1 + u) is taken when it raises the
    #    evidence above that at u1, otherwise the plain update u1 (the iteration is linear without it)
    def update(p: dict) -> torch.Tensor:
        new = (torch.log(p["gamma"]) + torch.log(p["res2"]) - torch.log(p["n_minus_gamma"])
               - torch.log(p["m2"]))
        return torch.nan_to_num(new, nan=log_hi, posinf=log_hi, neginf=log_lo).clamp(log_lo, log_hi)

    logt = grid_logt.clone()
    p0 = _profile(sp, logt.exp())
    active = torch.ones(n_cols, dtype=torch.bool, device=device)
    iters = torch.zeros(n_cols, dtype=torch.long, device=device)
    for _ in range(max_iter):
        u1 = update(p0)
        p1 = _profile(sp, u1.exp())
        u2 = update(p1)
        denom = u2 - 2.0 * u1 + logt
        acc = logt - (u1 - logt).square() / denom
        ok = torch.isfinite(acc) & (acc > log_lo) & (acc < log_hi)
        acc = torch.where(ok, acc, u1)
        pa = _profile(sp, acc.exp())
        take = ok & (pa["evidence"] >= p1["evidence"])
        new = torch.where(take, acc, u1)
        # past the grid (3 decades beyond the spectrum) the profile is monotone: an update that keeps moving
        # outward there heads for a limit, whose value is known in closed form - send it there at once
        new = torch.where((new > g_hi) & (new > logt), torch.full_like(new, log_hi), new)
        new = torch.where((new < g_lo) & (new < logt), torch.full_like(new, log_lo), new)
        step = (new - logt).abs()
        logt = torch.where(active, new, logt)
        p0 = {k: torch.where(active & take, pa[k], torch.where(active, p1[k], p0[k])) for k in p0}
        iters = iters + active.long()
        active = active & (step > tol) & (new > log_lo) & (new < log_hi)
        if not bool(active.any()):
            break
    fixed_val = _profile(sp, logt.exp())["evidence"]
    stuck = active  # still moving after max_iter updates, inside the bounds

    # 3) candidates: the fixed point, the closed-form limits, and - where the fixed point is stuck or ended
    #    below the best grid value (a lesser local maximum) - a golden-section search around the grid optimum
    cand_logt = [logt]
    cand_val = [fixed_val]
    cand_logt.append(torch.full((n_cols,), math.inf, dtype=torch.float64, device=device))
    cand_val.append(_limit_infinity(sp))
    if sp.r == sp.n:
        zero_val, zero_alpha = _limit_zero(sp)
        cand_logt.append(torch.full((n_cols,), -math.inf, dtype=torch.float64, device=device))
        cand_val.append(zero_val)
    need = stuck | (best_val > torch.stack(cand_val).max(dim=0).values)
    if bool(need.any()):
        step_g = float(grid[1] - grid[0])
        polished = _golden(sp, grid_logt - step_g, grid_logt + step_g)
        cand_logt.append(polished)
        cand_val.append(_profile(sp, polished.exp())["evidence"])
    vals = torch.stack(cand_val)
    which = vals.argmax(dim=0)
    cols = torch.arange(n_cols, device=device)
    value = vals[which, cols]
    best_logt = torch.stack(cand_logt)[which, cols]

    finite = torch.isfinite(best_logt)
    p = _profile(sp, torch.where(finite, best_logt, torch.zeros_like(best_logt)).exp())
    beta = torch.where(finite, p["beta"], torch.zeros_like(p["beta"]))
    alpha = beta * best_logt.exp()
    gamma = torch.where(finite, p["gamma"], torch.zeros_like(p["gamma"]))
    at_inf = best_logt == math.inf
    alpha = torch.where(at_inf, torch.full_like(alpha, math.inf), alpha)
    beta = torch.where(at_inf, sp.n / sp.yy, beta)
    limit = at_inf.long()  # index into _LIMITS
    if sp.r == sp.n:
        at_zero = best_logt == -math.inf
        alpha = torch.where(at_zero, zero_alpha, alpha)
        beta = torch.where(at_zero, torch.full_like(beta, math.inf), beta)
        gamma = torch.where(at_zero, torch.full_like(gamma, float(sp.r)), gamma)
        limit = torch.where(at_zero, torch.full_like(limit, 2), limit)
    out = {"log_evidence": value / sp.n, "alpha": alpha, "beta": beta, "gamma": gamma,
           "iterations": iters, "converged": ~stuck, "limit": limit}
    return {k: v.cpu().numpy() for k, v in out.items()}


def _targets(labels: Any, n: int, regression: bool, device: torch.device) -> tuple[torch.Tensor, list]:
    if not isinstance(regression, (bool, np.bool_)):
        raise TypeError(f"regression must be True or False, got {type(regression).__name__}")
    if regression:
        arr = labels
        if isinstance(arr, (list, tuple)):
            arr = np.asarray(arr)
        if getattr(arr, "ndim", None) == 1:
            arr = arr.reshape(-1, 1)
        y = as_2d_tensor(arr, "labels", min_rows=1).to(device)
        if y.shape[0] != n:
            raise ValueError(f"mismatched number of samples: x has {n} rows, labels has {y.shape[0]}; "
                             "pass targets for the same examples, in the same order")
        zero = (y == 0).all(dim=0)
        if bool(zero.any()):
            bad = torch.nonzero(zero).reshape(-1).tolist()
            raise ValueError(f"labels column(s) {bad[:5]} are all zero; the evidence is unbounded for a zero "
                             "target (no noise is needed to explain it), drop those columns")
        return y, list(range(y.shape[1]))
    codes, classes = class_index(labels, "labels", n)
    return one_hot(codes, len(classes), device), classes.tolist()


def _fit(x: Any, labels: Any, regression: bool, tol: float, max_iter: int):
    tol = check_eps(tol, "tol")
    max_iter = check_positive_int(max_iter, "max_iter")
    f = as_2d_tensor(x, "x", min_rows=2)
    y, names = _targets(labels, f.shape[0], regression, f.device)
    sp = _spectrum(f, y)
    if sp.r == 0:
        raise ValueError("x is all zeros (rank 0), so LogME is undefined; check the activations")
    if sp.r < sp.n:
        exact = sp.res0 <= _RES0_REL * sp.yy
        if bool(exact.any()):
            bad = [names[i] for i in torch.nonzero(exact).reshape(-1).tolist()]
            raise ValueError(
                f"target(s) {bad[:5]} are an exact linear function of the features (no residual outside the "
                f"span of the {sp.r}-dimensional feature space, with N={sp.n} samples), so the evidence is "
                "unbounded (beta -> infinity). This happens when the features contain the label, or with "
                "duplicated samples when N > rank; remove such columns or samples")
    return _maximise(sp, tol, max_iter), names, sp


@declare(x=Data("x", scale="invariant"), labels=Data("labels"), regression=Flag(),
         tol=Interval(float, 0, closed="neither"), max_iter=Interval(int, 1))
def logme(x: Any, labels: Any, *, regression: bool = False, tol: float = 1e-10,
          max_iter: int = 100) -> float:
    """LogME: mean over targets of the maximum Bayesian linear-regression log evidence per sample.

    ``LogME = (1/C) sum_c max_{alpha, beta} log p(y_c | F, alpha, beta) / N`` with the evidence of
    You et al. 2021 (ICML; see the module docstring for the formula and the exact SVD form
    used), ``y_c`` the one-hot indicator of class ``c`` (classification) or the ``c``-th target
    column (regression). Features and targets are used as given - no centering, no bias term - as in
    the paper and its reference implementation.

    Unlike the SVD ("fixed-point") path of the authors' ``LogME.py``, this is correct for ``N < D``
    and for rank-deficient features: the ``D - rank(F)`` null directions are accounted for exactly,
    so appending all-zero feature columns leaves the value unchanged. For ``N > D`` and full-rank
    features both agree (up to the reference code's 1e-3 stopping tolerance).

    Parameters
    ----------
    x : array or tensor [N, D]
        The features ``F``. Integer input is converted; computation is float64 on the tensor's device.
    labels : array [N]
        Integer class ids (classification; each distinct value is one target column, at least two
        classes), or, with ``regression=True``, real targets [N] or [N, K].
    regression : bool
    tol : float
        Stop the fixed-point iteration when ``|log t_new - log t| <= tol`` for every target.
    max_iter : int
        Cap on (accelerated) fixed-point iterations; targets that have not settled by then are finished
        by a golden-section search of the profile evidence around the best grid point, to the same
        accuracy.

    Returns
    -------
    float
        Log evidence per sample, averaged over targets (higher = features explain the targets better
        with a linear model). Range ``(-inf, +inf)``; for one-hot targets usually in ``(-1, 1)``.
        Invariant to isotropic scaling and orthogonal rotation of the features (``alpha`` absorbs the
        scale) and to appending zero columns; **not** invariant to per-feature scaling or to a shift of
        the features. It does depend on the scale of regression targets (``-log |c|`` per sample when
        ``y`` is multiplied by ``c``).

    Raises
    ------
    ValueError
        NaN/Inf, 1-D features, mismatched ``N``, fewer than two classes, all-zero features or an
        all-zero regression target, a target that is an exact linear function of the features when
        ``N > rank(F)`` (unbounded evidence).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> labels = np.repeat([0, 1, 2], 30); f = rng.normal(size=(90, 8)) + 2 * np.eye(8)[labels]
    >>> round(logme(f, labels), 4), round(logme(rng.normal(size=(90, 8)), labels), 4)   # class signal vs none
    (-0.4981, -0.8633)
    """
    out, _, _ = _fit(x, labels, regression, tol, max_iter)
    return float(np.mean(out["log_evidence"]))


@declare(x=Data("x"), labels=Data("labels"), regression=Flag(), tol=Interval(float, 0, closed="neither"),
         max_iter=Interval(int, 1))
def logme_targets(x: Any, labels: Any, *, regression: bool = False, tol: float = 1e-10,
                  max_iter: int = 100) -> pd.DataFrame:
    """The per-target pieces of :func:`logme`, one row per target column.

    Columns: ``target`` (class id, or column index for regression), ``log_evidence`` (maximum log
    evidence / N; :func:`logme` is their mean), ``alpha``, ``beta`` (the maximiser), ``gamma`` (effective
    number of well-determined parameters), ``iterations`` (accelerated fixed-point iterations used),
    ``converged`` (the fixed point met ``tol`` or ran into a limit; if not, the value comes from the
    golden-section search) and ``limit``, which flags a supremum that is attained only in a limit:

    - ``"none"``: an interior maximum; ``alpha`` and ``beta`` are finite.
    - ``"no_signal"``: the evidence is highest with the weights forced to zero (``alpha = inf``, ``gamma = 0``,
      ``beta = N / ||y||^2``) — the features carry no linear signal for this target that pays for its cost,
      common for rank-deficient features, very few samples or ``D > N``.
    - ``"noise_free"``: (only when ``rank(F) = N``) the target is interpolated exactly (``beta = inf``,
      ``gamma = N``).

    ``log_evidence`` is finite in every case; ``alpha`` / ``beta`` are ``inf`` exactly in the flagged rows (filter
    on ``limit == "none"`` before averaging or plotting them). Same arguments as :func:`logme`.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> labels = np.repeat([0, 1, 2], 30); f = rng.normal(size=(90, 8)) + 2 * np.eye(8)[labels]
    >>> logme_targets(f, labels).log_evidence.round(4).tolist()       # one per class; logme is their mean
    [-0.446, -0.5136, -0.5348]
    """
    out, names, _ = _fit(x, labels, regression, tol, max_iter)
    return pd.DataFrame({"target": names, **{k: out[k] for k in
                                             ("log_evidence", "alpha", "beta", "gamma", "iterations",
                                              "converged")},
                         "limit": [_LIMITS[i] for i in out["limit"]]})

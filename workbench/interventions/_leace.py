"""LEACE: least-squares linear concept erasure in closed form (an alternative to INLP's iterations)."""
from __future__ import annotations

from typing import Any

import numpy as np

from .._validation import Data, Interval, as_2d_float, check_labels, check_same_length, declare
from ..results import tidy
from ._nullspace import NullspaceProjection, _basis, chance_of, heldout_probe, stratified_holdout

__all__ = ["leace_projection"]

#: eigenvalues of the covariance below this fraction of the largest count as zero (the whitening is a pseudo-inverse)
_EIG_RTOL = 1e-10


@declare(x=Data("x"), labels=Data("labels"), C=Interval(float, 0, None, closed="neither"), seed=Interval(int, 0),
         holdout=Interval(float, 0, 1, closed="neither"), n_boot=Interval(int, 0),
         ci_level=Interval(float, 0, 1, closed="neither"), max_iter=Interval(int, 1))
def leace_projection(x: Any, labels: Any, *, C: float = 1.0, seed: int = 0, holdout: float = 0.3,
                     n_boot: int = 1000, ci_level: float = 0.95, max_iter: int = 1000) -> NullspaceProjection:
    """LEACE (Belrose, Schneider-Joseph, Ravfogel, Cotterell, Raff & Biderman 2023, "LEACE: perfect linear concept
    erasure in closed form", NeurIPS, Theorem 4.3): the affine map that makes ``labels`` linearly unpredictable from
    ``x`` while moving ``x`` least (in the mean squared Mahalanobis sense).

    With ``μ`` the mean of ``x``, ``Σ`` its (population) covariance, ``Σ_xz`` the cross-covariance of ``x`` and the
    one-hot ``labels``, the whitening ``W = (Σ^{1/2})⁺`` (eigenvalues below ``1e-10 λ_max`` treated as 0) and
    ``P_M`` the orthogonal projection onto the column space of ``M = W Σ_xz``, the eraser is

        ``r(x) = x − W⁺ P_M W (x − μ)``,   i.e. for row vectors ``r(x) = μ + (x − μ) P`` with ``P = I − W P_M W⁺``.

    After it, every class has the same mean (``Σ_rz = 0``), so no linear classifier beats a constant predictor in
    expected loss. ``P`` is idempotent but, unlike INLP's, oblique (not symmetric) unless ``Σ`` is isotropic, where it
    is the orthogonal projection removing the span of the class-mean differences. Unlike INLP, this needs no
    iterations and removes at most ``K − 1`` directions.

    The table gives a fresh logistic-regression probe's held-out accuracy (``holdout`` of each class, stratified;
    ``C``, ``max_iter``) on ``x`` (``iteration`` 0) and on the erased ``x`` (``iteration`` 1), ``method="leace"``.

    Returns
    -------
    :class:`NullspaceProjection` (``projection`` P, ``directions``: an orthonormal basis of the range of ``I − P``,
    ``mean`` μ, ``chance``, ``table``); pass it to :func:`amnesic_probe` as ``projection``.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = np.arange(300) % 3
    >>> x = rng.normal(size=(300, 5)) * [1, 2, 3, 4, 5] + 2 * np.eye(3, 5)[y]
    >>> r = leace_projection(x, y, n_boot=0)
    >>> z = r.apply(x)
    >>> bool(np.allclose([z[y == c].mean(0) for c in range(3)], z.mean(0)))   # every class has the same mean
    True
    >>> r.n_removed
    2
    """
    arr = as_2d_float(x, "x", min_rows=4)
    y = check_labels(labels, "labels")
    check_same_length(x=arr, labels=y)
    n, d = arr.shape
    mean = arr.mean(axis=0)
    xc = arr - mean
    classes = np.unique(y)
    onehot = (y[:, None] == classes[None, :]).astype(np.float64)
    cov = xc.T @ xc / n
    cross = xc.T @ (onehot - onehot.mean(axis=0)) / n  # [D, K]
    lam, vec = np.linalg.eigh((cov + cov.T) / 2)
    keep = lam > _EIG_RTOL * max(float(lam.max()), 0.0)
    if not keep.any():
        raise ValueError("x is constant (zero covariance): there is nothing to erase; pass features that vary")
    v, root = vec[:, keep], np.sqrt(lam[keep])
    w = (v / root) @ v.T          # (Σ^{1/2})⁺
    w_pinv = (v * root) @ v.T     # Σ^{1/2}
    q = _basis((w @ cross).T)     # [r, D]: orthonormal basis of col(W Σ_xz)
    p_m = q.T @ q
    projection = np.eye(d) - w @ p_m @ w_pinv
    directions = _basis(q @ w_pinv)  # rows spanning range(W⁺ P_M) = range(I − P)ᵀ of the column convention

    rng = np.random.default_rng(seed)
    held = stratified_holdout(y, holdout, rng)
    rows = []
    for it, z in enumerate((xc, xc @ projection)):
        _, acc, lo, hi = heldout_probe(z, y, held, C=C, max_iter=max_iter, n_boot=n_boot, alpha=1 - ci_level,
                                       seed=seed)
        rows.append({"measure": "accuracy", "value": acc, "ci_low": lo, "ci_high": hi, "iteration": it})
    table = tidy(rows, split="heldout", target="label", method="leace", C=float(C), n_train=int((~held).sum()))
    return NullspaceProjection(projection=projection, directions=directions,
                               iteration=np.zeros(len(directions), dtype=np.int64), mean=mean, table=table,
                               chance=chance_of(y[held]))

"""How invariant a representation is to a transformation: the similarity of z(x) and z(T(x)) above chance."""
from __future__ import annotations

from typing import Any

import torch

from .._validation import Data, Flag, Interval, as_2d_tensor, declare

__all__ = ["invariance"]


@declare(a=Data("x"), b=Data("x"), whiten=Flag(), shrinkage=Interval(float, 0, 1))
def invariance(a: Any, b: Any, *, whiten: bool = True, shrinkage: float = 0.1) -> float:
    """Invariance of a representation to a transformation T: the (Mahalanobis) cosine similarity of ``z(x_i)``
    (row i of ``a``) and ``z(T(x_i))`` (row i of ``b``), rescaled so that unrelated pairs score 0.

    Following Ericsson, Gouk & Hospedales 2021 ("Why do self-supervised models transfer? Investigating the impact
    of invariance", NeurIPS, Sec. 3: invariance as the Mahalanobis cosine similarity of the features of an
    image and of its transformed version), with the chance level removed. With ``μ`` and ``Σ`` the mean and
    (population) covariance of ``a`` — the untransformed features — and the shrunk covariance
    ``Σ_γ = (1 − γ) Σ + γ (tr Σ / D) I`` (Ledoit & Wolf 2004; ``γ = shrinkage`` keeps the whitening finite for the
    rank-deficient features of a ReLU layer), each row is mapped to ``u = Σ_γ^{-1/2} (z − μ)`` (``whiten=False``:
    ``u = z − μ``, the centred cosine) and, with ``c_ij = cos(u_a,i, u_b,j)``:

        ``s = (1/N) Σ_i c_ii``  (positive pairs),  ``s₀ = 1/(N(N−1)) Σ_{i≠j} c_ij``  (every unrelated pair — the
        exact mean over all shuffles of b),

        ``invariance = (s − s₀) / (1 − s₀)``.

    1: every ``z(T(x_i))`` points exactly where ``z(x_i)`` does (T changes nothing the representation sees); 0: a
    transformed example is no closer to its original than to another example (T destroys what the
    representation encodes); negative: farther. A row with zero norm after centring counts as cosine 0.

    Invariances: unchanged when the same invertible affine map ``z → A z + c`` is applied to both ``a`` and ``b``
    (exactly with ``whiten=True, shrinkage=0``; ``whiten=False``: A orthogonal times a scalar).

    Parameters
    ----------
    a : [N, D] features of the untransformed examples (N >= 3).
    b : [N, D] features of the same examples after the transformation (same shape).
    whiten : whiten with ``a``'s shrunk covariance (Mahalanobis cosine); False: centred cosine.
    shrinkage : γ in [0, 1], the weight of the scaled identity in the covariance (with ``whiten``).

    Returns
    -------
    float ``<= 1``.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> z = rng.normal(size=(500, 8))
    >>> invariance(z, z)                                                 # T changes nothing: 1
    1.0
    >>> round(invariance(z, z + 0.5 * rng.normal(size=z.shape)), 1)       # partly invariant
    0.9
    >>> abs(invariance(z, rng.normal(size=z.shape))) < 0.05              # T destroys everything: ~0
    True
    """
    whiten = bool(whiten)
    x = as_2d_tensor(a, "a", min_rows=3)
    y = as_2d_tensor(b, "b", min_rows=3).to(x.device)
    if x.shape != y.shape:
        raise ValueError(f"a and b must have the same shape (row i of b = row i of a transformed), got "
                         f"{tuple(x.shape)} and {tuple(y.shape)}")
    n, d = x.shape
    mu = x.mean(dim=0)
    xc, yc = x - mu, y - mu
    cov = xc.T @ xc / n
    trace = float(torch.diagonal(cov).sum())
    if not trace > 1e-300 * max(1.0, float(mu.abs().max())):
        raise ValueError("a is constant (every row the same): the untransformed features carry nothing to be "
                         "invariant about; pass a layer whose features vary across examples")
    if whiten:
        shrunk = (1.0 - shrinkage) * cov + shrinkage * (trace / d) * torch.eye(d, dtype=cov.dtype, device=cov.device)
        lam, vecs = torch.linalg.eigh(shrunk)
        floor = lam.max() * 1e-12
        if shrinkage == 0 and bool((lam <= floor).any()):
            raise ValueError("a's covariance is singular, so it cannot be whitened with shrinkage=0; use "
                             "shrinkage > 0 (e.g. the default 0.1) or whiten=False")
        root = vecs @ torch.diag(lam.clamp_min(floor).rsqrt()) @ vecs.T
        xc, yc = xc @ root, yc @ root

    def unit(t: torch.Tensor) -> torch.Tensor:
        norm = t.norm(dim=1, keepdim=True)
        return torch.where(norm > 0, t / torch.where(norm > 0, norm, torch.ones_like(norm)), torch.zeros_like(t))

    ua, ub = unit(xc), unit(yc)
    diag = (ua * ub).sum(dim=1)
    s = float(diag.mean())
    s0 = float((ua.sum(dim=0) @ ub.sum(dim=0) - diag.sum()) / (n * (n - 1)))
    if s0 >= 1.0 - 1e-12:
        raise ValueError("every transformed example is as similar to the other examples as to its own original "
                         "(chance similarity 1), so invariance is undefined; the features of a do not vary in "
                         "direction")
    return float((s - s0) / (1.0 - s0))

"""Geometry of (contrastive) embeddings on the unit hypersphere: alignment, uniformity, tolerance.

* :func:`alignment` and :func:`uniformity` - Wang & Isola 2020, "Understanding contrastive
  representation learning through alignment and uniformity on the hypersphere", ICML, Sec. 4.1.
* :func:`tolerance` - Wang & Liu 2021, "Understanding the behaviour of contrastive loss", CVPR.

All three are defined for L2-normalized features ``f(x)`` on the unit sphere; by default the rows are
normalized here (``normalize=True``), so any embedding can be passed. Lower alignment = positive pairs
closer; lower (more negative) uniformity = points spread more uniformly; higher tolerance = samples of a
class closer together. Computed in float64 in torch on the input's device; the pairwise terms of
uniformity are formed block by block with a streaming log-sum-exp, so memory stays ``O(block * N)``.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from .._validation import Data, Flag, Interval, as_2d_tensor, check_labels, declare

__all__ = ["alignment", "uniformity", "tolerance"]

#: data of extreme magnitude are rescaled when each row is normalized (the value does not depend on the scale), else
#: refused
_IF_NORMALIZED = lambda a: "invariant" if a["normalize"] else "refuse"  # noqa: E731
_BLOCK_ELEMENTS = 8_000_000  # float64 entries per block of pairwise distances (64 MB)


def _positive(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a positive number, got {type(value).__name__}")
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value}")
    return float(value)


def _flag(value: Any, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__}")
    return bool(value)


def _normalized(z: torch.Tensor, name: str, normalize: bool) -> torch.Tensor:
    if not normalize:
        return z
    norms = z.norm(dim=1, keepdim=True)
    if not float(norms.min()) > 0.0:
        row = int(norms.argmin())
        raise ValueError(f"{name} has an all-zero row ({row}) that cannot be projected onto the sphere; "
                         "remove it or pass normalize=False")
    return z / norms


@declare(a=Data("x", scale=_IF_NORMALIZED), b=Data("x", scale=_IF_NORMALIZED),
         alpha=Interval(float, 0, None, closed="neither"), normalize=Flag())
def alignment(a: Any, b: Any, *, alpha: float = 2.0, normalize: bool = True) -> float:
    """Alignment of positive pairs (Wang & Isola 2020, ICML, Sec. 4.1): ``E ||f(x) - f(y)||_2^alpha``.

    Row ``i`` of ``a`` and row ``i`` of ``b`` are the embeddings of a positive pair (two views of one
    input); the expectation is the mean over the ``N`` pairs. With ``normalize=True`` (default) each row
    is divided by its L2 norm first, as the paper's features live on the unit sphere.

    Parameters
    ----------
    a, b : array or tensor [N, D], same shape
    alpha : float > 0
        Exponent (paper default 2, the squared distance).
    normalize : bool
        L2-normalize rows; with ``False`` the raw Euclidean distances are used.

    Returns
    -------
    float in ``[0, 2^alpha]`` for normalized features; 0 iff every pair coincides.

    Examples
    --------
    >>> import numpy as np
    >>> round(alignment(np.array([[1.0, 0], [0, 1]]), np.array([[0.0, 1], [0, 1]])), 6)   # squared distances 2, 0
    1.0
    """
    alpha = _positive(alpha, "alpha")
    normalize = _flag(normalize, "normalize")
    x = as_2d_tensor(a, "a", min_rows=1)
    y = as_2d_tensor(b, "b", min_rows=1)
    if x.shape != y.shape:
        raise ValueError(f"a and b must have the same shape (row i of each = one positive pair), got "
                         f"{tuple(x.shape)} and {tuple(y.shape)}")
    y = y.to(x.device)
    x, y = _normalized(x, "a", normalize), _normalized(y, "b", normalize)
    return float((x - y).norm(dim=1).pow(alpha).mean())


@declare(x=Data("x", scale=_IF_NORMALIZED), t=Interval(float, 0, None, closed="neither"), normalize=Flag(),
         block_size=Interval(int, 1, none=True))
def uniformity(x: Any, *, t: float = 2.0, normalize: bool = True, block_size: int | None = None) -> float:
    """Uniformity (Wang & Isola 2020, ICML, Sec. 4.1): ``log E_{x != y} exp(-t ||f(x) - f(y)||_2^2)``.

    The expectation runs over all ``N(N-1)/2`` distinct pairs ``i < j`` of rows (as the paper's
    reference code, ``torch.pdist(x).pow(2).mul(-t).exp().mean().log()``). It is evaluated as
    ``logsumexp_{i<j}(-t d_ij^2) - log(N(N-1)/2)`` block by block (``block_size`` rows at a time, a
    streaming log-sum-exp), so it neither underflows for large ``t`` nor needs the [N, N] matrix.
    Squared distances come from the Gram matrix, ``||a||^2 + ||b||^2 - 2 a.b``, clipped at 0.

    Parameters
    ----------
    x : array or tensor [N, D], ``N >= 2``
    t : float > 0
        Temperature of the Gaussian potential (paper default 2).
    normalize : bool
        L2-normalize rows first (default; the paper's features are on the unit sphere).
    block_size : int or None
        Rows per block; default keeps a block of distances at about 64 MB.

    Returns
    -------
    float in ``[-4t, 0]`` for normalized features (squared chord distances are at most 4): 0 when all
    points coincide, more negative the more uniformly they cover the sphere; ``-4t`` only for two
    antipodal points.

    Examples
    --------
    >>> import numpy as np
    >>> square = np.array([[1.0, 0], [0, 1], [-1, 0], [0, -1]])    # 4 pairs at squared distance 2, 2 pairs at 4
    >>> round(uniformity(square), 4)                                # log((4 exp(-4) + 2 exp(-8)) / 6)
    -4.3963
    """
    t = _positive(t, "t")
    normalize = _flag(normalize, "normalize")
    x = _normalized(as_2d_tensor(x, "x", min_rows=2), "x", normalize)
    n = x.shape[0]
    if block_size is None:
        block = max(1, _BLOCK_ELEMENTS // n)
    else:
        if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) or block_size < 1:
            raise ValueError(f"block_size must be a positive integer, got {block_size!r}")
        block = int(block_size)
    sq = x.square().sum(dim=1)
    cols = torch.arange(n, device=x.device)
    parts = []
    for start in range(0, n - 1, block):
        stop = min(start + block, n - 1)  # the last row has no partner j > i
        d2 = (sq[start:stop, None] + sq[None, :] - 2.0 * x[start:stop] @ x.T).clamp_min_(0.0)
        rows = torch.arange(start, stop, device=x.device)
        logits = (-t * d2).masked_fill_(cols[None, :] <= rows[:, None], float("-inf"))
        parts.append(torch.logsumexp(logits.reshape(-1), dim=0))
    total = torch.logsumexp(torch.stack(parts), dim=0)
    return float(total) - math.log(n * (n - 1) / 2.0)


@declare(x=Data("x", scale=_IF_NORMALIZED), labels=Data("labels"), normalize=Flag())
def tolerance(x: Any, labels: Any, *, normalize: bool = True) -> float:
    """Tolerance to semantically similar samples (Wang & Liu 2021, "Understanding the behaviour of
    contrastive loss", CVPR): mean cosine similarity of pairs of samples of the same class.

    ``T = sum_c sum_{i != j in c} s_i . s_j / sum_c n_c (n_c - 1)`` with ``s_i = x_i / ||x_i||``: the
    average over all ordered pairs of *distinct* samples sharing a label (self-pairs, whose similarity is
    1, are excluded). The paper writes ``T = E_{x,y}[(s(x)^T s(y)) I(l(x) = l(y))]``; we read the
    expectation as conditional on the pair sharing a class (otherwise the value would scale with the
    class frequencies, not with how tight the classes are). Larger classes weigh more (pairs are pooled,
    not averaged per class). Computed in ``O(N D)`` from per-class sums:
    ``sum_{i != j in c} s_i . s_j = ||sum_{i in c} s_i||^2 - sum_{i in c} ||s_i||^2``.

    Parameters
    ----------
    x : array or tensor [N, D]
    labels : integer class per row
    normalize : bool
        L2-normalize rows first (default, the paper's definition); ``False`` averages raw inner products.

    Returns
    -------
    float in ``[-1, 1]`` (normalized): 1 when every class collapses to a point.

    Raises
    ------
    ValueError
        No class with at least 2 samples, NaN/Inf, mismatched lengths, an all-zero row.

    Examples
    --------
    >>> import numpy as np
    >>> z = np.array([[1.0, 0], [1, 1], [0, 1], [0, 2]])
    >>> round(tolerance(z, [0, 0, 1, 1]), 4)         # mean same-class cosine: (cos 45 deg + 1) / 2
    0.8536
    """
    normalize = _flag(normalize, "normalize")
    x = _normalized(as_2d_tensor(x, "x", min_rows=2), "x", normalize)
    y = check_labels(labels, "labels", min_classes=1)
    if len(y) != x.shape[0]:
        raise ValueError(f"mismatched number of samples: x has {x.shape[0]} rows, labels has {len(y)}")
    _, inv = np.unique(y, return_inverse=True)
    inv_t = torch.as_tensor(inv, dtype=torch.long, device=x.device)
    counts = torch.bincount(inv_t).to(torch.float64)
    pairs = float((counts * (counts - 1)).sum())
    if pairs == 0:
        raise ValueError("tolerance needs a class with 2 or more samples of x; every class in labels has one")
    sums = torch.zeros((counts.shape[0], x.shape[1]), dtype=x.dtype, device=x.device).index_add_(0, inv_t, x)
    self_sim = x.square().sum()
    return float((sums.square().sum() - self_sim) / pairs)

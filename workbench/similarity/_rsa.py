"""Representational similarity analysis (RSA): compare two representations through their dissimilarity matrices.

Definitions
-----------
RSA (Kriegeskorte, Mur & Bandettini 2008, "Representational similarity analysis - connecting the branches of
systems neuroscience", Front. Syst. Neurosci. 2:4) summarises a representation ``X`` [N, p] of ``N`` examples by
its representational dissimilarity matrix (RDM) ``D`` [N, N], ``D_ij = d(x_i, x_j)``, and compares two
representations of the same examples by correlating the ``M = N (N - 1) / 2`` entries above the diagonals of
their RDMs. Dissimilarities (:func:`rdm`, ``x_i`` = row ``i``, ``m_i`` = mean of its ``p`` features)::

    "euclidean"    ||x_i - x_j||_2
    "sqeuclidean"  ||x_i - x_j||_2^2
    "correlation"  1 - r(x_i, x_j) = 1 - <x_i - m_i, x_j - m_j> / (||x_i - m_i|| ||x_j - m_j||)
                   (Pearson r between the two examples' feature vectors; Kriegeskorte et al. 2008's choice)
    "cosine"       1 - <x_i, x_j> / (||x_i|| ||x_j||)

Comparisons of two RDMs (:func:`rsa`), on the condensed upper triangles ``a, b`` unless stated:

* ``"spearman"`` - Pearson correlation of the ranks of ``a`` and ``b``, tied values getting their average rank
  (Spearman's rho with the usual tie correction, as ``scipy.stats.spearmanr``); Kriegeskorte et al.'s default.
* ``"pearson"`` - Pearson correlation of ``a`` and ``b``.
* ``"kendall"`` - Kendall's tau-b (ties in either vector corrected), computed by ``scipy.stats.kendalltau`` on
  the CPU in O(M log M); the only comparison that leaves torch and the inputs' device.
* ``"centered-cosine"`` - cosine similarity of the doubly centered *full* RDMs, diagonal included:
  ``<H D H, H E H>_F / (||H D H||_F ||H E H||_F)`` with ``H = I - 11^T / N``.

RSA and linear CKA
------------------
Linear CKA (Kornblith et al. 2019, "Similarity of neural network representations revisited", ICML, Sec. 3 and
their discussion of RSA; worked out for RDMs by Williams 2024, "Equivalence between representational
similarity analysis, centered kernel alignment, and canonical correlations analysis", UniReps workshop) is the
cosine similarity of the centered linear Gram matrices, ``<HKH, HLH>_F / (||HKH||_F ||HLH||_F)`` with
``K = X X^T``. The squared-Euclidean RDM is ``D = diag(K) 1^T + 1 diag(K)^T - 2K``; ``H`` annihilates the two
rank-one terms, so ``H D H = -2 H K H`` and therefore, exactly,

    ``rsa(X, Y, metric="sqeuclidean", compare="centered-cosine") == cka(X, Y)``  (linear kernel, biased HSIC).

The identity needs all three choices: squared (not plain) Euclidean distances, double centering of the full
``N x N`` matrix, and an uncentered cosine over all ``N^2`` entries including the zero diagonal. Classic RSA
(upper triangle only, Pearson/Spearman, which centers the *vector* of pairs rather than the matrix) is a
different number. With ``metric="euclidean"`` the same comparison is the squared sample distance correlation
``dCor_n^2`` of Szekely, Rizzo & Bakirov 2007 (Ann. Stat. 35(6), V-statistic form, Eq. 2.8 ff.).

Numerics
--------
RDMs are built from blocks of Gram products (GEMMs) in float64, never by looping over pairs. For the Euclidean
metrics each column is first shifted by its mean rounded to a power-of-two grid no finer than the column's
standard deviation: this removes large offsets (the cancellation in ``|a|^2 + |b|^2 - 2<a, b>``) while keeping
integer and dyadic data (one-hot codes, counts) exactly representable, so equal distances stay *exactly* equal
and rank comparisons see the true ties. Exact duplicate rows are detected (``torch.unique``) and get
dissimilarity exactly 0; distances are computed once per distinct row, and when there are at most 2048 distinct
rows the RDM between them is symmetrised, so tied pairs of duplicates are bitwise equal. Rounding can still
break ties between different rows whose dissimilarities are mathematically equal for ``"correlation"`` and
``"cosine"`` (as in ``scipy.spatial.distance.pdist``).

Memory: a condensed RDM holds ``N (N - 1) / 2`` float64 values (0.4 GB at ``N = 10000``). :func:`rsa` peaks at
about 3 such vectors for Pearson, 7 for Spearman (sorting), 4 full ``N x N`` matrices for ``"centered-cosine"``,
plus ~0.3 GB of GEMM tiles. ``max_n`` (default 10000: about 3 GB for Spearman) turns an accidental huge request
into a clear error; subsample the examples (the same subset for every layer) or raise ``max_n`` knowingly.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from .._validation import Data, Flag, Interval, Options, as_2d_tensor, check_choice, declare
from ._pairs import OUTPUTS, pairwise, same_device

__all__ = ["rdm", "rsa", "rsa_matrix", "METRICS", "COMPARISONS"]

METRICS = ("euclidean", "sqeuclidean", "correlation", "cosine")
COMPARISONS = ("spearman", "pearson", "kendall", "centered-cosine")
_MAX_N = 10000
_SMALL_UNIQUE = 2048  # distinct rows up to which the distinct-row RDM is built whole and symmetrised
_TILE = 1 << 23  # entries per [block, N] tile (64 MiB of float64)
_CONST_TOL = 1e-12


# ------------------------------------------------------------------------------------------ RDM construction
@dataclass
class _Geometry:
    """One representation reduced to what its RDM needs: transformed distinct rows and the row -> distinct map."""

    name: str
    metric: str
    n: int
    rows: torch.Tensor  # [U, p] distinct rows: shifted (euclidean), unit rows (cosine) or centered unit rows
    sq: torch.Tensor | None  # [U] squared norms of ``rows`` (euclidean metrics)
    inverse: torch.Tensor  # [N] row i of the input is distinct row inverse[i]
    small: torch.Tensor | None  # [U, U] symmetric RDM between distinct rows when U <= _SMALL_UNIQUE


def _grid_shift(x: torch.Tensor) -> torch.Tensor:
    """Subtract from each column its mean rounded to a multiple of 2^floor(log2 std) (exact for dyadic data)."""
    const = x.amax(dim=0) == x.amin(dim=0)
    mean = x.mean(dim=0)
    std = x.std(dim=0, correction=0)
    step = torch.exp2(torch.floor(torch.log2(torch.where(std > 0, std, torch.ones_like(std)))))
    shift = torch.where(const | ~(std > 0), x[0], torch.round(mean / step) * step)
    return x - shift


def _first_row(inverse: torch.Tensor, u: int) -> int:
    return int(torch.nonzero(inverse == u)[0, 0])


def _geometry(x: torch.Tensor, name: str, metric: str) -> _Geometry:
    n, p = x.shape
    uniq, inverse = torch.unique(x, dim=0, return_inverse=True)
    sq = None
    if metric in ("euclidean", "sqeuclidean"):
        rows = _grid_shift(uniq)
        sq = (rows * rows).sum(dim=1)
    elif metric == "correlation":
        if p < 2:
            raise ValueError(f"{name} has a single feature: the correlation distance between two examples needs "
                             "at least 2 features; use metric='euclidean'")
        flat = uniq.amax(dim=1) == uniq.amin(dim=1)
        if bool(flat.any()):
            bad = _first_row(inverse, int(torch.nonzero(flat)[0, 0]))
            raise ValueError(f"{name}: example {bad} has the same value in every feature, so its Pearson "
                             "correlation with other examples (correlation distance) is undefined; drop such "
                             "examples or use metric='euclidean'")
        rows = uniq - uniq.mean(dim=1, keepdim=True)
        rows = rows / torch.linalg.vector_norm(rows, dim=1, keepdim=True)
    else:  # cosine
        norms = torch.linalg.vector_norm(uniq, dim=1, keepdim=True)
        if bool((norms == 0).any()):
            bad = _first_row(inverse, int(torch.nonzero(norms[:, 0] == 0)[0, 0]))
            raise ValueError(f"{name}: example {bad} is all zeros, so its cosine distance is undefined; drop "
                             "such examples or use metric='euclidean'")
        rows = uniq / norms
    g = _Geometry(name, metric, n, rows, sq, inverse, None)
    if rows.shape[0] <= _SMALL_UNIQUE:
        full = _distances(g, rows, sq)
        upper = torch.triu(full, diagonal=1)
        g.small = upper + upper.T  # bitwise symmetric, zero diagonal
    return g


def _distances(g: _Geometry, a: torch.Tensor, a_sq: torch.Tensor | None, cols: torch.Tensor | None = None,
               cols_sq: torch.Tensor | None = None) -> torch.Tensor:
    """Dissimilarities between the (transformed) rows ``a`` and ``cols`` (default: all distinct rows)."""
    cols = g.rows if cols is None else cols
    d = a @ cols.T  # turned into dissimilarities in place: one tile of memory
    if g.metric in ("euclidean", "sqeuclidean"):
        cols_sq = g.sq if cols_sq is None else cols_sq
        d.mul_(-2.0).add_(a_sq[:, None]).add_(cols_sq[None, :]).clamp_min_(0.0)
        return d.sqrt_() if g.metric == "euclidean" else d
    return d.neg_().add_(1.0).clamp_(0.0, 2.0)


def _block_rows(n: int) -> int:
    return max(1, min(n, _TILE // max(n, 1)))


def _upper_tiles(g: _Geometry):
    """Yield ``(i0, i1, tile)`` with ``tile[r, c] = D[i0 + r, i0 + c]`` for rows ``i0:i1`` and columns ``i0:N``."""
    n, inv = g.n, g.inverse
    step = _block_rows(n)
    full_rows = None
    for i0 in range(0, n, step):
        i1 = min(n, i0 + step)
        if g.small is not None:
            tile = g.small[inv[i0:i1]][:, inv[i0:]]
        else:
            if full_rows is None:
                full_rows = g.rows[inv]
                full_sq = None if g.sq is None else g.sq[inv]
            a_sq = None if g.sq is None else full_sq[i0:i1]
            c_sq = None if g.sq is None else full_sq[i0:]
            tile = _distances(g, full_rows[i0:i1], a_sq, full_rows[i0:], c_sq)
            if g.rows.shape[0] < n:  # duplicates (and the diagonal): exactly 0
                tile[inv[i0:i1][:, None] == inv[i0:][None, :]] = 0.0
            else:
                r = torch.arange(i1 - i0, device=tile.device)
                tile[r, r] = 0.0
        yield i0, i1, tile


def _condensed(g: _Geometry) -> torch.Tensor:
    n = g.n
    out = torch.empty(n * (n - 1) // 2, dtype=torch.float64, device=g.rows.device)
    pos = 0
    for i0, i1, tile in _upper_tiles(g):
        r = torch.arange(i1 - i0, device=tile.device)
        c = torch.arange(n - i0, device=tile.device)
        vals = tile[c[None, :] > r[:, None]]  # row-major: the scipy ``pdist`` order
        out[pos:pos + vals.numel()] = vals
        pos += vals.numel()
    return out


def _square(g: _Geometry) -> torch.Tensor:
    n = g.n
    out = torch.empty(n, n, dtype=torch.float64, device=g.rows.device)
    for i0, i1, tile in _upper_tiles(g):
        out[i0:i1, i0:] = tile
        blk = out[i0:i1, i0:i1]
        upper = torch.triu(blk, diagonal=1)
        out[i0:i1, i0:i1] = upper + upper.T  # zero diagonal, lower triangle mirrored from the upper one
        if i0:
            out[i0:i1, :i0] = out[:i0, i0:i1].T
    return out


def _check_size(n: int, name: str, max_n: int, square: bool = False) -> None:
    if n > max_n:
        entries = n * n if square else n * (n - 1) // 2
        raise ValueError(f"{name} has N={n} examples: its RDM holds {entries:,} float64 values "
                         f"({entries * 8 / 2**30:.1f} GiB, a few times that while ranking), above max_n={max_n}. "
                         "Compute RSA on a random subset of examples (the same rows for every representation), "
                         f"or pass max_n={n} if you have the memory")


def _check_metric_args(metric: str, max_n: Any) -> int:
    check_choice(metric, METRICS, "metric")
    if isinstance(max_n, bool) or not isinstance(max_n, numbers.Integral):
        raise TypeError(f"max_n must be an integer, got {type(max_n).__name__}")
    if max_n < 3:
        raise ValueError(f"max_n must be >= 3, got {max_n}")
    return int(max_n)


@declare(x=Data("x", scale=lambda a: "invariant" if a["metric"] in ("correlation", "cosine") else "refuse"),
         metric=Options(*METRICS), square=Flag(), max_n=Interval(int, 3))
def rdm(x: Any, *, metric: str = "correlation", square: bool = False, max_n: int = _MAX_N) -> torch.Tensor:
    """Representational dissimilarity matrix of one representation (Kriegeskorte et al. 2008).

    ``D_ij = d(x_i, x_j)`` between the rows (examples) of ``x`` for the metrics of the module docstring:
    ``"euclidean"`` ``||x_i - x_j||``; ``"sqeuclidean"`` ``||x_i - x_j||^2``; ``"correlation"`` ``1 - r`` with
    ``r`` the Pearson correlation between the two examples' feature vectors (range [0, 2]); ``"cosine"``
    ``1 - cos(x_i, x_j)`` (range [0, 2]). Computed from float64 Gram products (GEMMs) in blocks of rows, on the
    input's device; exact duplicate rows get exactly 0. Same values as ``scipy.spatial.distance.pdist`` with the
    same metric name (up to rounding). Note that rsatoolbox's ``"euclidean"`` RDM is ``sqeuclidean / p``.

    Parameters
    ----------
    x : array or tensor [N, p]
        Rows are examples; ``N >= 2``.
    metric : {"correlation", "euclidean", "sqeuclidean", "cosine"}
    square : bool
        False (default): the condensed upper triangle, length ``N (N - 1) / 2``, ordered like
        ``scipy.spatial.distance.pdist`` (pairs ``(0, 1), (0, 2), ..., (1, 2), ...``). True: the symmetric
        ``N x N`` matrix with a zero diagonal.
    max_n : int
        Refuse ``N > max_n`` (memory guard, default 10000); see the module docstring.

    Returns
    -------
    torch.Tensor
        float64 on ``x``'s device (``.cpu().numpy()`` for numpy).

    Raises
    ------
    ValueError
        NaN/Inf, ``N < 2``, ``N > max_n``; ``"correlation"`` with a single feature or an example whose features
        are all equal; ``"cosine"`` with an all-zero example (the distance is undefined there).

    Examples
    --------
    >>> import numpy as np
    >>> rdm(np.array([[1.0, 2, 3], [2, 4, 6], [3, 2, 1]])).numpy().round(6)   # 1 - r for pairs (0,1), (0,2), (1,2)
    array([0., 2., 2.])
    """
    max_n = _check_metric_args(metric, max_n)
    if not isinstance(square, (bool, np.bool_)):
        raise TypeError(f"square must be True or False, got {type(square).__name__}")
    t = as_2d_tensor(x, "x", min_rows=2)
    _check_size(t.shape[0], "x", max_n, square=bool(square))
    g = _geometry(t, "x", metric)
    return _square(g) if square else _condensed(g)


# ------------------------------------------------------------------------------------------- comparisons
def _average_ranks(v: torch.Tensor, overwrite: bool = False) -> torch.Tensor:
    """1-based ranks of a 1-D float64 tensor, tied values sharing the mean of their ranks (``scipy.stats.rankdata``).

    With ``overwrite`` the sorted values, then the sorted ranks, are written into ``v``'s memory (``v`` is
    destroyed), which keeps the peak at about three vectors of ``v``'s size.
    """
    m = v.numel()
    order = torch.empty(m, dtype=torch.long, device=v.device)
    buf = v if overwrite else torch.empty_like(v)
    torch.sort(v, out=(buf, order))
    new = torch.ones(m, dtype=torch.bool, device=v.device)
    torch.ne(buf[1:], buf[:-1], out=new[1:])  # True where a run of equal values starts
    starts = torch.nonzero(new)[:, 0]  # 0-based first position of each run
    if starts.numel() == m:  # no ties
        del starts, new
        torch.arange(1, m + 1, out=buf)
    else:
        counts = torch.diff(starts, append=torch.tensor([m], device=v.device))
        mean_rank = starts.to(torch.float64) + (counts.to(torch.float64) + 1.0) / 2.0
        del counts, starts
        run = torch.cumsum(new, 0)
        run -= 1
        del new
        torch.index_select(mean_rank, 0, run, out=buf)
        del run
    ranks = torch.empty_like(buf)
    ranks[order] = buf
    return ranks


@dataclass
class _Prepared:
    name: str
    n: int
    vec: Any  # unit centered vector (pearson/spearman), numpy vector (kendall) or centered square RDM
    norm: float = 1.0


def _check_not_constant(d: torch.Tensor, name: str, metric: str) -> None:
    """Correlations of an RDM are undefined when all its off-diagonal dissimilarities are equal."""
    lo, hi = float(d.min()), float(d.max())
    scale = max(abs(lo), abs(hi)) if metric in ("euclidean", "sqeuclidean") else 1.0
    if hi - lo <= _CONST_TOL * scale:
        what = ("all zero: the representation is the same for every example" if hi == 0.0
                else f"constant ({hi:.6g}): every pair of examples is equally dissimilar")
        raise ValueError(f"{name}: the {metric} RDM is {what}, so its correlation with another RDM is undefined; "
                         "drop this representation (or check the activations), or use "
                         "compare='centered-cosine' for an equidistant but non-constant representation")


def _prepare(x: torch.Tensor, name: str, metric: str, compare: str, max_n: int) -> _Prepared:
    n = x.shape[0]
    if n < 3:
        raise ValueError(f"{name} has N={n} examples: RSA correlates the N(N-1)/2 pairwise dissimilarities, "
                         "which needs N >= 3 (and many more for a meaningful value)")
    _check_size(n, name, max_n, square=compare == "centered-cosine")
    g = _geometry(x, name, metric)
    if compare == "centered-cosine":
        d = _square(g)
        del g
        if not float(d.abs().max()) > (0.0 if metric in ("euclidean", "sqeuclidean") else _CONST_TOL):
            raise ValueError(f"{name}: the {metric} RDM is all zero (the representation is the same for every "
                             "example), so its centered cosine is undefined; drop this representation")
        row = d.mean(dim=1, keepdim=True)
        d.sub_(row).sub_(row.T).add_(row.mean())
        norm = float(torch.linalg.vector_norm(d))
        if not norm > 0.0:
            raise ValueError(f"{name}: the doubly centered {metric} RDM is zero, so the centered cosine is "
                             "undefined; drop this representation")
        return _Prepared(name, n, d, norm)
    v = _condensed(g)
    del g
    _check_not_constant(v, name, metric)
    if compare == "kendall":
        return _Prepared(name, n, v.cpu().numpy())
    if compare == "spearman":
        v = _average_ranks(v, overwrite=True)
    v.sub_(v.mean())
    return _Prepared(name, n, v.div_(torch.linalg.vector_norm(v)))


def _compare(a: _Prepared, b: _Prepared, compare: str) -> float:
    if compare == "kendall":
        from scipy.stats import kendalltau

        return float(kendalltau(a.vec, b.vec).statistic)
    if compare == "centered-cosine":
        return float(torch.dot(a.vec.reshape(-1), b.vec.reshape(-1))) / (a.norm * b.norm)
    return min(1.0, max(-1.0, float(torch.dot(a.vec, b.vec))))


def _measure_name(metric: str, compare: str) -> str:
    return f"rsa_{metric}_{compare.replace('-', '_')}"


@declare(a=Data("x", scale="invariant"), b=Data("x", scale="invariant"), metric=Options(*METRICS),
         compare=Options(*COMPARISONS), max_n=Interval(int, 3))
def rsa(a: Any, b: Any, *, metric: str = "correlation", compare: str = "spearman", max_n: int = _MAX_N) -> float:
    """Representational similarity analysis: correlation between the RDMs of two representations.

    ``rsa = corr(triu(RDM_X), triu(RDM_Y))`` (Kriegeskorte et al. 2008): the two ``N x N`` dissimilarity
    matrices (:func:`rdm`, same ``metric`` for both) are compared over their ``N (N - 1) / 2`` upper-triangle
    entries by Spearman's rho (average ranks for ties), Pearson's r or Kendall's tau-b; or, with
    ``compare="centered-cosine"``, by the cosine of the doubly centered full matrices. With
    ``metric="sqeuclidean", compare="centered-cosine"`` this *equals* linear CKA (Kornblith et al. 2019;
    derivation in the module docstring); with ``metric="euclidean"`` it is the squared distance correlation.
    Classic RSA values (Spearman/Pearson on the triangle) are *not* CKA values and are usually lower.

    Parameters
    ----------
    a, b : array or tensor [N, p] and [N, q]
        The representations ``X`` and ``Y``: the same ``N >= 3`` examples in the same order; widths may differ.
    metric : {"correlation", "euclidean", "sqeuclidean", "cosine"}
        RDM dissimilarity; default correlation distance ``1 - r`` (Kriegeskorte et al. 2008).
    compare : {"spearman", "pearson", "kendall", "centered-cosine"}
        Default Spearman. "kendall" runs ``scipy.stats.kendalltau`` (tau-b, O(M log M)) on the CPU.
    max_n : int
        Refuse ``N > max_n`` (memory guard, default 10000; see the module docstring for the memory needed).

    Returns
    -------
    float
        In [-1, 1]; ``rsa(x, x) = 1``. Invariant to isotropic scaling of either input and to what the metric
        ignores: rotations and translations of the features (euclidean metrics), per-example positive scaling
        (cosine), per-example positive affine rescaling ``a_i x_i + b_i`` (correlation).

    Raises
    ------
    ValueError
        ``N < 3``, different ``N``, ``N > max_n``, NaN/Inf, an RDM whose off-diagonal entries are all equal (e.g. a
        constant representation: correlation undefined, never NaN), the metric-specific cases of :func:`rdm`.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(50, 6))
    >>> round(rsa(x, 2 * x + 1), 6)      # correlation distance ignores a positive affine rescaling: same RDM
    1.0
    """
    max_n = _check_metric_args(metric, max_n)
    check_choice(compare, COMPARISONS, "compare")
    x = as_2d_tensor(a, "a", min_rows=1)
    y = as_2d_tensor(b, "b", min_rows=1)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"mismatched number of samples: a has {x.shape[0]}, b has {y.shape[0]}; "
                         "pass representations of the same examples (same rows, same order)")
    x, y = same_device([x, y])
    pa = _prepare(x, "a", metric, compare, max_n)
    pb = _prepare(y, "b", metric, compare, max_n)
    return _compare(pa, pb, compare)


@declare(a=Data("layers", scale="invariant"), b=Data("layers", none=True, scale="invariant"), metric=Options(*METRICS),
         compare=Options(*COMPARISONS), output=Options(*OUTPUTS), max_n=Interval(int, 3))
def rsa_matrix(a: Any, b: Any = None, *, metric: str = "correlation", compare: str = "spearman",
               output: str = "tidy", max_n: int = _MAX_N) -> pd.DataFrame:
    """:func:`rsa` between every layer of ``a`` and every layer of ``b`` (``b=None``: ``a`` against itself).

    Same definition as :func:`rsa`. Each layer's RDM is computed once (and ranked once for Spearman); only the
    comparisons run per pair. Memory: one condensed RDM per layer (``4 N (N - 1)`` bytes; ``8 N^2`` for
    ``compare="centered-cosine"``), all held at once.

    Parameters
    ----------
    a, b : array or tensor [N, d] (the one layer ``"features"``), ``Activations``, or mapping layer name ->
        array or tensor [N, d_layer]
        All layers hold the same ``N >= 3`` examples in the same order.
    metric, compare, max_n
        As in :func:`rsa`.
    output : {"tidy", "matrix"}
        "tidy": the results schema, one row per pair (``layer``, ``layer_index``, ``layer_b``,
        ``layer_index_b``; as :func:`~workbench.similarity.cka_matrix`) with ``measure = "rsa_<metric>_<compare>"``
        (e.g. "rsa_correlation_spearman", "rsa_sqeuclidean_centered_cosine"); "matrix": a DataFrame indexed by
        ``a``'s layers (``layer``) with ``b``'s as columns (``layer_b``).

    Returns
    -------
    pandas.DataFrame

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(50, 6))
    >>> rsa_matrix({"x": x, "2x+1": 2 * x + 1}, output="matrix").to_numpy().round(6)
    array([[1., 1.],
           [1., 1.]])
    """
    max_n = _check_metric_args(metric, max_n)
    check_choice(compare, COMPARISONS, "compare")
    return pairwise(a, b, lambda x, name: _prepare(x, name, metric, compare, max_n),
                    lambda pa, pb: _compare(pa, pb, compare), _measure_name(metric, compare),
                    output=output, symmetric=True, min_rows=1)

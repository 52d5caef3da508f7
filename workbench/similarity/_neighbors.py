"""Neighbourhood agreement between two representations of the same examples.

Definitions
-----------
``N_k^X(i)`` is the set of the ``k`` nearest neighbours of example ``i`` in representation ``X`` [N, p], among the
``N - 1`` *other* examples (``i`` itself is never its own neighbour), under

* ``"cosine"`` - cosine distance ``1 - <x_i, x_j> / (||x_i|| ||x_j||)``, i.e. the inner product of L2-normalised
  features, the setting of Huh et al. 2024;
* ``"euclidean"`` - ``||x_i - x_j||_2``.

* Mutual k-NN alignment (Huh, Cheung, Wang & Isola 2024, "The Platonic representation hypothesis", ICML: their
  "mutual nearest-neighbor" kernel-alignment metric, k = 10, on L2-normalised features, self excluded, as in their
  reference code)::

      mutual_knn(X, Y) = (1/N) sum_i |N_k^X(i) ∩ N_k^Y(i)| / k

* k-NN Jaccard similarity (Klabunde, Schumacher, Strohmaier & Lemmerich 2023, "Similarity of neural network
  models: a survey of functional and representational measures", Sec. on neighbourhood-based measures)::

      jaccard_knn(X, Y) = (1/N) sum_i |N_k^X(i) ∩ N_k^Y(i)| / |N_k^X(i) ∪ N_k^Y(i)|

Both lie in [0, 1], equal 1 for identical neighbourhoods, and are invariant to anything that preserves every
neighbour ranking: rotations and isotropic scaling (both metrics), translations (euclidean), per-example positive
scaling (cosine). For independent representations ``E|N^X ∩ N^Y| = k^2 / (N - 1)``, so ``mutual_knn ≈ k / (N - 1)``:
compare values at the same ``k`` and ``N`` only. Per example, ``jaccard = c / (2k - c)`` with ``c`` the overlap,
so ``jaccard_knn <= mutual_knn``. Namesakes: Huh et al.'s ``cycle_knn``, ``lcs_knn`` and CKNNA are different
measures; "mutual k-NN graph" (both points in each other's lists) is an unrelated construction.

Neighbour search and ties
-------------------------
:func:`knn_indices` processes the queries in blocks of rows: one ``[block, N]`` score tile from a float64 GEMM,
then a top-k per row, so memory is ``O(block * N + N * k)`` and no ``N x N`` matrix or full argsort is ever
formed. Ties are broken deterministically: neighbours are ordered by increasing distance and, among exactly
equal distances, by increasing index (``numpy.argsort(..., kind="stable")`` on the distance matrix gives the same
lists). Exact duplicate rows are detected first (``torch.unique``): a duplicate of ``i`` is a neighbour of ``i`` at
distance exactly 0 (only ``i`` itself is excluded), and the scores of duplicates are bitwise equal, so their order
is by index. Distances that are equal only mathematically (e.g. points on a lattice) are exactly equal for
integer / dyadic data under ``"euclidean"`` (the column shift keeps them exact, see
:mod:`workbench.similarity._rsa`); otherwise rounding may order them either way, as in any floating-point k-NN.
Implementations that take ``torch.topk``/``argsort`` order as is (e.g. Huh et al.'s reference code) agree with
this one on tie-free data and may differ only where the k-th and (k+1)-th distances tie.
"""
from __future__ import annotations

import numbers
from typing import Any

import pandas as pd
import torch

from .._validation import Data, Interval, Options, as_2d_tensor, check_choice, declare
from ._pairs import OUTPUTS, pairwise, same_device
from ._rsa import _grid_shift

__all__ = ["knn_indices", "mutual_knn", "jaccard_knn", "mutual_knn_matrix", "jaccard_knn_matrix", "KNN_METRICS"]

KNN_METRICS = ("cosine", "euclidean")
_TILE = 1 << 23  # score entries per [block, N] tile (64 MiB of float64)
_OVERLAP_TILE = 1 << 24  # booleans per [rows, k, k] overlap comparison
_K = Interval(int, 1)  # the declared rule of every ``k`` (k <= N - 1 is checked against the data)
_BLOCK = Interval(int, 1, none=True)
#: neighbourhoods do not depend on the scale of the data: extreme magnitudes are rescaled exactly
_INVARIANT_X = Data("x", scale="invariant")
_INVARIANT_LAYERS = Data("layers", scale="invariant")
_INVARIANT_LAYERS_OR_NONE = Data("layers", none=True, scale="invariant")


def _check_k(k: Any, n: int, name: str) -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise TypeError(f"k must be an integer >= 1, got {type(k).__name__}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if k >= n:
        raise ValueError(f"k={k} neighbours requested but {name} has N={n} examples, i.e. only {n - 1} other "
                         f"examples per query; use k <= {n - 1} (k much smaller than N for a meaningful value)")
    return int(k)


def _check_block(block_size: Any) -> int | None:
    if block_size is None:
        return None
    if isinstance(block_size, bool) or not isinstance(block_size, numbers.Integral):
        raise TypeError(f"block_size must be a positive integer or None, got {type(block_size).__name__}")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1 (rows of queries per block), got {block_size}")
    return int(block_size)


def _knn(x: torch.Tensor, name: str, k: int, metric: str, block_size: int | None) -> torch.Tensor:
    n = x.shape[0]
    uniq, inv = torch.unique(x, dim=0, return_inverse=True)
    dup = uniq.shape[0] < n
    if not dup:  # no duplicate rows: work in the input order and skip the gather below
        uniq, inv = x, None
    if metric == "cosine":
        norms = torch.linalg.vector_norm(uniq, dim=1, keepdim=True)
        if bool((norms == 0).any()):
            u = int(torch.nonzero(norms[:, 0] == 0)[0, 0])
            bad = u if inv is None else int(torch.nonzero(inv == u)[0, 0])
            raise ValueError(f"{name}: example {bad} is all zeros, so its cosine distance to other examples is "
                             "undefined; drop such examples or use metric='euclidean'")
        rows = uniq / norms
        bias = None
    else:
        rows = _grid_shift(uniq)
        bias = -(rows * rows).sum(dim=1)  # score 2<a, b> - |b|^2 = |a|^2 - |a - b|^2: larger is nearer
    rows_t = rows.T
    step = block_size or max(1, min(n, _TILE // n))
    out = torch.empty(n, k, dtype=torch.long, device=x.device)
    for i0 in range(0, n, step):
        i1 = min(n, i0 + step)
        a = rows[i0:i1] if inv is None else rows[inv[i0:i1]]
        s = a @ rows_t if bias is None else torch.addmm(bias, a, rows_t, alpha=2.0)  # [b, U]
        if inv is not None:
            rid = inv[i0:i1]
            s = s[:, inv]  # [b, N]: duplicates get bitwise-equal scores
            s[rid[:, None] == inv[None, :]] = torch.inf  # duplicates of the query: distance exactly 0
        r = torch.arange(i1 - i0, device=x.device)
        s[r, i0 + r] = -torch.inf  # the query itself is never its own neighbour
        vals, idx = torch.topk(s, k + 1, dim=1, sorted=True)  # k + 1 <= N; the query sorts last
        idx = idx[:, :k]
        tied = vals[:, k - 1] == vals[:, k]  # the k-th value continues past the cut: which ones is arbitrary
        if bool(tied.any()):
            rows_tied = torch.nonzero(tied)[:, 0]
            st = s[rows_tied]
            kth = vals[rows_tied, k - 1 : k]
            above, at = st > kth, st == kth
            need = k - above.sum(dim=1, keepdim=True)
            chosen = above | (at & (torch.cumsum(at, dim=1) <= need))  # fill with the lowest tied indices
            idx[rows_tied] = torch.nonzero(chosen)[:, 1].reshape(-1, k)
        idx = torch.sort(idx, dim=1).values  # then by score, stable: equal scores keep increasing index
        order = torch.sort(s.gather(1, idx), dim=1, descending=True, stable=True).indices
        out[i0:i1] = idx.gather(1, order)
        del s  # free this tile before the next one is allocated
    return out


@declare(x=_INVARIANT_X, k=_K, metric=Options(*KNN_METRICS), block_size=_BLOCK)
def knn_indices(x: Any, *, k: int = 10, metric: str = "cosine", block_size: int | None = None) -> torch.Tensor:
    """Indices of each example's ``k`` nearest neighbours among the other examples.

    Row ``i`` lists ``N_k(i)``: the ``k`` examples ``j != i`` with the smallest ``"cosine"`` distance
    ``1 - cos(x_i, x_j)`` or ``"euclidean"`` distance ``||x_i - x_j||``, nearest first, exactly equal distances in
    increasing index order (see the module docstring for ties and duplicates). The shared primitive of
    :func:`mutual_knn` and :func:`jaccard_knn`, also usable for k-NN probes.

    Computed in blocks of query rows: a float64 ``[block, N]`` GEMM tile and a per-row top-k, on the input's
    device; peak memory about ``2 * 8 * block * N`` bytes (one score tile, a second one if rows are duplicated)
    plus the ``N x k`` result.

    Parameters
    ----------
    x : array or tensor [N, p]
    k : int
        ``1 <= k <= N - 1``.
    metric : {"cosine", "euclidean"}
    block_size : int or None
        Query rows per block; None picks ``2^23 / N`` rows (64 MiB score tile). Does not change the result.

    Returns
    -------
    torch.Tensor
        int64 [N, k] on ``x``'s device.

    Raises
    ------
    ValueError
        ``k >= N``, NaN/Inf, an all-zero example with ``metric="cosine"``.

    Examples
    --------
    >>> import numpy as np
    >>> angles = np.deg2rad([0, 10, 30, 70])                    # four points on the unit circle
    >>> knn_indices(np.c_[np.cos(angles), np.sin(angles)], k=1).ravel().tolist()    # nearest other angle
    [1, 0, 1, 2]
    """
    check_choice(metric, KNN_METRICS, "metric")
    block_size = _check_block(block_size)
    t = as_2d_tensor(x, "x", min_rows=2)
    k = _check_k(k, t.shape[0], "x")
    return _knn(t, "x", k, metric, block_size)


def _overlap(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """|a_i ∩ b_i| per row for two [N, k] index lists whose rows hold distinct indices."""
    n, k = a.shape
    step = max(1, _OVERLAP_TILE // (k * k))
    counts = torch.empty(n, dtype=torch.long, device=a.device)
    for i0 in range(0, n, step):
        i1 = min(n, i0 + step)
        counts[i0:i1] = (a[i0:i1, :, None] == b[i0:i1, None, :]).any(dim=2).sum(dim=1)
    return counts


def _mutual(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(_overlap(a, b).sum()) / (a.shape[0] * a.shape[1])


def _jaccard(a: torch.Tensor, b: torch.Tensor) -> float:
    c = _overlap(a, b).to(torch.float64)
    return float((c / (2 * a.shape[1] - c)).mean())


def _pair(a: Any, b: Any, k: Any, metric: str, block_size: Any) -> tuple[torch.Tensor, torch.Tensor]:
    check_choice(metric, KNN_METRICS, "metric")
    block_size = _check_block(block_size)
    x = as_2d_tensor(a, "a", min_rows=2)
    y = as_2d_tensor(b, "b", min_rows=2)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"mismatched number of samples: a has {x.shape[0]}, b has {y.shape[0]}; "
                         "pass representations of the same examples (same rows, same order)")
    k = _check_k(k, x.shape[0], "a")
    x, y = same_device([x, y])
    return _knn(x, "a", k, metric, block_size), _knn(y, "b", k, metric, block_size)


@declare(a=_INVARIANT_X, b=_INVARIANT_X, k=_K, metric=Options(*KNN_METRICS), block_size=_BLOCK)
def mutual_knn(a: Any, b: Any, *, k: int = 10, metric: str = "cosine", block_size: int | None = None) -> float:
    """Mutual k-nearest-neighbour alignment (Huh et al. 2024).

    ``(1/N) sum_i |N_k^X(i) ∩ N_k^Y(i)| / k``: the mean fraction of each example's ``k`` nearest neighbours (self
    excluded) that the two representations share. With ``metric="cosine"`` this is the metric of Huh et al. 2024
    (inner products of L2-normalised features). Range [0, 1]; 1 for identical neighbourhoods; about
    ``k / (N - 1)`` for independent representations (the chance level, which depends on ``k`` and ``N``).

    Parameters
    ----------
    a, b : array or tensor [N, p] and [N, q]
        The representations ``X`` and ``Y``: the same examples in the same order; widths may differ.
    k : int
        Neighbours per example, ``1 <= k <= N - 1`` (Huh et al. use 10).
    metric : {"cosine", "euclidean"}
    block_size : int or None
        Query rows per block of the neighbour search (memory only; see :func:`knn_indices`).

    Returns
    -------
    float

    Raises
    ------
    ValueError
        Different ``N``, ``k >= N``, NaN/Inf, an all-zero example with ``metric="cosine"``.

    Examples
    --------
    >>> import numpy as np
    >>> def on_circle(degrees): return np.c_[np.cos(np.deg2rad(degrees)), np.sin(np.deg2rad(degrees))]
    >>> x, y = on_circle([0, 10, 30, 70]), on_circle([0, 55, 30, 70])      # cosine neighbours = nearest angles
    >>> mutual_knn(x, y, k=2)          # shared 2-NN per point: 2, 1, 2, 2 of 2
    0.875
    """
    na, nb = _pair(a, b, k, metric, block_size)
    return _mutual(na, nb)


@declare(a=_INVARIANT_X, b=_INVARIANT_X, k=_K, metric=Options(*KNN_METRICS), block_size=_BLOCK)
def jaccard_knn(a: Any, b: Any, *, k: int = 10, metric: str = "cosine", block_size: int | None = None) -> float:
    """Mean Jaccard similarity of the two k-NN sets of each example (k-NN Jaccard; Klabunde et al. 2023).

    ``(1/N) sum_i |N_k^X(i) ∩ N_k^Y(i)| / |N_k^X(i) ∪ N_k^Y(i)|``, self excluded from the neighbour sets. With
    overlap ``c`` the per-example value is ``c / (2k - c) <= c / k``, so this is never above :func:`mutual_knn`.
    Range [0, 1]; 1 for identical neighbourhoods.

    Parameters
    ----------
    a, b, k, metric, block_size
        As in :func:`mutual_knn`.

    Returns
    -------
    float

    Examples
    --------
    >>> import numpy as np
    >>> def on_circle(degrees): return np.c_[np.cos(np.deg2rad(degrees)), np.sin(np.deg2rad(degrees))]
    >>> x, y = on_circle([0, 10, 30, 70]), on_circle([0, 55, 30, 70])      # cosine neighbours = nearest angles
    >>> round(jaccard_knn(x, y, k=2), 4)    # |intersection| / |union| per point: 1, 1/3, 1, 1
    0.8333
    """
    na, nb = _pair(a, b, k, metric, block_size)
    return _jaccard(na, nb)


def _matrix(a, b, k, metric, block_size, output, name, fn) -> pd.DataFrame:
    check_choice(metric, KNN_METRICS, "metric")
    block_size = _check_block(block_size)

    def prepare(x: torch.Tensor, layer: str) -> torch.Tensor:
        return _knn(x, layer, _check_k(k, x.shape[0], layer), metric, block_size)

    return pairwise(a, b, prepare, fn, f"{name}_{metric}_k{k}", output=output, symmetric=True, min_rows=2)


@declare(a=_INVARIANT_LAYERS, b=_INVARIANT_LAYERS_OR_NONE, k=_K, metric=Options(*KNN_METRICS), block_size=_BLOCK,
         output=Options(*OUTPUTS))
def mutual_knn_matrix(a: Any, b: Any = None, *, k: int = 10, metric: str = "cosine",
                      block_size: int | None = None, output: str = "tidy") -> pd.DataFrame:
    """:func:`mutual_knn` between every layer of ``a`` and every layer of ``b`` (``b=None``: ``a`` with itself).

    Each layer's k-NN lists are computed once (``N x k`` integers kept per layer); each pair then costs
    ``O(N k^2)`` comparisons.

    Parameters
    ----------
    a, b : array or tensor [N, d] (the one layer ``"features"``), ``Activations``, or mapping layer name ->
        array or tensor [N, d_layer]
        All layers hold the same examples in the same order.
    k, metric, block_size
        As in :func:`mutual_knn`.
    output : {"tidy", "matrix"}
        "tidy": the results schema, one row per pair (``layer``, ``layer_index``, ``layer_b``,
        ``layer_index_b``; as :func:`~workbench.similarity.cka_matrix`) with
        ``measure = "mutual_knn_<metric>_k<k>"``; "matrix": ``a``'s layers as index (``layer``), ``b``'s as
        columns (``layer_b``).

    Returns
    -------
    pandas.DataFrame

    Examples
    --------
    >>> import numpy as np
    >>> def on_circle(degrees): return np.c_[np.cos(np.deg2rad(degrees)), np.sin(np.deg2rad(degrees))]
    >>> x, y = on_circle([0, 10, 30, 70]), on_circle([0, 55, 30, 70])      # cosine neighbours = nearest angles
    >>> mutual_knn_matrix({"x": x, "y": y}, k=2, output="matrix").to_numpy()
    array([[1.   , 0.875],
           [0.875, 1.   ]])
    """
    return _matrix(a, b, k, metric, block_size, output, "mutual_knn", _mutual)


@declare(a=_INVARIANT_LAYERS, b=_INVARIANT_LAYERS_OR_NONE, k=_K, metric=Options(*KNN_METRICS), block_size=_BLOCK,
         output=Options(*OUTPUTS))
def jaccard_knn_matrix(a: Any, b: Any = None, *, k: int = 10, metric: str = "cosine",
                       block_size: int | None = None, output: str = "tidy") -> pd.DataFrame:
    """:func:`jaccard_knn` between every layer pair; as :func:`mutual_knn_matrix` with
    ``measure = "jaccard_knn_<metric>_k<k>"``.

    Examples
    --------
    >>> import numpy as np
    >>> def on_circle(degrees): return np.c_[np.cos(np.deg2rad(degrees)), np.sin(np.deg2rad(degrees))]
    >>> x, y = on_circle([0, 10, 30, 70]), on_circle([0, 55, 30, 70])      # cosine neighbours = nearest angles
    >>> jaccard_knn_matrix({"x": x, "y": y}, k=2, output="matrix").to_numpy().round(4)
    array([[1.    , 0.8333],
           [0.8333, 1.    ]])
    """
    return _matrix(a, b, k, metric, block_size, output, "jaccard_knn", _jaccard)

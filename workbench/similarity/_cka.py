"""Centered kernel alignment (CKA) between representations of the same examples.

Definitions
-----------
For a representation ``X`` [n, p] with kernel (Gram) matrix ``K`` [n, n] and ``Y`` [n, q] with ``L``,
and the centering matrix ``H = I - 11^T / n``:

* Biased HSIC (Gretton et al. 2005):  ``HSIC_b(K, L) = tr(K H L H) / (n - 1)^2``.
* Unbiased HSIC (Song et al. 2012, "Feature selection via dependence maximization", JMLR 13, Thm. 2),
  with ``K~``, ``L~`` the Gram matrices with their diagonals set to zero::

      HSIC_u(K, L) = [ tr(K~ L~) + (1^T K~ 1)(1^T L~ 1) / ((n-1)(n-2)) - 2/(n-2) 1^T K~ L~ 1 ] / (n (n-3))

  It needs ``n >= 4``.
* CKA (Kornblith et al. 2019, "Similarity of neural network representations revisited", ICML, Eq. 4)::

      CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))

  "Debiased CKA" plugs ``HSIC_u`` into the same ratio (Kornblith et al.'s reference code; Nguyen et al.
  2021). It can be slightly negative for independent representations, where biased CKA is strongly
  positive when ``n`` is small relative to the widths.

Linear kernel ``K = X X^T``. With ``Xc`` the column-centered ``X``, ``H K H = Xc Xc^T`` and
``tr(HKH HLH) = ||Yc^T Xc||_F^2`` (Kornblith et al. 2019, Eq. 5), so linear CKA never needs an
[n, n] matrix when the widths are below ``n``. The unbiased statistic also has a feature-space form,
because ``HSIC_u`` is unchanged when ``K`` is replaced by ``HKH``: with centered rows ``x_i``,
``1^T K~ 1 = -sum_i ||x_i||^2`` and ``K~ 1 = -(||x_i||^2)_i``.

RBF kernel ``K_ij = exp(-||x_i - x_j||^2 / (2 sigma^2))`` with the bandwidth of Kornblith et al.'s
demo code (``gram_rbf(x, threshold)``): ``sigma^2 = threshold^2 * median(D2)`` where ``D2`` is the full
[n, n] matrix of *squared* Euclidean distances, diagonal zeros included (``np.median`` semantics: the
mean of the two middle values for an even count). So ``sigma = threshold * sqrt(median squared
distance)``, which is close to, but not exactly, ``threshold`` times the median distance over distinct
pairs used by some other implementations; this choice reproduces the published demo values.

Minibatch CKA (Nguyen, Raghu & Kornblith 2021, "Do wide and deep networks learn the same things?",
ICLR, Sec. 3.1, Eq. 2-3) averages ``HSIC_u`` over ``k`` minibatches before taking the ratio::

    CKA_minibatch = mean_k HSIC_u(K_k, L_k) / sqrt(mean_k HSIC_u(K_k, K_k) * mean_k HSIC_u(L_k, L_k))

It is a different number from CKA over all examples at once (it only sees within-batch pairs) and from
the mean of per-batch CKA values; with one batch it equals debiased CKA. :class:`MinibatchCKA` computes it.

All-pairs computation (:func:`cka_matrix`, :class:`MinibatchCKA`): the centered float64 features of all
feature-path layers of one side are stacked into one [N, sum_i d_i] matrix, so every cross term
``||Xc_i^T Yc_j||_F^2`` is a block of one product ``Xc_all^T Yc_all``, computed in row/column blocks of
bounded size (``_BLOCK_BYTES``); the squared Frobenius norm of each [d_i, d_j] block is summed with two
small GEMMs against 0/1 layer-membership matrices. The debiasing terms (``diag``, ``offrow`` above) of all
layers are stacked into [N, L] matrices, so they too are one GEMM for all pairs. When ``N`` is close to the
widths (typical minibatches) it is cheaper to keep every linear layer as its Gram matrix ``Xc Xc^T`` and take
all cross terms as one product of the flattened Grams; the choice is made from the flop counts
(``_prefer_gram``). Those Grams are *packed*: only the lower block triangle is formed, off-diagonal blocks
scaled by sqrt(2), so that flattened inner products still equal ``<K, L>_F`` with about 60 % of the flops
and memory (``_pack_gram``).

Namesakes: this is *not* SVCCA/PWCCA (CCA-based), nor kernel alignment of Cristianini et al. 2002
(uncentered).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd
import torch

from .._validation import Data, Flag, Interval, Options, as_2d_tensor, check_choice, declare
from ._pairs import OUTPUTS, check_same_rows, layer_dict, same_device, to_frame

__all__ = ["cka", "cka_matrix", "MinibatchCKA", "minibatch_cka"]

_KERNELS = ("linear", "rbf")
_BLOCK_BYTES = 256 * 2**20  # largest product block (float64) of the all-pairs GEMM; tests shrink it
_MIN_BLOCK_ROWS = 256  # row blocks are never thinner than this (GEMM efficiency); tests shrink it
_GROUP_ROWS = 512  # B=None: consecutive layers are grouped into row strips of about this many features
_GRAM_BYTES = 2**30  # all-Gram plan only while the [N, N] Gram matrices of all layers fit in this
_GRAM_BLOCK_ROWS = 200  # all-Gram plan: row blocks of the packed Gram triangle (GEMM efficiency); tests shrink it
_PACKED_CHUNK = 2**17  # float32 packed Grams are summed in float64 chunks of this many entries; tests shrink it


def _measure_name(kernel: str, debiased: bool) -> str:
    return f"cka_{kernel}" + ("_debiased" if debiased else "")


@dataclass
class _Prepared:
    """Everything about one representation that CKA needs, computed once.

    Exactly one of ``feats`` (centered features Xc, float64), ``gram`` (doubly centered Gram HKH) or
    ``packed`` (HKH as a packed block triangle, see :func:`_pack_gram`) is set. ``diag`` is diag(HKH),
    ``offrow`` the row sums of HKH with its diagonal removed and ``total`` their sum; they feed the
    unbiased HSIC.
    """

    name: str
    n: int
    feats: torch.Tensor | None
    gram: torch.Tensor | None
    diag: torch.Tensor
    offrow: torch.Tensor
    total: torch.Tensor
    packed: torch.Tensor | None = None


def _median_all(values: torch.Tensor) -> torch.Tensor:
    """Median of all entries with numpy semantics (mean of the two middle values for an even count)."""
    flat = values.reshape(-1)
    m = flat.numel()
    if m % 2:
        return torch.kthvalue(flat, (m + 1) // 2).values
    return 0.5 * (torch.kthvalue(flat, m // 2).values + torch.kthvalue(flat, m // 2 + 1).values)


def _default_path(kernel: str, n: int, d: int) -> str:
    return "features" if (kernel == "linear" and d < n) else "gram"


def _column_center(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``x`` minus its column means (float64). For a strided ``x`` (a column slice of a wider tensor, e.g.
    one layer of a concatenated batch) the means are one GEMV, ``(1/n) 1^T x``: on CPU torch's reduction
    over dim 0 of such a view is about 4x slower (13 slices of 1000 x 384: 11.2 vs 2.9 ms); for a
    contiguous ``x`` that reduction is the faster one."""
    if x.is_contiguous():
        mean = x.mean(dim=0, keepdim=True)
    else:
        mean = torch.full((1, x.shape[0]), 1.0 / x.shape[0], dtype=x.dtype, device=x.device) @ x
    return torch.sub(x, mean, out=out) if out is not None else x - mean


def _feature_terms(xc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(diag, offrow) of ``Xc Xc^T`` from the centered features: squared row norms, and the row sums
    ``Xc (Xc^T 1)`` (zero up to rounding) minus the diagonal; each a GEMV or one pass, no [n, n] matrix."""
    diag = torch.linalg.vector_norm(xc, dim=1).square_()
    offrow = xc @ (torch.ones(xc.shape[0], dtype=xc.dtype, device=xc.device) @ xc) - diag
    return diag, offrow


def _gram_block_edges(n: int) -> list[int]:
    """Row-block boundaries for :func:`_pack_gram`: about ``_GRAM_BLOCK_ROWS`` rows per block."""
    blocks = max(1, round(n / _GRAM_BLOCK_ROWS))
    return [round(i * n / blocks) for i in range(blocks + 1)]


def _pack_gram(xc: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Write the lower block triangle of the Gram matrix ``K = Xc Xc^T`` into the 1-D ``out``.

    Rows are cut into blocks ``b_1..b_m`` (:func:`_gram_block_edges`, edges ``e_0 = 0 < ... < e_m = n``).
    For each block ``i``, ``out`` holds the strip ``K[0:e_{i+1}, b_i]`` (one GEMM, row-major): its first
    ``e_i`` rows are the blocks above the diagonal, times ``sqrt(2)``, its last ``|b_i|`` rows the diagonal
    block as it is. As ``K`` is symmetric, every block below the diagonal is the transpose of a stored one,
    so for two packed Grams ``<packed K, packed L> = <K, L>_F``: all cross terms need only
    ``(m + 1) / (2m)`` of the Gram flops and memory (0.6 for m = 5). ``out`` is in ``xc``'s dtype
    (float32 or float64). Returns ``out``.
    """
    e = _gram_block_edges(xc.shape[0])
    root2 = float(np.sqrt(2.0))
    pos = 0
    for i in range(len(e) - 1):
        width = e[i + 1] - e[i]
        strip = out[pos:pos + e[i + 1] * width].view(e[i + 1], width)
        torch.mm(xc[:e[i + 1]], xc[e[i]:e[i + 1]].T, out=strip)
        strip[:e[i]].mul_(root2)
        pos += e[i + 1] * width
    return out


def _packed_size(n: int) -> int:
    """Length of the packed Gram of ``n`` examples (:func:`_pack_gram`)."""
    e = _gram_block_edges(n)
    return sum(e[i + 1] * (e[i + 1] - e[i]) for i in range(len(e) - 1))


def _prepare(x: torch.Tensor, name: str, kernel: str, sigma: float, path: str | None = None, *,
             out: torch.Tensor | None = None, check_constant: bool = True,
             gram_dtype: torch.dtype = torch.float64) -> _Prepared:
    """Center one representation (float64) and build what the cross terms need.

    ``path`` forces "features" or "gram" (tests); by default a linear kernel uses the feature-space
    form when the width is below the number of samples, the Gram form otherwise. ``out`` (optional) is
    where the centered features [n, d] or the centered Gram matrix [n, n] are written (a view into a
    stack of layers). ``check_constant=False`` (minibatches) lets a layer be constant: its HSICs are 0.
    ``gram_dtype=torch.float32`` (linear Gram paths only) forms ``Xc Xc^T`` from the float64-centered
    features rounded to float32 (about 2x faster GEMM); the "gram" path stores it in float64, the
    "packed" path (all-Gram plan, :func:`_pack_gram`; ``out`` required) in ``out``'s dtype.
    """
    n, d = x.shape
    if check_constant and bool(torch.all(x == x[:1])):
        raise ValueError(f"{name} is constant across all {n} samples: its self-similarity HSIC is zero, so "
                         "CKA is undefined; drop this representation (or check the activations)")
    path = _default_path(kernel, n, d) if path is None else path
    if path in ("features", "packed") and kernel != "linear":
        raise ValueError(f"the {path} path exists only for kernel='linear'")
    if path == "features":
        xc = _column_center(x, out=out)
        diag, offrow = _feature_terms(xc)
        return _Prepared(name, n, xc, None, diag, offrow, offrow.sum())
    xc = _column_center(x)
    if path == "packed":
        diag, offrow = _feature_terms(xc)
        packed = _pack_gram(xc if out.dtype == xc.dtype else xc.to(out.dtype), out)
        return _Prepared(name, n, None, None, diag, offrow, offrow.sum(), packed=packed)
    if kernel == "linear":
        # Xc has zero column means, so Xc Xc^T is already double-centered (H K H = K): no second pass
        if gram_dtype == torch.float64:
            gram = torch.mm(xc, xc.T, out=out) if out is not None else xc @ xc.T
        else:
            low = xc.to(gram_dtype)
            gram = (low @ low.T).to(torch.float64) if out is None else out.copy_(low @ low.T)
            del low
        del xc
        diag = torch.diagonal(gram).clone()
        offrow = gram.sum(dim=1) - diag
        return _Prepared(name, n, None, gram, diag, offrow, offrow.sum())
    dots = xc @ xc.T
    sq_norms = torch.diagonal(dots)
    sq = (sq_norms[:, None] + sq_norms[None, :] - 2.0 * dots).clamp_min_(0.0)
    sq.fill_diagonal_(0.0)
    med = _median_all(sq)
    if not float(med) > 0.0:
        raise ValueError(f"{name}: the median squared pairwise distance is 0 (more than half of the sample "
                         "pairs coincide), so the RBF bandwidth is undefined; use kernel='linear' or "
                         "remove duplicated samples")
    gram = torch.exp(-sq / (2.0 * sigma ** 2 * med))
    del sq
    del xc, dots
    row_mean = gram.mean(dim=1, keepdim=True)
    if out is None:
        gram = gram - row_mean - row_mean.T + row_mean.mean()
    else:
        gram = torch.sub(gram, row_mean, out=out).sub_(row_mean.T).add_(row_mean.mean())
    diag = torch.diagonal(gram).clone()
    offrow = gram.sum(dim=1) - diag
    return _Prepared(name, n, None, gram, diag, offrow, offrow.sum())


def _inner(a: _Prepared, b: _Prepared) -> torch.Tensor:
    """<HKH, HLH>_F = (n-1)^2 HSIC_b(K, L), in the cheapest available form."""
    if a.feats is not None and b.feats is not None:
        if a.feats.shape[1] <= b.feats.shape[1]:
            return (a.feats.T @ b.feats).square().sum()
        return (b.feats.T @ a.feats).square().sum()
    if a.feats is not None:  # b has a Gram matrix: tr(Xc^T L Xc)
        return (a.feats * (b.gram @ a.feats)).sum()
    if b.feats is not None:
        return (b.feats * (a.gram @ b.feats)).sum()
    return torch.dot(a.gram.reshape(-1), b.gram.reshape(-1))


def _hsic(a: _Prepared, b: _Prepared, debiased: bool, full: torch.Tensor | None = None) -> float:
    """(n-1)^2 HSIC_b or n(n-3) HSIC_u; the scale cancels in CKA."""
    full = _inner(a, b) if full is None else full
    if not debiased:
        return float(full)
    n = a.n
    trace_off = full - a.diag @ b.diag  # tr(K~ L~): drop the diagonal products
    return float(trace_off + a.total * b.total / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * (a.offrow @ b.offrow))


def _self_error(name: str, value: float, debiased: bool) -> ValueError:
    what = "unbiased HSIC" if debiased else "HSIC"
    return ValueError(f"{name}: self-{what} is {value:.3g} <= 0, so CKA is undefined"
                      + ("; the debiased estimator needs more samples (or use debiased=False)"
                         if debiased else "; the representation carries no variance"))


def _self_hsic(p: _Prepared, debiased: bool) -> float:
    value = _hsic(p, p, debiased)
    if not value > 0.0:
        raise _self_error(p.name, value, debiased)
    return value


def _check_args(kernel: str, debiased: bool, sigma: float) -> None:
    check_choice(kernel, _KERNELS, "kernel")
    if not isinstance(debiased, (bool, np.bool_)):
        raise TypeError(f"debiased must be True or False, got {type(debiased).__name__}")
    if kernel == "rbf":
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float, np.floating, np.integer)):
            raise TypeError(f"sigma must be a positive number, got {type(sigma).__name__}")
        if not (np.isfinite(sigma) and sigma > 0):
            raise ValueError(f"sigma must be a positive finite number (fraction of the median distance), got {sigma}")


def _min_rows(debiased: bool) -> int:
    return 4 if debiased else 2


@declare(a=Data("x", scale="invariant"), b=Data("x", scale="invariant"), kernel=Options(*_KERNELS), debiased=Flag(),
         sigma=Interval(float, 0, None, closed="neither"))
def cka(a: Any, b: Any, *, kernel: str = "linear", debiased: bool = False, sigma: float = 0.5) -> float:
    """Centered kernel alignment between two representations of the same ``N`` examples.

    ``CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` (Kornblith et al. 2019, Eq. 4) with the biased
    ``HSIC_b = tr(KHLH) / (n-1)^2`` or, if ``debiased``, the unbiased U-statistic ``HSIC_u`` of
    Song et al. 2012. See the module docstring for the formulas, the RBF bandwidth rule and how this
    differs from namesakes (SVCCA/PWCCA, uncentered kernel alignment, minibatch CKA).

    For the linear kernel the feature-space identity
    ``||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` (``Xc`` column-centered) is used for any
    representation narrower than ``N``, the centered Gram matrix otherwise; both give the same value.
    Everything is computed in float64 after centering, in torch, on the inputs' device.

    Parameters
    ----------
    a, b : array or tensor, shape [N, p] and [N, q]
        Rows are examples (same order in both). Integer input is converted; 1-D input is an error.
    kernel : {"linear", "rbf"}
    debiased : bool
        Use the unbiased HSIC (needs ``N >= 4``). Removes the upward bias of CKA when ``N`` is small
        compared with the widths; the result can be slightly negative.
    sigma : float
        RBF only: bandwidth as a fraction of the median distance, ``sigma_abs^2 = sigma^2 *
        median(squared pairwise distances, all N^2 pairs incl. the zero diagonal)``, as in
        Kornblith et al.'s demo (``threshold``).

    Returns
    -------
    float
        Biased CKA lies in [0, 1]; CKA(X, X) = 1. Invariant to orthogonal transforms and isotropic
        scaling of either input (and, for the linear kernel, to translations).

    Raises
    ------
    ValueError
        NaN/Inf, 1-D input, different ``N``, too few samples (``N < 2``; ``N < 4`` if debiased),
        a representation that is constant over all samples (CKA undefined).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(1000, 8)); q, _ = np.linalg.qr(rng.normal(size=(8, 8)))    # q: a random rotation
    >>> round(cka(x, 3 * x @ q + 1), 6), round(cka(x, x[:, :2]), 2)    # rotated + rescaled: 1; 2 of 8 dims: ~sqrt(2/8)
    (1.0, 0.47)
    """
    _check_args(kernel, debiased, sigma)
    x = as_2d_tensor(a, "a", min_rows=_min_rows(debiased))
    y = as_2d_tensor(b, "b", min_rows=_min_rows(debiased))
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"mismatched number of samples: a has {x.shape[0]}, b has {y.shape[0]}; "
                         "pass representations of the same examples (same rows, same order)")
    x, y = same_device([x, y])
    pa = _prepare(x, "a", kernel, sigma)
    pb = _prepare(y, "b", kernel, sigma)
    return _hsic(pa, pb, debiased) / float(np.sqrt(_self_hsic(pa, debiased) * _self_hsic(pb, debiased)))


# ------------------------------------------------------------------------------ all pairs at once
@dataclass
class _Side:
    """All layers of one mapping, prepared once and stacked.

    ``feats`` [N, sum d] holds the centered features of the feature-path layers side by side (their
    positions in ``names`` are ``feat_idx``; ``member`` [sum d, F] is 1 where column ``c`` belongs to
    feature layer ``f``, ``starts`` the column offsets); ``grams`` [G, N, N] the centered Gram matrices of the others
    (``gram_idx``). In the all-Gram plan (linear kernel) every layer is instead a row of ``packed`` [L, P]
    (:func:`_pack_gram`) and both index lists are empty. ``diag``/``offrow`` [N, L] and ``total`` [L]
    stack the debiasing terms of all layers.
    """

    names: list[str]
    n: int
    preps: list[_Prepared]
    feat_idx: list[int]
    gram_idx: list[int]
    feats: torch.Tensor | None
    member: torch.Tensor | None
    starts: list[int]
    grams: torch.Tensor | None
    diag: torch.Tensor
    offrow: torch.Tensor
    total: torch.Tensor
    packed: torch.Tensor | None = None


def _prefer_gram(kernel: str, n: int, widths_a: list[int], widths_b: list[int] | None) -> bool:
    """Linear kernel: is the all-Gram plan cheaper than feature space for the narrow layers?

    Feature space costs about ``N (Sa Sb + sum d_i^2 + sum d_j^2)`` multiply-adds (``S`` = summed widths of
    the layers narrower than ``N``); the all-Gram plan ``f N^2 (Sa + Sb)`` for the packed Grams plus
    ``f N^2 La Lb`` for the cross terms, with ``f = (m + 1) / (2m)`` the packed fraction of an [N, N] matrix
    (:func:`_pack_gram`). E.g. minibatches of 1000 examples of 13 layers of width 384 favour Grams by about
    5x, N = 10000 examples favour features by about 2x. Used only while all packed Grams fit in ``_GRAM_BYTES``.
    """
    if kernel != "linear":
        return False
    packed = _packed_size(n)
    both = widths_a + (widths_b or [])
    if len(both) * packed * 8 > _GRAM_BYTES:
        return False
    narrow_a = [d for d in widths_a if d < n]
    narrow_b = narrow_a if widths_b is None else [d for d in widths_b if d < n]
    if not narrow_a and not narrow_b:
        return False
    sa, sb = sum(narrow_a), sum(narrow_b)
    feature_cost = n * (sa * sb + sum(d * d for d in narrow_a) + sum(d * d for d in narrow_b))
    gram_cost = packed * (sa + sb) + packed * len(widths_a) * len(widths_b or widths_a)
    return gram_cost < feature_cost


def _build_side(layers: dict[str, torch.Tensor], prefix: str, kernel: str, sigma: float,
                check_constant: bool = True, all_gram: bool = False,
                gram_dtype: torch.dtype = torch.float64, workspace: dict | None = None) -> _Side:
    """Prepare every layer once, writing centered features / Grams straight into the stacks.

    Entries of ``layers`` are dropped as they are consumed, so a converted float64 copy of an input
    does not outlive its centered copy in the stack. ``all_gram`` (linear kernel) keeps every layer as
    a packed Gram matrix, a row of one [L, P] stack in ``gram_dtype``; with a ``workspace`` dict that
    stack is kept there under ``prefix`` and reused by the next call of the same shape (minibatches).
    """
    names = list(layers)
    first = layers[names[0]]
    n, device = int(first.shape[0]), first.device
    if all_gram:
        shape = (len(names), _packed_size(n))
        packed = None if workspace is None else workspace.get(prefix)
        if packed is None or packed.shape != shape or packed.dtype != gram_dtype or packed.device != device:
            packed = torch.empty(shape, dtype=gram_dtype, device=device)
            if workspace is not None:
                workspace[prefix] = packed
        preps = [_prepare(layers.pop(name), f"{prefix}[{name!r}]", kernel, sigma, "packed", out=packed[i],
                          check_constant=check_constant, gram_dtype=gram_dtype) for i, name in enumerate(names)]
        return _Side(names, n, preps, [], [], None, None, [0], None, torch.stack([p.diag for p in preps], dim=1),
                     torch.stack([p.offrow for p in preps], dim=1), torch.stack([p.total for p in preps]), packed)
    paths = [_default_path(kernel, n, int(layers[k].shape[1])) for k in names]
    feat_idx = [i for i, p in enumerate(paths) if p == "features"]
    gram_idx = [i for i, p in enumerate(paths) if p == "gram"]
    widths = [int(layers[names[i]].shape[1]) for i in feat_idx]
    starts = np.concatenate([[0], np.cumsum(widths)]).astype(int).tolist() if feat_idx else [0]
    feats = torch.empty((n, starts[-1]), dtype=torch.float64, device=device) if feat_idx else None
    grams = torch.empty((len(gram_idx), n, n), dtype=torch.float64, device=device) if gram_idx else None
    member = None
    if feat_idx:  # built on the host and copied: no device synchronisation
        member = torch.zeros((starts[-1], len(widths)), dtype=torch.float64)
        member[torch.arange(starts[-1]), torch.as_tensor(np.repeat(np.arange(len(widths)), widths))] = 1.0
        member = member.to(device)
    slot = {i: ("f", k) for k, i in enumerate(feat_idx)} | {i: ("g", k) for k, i in enumerate(gram_idx)}
    preps = []
    for i, name in enumerate(names):
        kind, k = slot[i]
        out = feats[:, starts[k]:starts[k + 1]] if kind == "f" else grams[k]
        preps.append(_prepare(layers.pop(name), f"{prefix}[{name!r}]", kernel, sigma, paths[i], out=out,
                              check_constant=check_constant, gram_dtype=gram_dtype))
    return _Side(names, n, preps, feat_idx, gram_idx, feats, member, starts, grams,
                 torch.stack([p.diag for p in preps], dim=1), torch.stack([p.offrow for p in preps], dim=1),
                 torch.stack([p.total for p in preps]))


def _chunks(start: int, stop: int, size: int) -> list[tuple[int, int]]:
    size = max(int(size), 1)
    return [(s, min(s + size, stop)) for s in range(start, stop, size)]


def _feature_cross(a: _Side, b: _Side, symmetric: bool) -> torch.Tensor:
    """[Fa, Fb] matrix of ||Xc_i^T Yc_j||_F^2 over the feature-path layers, from blocks of Xa^T Xb.

    Blocks of the product are at most ``_BLOCK_BYTES``. With ``symmetric`` (``b is a``) the row strips
    follow the layer boundaries and each strip only multiplies the columns from its first layer on, so
    only entries i <= j are valid (the caller mirrors them); the diagonal holds the self terms.
    """
    xa, xb = a.feats, b.feats
    fa, fb = len(a.feat_idx), len(b.feat_idx)
    ma, mb = a.member, b.member
    da, db = xa.shape[1], xb.shape[1]
    budget = max(_BLOCK_BYTES // 8, 1)
    out = torch.zeros((fa, fb), dtype=torch.float64, device=xa.device)
    if symmetric:  # strips of consecutive layers, roughly _GROUP_ROWS features each
        strips, s0 = [], 0
        for k in range(fa):
            if a.starts[k + 1] - a.starts[s0] > _GROUP_ROWS and k > s0:
                strips.append((a.starts[s0], a.starts[k]))
                s0 = k
        strips.append((a.starts[s0], a.starts[fa]))
    else:
        strips = [(0, da)]
    for r0, r1 in strips:
        c0 = r0 if symmetric else 0
        rows = min(r1 - r0, max(budget // (db - c0), _MIN_BLOCK_ROWS))
        for q0, q1 in _chunks(r0, r1, rows):
            for c_lo, c_hi in _chunks(c0, db, budget // (q1 - q0)):
                block = (xa[:, q0:q1].T @ xb[:, c_lo:c_hi]).square_()
                out += ma[q0:q1].T @ (block @ mb[c_lo:c_hi])
                del block
    return out


def _gram_feature_cross(gram: torch.Tensor, side: _Side) -> torch.Tensor:
    """[F] vector tr(Xc_j^T G Xc_j) = <G, Xc_j Xc_j^T> for every feature-path layer j of ``side``."""
    x = side.feats
    n, width = x.shape
    col = torch.empty(width, dtype=torch.float64, device=x.device)
    for c_lo, c_hi in _chunks(0, width, max(_BLOCK_BYTES // 8 // n, 1)):
        xs = x[:, c_lo:c_hi]
        col[c_lo:c_hi] = (xs * (gram @ xs)).sum(dim=0)
    return col @ side.member


def _packed_inner(pa: torch.Tensor, pb: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(cross [La, Lb], self_a [La], self_b [Lb]): float64 inner products of the rows of packed Gram stacks
    (``pb=None``: ``pa`` with itself, cross [La, La]), i.e. ``<K_i, L_j>_F`` and ``||K_i||_F^2``.

    A float64 stack takes one GEMM plus row norms. A float32 stack is summed in float64 too: column chunks
    of both stacks (``_PACKED_CHUNK`` entries, 1 MiB, in all) are converted into one float64 buffer that is
    multiplied with itself, so each stack is read once and the [L, L] sums are float64 (a float32 GEMM over
    ``N^2 / 2`` products would not be).
    """
    if pa.dtype == torch.float64:
        cross = pa @ (pa if pb is None else pb).T
        norms_a = torch.linalg.vector_norm(pa, dim=1).square_()
        return cross, norms_a, norms_a if pb is None else torch.linalg.vector_norm(pb, dim=1).square_()
    la = int(pa.shape[0])
    rows = la + (0 if pb is None else int(pb.shape[0]))
    joint = torch.zeros((rows, rows), dtype=torch.float64, device=pa.device)
    step = max(_PACKED_CHUNK // rows, 1)
    buf = torch.empty((rows, step), dtype=torch.float64, device=pa.device)
    for c0, c1 in _chunks(0, pa.shape[1], step):
        chunk = buf[:, :c1 - c0]
        chunk[:la].copy_(pa[:, c0:c1])
        if pb is not None:
            chunk[la:].copy_(pb[:, c0:c1])
        joint.addmm_(chunk, chunk.T)
    diag = torch.diagonal(joint)
    return (joint if pb is None else joint[:la, la:]), diag[:la], diag[la:] if pb is not None else diag


def _cross(a: _Side, b: _Side, symmetric: bool) -> torch.Tensor:
    """[La, Lb] tensor of <HK_iH, HL_jH>_F = (n-1)^2 HSIC_b for every layer pair, on the layers' device.

    ``symmetric`` (``b is a``, B=None): each unordered pair is computed once and mirrored.
    """
    full = torch.zeros((len(a.names), len(b.names)), dtype=torch.float64, device=a.diag.device)
    ia, ib = torch.as_tensor(a.feat_idx, device=full.device), torch.as_tensor(b.feat_idx, device=full.device)
    ga, gb = torch.as_tensor(a.gram_idx, device=full.device), torch.as_tensor(b.gram_idx, device=full.device)
    if a.feat_idx and b.feat_idx:
        ff = _feature_cross(a, b, symmetric)
        if symmetric:
            ff = torch.triu(ff) + torch.triu(ff, 1).T
        full[ia[:, None], ib[None, :]] = ff
    if a.feat_idx and b.gram_idx:  # a's features against each Gram layer of b
        for k, j in enumerate(b.gram_idx):
            col = _gram_feature_cross(b.grams[k], a)
            full[ia, j] = col
            if symmetric:
                full[j, ia] = col
    if a.gram_idx and b.feat_idx and not symmetric:
        for k, i in enumerate(a.gram_idx):
            full[i, ib] = _gram_feature_cross(a.grams[k], b)
    if a.gram_idx and b.gram_idx:
        flat_a = a.grams.reshape(len(a.gram_idx), -1)
        flat_b = flat_a if symmetric else b.grams.reshape(len(b.gram_idx), -1)
        full[ga[:, None], gb[None, :]] = flat_a @ flat_b.T
    return full


def _self_inner(side: _Side) -> torch.Tensor:
    """[L] vector <HKH, HKH>_F: one d x d GEMM per feature-path layer, one dot per Gram layer."""
    out = torch.zeros(len(side.names), dtype=torch.float64, device=side.diag.device)
    for k, i in enumerate(side.feat_idx):
        xs = side.feats[:, side.starts[k]:side.starts[k + 1]]
        out[i] = (xs.T @ xs).square().sum()
    if side.gram_idx:
        flat = side.grams.reshape(len(side.gram_idx), -1)
        out[torch.as_tensor(side.gram_idx, device=out.device)] = flat.square().sum(1)
    return out


def _debias(full: torch.Tensor, a: _Side, b: _Side) -> torch.Tensor:
    """n(n-3) HSIC_u for all pairs from <HKH, HLH> (Song et al. 2012, Thm. 2, in the module's notation)."""
    n = a.n
    return (full - a.diag.T @ b.diag + torch.outer(a.total, b.total) / ((n - 1) * (n - 2))
            - 2.0 / (n - 2) * (a.offrow.T @ b.offrow))


def _debias_self(inner: torch.Tensor, s: _Side) -> torch.Tensor:
    n = s.n
    return (inner - s.diag.square().sum(0) + s.total.square() / ((n - 1) * (n - 2))
            - 2.0 / (n - 2) * s.offrow.square().sum(0))


def _all_pairs(a: _Side, b: _Side | None, debiased: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(cross [La, Lb], self_a [La], self_b [Lb]) of (n-1)^2 HSIC_b or n(n-3) HSIC_u, on the device."""
    symmetric = b is None
    b = a if b is None else b
    if a.packed is not None:  # all-Gram plan: cross and self terms from the packed stacks
        full, self_a, self_b = _packed_inner(a.packed, None if symmetric else b.packed)
    else:
        full = _cross(a, b, symmetric)
    cross = _debias(full, a, b) if debiased else full
    if symmetric:
        self_a = torch.diagonal(cross).clone()
        return cross, self_a, self_a
    if a.packed is None:
        self_a, self_b = _self_inner(a), _self_inner(b)
    if debiased:
        self_a, self_b = _debias_self(self_a, a), _debias_self(self_b, b)
    return cross, self_a, self_b


def _check_self(values: np.ndarray, names: list[str], debiased: bool) -> None:
    for name, value in zip(names, values):
        if not value > 0.0:
            raise _self_error(name, float(value), debiased)


@declare(a=Data("layers", scale="invariant"), b=Data("layers", none=True, scale="invariant"),
         kernel=Options(*_KERNELS), debiased=Flag(),
         sigma=Interval(float, 0, None, closed="neither"), output=Options(*OUTPUTS))
def cka_matrix(a: Any, b: Any = None, *, kernel: str = "linear", debiased: bool = False, sigma: float = 0.5,
               output: str = "tidy") -> pd.DataFrame:
    """CKA between every layer of ``a`` and every layer of ``b`` (``b=None``: ``a`` against itself).

    Same definition as :func:`cka` (Kornblith et al. 2019, Eq. 4; unbiased HSIC of Song et al. 2012,
    Thm. 2, when ``debiased``) and the same values up to rounding. Each layer is centered (float64) and
    prepared exactly once. A linear-kernel layer narrower than ``N`` is kept as centered features: the
    features of all such layers of a side are stacked into one [N, sum d] matrix and every cross term
    ``||Xc_i^T Yc_j||_F^2`` is a block of one blocked product ``Xc_all^T Yc_all`` (GEMM-bound, extra
    memory bounded by the block size, about 256 MiB); self terms take one GEMM per layer; the debiasing
    terms of all pairs are two [N, L] x [N, L] products. Any other layer (RBF, or width >= ``N``) is kept
    as its centered [N, N] Gram matrix (``8 N^2`` bytes per layer). When ``N`` is not much larger than the
    widths and all Grams fit in 1 GiB, linear layers are all kept as (packed, about 0.6 N^2 entries) Grams
    if that needs fewer flops (their cross terms are then one [L, P] x [P, L] GEMM); both plans give the
    same values.
    With ``b=None`` each unordered pair is computed once and mirrored. Values stay on the inputs' device
    until the end (one transfer).

    Parameters
    ----------
    a, b : array or tensor [N, d], ``Activations``, or mapping layer name -> array or tensor [N, d_layer]
        A single array or tensor is the one layer ``"features"``, so ``cka_matrix(x, y)`` is ``cka(x, y)`` as
        a one-row table. All layers (of both) must hold the same ``N`` examples in the same order; widths may
        differ.
    kernel, debiased, sigma
        As in :func:`cka`.
    output : {"tidy", "matrix"}
        "tidy": a table in the results schema (:mod:`workbench.results`), one row per pair: ``layer`` and
        ``layer_index`` (the layer of ``a`` and its position in ``a``), ``measure`` ("cka_linear",
        "cka_linear_debiased", "cka_rbf" or "cka_rbf_debiased"), ``value``, then ``layer_b`` and
        ``layer_index_b`` (the layer of ``b``); ``run``, ``step``, ``split`` and the CIs are NaN.
        "matrix": values with ``a``'s layers as the index (named ``layer``) and ``b``'s as the columns
        (named ``layer_b``).

    Returns
    -------
    pandas.DataFrame

    Raises
    ------
    ValueError
        Layers with different ``N`` (the message names them), constant layers, bad values (see :func:`cka`).
    TypeError
        ``a``/``b`` not an array, a tensor or a mapping.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(1000, 8))
    >>> cka_matrix({"x": x, "first4": x[:, :4], "rotated": x[:, ::-1]}, output="matrix").to_numpy().round(2)
    array([[1. , 0.7, 1. ],
           [0.7, 1. , 0.7],
           [1. , 0.7, 1. ]])
    """
    _check_args(kernel, debiased, sigma)
    check_choice(output, OUTPUTS, "output")
    layers_a = layer_dict(a, "a", min_rows=_min_rows(debiased))
    layers_b = None if b is None else layer_dict(b, "b", min_rows=_min_rows(debiased))
    check_same_rows(layers_a, layers_b)
    names_a = list(layers_a)
    names_b = names_a if layers_b is None else list(layers_b)
    tensors = same_device(list(layers_a.values()) + ([] if layers_b is None else list(layers_b.values())))
    layers_a = dict(zip(names_a, tensors[:len(names_a)]))
    layers_b = None if layers_b is None else dict(zip(names_b, tensors[len(names_a):]))
    n = int(tensors[0].shape[0])
    all_gram = _prefer_gram(kernel, n, [int(t.shape[1]) for t in layers_a.values()],
                            None if layers_b is None else [int(t.shape[1]) for t in layers_b.values()])
    del tensors
    side_a = _build_side(layers_a, "a", kernel, sigma, all_gram=all_gram)
    side_b = None if layers_b is None else _build_side(layers_b, "b", kernel, sigma, all_gram=all_gram)
    cross, self_a, self_b = _all_pairs(side_a, side_b, debiased)
    self_a_np = self_a.cpu().numpy()
    _check_self(self_a_np, [p.name for p in side_a.preps], debiased)
    if side_b is not None:
        _check_self(self_b.cpu().numpy(), [p.name for p in side_b.preps], debiased)
    values = (cross / torch.sqrt(torch.outer(self_a, self_b))).cpu().numpy()
    return to_frame(names_a, names_b, values, _measure_name(kernel, debiased), output)


# ------------------------------------------------------------------------------------ minibatch CKA
class MinibatchCKA:
    """Minibatch CKA of Nguyen, Raghu & Kornblith 2021 (ICLR, Sec. 3.1, Eq. 2-3), accumulated batch by batch.

    For minibatches ``k = 1..K`` of the same examples seen by both sides (batch size ``n_k >= 4``)::

        CKA_minibatch(i, j) = mean_k HSIC_u(K_ik, L_jk)
                              / sqrt(mean_k HSIC_u(K_ik, K_ik) * mean_k HSIC_u(L_jk, L_jk))

    with ``HSIC_u`` the unbiased estimator of Song et al. 2012 (Thm. 2; Nguyen et al. Eq. 3) on the
    linear kernels ``K_ik = X_ik X_ik^T`` of layer ``i`` in batch ``k``. Every ``HSIC_u`` is an unbiased
    estimate of the same population HSIC, so the averages converge as batches are added (the estimate
    does not depend on the batch order). Range [-1, 1] (Cauchy-Schwarz in the U-centered inner product);
    near 0, possibly slightly negative, for independent representations.

    Differs from :func:`cka` / :func:`cka_matrix` with ``debiased=True`` over all examples at once, which
    uses all ``N(N-1)`` example pairs instead of within-batch pairs only (they agree for one batch), and
    from the mean of per-batch CKA values (a ratio of means, not a mean of ratios).

    Per batch, all layer pairs are one blocked computation (as in :func:`cka_matrix`), float64 after
    centering, on the batches' device; the running sums stay there (no host synchronisation per pair)
    and are converted once by :meth:`result`. In the Gram plan the packed Gram stacks (about
    ``0.6 b^2 (La + Lb)`` entries, e.g. 125 MB in float64 for b = 1000 and 26 layers) are kept between
    updates and overwritten by the next batch of the same size.

    Parameters
    ----------
    kernel : {"linear"}
        Only the linear kernel: an RBF bandwidth set per batch from its median distance would change
        the kernel from batch to batch.
    precision : {"float64", "float32"}
        Floating-point type of the per-batch Gram products ``Xc Xc^T`` (used when the Gram plan is the
        cheaper one, i.e. batches smaller than the summed layer widths suggest) and of the stored Grams.
        Centering, every sum and the running accumulators are float64 either way. "float32" rounds the
        centered features to float32 before the GEMM (about twice the GEMM throughput and half the memory
        on CPUs, more on GPUs); each Gram entry then has a relative error of order ``sqrt(d) * 6e-8`` of
        ``|x_i| |x_j|``, which averages out in the float64 HSIC sums over ``b^2`` entries: CKA values
        typically change by < 1e-8 (the benchmark's 13 x 13 layers: at most 6e-10).

    Examples
    --------
    >>> acc = MinibatchCKA()
    >>> for xb, yb in batches:                              # doctest: +SKIP
    ...     acc.update({"l1": f1(xb), "l2": f2(xb)}, {"m1": g1(xb)})
    >>> acc.result(output="matrix")                         # doctest: +SKIP
    """

    measure = "cka_linear_minibatch"

    def __init__(self, *, kernel: str = "linear", precision: str = "float64") -> None:
        check_choice(kernel, ("linear",), "kernel")
        check_choice(precision, ("float64", "float32"), "precision")
        self.kernel = kernel
        self.precision = precision
        self.n_batches = 0
        self.n_samples = 0
        self._layout: tuple[dict[str, int], dict[str, int] | None] | None = None
        self._device: torch.device | None = None
        self._cross: torch.Tensor | None = None
        self._self_a: torch.Tensor | None = None
        self._self_b: torch.Tensor | None = None
        self._workspace: dict[str, torch.Tensor] = {}  # packed Gram stacks, reused from batch to batch

    def _check_layout(self, arg: str, layers: dict[str, torch.Tensor], first: dict[str, int]) -> None:
        names = list(layers)
        if names != list(first):
            raise ValueError(f"{arg} layers changed between updates: the first batch had {list(first)}, this "
                             f"one has {names}; pass the same layers (same names, same order) in every batch")
        for name, t in layers.items():
            if int(t.shape[1]) != first[name]:
                raise ValueError(f"{arg}[{name!r}] has width {int(t.shape[1])} but {first[name]} in the first "
                                 "batch; every batch must give each layer the same number of features")

    def update(self, a: Any, b: Any = None) -> MinibatchCKA:
        """Add one minibatch: ``a`` (and ``b``) hold the same ``n >= 4`` examples, each an [n, d] array or
        tensor (the one layer ``"features"``) or a mapping layer name -> [n, d]. ``b=None`` compares ``a``'s
        layers with each other; that choice, the layer names and widths must stay the same for every batch.
        Returns ``self``."""
        layers_a = layer_dict(a, "a", min_rows=4)
        layers_b = None if b is None else layer_dict(b, "b", min_rows=4)
        if self._layout is not None:
            first_a, first_b = self._layout
            if (first_b is None) != (layers_b is None):
                raise ValueError("b was " + ("given" if first_b is not None else "None")
                                 + " in the first update and must be so in every update "
                                 "(b=None compares a's layers with each other)")
            self._check_layout("a", layers_a, first_a)
            if layers_b is not None:
                self._check_layout("b", layers_b, first_b)
        n = check_same_rows(layers_a, layers_b)
        names_a = list(layers_a)
        names_b = None if layers_b is None else list(layers_b)
        tensors = list(layers_a.values()) + ([] if layers_b is None else list(layers_b.values()))
        tensors = same_device(tensors) if self._device is None else [t.to(self._device) for t in tensors]
        all_gram = _prefer_gram("linear", n, [int(t.shape[1]) for t in tensors[:len(names_a)]],
                                None if names_b is None else [int(t.shape[1]) for t in tensors[len(names_a):]])
        gram_dtype = torch.float32 if self.precision == "float32" else torch.float64
        side_a = _build_side(dict(zip(names_a, tensors[:len(names_a)])), "a", "linear", 0.5,
                             check_constant=False, all_gram=all_gram, gram_dtype=gram_dtype,
                             workspace=self._workspace)
        side_b = None if names_b is None else _build_side(dict(zip(names_b, tensors[len(names_a):])), "b",
                                                          "linear", 0.5, check_constant=False, all_gram=all_gram,
                                                          gram_dtype=gram_dtype, workspace=self._workspace)
        del tensors
        cross, self_a, self_b = _all_pairs(side_a, side_b, debiased=True)
        scale = 1.0 / (n * (n - 3))  # n(n-3) HSIC_u -> HSIC_u, so batches of different sizes average correctly
        if self._cross is None:
            self._device = cross.device
            self._cross = cross * scale
            self._self_a = self_a * scale
            self._self_b = self_b * scale
        else:
            self._cross += cross * scale
            self._self_a += self_a * scale
            self._self_b += self_b * scale
        if self._layout is None:
            self._layout = ({k: int(v.shape[1]) for k, v in layers_a.items()},
                            None if layers_b is None else {k: int(v.shape[1]) for k, v in layers_b.items()})
        self.n_batches += 1
        self.n_samples += n
        return self

    def result(self, *, output: str = "tidy") -> pd.DataFrame:
        """Minibatch CKA for every layer pair so far, as a table in the results schema (``measure`` =
        "cka_linear_minibatch"; columns as :func:`cka_matrix`) or a ``layer`` x ``layer_b`` matrix
        (``output="matrix"``).

        Raises ValueError before any :meth:`update`, or when a layer's mean self-HSIC_u is <= 0 (a layer
        constant in every batch)."""
        check_choice(output, OUTPUTS, "output")
        if self._cross is None:
            raise ValueError("MinibatchCKA has no batches yet; call update(a, b) first")
        first_a, first_b = self._layout
        names_a = list(first_a)
        names_b = names_a if first_b is None else list(first_b)
        k = self.n_batches
        mean_a = (self._self_a / k).cpu().numpy()
        mean_b = (self._self_b / k).cpu().numpy()
        for arg, names, means in (("a", names_a, mean_a), ("b", names_b, mean_b)):
            for name, value in zip(names, means):
                if not value > 0.0:
                    raise ValueError(f"{arg}[{name!r}]: mean self-HSIC_u over {k} batch(es) is {value:.3g} <= 0, "
                                     "so minibatch CKA is undefined (is the layer constant in every batch?)")
        values = ((self._cross / k) / torch.sqrt(torch.outer(self._self_a / k, self._self_b / k))).cpu().numpy()
        return to_frame(names_a, names_b, values, self.measure, output)


@declare(batches=Data("any", example=lambda: [(x, 2 * x) for x in np.split(Data().example(), 4)],
                      bad=[[(np.ones((8, 2)),) * 3], "batches"]),
         kernel=Options("linear"), output=Options(*OUTPUTS))
def minibatch_cka(batches: Iterable[Any], *, kernel: str = "linear", output: str = "tidy") -> pd.DataFrame:
    """Minibatch CKA (Nguyen, Raghu & Kornblith 2021, ICLR, Sec. 3.1, Eq. 2-3) over an iterable of batches.

    Each item is a pair ``(a, b)`` of batches for the same ``n >= 4`` examples, each a mapping layer name ->
    [n, d] (or one [n, d] array); ``b`` may be ``None``, or the item a single mapping, to compare ``a``'s
    layers with each other. Shorthand for feeding :class:`MinibatchCKA` and calling ``result(output=...)``;
    see there for the formula and how it differs from :func:`cka_matrix`.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(64, 6))
    >>> batches = [{"x": x[i:i + 16], "2x": 2 * x[i:i + 16]} for i in range(0, 64, 16)]    # 4 batches of 16
    >>> minibatch_cka(batches, output="matrix").to_numpy().round(6)                        # invariant to scale
    array([[1., 1.],
           [1., 1.]])
    """
    acc = MinibatchCKA(kernel=kernel)
    for i, item in enumerate(batches):
        if isinstance(item, (Mapping, np.ndarray, torch.Tensor)):
            acc.update(item)
        elif isinstance(item, (tuple, list)) and len(item) == 2:
            acc.update(item[0], item[1])
        else:
            raise TypeError(f"batches[{i}] must be a pair (a, b) of layer -> [n, d] mappings "
                            f"(or one mapping or array), got {type(item).__name__}")
    return acc.result(output=output)

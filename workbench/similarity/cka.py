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

Namesakes: this is *not* SVCCA/PWCCA (CCA-based), nor kernel alignment of Cristianini et al. 2002
(uncentered), nor "minibatch CKA" of Nguyen et al. 2021 (which averages HSIC_u over batches).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch

from .._validation import as_2d_tensor, check_choice

__all__ = ["cka", "cka_matrix"]

_KERNELS = ("linear", "rbf")


def _measure_name(kernel: str, debiased: bool) -> str:
    return f"cka_{kernel}" + ("_debiased" if debiased else "")


@dataclass
class _Prepared:
    """Everything about one representation that CKA needs, computed once.

    Exactly one of ``feats`` (centered features Xc, float64) or ``gram`` (doubly centered Gram HKH)
    is set. ``diag`` is diag(HKH), ``offrow`` the row sums of HKH with its diagonal removed and
    ``total`` their sum; they feed the unbiased HSIC.
    """

    name: str
    n: int
    feats: torch.Tensor | None
    gram: torch.Tensor | None
    diag: torch.Tensor
    offrow: torch.Tensor
    total: torch.Tensor


def _median_all(values: torch.Tensor) -> torch.Tensor:
    """Median of all entries with numpy semantics (mean of the two middle values for an even count)."""
    flat = values.reshape(-1)
    m = flat.numel()
    if m % 2:
        return torch.kthvalue(flat, (m + 1) // 2).values
    return 0.5 * (torch.kthvalue(flat, m // 2).values + torch.kthvalue(flat, m // 2 + 1).values)


def _prepare(x: torch.Tensor, name: str, kernel: str, sigma: float, path: str | None = None) -> _Prepared:
    """Center one representation (float64) and build what the cross terms need.

    ``path`` forces "features" or "gram" (tests); by default a linear kernel uses the feature-space
    form when the width is below the number of samples, the Gram form otherwise.
    """
    n, d = x.shape
    if bool(torch.all(x == x[:1])):
        raise ValueError(f"{name} is constant across all {n} samples: its self-similarity HSIC is zero, so "
                         "CKA is undefined; drop this representation (or check the activations)")
    xc = x - x.mean(dim=0, keepdim=True)
    if path is None:
        path = "features" if (kernel == "linear" and d < n) else "gram"
    if path == "features":
        if kernel != "linear":
            raise ValueError("the feature-space path exists only for kernel='linear'")
        diag = (xc * xc).sum(dim=1)
        row = xc @ xc.sum(dim=0)  # (Xc Xc^T) 1, zero up to rounding
        offrow = row - diag
        return _Prepared(name, n, xc, None, diag, offrow, offrow.sum())
    dots = xc @ xc.T
    if kernel == "linear":
        gram = dots
    else:
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
    row_mean = gram.mean(dim=1, keepdim=True)
    gram = gram - row_mean - row_mean.T + row_mean.mean()
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


def _self_hsic(p: _Prepared, debiased: bool) -> float:
    value = _hsic(p, p, debiased)
    if not value > 0.0:
        what = "unbiased HSIC" if debiased else "HSIC"
        raise ValueError(f"{p.name}: self-{what} is {value:.3g} <= 0, so CKA is undefined"
                         + ("; the debiased estimator needs more samples (or use debiased=False)"
                            if debiased else "; the representation carries no variance"))
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


def _to_device(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Move all inputs to the first non-CPU device among them (so CUDA inputs stay on the GPU)."""
    device = next((t.device for t in tensors if t.device.type != "cpu"), torch.device("cpu"))
    return [t.to(device) for t in tensors]


def _min_rows(debiased: bool) -> int:
    return 4 if debiased else 2


def cka(X: Any, Y: Any, kernel: str = "linear", debiased: bool = False, sigma: float = 0.5) -> float:
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
    X, Y : array or tensor, shape [N, p] and [N, q]
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
    """
    _check_args(kernel, debiased, sigma)
    x = as_2d_tensor(X, "X", min_rows=_min_rows(debiased))
    y = as_2d_tensor(Y, "Y", min_rows=_min_rows(debiased))
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"mismatched number of samples: X has {x.shape[0]}, Y has {y.shape[0]}; "
                         "pass representations of the same examples (same rows, same order)")
    x, y = _to_device([x, y])
    a = _prepare(x, "X", kernel, sigma)
    b = _prepare(y, "Y", kernel, sigma)
    return _hsic(a, b, debiased) / float(np.sqrt(_self_hsic(a, debiased) * _self_hsic(b, debiased)))


def _validate_layers(layers: Any, arg: str, debiased: bool) -> dict[str, torch.Tensor]:
    if not isinstance(layers, Mapping):
        raise TypeError(f"{arg} must be a mapping layer name -> [N, d] array, got {type(layers).__name__}; "
                        f"wrap a single array as {{'layer': x}}")
    if len(layers) == 0:
        raise ValueError(f"{arg} is empty; pass at least one layer")
    return {str(k): as_2d_tensor(v, f"{arg}[{k!r}]", min_rows=_min_rows(debiased)) for k, v in layers.items()}


def cka_matrix(A: Mapping[str, Any], B: Mapping[str, Any] | None = None, kernel: str = "linear",
               debiased: bool = False, sigma: float = 0.5, output: str = "tidy") -> pd.DataFrame:
    """CKA between every layer of ``A`` and every layer of ``B`` (``B=None``: ``A`` against itself).

    Same definition as :func:`cka` (Kornblith et al. 2019; unbiased HSIC of Song et al. 2012 when
    ``debiased``). Each layer is centered (float64) and its self-HSIC computed exactly once; only the
    cross terms are computed per pair. A linear-kernel layer narrower than ``N`` is kept as centered
    features (cross term ``||Xc_i^T Yc_j||_F^2``, one GEMM per pair, also for the debiased estimator),
    any other layer as its centered [N, N] Gram matrix (memory ``8 N^2`` bytes per such layer).
    With ``B=None`` only the upper triangle is computed and mirrored.

    Parameters
    ----------
    A, B : mapping layer name -> array or tensor [N, d_layer]
        All layers (of both mappings) must hold the same ``N`` examples in the same order; widths may differ.
    kernel, debiased, sigma
        As in :func:`cka`.
    output : {"tidy", "matrix"}
        "tidy": one row per pair with columns ``layer_a, layer_b, index_a, index_b, measure, value``
        (``index_*`` = position of the layer in its mapping; ``measure`` is "cka_linear",
        "cka_linear_debiased", "cka_rbf" or "cka_rbf_debiased").
        "matrix": values with ``A``'s layers as the index and ``B``'s as the columns.

    Returns
    -------
    pandas.DataFrame

    Raises
    ------
    ValueError
        Layers with different ``N`` (the message names them), constant layers, bad values (see :func:`cka`).
    TypeError
        ``A``/``B`` not a mapping.
    """
    _check_args(kernel, debiased, sigma)
    check_choice(output, ("tidy", "matrix"), "output")
    layers_a = _validate_layers(A, "A", debiased)
    layers_b = layers_a if B is None else _validate_layers(B, "B", debiased)
    sizes = {f"A[{k!r}]": v.shape[0] for k, v in layers_a.items()}
    if B is not None:
        sizes.update({f"B[{k!r}]": v.shape[0] for k, v in layers_b.items()})
    if len(set(sizes.values())) > 1:
        ref = next(iter(sizes.values()))
        odd = ", ".join(f"{k} has {n}" for k, n in sizes.items() if n != ref)
        raise ValueError(f"all layers must hold the same examples: {next(iter(sizes))} has {ref} rows but {odd}")

    names_a, names_b = list(layers_a), list(layers_b)
    all_t = _to_device(list(layers_a.values()) + ([] if B is None else list(layers_b.values())))
    prep_a = [_prepare(t, f"A[{k!r}]", kernel, sigma) for k, t in zip(names_a, all_t[:len(names_a)])]
    prep_b = prep_a if B is None else [_prepare(t, f"B[{k!r}]", kernel, sigma)
                                       for k, t in zip(names_b, all_t[len(names_a):])]
    self_a = [_self_hsic(p, debiased) for p in prep_a]
    self_b = self_a if B is None else [_self_hsic(p, debiased) for p in prep_b]

    values = np.empty((len(prep_a), len(prep_b)))
    for i, pa in enumerate(prep_a):
        for j, pb in enumerate(prep_b):
            if B is None and j < i:
                values[i, j] = values[j, i]
                continue
            values[i, j] = _hsic(pa, pb, debiased) / np.sqrt(self_a[i] * self_b[j])

    if output == "matrix":
        return pd.DataFrame(values, index=pd.Index(names_a, name="layer_a"),
                            columns=pd.Index(names_b, name="layer_b"))
    measure = _measure_name(kernel, debiased)
    rows = [(na, nb, i, j, measure, float(values[i, j]))
            for i, na in enumerate(names_a) for j, nb in enumerate(names_b)]
    return pd.DataFrame(rows, columns=["layer_a", "layer_b", "index_a", "index_b", "measure", "value"])

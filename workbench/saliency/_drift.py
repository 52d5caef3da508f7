"""Attribution drift: how the explanation of the same inputs changes across checkpoints and runs."""
from __future__ import annotations

import itertools
import math
import numbers
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from scipy.stats import rankdata

from .._validation import Data, Flag, Interval, Options, check_choice, check_finite, check_fraction, declare
from ..results import tidy
from ._examples import example_attribution
from ._result import CHANNEL_REDUCTIONS, Attribution, feature_map

# two maps [N, ...] of the same examples and features (arrays, tensors or Attributions)
_MAP = Data("x", bad=[np.zeros(Data.N), "features"])
_K = Interval(float, 0, 1, closed="right")

__all__ = ["rank_correlation", "topk_overlap", "drift"]


def _rows(x: Any, name: str) -> np.ndarray:
    """Attribution scores [N, ...] as a finite float64 array [N, F] (the features flattened); strings, NaN/Inf and
    empty maps are refused naming ``name``."""
    if isinstance(x, Attribution):
        x = x.map("l1")
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        x = x.to(torch.float64).numpy() if x.dtype != torch.bool else x.numpy()
    elif not isinstance(x, (np.ndarray, list, tuple)):
        raise TypeError(f"{name} must be a numeric array, tensor or Attribution [N, ...], got {type(x).__name__}")
    arr = np.asarray(x)
    if arr.dtype == object:  # numbers held as Python objects: converted; strings, None, ... refused
        odd = [v for v in arr.ravel() if not isinstance(v, numbers.Real)][:1]
        if odd:
            raise TypeError(f"{name} must hold numeric feature scores, got an object array holding "
                            f"{type(odd[0]).__name__} values such as {odd[0]!r}")
    elif arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold numeric feature scores, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if arr.ndim < 2:
        raise ValueError(f"{name} must be [N, ...] (one row of feature scores per example), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape}); pass at least one example with at least one feature")
    check_finite(arr, name)
    return arr.reshape(len(arr), -1)


def _pair(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    a, b = _rows(a, "a"), _rows(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a and b must describe the same examples and features, got {a.shape} and {b.shape}")
    return a, b


@declare(a=_MAP, b=_MAP, constant=Options("raise", "nan"))
def rank_correlation(a: Any, b: Any, *, constant: str = "raise") -> np.ndarray:
    """Spearman rank correlation per example between two attribution maps ``[N, ...]`` (flattened).

    ``rho = corr(rank(a_i), rank(b_i))`` (Pearson correlation of the ranks, ties given their average rank, as
    in ``scipy.stats.spearmanr``), float64. An :class:`Attribution` is compared through its ``map("l1")``.

    A row with the same score in every feature (e.g. an all-zero attribution) has no ranking, so its correlation
    is undefined: ``constant="raise"`` (default) refuses such input with a ValueError naming ``a`` or ``b`` and
    the rows; ``constant="nan"`` returns NaN for those rows (as :func:`drift` does, which counts the finite
    values in its ``n`` column).
    """
    check_choice(constant, ("raise", "nan"), "constant")
    a, b = _pair(a, b)
    if constant == "raise":
        for name, m in (("a", a), ("b", b)):
            flat = np.flatnonzero((m == m[:, :1]).all(axis=1))
            if flat.size:
                raise ValueError(f"{name} has {flat.size} row(s) with the same score in every feature (rows "
                                 f"{flat[:5].tolist()}), whose rank correlation is undefined; drop those examples, "
                                 "or pass constant='nan' to get NaN for them")
    ra = rankdata(a, axis=1) - (a.shape[1] + 1) / 2
    rb = rankdata(b, axis=1) - (a.shape[1] + 1) / 2
    denom = np.sqrt((ra * ra).sum(1) * (rb * rb).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (ra * rb).sum(1) / denom, np.nan)


@declare(a=_MAP, b=_MAP, k=_K)
def topk_overlap(a: Any, b: Any, k: float = 0.1) -> np.ndarray:
    """Jaccard overlap of the top-``k`` fraction of features per example: ``|A ∩ B| / |A ∪ B|``.

    ``A`` (``B``) are the ``max(1, ceil(k F))`` features with the largest values in ``a`` (``b``), ties broken by
    position (first wins). 1 = the same top features, 0 = disjoint.
    """
    k = check_fraction(k, "k")
    if k == 0:
        raise ValueError("k must be a fraction in (0, 1]")
    a, b = _pair(a, b)
    n, f = a.shape
    top = max(1, math.ceil(k * f))
    ia = np.argsort(-a, axis=1, kind="stable")[:, :top]
    ib = np.argsort(-b, axis=1, kind="stable")[:, :top]
    in_a = np.zeros((n, f), bool)
    in_b = np.zeros((n, f), bool)
    np.put_along_axis(in_a, ia, True, axis=1)
    np.put_along_axis(in_b, ib, True, axis=1)
    return (in_a & in_b).sum(1) / (in_a | in_b).sum(1)


@declare(attributions=Data("any", example=lambda: [example_attribution("a", 0), example_attribution("b", 1)],
                           bad=[[], "attributions", [np.zeros((Data.N, 4)), np.zeros((Data.N, 4))]]),
         k=_K, channels=Options(*CHANNEL_REDUCTIONS), pairs=Options("all", "consecutive"), per_example=Flag())
def drift(attributions: Sequence[Attribution], *, k: float = 0.1, channels: str = "l1", pairs: str = "all",
          per_example: bool = False) -> pd.DataFrame:
    """Pairwise agreement of attributions of the same inputs (from :func:`attribute_checkpoints`).

    Each attribution becomes a map ``feature_map(attr, channels)`` (default: ``sum_c |a_c|`` per position);
    pairs are compared by :func:`rank_correlation` (``measure = "spearman"``) and :func:`topk_overlap` at
    ``k`` (``measure = "topk_overlap"``).

    Parameters
    ----------
    pairs : "all" (every unordered pair) or "consecutive" (successive checkpoints within each run, in order).
    per_example : one row per example (column ``example``) instead of the mean over examples.

    Returns
    -------
    DataFrame in the results schema (:mod:`workbench.results`): ``run`` / ``step`` of the first attribution of
    each pair, ``measure``, ``value``, then the extra columns ``run_b``, ``step_b`` (the second attribution),
    ``example`` (with ``per_example``) or ``n`` (examples with a finite value), ``k`` and ``method``.
    """
    check_choice(pairs, ("all", "consecutive"), "pairs")
    check_choice(channels, CHANNEL_REDUCTIONS, "channels")
    items = list(attributions)
    if len(items) < 2 or not all(isinstance(a, Attribution) for a in items):
        raise ValueError("attributions must be a list of at least two Attribution objects (e.g. from "
                         "attribute_checkpoints over several checkpoints or runs)")
    first = items[0]
    for a in items[1:]:
        if a.inputs.shape != first.inputs.shape or not torch.equal(a.inputs, first.inputs):
            raise ValueError("drift compares attributions of the same inputs; these attributions were computed on "
                             "different inputs")
        if a.attributions.shape != first.attributions.shape:
            raise ValueError(f"attribution shapes differ ({tuple(first.attributions.shape)} vs "
                             f"{tuple(a.attributions.shape)}); use the same method and layer for every model")
    maps = [feature_map(a.attributions, channels, kind=a.kind) for a in items]
    for i, m in enumerate(maps):
        check_finite(m, f"attributions[{i}]")  # named here: rank_correlation would call it a or b
    if pairs == "all":
        index_pairs = list(itertools.combinations(range(len(items)), 2))
    else:
        index_pairs = [(i, i + 1) for i in range(len(items) - 1) if items[i].run == items[i + 1].run]
    rows = []
    for i, j in index_pairs:
        a, b = items[i], items[j]
        values = {"spearman": rank_correlation(maps[i], maps[j], constant="nan"),
                  "topk_overlap": topk_overlap(maps[i], maps[j], k)}
        meta = {"run": a.run, "step": a.step, "run_b": b.run, "step_b": b.step}
        for measure, v in values.items():
            if per_example:
                rows.append(pd.DataFrame({**meta, "measure": measure, "value": v, "example": np.arange(len(v))}))
            else:
                rows.append(pd.DataFrame([{**meta, "measure": measure, "value": float(np.nanmean(v)),
                                           "n": int(np.isfinite(v).sum())}]))
    return tidy(pd.concat(rows, ignore_index=True), k=k, method=first.method)

"""One-to-one unit matching between two representations (Li, Yosinski, Clune, Lipson & Hopcroft 2016,
"Convergent learning: do different neural networks learn the same representations?", ICLR).

Definitions
-----------
For ``X`` [N, p] and ``Y`` [N, q] over the same ``N`` examples, the unit correlation matrix is the Pearson
correlation of every unit (column) of ``X`` with every unit of ``Y``::

    C_ij = <xc_i, yc_j> / (||xc_i|| ||yc_j||),      xc_i = x_i - mean(x_i)        [p, q]

(float64 accumulation whatever the input dtype). Li et al. pair units through ``C``:

* **matching** (their "bipartite matching", Sec. 3): the one-to-one assignment ``pi`` of units of the narrower
  representation to distinct units of the other that maximizes ``sum_i S_{i, pi(i)}`` (the Hungarian algorithm;
  here ``scipy.optimize.linear_sum_assignment``, rectangular when ``p != q``: ``min(p, q)`` pairs), and the value
  is the mean matched score ``(1 / min(p, q)) sum_i S_{i, pi(i)}``;
* **semi-matching** (their "bipartite semi-matching"): every unit is paired with its best unit of the other
  network, without the one-to-one constraint. Li et al. pair each unit of net 1 with net 2 (directional); here
  ``semi=True`` returns the symmetric mean of both directions, ``(mean_i max_j S_ij + mean_j max_i S_ij) / 2``,
  so that the value does not depend on which run is ``a``.

``S = |C|`` by default (``absolute=True``): a unit and its negation carry the same feature, so a sign flip of a
unit (e.g. of a linear layer or a pre-activation) is not a mismatch; Li et al. match on ``C`` itself, which for
their post-ReLU units (non-negative, rarely anti-correlated) hardly differs: ``absolute=False`` gives their rule.

Both lie in [0, 1] (``|C|``) and equal 1 for a copy whose units are permuted, rescaled (per unit, by any non-zero
factor with ``absolute=True``, positive otherwise) and shifted. Unlike linear CKA or Procrustes similarity they
are **not** invariant to rotations of the representation: a rotated copy spans the same subspace with a
different basis, and its units match only partially. That difference is what "networks trained from different
seeds share subspaces but not bases" (Li et al. 2016) measures. Semi-matching >= matching always (the
constraint-free maximum of each row is at least its matched entry).

Units that do not vary (constant over the ``N`` examples: dead ReLUs, padding channels) have no correlation. They
are **left out** (a warning counts them) and the matching runs on the units that vary; a representation with no
varying unit is an error. A unit counts as constant when its range ``max - min`` is at most ``8 * eps * max|x|``
over its values, ``eps`` the machine epsilon of the input's dtype (rounding noise of a constant float32 column
is not a signal).

Namesakes: not the weight-matching permutation of Ainsworth et al. 2023 ("Git re-basin": matching on weights
or on the activations' inner products, to merge models) and not CCA (which aligns by any invertible linear map).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from .._validation import Data, Flag, Options, as_2d_tensor, declare
from ._cca import _EPS64, _dtype_eps, _pairwise_bases
from ._pairs import OUTPUTS, same_device

__all__ = ["unit_correlations", "match_units", "unit_matching", "unit_matching_matrix"]

#: correlations do not depend on the scale of either input: extreme magnitudes are rescaled exactly
_INVARIANT_X = Data("x", scale="invariant")
_INVARIANT_LAYERS = Data("layers", scale="invariant")
_INVARIANT_LAYERS_OR_NONE = Data("layers", none=True, scale="invariant")
_CONSTANT_SLACK = 8.0  # a unit whose range is within this many machine epsilons of its magnitude is constant


@dataclass
class _Units:
    """One representation's varying units, centered and scaled to unit norm: ``z`` [N, live]; ``live`` the
    indices of those units among the ``width`` columns."""

    name: str
    z: torch.Tensor
    live: np.ndarray
    width: int


def _prepare(x: torch.Tensor, name: str, eps: float = _EPS64) -> _Units:
    x = x.to(torch.float64)
    hi, lo = x.max(dim=0).values, x.min(dim=0).values
    magnitude = torch.maximum(hi.abs(), lo.abs())
    varies = (hi - lo) > _CONSTANT_SLACK * eps * magnitude
    width, n_live = int(x.shape[1]), int(varies.sum())
    if n_live == 0:
        raise ValueError(f"{name}: none of its {width} units varies over the {x.shape[0]} examples (all are "
                         "constant, e.g. dead ReLUs), so no unit has a correlation to match; pass a representation "
                         "with varying units or more examples")
    if n_live < width:
        warnings.warn(f"{name}: {width - n_live} of its {width} units are constant over the {x.shape[0]} examples "
                      "(dead units) and are left out of the unit matching", stacklevel=4)
    xc = x[:, varies] - x[:, varies].mean(dim=0, keepdim=True)
    z = xc / torch.linalg.vector_norm(xc, dim=0, keepdim=True)
    return _Units(name, z, np.flatnonzero(varies.cpu().numpy()), width)


def _check_rows(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"mismatched number of samples: a has {x.shape[0]}, b has {y.shape[0]}; pass "
                         "representations of the same examples (same rows, same order)")


def _corr(pa: _Units, pb: _Units) -> np.ndarray:
    return np.clip((pa.z.T @ pb.z).cpu().numpy(), -1.0, 1.0)


def _assign(score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from scipy.optimize import linear_sum_assignment

    return linear_sum_assignment(score, maximize=True)


def _value(pa: _Units, pb: _Units, semi: bool, absolute: bool) -> float:
    c = _corr(pa, pb)
    s = np.abs(c) if absolute else c
    if semi:
        return float((s.max(axis=1).mean() + s.max(axis=0).mean()) / 2.0)
    rows, cols = _assign(s)
    return float(s[rows, cols].mean())


def _pair(a: Any, b: Any) -> tuple[_Units, _Units]:
    x = as_2d_tensor(a, "a", min_rows=2)
    y = as_2d_tensor(b, "b", min_rows=2)
    _check_rows(x, y)
    x, y = same_device([x, y])
    return _prepare(x, "a", _dtype_eps(a)), _prepare(y, "b", _dtype_eps(b))


@declare(a=_INVARIANT_X, b=_INVARIANT_X)
def unit_correlations(a: Any, b: Any) -> np.ndarray:
    """Pearson correlation of every unit (column) of ``a`` with every unit of ``b`` on the same examples.

    ``C_ij = <xc_i, yc_j> / (||xc_i|| ||yc_j||)`` with column-centered ``xc``, ``yc`` (float64), the matrix Li et
    al. 2016 ("Convergent learning", ICLR) match units on; see the module docstring.

    Parameters
    ----------
    a, b : array or tensor, shapes [N, p] and [N, q]
        Same examples in the same order; widths may differ.

    Returns
    -------
    numpy.ndarray [p, q] in [-1, 1]. The rows of constant units of ``a`` and the columns of constant units of
    ``b`` (no correlation is defined) are 0, with a warning counting them.

    Raises
    ------
    ValueError
        NaN/Inf, 1-D input, fewer than 2 examples, different ``N``, or a representation none of whose units varies.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(100, 3))
    >>> c = unit_correlations(x, -2 * x[:, [2, 0, 1]] + 1)       # permuted, rescaled, negated, shifted
    >>> c.argmin(axis=1), c.min(axis=1).round(6)
    (array([1, 2, 0]), array([-1., -1., -1.]))
    """
    pa, pb = _pair(a, b)
    out = np.zeros((pa.width, pb.width))
    out[np.ix_(pa.live, pb.live)] = _corr(pa, pb)
    out[np.abs(out) < 1e-12] = 0.0  # orthogonal units: exact 0 rather than rounding noise of either sign
    return out


@declare(a=_INVARIANT_X, b=_INVARIANT_X, absolute=Flag())
def match_units(a: Any, b: Any, *, absolute: bool = True) -> pd.DataFrame:
    """The one-to-one unit assignment of Li et al. 2016 (Hungarian algorithm on the unit correlations).

    Maximizes ``sum_i S_{i, pi(i)}`` with ``S = |C|`` (``absolute=True``) or ``S = C`` over one-to-one
    assignments ``pi`` between the varying units of ``a`` and of ``b`` (``scipy.optimize.linear_sum_assignment``;
    ``min(p, q)`` pairs when the widths differ); constant units are left out, with a warning.

    Parameters
    ----------
    a, b : array or tensor, shapes [N, p] and [N, q]
        Same examples in the same order.
    absolute : bool
        Match on ``|C|`` (default; a sign flip is no mismatch) or on ``C`` itself (Li et al.'s rule).

    Returns
    -------
    DataFrame, one row per matched pair, sorted by ``unit_a``: ``unit_a``, ``unit_b`` (column indices) and
    ``correlation`` (the signed ``C`` of the pair).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(100, 3))
    >>> match_units(x, x[:, [2, 0, 1]])[["unit_a", "unit_b"]].to_numpy().tolist()
    [[0, 1], [1, 2], [2, 0]]
    """
    pa, pb = _pair(a, b)
    c = _corr(pa, pb)
    rows, cols = _assign(np.abs(c) if absolute else c)
    order = np.argsort(rows)
    rows, cols = rows[order], cols[order]
    return pd.DataFrame({"unit_a": pa.live[rows].astype(np.int64), "unit_b": pb.live[cols].astype(np.int64),
                         "correlation": c[rows, cols].astype(np.float64)})


@declare(a=_INVARIANT_X, b=_INVARIANT_X, semi=Flag(), absolute=Flag())
def unit_matching(a: Any, b: Any, *, semi: bool = False, absolute: bool = True) -> float:
    """Mean correlation of matched units (Li et al. 2016, "Convergent learning", ICLR): 1 when ``b``'s units are
    ``a``'s up to order, scale, sign and shift; below 1 for a rotated copy, which CKA cannot tell apart.

    ``semi=False`` (matching): ``(1 / min(p, q)) sum_i S_{i, pi(i)}`` over the one-to-one assignment ``pi``
    maximizing the sum (Hungarian algorithm, :func:`match_units`). ``semi=True`` (semi-matching, symmetrised):
    ``(mean_i max_j S_ij + mean_j max_i S_ij) / 2``. ``S = |C|`` (``absolute=True``) or ``C``, with ``C`` the unit
    correlations (:func:`unit_correlations`). Constant (dead) units are left out, with a warning. See the module
    docstring.

    Parameters
    ----------
    a, b : array or tensor, shapes [N, p] and [N, q]
        Same examples in the same order; widths may differ (rectangular assignment).
    semi : bool
        False: one-to-one matching; True: each unit's best match, both directions averaged.
    absolute : bool
        Score pairs by ``|C|`` (default) or by ``C`` (Li et al.'s rule; may then be negative).

    Returns
    -------
    float in [0, 1] (``absolute=True``); ``semi=True`` is >= the matching.

    Raises
    ------
    ValueError
        NaN/Inf, 1-D input, fewer than 2 examples, different ``N``, or a representation none of whose units varies.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(2000, 8)) * np.arange(1, 9)       # 8 units of different scales
    >>> round(unit_matching(x, -3 * x[:, ::-1]), 6)              # permuted, rescaled, sign-flipped: 1
    1.0
    >>> q, _ = np.linalg.qr(rng.normal(size=(8, 8)))            # a random rotation: same subspace, new basis
    >>> unit_matching(x, x @ q) < 0.9
    True
    """
    pa, pb = _pair(a, b)
    return _value(pa, pb, bool(semi), bool(absolute))


@declare(a=_INVARIANT_LAYERS, b=_INVARIANT_LAYERS_OR_NONE, semi=Flag(), absolute=Flag(), output=Options(*OUTPUTS))
def unit_matching_matrix(a: Any, b: Any = None, *, semi: bool = False, absolute: bool = True,
                         output: str = "tidy") -> pd.DataFrame:
    """:func:`unit_matching` for every layer of ``a`` against every layer of ``b`` (``b=None``: ``a`` vs itself).

    Each layer is centered and normalized once; a pair costs one ``[p, q]`` product and one assignment.

    Parameters
    ----------
    a, b : array or tensor [N, d] (the one layer ``"features"``), ``Activations``, or mapping layer name ->
        array or tensor [N, d_layer]
        Same ``N`` examples in the same order everywhere; widths may differ.
    semi, absolute
        As in :func:`unit_matching`.
    output : {"tidy", "matrix"}
        "tidy": the results schema, one row per pair (``layer``, ``layer_index``, ``layer_b``, ``layer_index_b``)
        with ``measure`` ``"unit_matching"`` or ``"unit_semimatching"``; "matrix": ``a``'s layers as the index,
        ``b``'s as the columns.

    Returns
    -------
    pandas.DataFrame

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(500, 4))
    >>> unit_matching_matrix({"x": x, "permuted": x[:, ::-1]}, output="matrix").to_numpy().round(6)
    array([[1., 1.],
           [1., 1.]])
    """
    semi, absolute = bool(semi), bool(absolute)
    name = "unit_semimatching" if semi else "unit_matching"
    return _pairwise_bases(a, b, _prepare, lambda pa, pb: _value(pa, pb, semi, absolute), name, output,
                           symmetric=True)

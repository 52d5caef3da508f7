"""Linear concept erasure: iterative nullspace projection (INLP) and random-direction projections (its control)."""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

from .._validation import Data, Interval, as_2d_float, check_labels, check_same_length, declare
from ..probing import bootstrap_ci
from ..results import tidy

__all__ = ["nullspace_projection", "random_projection", "NullspaceProjection", "orthonormal_basis"]

#: singular values below this fraction of the largest (and of 1 for unit rows) count as zero in a span
_RANK_RTOL = 1e-8


@dataclasses.dataclass(frozen=True)
class NullspaceProjection:
    """The result of :func:`nullspace_projection` (and :func:`leace_projection`).

    Attributes
    ----------
    projection : [D, D] float64, idempotent, applied to row vectors: ``x ↦ μ + (x − μ) P``. INLP's is symmetric,
        ``P = I − Q Qᵀ`` (``Q``: orthonormal basis of the removed directions); LEACE's is oblique.
    directions : [k, D] float64, the removed directions as unit rows, in the order the classifiers found them
        (a binary classifier gives one; a K-class one the orthonormal basis of its weights' row space); for LEACE an
        orthonormal basis of the range of ``I − P``.
    iteration : [k] int, the iteration whose classifier gave each direction.
    mean : [D] float64, the mean of ``x`` the projection is centred on.
    table : tidy held-out probe accuracy after each iteration (:func:`nullspace_projection`), or before and after
        the erasure (:func:`leace_projection`).
    chance : the held-out accuracy of always predicting the most common class.
    """

    projection: np.ndarray
    directions: np.ndarray
    iteration: np.ndarray
    mean: np.ndarray
    table: pd.DataFrame
    chance: float

    @property
    def n_removed(self) -> int:
        """The dimension of the removed subspace, ``D − rank(P)``."""
        return round(float(self.projection.shape[0] - np.trace(self.projection)))

    def apply(self, x: Any) -> np.ndarray:
        """``x`` with the directions removed: ``μ + (x − μ) P`` (float64 [N, D])."""
        arr = as_2d_float(x, "x")
        if arr.shape[1] != self.projection.shape[0]:
            raise ValueError(f"x has {arr.shape[1]} features but the projection is {self.projection.shape[0]}-"
                             "dimensional; pass the layer the projection was computed on")
        return self.mean + (arr - self.mean) @ self.projection


@declare(rows=Data("x"))
def orthonormal_basis(rows: Any) -> np.ndarray:
    """An orthonormal basis ``[r, D]`` of the span of ``rows`` ``[k, D]`` (SVD; singular values below
    ``1e-8 · max(1, s_max)`` are dropped; all-zero rows give ``[0, D]``).

    >>> abs(orthonormal_basis([[2.0, 0.0], [4.0, 0.0]])).tolist()
    [[1.0, 0.0]]
    """
    a = as_2d_float(rows, "rows")
    return _basis(a)


def _basis(a: np.ndarray) -> np.ndarray:
    if a.shape[0] == 0:
        return np.zeros((0, a.shape[1]))
    _, s, vt = np.linalg.svd(a, full_matrices=False)
    keep = s > _RANK_RTOL * max(1.0, float(s[0]))
    return vt[keep]


def _new_directions(coef: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """Unit rows spanning the part of a classifier's row space outside ``basis`` (round-off of the previous
    projections removed); a binary classifier's one direction keeps its sign (towards the second class)."""
    w = coef - (coef @ basis.T) @ basis
    if w.shape[0] == 1:
        norm = float(np.linalg.norm(w))
        return w / norm if norm > _RANK_RTOL * max(1.0, float(np.linalg.norm(coef))) else w[:0]
    return _basis(w)


def _projection_from(basis: np.ndarray, d: int) -> np.ndarray:
    p = np.eye(d) - basis.T @ basis
    return (p + p.T) / 2  # exactly symmetric


def stratified_holdout(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask of held-out rows: ``ceil(fraction · n_c)`` rows of each class c (at least 1, at most n_c − 1)."""
    held = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) < 2:
            raise ValueError(f"labels: class {c} has {len(idx)} example(s); nullspace_projection holds out part of "
                             "every class, so each class needs at least 2 examples")
        k = min(len(idx) - 1, max(1, math.ceil(fraction * len(idx))))
        held[rng.permutation(idx)[:k]] = True
    return held


def heldout_probe(z: np.ndarray, y: np.ndarray, held: np.ndarray, *, C: float, max_iter: int, n_boot: int,
                  alpha: float, seed: int) -> tuple[LogisticRegression, float, float, float]:
    """An L2 logistic regression fitted on the rows not ``held`` out, and its held-out accuracy with a bootstrap
    interval: ``(classifier, accuracy, ci_low, ci_high)``."""
    clf = LogisticRegression(C=C, max_iter=max_iter)
    clf.fit(z[~held], y[~held])  # a fit that does not converge warns (sklearn's ConvergenceWarning)
    correct = (clf.predict(z[held]) == y[held]).astype(np.float64)
    lo, hi = bootstrap_ci(correct, n_boot=n_boot, alpha=alpha, seed=seed) if n_boot else (np.nan, np.nan)
    return clf, float(correct.mean()), lo, hi


def chance_of(y: np.ndarray) -> float:
    """The accuracy of always predicting the most common class of ``y``."""
    _, counts = np.unique(y, return_counts=True)
    return float(counts.max() / len(y))


@declare(x=Data("x"), labels=Data("labels"), n_iterations=Interval(int, 1),
         C=Interval(float, 0, None, closed="neither"), seed=Interval(int, 0), tol=Interval(float, 0, 1, none=True),
         holdout=Interval(float, 0, 1, closed="neither"),
         n_boot=Interval(int, 0), ci_level=Interval(float, 0, 1, closed="neither"), max_iter=Interval(int, 1))
def nullspace_projection(x: Any, labels: Any, *, n_iterations: int = 20, C: float = 1.0, seed: int = 0,
                         tol: float | None = None, holdout: float = 0.3, n_boot: int = 1000, ci_level: float = 0.95,
                         max_iter: int = 1000) -> NullspaceProjection:
    """Iterative nullspace projection (INLP; Ravfogel, Elazar, Gonen, Twiton & Goldberg 2020, "Null it out:
    guarding protected attributes by iterative nullspace projection", ACL): remove from ``x`` every linear
    direction from which ``labels`` can be read.

    ``x`` is centred (``x_c = x − μ``, μ its column mean) and split, stratified by class, into a training part and a
    held-out part (``holdout``). Starting from ``P_0 = I``, iteration ``i`` fits an L2 logistic regression
    (``sklearn.linear_model.LogisticRegression(C=C)``) on the training rows of ``x_c P_i`` and scores it on the
    held-out rows. If its accuracy is at most ``chance + tol`` (chance: the held-out frequency of the most common
    class) the loop stops; otherwise the row space of its weights ``W_i`` (one unit vector for two classes, an
    orthonormal basis for more) is removed:

        ``P_{i+1} = I − proj(span(W_1, …, W_{i+1})) = proj(N(W_1) ∩ … ∩ N(W_{i+1}))``,

    the projection onto the intersection of the classifiers' nullspaces, computed as ``I − Q Qᵀ`` with ``Q`` an
    orthonormal basis (SVD) of all directions found so far — Ravfogel et al.'s final ``P = I − P_R(Σ_i P_R(W_i))``.
    It is symmetric and idempotent by construction. The loop also stops after ``n_iterations`` removals, after which
    one more classifier measures the accuracy that remains.

    Parameters
    ----------
    x : [N, D] features (e.g. one layer's pooled activations).
    labels : [N] integer class ids of the attribute to remove (at least 2 examples per class).
    n_iterations : most classifiers whose directions are removed.
    C : inverse L2 strength of each classifier (sklearn's convention).
    seed : seed of the held-out split and of the bootstrap.
    tol : stop when the held-out accuracy is at most ``chance + tol``; None (default): two binomial standard errors
        of chance, ``2 √(c (1 − c) / n_heldout)``.
    holdout : fraction of each class held out to score the classifiers.
    n_boot, ci_level : percentile-bootstrap interval of each accuracy over the held-out examples (``n_boot=0``: NaN).
    max_iter : iteration budget of each logistic-regression fit.

    Returns
    -------
    :class:`NullspaceProjection` with ``projection`` (P), ``directions``, ``iteration``, ``mean``, ``chance`` and
    ``table``: the tidy held-out accuracy (measure ``accuracy``, one row per classifier; column ``iteration`` = the
    classifiers whose directions were removed before this one, so iteration 0 is the probe of the unprojected data;
    ``split="heldout"``, ``method="inlp"``, ``C``, ``n_train``).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 600)
    >>> x = rng.normal(size=(600, 5)); x[:, 2] += 3 * (2 * y - 1)      # the label lives on axis 2
    >>> r = nullspace_projection(x, y, n_boot=0)
    >>> bool(abs(r.directions[0, 2]) > 0.99)                           # the first direction found is axis 2
    True
    >>> float(np.abs(r.apply(x)[:, 2] - x[:, 2].mean()).max()) < 0.5    # axis 2 is (nearly) flattened
    True
    """
    arr = as_2d_float(x, "x", min_rows=4)
    y = check_labels(labels, "labels")
    check_same_length(x=arr, labels=y)
    d = arr.shape[1]
    rng = np.random.default_rng(seed)
    held = stratified_holdout(y, holdout, rng)
    mean = arr.mean(axis=0)
    xc = arr - mean
    chance = chance_of(y[held])
    margin = 2.0 * math.sqrt(chance * (1.0 - chance) / held.sum()) if tol is None else float(tol)

    directions: list[np.ndarray] = []
    found_in: list[int] = []
    basis = np.zeros((0, d))
    rows = []
    alpha = 1.0 - ci_level
    for it in range(n_iterations + 1):
        p = _projection_from(basis, d)
        z = xc @ p
        clf, acc, lo, hi = heldout_probe(z, y, held, C=C, max_iter=max_iter, n_boot=n_boot, alpha=alpha, seed=seed)
        rows.append({"measure": "accuracy", "value": acc, "ci_low": lo, "ci_high": hi, "iteration": it})
        if acc <= chance + margin or it == n_iterations:
            break
        w = _new_directions(np.asarray(clf.coef_, dtype=np.float64), basis)  # [r, D]: its row space
        if w.shape[0] == 0:  # the classifier reads nothing new: nothing left to remove
            break
        for v in w:
            directions.append(v)
            found_in.append(it)
        basis = _basis(np.vstack([basis, w]))
    table = tidy(rows, split="heldout", target="label", method="inlp", C=float(C), n_train=int((~held).sum()))
    return NullspaceProjection(projection=_projection_from(basis, d),
                               directions=np.array(directions).reshape(-1, d),
                               iteration=np.array(found_in, dtype=np.int64), mean=mean, table=table,
                               chance=chance)


@declare(dim=Interval(int, 1), n_removed=Interval(int, 0), seed=Interval(int, 0))
def random_projection(dim: int, n_removed: int, *, seed: int = 0) -> np.ndarray:
    """The projection ``P = I − Q Qᵀ`` [dim, dim] that removes ``n_removed`` uniformly random orthonormal directions
    ``Q`` (Haar: QR of a Gaussian matrix, signs fixed) — the control of amnesic probing (Elazar, Ravfogel, Jacovi &
    Goldberg 2021, "Amnesic probing", TACL, Sec. 3: remove as many random directions as INLP removed).

    Examples
    --------
    >>> import numpy as np
    >>> p = random_projection(6, 2, seed=1)
    >>> round(float(np.trace(p)), 6), bool(np.allclose(p @ p, p))
    (4.0, True)
    """
    if n_removed > dim:
        raise ValueError(f"n_removed={n_removed} exceeds dim={dim}; at most dim directions can be removed")
    if n_removed == 0:
        return np.eye(dim)
    g = np.random.default_rng(seed).normal(size=(dim, n_removed))
    q, r = np.linalg.qr(g)
    q = q * np.sign(np.diag(r))
    return _projection_from(q.T, dim)

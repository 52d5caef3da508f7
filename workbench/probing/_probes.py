"""Non-logistic probes on frozen features: ridge, kNN, nearest class mean, Gaussian naive Bayes, a small MLP.

Every probe has the call shape of :func:`workbench.probing.linear_probe`::

    probe(x, labels, evals={"test": (X, y)}, *, <options>, target=..., n_boot=1000, ci_level=0.95,
          seed=0) -> tidy DataFrame

``x`` is one ``[N, D]`` array/tensor, an :class:`~workbench.activations.Activations` or a mapping
``layer -> [N, D_layer]`` (widths may differ; every eval split then gives the same layers); ``labels`` are
class ids, or continuous targets for ``task="regression"``. Computation is in torch, float64, on the
representation's device. The table is in the one results schema (:mod:`workbench.results`: ``run, step,
layer, layer_index, measure, split, value, ci_low, ci_high``, with ``run``/``step`` NaN and ``layer_index``
the layer's position in ``x``), then ``target``, ``method`` (the probe: "ridge", "knn", …) and the probe's
parameter columns. Splits are ``"train"`` (the fitted probe scored on its own training examples), the
``evals`` names, and for :func:`ridge_probe` ``"loo"`` (exact leave-one-out).
Measures: ``"accuracy"`` in [0, 1] for classification, ``"r2"`` (coefficient of determination
``1 - SSE/SST`` on that split, ``<= 1``, negative when worse than predicting the split's mean) for
regression. Intervals: percentile bootstrap over the split's examples (``n_boot`` resamples, coverage
``ci_level``; ``n_boot=0`` gives NaN bounds); see :mod:`workbench.probing._common` for R^2.

Regression probes for continuous factors are ``ridge_probe(..., task="regression")`` and
``mlp_probe(..., task="regression")``; token-level (sequence-labelling) probes are any probe applied to
the rows made by :func:`workbench.probing.sentence_split`.
"""
from __future__ import annotations

import math
from collections.abc import Collection, Iterable
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .._validation import Flag, Instance, Interval, Options, check_choice, declare
from ._common import (PROBE_RULES, Problem, check_ci, check_int, check_number, check_regression_split,
                      check_target_name, classification_rows, prepare, regression_rows, standardizer,
                      stratified_indices, table, target_names)

__all__ = ["ridge_probe", "knn_probe", "prototype_probe", "gaussian_nb_probe", "mlp_probe", "DEFAULT_ALPHAS"]

DEFAULT_ALPHAS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5)


def _labels_by_split(prob: Problem) -> dict[str, np.ndarray]:
    return {"train": prob.y_train, "loo": prob.y_train, **{split: y for split, _, y in prob.evals}}


def _check_sequence(values: Any, name: str) -> list:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__") or len(values) == 0:
        raise ValueError(f"{name} must be a non-empty sequence")
    return list(values)


# ================================================================================================ ridge
class _RidgeEigen:
    """All ridge solutions of one layer from one symmetric eigendecomposition.

    With centered, standardized training features ``Xc`` [n, d] and centered targets ``Yc``:

    * ``d <= n``: ``Xc^T Xc = V diag(lam) V^T``, ``Q = Xc V``; fitted ``Q diag(1/(lam+a)) Q^T Yc``,
      eval ``Xe V diag(1/(lam+a)) Q^T Yc``; hat diagonal ``sum_j Q_ij^2 / (lam_j + a)``.
    * ``d > n``:  ``Xc Xc^T = U diag(lam) U^T``; fitted ``U diag(lam/(lam+a)) U^T Yc``,
      eval ``(Xe Xc^T) U diag(1/(lam+a)) U^T Yc``; hat diagonal ``sum_j U_ij^2 lam_j / (lam_j + a)``.

    Plus ``1/n`` in the hat diagonal and the target mean in the predictions for the unpenalised intercept.
    """

    def __init__(self, xc: torch.Tensor, y: torch.Tensor):
        n, d = xc.shape
        self.n = n
        self.y = y
        self.y_mean = y.mean(dim=0)
        yc = y - self.y_mean
        self.primal = d <= n
        if self.primal:
            lam, vecs = torch.linalg.eigh(xc.T @ xc)
            self.vecs = vecs
            self.basis = xc @ vecs                                  # Q [n, d]
        else:
            lam, vecs = torch.linalg.eigh(xc @ xc.T)
            self.vecs = vecs
            self.basis = vecs                                       # U [n, n]
            self.xc = xc
        self.lam = lam.clamp_min(0.0)
        self.coef = self.basis.T @ yc                               # Q^T Yc or U^T Yc  [r, T]
        self.lev = self.basis.square()

    def _train_filter(self, alpha: torch.Tensor) -> torch.Tensor:
        """[r, A] filter factors applied to ``coef`` for the fitted values (one column per alpha)."""
        lam = self.lam[:, None]
        return 1.0 / (lam + alpha) if self.primal else lam / (lam + alpha)

    def hat_diag(self, alphas: torch.Tensor) -> torch.Tensor:
        """[n, A] leverages of the ridge smoother with intercept."""
        return 1.0 / self.n + self.lev @ self._train_filter(alphas[None, :])

    def fitted(self, alpha_cols: torch.Tensor) -> torch.Tensor:
        """Training predictions; ``alpha_cols`` [T] is the strength used for each target column."""
        return self.y_mean + self.basis @ (self.coef * self._train_filter(alpha_cols[None, :]))

    def predict(self, xe_c: torch.Tensor, alpha_cols: torch.Tensor) -> torch.Tensor:
        filt = 1.0 / (self.lam[:, None] + alpha_cols[None, :])
        if self.primal:
            proj = xe_c @ self.vecs
        else:
            proj = (xe_c @ self.xc.T) @ self.vecs
        return self.y_mean + proj @ (self.coef * filt)


@declare(**PROBE_RULES, task=Options("classification", "regression"), alphas=Instance(Collection),
         all_alphas=Flag(), target=Instance(str, Iterable, none=True))
def ridge_probe(x: Any, labels: Any, evals: Mapping[str, tuple[Any, Any]] | None = None, *,
                task: str = "classification", alphas: Sequence[float] = DEFAULT_ALPHAS, all_alphas: bool = False,
                target: str | Sequence[str] | None = None, n_boot: int = 1000, ci_level: float = 0.95,
                seed: int = 0) -> pd.DataFrame:
    """Ridge-regression probe (classification by one-hot regression + argmax, or regression scored by R^2).

    Model: inputs standardized with training-split statistics (module ``_common``), then

        ``(W, b) = argmin ||Y - X W - 1 b^T||_F^2 + alpha ||W||_F^2``   (intercept ``b`` unpenalised)

    i.e. exactly ``sklearn.linear_model.Ridge(alpha)`` (regression) and ``RidgeClassifier(alpha)``
    (classification; sklearn codes classes as +-1 instead of 0/1, which scales the centered targets by 2
    and leaves the argmax unchanged) fitted on ``StandardScaler``-transformed features. ``alpha`` is in
    sklearn's units (sum, not mean, of squared errors). Hoerl & Kennard 1970.

    All strengths come from one eigendecomposition of ``Xc^T Xc`` (d x d) or ``Xc Xc^T`` (n x n),
    whichever is smaller (memory ``O(min(N, D)^2)``). ``alpha`` is selected on the training split by exact
    leave-one-out (LOO) cross-validation from the same decomposition: with hat matrix ``H = 11^T/n + Xc (Xc^T Xc + alpha
    I)^-1 Xc^T``, the LOO residual is ``e_i / (1 - H_ii)`` (Allen 1974 PRESS; Hastie, Tibshirani &
    Friedman 2009, Eq. 7.52 - exact for linear smoothers, no refitting). Criterion:

    * classification: highest LOO accuracy (argmax of the LOO-predicted one-hot scores), ties broken by
      lower LOO squared error, then by the larger alpha; one alpha for all classes;
    * regression: lowest LOO mean squared error, separately for each target column (as
      ``sklearn.linear_model.RidgeCV(alpha_per_target=True)``; ties -> larger alpha).

    The standardization statistics use all training examples, including the one left out (the intercept
    makes centering exact; only the scale leaks, as with ``RidgeCV`` on pre-scaled features).

    Parameters
    ----------
    x : [N, D] array/tensor, Activations or mapping layer -> [N, D_layer]
    labels : [N] integer class ids (classification, >= 2 classes) or [N] / [N, T] floats (regression).
    evals : mapping split name -> (X, y), optional. Names "train" and "loo" are reserved.
    task : {"classification", "regression"}
    alphas : sequence of positive floats; the grid searched by LOO (one value: no selection).
    all_alphas : if True, report every alpha (column ``selected`` marks the LOO choice); else only the
        selected one.
    target : name for the ``target`` column (regression with T columns: one name, suffixed ``[j]``, or T
        names). Default "label" / "target".
    n_boot, ci_level, seed : bootstrap interval over the examples of each split (``n_boot=0``: none).

    Returns
    -------
    DataFrame in the results schema, ``method="ridge"``, splits "train", "loo", then the eval splits, measure
    "accuracy" or "r2", and columns ``target, method, alpha, selected, n_train`` (+ ``n_classes`` for
    classification).

    Raises
    ------
    ValueError / TypeError: NaN/Inf, mismatched N, a single class, unseen eval classes, non-positive
    alphas, a regression target constant on some split (R^2 undefined), unknown ``task``.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> labels = np.repeat([0, 1], 50); x = rng.normal(size=(100, 4)) + 6 * np.eye(4)[labels]   # two far-apart blobs
    >>> x_test = rng.normal(size=(100, 4)) + 6 * np.eye(4)[labels]
    >>> flipped = np.r_[1 - labels[:20], labels[20:]]     # 20 of 100 test labels wrong: a perfect probe scores 0.8
    >>> t = ridge_probe(x, labels, {"test": (x_test, flipped)})
    >>> t.query("measure == 'accuracy'").set_index("split").value.to_dict()      # loo: leave-one-out on train
    {'train': 1.0, 'loo': 1.0, 'test': 0.8}
    """
    check_choice(task, ["classification", "regression"], "task")
    n_boot, ci_level = check_ci(n_boot, ci_level)
    seed = check_int(seed, "seed")
    alphas = [check_number(a, f"alphas[{i}]", low=0.0, low_open=True)
              for i, a in enumerate(_check_sequence(alphas, "alphas"))]
    prob = prepare(x, labels, evals, task=task, min_rows=3)
    labels_by = _labels_by_split(prob)
    if task == "regression":
        names = target_names(target, prob.y_train.shape[1], "target")
        for split, y in labels_by.items():
            check_regression_split(y, split, names)
    else:
        names = [check_target_name("label" if target is None else target)]
    rows: list[dict[str, Any]] = []
    for layer, x, xe in prob.layers(min_rows=3):
        dev = x.device
        mean, scale = standardizer(x)
        xs = (x - mean) / scale
        center = xs.mean(dim=0)
        xc = xs - center
        if task == "classification":
            y_idx = torch.as_tensor(prob.y_train, device=dev)
            y = F.one_hot(y_idx, prob.n_classes).double()
        else:
            y = torch.as_tensor(prob.y_train, device=dev)
        eig = _RidgeEigen(xc, y)
        a_t = torch.tensor(alphas, dtype=torch.float64, device=dev)
        h_all = eig.hat_diag(a_t)                                       # [n, A]
        denom = (1.0 - h_all).clamp_min(1e-12)
        n_t = y.shape[1]
        loo_preds = []
        for k in range(len(alphas)):
            resid = y - eig.fitted(a_t[k].repeat(n_t))
            loo_preds.append(y - resid / denom[:, k:k + 1])
        eval_x = {s: (t - mean) / scale - center for s, t in xe.items()}

        def splits_for(alpha_cols: torch.Tensor, loo_pred: torch.Tensor, eig: _RidgeEigen = eig,
                       eval_x: dict[str, torch.Tensor] = eval_x) -> dict[str, torch.Tensor]:
            out = {"train": eig.fitted(alpha_cols), "loo": loo_pred}
            out.update({s: eig.predict(t, alpha_cols) for s, t in eval_x.items()})
            return out

        if task == "classification":
            crit = []
            for k, a in enumerate(alphas):
                acc = float((loo_preds[k].argmax(dim=1) == y_idx).double().mean())
                sse = float((loo_preds[k] - y).square().sum())
                crit.append((-round(acc, 12), sse, -a))
            best = min(range(len(alphas)), key=lambda k: crit[k])
            chosen = range(len(alphas)) if all_alphas else [best]
            for k in chosen:
                preds = {s: p.argmax(dim=1) for s, p in splits_for(a_t[k].repeat(n_t), loo_preds[k]).items()}
                params = {"alpha": alphas[k], "selected": k == best, "n_train": len(y),
                          "n_classes": prob.n_classes}
                rows += classification_rows(layer, "ridge", names[0], preds, labels_by, params, n_boot, ci_level,
                                            seed)
        else:
            mse = torch.stack([(lp - y).square().mean(dim=0) for lp in loo_preds])   # [A, T]
            best_cols = []
            for j in range(n_t):
                col = mse[:, j].tolist()
                best_cols.append(min(range(len(alphas)), key=lambda k: (round(col[k], 14), -alphas[k])))
            if all_alphas:
                for k, a in enumerate(alphas):
                    preds = splits_for(a_t[k].repeat(n_t), loo_preds[k])
                    params = [{"alpha": a, "selected": best_cols[j] == k, "n_train": len(y)} for j in range(n_t)]
                    rows += regression_rows(layer, "ridge", names, preds, labels_by, params, n_boot, ci_level, seed)
            else:
                alpha_cols = a_t[torch.as_tensor(best_cols, device=dev)]
                loo_sel = torch.stack([loo_preds[best_cols[j]][:, j] for j in range(n_t)], dim=1)
                preds = splits_for(alpha_cols, loo_sel)
                params = [{"alpha": alphas[best_cols[j]], "selected": True, "n_train": len(y)} for j in range(n_t)]
                rows += regression_rows(layer, "ridge", names, preds, labels_by, params, n_boot, ci_level, seed)
    return table(rows, prob.x)


# ================================================================================================== kNN
def _neighbours(query: torch.Tensor, train: torch.Tensor, kmax: int, metric: str, block: int) -> torch.Tensor:
    """Indices [m, kmax] of the nearest training rows, nearest first, one [block, N] GEMM at a time."""
    out = []
    if metric == "euclidean":
        t_sq = train.square().sum(dim=1)
    for start in range(0, query.shape[0], block):
        q = query[start:start + block]
        sim = q @ train.T
        if metric == "euclidean":  # largest -||q - t||^2 = 2 q.t - |t|^2 - |q|^2 (|q|^2 is constant per row)
            sim = 2.0 * sim - t_sq
        out.append(torch.topk(sim, kmax, dim=1, largest=True, sorted=True).indices)
    return torch.cat(out) if out else torch.empty(0, kmax, dtype=torch.long, device=train.device)


def _unit_rows(x: torch.Tensor) -> torch.Tensor:
    norm = x.norm(dim=1, keepdim=True)
    return x / torch.where(norm > 0, norm, torch.ones_like(norm))


@declare(**PROBE_RULES, ks=Instance(Collection), metric=Options("cosine", "euclidean"),
         block_size=Interval(int, 1, none=True), target=Instance(str))
def knn_probe(x: Any, labels: Any, evals: Mapping[str, tuple[Any, Any]] | None = None, *,
              ks: Sequence[int] = (1, 5, 20), metric: str = "cosine", block_size: int | None = None,
              target: str = "label", n_boot: int = 1000, ci_level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """k-nearest-neighbour probe: majority vote of the ``k`` training examples most similar to each query.

    Similarity: ``metric="cosine"``: ``cos(q, t) = q.t / (|q| |t|)`` on the features as given (no
    centering or scaling); a zero vector has similarity 0 to everything (``sklearn.preprocessing.normalize``
    convention). ``metric="euclidean"``: ``-||q - t||^2``. Neighbours come from ``torch.topk`` over
    ``[block, N_train]`` similarity blocks (one matrix product per block; never a full sort of an N x N
    matrix). Equal similarities at the k-th place are broken arbitrarily (as in sklearn).

    Vote: unweighted; among classes with the most votes, the **lowest class id** wins - the rule of
    ``sklearn.neighbors.KNeighborsClassifier(weights="uniform")`` (``scipy.stats.mode``), so results
    match ``KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute")``. The ``"train"``
    split scores the training examples with themselves among the candidates (as sklearn's ``score`` on
    training data; optimistic, e.g. 1.0 for ``k=1`` without duplicates). Cover & Hart 1967.

    Parameters
    ----------
    x, labels, evals : as :func:`ridge_probe` (classification only).
    ks : neighbour counts; each ``1 <= k < N_train``. All ks share one top-``max(ks)`` search.
    metric : {"cosine", "euclidean"}
    block_size : query rows per similarity block (default: about 2**22 entries per block).
    target, n_boot, ci_level, seed : as :func:`ridge_probe`.

    Returns
    -------
    DataFrame in the results schema, ``method="knn"``, measure "accuracy", and columns ``target, method, k,
    distance, n_train, n_classes``.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> labels = np.repeat([0, 1], 50); x = rng.normal(size=(100, 4)) + 6 * np.eye(4)[labels]   # two far-apart blobs
    >>> x_test = rng.normal(size=(100, 4)) + 6 * np.eye(4)[labels]
    >>> flipped = np.r_[1 - labels[:20], labels[20:]]     # 20 of 100 test labels wrong: a perfect probe scores 0.8
    >>> t = knn_probe(x, labels, {"test": (x_test, flipped)}, ks=[5])
    >>> t.query("measure == 'accuracy'").set_index("split").value.to_dict()
    {'train': 1.0, 'test': 0.8}
    """
    check_choice(metric, ["cosine", "euclidean"], "metric")
    n_boot, ci_level = check_ci(n_boot, ci_level)
    seed = check_int(seed, "seed")
    ks = [check_int(k, f"ks[{i}]", minimum=1) for i, k in enumerate(_check_sequence(ks, "ks"))]
    prob = prepare(x, labels, evals)
    n = len(prob.y_train)
    if max(ks) >= n:
        raise ValueError(f"ks contains k={max(ks)} but x has only N={n} training examples; every k must be "
                         "smaller than N (k = N would let every query vote with the whole training set)")
    if block_size is not None:
        block_size = check_int(block_size, "block_size", minimum=1)
    labels_by = _labels_by_split(prob)
    rows: list[dict[str, Any]] = []
    kmax = max(ks)
    for layer, x, xe in prob.layers():
        block = block_size or max(1, (1 << 22) // n)
        prep = _unit_rows if metric == "cosine" else (lambda t: t)
        train = prep(x)
        y = torch.as_tensor(prob.y_train, device=x.device)
        votes = {}
        for split, q in {"train": x, **xe}.items():
            votes[split] = y[_neighbours(prep(q), train, kmax, metric, block)]     # [m, kmax] labels
        for k in ks:
            preds = {}
            for split, lab in votes.items():
                counts = torch.zeros(lab.shape[0], prob.n_classes, dtype=torch.long, device=x.device)
                counts.scatter_add_(1, lab[:, :k], torch.ones_like(lab[:, :k]))
                preds[split] = counts.argmax(dim=1)  # first maximum = lowest class id
            params = {"k": k, "distance": metric, "n_train": n, "n_classes": prob.n_classes}
            rows += classification_rows(layer, "knn", target, preds, labels_by, params, n_boot, ci_level, seed)
    return table(rows, prob.x)


# ===================================================================================== nearest class mean
@declare(**PROBE_RULES, metric=Options("cosine", "euclidean"), center=Flag(), target=Instance(str))
def prototype_probe(x: Any, labels: Any, evals: Mapping[str, tuple[Any, Any]] | None = None, *,
                    metric: str = "euclidean", center: bool = False, target: str = "label", n_boot: int = 1000,
                    ci_level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Nearest-class-mean (prototype) probe: predict the class whose training mean is closest.

    Prototypes ``mu_c = mean of the training features of class c`` (features as given; with
    ``center=True`` the training mean over all examples is first subtracted from every split).
    ``metric="euclidean"``: ``argmin_c ||x - mu_c||^2`` (the nearest-class-mean classifier; Snell et al.
    2017, "Prototypical networks", Eq. 2 with squared Euclidean distance). ``metric="cosine"``:
    ``argmax_c cos(x, mu_c)`` (a zero vector or zero prototype has cosine 0). Ties -> lowest class id.
    Centering does not change Euclidean predictions; with cosine, ``center=True`` is the "CL2N"
    normalisation of SimpleShot (Wang et al. 2019). Unlike :func:`gaussian_nb_probe`, no variances or
    priors are used.

    Returns a table in the results schema, ``method="prototype"``, measure "accuracy", columns ``target,
    method, distance, centered, n_train, n_classes``. Other arguments as :func:`ridge_probe`.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> labels = np.repeat([0, 1], 50); x = rng.normal(size=(100, 4)) + 6 * np.eye(4)[labels]   # two far-apart blobs
    >>> x_test = rng.normal(size=(100, 4)) + 6 * np.eye(4)[labels]
    >>> flipped = np.r_[1 - labels[:20], labels[20:]]     # 20 of 100 test labels wrong: a perfect probe scores 0.8
    >>> t = prototype_probe(x, labels, {"test": (x_test, flipped)})
    >>> t.query("measure == 'accuracy'").set_index("split").value.to_dict()
    {'train': 1.0, 'test': 0.8}
    """
    check_choice(metric, ["cosine", "euclidean"], "metric")
    if not isinstance(center, bool):
        raise TypeError(f"center must be True or False, got {type(center).__name__}")
    n_boot, ci_level = check_ci(n_boot, ci_level)
    seed = check_int(seed, "seed")
    prob = prepare(x, labels, evals)
    labels_by = _labels_by_split(prob)
    rows: list[dict[str, Any]] = []
    k = prob.n_classes
    for layer, x, xe in prob.layers():
        shift = x.mean(dim=0) if center else torch.zeros(x.shape[1], dtype=x.dtype, device=x.device)
        xt = x - shift
        y = torch.as_tensor(prob.y_train, device=x.device)
        counts = torch.bincount(y, minlength=k).double()
        protos = torch.zeros(k, x.shape[1], dtype=x.dtype, device=x.device).index_add_(0, y, xt) / counts[:, None]
        if metric == "cosine":
            protos_u = _unit_rows(protos)
            score = lambda q, p=protos_u: _unit_rows(q) @ p.T  # noqa: E731
        else:
            sq = protos.square().sum(dim=1)
            score = lambda q, p=protos, sq=sq: 2.0 * (q @ p.T) - sq  # noqa: E731  (= |q|^2 - ||q - mu||^2)
        preds = {split: score(q - shift).argmax(dim=1) for split, q in {"train": x, **xe}.items()}
        params = {"distance": metric, "centered": center, "n_train": len(y), "n_classes": k}
        rows += classification_rows(layer, "prototype", target, preds, labels_by, params, n_boot, ci_level, seed)
    return table(rows, prob.x)


# ================================================================================= Gaussian naive Bayes
@declare(**PROBE_RULES, var_smoothing=Interval(float, 0), target=Instance(str))
def gaussian_nb_probe(x: Any, labels: Any, evals: Mapping[str, tuple[Any, Any]] | None = None, *,
                      var_smoothing: float = 1e-9, target: str = "label", n_boot: int = 1000,
                      ci_level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Gaussian naive Bayes probe: class-conditional independent Gaussians per feature.

    ``argmax_c [log pi_c - 1/2 sum_j log(2 pi s2_cj) - 1/2 sum_j (x_j - m_cj)^2 / s2_cj]`` with
    ``pi_c`` the training class frequencies, ``m_cj`` the class means, ``s2_cj`` the class variances
    (``ddof=0``) plus ``eps = var_smoothing * max_j var(x_j)`` (variance over all training examples) -
    exactly ``sklearn.naive_bayes.GaussianNB(var_smoothing=...)``. Features are used as given (the model
    is invariant to per-feature shifts and scalings except through ``eps``). Ties -> lowest class id.

    Returns a table in the results schema, ``method="gaussian_nb"``, measure "accuracy", columns
    ``target, method, var_smoothing, n_train, n_classes``. Raises ValueError if every feature is constant on
    the training split (all variances would be 0). Other arguments as :func:`ridge_probe`.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> labels = np.repeat([0, 1], 50); x = rng.normal(size=(100, 4)) + 6 * np.eye(4)[labels]   # two far-apart blobs
    >>> x_test = rng.normal(size=(100, 4)) + 6 * np.eye(4)[labels]
    >>> flipped = np.r_[1 - labels[:20], labels[20:]]     # 20 of 100 test labels wrong: a perfect probe scores 0.8
    >>> t = gaussian_nb_probe(x, labels, {"test": (x_test, flipped)})
    >>> t.query("measure == 'accuracy'").set_index("split").value.to_dict()
    {'train': 1.0, 'test': 0.8}
    """
    var_smoothing = check_number(var_smoothing, "var_smoothing", low=0.0)
    n_boot, ci_level = check_ci(n_boot, ci_level)
    seed = check_int(seed, "seed")
    prob = prepare(x, labels, evals)
    labels_by = _labels_by_split(prob)
    rows: list[dict[str, Any]] = []
    k = prob.n_classes
    for layer, x, xe in prob.layers():
        shift = x.mean(dim=0)
        xt = x - shift                      # shift-invariant model; centering limits cancellation below
        y = torch.as_tensor(prob.y_train, device=x.device)
        counts = torch.bincount(y, minlength=k).double()
        means = torch.zeros(k, x.shape[1], dtype=x.dtype, device=x.device).index_add_(0, y, xt) / counts[:, None]
        var = torch.zeros_like(means).index_add_(0, y, (xt - means[y]).square()) / counts[:, None]
        eps = var_smoothing * float(xt.var(dim=0, unbiased=False).max())
        if not eps > 0 and bool((var == 0).any()):
            raise ValueError(f"layer {layer!r} of x: a class has zero variance in some feature and var_smoothing * max "
                             "feature variance is 0 (constant features or var_smoothing=0), so the Gaussian "
                             "likelihood is undefined; drop constant features or use var_smoothing > 0")
        var = var + eps
        log_prior = torch.log(counts / counts.sum())
        inv = 1.0 / var
        const = log_prior - 0.5 * torch.log(2 * math.pi * var).sum(dim=1) - 0.5 * (means.square() * inv).sum(dim=1)

        def jll(q: torch.Tensor, const: torch.Tensor = const, means: torch.Tensor = means,
                inv: torch.Tensor = inv) -> torch.Tensor:
            return const + q @ (means * inv).T - 0.5 * q.square() @ inv.T

        preds = {split: jll(q - shift).argmax(dim=1) for split, q in {"train": x, **xe}.items()}
        params = {"var_smoothing": var_smoothing, "n_train": len(y), "n_classes": k}
        rows += classification_rows(layer, "gaussian_nb", target, preds, labels_by, params, n_boot, ci_level, seed)
    return table(rows, prob.x)


# ================================================================================================== MLP
def _init_linear(d_in: int, d_out: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.nn.Linear``'s default initialisation, U(-1/sqrt(d_in), 1/sqrt(d_in)), from ``gen`` (CPU)."""
    bound = 1.0 / math.sqrt(d_in)
    w = (torch.rand(d_in, d_out, generator=gen, dtype=torch.float64) * 2 - 1) * bound
    b = (torch.rand(d_out, generator=gen, dtype=torch.float64) * 2 - 1) * bound
    return w, b


def _mlp_forward(x: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
    w1, b1, w2, b2 = params
    return torch.relu(x @ w1 + b1) @ w2 + b2


class _Adam:
    """Adam (Kingma & Ba 2015, Algorithm 1) with torch's L2 ``weight_decay`` (added to the gradient).

    The same update as ``torch.optim.Adam(foreach=False)``, written out so that a probe does not pay the
    one-time import of ``torch._dynamo`` that constructing a ``torch.optim`` optimizer triggers (seconds).
    """

    def __init__(self, params: list[torch.Tensor], lr: float, weight_decay: float,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.params, self.lr, self.wd, self.betas, self.eps = params, lr, weight_decay, betas, eps
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.t = 0

    @torch.no_grad()
    def step(self, grads: list[torch.Tensor]) -> None:
        self.t += 1
        b1, b2 = self.betas
        c1, c2 = 1 - b1 ** self.t, 1 - b2 ** self.t
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            if self.wd:
                g = g + self.wd * p
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            p.addcdiv_(m, (v / c2).sqrt_().add_(self.eps), value=-self.lr / c1)


def _train_mlp(x: torch.Tensor, y: torch.Tensor, fit_idx: np.ndarray, val_idx: np.ndarray, n_out: int,
               loss_fn, *, hidden: int, lr: float, weight_decay: float, batch_size: int, max_epochs: int,
               patience: int, seed: int) -> tuple[list[torch.Tensor], int, int]:
    """Adam on the fit part with early stopping on the validation loss; returns (best params, best epoch, epochs)."""
    gen = torch.Generator().manual_seed(seed)
    params = [t.to(x.device) for t in (*_init_linear(x.shape[1], hidden, gen), *_init_linear(hidden, n_out, gen))]
    for p in params:
        p.requires_grad_(True)
    opt = _Adam(params, lr, weight_decay)
    fit_t = torch.as_tensor(fit_idx, device=x.device)
    xv, yv = x[torch.as_tensor(val_idx, device=x.device)], y[torch.as_tensor(val_idx, device=x.device)]
    best, best_epoch, best_state = math.inf, 0, [p.detach().clone() for p in params]
    epoch = 0
    for epoch in range(1, max_epochs + 1):
        order = fit_t[torch.randperm(len(fit_idx), generator=gen).to(x.device)]
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            loss = loss_fn(_mlp_forward(x[idx], params), y[idx])
            opt.step(list(torch.autograd.grad(loss, params)))
        with torch.no_grad():
            val = float(loss_fn(_mlp_forward(xv, params), yv))
        if val < best:
            best, best_epoch, best_state = val, epoch, [p.detach().clone() for p in params]
        elif epoch - best_epoch >= patience:
            break
    return best_state, best_epoch, epoch


@declare(**PROBE_RULES, task=Options("classification", "regression"), hidden=Interval(int, 1),
         lr=Interval(float, 0, closed="neither"), weight_decay=Interval(float, 0), batch_size=Interval(int, 1),
         max_epochs=Interval(int, 1), patience=Interval(int, 1), val_fraction=Interval(float, 0, 0.5, closed="right"),
         target=Instance(str, Iterable, none=True))
def mlp_probe(x: Any, labels: Any, evals: Mapping[str, tuple[Any, Any]] | None = None, *,
              task: str = "classification", hidden: int = 64, lr: float = 1e-2, weight_decay: float = 0.0,
              batch_size: int = 128, max_epochs: int = 200, patience: int = 20, val_fraction: float = 0.1,
              target: str | Sequence[str] | None = None, n_boot: int = 1000, ci_level: float = 0.95,
              seed: int = 0) -> pd.DataFrame:
    """One-hidden-layer MLP probe ``W2^T relu(W1^T x + b1) + b2`` with early stopping.

    Inputs are standardized with the statistics of the fit part (below). Classification minimises the
    mean cross-entropy over ``K`` logits; regression the mean squared error on targets standardized with
    fit-part statistics (predictions are mapped back). Training: a held-out validation part of the training
    split (``val_fraction``, stratified by class for classification, at least one example per class) is
    set aside; Adam (Kingma & Ba 2015; step size ``lr``; ``weight_decay`` is the L2 term that
    ``torch.optim.Adam`` adds to the gradient) on shuffled minibatches of the rest; after every epoch the
    validation loss is computed and the parameters with the lowest one are kept; training stops
    ``patience`` epochs after the last improvement or at ``max_epochs``. Initialisation is
    ``torch.nn.Linear``'s default.

    Deterministic: initialisation, split and shuffling come from ``seed`` (a private generator; the global
    torch RNG is neither used nor changed), arithmetic is float64; same inputs and seed -> the same table
    on a given device. The ``"train"`` split is scored on all training examples (fit + validation part).

    Parameters
    ----------
    hidden : width of the hidden layer.
    lr, weight_decay, batch_size, max_epochs, patience : optimisation settings (see above).
    val_fraction : fraction of the training split used for early stopping, in (0, 0.5].
    Others as :func:`ridge_probe`.

    Returns
    -------
    DataFrame in the results schema, ``method="mlp"``, measure "accuracy" or "r2", columns ``target,
    method, hidden, best_epoch, epochs, n_train`` (+ ``n_classes``).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> labels = np.repeat([0, 1], 50); x = rng.normal(size=(100, 4)) + 6 * np.eye(4)[labels]   # two far-apart blobs
    >>> x_test = rng.normal(size=(100, 4)) + 6 * np.eye(4)[labels]
    >>> flipped = np.r_[1 - labels[:20], labels[20:]]     # 20 of 100 test labels wrong: a perfect probe scores 0.8
    >>> t = mlp_probe(x, labels, {"test": (x_test, flipped)}, max_epochs=20)
    >>> t.query("measure == 'accuracy'").set_index("split").value.to_dict()
    {'train': 1.0, 'test': 0.8}
    """
    check_choice(task, ["classification", "regression"], "task")
    hidden = check_int(hidden, "hidden", minimum=1)
    lr = check_number(lr, "lr", low=0.0, low_open=True)
    weight_decay = check_number(weight_decay, "weight_decay", low=0.0)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    max_epochs = check_int(max_epochs, "max_epochs", minimum=1)
    patience = check_int(patience, "patience", minimum=1)
    val_fraction = check_number(val_fraction, "val_fraction", low=0.0, high=0.5, low_open=True)
    n_boot, ci_level = check_ci(n_boot, ci_level)
    seed = check_int(seed, "seed")
    prob = prepare(x, labels, evals, task=task, min_rows=4)
    labels_by = _labels_by_split(prob)
    n = len(prob.y_train)
    if task == "classification":
        fit_idx, val_idx = stratified_indices(prob.y_train, val_fraction, seed)
        names = [check_target_name("label" if target is None else target)]
    else:
        perm = np.random.default_rng(seed).permutation(n)
        m = max(2, round(val_fraction * n))
        if n - m < 2:
            raise ValueError(f"only {n} training examples: too few to hold {m} out for early stopping")
        val_idx, fit_idx = np.sort(perm[:m]), np.sort(perm[m:])
        names = target_names(target, prob.y_train.shape[1], "target")
        for split, yv in labels_by.items():
            check_regression_split(yv, split, names)
    rows: list[dict[str, Any]] = []
    for layer, x, xe in prob.layers(min_rows=4):
        fit_t = torch.as_tensor(fit_idx, device=x.device)
        mean, scale = standardizer(x[fit_t])
        xs = (x - mean) / scale
        if task == "classification":
            y = torch.as_tensor(prob.y_train, device=x.device)
            n_out, loss_fn = prob.n_classes, F.cross_entropy
        else:
            y_raw = torch.as_tensor(prob.y_train, device=x.device)
            y_mean, y_scale = standardizer(y_raw[fit_t])
            y = (y_raw - y_mean) / y_scale
            n_out, loss_fn = y.shape[1], F.mse_loss
        state, best_epoch, epochs = _train_mlp(xs, y, fit_idx, val_idx, n_out, loss_fn, hidden=hidden, lr=lr,
                                               weight_decay=weight_decay, batch_size=batch_size,
                                               max_epochs=max_epochs, patience=patience, seed=seed)
        with torch.no_grad():
            out = {split: _mlp_forward((q - mean) / scale, state) for split, q in {"train": x, **xe}.items()}
        params = {"hidden": hidden, "best_epoch": best_epoch, "epochs": epochs, "n_train": n}
        if task == "classification":
            preds = {s: o.argmax(dim=1) for s, o in out.items()}
            rows += classification_rows(layer, "mlp", names[0], preds, labels_by,
                                        {**params, "n_classes": prob.n_classes}, n_boot, ci_level, seed)
        else:
            preds = {s: o * y_scale + y_mean for s, o in out.items()}
            rows += regression_rows(layer, "mlp", names, preds, labels_by, params, n_boot, ci_level, seed)
    return table(rows, prob.x)

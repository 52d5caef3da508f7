"""Linear probes: L2-regularised multinomial logistic regression on frozen features.

Model and objective
-------------------
Inputs are standardized with the mean and (population, ``ddof=0``) standard deviation of the
training split only; a feature whose std is ``<= 1e-10 * |mean|`` (constant, up to rounding) is
only centered (scale 1), as ``sklearn.preprocessing.StandardScaler`` does. With standardized inputs
``x_i``, weights ``W`` and biases ``b``, the probe minimises::

    J(W, b) = (1/n) sum_i CE(softmax(W^T x_i + b), y_i) + (lambda / 2) ||W||_F^2,   lambda = 1 / (C n)

(the bias is not penalised). For ``K >= 3`` classes ``W`` is [D, K] (one weight vector per class, the
symmetric softmax parameterisation); for ``K = 2`` it is a single vector with logits ``(0, w^T x + b)``,
i.e. ordinary binomial logistic regression.

sklearn correspondence: ``sklearn.linear_model.LogisticRegression(C=C)`` (lbfgs, l2) minimises
``C sum_i CE_i + 1/2 ||W||^2``, which is ``C n`` times ``J``: the same minimiser, hence the same
predictions, for the same ``C``. This holds in the binary case too only because of the single-vector
parameterisation above; with two symmetric vectors the penalty on the logit difference would be halved
(equivalent to sklearn with ``2C``).

Solver: full-batch L-BFGS (``torch.optim.LBFGS``, strong-Wolfe line search) in **float64**. The
problem is small (the cost per iteration is one [n, D] x [D, K] product), so float64 costs little
even on CPU, while float32 resolves ``J`` only to ~1e-7 relative: the line search then stalls before
the gradient tolerance is reached and results would depend on the device. Float64 lets every fit reach
``max|grad J| <= tol`` and makes CPU and GPU agree.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .._validation import as_2d_tensor, check_labels, check_positive_int

__all__ = ["linear_probe"]

_DEFAULT_LAYER = "features"
_STD_FLOOR_REL = 1e-10


# ----------------------------------------------------------------------------------------------- fitting
def _standardizer(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean = x.mean(dim=0)
    std = x.std(dim=0, unbiased=False)
    constant = std <= _STD_FLOOR_REL * mean.abs()
    return mean, torch.where(constant, torch.ones_like(std), std)


def _logits(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    z = x @ w + b
    if w.shape[1] == 1:  # binomial: class 0 has logit 0
        z = torch.cat([torch.zeros_like(z), z], dim=1)
    return z


def _objective(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, b: torch.Tensor, lam: float) -> torch.Tensor:
    return F.cross_entropy(_logits(x, w, b), y) + 0.5 * lam * w.square().sum()


def _fit_logistic(x: torch.Tensor, y: torch.Tensor, n_classes: int, lam: float,
                  init: tuple[torch.Tensor, torch.Tensor] | None = None, *,
                  max_iter: int = 1000, tol: float = 1e-8) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Minimise J (module docstring) on already standardized float64 ``x``; returns (W, b, converged)."""
    n_out = 1 if n_classes == 2 else n_classes
    if init is None:
        w = torch.zeros(x.shape[1], n_out, dtype=x.dtype, device=x.device)
        b = torch.zeros(n_out, dtype=x.dtype, device=x.device)
    else:
        w, b = (t.detach().clone() for t in init)
    w.requires_grad_(True)
    b.requires_grad_(True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, max_eval=2 * max_iter, tolerance_grad=tol,
                            tolerance_change=1e-14, history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = _objective(x, y, w, b, lam)
        loss.backward()
        return loss

    opt.step(closure)
    opt.zero_grad()
    loss = _objective(x, y, w, b, lam)
    gw, gb = torch.autograd.grad(loss, [w, b])
    grad_max = max(float(gw.abs().max()), float(gb.abs().max()))
    converged = grad_max <= max(10 * tol, 1e-6)
    return w.detach(), b.detach(), converged


def _scores(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """(accuracy, mean cross-entropy in nats) - the log-loss of sklearn.metrics.log_loss."""
    z = _logits(x, w, b)
    acc = float((z.argmax(dim=1) == y).double().mean())
    return acc, float(F.cross_entropy(z, y))


# ------------------------------------------------------------------------------------------- validation
def _check_c(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a positive number (inverse regularisation strength), got "
                        f"{type(value).__name__}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value}")
    return float(value)


def _as_layers(x: Any, name: str) -> tuple[dict[Any, Any], bool]:
    if isinstance(x, Mapping):
        if len(x) == 0:
            raise ValueError(f"{name} is an empty mapping; pass at least one layer")
        return dict(x), True
    return {_DEFAULT_LAYER: x}, False


def _encode(y: np.ndarray, classes: np.ndarray, name: str) -> np.ndarray:
    unseen = np.setdiff1d(np.unique(y), classes)
    if unseen.size:
        raise ValueError(f"{name} contains label(s) {unseen[:10].tolist()} that never occur in y_train; "
                         "a probe cannot predict unseen classes - drop those examples or add them to training")
    return np.searchsorted(classes, y)


def _stratified_folds(y: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import StratifiedKFold

    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(y)), y))


def _select_c(x: torch.Tensor, y: torch.Tensor, n_classes: int, Cs: Sequence[float],
              fold_idx: list[tuple[np.ndarray, np.ndarray]], max_iter: int, tol: float) -> tuple[float, bool]:
    """C maximising mean validation accuracy over the folds; ties -> lower mean validation log-loss."""
    order = sorted(range(len(Cs)), key=lambda k: Cs[k])  # strong -> weak regularisation, warm-started
    acc = np.zeros(len(Cs))
    loss = np.zeros(len(Cs))
    ok = True
    for tr, va in fold_idx:
        tr_t = torch.as_tensor(tr, device=x.device)
        va_t = torch.as_tensor(va, device=x.device)
        mean, scale = _standardizer(x[tr_t])
        xtr, xva = (x[tr_t] - mean) / scale, (x[va_t] - mean) / scale
        init = None
        for k in order:
            w, b, conv = _fit_logistic(xtr, y[tr_t], n_classes, 1.0 / (Cs[k] * len(tr)), init,
                                       max_iter=max_iter, tol=tol)
            ok &= conv
            init = (w, b)
            a, l = _scores(xva, y[va_t], w, b)
            acc[k] += a / len(fold_idx)
            loss[k] += l / len(fold_idx)
    best = min(range(len(Cs)), key=lambda k: (-round(acc[k], 12), loss[k]))
    return float(Cs[best]), ok


# ----------------------------------------------------------------------------------------------- public
def linear_probe(train: Any, y_train: Any, evals: Mapping[str, tuple[Any, Any]] | None = None, *,
                 C: float | None = None, Cs: Sequence[float] = (0.01, 0.1, 1.0, 10.0, 100.0), folds: int = 5,
                 seed: int = 0, max_iter: int = 1000, tol: float = 1e-8) -> pd.DataFrame:
    """Fit an L2-regularised multinomial logistic-regression probe per layer and score it.

    Minimises ``(1/n) sum_i CE_i + (lambda/2) ||W||^2`` with ``lambda = 1/(C n_train)`` on inputs
    standardized with training-split statistics (bias unpenalised; binary problems use one weight
    vector). This is exactly the objective of ``sklearn.linear_model.LogisticRegression(C=C)``
    (``C sum_i CE_i + 1/2 ||W||^2``) divided by ``C n_train``, so fits agree with sklearn fitted on the
    same standardized data. Solved with full-batch L-BFGS in float64 (see the module docstring for why).

    Parameters
    ----------
    train : array/tensor [N, D] or mapping layer name -> [N, D_layer]
        Training features; layers may differ in width. Tensors stay on their device.
    y_train : array [N] of integer class ids (any integers; at least 2 classes).
    evals : mapping split name -> (X, y), optional
        ``X`` is an array if ``train`` is, or a mapping holding every training layer (extra layers are
        ignored). Every label must occur in ``y_train``. The name "train" is reserved.
    C : float, optional
        Fixed inverse regularisation strength (sklearn's ``C``). If omitted, chosen per layer by
        stratified ``folds``-fold cross-validation on the training split from ``Cs``: highest mean
        validation accuracy, ties broken by lower mean validation log-loss. Each fold is standardized
        with its own training part; the split is ``StratifiedKFold(folds, shuffle=True,
        random_state=seed)``.
    Cs : sequence of float
        Grid for the cross-validation.
    folds : int >= 2
        Every class needs at least ``folds`` training examples when ``C`` is not given.
    seed : int
        Seed of the fold assignment (the fits themselves are deterministic).
    max_iter, tol : int, float
        L-BFGS iteration budget per fit and tolerance on ``max |grad J|``. A fit that stops with a
        gradient above ``max(10 tol, 1e-6)`` triggers a RuntimeWarning.

    Returns
    -------
    pandas.DataFrame
        Columns ``layer, probe, split, metric, value, C, n_train, n_classes``: for each layer, split
        ("train", then the ``evals`` names) and metric ("accuracy" in [0, 1]; "loss" = mean
        cross-entropy in nats, unpenalised, as ``sklearn.metrics.log_loss``). ``probe`` is "logistic";
        ``C`` is the fixed or selected value. ``layer`` is the mapping key, or "features" for array input.

    Raises
    ------
    ValueError
        NaN/Inf, 1-D features, mismatched N, a single class, eval labels absent from training, an eval
        split with a different width or missing layer, too few examples per class for ``folds``.
    TypeError
        Non-numeric features or labels, non-mapping ``evals``.
    """
    folds = check_positive_int(folds, "folds", minimum=2)
    seed = check_positive_int(seed, "seed", minimum=0)
    max_iter = check_positive_int(max_iter, "max_iter")
    tol = _check_c(tol, "tol")
    fixed_c = None if C is None else _check_c(C, "C")
    if fixed_c is None:
        if isinstance(Cs, (str, bytes)) or not hasattr(Cs, "__len__") or len(Cs) == 0:
            raise ValueError("Cs must be a non-empty sequence of positive numbers (or pass C)")
        Cs = [_check_c(c, f"Cs[{i}]") for i, c in enumerate(Cs)]

    train_layers, is_mapping = _as_layers(train, "train")
    y_np = check_labels(y_train, "y_train", min_classes=2)
    classes, counts = np.unique(y_np, return_counts=True)
    n_classes = len(classes)
    y_idx = np.searchsorted(classes, y_np)
    if fixed_c is None and counts.min() < folds:
        worst = classes[np.argmin(counts)]
        raise ValueError(f"class {worst} has only {counts.min()} training example(s), fewer than folds={folds} "
                         "needed for stratified cross-validation of C; lower `folds` (>= 2), pass a fixed C, "
                         "or add examples")

    evals = {} if evals is None else evals
    if not isinstance(evals, Mapping):
        raise TypeError(f"evals must be a mapping split name -> (X, y), got {type(evals).__name__}")
    eval_items: list[tuple[str, Any, np.ndarray]] = []
    for split, pair in evals.items():
        if split == "train":
            raise ValueError("evals may not contain a split named 'train' (reserved for the training scores)")
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise TypeError(f"evals[{split!r}] must be a pair (X, y)")
        xe, ye = pair
        if isinstance(xe, Mapping) != is_mapping:
            want = "a mapping of layers, like train" if is_mapping else "an array, like train"
            raise TypeError(f"evals[{split!r}] X must be {want}")
        ye_np = check_labels(ye, f"evals[{split!r}] y", min_classes=1)
        ye_idx = _encode(ye_np, classes, f"evals[{split!r}] y")
        eval_items.append((split, xe if is_mapping else {_DEFAULT_LAYER: xe}, ye_idx))

    rows: list[tuple] = []
    fold_idx = None
    all_converged = True
    for layer, x_raw in train_layers.items():
        lname = f"train[{layer!r}]" if is_mapping else "train"
        x = as_2d_tensor(x_raw, lname, min_rows=2)
        if x.shape[0] != len(y_np):
            raise ValueError(f"mismatched number of samples: {lname} has {x.shape[0]} rows, y_train has "
                             f"{len(y_np)}; pass features and labels of the same examples")
        y = torch.as_tensor(y_idx, device=x.device)
        if fixed_c is None:
            if fold_idx is None:
                fold_idx = _stratified_folds(y_idx, folds, seed)
            c_used, ok = _select_c(x, y, n_classes, Cs, fold_idx, max_iter, tol)
            all_converged &= ok
        else:
            c_used = fixed_c
        mean, scale = _standardizer(x)
        xs = (x - mean) / scale
        w, b, ok = _fit_logistic(xs, y, n_classes, 1.0 / (c_used * len(y_np)), max_iter=max_iter, tol=tol)
        all_converged &= ok
        scored = [("train", xs, y)]
        for split, xe_layers, ye_idx in eval_items:
            ename = f"evals[{split!r}] X" + (f"[{layer!r}]" if is_mapping else "")
            if layer not in xe_layers:
                raise ValueError(f"evals[{split!r}] X has no layer {layer!r}; give every eval split the "
                                 "training layers")
            xe = as_2d_tensor(xe_layers[layer], ename).to(x.device)
            if xe.shape[1] != x.shape[1]:
                raise ValueError(f"{ename} has {xe.shape[1]} features but {lname} has {x.shape[1]}; "
                                 "use the same layer/representation for training and evaluation")
            if xe.shape[0] != len(ye_idx):
                raise ValueError(f"mismatched number of samples: {ename} has {xe.shape[0]} rows, its labels "
                                 f"have {len(ye_idx)}")
            scored.append((split, (xe - mean) / scale, torch.as_tensor(ye_idx, device=x.device)))
        for split, xs_split, ys in scored:
            acc, loss = _scores(xs_split, ys, w, b)
            rows.append((layer, "logistic", split, "accuracy", acc, c_used, len(y_np), n_classes))
            rows.append((layer, "logistic", split, "loss", loss, c_used, len(y_np), n_classes))
    if not all_converged:
        warnings.warn(f"L-BFGS stopped before max|grad| <= {max(10 * tol, 1e-6):g} in at least one fit; raise "
                      "max_iter or use a smaller C", RuntimeWarning, stacklevel=2)
    return pd.DataFrame(rows, columns=["layer", "probe", "split", "metric", "value", "C", "n_train", "n_classes"])

"""Minimum-description-length probing: the online (prequential) codelength of labels given features.

Definition (Voita & Titov 2020, "Information-theoretic probing with minimum description length", EMNLP,
Sec. 2.2, Eq. 3; the prequential code of Rissanen 1984 / Blier & Ollivier 2018). Order the ``N`` examples
(shuffled with ``seed``), cut them at ``1 <= t_1 < t_2 < ... < t_S = N`` and transmit the labels block by
block:

    L_online = t_1 log2 K + sum_{i=1}^{S-1} sum_{j = t_i + 1}^{t_{i+1}} -log2 p_{theta_i}(y_j | x_j)

The first block is sent with the uniform code over the ``K`` classes; block ``i+1`` with a probe
``theta_i`` trained on the first ``t_i`` examples. Reported in **bits** (cross-entropies are computed in
nats and divided by ``ln 2``), together with the uniform codelength ``L_uniform = N log2 K`` and the
compression ``L_uniform / L_online`` (> 1 when the features help to predict the labels; about 1 when they
do not).

Block schedule: the paper's time steps at 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.25, 12.5, 25, 50 and 100 % of
the data (:data:`VOITA_TITOV_FRACTIONS`); ``t_i = floor(f_i N)`` (at least 1), duplicates dropped.

Probe (our choice; the paper used its task's own probes trained with early stopping): multinomial
logistic regression with ``K`` outputs whatever classes the preceding blocks contain, on features
standardized with the training part's statistics, minimising ``(1/n) sum CE + (lambda/2)(||W||^2 +
||b||^2)`` with ``lambda = 1/(C n)`` - the objective of :func:`workbench.probing.linear_probe` except that
the **bias is penalised too**: a class absent from the preceding blocks then keeps a finite logit (with
an unpenalised bias its probability would go to 0 and one occurrence would cost unbounded bits).
Solved by L-BFGS in float64, warm-started from the previous block's solution.

Namesakes: this is the *online* code, not the variational code of the same paper (a Bayesian probe's
KL + data cost), and not the minimum-description-length of a dataset under a fixed model.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Collection
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .._validation import Data, Flag, Instance, Interval, as_2d_tensor, check_labels, declare
from ..activations import as_layers
from ._common import check_int, check_number, check_target_name, standardizer, table

__all__ = ["online_codelength", "block_ends", "VOITA_TITOV_FRACTIONS"]

VOITA_TITOV_FRACTIONS = (0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.0625, 0.125, 0.25, 0.5, 1.0)


@declare(n=Interval(int, 2), fractions=Instance(Collection))
def block_ends(n: int, *, fractions: Sequence[float] = VOITA_TITOV_FRACTIONS) -> list[int]:
    """Block boundaries ``t_i = max(1, floor(f_i n))`` (duplicates dropped); the last is ``n``.

    ``fractions`` must increase strictly within (0, 1] and end with 1.

    Examples
    --------
    >>> block_ends(1000)             # floor of 1000 x the paper's fractions 0.1 % ... 100 %
    [1, 2, 4, 8, 16, 32, 62, 125, 250, 500, 1000]
    """
    n = check_int(n, "n", minimum=2)
    if isinstance(fractions, (str, bytes)) or not hasattr(fractions, "__len__") or len(fractions) < 2:
        raise ValueError("fractions must be a sequence of at least 2 increasing fractions ending with 1.0")
    fr = [check_number(f, f"fractions[{i}]", low=0.0, high=1.0, low_open=True) for i, f in enumerate(fractions)]
    if any(b <= a for a, b in zip(fr, fr[1:])) or fr[-1] != 1.0:
        raise ValueError(f"fractions must increase strictly and end with 1.0, got {list(fractions)}")
    ends = sorted({max(1, math.floor(f * n + 1e-9)) for f in fr})
    if len(ends) < 2:
        raise ValueError(f"with n={n} examples all blocks collapse into one; use more examples")
    return ends


def _fit(x: torch.Tensor, y: torch.Tensor, k: int, lam: float, init: tuple[torch.Tensor, torch.Tensor] | None,
         max_iter: int, tol: float) -> tuple[torch.Tensor, torch.Tensor, bool]:
    if init is None:
        w = torch.zeros(x.shape[1], k, dtype=x.dtype, device=x.device)
        b = torch.zeros(k, dtype=x.dtype, device=x.device)
    else:
        w, b = (t.detach().clone() for t in init)
    w.requires_grad_(True)
    b.requires_grad_(True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, max_eval=2 * max_iter, tolerance_grad=tol,
                            tolerance_change=1e-15, history_size=20, line_search_fn="strong_wolfe")

    def objective() -> torch.Tensor:
        return F.cross_entropy(x @ w + b, y) + 0.5 * lam * (w.square().sum() + b.square().sum())

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = objective()
        loss.backward()
        return loss

    opt.step(closure)
    gw, gb = torch.autograd.grad(objective(), [w, b])
    # the objective is lam-strongly convex, so |grad| / lam bounds the distance to the optimum: judge the
    # gradient relative to max(1, lam) (strongly regularised early blocks stall at tiny absolute changes)
    converged = max(float(gw.abs().max()), float(gb.abs().max())) <= max(10 * tol, 1e-6) * max(1.0, lam)
    return w.detach(), b.detach(), converged


@declare(x=Data("layers"), labels=Data("labels"), fractions=Instance(Collection),
         C=Interval(float, 0, closed="neither"), n_classes=Interval(int, 2, none=True), shuffle=Flag(),
         seed=Interval(int, 0), target=Instance(str), max_iter=Interval(int, 1),
         tol=Interval(float, 0, closed="neither"))
def online_codelength(x: Any, labels: Any, *, fractions: Sequence[float] = VOITA_TITOV_FRACTIONS,
                      C: float = 1.0, n_classes: int | None = None, shuffle: bool = True, seed: int = 0,
                      target: str = "label", max_iter: int = 500, tol: float = 1e-9) -> pd.DataFrame:
    """Online codelength of ``labels`` given the representation ``x`` (Voita & Titov 2020; module docstring), in
    bits.

    Parameters
    ----------
    x : [N, D] array/tensor, Activations or mapping layer -> [N, D_layer]; all examples are transmitted.
    labels : [N] integer class ids (>= 2 classes).
    fractions : block time steps as fractions of N (default: the paper's schedule).
    C : inverse regularisation strength of the logistic probe (``lambda = 1 / (C n_train)``).
    n_classes : size ``K`` of the label alphabet; default the number of distinct labels. Give it when
        some classes of the alphabet happen not to occur (labels must then be ``0 .. K-1``).
    shuffle, seed : transmit the examples in a random order drawn with ``seed`` (the same for every
        layer); ``shuffle=False`` keeps the given order.
    target : name for the ``target`` column.
    max_iter, tol : L-BFGS budget and gradient tolerance per block fit (a RuntimeWarning says when a fit
        stopped early).

    Returns
    -------
    DataFrame in the results schema (:mod:`workbench.results`; ``split="all"``; measures
    ``"online_codelength"`` and ``"uniform_codelength"`` in bits, ``"compression"`` = uniform / online;
    no interval: ``ci_low``/``ci_high`` are NaN - repeat over seeds and use
    :func:`workbench.probing.combine_seeds` for one) and columns ``target, method`` (``"logistic"``),
    ``n, n_blocks, n_classes, C``.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> labels = np.repeat([0, 1], 50); x = rng.normal(size=(100, 4)) + 6 * np.eye(4)[labels]   # two far-apart blobs
    >>> x_test = rng.normal(size=(100, 4)) + 6 * np.eye(4)[labels]
    >>> flipped = np.r_[1 - labels[:20], labels[20:]]     # 20 of 100 test labels wrong: a perfect probe scores 0.8
    >>> t = online_codelength(x, labels).set_index("measure").value
    >>> float(t["uniform_codelength"]), bool(t["compression"] > 5)    # 100 labels x log2(2) bits; learnable: fewer
    (100.0, True)
    """
    C = check_number(C, "C", low=0.0, low_open=True)
    seed = check_int(seed, "seed")
    max_iter = check_int(max_iter, "max_iter", minimum=1)
    tol = check_number(tol, "tol", low=0.0, low_open=True)
    target = check_target_name(target)
    if not isinstance(shuffle, bool):
        raise TypeError(f"shuffle must be True or False, got {type(shuffle).__name__}")
    y_np = check_labels(labels, "labels", min_classes=2)
    n = len(y_np)
    if n_classes is None:
        classes = np.unique(y_np)
        k = len(classes)
        y_idx = np.searchsorted(classes, y_np)
    else:
        k = check_int(n_classes, "n_classes", minimum=2)
        if y_np.min() < 0 or y_np.max() >= k:
            raise ValueError(f"with n_classes={k} labels must lie in 0..{k - 1}, got range "
                             f"[{y_np.min()}, {y_np.max()}]")
        y_idx = y_np
    ends = block_ends(n, fractions=fractions)
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    layers, is_mapping = as_layers(x, "x")
    rows = []
    ok = True
    uniform = n * math.log2(k)
    for layer, x_raw in layers.items():
        lname = f"x[{layer!r}]" if is_mapping else "x"
        z = as_2d_tensor(x_raw, lname, min_rows=2)
        if z.shape[0] != n:
            raise ValueError(f"mismatched number of samples: {lname} has {z.shape[0]} rows, labels has {n}")
        perm = torch.as_tensor(order, device=z.device)
        z = z[perm]
        y = torch.as_tensor(y_idx, device=z.device)[perm]
        bits = ends[0] * math.log2(k)
        init = None
        for start, stop in zip(ends[:-1], ends[1:]):
            mean, scale = standardizer(z[:start])
            w, b, conv = _fit((z[:start] - mean) / scale, y[:start], k, 1.0 / (C * start), init, max_iter, tol)
            ok &= conv
            init = (w, b)
            logits = (z[start:stop] - mean) / scale @ w + b
            bits += float(F.cross_entropy(logits, y[start:stop], reduction="sum")) / math.log(2.0)
        params = {"n": n, "n_blocks": len(ends), "n_classes": k, "C": C}
        for measure, value in (("online_codelength", bits), ("uniform_codelength", uniform),
                               ("compression", uniform / bits)):
            rows.append({"layer": layer, "measure": measure, "split": "all", "value": value, "ci_low": math.nan,
                         "ci_high": math.nan, "target": target, "method": "logistic", **params})
    if not ok:
        warnings.warn("L-BFGS stopped before reaching the gradient tolerance in at least one block fit; raise "
                      "max_iter or use a smaller C", RuntimeWarning, stacklevel=2)
    return table(rows, layers)

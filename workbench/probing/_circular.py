"""A probe for circular (angular) factors such as an object's rotation: ridge regression onto (sin kθ, cos kθ).

An angle cannot be regressed as a number (0 and 2π are the same rotation), so the probe predicts the point
``(sin kθ, cos kθ)`` on the unit circle with ridge regression (the model and the leave-one-out choice of the
strength of :func:`workbench.probing.ridge_probe`) and reads the angle back as ``θ̂ = atan2(ŝ, ĉ) / k``. ``k``
(``symmetry``) handles a k-fold symmetric object: a square rotated by 90° looks the same, so only ``kθ`` mod 2π
is identifiable and the probe targets that.
"""
from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from .._validation import Data, Instance, Interval, declare
from ._common import (PROBE_RULES, check_ci, check_int, check_number, check_target_name, prepare, standardizer,
                      table)
from ._probes import DEFAULT_ALPHAS, _check_sequence, _RidgeEigen
from ._stats import bootstrap_ci

__all__ = ["circular_probe"]


def _angles(value: Any, name: str) -> np.ndarray:
    """A finite 1-D float array of angles in radians."""
    if isinstance(value, (str, bytes)) or value is None:
        raise TypeError(f"{name} must be a 1-D array of angles in radians, got {type(value).__name__}")
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    arr = np.asarray(value)
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers (angles in radians), got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of angles (one per example), got shape {arr.shape}")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN/Inf; drop those examples")
    return arr


def _scores(pred: torch.Tensor, theta: np.ndarray, k: int) -> np.ndarray:
    """Per-example ``cos(atan2(ŝ, ĉ) − kθ)`` (the cosine of the error of the predicted ``kθ``)."""
    p = pred.detach().cpu().numpy()
    return np.cos(np.arctan2(p[:, 0], p[:, 1]) - k * theta)


@declare(**{**PROBE_RULES, "labels": Data("any", example=lambda: np.linspace(0, 2 * np.pi, Data.N, endpoint=False),
                                         bad=[np.zeros((Data.N, 2)), np.r_[np.zeros(Data.N - 1), np.nan], "angles",
                                              np.zeros(Data.N - 1)])},
         symmetry=Interval(int, 1), alphas=Instance(Collection), target=Instance(str))
def circular_probe(x: Any, labels: Any, evals: Mapping[str, tuple[Any, Any]] | None = None, *, symmetry: int = 1,
                   alphas: Sequence[float] = DEFAULT_ALPHAS, target: str = "angle", n_boot: int = 1000,
                   ci_level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Probe a circular factor (an angle θ in radians) by ridge regression onto ``(sin kθ, cos kθ)``.

    Model: the features are standardized with training statistics and ``(sin kθ, cos kθ)`` is regressed on them
    with an unpenalised intercept — exactly :func:`workbench.probing.ridge_probe` with ``task="regression"`` on
    those two columns (``sklearn.linear_model.Ridge(alpha)``). One strength for both columns is chosen from
    ``alphas`` by exact leave-one-out cross-validation (lowest LOO squared error summed over the two columns;
    ties → the larger alpha; Allen 1974). The predicted angle is ``θ̂ = atan2(ŝ, ĉ) / k``.

    Score (measure ``"circular_cosine"``): the mean cosine of the angular error of ``kθ``,

        ``C = (1/n) Σ_i cos(k θ̂_i − k θ_i)``  ∈ [−1, 1],

    the projection of the mean resultant vector of the errors on zero error (Mardia & Jupp 2000, *Directional
    statistics*, §2.3.1 and §3.4: ``1 − C`` is the circular variance of the errors about 0). ``C = 1`` for a
    perfect probe; a prediction independent of θ gives ``C ≈ 0`` (the analogue of ``R² = 0``); a constant
    prediction scores ``E cos(c − kθ)``, 0 for uniform angles. A second measure, ``"angle_error"``, is the mean
    absolute wrapped error ``|wrap(kθ̂ − kθ)| / k`` in radians (in ``[0, π/k]``; chance ``π/(2k)``).

    ``symmetry = k``: an object with k-fold rotational symmetry (a square: 4) looks the same at θ and θ + 2π/k,
    so only ``kθ`` mod 2π is identifiable from any representation of the image; ``k = 1`` for a generic angle.

    Parameters
    ----------
    x : [N, D] array/tensor, Activations or mapping layer -> [N, D_layer] (training representation).
    labels : [N] angles in radians (any range; they are used through sin and cos).
    evals : mapping split name -> (X, angles), optional; names "train" and "loo" are reserved.
    symmetry : k >= 1, the rotational symmetry order.
    alphas : positive ridge strengths searched by LOO (sklearn's units).
    target : name for the ``target`` column.
    n_boot, ci_level, seed : percentile-bootstrap interval over each split's examples (``n_boot=0``: NaN bounds).

    Returns
    -------
    DataFrame in the results schema, ``method="ridge_circular"``, splits "train", "loo", then the eval splits,
    measures "circular_cosine" (with its interval) and "angle_error" (interval over examples too), and columns
    ``target, method, alpha, symmetry, n_train``.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> theta = rng.uniform(0, 2 * np.pi, 400)
    >>> x = np.c_[np.cos(theta), np.sin(theta), rng.normal(size=(400, 3))]    # the angle is linearly readable
    >>> t = circular_probe(x[:300], theta[:300], {"test": (x[300:], theta[300:])}, n_boot=0)
    >>> round(float(t.query("measure == 'circular_cosine' and split == 'test'").value.iloc[0]), 2)
    1.0
    >>> noise = rng.normal(size=(400, 5))                                      # unrelated features: C ≈ 0
    >>> t = circular_probe(noise[:300], theta[:300], {"test": (noise[300:], theta[300:])}, n_boot=0)
    >>> abs(float(t.query("measure == 'circular_cosine' and split == 'test'").value.iloc[0])) < 0.2
    True
    """
    n_boot, ci_level = check_ci(n_boot, ci_level)
    seed = check_int(seed, "seed")
    k = check_int(symmetry, "symmetry", minimum=1)
    target = check_target_name(target)
    alphas = [check_number(a, f"alphas[{i}]", low=0.0, low_open=True)
              for i, a in enumerate(_check_sequence(alphas, "alphas"))]
    theta = _angles(labels, "labels")
    thetas = {"train": theta, "loo": theta}
    if evals is not None and not isinstance(evals, Mapping):
        raise TypeError(f"evals must be a mapping split name -> (X, angles), got {type(evals).__name__}")
    evals_xy = {}
    for split, pair in (evals or {}).items():
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise TypeError(f"evals[{split!r}] must be a pair (X, angles)")
        thetas[split] = _angles(pair[1], f"evals[{split!r}] angles")
        evals_xy[split] = (pair[0], np.c_[np.sin(k * thetas[split]), np.cos(k * thetas[split])])
    y2 = np.c_[np.sin(k * theta), np.cos(k * theta)]
    prob = prepare(x, y2, evals_xy, task="regression", labels_name="labels", min_rows=3)
    rows: list[dict[str, Any]] = []
    for layer, xt, xe in prob.layers(min_rows=3):
        dev = xt.device
        mean, scale = standardizer(xt)
        xs = (xt - mean) / scale
        center = xs.mean(dim=0)
        y = torch.as_tensor(prob.y_train, device=dev)
        eig = _RidgeEigen(xs - center, y)
        a_t = torch.tensor(alphas, dtype=torch.float64, device=dev)
        denom = (1.0 - eig.hat_diag(a_t)).clamp_min(1e-12)                    # [n, A]
        loo, sse = [], []
        for j in range(len(alphas)):
            cols = a_t[j].repeat(2)
            resid = y - eig.fitted(cols)
            loo.append(y - resid / denom[:, j:j + 1])
            sse.append(round(float((resid / denom[:, j:j + 1]).square().sum()), 12))
        best = min(range(len(alphas)), key=lambda j: (sse[j], -alphas[j]))
        cols = a_t[best].repeat(2)
        preds = {"train": eig.fitted(cols), "loo": loo[best]}
        preds.update({s: eig.predict((t - mean) / scale - center, cols) for s, t in xe.items()})
        params = {"target": target, "method": "ridge_circular", "alpha": alphas[best], "symmetry": k,
                  "n_train": len(y)}
        for split, pred in preds.items():
            c = _scores(pred, thetas[split], k)
            err = np.abs(np.arccos(np.clip(c, -1.0, 1.0))) / k
            for measure, s in (("circular_cosine", c), ("angle_error", err)):
                low, high = (bootstrap_ci(s, n_boot=n_boot, alpha=1.0 - ci_level, seed=seed) if n_boot
                             else (math.nan, math.nan))
                rows.append({"layer": layer, "measure": measure, "split": split, "value": float(s.mean()),
                             "ci_low": low, "ci_high": high, **params})
    return table(rows, prob.x)

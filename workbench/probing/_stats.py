"""Bootstrap confidence intervals shared by every probe.

Every probe returns a table in the one results schema (:mod:`workbench.results`: ``run, step, layer,
layer_index, measure, split, value, ci_low, ci_high``, then the extras ``target``, ``method`` and the probe's
parameters such as ``C``, ``k`` or ``n_train``), one row per layer × method × target × split × measure.

Confidence intervals (:func:`bootstrap_ci`): nonparametric percentile bootstrap over test examples
(Efron & Tibshirani 1993, ch. 13): resample the ``n`` per-example scores with replacement ``B`` times,
take the mean of each resample, and report the ``alpha/2`` and ``1 - alpha/2`` quantiles of those means
(``numpy.quantile``'s default linear interpolation). With per-seed scores (several runs), the same is done
over seeds (:func:`bootstrap_ci` on the per-seed values).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .._validation import Data, Interval, declare

__all__ = ["bootstrap_ci"]


@declare(scores=Data("any", example=lambda: np.r_[np.zeros(24), np.ones(24)],
                     bad=[np.zeros((4, 2)), np.array([0.0, np.nan]), np.array([])]),
         n_boot=Interval(int, 1), alpha=Interval(float, 0, 1, closed="neither"), seed=Interval(int, 0),
         chunk=Interval(int, 1))
def bootstrap_ci(scores: Any, *, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0,
                 chunk: int = 256) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean of per-example ``scores`` (module docstring).

    Parameters
    ----------
    scores : 1-D array of per-example values (e.g. 0/1 correctness, per-example loss).
    n_boot : number of resamples ``B``.
    alpha : 1 - coverage (0.05 → a 95 % interval).
    seed : resampling seed (results are deterministic per seed).
    chunk : resamples drawn at a time (memory ``chunk × n`` indices).

    Returns
    -------
    (low, high). A single score gives ``(score, score)``.

    Examples
    --------
    >>> import numpy as np
    >>> bootstrap_ci(np.ones(20))                                     # no spread, no interval
    (1.0, 1.0)
    >>> [round(v, 1) for v in bootstrap_ci(np.r_[np.zeros(50), np.ones(50)])]   # ~0.5 +- 1.96 * 0.05
    [0.4, 0.6]
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or s.size == 0:
        raise ValueError(f"scores must be a non-empty 1-D array of per-example values, got shape {s.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN/Inf; compute per-example scores from finite predictions")
    if not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}")
    if not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"alpha must be in (0, 1), e.g. 0.05 for a 95% interval; got {alpha!r}")
    rng = np.random.default_rng(seed)
    n = s.size
    means = np.empty(int(n_boot))
    for start in range(0, int(n_boot), chunk):
        stop = min(start + chunk, int(n_boot))
        means[start:stop] = s[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)

"""When each eigenmode of a representation is learned: onsets and the stepwiseness of eigenvalue curves.

Self-supervised joint-embedding training from small initialization learns the eigenmodes of its embedding one at
a time (Simon et al. 2023, "On the stepwise nature of self-supervised learning", ICML): each covariance eigenvalue
stays near its tiny initial value, rises sigmoidally to a plateau, and the next one follows later — as the modes of
a deep linear network (Saxe, McClelland & Ganguli 2014, ICLR; 2019, PNAS), where mode ``k`` of strength ``s_k``
learned from initial size ``a`` turns on at ``t_k ≈ log(s_k / a) / s_k`` (in units of the learning rate). From
standard initialization the eigenvalues start near their final size and rise together.

These functions read the curves ``λ_k(t)`` — e.g. the ``eig_k`` rows of the trainer's ``eig_steps`` recorder — as an
array ``[T, K]`` (rows: recorded steps, columns: modes) and say when each mode turns on and how separated the turns
are.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .._validation import Data, Interval, as_2d_float, declare

__all__ = ["mode_onsets", "stepwiseness"]


def _example_curves() -> np.ndarray:
    """Three sigmoids rising one after another (onsets 20, 50, 80 of 100 steps)."""
    t = np.arange(100.0)[:, None]
    return np.array([3.0, 2.0, 1.0]) / (1 + np.exp(-(t - np.array([20.0, 50.0, 80.0])) / 3))


_CURVES = Data("x", example=_example_curves, scale="invariant")
_STEPS = Data("any", none=True)


def _curves_and_steps(curves: Any, steps: Any) -> tuple[np.ndarray, np.ndarray]:
    c = as_2d_float(curves, "curves")
    if not np.all(np.isfinite(c)):
        raise ValueError("curves must be finite eigenvalues [T steps, K modes]; drop the steps with NaN/inf")
    top = float(np.max(np.abs(c))) if c.size else 0.0
    if np.any(c < -1e-9 * top):
        raise ValueError("curves must be eigenvalues of a covariance (>= 0), got negative values; pass the "
                         "eigenvalue curves [T steps, K modes], not the features")
    c = np.clip(c, 0.0, None)
    if steps is None:
        s = np.arange(len(c), dtype=np.float64)
    else:
        s = np.asarray(steps)
        if s.dtype == object or not (np.issubdtype(s.dtype, np.integer) or np.issubdtype(s.dtype, np.floating)) \
                or np.issubdtype(s.dtype, np.bool_):
            raise TypeError(f"steps must be a 1-d array of numbers (the step of each row of curves), got dtype "
                            f"{s.dtype}")
        s = s.astype(np.float64)
        if s.shape != (len(c),):
            raise ValueError(f"steps must have one entry per row of curves ({len(c)}), got shape {s.shape}")
        if not np.all(np.isfinite(s)) or np.any(np.diff(s) <= 0):
            raise ValueError("steps must be finite and strictly increasing (the step of each row of curves)")
    return c, s


def _final(c: np.ndarray, tail: float) -> np.ndarray:
    """Per column: the median of the last ``ceil(tail · T)`` rows (at least one) — the plateau, robust to the
    step-to-step noise of one recorded step."""
    n = max(1, int(np.ceil(tail * len(c))))
    return np.median(c[-n:], axis=0)


def _crossing(c: np.ndarray, s: np.ndarray, level: float, final: np.ndarray) -> np.ndarray:
    """Per column: the first step at which ``c`` reaches ``level · final``."""
    reached = c >= level * final
    # some tail row is >= the tail's median >= level · final (values >= 0, level < 1), so argmax finds one
    return s[np.argmax(reached, axis=0)]


@declare(curves=_CURVES, steps=_STEPS, fraction=Interval(float, 0.0, 1.0, closed="neither"),
         tail=Interval(float, 0.0, 1.0, closed="right"))
def mode_onsets(curves: Any, steps: Any = None, *, fraction: float = 0.5, tail: float = 0.1) -> np.ndarray:
    """The step at which each eigenmode turns on: the first recorded step where its eigenvalue reaches
    ``fraction`` of its final value.

    ``onset_k = min { t : λ_k(t) ≥ fraction · λ̄_k }`` with ``λ̄_k`` the final value: the median of ``λ_k`` over the
    last ``tail`` of the recorded steps (at least one; ``tail`` small: the plateau, robust to one noisy step).
    For a sigmoidal rise from a small start
    (Saxe et al. 2014; Simon et al. 2023, whose stepwise picture times each eigenvalue by when it reaches its
    plateau) ``fraction = 0.5`` is the midpoint of the rise; a mode that starts above ``fraction`` of its final
    value (standard initialization) turns on at the first step.

    Parameters
    ----------
    curves : array [T, K]
        Eigenvalue ``k`` (column) at each recorded step (row), ``>= 0`` (e.g. the ``eig_k`` rows of the
        ``eig_steps`` recorder pivoted to steps × modes). Sorted eigenvalues are fine: mode ``k`` is the
        ``k``-th largest.
    steps : array [T], optional
        Strictly increasing step of each row; default ``0 .. T-1``.
    fraction : float in (0, 1)
        The level, relative to the final value, that counts as "on".
    tail : float in (0, 1]
        Fraction of the last recorded steps whose median is the final value.

    Returns
    -------
    ndarray [K]
        Onset step of each mode (float).

    Examples
    --------
    >>> import numpy as np
    >>> t = np.arange(100.0)[:, None]
    >>> curves = np.array([2.0, 1.0]) / (1 + np.exp(-(t - np.array([30.0, 70.0])) / 2))
    >>> mode_onsets(curves).tolist()
    [30.0, 70.0]
    """
    c, s = _curves_and_steps(curves, steps)
    return _crossing(c, s, fraction, _final(c, tail))


@declare(curves=_CURVES, steps=_STEPS, fraction=Interval(float, 0.0, 1.0, closed="neither"),
         low=Interval(float, 0.0, 1.0, closed="neither"), high=Interval(float, 0.0, 1.0, closed="neither"),
         tail=Interval(float, 0.0, 1.0, closed="right"))
def stepwiseness(curves: Any, steps: Any = None, *, fraction: float = 0.5, low: float = 0.1, high: float = 0.9,
                 tail: float = 0.1) -> dict[str, float]:
    """How separated in time the eigenmodes turn on: onset spread, mean gap and gap-to-rise-width ratio.

    With ``o_k`` the onsets (:func:`mode_onsets` at ``fraction``) sorted in time, ``T = t_last − t_first`` the
    recorded span and ``w_k = t_k(high) − t_k(low)`` the rise width of mode ``k`` (steps from ``low`` to ``high``
    of its final value):

    - ``onset_spread = (max_k o_k − min_k o_k) / T`` — 0 when every mode turns on together, near 1 when the
      first turns on at the start and the last at the end;
    - ``mean_gap = mean(diff(sorted o)) / T`` — the spread per step between consecutive modes;
    - ``rise_width = median_k w_k / T``;
    - ``separation = mean(diff(sorted o)) / max(median_k w_k, Δt)`` with ``Δt`` the smallest recorded step
      interval (the resolution) — above 1 the modes rise one after another as separate steps, below 1 they
      overlap (the picture of Simon et al. 2023, Fig. 1; Saxe et al. 2019 give sigmoidal, sequential mode rises
      from small initialization).

    Parameters
    ----------
    curves : array [T, K]
        Eigenvalue curves, at least 2 steps and 2 modes (see :func:`mode_onsets`).
    steps : array [T], optional
        Strictly increasing step of each row; default ``0 .. T-1``.
    fraction, low, high : float in (0, 1)
        Onset level and the rise's start and end levels (``low < high``), relative to each mode's final value.
    tail : float in (0, 1]
        Fraction of the last recorded steps whose median is a mode's final value (see :func:`mode_onsets`).

    Returns
    -------
    dict
        ``onset_spread``, ``mean_gap``, ``rise_width``, ``separation`` (floats) and ``n_modes`` (K).

    Examples
    --------
    >>> import numpy as np
    >>> t = np.arange(101.0)[:, None]
    >>> apart = np.array([3.0, 2.0, 1.0]) / (1 + np.exp(-(t - np.array([20.0, 50.0, 80.0])) / 2))
    >>> round(stepwiseness(apart)["onset_spread"], 2)
    0.6
    >>> together = np.array([3.0, 2.0, 1.0]) / (1 + np.exp(-(t - 20.0) / 2))
    >>> stepwiseness(together)["onset_spread"]
    0.0
    """
    if low >= high:
        raise ValueError(f"low={low} must be below high={high} (the start and end levels of a rise)")
    c, s = _curves_and_steps(curves, steps)
    if c.shape[0] < 2 or c.shape[1] < 2:
        raise ValueError(f"curves needs at least 2 steps (rows) and 2 modes (columns) to compare onsets, got shape "
                         f"{c.shape}")
    span = s[-1] - s[0]
    final = _final(c, tail)
    onsets = np.sort(_crossing(c, s, fraction, final))
    widths = _crossing(c, s, high, final) - _crossing(c, s, low, final)
    gap = float(np.mean(np.diff(onsets)))
    width = float(np.median(widths))
    return {"onset_spread": float((onsets[-1] - onsets[0]) / span), "mean_gap": gap / span,
            "rise_width": width / span, "separation": gap / max(width, float(np.min(np.diff(s)))),
            "n_modes": int(c.shape[1])}

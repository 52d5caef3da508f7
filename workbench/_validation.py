"""Input checks shared by every stage. Each error names the argument and says what to do."""
from __future__ import annotations

import numbers
from typing import Any, Iterable, Mapping

import numpy as np
import torch

__all__ = ["as_2d_float", "as_2d_tensor", "check_finite", "check_same_length", "check_choice", "check_labels",
           "check_fraction", "check_positive_int"]


def _to_numpy(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    if isinstance(x, (list, tuple)):
        return np.asarray(x)
    raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}")


def check_finite(x: np.ndarray | torch.Tensor, name: str) -> None:
    """Raise ValueError if ``x`` holds NaN or Inf, saying where.

    Fast path: under IEEE arithmetic a sum with any NaN or Inf term is NaN or Inf, so a finite sum means
    every entry is finite (one reduction, no boolean copy). Only a non-finite sum (bad entries, or finite
    ones that overflow) pays for the entry-by-entry check.
    """
    if isinstance(x, torch.Tensor):
        if not x.is_floating_point() or bool(torch.isfinite(x.sum())):
            return
        bad = ~torch.isfinite(x)
        n_bad = int(bad.sum())
    else:
        arr = np.asarray(x)
        if not np.issubdtype(arr.dtype, np.inexact):
            return
        with np.errstate(all="ignore"):  # an overflowing sum of finite entries is not an error here
            if np.isfinite(arr.sum()):
                return
        bad = ~np.isfinite(arr)
        n_bad = int(bad.sum())
    if n_bad:
        rows = np.unique(np.nonzero(np.asarray(bad.cpu() if isinstance(bad, torch.Tensor) else bad))[0])
        raise ValueError(
            f"{name} contains {n_bad} NaN/Inf value(s) (first rows: {rows[:5].tolist()}); "
            "remove or impute them before computing this measure")


def as_2d_float(x: Any, name: str, *, dtype=np.float64, min_rows: int = 1) -> np.ndarray:
    """Validate a [N, D] feature matrix and return it as a float numpy array.

    Integer input is converted; 1-D input is an error (ambiguous: one sample or one feature?).
    """
    arr = _to_numpy(x, name)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D [n_samples, n_features], got shape {tuple(arr.shape)}; "
                         "reshape (e.g. x.reshape(len(x), -1)) or pool the activations first")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(f"{name} must be numeric, got dtype {arr.dtype}")
    if arr.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} samples, got {arr.shape[0]}")
    arr = arr.astype(dtype, copy=False)
    check_finite(arr, name)
    return arr


def as_2d_tensor(x: Any, name: str, *, dtype: torch.dtype = torch.float64, min_rows: int = 1) -> torch.Tensor:
    """Validate a [N, D] feature matrix and return it as a float torch tensor on the input's device.

    Like :func:`as_2d_float`, but a torch tensor stays where it is (CPU or CUDA) so the measure that
    called this runs on the same device; numpy/list input becomes a CPU tensor. Integer and bool input
    are converted; 1-D input is an error.
    """
    if isinstance(x, torch.Tensor):
        t = x.detach()
        if t.ndim != 2:
            raise ValueError(f"{name} must be 2-D [n_samples, n_features], got shape {tuple(t.shape)}; "
                             "reshape (e.g. x.reshape(len(x), -1)) or pool the activations first")
        if t.is_complex():
            raise TypeError(f"{name} must be real-valued, got dtype {t.dtype}")
        if t.shape[0] < min_rows:
            raise ValueError(f"{name} needs at least {min_rows} samples, got {t.shape[0]}")
        t = t.to(dtype)
    else:
        arr = as_2d_float(x, name, dtype=np.float64, min_rows=min_rows)
        return torch.from_numpy(np.ascontiguousarray(arr)).to(dtype)
    check_finite(t, name)
    return t


def check_same_length(**arrays: Any) -> int:
    """All keyword arguments must have the same first dimension; returns it."""
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) > 1:
        desc = ", ".join(f"{k} has {n}" for k, n in lengths.items())
        raise ValueError(f"mismatched number of samples: {desc}; pass arrays over the same examples")
    return next(iter(lengths.values()))


def check_choice(value: Any, choices: Iterable[Any], name: str) -> Any:
    choices = list(choices)
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not one of {choices}")
    return value


def check_labels(y: Any, name: str = "labels", *, min_classes: int = 2) -> np.ndarray:
    """Integer class labels as a 1-D int64 array with at least ``min_classes`` classes."""
    arr = _to_numpy(y, name)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one class per sample), got shape {tuple(arr.shape)}")
    if not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise TypeError(f"{name} must hold integer class ids, got dtype {arr.dtype}; "
                            "encode strings with np.unique(y, return_inverse=True)")
    n_classes = len(np.unique(arr))
    if n_classes < min_classes:
        raise ValueError(f"{name} has {n_classes} distinct class(es); at least {min_classes} are needed")
    return arr.astype(np.int64, copy=False)


def check_fraction(value: Any, name: str, *, low: float = 0.0, high: float = 1.0) -> float:
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"{name} must be a number in [{low}, {high}], got {type(value).__name__}")
    if not (low <= float(value) <= high):
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
    return float(value)


def check_positive_int(value: Any, name: str, *, minimum: int = 1) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {type(value).__name__}")
    if int(value) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_layers_and_measures(acts: Any, measures: Any, choices: Iterable[str]) -> list[str]:
    """Shared checks of the per-layer table functions: ``acts`` a non-empty mapping layer -> array, ``measures``
    a name or a non-empty sequence of names from ``choices``; returns the measures as a list."""
    if not isinstance(acts, Mapping):
        raise TypeError(f"acts must be a mapping layer name -> [N, d] array, got {type(acts).__name__}")
    if len(acts) == 0:
        raise ValueError("acts is empty; pass at least one layer")
    measures = [measures] if isinstance(measures, str) else list(measures)
    if not measures:
        raise ValueError(f"measures is empty; choose from {list(choices)}")
    for m in measures:
        check_choice(m, choices, "measures")
    return measures

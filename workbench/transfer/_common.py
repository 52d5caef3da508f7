"""Input handling shared by the transferability scores (labels on the features' device, N checks)."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .._validation import check_labels


def class_index(labels: Any, name: str, n: int | None = None, *, min_classes: int = 2,
                other: str = "x") -> tuple[np.ndarray, np.ndarray]:
    """Integer labels -> (codes 0..C-1 as int64 numpy, sorted distinct labels). Checks the length against
    ``n`` when given."""
    y = check_labels(labels, name, min_classes=min_classes)
    if n is not None and len(y) != n:
        raise ValueError(f"mismatched number of samples: {other} has {n} rows, {name} has {len(y)}; "
                         "pass labels for the same examples, in the same order")
    classes, codes = np.unique(y, return_inverse=True)
    return codes.astype(np.int64).reshape(-1), classes


def one_hot(codes: np.ndarray, n_classes: int, device: torch.device) -> torch.Tensor:
    """[N, C] float64 indicator matrix on ``device``."""
    idx = torch.as_tensor(codes, device=device)
    return torch.nn.functional.one_hot(idx, n_classes).to(torch.float64)


def check_eps(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a positive number, got {type(value).__name__}")
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value}")
    return float(value)


def rank_tolerance(eigenvalues: torch.Tensor, size: int) -> float:
    """Eigenvalues of a Gram matrix below this are treated as exact zeros.

    ``lambda_max * size * eps(float64)``: the rounding error of an eigenvalue computed from a Gram
    matrix of that size (the numpy ``matrix_rank`` rule applied to the Gram matrix).
    """
    top = float(eigenvalues.max()) if eigenvalues.numel() else 0.0
    return top * max(size, 1) * float(np.finfo(np.float64).eps)

"""Label corruption with a record of what was changed."""
from __future__ import annotations

import numpy as np

from .._validation import check_fraction, check_labels

__all__ = ["symmetric_label_noise", "pairflip_label_noise", "label_noise"]


def _check_noise_args(labels, rate: float, num_classes: int) -> tuple[np.ndarray, float]:
    """Validated (labels, rate) for the label-noise functions."""
    y = check_labels(labels, "labels", min_classes=1)
    rate = check_fraction(rate, "rate")
    if num_classes < 2 and rate > 0:
        raise ValueError("num_classes must be >= 2 to flip labels")
    if y.max() >= num_classes:
        raise ValueError(f"labels hold class {int(y.max())} but num_classes={num_classes}")
    return y, rate


def symmetric_label_noise(labels, rate: float, num_classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Flip exactly ``round(rate * N)`` labels, each to a different class chosen uniformly.

    This is "symmetric" (uniform off-diagonal) noise as used in Noisy Model Learning (Chen et al. 2024)
    and the label-noise memorization literature (Arpit et al. 2017), with the flip count fixed rather
    than binomial so that the requested fraction is exact.

    Returns
    -------
    noisy : int64 [N]
        The corrupted labels.
    flipped : bool [N]
        True where ``noisy != labels``.
    """
    y, rate = _check_noise_args(labels, rate, num_classes)
    rng = np.random.default_rng([seed, 0x5EED])
    n_flip = round(rate * len(y))
    flipped = np.zeros(len(y), dtype=bool)
    flipped[rng.choice(len(y), size=n_flip, replace=False)] = True
    noisy = y.copy()
    # an offset in [1, K-1] added modulo K gives a uniformly chosen *different* class
    offsets = rng.integers(1, num_classes, size=n_flip)
    noisy[flipped] = (y[flipped] + offsets) % num_classes
    return noisy, flipped


def pairflip_label_noise(labels, rate: float, num_classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Class-dependent "pair flip" noise (Han et al. 2018, "Co-teaching", NeurIPS): exactly
    ``round(rate * N)`` labels, chosen uniformly, are changed from class ``c`` to ``(c + 1) mod K``.

    The transition matrix is ``T[c, c] = 1 - rate``, ``T[c, c+1] = rate`` in expectation — the noise
    depends on the class, unlike :func:`symmetric_label_noise`. Returns ``(noisy, flipped)`` as that does.
    """
    y, rate = _check_noise_args(labels, rate, num_classes)
    rng = np.random.default_rng([seed, 0x5EED, 1])
    flipped = np.zeros(len(y), dtype=bool)
    flipped[rng.choice(len(y), size=round(rate * len(y)), replace=False)] = True
    noisy = y.copy()
    noisy[flipped] = (y[flipped] + 1) % num_classes
    return noisy, flipped


def label_noise(labels, rate: float, num_classes: int, kind: str = "symmetric",
                seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Dispatch on ``kind`` ("symmetric" | "pairflip")."""
    if kind == "symmetric":
        return symmetric_label_noise(labels, rate, num_classes, seed)
    if kind == "pairflip":
        return pairflip_label_noise(labels, rate, num_classes, seed)
    raise ValueError(f"kind={kind!r} is not one of ['symmetric', 'pairflip']")

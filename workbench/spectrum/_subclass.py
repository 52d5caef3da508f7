"""Subclass structure inside superclasses: how far a representation keeps the subclasses of a class apart.

:func:`subclass_spread` is the share of the within-superclass scatter that lies between the subclass means —
the correlation ratio η² of the subclass inside each superclass, pooled over superclasses. 0 means the subclasses
of every superclass share one mean (class collapse, Xue et al. 2023); 1 means every subclass is a single point,
apart from the others of its superclass.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .._validation import Data, as_2d_tensor, check_labels, declare

__all__ = ["subclass_spread"]


def _sums(h: torch.Tensor, codes: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-group means [G, D], counts [G] and group index of each row (on ``h``'s device)."""
    _, inv = np.unique(codes, return_inverse=True)
    inv_t = torch.as_tensor(inv, dtype=torch.long, device=h.device)
    counts = torch.bincount(inv_t).to(h.dtype)
    means = torch.zeros((len(counts), h.shape[1]), dtype=h.dtype, device=h.device).index_add_(0, inv_t, h)
    return means / counts[:, None], counts, inv_t


@declare(x=Data("x", scale="invariant"), subclasses=Data("labels"),
         superclasses=Data("labels", example=lambda: (np.arange(Data.N) % Data.CLASSES == 2).astype(np.int64)))
def subclass_spread(x: Any, subclasses: Any, superclasses: Any) -> float:
    """Between-subclass share of the within-superclass scatter (the pooled correlation ratio η²).

    With ``μ_c`` the mean of superclass ``c``'s rows and ``μ_(c,s)`` the mean of subclass ``s``'s rows (``n_(c,s)``
    of them; a subclass belongs to one superclass)::

        B = Σ_c Σ_s n_(c,s) ‖μ_(c,s) − μ_c‖²          (scatter of the subclass means around their superclass mean)
        W = Σ_c Σ_s Σ_(i ∈ s) ‖x_i − μ_(c,s)‖²        (scatter of the rows around their subclass mean)
        spread = B / (B + W)

    ``B + W`` is the scatter of the rows around their superclass mean (the decomposition ``S_T = S_W + S_B`` of
    Fisher 1936 / Duda, Hart & Stork 2001, *Pattern classification*, Sec. 3.8.3, applied inside each superclass);
    the ratio is Pearson's correlation ratio η² (1903) of the subclass given the superclass, for Euclidean
    features. It is in [0, 1], invariant to rotation, translation and scaling of ``x``, and does not depend on how
    far the superclasses are apart. 0: every superclass's subclasses share one mean — the *class collapse* of
    supervised contrastive learning (Xue et al. 2023, "Which features are learnt by contrastive learning?",
    ICML); 1: every subclass is a point of its own. A superclass with one subclass adds to ``W`` only.

    Parameters
    ----------
    x : [N, D] features (rows = examples).
    subclasses : [N] integer subclass ids; each id must occur in one superclass only.
    superclasses : [N] integer superclass ids; at least one superclass must hold two subclasses.

    Raises
    ------
    ValueError
        Mismatched lengths, a subclass found in two superclasses, no superclass with two subclasses, NaN/Inf, or
        no scatter at all inside the superclasses (every row equal to its superclass mean).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([[0.0], [2.0], [10.0], [12.0], [5.0], [6.0]])
    >>> sub, sup = [0, 0, 1, 1, 2, 2], [0, 0, 0, 0, 1, 1]
    >>> round(subclass_spread(x, sub, sup), 6)     # B = 4·25 = 100, W = 2 + 2 + 0.5: 100 / 104.5
    0.956938
    """
    z = as_2d_tensor(x, "x", min_rows=2)
    n = z.shape[0]
    sub = check_labels(subclasses, "subclasses", min_classes=2)
    sup = check_labels(superclasses, "superclasses", min_classes=1)
    for name, arr in (("subclasses", sub), ("superclasses", sup)):
        if len(arr) != n:
            raise ValueError(f"mismatched number of samples: x has {n} rows, {name} has {len(arr)}; pass one id "
                             "per row of x")
    pairs = np.unique(np.stack([sub, sup], axis=1), axis=0)
    ids, n_sup = np.unique(pairs[:, 0], return_counts=True)
    if (n_sup > 1).any():
        bad = int(ids[np.argmax(n_sup > 1)])
        raise ValueError(f"subclass {bad} occurs in several superclasses "
                         f"({sorted(set(pairs[pairs[:, 0] == bad, 1].tolist()))}); each subclass must belong to one "
                         "superclass — check the subclasses and superclasses arrays")
    if not (np.unique(pairs[:, 1], return_counts=True)[1] >= 2).any():
        raise ValueError("no superclass holds two subclasses, so there is no spread to measure; check the subclasses "
                         "and superclasses arrays")
    h = z - z.mean(dim=0)
    sub_means, sub_counts, sub_inv = _sums(h, sub)
    sup_means, _, sup_inv = _sums(h, sup)
    # the superclass of each subclass, in the order of sub_means
    sup_of_sub = torch.zeros(len(sub_counts), dtype=torch.long, device=h.device).index_copy_(0, sub_inv, sup_inv)
    between = float((sub_counts * (sub_means - sup_means[sup_of_sub]).square().sum(dim=1)).sum())
    within = float((h - sub_means[sub_inv]).square().sum())
    total = between + within
    if not total > 0.0:
        raise ValueError("x has no scatter inside the superclasses (every row equals its superclass mean), so the "
                         "spread is undefined; check x")
    return between / total

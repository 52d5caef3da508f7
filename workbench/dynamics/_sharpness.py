"""Top Hessian eigenvalue of the loss by power iteration on Hessian-vector products."""
from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from typing import Sequence

import pandas as pd
import torch
from torch import nn

from .._validation import Instance, Interval, check_positive_int, declare
from ..results import tidy
from ._common import (LossFn, check_loss, check_model, eval_mode, loss_rule, math_attention, model_rule, scalar_loss,
                      trainable)

__all__ = ["hessian_top_eigenvalue"]


def _power_iteration(hvp, v: torch.Tensor, shift: float, tol: float, max_iter: int) -> tuple[float, int, bool]:
    """Dominant eigenvalue of ``H − shift·I`` from the unit start ``v``: ``λ = vᵀ(H − sI)v``, ``v ← (H − sI)v / ‖·‖``,
    stopping when ``|λ_k − λ_{k−1}| ≤ tol·|λ_k|``."""
    lam_prev = math.nan
    for it in range(1, max_iter + 1):
        w = hvp(v) - shift * v
        lam = float(v @ w)
        norm = float(w.norm())
        if norm == 0.0:  # v is in the null space of H − sI: that eigenvalue is exactly 0
            return 0.0, it, True
        v = w / norm
        if abs(lam - lam_prev) <= tol * max(abs(lam), 1e-30):
            return lam, it, True
        lam_prev = lam
    return lam_prev, max_iter, False


@declare(model=model_rule(), loss=loss_rule(), params=Instance(Iterable, none=True),
         tol=Interval(float, 0, 1, closed="neither"), max_iter=Interval(int, 1), seed=Interval(int, 0))
def hessian_top_eigenvalue(model: nn.Module, loss: LossFn, *, params: Sequence[torch.Tensor] | None = None,
                           tol: float = 1e-3, max_iter: int = 100, seed: int = 0) -> pd.DataFrame:
    """Largest eigenvalue ``λ_max`` of the Hessian ``H = ∂²L/∂θ²`` of the loss (often called *sharpness*,
    e.g. Cohen et al. 2021, "Gradient descent on neural networks typically occurs at the edge of
    stability"; not Keskar et al. 2017's ε-sharpness, a worst-case loss increase in a box).

    Power iteration on Hessian-vector products, as PyHessian (Yao et al. 2020) does: ``Hv`` is the gradient
    of ``g(θ)·v`` (double backward through ``torch.autograd.grad`` with ``create_graph=True``), never forming
    ``H``. Start: ``v ~ N(0, I)`` from ``torch.Generator().manual_seed(seed)``, normalised. Iterate
    ``λ_k = v_kᵀ H v_k``, ``v_{k+1} = H v_k / ‖H v_k‖`` until ``|λ_k − λ_{k−1}| ≤ tol·|λ_k|`` or ``max_iter``
    iterations. Power iteration finds the eigenvalue of largest *magnitude*; if that one is negative, a
    second iteration on ``H − λ I`` (whose dominant eigenvalue is ``λ_max − λ ≥ 0``) recovers ``λ_max``.
    Vectors and dot products are float64; the HVPs run in the model's dtype (use a float64 model for
    exactness). The model is in eval mode.

    Parameters
    ----------
    model : nn.Module.
    loss : ``loss(model) -> scalar`` on one fixed batch (:func:`~workbench.dynamics.run_loss`).
    params : the parameters the Hessian is taken over (default: every trainable parameter).
    tol, max_iter, seed : convergence tolerance (relative change of λ), iteration cap per power iteration,
        seed of the start vector.

    Returns
    -------
    DataFrame in the results schema (:mod:`workbench.results`) with one model-level row: ``measure``
    ``"hessian_top_eigenvalue"``, ``value``, and the extra columns ``iterations`` (HVPs used) and
    ``converged``. A warning is issued when the cap is hit first.
    """
    check_model(model)
    check_loss(loss)
    if not isinstance(tol, (int, float)) or isinstance(tol, bool) or not 0 < tol < 1:
        raise ValueError(f"tol must be a number in (0, 1) (relative change of the eigenvalue), got {tol!r}")
    check_positive_int(max_iter, "max_iter")
    check_positive_int(seed, "seed", minimum=0)
    params = trainable(model, params)
    with eval_mode(model), math_attention():
        grads = torch.autograd.grad(scalar_loss(loss, model), params, create_graph=True, allow_unused=True)
        pairs = [(p, g) for p, g in zip(params, grads) if g is not None and g.requires_grad]
        if not pairs:  # the loss is at most linear in these parameters: H = 0
            return tidy([{"measure": "hessian_top_eigenvalue", "value": 0.0, "iterations": 0, "converged": True}])
        ps, gs = [p for p, _ in pairs], [g for _, g in pairs]
        sizes = [p.numel() for p in ps]

        def hvp(v: torch.Tensor) -> torch.Tensor:
            chunks = [c.view_as(p).to(p.dtype) for c, p in zip(torch.split(v, sizes), ps)]
            hv = torch.autograd.grad(gs, ps, grad_outputs=chunks, retain_graph=True, allow_unused=True)
            return torch.cat([(torch.zeros(p.numel(), dtype=torch.float64, device=v.device) if h is None
                               else h.detach().reshape(-1).double()) for h, p in zip(hv, ps)])

        device = ps[0].device
        gen = torch.Generator().manual_seed(seed)
        v0 = torch.randn(sum(sizes), generator=gen, dtype=torch.float64).to(device)
        v0 = v0 / v0.norm()
        lam, iters, converged = _power_iteration(hvp, v0, 0.0, tol, max_iter)
        if lam < 0:
            mu, more, conv2 = _power_iteration(hvp, v0, lam, tol, max_iter)
            lam, iters, converged = mu + lam, iters + more, converged and conv2
    if not converged:
        warnings.warn(f"hessian_top_eigenvalue: power iteration did not reach tol={tol} in max_iter={max_iter} "
                      "iterations; the value is the last estimate — raise max_iter", RuntimeWarning, stacklevel=2)
    return tidy([{"measure": "hessian_top_eigenvalue", "value": lam, "iterations": iters, "converged": converged}])

"""``output=`` functions: map a model's output to the scores that are attributed.

A classifier's logits ``[N, K]`` are scores already (``output=None``). Models that return something else —
an embedding ``[N, D]`` or a hidden-state sequence ``[N, T, D]`` such as :class:`workbench.models.HFModel` —
need a function ``output(model_output, **extra_inputs) -> scores`` returning either ``[N]`` (one score per
example; ``target`` must then be None) or ``[N, K]`` (``target`` picks a column). ``extra_inputs`` are the
model's extra forward inputs by name — for token inputs ``attention_mask`` — so a pooling step can skip
padding. Any callable with that signature works (``lambda out, **_: out[:, 0]``); these builders cover the
common cases.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .._validation import Data, Options, check_choice, declare
from .. import activations

__all__ = ["pooled", "cosine_to", "linear_head"]

POOLS = ("mean", "cls", "last")
_EMBEDDING_DIM, _CLASSES = 8, 3  # the declarations' examples: a reference [D] and a linear head D -> K


def _pool_output(out: torch.Tensor, pool: str, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """``[N, D]`` from ``[N, D]`` (unchanged) or a sequence ``[N, T, D]`` pooled over real tokens."""
    if not isinstance(out, torch.Tensor) or out.dim() not in (2, 3):
        desc = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"expected a model output [N, D] or [N, T, D] to pool, got {desc}")
    return activations.pool(out, pool, attention_mask=attention_mask) if out.dim() == 3 else out


@declare(pool=Options(*POOLS))
def pooled(pool: str = "mean") -> Callable[..., torch.Tensor]:
    """``output=`` returning the pooled embedding ``[N, D]`` — each dimension is a "class" for ``target``.

    ``pool``: ``"mean"`` over real tokens (attention mask), ``"cls"`` (token 0) or ``"last"`` (last real token),
    as in :mod:`workbench.activations`; ``[N, D]`` outputs pass through.
    """
    check_choice(pool, POOLS, "pool")

    def output(out: torch.Tensor, attention_mask: torch.Tensor | None = None, **_: torch.Tensor) -> torch.Tensor:
        return _pool_output(out, pool, attention_mask)

    return output


@declare(reference=Data("any", example=lambda: torch.ones(_EMBEDDING_DIM),
                        bad=["reference", torch.ones(2, _EMBEDDING_DIM)]), pool=Options(*POOLS))
def cosine_to(reference: torch.Tensor, pool: str = "mean") -> Callable[..., torch.Tensor]:
    """``output=`` scoring each example by the cosine similarity of its pooled embedding to ``reference``.

    ``score_i = <e_i, r> / (||e_i|| ||r||)`` with ``e_i`` the pooled embedding (see :func:`pooled`) and
    ``r`` the reference ``[D]``. One score per example, so ``target`` must be None.
    """
    check_choice(pool, POOLS, "pool")
    if not isinstance(reference, torch.Tensor) or reference.dim() != 1:
        raise TypeError("reference must be a tensor [D] (e.g. the pooled embedding of another text); one shared "
                        "reference keeps the score well defined inside batched and step-expanded calls")
    ref = reference.detach()

    def output(out: torch.Tensor, attention_mask: torch.Tensor | None = None, **_: torch.Tensor) -> torch.Tensor:
        e = _pool_output(out, pool, attention_mask)
        if e.shape[-1] != len(ref):
            raise ValueError(f"reference has {len(ref)} dimensions but the pooled embedding has {e.shape[-1]}")
        return nn.functional.cosine_similarity(e, ref.to(e.device, e.dtype)[None], dim=-1)

    return output


@declare(head=Data("any", example=lambda: nn.Linear(_EMBEDDING_DIM, _CLASSES),
                   bad=["head", torch.ones(_CLASSES)]), bias=Data("any", none=True, bad=[torch.zeros(_CLASSES)]),
         pool=Options(*POOLS))
def linear_head(head: nn.Module | torch.Tensor, bias: torch.Tensor | None = None,
                pool: str = "mean") -> Callable[..., torch.Tensor]:
    """``output=`` applying a linear classifier to the pooled embedding: ``scores = e W^T + b``, ``[N, K]``.

    ``head``: an ``nn.Module`` (e.g. a trained ``nn.Linear`` probe) or a weight matrix ``W`` ``[K, D]``
    (with optional ``bias`` ``[K]``).
    """
    check_choice(pool, POOLS, "pool")
    if isinstance(head, torch.Tensor):
        if head.dim() != 2:
            raise ValueError(f"head as a weight matrix must be [K, D], got shape {tuple(head.shape)}")
        weight = head.detach()
        b = None if bias is None else torch.as_tensor(bias).detach()

        def apply(e):
            return nn.functional.linear(e, weight.to(e.device, e.dtype), None if b is None else b.to(e.device, e.dtype))
    elif isinstance(head, nn.Module):
        if bias is not None:
            raise ValueError("bias is only used with a weight-matrix head; an nn.Module head carries its own")
        apply = head
    else:
        raise TypeError(f"head must be an nn.Module or a weight tensor [K, D], got {type(head).__name__}")

    def output(out: torch.Tensor, attention_mask: torch.Tensor | None = None, **_: torch.Tensor) -> torch.Tensor:
        return apply(_pool_output(out, pool, attention_mask))

    return output

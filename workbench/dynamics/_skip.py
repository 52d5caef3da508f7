"""Loss increase when one block is skipped (its residual update dropped)."""
from __future__ import annotations

import contextlib
from collections.abc import Collection
from typing import Iterator, Sequence

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from .._validation import Instance, declare
from ._common import (LossFn, check_loss, check_model, eval_mode, example_language_model, example_lm_loss, layer_frame,
                      layer_order, loss_rule, model_rule, scalar_loss)

__all__ = ["residual_blocks", "skip_block", "layer_skip_loss"]


@declare(model=model_rule(example_language_model))
def residual_blocks(model: nn.Module) -> dict[str, str]:
    """Ordered ``name -> module path`` of the skippable blocks: Transformer/ViT ``Block``s and CNN ``ResBlock``s.

    A probe point that is such a block keeps its name (``layer3``, ``block2``, ``stage1``); a CNN stage of
    several blocks gives ``stage2.0``, ``stage2.1``, ...
    """
    from ..models import get_module, probe_points
    from ..models.builders import Block, ResBlock

    check_model(model)
    out: dict[str, str] = {}
    for name, path in probe_points(model).items():
        module = get_module(model, path)
        if isinstance(module, (Block, ResBlock)):
            out[name] = path
        elif isinstance(module, nn.Sequential) and len(module) and all(isinstance(m, ResBlock) for m in module):
            if len(module) == 1:
                out[name] = f"{path}.0" if path else "0"
            else:
                out.update({f"{name}.{i}": f"{path}.{i}" for i in range(len(module))})
    return out


def _skip_output(module: nn.Module, x: torch.Tensor, out: torch.Tensor, path: str) -> torch.Tensor:
    from ..models.builders import ResBlock

    if isinstance(module, ResBlock) and module.residual:
        # relu(branch(x) + shortcut(x)) without the branch; equals x when the shortcut is the identity
        # (x >= 0 there: every block's input comes out of a ReLU)
        return F.relu(module.shortcut(x))
    if not isinstance(out, torch.Tensor) or out.shape != x.shape:
        raise ValueError(f"block {path!r} maps {tuple(x.shape)} to {tuple(getattr(out, 'shape', ()))}; only a "
                         "block whose output has its input's shape (or a residual ResBlock) can be skipped")
    return x


@declare(model=model_rule(example_language_model), path=Instance(str, example="layers.0"))
def skip_block(model: nn.Module, path: str) -> contextlib.AbstractContextManager[nn.Module]:
    """Inside the block, the module at ``path`` returns its input unchanged (the hook is removed after).

    - Transformer / ViT ``Block`` (and any module whose output has its input's shape): output := input.
      For Pre-LN that is exactly dropping both residual updates ``x + f(LN(x))``; for a Post-LN block
      ``LN(x + f(x))`` it removes the layer altogether (as Gromov et al. 2024 and Men et al. 2024 remove
      layers).
    - CNN ``ResBlock`` with a skip connection: output := ``relu(skip(x))``, the block without its residual
      branch; with an identity skip this is the input itself, with a projection skip (stride / width
      change) it is the projected input.

    ``model`` and ``path`` are checked when this is called, not when the block is entered.
    """
    from ..models import get_module

    return _skipping(model, get_module(check_model(model), path), path)


@contextlib.contextmanager
def _skipping(model: nn.Module, module: nn.Module, path: str) -> Iterator[nn.Module]:
    def hook(mod, inputs, out):
        return _skip_output(mod, inputs[0], out, path)

    handle = module.register_forward_hook(hook)
    try:
        yield model
    finally:
        handle.remove()


@declare(model=model_rule(example_language_model), loss=loss_rule(example_lm_loss),
         blocks=Instance(Collection, none=True))
def layer_skip_loss(model: nn.Module, loss: LossFn, *, blocks: Sequence[str] | None = None) -> pd.DataFrame:
    """Loss with each block skipped in turn, and its increase over the full model's loss.

    ``increase_l = L(model with block l skipped) − L(model)`` on the same batch (:func:`skip_block` says what
    skipping means for each block type); eval mode, no gradients. Near-zero increases mark near-identity
    blocks (Gromov et al. 2024; Men et al. 2024, "ShortGPT"); Pre-LN deep blocks are expected to be such
    (Li et al. 2024, "Mix-LN"; Sun et al. 2025, "The Curse of Depth").

    Parameters
    ----------
    model : nn.Module.
    loss : ``loss(model) -> scalar`` on one fixed batch (:func:`~workbench.dynamics.run_loss`).
    blocks : names from :func:`residual_blocks` or module paths (default: every residual block).

    Returns
    -------
    DataFrame in the results schema (:mod:`workbench.results`) with measures ``skip_loss`` (the loss with the
    block skipped) and ``skip_loss_increase`` per block, plus one model-level ``full_loss`` row (``layer`` and
    ``layer_index`` NaN).
    """
    from ..models import select_layers

    check_model(model)
    check_loss(loss)
    known = residual_blocks(model)
    if blocks is None:
        if not known:
            raise ValueError(f"{type(model).__name__} has no Transformer Block or ResBlock; pass blocks=[module "
                             "paths] of blocks whose output has their input's shape")
        chosen = known
    else:
        if isinstance(blocks, str) or not all(isinstance(b, str) for b in blocks) or not len(blocks):
            raise TypeError(f"blocks must be a non-empty list of block names or module paths, got {blocks!r}; "
                            f"blocks of this model: {list(known)}")
        chosen = {b: known[b] if b in known else select_layers(model, [b])[b] for b in blocks}
    order = layer_order(model)
    parents = {name: order.get(name.split(".")[0], i) for i, name in enumerate(chosen)}
    with eval_mode(model), torch.no_grad():
        full = float(scalar_loss(loss, model))
        rows = [{"measure": "full_loss", "value": full}]
        for name, path in chosen.items():
            with skip_block(model, path):
                skipped = float(scalar_loss(loss, model))
            rows += [{"layer": name, "layer_index": order.get(name, parents[name]), "measure": m, "value": v}
                     for m, v in (("skip_loss", skipped), ("skip_loss_increase", skipped - full))]
    return layer_frame(rows)

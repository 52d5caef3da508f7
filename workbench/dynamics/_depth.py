"""Representations across depth: output variance per layer and angular distance between consecutive layers."""
from __future__ import annotations

import math
from typing import Any

import pandas as pd
import torch
from torch import nn

from .._validation import Data, Instance, Interval, Options, as_2d_tensor, check_choice, check_same_length, declare
from ._common import (LAYERS_RULE, check_model, example_inputs, example_language_model, example_tokens, layer_frame,
                      layer_order, model_rule)

__all__ = ["layer_outputs", "output_variance", "angular_distance", "layer_angular_distance"]

POSITIONS = ("all", "last")

# data: a Split, a Dataset with split=, or an input array (workbench.data.as_split refuses anything else, naming it)
_DATA = Data("any", example=example_inputs, bad=["data", None])
_OPTIONS = {"layers": LAYERS_RULE, "split": Instance(str, none=True), "batch_size": Interval(int, 1)}


@declare(model=model_rule(), data=_DATA, position=Options(*POSITIONS), **_OPTIONS)
def layer_outputs(model: nn.Module, data: Any, *, layers: Any = None, split: str | None = None,
                  position: str = "all", batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Each layer's output as rows ``[M, D]``: one row per real token for token data, one per example otherwise.

    Captured in one forward pass per batch by :func:`workbench.activations.extract` (eval mode,
    ``pool="flatten"``, float32). For token data (integer inputs ``[N, T]``) a ``[N, T, D]`` output is
    split into its ``T`` positions and padded positions (``attention_mask == 0``) are dropped;
    ``position="last"`` keeps only each sequence's last real token (Gromov et al. 2024 measure there).
    For any other data an example's whole output (flattened) is one row.

    Parameters
    ----------
    data : a :class:`~workbench.data.Split`, a Dataset with ``split=``, or an input array/tensor.
    layers : probe-point selection (None = every probe point), in forward order.
    """
    import numpy as np

    from ..activations import extract
    from ..data import as_split

    check_model(model)
    check_choice(position, POSITIONS, "position")
    the_split = as_split(data, split)
    acts = extract(model, the_split, layers=layers, pool="flatten", batch_size=batch_size)
    x = the_split.inputs
    tokens = x.dtype != object and x.ndim == 2 and np.issubdtype(x.dtype, np.integer)
    if not tokens:
        if position != "all":
            raise ValueError("position='last' needs token data (integer inputs [N, T]); use position='all'")
        return {name: acts[name] for name in acts.layers}
    n, t = x.shape
    mask = (torch.ones(n, t, dtype=torch.bool) if the_split.attention_mask is None
            else torch.as_tensor(np.asarray(the_split.attention_mask)).bool())
    if position == "last":
        last = (mask.cumsum(1) * mask).argmax(1)  # index of each sequence's last real token
        mask = torch.zeros_like(mask)
        mask[torch.arange(n), last] = True
    out = {}
    for name in acts.layers:
        flat = acts[name]
        if flat.shape[1] % t:
            raise ValueError(f"layer {name!r} outputs {flat.shape[1]} values per example, not a multiple of the "
                             f"sequence length {t}; choose sequence layers (e.g. layers=r'^(embed|layer\\d+)$')")
        out[name] = flat.reshape(n, t, -1)[mask]
    return out


@declare(model=model_rule(), data=_DATA, **_OPTIONS)
def output_variance(model: nn.Module, data: Any, *, layers: Any = None, split: str | None = None,
                    batch_size: int = 256) -> pd.DataFrame:
    """Variance of each layer's output vs depth.

    ``Var = 1/(K − 1) Σ_k (h_k − mean(h))²`` over all ``K`` entries (rows × features) of the layer's output
    rows (:func:`layer_outputs`: real tokens only for token data), in float64. This is the trainer's
    ``act_var`` recorder (``torch.var`` over every element of the batch output) except that padded token
    positions are left out. Sun et al. (2025, "The Curse of Depth in Large Language Models") track this
    quantity: with Pre-LN it grows with depth, which makes deep layers near-identity; LayerNorm Scaling
    keeps it in check.

    Returns
    -------
    DataFrame in the results schema (:mod:`workbench.results`): one row per layer, ``measure``
    ``"output_variance"``, ``layer_index`` the probe point's position in the model.
    """
    outs = layer_outputs(model, data, layers=layers, split=split, batch_size=batch_size)
    order = layer_order(model)
    rows = []
    for name, h in outs.items():
        if h.numel() < 2:
            raise ValueError(f"layer {name!r} has {h.numel()} output value(s); a variance needs at least 2")
        rows.append({"layer": name, "layer_index": order.get(name, len(rows)), "measure": "output_variance",
                     "value": float(h.double().var())})
    return layer_frame(rows)


@declare(a=Data("x", scale="invariant"), b=Data("x", scale="invariant"))
def angular_distance(a: Any, b: Any) -> float:
    """Mean angular distance between matching rows of ``a`` and ``b`` (``[M, D]`` each).

    ``d(a_i, b_i) = (1/π) arccos( a_i·b_i / (‖a_i‖ ‖b_i‖) )`` in ``[0, 1]`` — 0 for parallel rows, 0.5 for
    orthogonal, 1 for opposite — averaged over rows (Gromov et al. 2024, "The Unreasonable Ineffectiveness
    of the Deeper Layers"). The angle is computed as ``2 atan2(‖â − b̂‖, ‖â + b̂‖)`` on the unit
    vectors (equal to the arccos, but accurate near 0 and π where arccos loses half the digits), in float64.

    Raises
    ------
    ValueError
        Shapes differ, or a row has zero norm (its direction is undefined).
    """
    x, y = as_2d_tensor(a, "a"), as_2d_tensor(b, "b")
    check_same_length(a=x, b=y)
    if x.shape != y.shape:
        raise ValueError(f"a {tuple(x.shape)} and b {tuple(y.shape)} must have the same shape [M, D]")
    nx, ny = x.norm(dim=1, keepdim=True), y.norm(dim=1, keepdim=True)
    zero = ((nx == 0) | (ny == 0)).flatten()
    if bool(zero.any()):
        raise ValueError(f"{int(zero.sum())} row(s) of a or b have zero norm (first: {int(zero.nonzero()[0])}); "
                         "the angle to a zero vector is undefined — drop those rows")
    u, v = x / nx, y / ny
    theta = 2 * torch.atan2((u - v).norm(dim=1), (u + v).norm(dim=1))
    return float(theta.mean() / math.pi)


@declare(model=model_rule(example_language_model), data=Data("any", example=example_tokens, bad=["data", None]),
         position=Options(*POSITIONS), **_OPTIONS)
def layer_angular_distance(model: nn.Module, data: Any, *, layers: Any = None, split: str | None = None,
                           position: str = "all", batch_size: int = 256) -> pd.DataFrame:
    """:func:`angular_distance` between each pair of consecutive selected layers' output rows.

    For a Transformer with ``layers=r"^(embed|layer\\d+)$"`` the pairs are each block's input and output
    (the residual stream before and after the block); a small distance marks a near-identity block (Gromov
    et al. 2024 prune those). ``position``: ``"all"`` real tokens or the ``"last"`` real token per sequence
    (:func:`layer_outputs`).

    Returns
    -------
    DataFrame in the results schema, ``measure`` ``"angular_distance"``, one row per pair: ``layer`` is the
    later layer, the extra columns ``layer_b`` / ``layer_index_b`` the earlier one (its input).
    """
    outs = layer_outputs(model, data, layers=layers, split=split, position=position, batch_size=batch_size)
    names = list(outs)
    if len(names) < 2:
        raise ValueError(f"layers selects {names}; the angular distance needs at least two consecutive layers")
    order = layer_order(model)
    rows = []
    for prev, name in zip(names[:-1], names[1:]):
        if outs[prev].shape != outs[name].shape:
            raise ValueError(f"layers {prev!r} {tuple(outs[prev].shape)} and {name!r} {tuple(outs[name].shape)} "
                             "have different output shapes; select layers of one width (e.g. the blocks)")
        rows.append({"layer": name, "layer_index": order.get(name, len(rows) + 1), "measure": "angular_distance",
                     "value": angular_distance(outs[prev], outs[name]), "layer_b": prev,
                     "layer_index_b": order.get(prev, len(rows))})
    return layer_frame(rows)

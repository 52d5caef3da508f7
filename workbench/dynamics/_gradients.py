"""Per-layer gradient norms: for one model and batch, and over a run's training steps."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from .._validation import Data, Instance, declare
from ..results import tidy
from ._common import (LAYERS_RULE, LossFn, check_loss, check_model, eval_mode, example_run, layer_frame, layer_order,
                      loss_rule, model_rule, scalar_loss)

__all__ = ["layer_grad_norms", "grad_norm_history"]


@declare(model=model_rule(), loss=loss_rule(), layers=LAYERS_RULE)
def layer_grad_norms(model: nn.Module, loss: LossFn, *, layers: Any = None) -> pd.DataFrame:
    """Norm of the loss gradient with respect to each layer's parameters, ``‖∂L/∂θ_layer‖₂``.

    ``θ_layer`` = every trainable parameter inside the probe point's module (the grouping of the trainer's
    ``grad_norm`` recorder, :mod:`workbench.train.recorders`, so this is that recorder's number for any
    model and batch). Squares are summed in float64. The model runs in eval mode (no dropout); the
    gradients come from ``torch.autograd.grad``, so ``.grad`` of the parameters is left untouched.
    Parameters the loss does not reach count as zero. Probe points without parameters are left out.

    Parameters
    ----------
    model : nn.Module with probe points (e.g. ``run.load_model(step)``).
    loss : ``loss(model) -> scalar`` on one fixed batch (:func:`~workbench.dynamics.run_loss`).
    layers : probe-point selection (None = all; see :func:`workbench.models.select_layers`).

    Returns
    -------
    DataFrame in the results schema (:mod:`workbench.results`): one row per layer, ``measure`` ``"grad_norm"``,
    ``layer_index`` the probe point's position in the model.
    """
    from ..models import select_layers
    from ..models import param_groups

    check_model(model)
    check_loss(loss)
    chosen = select_layers(model, layers)
    groups = {name: params for name, params in param_groups(model).items() if name in chosen and params}
    if not groups:
        raise ValueError(f"none of the layers {list(chosen)} has trainable parameters; choose other layers "
                         f"(probe points: {list(layer_order(model))})")
    flat = list({id(p): p for params in groups.values() for p in params}.values())
    with eval_mode(model):
        grads = torch.autograd.grad(scalar_loss(loss, model), flat, allow_unused=True)
    sq = {id(p): (torch.zeros((), dtype=torch.float64) if g is None else g.detach().double().square().sum().cpu())
          for p, g in zip(flat, grads)}
    order = layer_order(model)
    rows = [{"layer": name, "layer_index": order[name], "measure": "grad_norm",
             "value": float(torch.stack([sq[id(p)] for p in params]).sum().sqrt())}
            for name, params in groups.items()]
    return layer_frame(rows)


@declare(run=Data("any", example=example_run, bad=["run", None, pd.DataFrame({"step": [1]})]),
         layers=Instance(Iterable, none=True))
def grad_norm_history(run: Any, *, layers: Any = None) -> pd.DataFrame:
    """The per-layer gradient norms the trainer recorded over steps (``recorders=("grad_norm", ...)``).

    Each row is the recorder's ``‖∂L/∂θ_layer‖₂`` on that step's training batch (after backward, before the
    optimizer step); see :mod:`workbench.train.recorders`. ``run`` is a :class:`~workbench.runs.Run` or its
    ``history()`` DataFrame.

    Returns
    -------
    DataFrame in the results schema (:mod:`workbench.results`), ``measure`` ``"grad_norm"``, ``split``
    ``"train_batch"``, sorted by step and layer — ``layer_index`` is the probe point's position in the model
    as recorded (for a history without it: the forward order in which the recorder wrote the layers).
    ``layers``: a list of layer names to keep. A history with the column ``metric`` (older versions) is read
    as if it were ``measure``.
    """
    hist = run if isinstance(run, pd.DataFrame) else getattr(run, "history", None)
    if callable(hist):
        hist = hist()
    if not isinstance(hist, pd.DataFrame):
        raise TypeError(f"run must be a workbench Run or its history() DataFrame, got {type(run).__name__}")
    if "measure" not in hist.columns:
        hist = hist.rename(columns={"metric": "measure"})
    missing = {"step", "measure", "layer", "value"} - set(hist.columns)
    if missing:
        raise ValueError(f"run history lacks the columns {sorted(missing)}; pass run.history()")
    rows = hist[hist["measure"] == "grad_norm"]
    if rows.empty:
        raise ValueError("the run has no recorded gradient norms; train it with recorders=('grad_norm', ...) "
                         "or compute them per checkpoint with over_checkpoints(run, layer_grad_norms ...)")
    order = {name: i for i, name in enumerate(pd.unique(rows["layer"]))}
    if "layer_index" in rows.columns and rows["layer_index"].notna().all():
        order = dict(zip(rows["layer"], rows["layer_index"].astype(int)))
    if layers is not None:
        if isinstance(layers, str) or not all(isinstance(name, str) for name in layers):
            raise TypeError(f"layers must be a list of layer names, got {layers!r}")
        unknown = sorted(set(layers) - set(order))
        if unknown:
            raise ValueError(f"layers {unknown} have no recorded gradient norms; recorded: {list(order)}")
        rows = rows[rows["layer"].isin(list(layers))]
    out = tidy(pd.DataFrame({"run": rows.get("run", np.nan), "step": rows["step"].astype(int),
                             "layer": rows["layer"], "layer_index": rows["layer"].map(order).astype(int),
                             "measure": "grad_norm", "split": rows.get("split", "train_batch"),
                             "value": rows["value"].astype(float)}))
    return out.sort_values(["step", "layer_index"], kind="stable").reset_index(drop=True)

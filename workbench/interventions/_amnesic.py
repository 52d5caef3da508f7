"""Amnesic probing: remove a property's directions from a layer inside the forward pass and measure what the task
loses, against removing as many random directions."""
from __future__ import annotations

import contextlib
import warnings
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from .._validation import Data, Instance, Interval, Options, check_labels, declare
from ..activations import extract
from ..probing import bootstrap_ci
from ..results import tidy
from ._common import (batches, check_model, eval_mode, forward, hooked, layer_path, layout_of, main_tensor,
                      per_example, replace_main, resolve_device, the_split)
from ._common import task_labels as labels_of_task
from ._leace import leace_projection
from ._nullspace import NullspaceProjection, nullspace_projection, random_projection

__all__ = ["amnesic_probe", "projection_hook"]

#: a projection matrix is accepted when ``max |P² − P|`` is below this (times ``max(1, max |P|)``)
_PROJECTION_TOL = 1e-6


def _channel_dim(ndim: int, layout: str) -> int:
    """The feature dimension of a layer output: last for ``[B, D]`` and token sequences ``[B, T, D]``, 1 (channels)
    for conv maps ``[B, C, *spatial]``."""
    if ndim <= 2 or (ndim == 3 and layout == "sequence"):
        return ndim - 1
    return 1


@declare(projection=Data("any", example=lambda: np.eye(3), bad=[np.ones((3, 3)), np.eye(2)[:1], "projection"]),
         mean=Data("any", none=True, bad=[np.zeros(5), "mean"]), layout=Options("sequence", "conv"),
         name=Instance(str))
def projection_hook(projection: Any, mean: Any = None, *, layout: str = "sequence", name: str = "layer"):
    """A forward hook that replaces a layer's output ``h`` by ``μ + (h − μ) P`` along its feature dimension (the last
    one of ``[B, D]`` and ``[B, T, D]``; the channels of a conv map ``[B, C, *spatial]``, at every position).

    ``projection`` is ``P`` [D, D], ``mean`` is ``μ`` [D] (default 0). Register it with
    ``module.register_forward_hook(hook)`` and remove the handle afterwards.

    >>> import torch
    >>> layer = torch.nn.Identity()
    >>> h = layer.register_forward_hook(projection_hook(torch.diag(torch.tensor([1.0, 0.0]))))
    >>> layer(torch.tensor([[3.0, 4.0]])).tolist()
    [[3.0, 0.0]]
    >>> h.remove()
    """
    p_np, mu_np = _as_projection(projection)
    if mean is not None:
        mu_np = _as_mean(mean, p_np.shape[0])
    p, mu = torch.as_tensor(p_np), torch.as_tensor(mu_np)

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> Any:
        out = main_tensor(output, f"layer {name!r}")
        dim = _channel_dim(out.ndim, layout)
        if out.shape[dim] != p.shape[0]:
            raise ValueError(f"projection is {p.shape[0]}-dimensional but layer {name!r} has {out.shape[dim]} "
                             f"features (output shape {tuple(out.shape)}); compute the projection on this layer")
        h = out.movedim(dim, -1).double()
        m = mu.to(h.device)
        new = (m + (h - m) @ p.to(h.device)).to(out.dtype).movedim(-1, dim)
        return replace_main(output, new)

    return hook


def _as_projection(projection: Any) -> tuple[np.ndarray, np.ndarray]:
    """(P, μ) of a :class:`NullspaceProjection` or a [D, D] projection matrix (μ = 0)."""
    if isinstance(projection, NullspaceProjection):
        return projection.projection, projection.mean
    if isinstance(projection, torch.Tensor):
        projection = projection.detach().cpu().numpy()
    if not isinstance(projection, np.ndarray):
        raise TypeError("projection must be a NullspaceProjection (from nullspace_projection / leace_projection) or a "
                        f"[D, D] array, got {type(projection).__name__}")
    p = np.asarray(projection, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] != p.shape[1] or p.shape[0] == 0:
        raise ValueError(f"projection must be a square [D, D] matrix, got shape {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError("projection contains NaN/Inf")
    if np.abs(p @ p - p).max() > _PROJECTION_TOL * max(1.0, float(np.abs(p).max())):
        raise ValueError("projection must be a projection (idempotent, P @ P = P); build one with "
                         "nullspace_projection, leace_projection or random_projection")
    return p, np.zeros(p.shape[0])


def _as_mean(mean: Any, d: int) -> np.ndarray:
    if isinstance(mean, torch.Tensor):
        mean = mean.detach().cpu().numpy()
    if not isinstance(mean, (np.ndarray, list, tuple)):
        raise TypeError(f"mean must be a [D] array (the centre of the projection), got {type(mean).__name__}")
    m = np.asarray(mean, dtype=np.float64)
    if m.shape != (d,) or not np.all(np.isfinite(m)):
        raise ValueError(f"mean must be a finite [D] = [{d}] array (the projection's size), got shape {m.shape}")
    return m


def _example_model() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))


def _example_data() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(24, 4)).astype(np.float32)


@declare(model=Data("any", example=_example_model, bad=["model", None]),
         data=Data("any", example=_example_data, bad=["data"]), layer=Instance(str, example="0"),
         labels=Data("labels", none=True, example=lambda: np.arange(24) % 2),
         task_labels=Data("any", example=lambda: np.arange(24) % 2), control=Options("random", none=True),
         n_controls=Interval(int, 1), n_iterations=Interval(int, 1), split=Instance(str, none=True),
         batch_size=Interval(int, 1), n_boot=Interval(int, 0), ci_level=Interval(float, 0, 1, closed="neither"),
         seed=Interval(int, 0), device=Instance(str, torch.device, int, none=True),
         projection=Data("any", none=True, bad=[np.ones((4, 4)), "projection"]), eraser=Options("inlp", "leace"))
def amnesic_probe(model: nn.Module, data: Any, layer: str, labels: Any = None, *, task_labels: Any = None,
                  projection: Any = None, eraser: str = "inlp", control: str | None = "random", n_controls: int = 5,
                  n_iterations: int = 20,
                  split: str | None = None, batch_size: int = 256, n_boot: int = 1000, ci_level: float = 0.95,
                  seed: int = 0, device: Any = None) -> pd.DataFrame:
    """Amnesic probing (Elazar, Ravfogel, Jacovi & Goldberg 2021, "Amnesic probing: behavioral explanation with
    amnesic counterfactuals", TACL): is the property ``labels`` *used* by the model's task, or only decodable?

    The property's linear directions are removed from ``layer``'s output inside the forward pass (a forward hook
    replaces ``h`` by ``μ + (h − μ) P``; on a conv map along the channels at every position, on a token sequence
    along the features of every token), and the task's accuracy and cross-entropy loss on ``task_labels`` are
    measured through the model's own head. ``P`` is INLP's projection (:func:`nullspace_projection` of the layer's
    mean-pooled activations :func:`~workbench.activations.extract` against ``labels``; ``eraser="leace"``:
    :func:`leace_projection`) unless ``projection`` is given.

    Control (Elazar et al., Sec. 3): removing ``k = D − rank(P)`` *random* directions (:func:`random_projection`,
    seeds ``seed + 1 … seed + n_controls``) — a drop the random removal also causes is no evidence of use.

    Parameters
    ----------
    model : a classifier whose output is logits ``[N, K]`` (or has ``.logits``).
    data : a :class:`~workbench.data.Split`, a Dataset with ``split=``, or an input array.
    layer : probe-point name or module path of the layer to intervene on.
    labels : [N] class ids of the property to remove (needed when ``projection`` is None).
    task_labels : [N] class ids of the model's task; default the split's labels.
    projection : a :class:`NullspaceProjection` (its mean μ is used) or a [D, D] projection, ``P² = P`` (μ = 0);
        default: ``eraser`` fitted on this data (for an unbiased estimate fit it on other examples, pass it here).
    eraser : ``"inlp"`` (:func:`nullspace_projection`) or ``"leace"`` (:func:`leace_projection`), when
        ``projection`` is None.
    control : ``"random"`` (rows ``method="control"``) or None.
    n_controls : random projections averaged per example in the control.
    n_iterations : INLP's ``n_iterations`` when the projection is computed here.
    n_boot, ci_level : percentile-bootstrap interval over the examples (``n_boot=0``: NaN).
    seed : seed of INLP's held-out split, of the random directions and of the bootstrap.
    device : where the model runs (default: where its parameters are).

    Returns
    -------
    Tidy table (:mod:`workbench.results`): measures ``accuracy`` and ``loss`` for ``method`` ``none`` (the model as
    it is), ``amnesic`` (P applied) and ``control`` (random directions, the per-example mean over the
    ``n_controls`` projections), with ``n_removed`` (k), ``layer`` and ``target="task"``. The model's weights,
    hooks and train/eval mode are as they were, also when the call raises.

    Examples
    --------
    >>> import numpy as np, torch
    >>> u = np.eye(4)[0]
    >>> model = torch.nn.Sequential(torch.nn.Identity(), torch.nn.Linear(4, 2))
    >>> _ = model[1].weight.data.copy_(torch.tensor([[-1.0, 0, 0, 0], [1.0, 0, 0, 0]]))
    >>> y = np.arange(200) % 2
    >>> x = (np.outer(2 * y - 1, u) + np.random.default_rng(0).normal(size=(200, 4)) * 0.3).astype(np.float32)
    >>> t = amnesic_probe(model, x, "0", y, task_labels=y, n_boot=0)
    >>> t[t.measure == "accuracy"].set_index("method")["value"].round(1).to_dict()
    {'none': 1.0, 'amnesic': 0.5, 'control': 1.0}
    """
    check_model(model, "model")
    path = layer_path(model, layer)
    s = the_split(data, split)
    n = len(s)
    y = labels_of_task(s, task_labels, n, "task_labels")
    dev = resolve_device(model, device)
    if projection is None:
        if labels is None:
            raise ValueError(f"labels is needed: pass the property's class ids (labels=...) to fit its {eraser} "
                             "projection, or a precomputed projection=...")
        prop = check_labels(labels, "labels")
        if len(prop) != n:
            raise ValueError(f"labels has {len(prop)} entries but data has {n} examples; pass one per example")
        acts = extract(model, s, layers=[layer], pool="mean", batch_size=batch_size, device=dev)
        feats = acts[layer].numpy()
        projection = nullspace_projection(feats, prop, n_iterations=n_iterations, seed=seed, n_boot=0) \
            if eraser == "inlp" else leace_projection(feats, prop, seed=seed, n_boot=0)
    p, mu = _as_projection(projection)
    d = p.shape[0]
    k = round(float(d - np.trace(p)))
    if k == 0:
        warnings.warn("the projection removes no direction (P = I): the amnesic model is the model itself",
                      RuntimeWarning, stacklevel=2)
    layout = layout_of(s)
    conditions: list[tuple[str, np.ndarray | None]] = [("none", None), ("amnesic", p)]
    if control == "random":
        conditions += [("control", random_projection(d, k, seed=seed + 1 + j)) for j in range(n_controls)]

    labels_t = torch.as_tensor(y)
    scores: dict[str, list[np.ndarray]] = {}
    with eval_mode(model), torch.no_grad():
        for method, proj in conditions:
            acc, loss = [], []
            hook = projection_hook(proj, mu, layout=layout, name=layer) if proj is not None else None
            ctx = hooked(model, path, hook) if hook is not None else contextlib.nullcontext()
            with ctx:
                for idx in batches(n, batch_size):
                    out = forward(model, s, idx, dev, "model")
                    lab = labels_t[idx].to(dev)
                    acc.append(per_example("accuracy", out, lab, "model"))
                    loss.append(per_example("loss", out, lab, "model"))
            scores.setdefault(method, []).append(np.stack([np.concatenate(acc), np.concatenate(loss)]))

    rows = []
    for method, runs in scores.items():
        both = np.mean(runs, axis=0)  # [2, N]: per-example accuracy and loss (controls: mean over projections)
        for measure, values in zip(("accuracy", "loss"), both):
            lo, hi = bootstrap_ci(values, n_boot=n_boot, alpha=1 - ci_level, seed=seed) if n_boot else (np.nan,) * 2
            rows.append({"layer": layer, "measure": measure, "value": float(values.mean()), "ci_low": lo,
                         "ci_high": hi, "method": method,
                         "n_removed": 0 if method == "none" else k})
    return tidy(rows, target="task")

"""Faithfulness of attributions: infidelity, max-sensitivity, deletion/insertion curves, completeness.

Every measure takes the call shape of :func:`~workbench.saliency._attribute` — ``(model, inputs, method=...,
target=..., baselines=..., layer=..., batch_size=..., output=..., **method_kwargs)`` — and attributes first;
or ``inputs`` may be an :class:`~workbench.saliency.Attribution`, whose inputs, method, targets, baselines and
``output`` are then reused. Results are per-example tables in the results schema (:mod:`workbench.results`:
``run``, ``step``, ``layer`` of the attribution, ``measure``, ``value``) with the extra columns ``example``,
``target``, ``method``, ``model``.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
import torch
from captum.metrics import infidelity as _captum_infidelity
from captum.metrics import sensitivity_max as _captum_sensitivity_max
from torch import nn

from .._validation import Data, Flag, Instance, Interval, Options, check_choice, check_positive_int, declare
from ..results import check_tidy, tidy
from . import _forward as fw
from ._attribute import attribute
from ._examples import ATTRIBUTE_RULES, example_curves
from ._result import CHANNEL_REDUCTIONS, Attribution, feature_map

__all__ = ["infidelity", "sensitivity_max", "perturbation_curves", "curve_auc", "completeness_gap"]

CURVES = ("deletion", "insertion")


def _attribution(model, inputs, method, target, baselines, layer, batch_size, output, method_kwargs) -> Attribution:
    if isinstance(inputs, Attribution):
        return inputs
    return attribute(model, inputs, method=method, target=target, baselines=baselines, layer=layer,
                     batch_size=batch_size, output=output, **method_kwargs)


def _batch(model: nn.Module, a: Attribution) -> fw.Batch:
    device = fw.model_device(model)
    return fw.Batch(a.inputs.to(device), {k: v.to(device) for k, v in a.extra.items()}, a.kind)


def _float_inputs(a: Attribution, measure: str) -> None:
    if a.kind == "tokens":
        raise ValueError(f"{measure} perturbs the inputs with noise, which is undefined for token ids; "
                         "use perturbation_curves or completeness_gap for token attributions")


def _baseline_tensor(a: Attribution, x: torch.Tensor) -> torch.Tensor:
    """The attribution's reference as a tensor broadcastable to ``x`` (None -> zeros)."""
    b = a.baselines
    if b is None:
        return torch.zeros((), dtype=x.dtype, device=x.device)
    if isinstance(b, torch.Tensor):
        if len(b) not in (1, len(x)):
            raise ValueError(f"the attribution's baselines are a distribution of {len(b)} references "
                             f"({a.method}); this measure needs one reference per example")
        return b.to(x.device, x.dtype)
    return torch.tensor(float(b), dtype=x.dtype, device=x.device)


def _method_options(a: Attribution) -> tuple[dict[str, Any], str | None]:
    options = {k: v for k, v in a.options.items() if k not in ("batch_size", "noise_tunnel")}
    return options, a.options.get("noise_tunnel")


@declare(**ATTRIBUTE_RULES, noise_scale=Interval(float, 0, closed="neither"), n_perturb_samples=Interval(int, 1),
         normalize=Flag())
def infidelity(model: nn.Module, inputs: Any, method: str = "integrated_gradients", target: Any = None,
               baselines: Any = None, layer: str | None = None, batch_size: int | None = None, *,
               output: fw.OutputFn | None = None, noise_scale: float = 0.02, n_perturb_samples: int = 10,
               normalize: bool = False, **method_kwargs: Any) -> pd.DataFrame:
    """Infidelity (Yeh et al. 2019, "On the (In)fidelity and Sensitivity of Explanations"), via captum.

    ``INFD(Phi, f, x) = E_I[(I . Phi(x) - (f(x) - f(x - I)))^2]`` with Gaussian perturbations
    ``I ~ N(0, noise_scale^2)`` per input element, estimated from ``n_perturb_samples`` draws. With
    ``normalize=True`` the attributions are first scaled by the least-squares optimal
    ``beta = E[I.Phi (f(x) - f(x-I))] / E[(I.Phi)^2]`` (captum's ``normalize``). Lower is better.
    Needs input-shaped attributions of float inputs. Measure name: ``infidelity``.
    """
    if not (isinstance(noise_scale, (int, float)) and noise_scale > 0):
        raise ValueError(f"noise_scale must be a positive number, got {noise_scale!r}")
    n_perturb_samples = check_positive_int(n_perturb_samples, "n_perturb_samples")
    a = _attribution(model, inputs, method, target, baselines, layer, batch_size, output, method_kwargs)
    _float_inputs(a, "infidelity")
    if not a.input_shaped:
        raise ValueError(f"infidelity needs one attribution per input element; this {a.method} attribution has "
                         f"shape {tuple(a.attributions.shape)} for inputs {tuple(a.inputs.shape)}")
    batch = _batch(model, a)
    scorer = fw.Scorer(model, a.output, list(batch.extra))
    attr = a.attributions.to(batch.x.device, batch.x.dtype)

    def perturb(x):
        noise = torch.randn_like(x) * noise_scale
        return noise, x - noise

    def chunk(lo, hi):
        x, extra = batch.rows(lo, hi)
        return _captum_infidelity(scorer, perturb, x, attr[lo:hi], additional_forward_args=extra or None,
                                  target=None if a.targets is None else a.targets[lo:hi].to(x.device),
                                  n_perturb_samples=n_perturb_samples, normalize=normalize).detach().cpu()

    with fw.eval_mode(model), torch.no_grad():
        size = batch_size or fw.auto_batch_size(scorer, batch, n_perturb_samples, backward=False)
        parts, _ = fw.run_batched(chunk, len(batch), size)
    return a.example_frame({"infidelity": torch.cat(parts)})


@declare(**ATTRIBUTE_RULES, perturb_radius=Interval(float, 0, closed="neither"), n_perturb_samples=Interval(int, 1))
def sensitivity_max(model: nn.Module, inputs: Any, method: str = "integrated_gradients", target: Any = None,
                    baselines: Any = None, layer: str | None = None, batch_size: int | None = None, *,
                    output: fw.OutputFn | None = None, perturb_radius: float = 0.02, n_perturb_samples: int = 10,
                    **method_kwargs: Any) -> pd.DataFrame:
    """Max-sensitivity (Yeh et al. 2019), via captum: how much the explanation moves under small input noise.

    ``SENS_max(Phi, x) = max_j ||Phi(x) - Phi(x + d_j)||_F / ||Phi(x)||_F`` over ``n_perturb_samples`` draws of
    ``d_j ~ U[-perturb_radius, perturb_radius]`` per element (captum's default perturbation and relative
    norm). The perturbed inputs are attributed with the same method, options, targets and baselines. Lower
    is more stable. Measure name: ``sensitivity_max``.
    """
    if not (isinstance(perturb_radius, (int, float)) and perturb_radius > 0):
        raise ValueError(f"perturb_radius must be a positive number, got {perturb_radius!r}")
    n_perturb_samples = check_positive_int(n_perturb_samples, "n_perturb_samples")
    a = _attribution(model, inputs, method, target, baselines, layer, batch_size, output, method_kwargs)
    _float_inputs(a, "sensitivity_max")
    options, noise_tunnel = _method_options(a)
    device = fw.model_device(model)

    def explain(x, target=None, baselines=None):
        x = x[0] if isinstance(x, tuple) else x  # captum passes a tuple of input tensors
        kw = dict(options)
        if baselines is not None:
            kw["baselines"] = baselines
        return (attribute(model, x, method=a.method, target=target, layer=a.layer, output=a.output,
                          noise_tunnel=noise_tunnel, batch_size=batch_size, **kw).attributions.to(x.device),)

    kwargs: dict[str, Any] = {}
    if a.targets is not None:
        kwargs["target"] = a.targets.to(device)
    if isinstance(a.baselines, torch.Tensor):
        kwargs["baselines"] = a.baselines.to(device)
    elif a.baselines is not None:
        kwargs["baselines"] = a.baselines
    values = _captum_sensitivity_max(explain, (a.inputs.to(device),), perturb_radius=perturb_radius,
                                     n_perturb_samples=n_perturb_samples, **kwargs)
    return a.example_frame({"sensitivity_max": values.detach().cpu()})


@declare(**ATTRIBUTE_RULES, curves=Instance(Iterable), steps=Interval(int, 1), channels=Options(*CHANNEL_REDUCTIONS),
         reference=Data("any", none=True, bad=[torch.zeros(2, 5)]))
def perturbation_curves(model: nn.Module, inputs: Any, method: str = "integrated_gradients", target: Any = None,
                        baselines: Any = None, layer: str | None = None, batch_size: int | None = None, *,
                        output: fw.OutputFn | None = None, curves: Any = CURVES, steps: int = 20,
                        channels: str = "sum", reference: Any = None, **method_kwargs: Any) -> pd.DataFrame:
    """Deletion and insertion curves (Petsiuk et al. 2018, "RISE"): the target's probability as features are
    removed from (deletion) or inserted into (insertion) the input in order of attribution.

    Features are positions (pixels with all their channels, time steps, tokens, or vector entries), ranked by
    the attribution map ``m = feature_map(attr, channels)`` (default ``"sum"``: signed evidence for the
    target), highest first, ties by position. With ``F`` features and ``k = steps``, point ``j = 0..k`` changes
    the top ``n_j = floor(j F / k)`` features: deletion replaces them in ``x`` by the reference, insertion
    starts from the reference and puts them back from ``x``. The reference is ``reference`` if given, else the
    attribution's baselines (zeros when none; token inputs: their baseline token ids).

    Returns a table in the results schema with ``measure = "probability"`` (softmax of the scores at the target)
    for ``[N, K]`` scores, or ``"score"`` (the raw score) for one-score-per-example outputs, and the extra
    columns ``example, target, curve, fraction (= n_j / F), n_features``, ``method``, ``model``. See
    :func:`curve_auc`.
    """
    steps = check_positive_int(steps, "steps")
    curves = [curves] if isinstance(curves, str) else list(curves)
    if not curves:
        raise ValueError(f"curves must name at least one of {list(CURVES)}")
    for c in curves:
        check_choice(c, CURVES, "curves")
    a = _attribution(model, inputs, method, target, baselines, layer, batch_size, output, method_kwargs)
    batch = _batch(model, a)
    x = batch.x
    positions = tuple(x.shape[1:]) if a.kind in ("tokens", "features") else tuple(x.shape[2:])
    m = feature_map(a.attributions, channels, kind=a.kind)
    if tuple(m.shape[1:]) != positions:
        raise ValueError(f"the attribution map has shape {tuple(m.shape[1:])} per example but the inputs have "
                         f"{positions} positions; deletion/insertion needs input-resolution attributions "
                         "(not a layer's; Grad-CAM with upsample=True is fine)")
    if reference is None:
        ref = _baseline_tensor(a, x)
    else:
        ref = torch.as_tensor(reference).to(x.device, x.dtype)
    ref = torch.broadcast_to(ref, x.shape) if ref.dim() == 0 or len(ref) == 1 else ref
    if ref.shape != x.shape:
        raise ValueError(f"reference has shape {tuple(ref.shape)}; pass a number or a tensor broadcastable to "
                         f"the inputs {tuple(x.shape)}")
    n, F = len(x), int(np.prod(positions))
    order = torch.argsort(-m.reshape(n, F).to(torch.float64), dim=1, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(F).expand(n, F))
    counts = torch.tensor([(j * F) // steps for j in range(steps + 1)])
    changed = (rank[None] < counts[:, None, None]).to(x.device)  # [k+1, N, F]: feature among the top n_j
    scorer = fw.Scorer(model, a.output, list(batch.extra))
    targets = a.targets

    def chunk(lo, hi):
        b = hi - lo
        xb, extra = batch.rows(lo, hi)
        mask = changed[:, lo:hi].reshape(steps + 1, b, *positions)
        if a.kind in ("image", "signal"):
            mask = mask.unsqueeze(2)  # the same decision for every channel of a position
        out = {}
        for curve in curves:
            keep_x = ~mask if curve == "deletion" else mask
            variants = torch.where(keep_x, xb[None], ref[lo:hi][None]).reshape(-1, *x.shape[1:])
            s = fw.check_scores(scorer(variants, *(v.repeat(steps + 1, *[1] * (v.dim() - 1)) for v in extra)),
                                len(variants)).to(torch.float64)
            if s.dim() == 2:
                p = torch.softmax(s, 1).reshape(steps + 1, b, -1)
                p = p.gather(2, targets[lo:hi].to(p.device)[None, :, None].expand(steps + 1, b, 1))[..., 0]
            else:
                p = s.reshape(steps + 1, b)
            out[curve] = p.cpu()
        return out

    with fw.eval_mode(model), torch.no_grad():
        size = batch_size or fw.auto_batch_size(scorer, batch, (steps + 1) * len(curves), backward=False)
        parts, _ = fw.run_batched(chunk, n, size)
    measure = "probability" if targets is not None else "score"
    tgt = targets.numpy() if targets is not None else np.full(n, -1)
    frames = []
    for curve in curves:
        p = torch.cat([part[curve] for part in parts], dim=1).numpy()  # [k+1, N]
        j, e = np.meshgrid(np.arange(steps + 1), np.arange(n), indexing="ij")
        n_j = counts.numpy()[j.ravel()]
        frames.append(pd.DataFrame({"measure": measure, "value": p.ravel(), "example": e.ravel(),
                                    "target": tgt[e.ravel()], "curve": curve, "fraction": n_j / F, "n_features": n_j}))
    return a._schema(pd.concat(frames, ignore_index=True))


@declare(curves=Data("any", example=example_curves, bad=["curves", pd.DataFrame({"value": [1.0]})]))
def curve_auc(curves: pd.DataFrame) -> pd.DataFrame:
    """Area under each deletion/insertion curve of :func:`perturbation_curves`, trapezoid rule on the
    fraction axis: ``AUC = sum_j (f_{j+1} - f_j) (p_j + p_{j+1}) / 2`` over ``f`` in ``[0, 1]``.

    Lower deletion AUC and higher insertion AUC mean a more faithful ranking. Returns one row per example and
    curve in the results schema: ``measure`` = ``deletion_auc`` / ``insertion_auc``, ``value`` the area, and
    the other columns kept.
    """
    need = {"example", "curve", "fraction", "value"}
    if not isinstance(curves, pd.DataFrame) or not need <= set(curves.columns):
        raise ValueError(f"curves must be the DataFrame from perturbation_curves (columns {sorted(need)})")
    check_tidy(curves, "curve_auc(curves)")
    keys = [c for c in curves.columns if c not in ("fraction", "n_features", "value", "measure")]

    def area(g):
        g = g.sort_values("fraction")
        return np.trapezoid(g["value"].to_numpy(np.float64), g["fraction"].to_numpy(np.float64))

    out = curves.groupby(keys, dropna=False, sort=False)[["fraction", "value"]].apply(area).rename("value")
    out = out.reset_index()
    out["measure"] = out["curve"] + "_auc"
    return tidy(out)


@declare(**ATTRIBUTE_RULES)
def completeness_gap(model: nn.Module, inputs: Any, method: str = "integrated_gradients", target: Any = None,
                     baselines: Any = None, layer: str | None = None, batch_size: int | None = None, *,
                     output: fw.OutputFn | None = None, **method_kwargs: Any) -> pd.DataFrame:
    """Completeness of Integrated Gradients (Sundararajan et al. 2017, axiom 'completeness'), computed directly:

    ``gap = |sum_i attr_i - (F(x) - F(x'))|`` per example, with ``F`` the attributed target score and ``x'`` the
    baseline (token inputs: the baseline token ids). Sums in float64. Rows: ``attribution_sum``,
    ``output_difference`` (``F(x) - F(x')``) and ``completeness_gap``; divide the gap by
    ``|output_difference|`` for a relative error. Also meaningful for DeepLift (summation-to-delta) and layer
    Integrated Gradients.
    """
    a = _attribution(model, inputs, method, target, baselines, layer, batch_size, output, method_kwargs)
    batch = _batch(model, a)
    if a.kind == "tokens":
        ref = a.baselines.to(batch.x.device) if isinstance(a.baselines, torch.Tensor) else None
        if ref is None:
            raise ValueError("this token attribution has no baseline token ids")
    else:
        ref = torch.broadcast_to(_baseline_tensor(a, batch.x), batch.x.shape)
    scorer = fw.Scorer(model, a.output, list(batch.extra))
    with fw.eval_mode(model):
        fx = fw.target_scores(fw.scores(scorer, batch, batch_size), a.targets)
        fb = fw.target_scores(fw.scores(scorer, fw.Batch(ref, batch.extra, a.kind), batch_size), a.targets)
    diff = fx.to(torch.float64).cpu() - fb.to(torch.float64).cpu()
    total = a.attributions.to(torch.float64).reshape(len(a), -1).sum(1)
    return a.example_frame({"attribution_sum": total, "output_difference": diff,
                            "completeness_gap": (total - diff).abs()})

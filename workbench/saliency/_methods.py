"""The registry of attribution methods: one small :class:`Method` entry per captum algorithm.

Every method is called the same way by :func:`workbench.saliency._attribute`; an entry only says which
captum class computes it (on the inputs, and on a layer when ``layer=`` is given), what its baselines
mean, whether it may be wrapped in a NoiseTunnel, and which default options it needs for a given input.
Adding a method is one :func:`register_method` call.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import captum.attr as ca
import torch

from .._validation import Data, declare

__all__ = ["Method", "METHODS", "register_method", "NOISE_TUNNELS"]

NOISE_TUNNELS = ("smoothgrad", "smoothgrad_sq", "vargrad")


@dataclasses.dataclass(frozen=True)
class Method:
    """How to run one attribution method.

    Attributes
    ----------
    name : registry key, e.g. ``"integrated_gradients"``.
    captum : captum class attributing to the inputs (``cls(forward_fn)``), or None if the method only
        exists for layers (Grad-CAM).
    layer : captum class attributing to a layer's output (``cls(forward_fn, module)``), used when
        ``layer=`` is given and for token inputs; None if the method has no layer form.
    baselines : ``"per_example"`` (one reference input per example, or one broadcast to all),
        ``"distribution"`` (a set of references sampled from, GradientShap) or ``"none"``.
    gradient : True if the method is gradient-based and may be wrapped in a NoiseTunnel.
    delta : True if captum can return its convergence delta (completeness error).
    expansion : forward rows per example for given options (used to size batches), e.g. ``n_steps``.
    defaults : ``defaults(x, options) -> dict`` of options filled in when the caller did not set them,
        from one batch of inputs ``x`` (e.g. occlusion windows).
    """

    name: str
    captum: type | None
    layer: type | None = None
    baselines: str = "none"
    gradient: bool = True
    delta: bool = False
    expansion: Callable[[dict], int] = lambda options: 1
    defaults: Callable[[torch.Tensor, dict], dict] | None = None


METHODS: dict[str, Method] = {}


# the valid example re-registers the registry's own "saliency" entry (no change)
@declare(method=Data("any", example=lambda: METHODS["saliency"], bad=["saliency", None]))
def register_method(method: Method) -> Method:
    """Add (or replace) a method in :data:`METHODS`; returns it."""
    if not isinstance(method, Method):
        raise TypeError(f"method must be a workbench.saliency.Method, got {type(method).__name__}")
    if method.captum is None and method.layer is None:
        raise ValueError(f"method {method.name!r} needs a captum class for inputs or for layers")
    if method.baselines not in ("per_example", "distribution", "none"):
        raise ValueError(f"method {method.name!r}: baselines must be 'per_example', 'distribution' or 'none'")
    METHODS[method.name] = method
    return method


def _spatial(x: torch.Tensor) -> tuple[int, ...]:
    """Spatial sizes of a batch: (H, W) for [N,C,H,W], (L,) for [N,C,L], () for [N,D]."""
    return tuple(x.shape[2:]) if x.dim() >= 3 else ()


# perturbed copies evaluated per forward call by the perturbation methods unless the caller sets it
PERTURBATIONS_PER_EVAL = 16


def _occlusion_defaults(x: torch.Tensor, options: dict) -> dict:
    """Windows covering all channels and 1/8 of each spatial side, moved by half a window."""
    out = {"perturbations_per_eval": PERTURBATIONS_PER_EVAL}
    if "sliding_window_shapes" in options:
        return out
    spatial = _spatial(x)
    if not spatial:
        return {**out, "sliding_window_shapes": (1,)}
    win = tuple(max(1, s // 8) for s in spatial)
    return {**out, "sliding_window_shapes": (x.shape[1], *win), "strides": (1, *(max(1, w // 2) for w in win))}


def _ablation_defaults(x: torch.Tensor, options: dict) -> dict:
    """One feature per spatial position (all channels of a pixel / time step ablated together)."""
    out = {"perturbations_per_eval": PERTURBATIONS_PER_EVAL}
    spatial = _spatial(x)
    if "feature_mask" in options or not spatial:
        return out
    n = 1
    for s in spatial:
        n *= s
    return {**out, "feature_mask": torch.arange(n, device=x.device).reshape(1, 1, *spatial)}


def _get(options: dict, key: str, default: int) -> int:
    value = options.get(key, default)
    return int(value) if isinstance(value, int) else default


register_method(Method("integrated_gradients", ca.IntegratedGradients, ca.LayerIntegratedGradients,
                       baselines="per_example", delta=True,
                       expansion=lambda o: _get(o, "n_steps", 50)))
register_method(Method("saliency", ca.Saliency))
register_method(Method("input_x_gradient", ca.InputXGradient, ca.LayerGradientXActivation))
register_method(Method("gradient_shap", ca.GradientShap, ca.LayerGradientShap, baselines="distribution",
                       expansion=lambda o: _get(o, "n_samples", 5)))
register_method(Method("deeplift", ca.DeepLift, ca.LayerDeepLift, baselines="per_example", delta=True))
register_method(Method("occlusion", ca.Occlusion, baselines="per_example", gradient=False,
                       expansion=lambda o: _get(o, "perturbations_per_eval", 1), defaults=_occlusion_defaults))
register_method(Method("feature_ablation", ca.FeatureAblation, baselines="per_example", gradient=False,
                       expansion=lambda o: _get(o, "perturbations_per_eval", 1), defaults=_ablation_defaults))
register_method(Method("grad_cam", None, ca.LayerGradCam))


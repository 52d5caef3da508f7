"""Models with named probe points: small builders, Hugging Face loading, save/load.

>>> import tempfile, torch, workbench.models
>>> model = workbench.models.build("cnn", input_shape=(3, 32, 32), num_classes=10, width=16)
>>> list(workbench.models.probe_points(model))
['stem', 'stage1', 'stage2', 'stage3', 'stage4', 'pool', 'head']
>>> same = workbench.models.build(**model.spec)           # rebuilds the architecture
>>> path = workbench.models.save(model, tempfile.mkdtemp() + "/a")
>>> torch.equal(next(workbench.models.load(path).parameters()), next(model.parameters()))
True
"""
from __future__ import annotations

import inspect
import json
from typing import Any, Callable

from torch import nn

from .builders import BUILDERS, CNN, MLP, Transformer, ViT
from .inputs import call_model, device_of, model_inputs, predict
from .layers import get_module, param_groups, probe_points, select_layers
from .loading import HFModel, load, save

__all__ = ["build", "available", "register", "probe_points", "select_layers", "get_module", "load", "save",
           "HFModel", "MLP", "CNN", "ViT", "Transformer",
           "param_groups", "device_of", "predict", "model_inputs", "call_model"]

_REGISTRY: dict[str, Callable[..., nn.Module]] = dict(BUILDERS)


def available() -> list[str]:
    """Names accepted by :func:`build`."""
    return sorted(_REGISTRY)


def register(name: str, builder: Callable[..., nn.Module]) -> None:
    """Add a builder (a callable returning an ``nn.Module``) under ``name``.

    If the module it returns has no ``spec``, :func:`build` attaches one from the call's arguments
    (defaults included). Give the module a ``probe_points`` attribute to name its layers.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty string, got {name!r}")
    if not callable(builder):
        raise TypeError(f"builder for {name!r} must be callable, got {type(builder).__name__}")
    _REGISTRY[name] = builder


def build(name: str, options: dict[str, Any] | None = None, **kwargs: Any) -> nn.Module:
    """Build model ``name``; options come as keywords, as an ``options`` dict, or both.

    ``build(**model.spec)`` (i.e. ``build(name=..., options={...})``) rebuilds a model's architecture.

    Raises
    ------
    ValueError
        Unknown ``name`` (the message lists the available builders) or a bad option value.
    TypeError
        Unknown or missing option names (the message lists the accepted ones).
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a builder name (str), got {type(name).__name__}; available: {available()}")
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(available())}")
    if options is not None and not isinstance(options, dict):
        raise TypeError(f"options must be a dict of builder options, got {type(options).__name__}")
    both = sorted(set(options or {}) & set(kwargs))
    if both:
        raise TypeError(f"option(s) {both} given both in options= and as keywords; give each once")
    options = {**(options or {}), **kwargs}

    builder = _REGISTRY[name]
    params = inspect.signature(builder).parameters
    accepted = [p for p, v in params.items() if p != "self" and v.kind not in (v.VAR_POSITIONAL, v.VAR_KEYWORD)]
    if not any(v.kind is v.VAR_KEYWORD for v in params.values()):
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise TypeError(f"unknown option(s) {unknown} for model {name!r}; accepted: {accepted}")
    missing = [p for p in accepted if params[p].default is inspect.Parameter.empty and p not in options]
    if missing:
        raise TypeError(f"model {name!r} needs option(s) {missing}; accepted: {accepted}")

    model = builder(**options)
    if not isinstance(model, nn.Module):
        raise TypeError(f"builder {name!r} returned {type(model).__name__}, expected a torch.nn.Module")
    if getattr(model, "spec", None) is None:  # a registered plain function: record the call
        bound = inspect.signature(builder).bind(**options)
        bound.apply_defaults()
        spec = {"name": name, "options": {k: list(v) if isinstance(v, tuple) else v
                                          for k, v in bound.arguments.items()}}
        try:
            json.dumps(spec)
        except TypeError:
            spec = None  # not serialisable: save() will say so
        model.spec = spec
    return model

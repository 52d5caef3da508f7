"""Probe points: the ordered, named layers of a model whose outputs the workbench records.

A model declares them with an attribute ``probe_points`` (a list of module paths, or a dict
``display name -> module path``), in forward order, input side first. Any other ``nn.Module``
falls back to its top-level ``named_children()`` in registration order.
"""
from __future__ import annotations

import difflib
import re
from typing import Iterable

from torch import nn

__all__ = ["probe_points", "select_layers", "get_module", "param_groups"]


def _check_model(model: object) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")


def _module_paths(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_modules() if name]


def get_module(model: nn.Module, path: str) -> nn.Module:
    """Return the submodule at ``path`` (as in ``model.named_modules()``; ``""`` is the model itself).

    Raises
    ------
    ValueError
        If no module has that path; the message suggests close matches.
    """
    _check_model(model)
    if not isinstance(path, str):
        raise TypeError(f"path must be a module path string such as 'layers.0', got {type(path).__name__}")
    try:
        return model.get_submodule(path)
    except AttributeError:
        close = difflib.get_close_matches(path, _module_paths(model), n=5)
        hint = f"; did you mean {close}?" if close else "; see [n for n, _ in model.named_modules()]"
        raise ValueError(f"{type(model).__name__} has no submodule {path!r}{hint}") from None


def probe_points(model: nn.Module) -> dict[str, str]:
    """Ordered mapping ``display name -> module path`` of the model's probe points (forward order).

    Uses ``model.probe_points`` (list of paths, or dict name -> path) when the model defines it,
    otherwise the top-level ``named_children()``. A module without children gives
    ``{"output": ""}`` (the module itself).

    Examples
    --------
    >>> from workbench.models import build
    >>> probe_points(build("mlp", input_shape=(20,), num_classes=3, hidden=(8, 8)))
    {'fc1': 'hidden.0', 'fc2': 'hidden.1', 'head': 'head'}
    """
    _check_model(model)
    declared = getattr(model, "probe_points", None)
    if callable(declared) and not isinstance(declared, nn.Module):
        declared = declared()
    if declared is None:
        points = {name: name for name, _ in model.named_children()}
        return points or {"output": ""}
    if isinstance(declared, dict):
        points = dict(declared)
    elif isinstance(declared, (list, tuple)):
        points = {path: path for path in declared}
    else:
        raise TypeError(f"{type(model).__name__}.probe_points must be a list of module paths or a dict "
                        f"name -> module path, got {type(declared).__name__}")
    for name, path in points.items():
        if not isinstance(name, str) or not isinstance(path, str):
            raise TypeError(f"{type(model).__name__}.probe_points entries must be strings, got {name!r}: {path!r}")
        get_module(model, path)  # fail early, naming the bad path
    return points


def param_groups(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Trainable parameters of each probe point's module, ``{probe point: [parameters]}`` (what per-layer
    gradient norms are computed over)."""
    return {name: [p for p in get_module(model, path).parameters() if p.requires_grad]
            for name, path in probe_points(model).items()}


def _listing(points: dict[str, str]) -> str:
    return ", ".join(points) if points else "(none)"


def select_layers(model: nn.Module, layers: str | Iterable[str] | None = None) -> dict[str, str]:
    """Resolve a layer selection to an ordered mapping ``name -> module path``.

    Parameters
    ----------
    model : nn.Module
    layers : None, str or list of str
        - ``None``: all probe points.
        - a list: each entry is a probe-point name or any module path from ``model.named_modules()``;
          the result keeps the order of the list.
        - a str: a regular expression searched (``re.search``) in the probe-point names; if none match,
          in all module paths (then each matching path names itself).

    Raises
    ------
    ValueError
        If an entry or the pattern matches nothing; the message lists the probe points.
    """
    points = probe_points(model)
    if layers is None:
        return points
    if isinstance(layers, str):
        try:
            pattern = re.compile(layers)
        except re.error as err:
            raise ValueError(f"layers={layers!r} is not a valid regular expression ({err}); "
                             f"probe points: {_listing(points)}") from None
        chosen = {name: path for name, path in points.items() if pattern.search(name)}
        if not chosen:
            chosen = {path: path for path in _module_paths(model) if pattern.search(path)}
        if not chosen:
            raise ValueError(f"layers={layers!r} matches no probe point and no module path of "
                             f"{type(model).__name__}; probe points: {_listing(points)}")
        return chosen
    if isinstance(layers, dict) or not isinstance(layers, Iterable):
        raise TypeError(f"layers must be None, a regex string or a list of names, got {type(layers).__name__}")
    layers = list(layers)
    if not layers:
        raise ValueError(f"layers is an empty list; pass None for all probe points ({_listing(points)})")
    paths = None
    chosen = {}
    for entry in layers:
        if not isinstance(entry, str):
            raise TypeError(f"layers entries must be strings (probe-point names or module paths), got {entry!r}")
        if entry in points:
            chosen[entry] = points[entry]
            continue
        paths = paths if paths is not None else set(_module_paths(model))
        if entry not in paths:
            raise ValueError(f"{entry!r} is neither a probe point nor a module path of {type(model).__name__}; "
                             f"probe points: {_listing(points)}")
        chosen[entry] = entry
    return chosen

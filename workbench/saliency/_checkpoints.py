"""Attribute the same inputs with many models: runs x checkpoints (or named models)."""
from __future__ import annotations

import numbers
from typing import Any, Iterable, Mapping

from torch import nn

from .._validation import Data, Instance, declare
from ..runs import Run
from ._attribute import attribute
from ._examples import ATTRIBUTE_RULES, example_model
from ._result import Attribution

__all__ = ["attribute_checkpoints"]


def _steps(run: Run, steps: Any) -> list[int]:
    available = run.checkpoints()
    if not available:
        raise ValueError(f"run {run.name!r} has no checkpoints yet (state: {run.status['state']}); train it first")
    if steps is None or steps == "final":
        return [available[-1]]
    if steps == "all":
        return available
    if isinstance(steps, int):
        steps = [steps]
    steps = list(steps)
    missing = [s for s in steps if s not in available]
    if missing:
        raise ValueError(f"steps {missing} are not checkpoints of run {run.name!r}; available: {available}")
    return steps


@declare(sources=Data("any", example=lambda: {"a": example_model(0), "b": example_model(1)},
                      bad=["sources", {"a": "model"}, []]),
         inputs=ATTRIBUTE_RULES["inputs"], steps=Instance(numbers.Integral, Iterable, none=True))
def attribute_checkpoints(sources: Run | Iterable[Run] | Mapping[str, nn.Module], inputs: Any,
                          steps: Any = "all", **attribute_kwargs: Any) -> list[Attribution]:
    """:func:`~workbench.saliency._attribute` the same ``inputs`` with every model of ``sources``.

    Parameters
    ----------
    sources : Run, list of Runs, or dict name -> nn.Module
        Runs (``workbench.runs.Run``) are loaded checkpoint by checkpoint with ``run.load_model(step)``; the
        result's ``run`` is the run's name and ``step`` the checkpoint step. A dict of models gives
        ``run = name`` and ``step = None``.
    steps : "all" (default), "final"/None (the last checkpoint), an int or a list of ints
        Which checkpoints of each run.
    **attribute_kwargs
        Everything :func:`attribute` takes (``method``, ``target``, ``baselines``, ``layer``, ``output``, ...).
        Pass ``target=labels`` to attribute the same class at every checkpoint (``None`` attributes each
        model's own prediction).
    """
    for key in ("run", "step"):
        if key in attribute_kwargs:
            raise TypeError(f"{key}= is set by attribute_checkpoints from the sources")
    out = []
    if isinstance(sources, Mapping):
        for name, model in sources.items():
            if not isinstance(model, nn.Module):
                raise TypeError(f"sources[{name!r}] must be an nn.Module, got {type(model).__name__}")
            out.append(attribute(model, inputs, run=str(name), **attribute_kwargs))
        return out
    runs = [sources] if isinstance(sources, Run) else list(sources)
    if not runs or not all(isinstance(r, Run) for r in runs):
        raise TypeError("sources must be a Run, a non-empty list of Runs, or a dict name -> nn.Module")
    for run in runs:
        for step in _steps(run, steps):
            model = run.load_model(step)
            out.append(attribute(model, inputs, run=run.name, step=step, **attribute_kwargs))
    return out

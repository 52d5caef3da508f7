"""Plumbing of the interventions (private): the layer to hook, forward hooks that are always removed, eval mode
that is always restored, batched forward passes, per-example task metrics and their bootstrap intervals."""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._validation import Rule, check_device, check_real
from ..data import as_split
from ..models import call_model, device_of, get_module, select_layers

MetricFn = Callable[[torch.Tensor, torch.Tensor], Any]

#: the task metrics computed from the model's own outputs (logits) and the task labels, per example
METRICS = ("accuracy", "loss")


def check_model(model: Any, name: str) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module, got {type(model).__name__}")
    return model


def layer_path(model: nn.Module, layer: Any, name: str = "layer") -> str:
    """The module path of ``layer`` (a probe-point name or a module path) in ``model``; ValueError naming ``name``."""
    if not isinstance(layer, str):
        raise TypeError(f"{name} must be a probe-point name or module path (str), got {type(layer).__name__}")
    try:
        return select_layers(model, [layer])[layer]
    except ValueError as err:
        raise ValueError(f"{name}={layer!r}: {err}") from None


def the_split(data: Any, split: str | None) -> Any:
    """``data`` as a Split with finite, real, non-empty inputs."""
    if isinstance(data, (np.ndarray, torch.Tensor)):
        check_real(data, "data")
    s = as_split(data, split)
    if len(s) == 0:
        raise ValueError("data has no examples; pass at least one")
    inputs = s.inputs
    if inputs.dtype != object and np.issubdtype(inputs.dtype, np.floating) and not np.all(np.isfinite(inputs)):
        raise ValueError("data inputs contain NaN/Inf; remove or impute them first")
    return s


def layout_of(split: Any) -> str:
    """How a 3-D layer output is laid out (as :func:`workbench.activations.extract` reads it): a conv map
    ``[N, C, L]`` for 1-D float signals, a token sequence ``[N, T, D]`` otherwise."""
    inputs = split.inputs
    return "conv" if (inputs.dtype != object and inputs.ndim == 3 and np.issubdtype(inputs.dtype, np.floating)) \
        else "sequence"


def task_labels(split: Any, labels: Any, n: int, name: str) -> np.ndarray:
    """The task labels: ``labels`` if given, else the split's labels (integer class ids, one per example)."""
    y = split.labels if labels is None else labels
    if y is None:
        raise ValueError(f"{name} is needed: data has no labels; pass {name}=... (the task's class ids)")
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu().numpy()
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise ValueError(f"{name} must be 1-D with one class id per example ({n}), got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise TypeError(f"{name} must hold integer class ids, got dtype {y.dtype}")
    if (y < 0).any():
        raise ValueError(f"{name} must be class ids >= 0 (indices of the model's outputs)")
    return y.astype(np.int64)


def resolve_device(model: nn.Module, device: Any) -> torch.device:
    return device_of(model) if device is None else check_device(device, "device")


def main_tensor(output: Any, where: str) -> torch.Tensor:
    """The tensor of a module output: itself, the first element of a tuple/list, or ``.last_hidden_state``."""
    out = output[0] if isinstance(output, (tuple, list)) else output
    if hasattr(out, "last_hidden_state"):
        out = out.last_hidden_state
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"{where} returned {type(out).__name__}, not a tensor; choose another layer")
    return out


def replace_main(output: Any, new: torch.Tensor) -> Any:
    """``output`` with its main tensor (:func:`main_tensor`) replaced by ``new``."""
    if isinstance(output, torch.Tensor):
        return new
    if isinstance(output, (tuple, list)) and isinstance(output[0], torch.Tensor):
        return type(output)([new, *output[1:]]) if isinstance(output, list) else (new, *output[1:])
    raise TypeError(f"cannot replace a layer output of type {type(output).__name__}; hook a layer whose output is a "
                    "tensor (or a tuple starting with one)")


def logits_of(output: Any, name: str) -> torch.Tensor:
    """A model's final output as a logits tensor ``[B, K]`` (a tensor, or an object with ``.logits``)."""
    out = getattr(output, "logits", output)
    if isinstance(out, (tuple, list)):
        out = out[0]
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        raise ValueError(f"{name}'s output is not class logits [batch, classes] "
                         f"(got {type(out).__name__}{tuple(out.shape) if isinstance(out, torch.Tensor) else ''}); "
                         "the task metrics need a classifier, or pass metric=callable(outputs, labels)")
    return out


@contextlib.contextmanager
def hooked(model: nn.Module, path: str, hook: Callable) -> Iterator[None]:
    """``hook`` registered as a forward hook on ``model``'s module ``path``; removed on exit, also on error."""
    handle = get_module(model, path).register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def eval_mode(*models: nn.Module) -> Iterator[None]:
    """Every model in eval mode; each one's previous mode restored on exit, also on error."""
    modes = [(m, m.training) for m in models]
    try:
        for m, _ in modes:
            m.eval()
        yield
    finally:
        for m, was in modes:
            m.train(was)


def batches(n: int, batch_size: int) -> Iterator[slice]:
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


def forward(model: nn.Module, split: Any, idx: slice, device: torch.device, name: str) -> Any:
    try:
        return call_model(model, split, idx, device)
    except RuntimeError as err:
        raise ValueError(f"{name} could not run on data (inputs of shape {tuple(split.inputs.shape)}, dtype "
                         f"{split.inputs.dtype}): {str(err).splitlines()[0][:200]}") from err


def metric_name(metric: Any) -> str:
    return metric if isinstance(metric, str) else getattr(metric, "__name__", type(metric).__name__)


def per_example(metric: str | MetricFn, outputs: Any, labels: torch.Tensor, name: str) -> np.ndarray:
    """Per-example metric values [B] (float64) of one batch: 0/1 correctness, cross-entropy, or a callable's."""
    if metric == "accuracy":
        logits = logits_of(outputs, name)
        return (logits.argmax(1) == labels).double().cpu().numpy()
    if metric == "loss":
        logits = logits_of(outputs, name)
        if int(labels.max()) >= logits.shape[1]:
            raise ValueError(f"task labels go up to {int(labels.max())} but {name} has {logits.shape[1]} outputs")
        return F.cross_entropy(logits.double(), labels, reduction="none").cpu().numpy()
    value = metric(outputs, labels)
    if isinstance(value, torch.Tensor):
        value = value.detach().double().cpu().numpy()
    value = np.asarray(value, dtype=np.float64).reshape(-1)
    if value.size != len(labels):
        raise ValueError(f"metric must return one value per example ({len(labels)} in this batch), got {value.size}")
    if not np.all(np.isfinite(value)):
        raise ValueError("metric returned NaN/Inf values; return finite per-example values")
    return value


def check_metric(metric: Any) -> None:
    if isinstance(metric, str):
        if metric not in METRICS:
            raise ValueError(f"metric={metric!r} is not one of {list(METRICS)} (or pass a callable "
                             "metric(outputs, labels) -> per-example values)")
    elif not callable(metric):
        raise TypeError(f"metric must be one of {list(METRICS)} or a callable metric(outputs, labels) -> per-example "
                        f"values, got {type(metric).__name__}")


class MetricRule(Rule):
    """The declared rule of a ``metric`` option: one of :data:`METRICS` or a callable."""

    def check(self, value: Any, name: str) -> None:
        if isinstance(value, str) and value not in METRICS:
            raise ValueError(f"{name}={value!r} is not one of {list(METRICS)} (or pass a callable "
                             "metric(outputs, labels) -> per-example values)")
        if not isinstance(value, str) and not callable(value):
            raise TypeError(f"{name} must be one of {list(METRICS)} or a callable metric(outputs, labels) -> "
                            f"per-example values, got {type(value).__name__}")

    def example(self) -> Any:
        return "loss"

    def invalid(self) -> list[Any]:
        return ["f1", 3, None]

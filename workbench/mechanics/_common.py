"""Shared plumbing of the transfer-mechanics analyses: a backbone + head as one classifier, its loss and
accuracy on a labelled split, BatchNorm statistics recomputed on training data, input checks."""
from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import data as wb_data
from ..models import device_of, model_inputs

_BATCH = 512


class Classifier(nn.Module):
    """``head(representation(net, x))`` (with a separate ``head``) or ``net(x)`` (``head`` None: the model's own
    classifier) as one module, so that one state dict holds the backbone and the head."""

    def __init__(self, net: nn.Module, head: nn.Module | None = None):
        super().__init__()
        self.net = net
        self.head = head

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.head is None:
            return self.net(x) if attention_mask is None else self.net(x, attention_mask=attention_mask)
        from ..models.heads import representation

        return self.head(representation(self.net, x, attention_mask))


def check_module(value: Any, name: str, *, none: bool = False) -> nn.Module | None:
    if value is None and none:
        return None
    if not isinstance(value, nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module{' or None' if none else ''} (e.g. run.load_model(step) or "
                        f"the net of workbench.train.finetune), got {type(value).__name__}")
    return value


def labelled_split(data: Any, name: str, split: str = "test", target: str | None = None) -> wb_data.Split:
    """A labelled :class:`~workbench.data.Split`: ``data`` itself, or ``data[split]`` of a Dataset; with ``target``
    its labels are that categorical factor."""
    if isinstance(data, wb_data.Dataset):
        if split not in data:
            raise ValueError(f"{name} has no split {split!r} (splits: {list(data)}); pass split= one of them")
        data = data[split]
    if not isinstance(data, wb_data.Split):
        raise TypeError(f"{name} must be a workbench Dataset or Split with labels, got {type(data).__name__}")
    if target is not None:
        if not isinstance(target, str) or target not in data.factors:
            raise ValueError(f"target={target!r} is not a factor of {name} (factors: {sorted(data.factors)})")
        y = np.asarray(data.factors[target])
        if not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"target={target!r} is not categorical (dtype {y.dtype}); classify a categorical factor")
        data = wb_data.Split(inputs=data.inputs, labels=y, factors=data.factors, attention_mask=data.attention_mask)
    if data.labels is None:
        raise ValueError(f"{name} has no labels; these measures need a labelled split")
    if len(data) == 0:
        raise ValueError(f"{name} is empty; pass a split with at least one example")
    return data


def training_split(data: Any, name: str) -> wb_data.Split:
    """The split a network is trained (or its BatchNorm statistics estimated) on: a Split, or a Dataset's
    ``"train"``."""
    if isinstance(data, wb_data.Dataset):
        if "train" not in data:
            raise ValueError(f"{name} has no 'train' split (splits: {list(data)}); pass the Split to use")
        return data["train"]
    if not isinstance(data, wb_data.Split):
        raise TypeError(f"{name} must be a workbench Dataset (its 'train' split) or Split, got {type(data).__name__}")
    return data


#: the layers whose running statistics :func:`recompute_batchnorm` re-estimates
BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, BATCHNORMS) for m in model.modules())


@torch.no_grad()
def recompute_batchnorm(model: nn.Module, split: wb_data.Split, batch_size: int = _BATCH) -> None:
    """Reset every BatchNorm's running statistics and re-estimate them on ``split`` (``momentum=None``: the plain
    average of the statistics of ``ceil(n / batch_size)`` near-equal consecutive batches — the full-data mean and
    unbiased variance when one batch holds every row) with only the BatchNorm layers in train mode; the model's
    modes are restored."""
    norms = [m for m in model.modules() if isinstance(m, BATCHNORMS)]
    if not norms:
        return
    modes = {m: m.training for m in model.modules()}
    saved = [(m, m.momentum) for m in norms]
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    device = device_of(model)
    n_batches = max(1, -(-len(split) // batch_size))
    try:  # near-equal batches (none of a single row, which BatchNorm cannot normalise in train mode)
        for rows in np.array_split(np.arange(len(split)), n_batches):
            args, kwargs = model_inputs(model, split, slice(int(rows[0]), int(rows[-1]) + 1), device)
            model(*args, **kwargs)
    finally:
        for m, momentum in saved:
            m.momentum = momentum
        for m, mode in modes.items():
            m.training = mode


@torch.no_grad()
def loss_and_accuracy(model: nn.Module, split: wb_data.Split, batch_size: int = _BATCH) -> tuple[float, float]:
    """Mean cross-entropy (float64 accumulation) and accuracy of ``model``'s logits on a labelled split, in eval
    mode (the previous mode restored)."""
    was = model.training
    model.eval()
    device = device_of(model)
    y = torch.as_tensor(np.asarray(split.labels), dtype=torch.long)
    total, correct = 0.0, 0
    try:
        for start in range(0, len(split), batch_size):
            args, kwargs = model_inputs(model, split, slice(start, start + batch_size), device)
            logits = model(*args, **kwargs).double().cpu()
            target = y[start:start + batch_size]
            if logits.shape[-1] <= int(target.max()):
                raise ValueError(f"the model has {logits.shape[-1]} outputs but the labels go up to "
                                 f"{int(target.max())}; pass the head trained for this task")
            total += float(nn.functional.cross_entropy(logits, target, reduction="sum"))
            correct += int((logits.argmax(1) == target).sum())
    finally:
        model.train(was)
    return total / len(split), correct / len(split)


def classifier_copy(model: nn.Module, head: nn.Module | None) -> Classifier:
    """A deep copy of ``model`` (+ ``head``) as one :class:`Classifier` (the originals are never changed)."""
    return Classifier(copy.deepcopy(model), copy.deepcopy(head) if head is not None else None)

"""How a batch of a :class:`~workbench.data.Split` is fed to a model (one place for every stage)."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["model_inputs", "call_model", "device_of", "predict"]


def model_inputs(model: nn.Module, split: Any, index: Any, device: torch.device | str) -> tuple[tuple, dict]:
    """Positional and keyword arguments for ``model`` on rows ``index`` of ``split``.

    - text splits (raw strings) are tokenized by ``model.tokenize`` (Hugging Face wrappers provide it);
    - token splits pass ``attention_mask`` as a keyword;
    - everything else is one float tensor.
    """
    x = split.inputs[index]
    if x.dtype == object:  # raw text
        tokenize = getattr(model, "tokenize", None)
        if tokenize is None:
            raise TypeError(f"{type(model).__name__} cannot read raw text (it has no .tokenize); "
                            "load a Hugging Face model with workbench.models.load(path) or tokenize first")
        enc = tokenize([str(s) for s in x])
        return (enc["input_ids"].to(device),), {"attention_mask": enc["attention_mask"].to(device)}
    if np.issubdtype(x.dtype, np.integer):
        kwargs = {}
        if split.attention_mask is not None:
            kwargs["attention_mask"] = torch.as_tensor(split.attention_mask[index], device=device)
        return (torch.as_tensor(x, dtype=torch.long, device=device),), kwargs
    return (torch.as_tensor(x, dtype=torch.float32, device=device),), {}


def call_model(model: nn.Module, split: Any, index: Any, device: torch.device | str) -> Any:
    args, kwargs = model_inputs(model, split, index, device)
    return model(*args, **kwargs)


def device_of(model: nn.Module) -> torch.device:
    """Where ``model``'s parameters live (CPU for a model without parameters)."""
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


@torch.no_grad()
def predict(model: nn.Module, split: Any, batch_size: int = 512, device: torch.device | str | None = None
            ) -> torch.Tensor:
    """Outputs (logits) for every example of ``split``, in eval mode (restored afterwards), on the CPU in float32.
    ``device`` defaults to where the model lives."""
    device = device_of(model) if device is None else device
    was_training = model.training
    model.eval()
    try:
        outs = [call_model(model, split, slice(i, i + batch_size), device).float().cpu()
                for i in range(0, len(split), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(outs)

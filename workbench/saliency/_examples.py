"""Parameter declarations shared by :mod:`workbench.saliency` (``workbench._validation.declare``) and their tiny
valid examples: the generated bad-input tests (tests/test_params.py) call every public function with the examples
and one bad value at a time."""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from .._validation import Data, Instance, Interval

N, D, CLASSES, SIDE = 8, 6, 3, 8


def example_model(seed: int = 0) -> nn.Module:
    """An MLP classifier of ``D`` features into ``CLASSES`` classes (seeded; the caller's RNG is untouched)."""
    from ..models import build

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build("mlp", input_shape=(D,), num_classes=CLASSES, hidden=(8,))


def example_inputs() -> torch.Tensor:
    """``N`` float32 examples of ``D`` features (inputs of :func:`example_model`)."""
    return torch.from_numpy(np.random.default_rng(0).normal(size=(N, D)).astype(np.float32))


def example_image_attributions(seed: int = 0) -> torch.Tensor:
    """Attributions of ``N`` RGB images ``[N, 3, SIDE, SIDE]``."""
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(N, 3, SIDE, SIDE)))


def example_masks() -> np.ndarray:
    """Object masks ``[N, SIDE, SIDE]``: a centred square of a quarter of the pixels."""
    masks = np.zeros((N, SIDE, SIDE), dtype=bool)
    masks[:, SIDE // 4:3 * SIDE // 4, SIDE // 4:3 * SIDE // 4] = True
    return masks


def example_attribution(run: str = "a", seed: int = 0) -> Any:
    """An :class:`~workbench.saliency.Attribution` of ``N`` images (fixed inputs, attributions from ``seed``)."""
    from ._result import Attribution

    images = torch.from_numpy(np.random.default_rng(99).uniform(size=(N, 3, SIDE, SIDE)))
    return Attribution(attributions=example_image_attributions(seed), inputs=images,
                       targets=torch.arange(N) % CLASSES, method="saliency", kind="image", run=run, step=0)


def example_curves() -> pd.DataFrame:
    """Deletion and insertion curves of :func:`example_model` on :func:`example_inputs` (saliency, 4 steps)."""
    from ._faithfulness import perturbation_curves

    return perturbation_curves(example_model(), example_inputs(), method="saliency", steps=4)


# The call shape shared by attribute and the faithfulness measures: the data (model, inputs, target, baselines and
# output are checked by the body, which names them) and the options (method's registry and noise_tunnel are checked
# by the body too: the registry grows with register_method).
ATTRIBUTE_RULES = {
    "model": Data("any", example=example_model, bad=["model", None]),
    "inputs": Data("any", example=example_inputs,
                   bad=["inputs", torch.full((N, D), float("nan")), torch.zeros(N, D, 2, 2, 2)]),
    "method": Instance(str),
    "target": Data("any", none=True, bad=["target", [0, 1], CLASSES + 4]),
    "baselines": Data("any", none=True, bad=["zeros", torch.zeros(1, D + 1)]),
    "layer": Instance(str, none=True),
    "batch_size": Interval(int, 1, none=True),
    "output": Data("any", none=True, bad=["output"]),
}

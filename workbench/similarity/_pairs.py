"""Layer × layer plumbing shared by every similarity measure: validate two representations (an array, a tensor,
an ``Activations`` or a layer → array mapping), prepare each layer once, compare every pair, return a table in
the results schema (:mod:`workbench.results`) or a matrix.

A measure family provides ``prepare(x: Tensor[N, d], name: str) -> P`` (everything about one layer that the
comparison needs: centering, whitening, RDM, neighbour lists …) and ``compare(pa: P, pb: P) -> float``;
:func:`pairwise` never prepares a layer twice. Families with a faster all-pairs path (CKA: one blocked GEMM)
build the value matrix themselves and use :func:`layer_dict`, :func:`check_same_rows` and :func:`to_frame`.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, TypeVar

import numpy as np
import pandas as pd
import torch

from .._validation import as_2d_tensor, check_choice
from ..activations import as_layers
from ..results import tidy

__all__ = ["layer_dict", "check_same_rows", "to_frame", "pairwise", "same_device", "OUTPUTS", "PAIR_COLUMNS"]

OUTPUTS = ("tidy", "matrix")
#: the columns that name a layer pair in a tidy similarity table (``layer`` is the row layer, from ``a``)
PAIR_COLUMNS = ("layer", "layer_b", "layer_index", "layer_index_b")
P = TypeVar("P")


def layer_dict(layers: Any, arg: str, *, min_rows: int = 2) -> dict[str, torch.Tensor]:
    """Validate one representation — a [N, d] array or tensor (the one layer ``"features"``), an ``Activations``
    or a mapping layer name → [N, d] array/tensor — as float64 tensors on their own device, in mapping order."""
    layers, _ = as_layers(layers, arg)
    return {str(k): as_2d_tensor(v, f"{arg}[{k!r}]", min_rows=min_rows) for k, v in layers.items()}


def check_same_rows(layers_a: Mapping[str, torch.Tensor], layers_b: Mapping[str, torch.Tensor] | None) -> int:
    """All layers of both mappings must hold the same N examples; returns N. The error names the odd ones."""
    sizes = {f"a[{k!r}]": int(v.shape[0]) for k, v in layers_a.items()}
    if layers_b is not None:
        sizes.update({f"b[{k!r}]": int(v.shape[0]) for k, v in layers_b.items()})
    ref = next(iter(sizes.values()))
    if len(set(sizes.values())) > 1:
        odd = ", ".join(f"{k} has {n}" for k, n in sizes.items() if n != ref)
        raise ValueError(f"all layers must hold the same examples: {next(iter(sizes))} has {ref} rows but {odd}")
    return ref


def same_device(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Move all inputs to the first non-CPU device among them (so CUDA inputs stay on the GPU)."""
    device = next((t.device for t in tensors if t.device.type != "cpu"), torch.device("cpu"))
    return [t.to(device) for t in tensors]


def to_frame(names_a: list[str], names_b: list[str], values: np.ndarray, measure: str,
             output: str = "tidy") -> pd.DataFrame:
    """A [len(names_a), len(names_b)] value matrix as a table in the results schema (:mod:`workbench.results`):
    one row per pair, ``layer`` / ``layer_index`` the layer of ``a`` and its position in its mapping,
    ``layer_b`` / ``layer_index_b`` those of ``b``, ``measure``, ``value``; ``run``, ``step``, ``split`` and
    the CIs NaN. ``output="matrix"``: a DataFrame with index ``layer`` (``a``'s layers) and columns
    ``layer_b``."""
    check_choice(output, OUTPUTS, "output")
    if output == "matrix":
        return pd.DataFrame(values, index=pd.Index(names_a, name="layer"),
                            columns=pd.Index(names_b, name="layer_b"))
    la, lb = len(names_a), len(names_b)
    rows = pd.DataFrame({
        "layer": np.repeat(np.asarray(names_a, dtype=object), lb),
        "layer_index": np.repeat(np.arange(la), lb),
        "measure": measure,
        "value": np.asarray(values, dtype=np.float64).reshape(-1),
        "layer_b": np.tile(np.asarray(names_b, dtype=object), la),
        "layer_index_b": np.tile(np.arange(lb), la),
    })
    return tidy(rows)


def pairwise(a: Any, b: Any, prepare: Callable[[torch.Tensor, str], P], compare: Callable[[P, P], float],
             measure: str, *, output: str = "tidy", symmetric: bool = True, min_rows: int = 2) -> pd.DataFrame:
    """``compare(prepare(a[i]), prepare(b[j]))`` for every layer pair; each layer prepared exactly once.

    ``a``, ``b``: an array or tensor (the one layer ``"features"``), an ``Activations`` or a mapping layer ->
    [N, d]. ``b=None`` compares ``a`` with itself; when the measure is ``symmetric`` only the upper triangle is
    computed and mirrored. Layers may differ in width but must share N (checked, with the odd layers named).
    """
    check_choice(output, OUTPUTS, "output")
    layers_a = layer_dict(a, "a", min_rows=min_rows)
    layers_b = None if b is None else layer_dict(b, "b", min_rows=min_rows)
    check_same_rows(layers_a, layers_b)
    names_a = list(layers_a)
    names_b = names_a if layers_b is None else list(layers_b)
    tensors = same_device(list(layers_a.values()) + ([] if layers_b is None else list(layers_b.values())))
    prep_a = [prepare(t, f"a[{k!r}]") for k, t in zip(names_a, tensors[:len(names_a)])]
    prep_b = prep_a if layers_b is None else [prepare(t, f"b[{k!r}]")
                                              for k, t in zip(names_b, tensors[len(names_a):])]
    values = np.empty((len(prep_a), len(prep_b)))
    for i, pa in enumerate(prep_a):
        for j, pb in enumerate(prep_b):
            if layers_b is None and symmetric and j < i:
                values[i, j] = values[j, i]
            else:
                values[i, j] = float(compare(pa, pb))
    return to_frame(names_a, names_b, values, measure, output)

"""Feature-based transferability scores for every layer, as one tidy table."""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import pandas as pd
import torch

from .._validation import check_layers_and_measures
from .logme import logme
from .scores import hscore, transrate

__all__ = ["transfer_table", "MEASURES"]

MEASURES = ("logme", "hscore", "hscore_shrinkage", "transrate")


def transfer_table(acts: Any, labels: Any, measures: Iterable[str] = MEASURES, *,
                   transrate_eps: float = 1e-4) -> pd.DataFrame:
    """Transferability scores of each layer's features for one labelled target task, tidy.

    Parameters
    ----------
    acts : mapping layer name -> array or tensor [N, d_layer], or a single [N, D] array
        (reported as layer ``"features"``). All layers must hold the same ``N`` examples as ``labels``.
    labels : array [N]
        Integer target class ids (at least two classes).
    measures : iterable of {"logme", "hscore", "hscore_shrinkage", "transrate"}
        :func:`~workbench.transfer.logme`, :func:`~workbench.transfer.hscore` (``shrinkage=False`` /
        ``True``), :func:`~workbench.transfer.transrate`. LEEP and NCE need a source model's outputs
        rather than features; call :func:`~workbench.transfer.leep` / :func:`~workbench.transfer.nce`
        directly.
    transrate_eps : float
        ``eps`` passed to :func:`~workbench.transfer.transrate` (its value depends on the feature scale,
        so layers of different scale are not directly comparable with it).

    Returns
    -------
    pandas.DataFrame with columns ``layer, index, measure, value`` (``index`` = position of the layer in
    ``acts``), one row per layer and measure, in the order given.
    """
    if isinstance(acts, (np.ndarray, torch.Tensor, list, tuple)):
        acts = {"features": acts}
    measures = check_layers_and_measures(acts, measures, MEASURES)
    rows = []
    for idx, (layer, x) in enumerate(acts.items()):
        for m in measures:
            try:
                if m == "logme":
                    value = logme(x, labels)
                elif m == "hscore":
                    value = hscore(x, labels)
                elif m == "hscore_shrinkage":
                    value = hscore(x, labels, shrinkage=True)
                else:
                    value = transrate(x, labels, eps=transrate_eps)
            except ValueError as err:
                raise ValueError(f"layer {layer!r}, {m}: {err}") from err
            rows.append((layer, idx, m, float(value)))
    return pd.DataFrame(rows, columns=["layer", "index", "measure", "value"])

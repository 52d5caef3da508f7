"""Feature-based transferability scores for every layer, as one table in the results schema."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd

from .._validation import Data, Instance, Interval, check_layers_and_measures, declare
from ..activations import as_layers
from ..results import tidy
from ._logme import logme
from ._scores import hscore, transrate

__all__ = ["transfer_table", "MEASURES"]

MEASURES = ("logme", "hscore", "hscore_shrinkage", "transrate")


@declare(x=Data("layers", scale="any"), labels=Data("labels"), measures=Instance(str, Iterable),
         transrate_eps=Interval(float, 0, closed="neither"))
def transfer_table(x: Any, labels: Any, *, measures: Iterable[str] = MEASURES,
                   transrate_eps: float = 1e-4) -> pd.DataFrame:
    """Transferability scores of each layer's features for one labelled target task, in the results schema.

    Parameters
    ----------
    x : array or tensor [N, D] (reported as layer ``"features"``), ``Activations``, or mapping layer name ->
        array or tensor [N, d_layer]
        All layers must hold the same ``N`` examples as ``labels``.
    labels : array [N]
        Integer target class ids (at least two classes).
    measures : iterable of {"logme", "hscore", "hscore_shrinkage", "transrate"}
        :func:`~workbench.transfer._logme`, :func:`~workbench.transfer.hscore` (``shrinkage=False`` /
        ``True``), :func:`~workbench.transfer.transrate`. LEEP and NCE need a source model's outputs
        rather than features; call :func:`~workbench.transfer.leep` / :func:`~workbench.transfer.nce`
        directly.
    transrate_eps : float
        ``eps`` passed to :func:`~workbench.transfer.transrate` (its value depends on the feature scale,
        so layers of different scale are not directly comparable with it).

    Returns
    -------
    pandas.DataFrame in the results schema (:mod:`workbench.results`): one row per layer and measure, in the
    order given, with ``layer``, ``layer_index`` (the position of the layer in ``x``), ``measure`` and
    ``value``; ``run``, ``step``, ``split`` and the CIs NaN.

    Examples
    --------
    >>> import numpy as np
    >>> f = np.array([[-1.1], [-0.9], [0.9], [1.1]])
    >>> transfer_table({"f": f, "2f": 2 * f}, [0, 0, 1, 1], measures=["hscore"]).value.round(4).tolist()   # 1/1.01
    [0.9901, 0.9901]
    """
    acts, _ = as_layers(x, "x")
    measures = check_layers_and_measures(acts, measures, MEASURES)
    rows = []
    for idx, (layer, data) in enumerate(acts.items()):
        for m in measures:
            try:
                if m == "logme":
                    value = logme(data, labels)
                elif m == "hscore":
                    value = hscore(data, labels)
                elif m == "hscore_shrinkage":
                    value = hscore(data, labels, shrinkage=True)
                else:
                    value = transrate(data, labels, eps=transrate_eps)
            except ValueError as err:
                raise ValueError(f"layer {layer!r}, {m}: {err}") from err
            rows.append((layer, idx, m, float(value)))
    return tidy(pd.DataFrame(rows, columns=["layer", "layer_index", "measure", "value"]))

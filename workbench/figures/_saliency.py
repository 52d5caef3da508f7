"""One example and its attribution maps side by side (several runs, checkpoints or methods).

Works on plain arrays, so it needs neither captum nor :mod:`workbench.saliency`: pass the input and the
``attributions`` tensors (``Attribution.attributions``) as numpy arrays or tensors.
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .._validation import Data, Flag, Instance, Interval, declare
from . import _style
from ._builders import attach_data

__all__ = ["saliency_grid", "attribution_map"]

SALIENCY_COLORSCALE = "RdBu_r"  # diverging: negative blue, positive red, 0 white


def _array(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 0 or a.size == 0:
        raise ValueError(f"{name} must be a non-empty array, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} holds NaN or inf values")
    return a


@declare(a=Data("any", example=lambda: np.ones((3, 4, 4)), bad=[np.zeros(0), np.full((2, 2), np.nan)]),
         name=Instance(str))
def attribution_map(a: Any, name: str = "a") -> np.ndarray:
    """An attribution (or input) as a 2-D map for display.

    ``[L]`` → ``[1, L]``; ``[H, W]`` as is; ``[C, H, W]`` (C ≤ 4, channels first) or ``[H, W, C]`` (C ≤ 4)
    → summed over channels (the signed total attribution of a pixel; Simonyan et al. 2014 take the max of
    absolute values instead — pass ``abs(a)`` first for that); ``[C, L]`` signals (C ≤ 4 < L) → ``[C, L]``.
    A leading batch axis of size 1 is dropped. ``name`` names ``a`` in error messages.
    """
    a = _array(a, name)
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 1:
        return a[None, :]
    if a.ndim == 2:
        return a
    if a.ndim == 3:
        if a.shape[0] <= 4 and a.shape[-1] > 4:
            return a.sum(axis=0)
        if a.shape[-1] <= 4:
            return a.sum(axis=-1)
    raise ValueError(f"{name} has shape {a.shape}; expected [L], [H, W], [C, H, W] or [H, W, C] (C <= 4)")


@declare(image=Data("any", example=lambda: np.random.default_rng(0).random((3, 6, 6)),
                    bad=[np.zeros(0), np.full((6, 6), np.nan)]),
         attributions=Data("any", example=lambda: [np.random.default_rng(1).normal(size=(3, 6, 6))],
                           bad=[[], [np.ones((5, 5))], "attributions"]),
         titles=Instance(Iterable, none=True), show_input=Flag(), zmax=Interval(float, none=True),
         title=Instance(str, none=True))
def saliency_grid(image: Any, attributions: Sequence[Any], titles: Sequence[str] | None = None, *,
                  show_input: bool = True, zmax: float | None = None, title: str | None = None) -> go.Figure:
    """The input, then one attribution map per panel, on one shared symmetric colour scale.

    image:        the example (``[H, W]``, ``[C, H, W]``, ``[H, W, C]`` or a 1-D signal ``[L]`` / ``[C, L]``).
    attributions: one array per panel, each shaped like ``image`` (reduced by :func:`attribution_map`).
    titles:       one per attribution (e.g. run names or checkpoints).
    zmax:         colour range ``[-zmax, zmax]``; default the largest ``|attribution|`` over all panels, so
                  panels compare on one scale (a panel's colour saturates nowhere unless ``zmax`` is given).

    Attached data: ``panel``, ``title``, ``row``, ``col``, ``value`` for the input (panel 0, title
    ``"input"``) and every attribution map (after the channel reduction).
    """
    if isinstance(attributions, (np.ndarray,)) or hasattr(attributions, "detach"):
        attributions = list(attributions)
    if not isinstance(attributions, (list, tuple)) or not attributions:
        raise ValueError("attributions must be a non-empty list of arrays (one per panel)")
    maps = [attribution_map(a, f"attributions[{i}]") for i, a in enumerate(attributions)]
    titles = [str(t) for t in titles] if titles is not None else [f"attribution {i}" for i in range(len(maps))]
    if len(titles) != len(maps):
        raise ValueError(f"titles has {len(titles)} entries for {len(maps)} attributions")
    img = attribution_map(image, "image")
    for i, m in enumerate(maps):
        if m.shape != img.shape:
            raise ValueError(f"attributions[{i}] reduces to shape {m.shape} but image to {img.shape}; each "
                             "attribution must be shaped like the input")
    limit = float(zmax) if zmax is not None else max(float(np.abs(m).max()) for m in maps)
    if not limit > 0:
        limit = 1.0  # all-zero attributions: any symmetric range shows them white
    panels = ([("input", img)] if show_input else []) + list(zip(titles, maps))
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[p[0] for p in panels], horizontal_spacing=0.02)
    fig.update_layout(template=_style.TEMPLATE)
    for ann in fig.layout.annotations:
        ann.font.size = None
    rows = []
    for j, (name, m) in enumerate(panels, start=1):
        is_input = show_input and j == 1
        trace = go.Heatmap(z=m, colorscale="gray" if is_input else SALIENCY_COLORSCALE, showscale=False,
                           hovertemplate=f"{name} (%{{y}}, %{{x}}): %{{z:.3g}}<extra></extra>")
        if not is_input:
            trace.update(zmin=-limit, zmax=limit, zmid=0, showscale=(j == len(panels)),
                         colorbar=dict(title=dict(text="attribution")))
        fig.add_trace(trace, row=1, col=j)
        rr, cc = np.meshgrid(np.arange(m.shape[0]), np.arange(m.shape[1]), indexing="ij")
        rows.append(pd.DataFrame({"panel": j - 1 if show_input else j, "title": name, "row": rr.ravel(),
                                  "col": cc.ravel(), "value": m.ravel()}))
    fig.update_xaxes(showticklabels=False, showgrid=False, showline=False, ticks="")
    fig.update_yaxes(showticklabels=False, showgrid=False, showline=False, ticks="", autorange="reversed")
    if img.shape[0] > 1:
        for j in range(1, len(panels) + 1):
            fig.update_yaxes(scaleanchor=f"x{'' if j == 1 else j}", row=1, col=j)
    if title:
        fig.update_layout(title_text=title)
    _style.panel_margin(fig)  # room above the panels for their titles (and on screen the toolbar's band)
    return attach_data(fig, pd.concat(rows, ignore_index=True), "saliency_grid")

"""Attributions against ground-truth object masks (e.g. the ``shapes`` dataset's segmentation masks)."""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import pandas as pd
import torch
from scipy import ndimage

from .._validation import Data, Flag, Interval, Options, declare
from ._examples import N, SIDE, example_attribution, example_image_attributions, example_masks
from ._result import CHANNEL_REDUCTIONS, Attribution, feature_map

# attributions [N, C, H, W] or [N, H, W] (or an Attribution), masks [N, H, W]: the body checks both, naming them
_ATTRIBUTIONS = Data("any", example=example_image_attributions, bad=["attributions", np.zeros((N, SIDE))])
_MASKS = Data("any", example=example_masks, bad=[np.ones((N, SIDE // 2, SIDE // 2)), np.ones((N - 1, SIDE, SIDE))])

__all__ = ["mask_mass", "pointing_game", "localization"]


def _maps_and_masks(attributions: Any, masks: Any, channels: str) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(attributions, Attribution):
        attributions = attributions.attributions
    if not isinstance(attributions, (torch.Tensor, np.ndarray)):
        raise TypeError(f"attributions must be an Attribution, tensor or array, got {type(attributions).__name__}")
    a = torch.as_tensor(attributions).detach().cpu().to(torch.float64)
    if a.dim() == 3:  # [N, H, W]: already one value per pixel
        m = a.abs() if channels == "l1" else a
    elif a.dim() == 4:
        m = feature_map(a, channels)
    else:
        raise ValueError(f"attributions must be [N, C, H, W] or [N, H, W], got shape {tuple(a.shape)}")
    mk = masks.detach().cpu().numpy() if isinstance(masks, torch.Tensor) else np.asarray(masks)
    if mk.ndim == 4 and mk.shape[1] == 1:
        mk = mk[:, 0]
    if mk.shape != tuple(m.shape):
        raise ValueError(f"masks must be [N, H, W] = {tuple(m.shape)} to match the attributions, got {mk.shape}")
    return m.numpy(), mk.astype(bool)


@declare(attributions=_ATTRIBUTIONS, masks=_MASKS)
def mask_mass(attributions: Any, masks: Any) -> np.ndarray:
    """Fraction of absolute attribution inside the object mask, per example.

    ``mass_i = sum_{p in mask_i} sum_c |a_{i,c,p}| / sum_p sum_c |a_{i,c,p}|`` (channels summed as absolute
    values, then pixels inside the mask over all pixels), in [0, 1]; NaN for an all-zero attribution. A
    uniform attribution scores the mask's area fraction. ``attributions``: ``[N, C, H, W]`` or ``[N, H, W]``
    (or an :class:`Attribution`); ``masks``: ``[N, H, W]`` (nonzero = object).
    """
    m, mk = _maps_and_masks(attributions, masks, "l1")
    total = m.reshape(len(m), -1).sum(1)
    inside = (m * mk).reshape(len(m), -1).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, inside / total, np.nan)


@declare(attributions=_ATTRIBUTIONS, masks=_MASKS, tolerance=Interval(float, 0),
         channels=Options(*CHANNEL_REDUCTIONS))
def pointing_game(attributions: Any, masks: Any, tolerance: float = 0.0, channels: str = "l1") -> np.ndarray:
    """Pointing game (Zhang et al. 2016, "Top-down neural attention by excitation backprop"), per example.

    A hit when the pixel with the largest map value ``m = feature_map(a, channels)`` (default ``sum_c |a_c|``;
    the first such pixel on ties) lies inside the mask dilated by ``tolerance`` pixels, i.e. within Euclidean
    distance ``tolerance`` of an object pixel (Zhang et al. used 15 px at 224 px). Returns a bool array;
    examples with an empty mask are misses.
    """
    if not isinstance(tolerance, (int, float)) or tolerance < 0:
        raise ValueError(f"tolerance must be a number of pixels >= 0, got {tolerance!r}")
    m, mk = _maps_and_masks(attributions, masks, channels)
    n, _, w = m.shape
    flat = m.reshape(n, -1).argmax(1)
    r, c = np.divmod(flat, w)
    hits = np.zeros(n, dtype=bool)
    for i in range(n):
        if not mk[i].any():
            continue
        if tolerance == 0:
            hits[i] = mk[i, r[i], c[i]]
        else:  # distance from every pixel to the nearest object pixel
            hits[i] = ndimage.distance_transform_edt(~mk[i])[r[i], c[i]] <= tolerance
    return hits


@declare(attributions=Data("any", example=example_attribution, bad=["attributions", [], [np.zeros((N, SIDE))]]),
         masks=_MASKS, tolerance=Interval(float, 0), per_example=Flag())
def localization(attributions: Attribution | Iterable[Attribution], masks: Any, *, tolerance: float = 0.0,
                 per_example: bool = False) -> pd.DataFrame:
    """Mask mass and pointing-game hit rate per attribution (run/checkpoint), tidy.

    Returns a table in the results schema (:mod:`workbench.results`; ``run``, ``step``, ``layer`` of each
    attribution) with ``measure`` in ``mask_mass`` (mean of :func:`mask_mass`) and ``pointing_game`` (hit rate
    of :func:`pointing_game` at ``tolerance``), one row per attribution and measure, and the extra columns
    ``n`` (examples with a finite value), ``method``, ``model``, ``tolerance``; ``per_example=True`` gives one
    row per example instead (extra columns ``example``, ``target`` in place of ``n``).
    """
    items = [attributions] if isinstance(attributions, Attribution) else list(attributions)
    if not items or not all(isinstance(a, Attribution) for a in items):
        raise TypeError("attributions must be an Attribution or a non-empty list of them "
                        "(e.g. from attribute_checkpoints)")
    rows = []
    for a in items:
        values = {"mask_mass": mask_mass(a, masks),
                  "pointing_game": pointing_game(a, masks, tolerance).astype(np.float64)}
        if per_example:
            df = a.example_frame(values)
        else:
            df = a._schema(pd.DataFrame([{"measure": k, "value": float(np.nanmean(v)), "n": int(np.isfinite(v).sum())}
                                         for k, v in values.items()]))
        df["tolerance"] = tolerance
        rows.append(df)
    return pd.concat(rows, ignore_index=True)

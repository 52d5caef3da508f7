"""The result of :func:`workbench.saliency._attribute`: attributions with their inputs and metadata."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from .._validation import Data, Options, check_choice, declare
from ..results import tidy
from ._examples import N, example_image_attributions

__all__ = ["Attribution", "CHANNEL_REDUCTIONS", "feature_map"]

CHANNEL_REDUCTIONS = ("sum", "l1")
# index columns of Attribution.frame() by (kind, number of dimensions including the example axis)
_INDEX_NAMES = {("image", 4): ["channel", "row", "col"], ("image", 3): ["row", "col"],
                ("signal", 3): ["channel", "position"], ("signal", 2): ["position"],
                ("features", 2): ["feature"], ("tokens", 2): ["position"]}


@declare(attributions=Data("any", example=example_image_attributions, bad=["attributions", torch.zeros(N)]),
         channels=Options(*CHANNEL_REDUCTIONS), kind=Options("image", "signal", "features", "tokens", none=True))
def feature_map(attributions: torch.Tensor, channels: str = "l1", *, kind: str | None = None) -> torch.Tensor:
    """One value per spatial position / token / feature, ``[N, *positions]``.

    ``channels="sum"``: signed sum over the channel axis, ``m = sum_c a_c`` (evidence for the target);
    ``channels="l1"``: sum of absolute values, ``m = sum_c |a_c|`` (importance regardless of sign).
    The channel axis is axis 1 of ``[N, C, H, W]`` and ``[N, C, L]``; ``[N, D]`` and token ``[N, T]``
    attributions have no channel axis (``"l1"`` then takes ``|a|``).
    """
    check_choice(channels, CHANNEL_REDUCTIONS, "channels")
    a = attributions
    if isinstance(a, np.ndarray):
        a = torch.from_numpy(a)
    if not isinstance(a, torch.Tensor):
        raise TypeError(f"attributions must be a tensor or numpy array, got {type(a).__name__}")
    if a.dim() < 2:
        raise ValueError(f"attributions must be [N, ...], got shape {tuple(a.shape)}")
    if channels == "l1":
        a = a.abs()
    if a.dim() >= 3 and kind != "tokens":
        a = a.sum(1)
    return a


@dataclasses.dataclass
class Attribution:
    """Attributions of one model on a batch of inputs, with everything needed to reproduce or compare them.

    Attributes
    ----------
    attributions : Tensor (CPU)
        Same shape as the inputs (``[N, C, H, W]``, ``[N, C, L]``, ``[N, D]``); token inputs: ``[N, T]``
        (per-token attribution = sum over the embedding dimension); layer attributions: the layer's output
        shape (Grad-CAM is upsampled to the input's spatial size unless ``upsample=False``).
    inputs : Tensor (CPU)
        The inputs attributed (token ids for token inputs).
    targets : LongTensor ``[N]`` or None
        Class whose score was attributed per example; None when the output is one score per example.
    method : str
        Registry name (see :data:`workbench.saliency.METHODS`).
    kind : str
        ``"image"``, ``"signal"``, ``"features"`` or ``"tokens"`` (the inputs' layout).
    options : dict
        Options the method ran with (method keyword arguments, ``noise_tunnel``, ``batch_size`` used, ...).
    layer : str or None
        Module path of the attributed layer (layer methods and token inputs).
    baselines : Tensor, float or None
        The reference inputs used (token ids for token inputs).
    extra : dict
        Extra forward inputs by name (``attention_mask`` for tokens), CPU.
    tokens : list of list of str, or None
        Token strings per example (when the model has a tokenizer).
    scores : Tensor ``[N]``
        The target's score ``F(x)`` at the inputs (the output whose attribution this is).
    delta : Tensor ``[N]`` or None
        captum's convergence delta ``sum(attr) - (F(x) - F(baseline))`` where the method provides it.
    model, run, step : str, str or None, int or None
        Model class name and, when attributed from a run store, the run name and checkpoint step.
    output : callable or None
        The ``output=`` function used (kept so faithfulness measures score the same quantity).
    """

    attributions: torch.Tensor
    inputs: torch.Tensor
    targets: torch.Tensor | None
    method: str
    kind: str
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    layer: str | None = None
    baselines: torch.Tensor | float | None = None
    extra: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)
    tokens: list[list[str]] | None = None
    scores: torch.Tensor | None = None
    delta: torch.Tensor | None = None
    model: str = ""
    run: str | None = None
    step: int | None = None
    output: Callable[..., torch.Tensor] | None = dataclasses.field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.attributions)

    def __repr__(self) -> str:
        where = f", run={self.run!r}, step={self.step}" if self.run is not None else ""
        layer = f", layer={self.layer!r}" if self.layer else ""
        return (f"Attribution(method={self.method!r}, kind={self.kind!r}, shape={tuple(self.attributions.shape)}"
                f"{layer}, model={self.model!r}{where})")

    @property
    def input_shaped(self) -> bool:
        """True if there is one attribution per input element (not a layer or token-summed attribution)."""
        return self.layer is None and tuple(self.attributions.shape) == tuple(self.inputs.shape)

    def map(self, channels: str = "l1") -> torch.Tensor:
        """One value per position (pixel, time step, token, feature): see :func:`feature_map`."""
        return feature_map(self.attributions, channels, kind=self.kind)

    def metadata(self) -> dict[str, Any]:
        return {"method": self.method, "model": self.model, "run": self.run, "step": self.step, "layer": self.layer}

    def _schema(self, rows: pd.DataFrame) -> pd.DataFrame:
        """``rows`` (``measure``, ``value`` and extra columns) in the results schema (:mod:`workbench.results`)
        with this attribution's ``run``, ``step`` and ``layer`` (the attributed module's path; NaN for
        input attributions and where unknown; ``layer_index`` NaN), then the extra columns ``method`` and
        ``model``."""
        meta = {k: (np.nan if v is None else v) for k, v in self.metadata().items()}
        return tidy(rows, layer_index=np.nan, **meta)

    def frame(self, channels: str | None = None) -> pd.DataFrame:
        """Tidy table, one row per example x attributed element, in the results schema:
        ``measure`` ``"attribution"``, ``value`` the attribution.

        Extra columns: ``example``, ``target``, the element's index columns (``channel, row, col`` for
        images, ``channel, position`` for signals, ``position, token`` for tokens, ``feature`` for features —
        a conv layer's output is indexed like an image or signal — and ``element`` (flat position) for other
        layer shapes; the channel column is dropped when ``channels`` reduces it, see :func:`feature_map`),
        then ``method, model``.
        """
        a = self.attributions if channels is None else self.map(channels)
        n = len(a)
        a = a.detach().to(torch.float64).cpu().numpy()
        names = _INDEX_NAMES.get((self.kind, a.ndim))
        if names is None:  # e.g. a layer attribution of another shape: one flat index per example
            a = a.reshape(n, -1)
            names = ["element"]
        idx = np.indices(a.shape).reshape(a.ndim, -1)
        df = pd.DataFrame({"example": idx[0]})
        targets = self.targets.numpy() if self.targets is not None else np.full(n, -1)
        df["target"] = targets[idx[0]]
        for i, name in enumerate(names, start=1):
            df[name] = idx[i]
        if self.kind == "tokens" and self.tokens is not None and a.ndim == 2:
            df["token"] = [self.tokens[e][p] for e, p in zip(idx[0], idx[1])]
        df["measure"] = "attribution"
        df["value"] = a.reshape(-1)
        return self._schema(df)

    def per_example(self) -> pd.DataFrame:
        """Per-example reductions in the results schema (as :meth:`frame`), extra columns ``example``,
        ``target``, ``method``, ``model``.

        Measures: ``sum`` (sum a), ``abs_sum`` (sum |a|), ``l2`` (sqrt(sum a^2)), ``max_abs`` (max |a|),
        ``score`` (the attributed output F(x)) and, where available, ``delta`` (captum's convergence delta).
        Sums are accumulated in float64.
        """
        a = self.attributions.detach().to(torch.float64).reshape(len(self), -1)
        cols = {"sum": a.sum(1), "abs_sum": a.abs().sum(1), "l2": a.square().sum(1).sqrt(),
                "max_abs": a.abs().amax(1)}
        if self.scores is not None:
            cols["score"] = self.scores.detach().to(torch.float64)
        if self.delta is not None:
            cols["delta"] = self.delta.detach().to(torch.float64)
        return self.example_frame(cols)

    def example_frame(self, measures: dict[str, Any]) -> pd.DataFrame:
        """Per-example table of ``measures`` (name -> ``[N]`` values) in the results schema:
        ``measure``, ``value``, extra columns ``example``, ``target``, ``method``, ``model``."""
        targets = self.targets.numpy() if self.targets is not None else np.full(len(self), -1)
        rows = [pd.DataFrame({"measure": m,
                              "value": np.asarray(v.cpu() if isinstance(v, torch.Tensor) else v, dtype=np.float64),
                              "example": np.arange(len(self)), "target": targets})
                for m, v in measures.items()]
        return self._schema(pd.concat(rows, ignore_index=True))

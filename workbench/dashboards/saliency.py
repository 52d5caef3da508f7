"""Saliency dashboard: one example, several runs or checkpoints side by side, a method chooser.

Attributions come from ``attribute_fn(model, inputs, method)`` — by default
:func:`workbench.saliency._attribute` (imported when first needed) with the example's label as target —
and are drawn by :func:`workbench.figures.saliency_grid` on one shared colour scale.

>>> dash = SaliencyDashboard({"supervised": run_a, "simclr @ 500": (run_b, 500)}, ds["test"])
>>> dash.select(index=7, method="integrated_gradients", models=["supervised", "simclr @ 500"])
>>> dash.current_frame()                       # the maps drawn, one row per model × pixel
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from .. import figures
from ..results import tidy
from ._base import Dashboard, set_options

__all__ = ["SaliencyDashboard", "DEFAULT_METHODS"]

DEFAULT_METHODS = ("saliency", "input_x_gradient", "integrated_gradients")


def _default_attribute(target: Any) -> Callable[[Any, Any, str], Any]:
    def attribute_fn(model, inputs, method):
        from ..saliency import attribute  # optional: only when no attribute_fn is given

        return attribute(model, inputs, method=method, target=target)
    return attribute_fn


class SaliencyDashboard(Dashboard):
    """Attribution maps of one example under several models.

    models:       ``{name: model}``; a value may be an ``nn.Module``, a :class:`~workbench.runs.Run` (last
                  checkpoint) or ``(Run, step)``; runs are loaded on first use and kept.
    inputs:       ``[N, ...]`` examples (array / tensor) or a :class:`~workbench.data.Split` (inputs + labels).
    attribute_fn: ``attribute_fn(model, inputs[1, ...], method) -> attributions`` (an array shaped like
                  ``inputs`` or an object with ``.attributions``). Default: :func:`workbench.saliency._attribute`
                  with ``target`` = the example's label when labels are known (else None).
    methods:      names offered by the method chooser (passed through to ``attribute_fn``).
    """

    def __init__(self, models: Mapping[str, Any], inputs: Any, *,
                 attribute_fn: Callable[[Any, Any, str], Any] | None = None,
                 methods: Sequence[str] = DEFAULT_METHODS, method: str | None = None, index: int = 0,
                 labels: Any = None, selected: Sequence[str] | None = None, export_path: str = "saliency.svg"):
        self._init_base(export_path)
        W = self._W
        if not isinstance(models, Mapping) or not models:
            raise TypeError("models must be a non-empty mapping {name: model | Run | (Run, step)}")
        if hasattr(inputs, "inputs"):  # a workbench Split
            labels = inputs.labels if labels is None else labels
            inputs = inputs.inputs
        self.inputs = inputs.detach().cpu().numpy() if hasattr(inputs, "detach") else np.asarray(inputs)
        if self.inputs.ndim < 2 or len(self.inputs) == 0:
            raise ValueError(f"inputs must be [N, ...] examples with N >= 1, got shape {self.inputs.shape}")
        self.labels = None if labels is None else np.asarray(labels)
        if self.labels is not None and len(self.labels) != len(self.inputs):
            raise ValueError(f"labels has {len(self.labels)} entries for {len(self.inputs)} inputs")
        if not methods:
            raise ValueError("methods must name at least one attribution method")
        self.models = {str(k): v for k, v in models.items()}
        self.attribute_fn = attribute_fn
        self._loaded: dict[str, Any] = {}
        self._cache: dict[tuple, np.ndarray] = {}

        self.index_w = W.BoundedIntText(value=0, min=0, max=len(self.inputs) - 1, description="example")
        self.method_w = W.Dropdown(description="method")
        self.models_w = W.SelectMultiple(description="models", rows=min(6, len(self.models)))
        with self._hold():
            set_options(self.method_w, list(methods), method if method is not None else methods[0])
            set_options(self.models_w, list(self.models), list(self.models) if selected is None else list(selected))
            self.index_w.value = self._check_index(index)
        self._update()
        for w in [self.index_w, self.method_w, self.models_w]:
            w.observe(self._on_change, names="value")
        self.widget = W.VBox([W.HBox([self.index_w, self.method_w, self.models_w]), self.figure,
                              self.export_row, self.status])

    def _check_index(self, index: int) -> int:
        if not isinstance(index, (int, np.integer)) or not 0 <= index < len(self.inputs):
            raise ValueError(f"index must be an integer in 0..{len(self.inputs) - 1}, got {index!r}")
        return int(index)

    def _model(self, name: str) -> Any:
        if name not in self._loaded:
            m = self.models[name]
            if isinstance(m, tuple) and len(m) == 2 and hasattr(m[0], "load_model"):
                m = m[0].load_model(m[1])
            elif hasattr(m, "load_model"):
                m = m.load_model()
            self._loaded[name] = m
        return self._loaded[name]

    def attributions(self, name: str) -> np.ndarray:
        """The attribution of the current example under model ``name`` (cached per model, example, method)."""
        import torch

        idx, method = self.index_w.value, self.method_w.value
        key = (name, idx, method)
        if key not in self._cache:
            fn = self.attribute_fn
            if fn is None:
                fn = _default_attribute(None if self.labels is None else int(self.labels[idx]))
            x = torch.as_tensor(self.inputs[idx:idx + 1])
            if x.is_floating_point():
                x = x.float()
            out = fn(self._model(name), x, method)
            out = getattr(out, "attributions", out)
            out = out.detach().cpu().numpy() if hasattr(out, "detach") else np.asarray(out)
            self._cache[key] = out[0] if out.shape[:1] == (1,) and out.ndim == self.inputs.ndim else out
        return self._cache[key]

    def _selected_attributions(self) -> dict[str, np.ndarray]:
        """``{model name: attribution}`` of the current example for the chosen models (a failing method is a
        ValueError saying why)."""
        try:
            return {n: self.attributions(n) for n in self.models_w.value}
        except ImportError as e:
            raise ValueError(f"{e} (or pass attribute_fn=...)") from None
        except Exception as e:  # an attribution method failing is shown, not raised in a callback
            raise ValueError(f"attribution failed: {type(e).__name__}: {e}") from None

    def current_frame(self) -> pd.DataFrame:
        """The attribution maps drawn, in the results schema (:mod:`workbench.results`): one row per chosen
        model × map cell, ``run`` the model's name, ``step`` its checkpoint when given as ``(Run, step)``,
        ``measure`` ``"attribution"``, ``value`` the map value after the channel reduction of
        :func:`workbench.figures.attribution_map`; extra columns ``example``, ``method``, ``row``, ``col``."""
        parts = []
        for name, a in self._selected_attributions().items():
            m = figures.attribution_map(a, name)
            rr, cc = np.meshgrid(np.arange(m.shape[0]), np.arange(m.shape[1]), indexing="ij")
            source = self.models[name]
            step = source[1] if isinstance(source, tuple) and len(source) == 2 else np.nan
            parts.append(pd.DataFrame({"run": name, "step": step, "measure": "attribution", "value": m.ravel(),
                                       "example": int(self.index_w.value), "method": self.method_w.value,
                                       "row": rr.ravel(), "col": cc.ravel()}))
        return tidy(pd.concat(parts, ignore_index=True) if parts else [])

    def _build_figure(self) -> go.Figure | None:
        names = list(self.models_w.value)
        if not names:
            self._empty = "choose at least one model"
            return None
        attrs = list(self._selected_attributions().values())
        idx = self.index_w.value
        label = f" (label {self.labels[idx]})" if self.labels is not None else ""
        return figures.saliency_grid(self.inputs[idx], attrs, names,
                                     title=f"example {idx}{label} · {self.method_w.value}")

    def select(self, *, index: int | None = None, method: str | None = None,
               models: Sequence[str] | None = None) -> SaliencyDashboard:
        """Set controls programmatically (None keeps a control's value) and redraw once."""
        with self._hold():
            if index is not None:
                self.index_w.value = self._check_index(index)
            if method is not None:
                self.method_w.value = self._check_choice(method, [v for _l, v in self.method_w.options], "method")
            if models is not None:
                models = [models] if isinstance(models, str) else list(models)
                for m in models:
                    self._check_choice(m, list(self.models), "models")
                self.models_w.value = tuple(models)
        self._update()
        return self

    def __repr__(self) -> str:
        return (f"SaliencyDashboard(index={self.index_w.value}, method={self.method_w.value!r}, "
                f"models={list(self.models_w.value)})")

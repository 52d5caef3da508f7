"""Activation patching between two models of one architecture (two runs, or two checkpoints of one run): run
``model_a`` with one layer's output taken from ``model_b`` on the same inputs and measure how much of the
downstream gap between them moves."""
from __future__ import annotations

import warnings
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from .._validation import Data, Instance, Interval, declare
from ..models import select_layers
from ..probing import bootstrap_ci
from ..results import tidy
from ._common import (MetricFn, MetricRule, batches, check_metric, check_model, eval_mode, forward, hooked,
                      layer_path, main_tensor, metric_name, per_example, replace_main, resolve_device, the_split)
from ._common import task_labels as labels_of_task

__all__ = ["patch", "patch_layers", "patched_outputs"]


def _check_same_architecture(model_a: nn.Module, model_b: nn.Module) -> None:
    """ValueError naming model_b when its parameters and buffers differ from model_a's in name or shape."""
    sa = {k: tuple(v.shape) for k, v in model_a.state_dict().items()}
    sb = {k: tuple(v.shape) for k, v in model_b.state_dict().items()}
    if sa == sb:
        return
    only_a, only_b = sorted(set(sa) - set(sb)), sorted(set(sb) - set(sa))
    shapes = [f"{k}: {sa[k]} vs {sb[k]}" for k in sa if k in sb and sa[k] != sb[k]]
    detail = "; ".join(filter(None, [f"only in model_a: {only_a[:4]}" if only_a else "",
                                     f"only in model_b: {only_b[:4]}" if only_b else "",
                                     f"shapes differ: {shapes[:4]}" if shapes else ""]))
    raise ValueError(f"model_b does not have model_a's architecture ({detail}); patching needs two models of one "
                     "architecture (two runs of one config, or two checkpoints of one run)")


def _capture(store: dict[str, torch.Tensor], name: str) -> Callable:
    def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        store[name] = main_tensor(output, f"layer {name!r} of model_b").detach()
    return hook


def _replace(source: dict[str, torch.Tensor], name: str) -> Callable:
    def hook(_module: nn.Module, _inputs: Any, output: Any) -> Any:
        out = main_tensor(output, f"layer {name!r} of model_a")
        new = source[name]
        if new.shape != out.shape:
            raise ValueError(f"model_b's output at layer {name!r} has shape {tuple(new.shape)} but model_a's has "
                             f"{tuple(out.shape)}; patching needs two models of one architecture")
        return replace_main(output, new.to(device=out.device, dtype=out.dtype))
    return hook


def _run(model_a: nn.Module, model_b: nn.Module, s: Any, paths: dict[str, str], batch_size: int, device: Any,
         on_batch: Callable[[slice, Any, Any, dict[str, Any]], None]) -> None:
    """For each batch: model_b's outputs (capturing every layer of ``paths``), model_a's, and model_a's with each
    layer's output replaced by model_b's — passed to ``on_batch(idx, out_a, out_b, {layer: out_patched})``. Hooks
    removed and modes restored on exit, also on error."""
    dev_a = resolve_device(model_a, device)
    dev_b = resolve_device(model_b, device)
    captured: dict[str, torch.Tensor] = {}
    with eval_mode(model_a, model_b), torch.no_grad():
        for idx in batches(len(s), batch_size):
            captured.clear()
            with _all_hooked(model_b, {name: (path, _capture(captured, name)) for name, path in paths.items()}):
                out_b = forward(model_b, s, idx, dev_b, "model_b")
            missing = [name for name in paths if name not in captured]
            if missing:
                raise ValueError(f"layer {missing[0]!r} did not run in model_b's forward pass; choose another layer")
            out_a = forward(model_a, s, idx, dev_a, "model_a")
            patched = {}
            for name, path in paths.items():
                with hooked(model_a, path, _replace(captured, name)):
                    patched[name] = forward(model_a, s, idx, dev_a, "model_a")
            on_batch(idx, out_a, out_b, patched)


class _all_hooked:
    """Several forward hooks on one model, all removed on exit (also when registering one fails)."""

    def __init__(self, model: nn.Module, hooks: dict[str, tuple[str, Callable]]):
        self.model, self.hooks, self.handles = model, hooks, []

    def __enter__(self) -> None:
        try:
            for path, hook in self.hooks.values():
                self.handles.append(self.model.get_submodule(path).register_forward_hook(hook))
        except BaseException:
            self.__exit__()
            raise

    def __exit__(self, *exc: Any) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


def _prepare(model_a: Any, model_b: Any, data: Any, layers: Any, split: Any, many: bool
             ) -> tuple[Any, dict[str, str]]:
    check_model(model_a, "model_a")
    check_model(model_b, "model_b")
    if many:
        paths = select_layers(model_a, layers)
    else:
        paths = {layers: layer_path(model_a, layers)}
    _check_same_architecture(model_a, model_b)
    for name, path in paths.items():
        try:
            model_b.get_submodule(path)
        except AttributeError:
            raise ValueError(f"layer {name!r} (module {path!r}) is missing from model_b; patching needs two models of "
                             "one architecture") from None
    return the_split(data, split), paths


def _example_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2))


def _example_data() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)


_MODEL_RULES = dict(model_a=Data("any", example=_example_model, bad=["model_a", None]),
                    model_b=Data("any", example=lambda: _example_model(1), bad=["model_b", None]),
                    data=Data("any", example=_example_data, bad=["data"]), split=Instance(str, none=True),
                    batch_size=Interval(int, 1), device=Instance(str, torch.device, int, none=True))


@declare(**_MODEL_RULES, layer=Instance(str, example="0"))
def patched_outputs(model_a: nn.Module, model_b: nn.Module, data: Any, layer: str, *, split: str | None = None,
                    batch_size: int = 256, device: Any = None) -> torch.Tensor:
    """The outputs of ``model_a`` on ``data`` with ``layer``'s output replaced by ``model_b``'s on the same inputs
    (``model_a ← model_b`` at ``layer``), concatenated over batches, on the CPU.

    The two models must share an architecture (state-dict names and shapes; ValueError naming ``model_b``
    otherwise); both run in eval mode, which is restored afterwards, and no hook is left behind.

    >>> import torch
    >>> a = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    >>> b = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    >>> x = torch.randn(5, 3)
    >>> torch.allclose(patched_outputs(a, b, x, "1"), a[2](b[1](b[0](x))))
    True
    """
    s, paths = _prepare(model_a, model_b, data, layer, split, many=False)
    outs: list[torch.Tensor] = []

    def keep(_idx: slice, _a: Any, _b: Any, patched: dict[str, Any]) -> None:
        out = patched[layer]
        out = getattr(out, "logits", out)
        outs.append(main_tensor(out, "model_a").detach().cpu())

    _run(model_a, model_b, s, paths, batch_size, device, keep)
    return torch.cat(outs)


def _gap_tol(ma: float, mb: float) -> float:
    return 1e-9 * (1.0 + abs(ma) + abs(mb))


def _fraction(va: np.ndarray, vb: np.ndarray, vp: np.ndarray, n_boot: int, ci_level: float, seed: int
              ) -> tuple[float, float, float]:
    """``(m(a←b) − m(a)) / (m(b) − m(a))`` of the means, with a paired percentile bootstrap over examples (resamples
    whose gap is ~0 are dropped); NaN (and a warning, given by the caller) when the gap is ~0."""
    ma, mb, mp = va.mean(), vb.mean(), vp.mean()
    if abs(mb - ma) <= _gap_tol(ma, mb):
        return np.nan, np.nan, np.nan
    value = float((mp - ma) / (mb - ma)) + 0.0  # no negative zero
    if n_boot == 0:
        return value, np.nan, np.nan
    rng = np.random.default_rng(seed)
    n = len(va)
    fr = []
    for start in range(0, n_boot, 256):
        idx = rng.integers(0, n, size=(min(256, n_boot - start), n))
        a, b, p = va[idx].mean(1), vb[idx].mean(1), vp[idx].mean(1)
        ok = np.abs(b - a) > 1e-9 * (1.0 + np.abs(a) + np.abs(b))
        fr.append((p[ok] - a[ok]) / (b[ok] - a[ok]))
    fr = np.concatenate(fr)
    if fr.size == 0:
        return value, np.nan, np.nan
    alpha = 1.0 - ci_level
    lo, hi = np.quantile(fr, [alpha / 2, 1 - alpha / 2])
    return value, float(lo), float(hi)


def _patch_table(model_a: Any, model_b: Any, data: Any, layers: Any, labels: Any, metric: Any, split: Any,
                 batch_size: int, n_boot: int, ci_level: float, seed: int, device: Any, run: Any, run_b: Any,
                 many: bool) -> pd.DataFrame:
    check_metric(metric)
    s, paths = _prepare(model_a, model_b, data, layers, split, many)
    n = len(s)
    y = labels_of_task(s, labels, n, "labels") if (labels is not None or isinstance(metric, str)
                                                   or s.labels is not None) else np.zeros(n, dtype=np.int64)
    y_t = torch.as_tensor(y)
    va: list[np.ndarray] = []
    vb: list[np.ndarray] = []
    vp: dict[str, list[np.ndarray]] = {name: [] for name in paths}

    def score(idx: slice, out_a: Any, out_b: Any, patched: dict[str, Any]) -> None:
        va.append(per_example(metric, out_a, y_t[idx].to(_device(out_a)), "model_a"))
        vb.append(per_example(metric, out_b, y_t[idx].to(_device(out_b)), "model_b"))
        for name, out in patched.items():
            vp[name].append(per_example(metric, out, y_t[idx].to(_device(out)), "model_a"))

    _run(model_a, model_b, s, paths, batch_size, device, score)
    a, b = np.concatenate(va), np.concatenate(vb)
    name = metric_name(metric)
    alpha = 1.0 - ci_level

    def ci(v: np.ndarray) -> tuple[float, float]:
        return bootstrap_ci(v, n_boot=n_boot, alpha=alpha, seed=seed) if n_boot else (np.nan, np.nan)

    rows = [{"measure": name, "value": float(v.mean()), "ci_low": ci(v)[0], "ci_high": ci(v)[1], "method": method}
            for method, v in (("model_a", a), ("model_b", b))]
    if abs(b.mean() - a.mean()) <= _gap_tol(a.mean(), b.mean()):
        warnings.warn(f"model_a and model_b have the same {name} ({a.mean():.6g}) on data: the gap m(b) − m(a) is "
                      "~0, so the patched fraction is undefined (NaN)", RuntimeWarning, stacklevel=3)
    for layer, parts in vp.items():
        p = np.concatenate(parts)
        lo, hi = ci(p)
        rows.append({"layer": layer, "measure": name, "value": float(p.mean()), "ci_low": lo, "ci_high": hi,
                     "method": "patched"})
        f, flo, fhi = _fraction(a, b, p, n_boot, ci_level, seed)
        rows.append({"layer": layer, "measure": "patched_fraction", "value": f, "ci_low": flo, "ci_high": fhi,
                     "method": "patched"})
    return tidy(rows, layers=list(paths), run=run, run_b=run_b)


def _device(out: Any) -> torch.device:
    t = getattr(out, "logits", out)
    t = t[0] if isinstance(t, (tuple, list)) else t
    return t.device if isinstance(t, torch.Tensor) else torch.device("cpu")


_TABLE_RULES = dict(labels=Data("any", example=lambda: np.arange(16) % 2), n_boot=Interval(int, 0),
                    ci_level=Interval(float, 0, 1, closed="neither"), seed=Interval(int, 0),
                    run=Instance(str, none=True), run_b=Instance(str, none=True), metric=MetricRule())


@declare(**_MODEL_RULES, **_TABLE_RULES, layer=Instance(str, example="0"))
def patch(model_a: nn.Module, model_b: nn.Module, data: Any, layer: str, *, labels: Any = None,
          metric: str | MetricFn = "loss", split: str | None = None, batch_size: int = 256, n_boot: int = 1000,
          ci_level: float = 0.95, seed: int = 0, device: Any = None, run: str | None = None,
          run_b: str | None = None) -> pd.DataFrame:
    """Activation patching (Vig et al. 2020, "Investigating gender bias in language models using causal mediation
    analysis", NeurIPS; Meng et al. 2022, "Locating and editing factual associations in GPT", NeurIPS — here between
    two models rather than two inputs): how much of the downstream difference between ``model_a`` and ``model_b``
    does ``layer`` carry?

    ``model_a`` is run on ``data`` with ``layer``'s output replaced by ``model_b``'s output on the same inputs
    (``a ← b``). With ``m`` the mean of a per-example metric over the examples,

        ``fraction = (m(a ← b) − m(a)) / (m(b) − m(a))``:

    1 when everything after ``layer`` is shared and ``layer``'s output carries the whole difference, 0 when
    patching it changes nothing. When the gap is ~0 (``|m(b) − m(a)| <= 1e-9 (1 + |m(a)| + |m(b)|)``) the fraction
    is NaN with a RuntimeWarning. Its interval is a paired percentile bootstrap over the examples (resamples with a
    ~0 gap dropped).

    Parameters
    ----------
    model_a, model_b : two models of one architecture (same state-dict names and shapes; ValueError naming
        ``model_b`` otherwise), e.g. two runs' or two checkpoints' ``run.load_model(step)``.
    data : a :class:`~workbench.data.Split`, a Dataset with ``split=``, or an input array.
    layer : probe-point name or module path (ValueError naming ``layer`` when unknown).
    labels : task class ids ``[N]``; default the split's labels.
    metric : ``"loss"`` (per-example cross-entropy of the logits, default), ``"accuracy"`` (0/1 of the argmax), or a
        callable ``metric(outputs, labels) -> [B]`` per-example values of a batch (``labels`` all 0 when neither
        ``labels`` nor the split has any).
    n_boot, ci_level, seed : the bootstrap (``n_boot=0``: NaN bounds).
    run, run_b : names written to the ``run`` and ``run_b`` columns.

    Returns
    -------
    Tidy table: the metric of ``model_a`` and ``model_b`` (``method`` ``model_a`` / ``model_b``, no layer), of the
    patched model (``method="patched"``) and ``patched_fraction`` at ``layer``. Both models' weights, hooks and
    modes are unchanged afterwards, also when the call raises.

    Examples
    --------
    >>> import copy, torch
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> a = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    >>> b = copy.deepcopy(a); _ = b[0].weight.data.mul_(2)      # only the first layer differs
    >>> x, y = torch.randn(64, 4), torch.arange(64) % 3
    >>> t = patch(a, b, x, "0", labels=y, n_boot=0)
    >>> round(float(t.loc[t.measure == "patched_fraction", "value"].iloc[0]), 6)
    1.0
    """
    return _patch_table(model_a, model_b, data, layer, labels, metric, split, batch_size, n_boot, ci_level, seed,
                        device, run, run_b, many=False)


@declare(**_MODEL_RULES, **_TABLE_RULES, layers=Instance(str, Iterable, none=True))
def patch_layers(model_a: nn.Module, model_b: nn.Module, data: Any, layers: str | Sequence[str] | None = None, *,
                 labels: Any = None, metric: str | MetricFn = "loss", split: str | None = None,
                 batch_size: int = 256, n_boot: int = 1000, ci_level: float = 0.95, seed: int = 0,
                 device: Any = None, run: str | None = None, run_b: str | None = None) -> pd.DataFrame:
    """:func:`patch` at every layer of ``layers`` (default: every probe point of ``model_a``; a list or a regex as in
    :func:`workbench.models.select_layers`), in one pass of ``model_b`` per batch: one ``patched_fraction`` row (and
    one patched-metric row) per layer, in forward order, plus the two models' metric — for
    :func:`workbench.figures.patching_curve`.

    >>> import copy, torch
    >>> a = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    >>> b = copy.deepcopy(a); _ = b[2].bias.data.add_(1.0)        # only the head differs
    >>> t = patch_layers(a, b, torch.randn(32, 4), labels=torch.arange(32) % 3, n_boot=0)
    >>> t[t.measure == "patched_fraction"]["value"].round(6).tolist()
    [0.0, 0.0, 1.0]
    """
    return _patch_table(model_a, model_b, data, layers, labels, metric, split, batch_size, n_boot, ci_level, seed,
                        device, run, run_b, many=True)

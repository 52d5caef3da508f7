"""Plumbing shared by the probes of :mod:`probes`, :mod:`controls` and :mod:`mdl` (private).

One place for: validation of labels / continuous targets / eval splits with messages that name the
argument (layer mappings ``{layer: [N, D_layer]}`` or one array come from
:func:`workbench.activations.as_layers`), the training-split standardizer, and the result rows in the one
results schema (:mod:`workbench.results`) with bootstrap confidence intervals.

Standardizer (same convention as :mod:`linear`): training-split mean and population (``ddof=0``)
standard deviation; a feature whose std is ``<= 1e-10 * |mean|`` (constant up to rounding) is only
centered, as ``sklearn.preprocessing.StandardScaler`` does.

Confidence intervals: accuracy intervals are :func:`stats.bootstrap_ci` over the per-example 0/1
correctness of one split. ``R^2`` is not a mean of per-example values, so its interval
(:func:`r2_interval`) resamples (target, prediction) pairs with the same scheme (same generator, same
index draws as :func:`stats.bootstrap_ci` for the same ``seed`` and ``n``) and recomputes ``R^2`` on each
resample; resamples whose targets are all equal (``R^2`` undefined) are dropped. ``n_boot = 0`` gives
NaN bounds (no interval requested).
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping

import numpy as np
import pandas as pd
import torch

from .._validation import Data, Instance, Interval, as_2d_tensor, check_labels
from ..activations import SINGLE_LAYER, as_layers
from ..results import tidy
from ._stats import bootstrap_ci

STD_FLOOR_REL = 1e-10

# Declared rules (:func:`workbench._validation.declare`) of the arguments every probe shares.
#: probes do not depend on the scale of x (features are standardized or compared by angle): extreme magnitudes are
#: rescaled exactly — unless evaluation sets come with it, whose x would need the same factor (then refused)
PROBE_RULES = {"x": Data("layers", scale=lambda a: "invariant" if a.get("evals") is None else "refuse"),
               "labels": Data("labels"), "evals": Instance(Mapping, none=True),
               "n_boot": Interval(int, 0), "ci_level": Interval(float, 0, 1, closed="neither"),
               "seed": Interval(int, 0)}


# ------------------------------------------------------------------------------------ declared examples
def example_labels(n: int, n_classes: int = 2) -> np.ndarray:
    """Valid example labels of the declarations: row ``i`` has class ``i % n_classes``."""
    return np.arange(n) % n_classes


def example_layers(n: int, n_classes: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    """Valid example layers ``"l0"``, ``"l1"`` [n, 6] of the declarations, separating :func:`example_labels`."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)) + 3 * np.eye(n_classes, 6)[example_labels(n, n_classes)]
    return {"l0": x, "l1": np.tanh(x @ rng.normal(size=(6, 6)))}


def example_table(value: float, layer: str = "l0") -> pd.DataFrame:
    """A valid example probe table (one accuracy row) of the declarations."""
    return tidy([{"layer": layer, "measure": "accuracy", "split": "test", "value": value, "target": "label",
                  "method": "linear"}])


# --------------------------------------------------------------------------------------------- checks
def check_number(value: Any, name: str, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False) -> float:
    """A finite real number within the given bounds (bool is rejected)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value}")
    if low is not None and (v < low or (low_open and v == low)):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and (v > high or (high_open and v == high)):
        raise ValueError(f"{name} must be {'<' if high_open else '<='} {high}, got {value}")
    return v


def check_int(value: Any, name: str, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {type(value).__name__}")
    if int(value) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_ci(n_boot: Any, ci_level: Any) -> tuple[int, float]:
    n_boot = check_int(n_boot, "n_boot", minimum=0)
    ci_level = check_number(ci_level, "ci_level", low=0.0, high=1.0, low_open=True, high_open=True)
    return n_boot, ci_level


def check_target_name(target: Any, name: str = "target") -> str:
    if not isinstance(target, str) or not target:
        raise TypeError(f"{name} must be a non-empty string naming what is probed (e.g. 'label'), got {target!r}")
    return target


def to_numpy(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, (np.ndarray, list, tuple)):
        return np.asarray(x)
    raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}")


def regression_targets(y: Any, name: str, *, min_rows: int = 2) -> np.ndarray:
    """Continuous targets as a float64 [N, T] array (1-D input becomes one column)."""
    arr = to_numpy(y, name)
    if arr.ndim not in (1, 2):
        raise ValueError(f"{name} must be 1-D [N] or 2-D [N, n_targets], got shape {tuple(arr.shape)}")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool) or np.iscomplexobj(arr):
        raise TypeError(f"{name} must be real-valued numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64).reshape(len(arr), -1)
    if arr.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} samples, got {arr.shape[0]}")
    if arr.shape[1] == 0:
        raise ValueError(f"{name} has no target columns")
    if not np.all(np.isfinite(arr)):
        rows = np.unique(np.nonzero(~np.isfinite(arr))[0])[:5].tolist()
        raise ValueError(f"{name} contains NaN/Inf (first rows: {rows}); drop or impute those examples")
    return arr


def encode_eval_labels(y: np.ndarray, classes: np.ndarray, name: str) -> np.ndarray:
    unseen = np.setdiff1d(np.unique(y), classes)
    if unseen.size:
        raise ValueError(f"{name} contains label(s) {unseen[:10].tolist()} that never occur in the training "
                         "labels; a probe cannot predict unseen classes - drop those examples or add them to training")
    return np.searchsorted(classes, y)


# ------------------------------------------------------------------------------------------ preparation
@dataclass
class Problem:
    """Validated inputs of one probe call; features are converted layer by layer in :meth:`layers`."""

    x: Mapping[Any, Any]                      # layer -> training representation
    is_mapping: bool
    task: str
    y_train: np.ndarray                       # class index [N] (classification) or float [N, T]
    classes: np.ndarray | None
    evals: list[tuple[str, Mapping[Any, Any], np.ndarray]] = field(default_factory=list)
    x_name: str = "x"

    @property
    def n_classes(self) -> int:
        return 0 if self.classes is None else len(self.classes)

    def layers(self, *, min_rows: int = 2) -> Iterator[tuple[Any, torch.Tensor, dict[str, torch.Tensor]]]:
        """Yield ``(layer, X_train, {split: X_eval})`` as float64 tensors on the training layer's device."""
        n = len(self.y_train)
        for layer, x_raw in self.x.items():
            lname = f"{self.x_name}[{layer!r}]" if self.is_mapping else self.x_name
            x = as_2d_tensor(x_raw, lname, min_rows=min_rows)
            if x.shape[0] != n:
                raise ValueError(f"mismatched number of samples: {lname} has {x.shape[0]} rows but the training "
                                 f"labels have {n}; pass representations and labels of the same examples")
            xe: dict[str, torch.Tensor] = {}
            for split, layers_e, ye in self.evals:
                ename = f"evals[{split!r}] X" + (f"[{layer!r}]" if self.is_mapping else "")
                if layer not in layers_e:
                    raise ValueError(f"evals[{split!r}] X has no layer {layer!r}; give every eval split the "
                                     "training layers")
                t = as_2d_tensor(layers_e[layer], ename).to(x.device)
                if t.shape[1] != x.shape[1]:
                    raise ValueError(f"{ename} has {t.shape[1]} features but {lname} has {x.shape[1]}; use the "
                                     "same layer/representation for training and evaluation")
                if t.shape[0] != len(ye):
                    raise ValueError(f"mismatched number of samples: {ename} has {t.shape[0]} rows, its "
                                     f"labels/targets have {len(ye)}")
                xe[split] = t
            yield layer, x, xe


def prepare(x: Any, labels: Any, evals: Any, *, task: str = "classification", x_name: str = "x",
            labels_name: str = "labels", min_rows: int = 2) -> Problem:
    """Validate labels/targets and the structure of ``evals`` (feature matrices are checked per layer)."""
    if task not in ("classification", "regression"):
        raise ValueError(f"task={task!r} is not one of ['classification', 'regression']")
    layers, is_mapping = as_layers(x, x_name)
    if task == "classification":
        y = check_labels(labels, labels_name, min_classes=2)
        classes = np.unique(y)
        y_train = np.searchsorted(classes, y)
    else:
        classes = None
        y_train = regression_targets(labels, labels_name, min_rows=min_rows)
    if len(y_train) < min_rows:
        raise ValueError(f"{labels_name} needs at least {min_rows} samples, got {len(y_train)}")
    evals = {} if evals is None else evals
    if not isinstance(evals, Mapping):
        raise TypeError(f"evals must be a mapping split name -> (X, y), got {type(evals).__name__}")
    items = []
    for split, pair in evals.items():
        if not isinstance(split, str):
            raise TypeError(f"evals keys must be split names (str), got {split!r}")
        if split in ("train", "loo"):
            raise ValueError(f"evals may not contain a split named {split!r} (reserved for scores on the training "
                             "split)")
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise TypeError(f"evals[{split!r}] must be a pair (X, y)")
        xe, ye = pair
        if isinstance(xe, Mapping) != is_mapping:
            want = f"a mapping of layers, like {x_name}" if is_mapping else f"an array, like {x_name}"
            raise TypeError(f"evals[{split!r}] X must be {want}")
        if task == "classification":
            ye_np = check_labels(ye, f"evals[{split!r}] y", min_classes=1)
            ye_np = encode_eval_labels(ye_np, classes, f"evals[{split!r}] y")
        else:
            ye_np = regression_targets(ye, f"evals[{split!r}] y", min_rows=2)
            if ye_np.shape[1] != y_train.shape[1]:
                raise ValueError(f"evals[{split!r}] y has {ye_np.shape[1]} target column(s) but the training "
                                 f"targets have {y_train.shape[1]}")
        items.append((split, xe if is_mapping else {SINGLE_LAYER: xe}, ye_np))
    return Problem(layers, is_mapping, task, y_train, classes, items, x_name)


def standardizer(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, scale) of the training split; constant features get scale 1 (module docstring)."""
    mean = x.mean(dim=0)
    std = x.std(dim=0, unbiased=False) if x.shape[0] > 1 else torch.zeros_like(mean)
    constant = std <= STD_FLOOR_REL * mean.abs()
    return mean, torch.where(constant | (std == 0), torch.ones_like(std), std)


def stratified_indices(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split example indices into (rest, held) with ``round(fraction * n_c)`` (at least 1) of each class c held."""
    rng = np.random.default_rng(seed)
    held = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        m = max(1, round(fraction * len(idx)))
        if m >= len(idx):
            raise ValueError(f"class {c} has only {len(idx)} training example(s): too few to hold {m} out for "
                             "validation; lower val_fraction or add examples")
        held.append(rng.permutation(idx)[:m])
    held = np.sort(np.concatenate(held))
    rest = np.setdiff1d(np.arange(len(y)), held)
    return rest, held


# ---------------------------------------------------------------------------------------------- scoring
def accuracy_interval(correct: torch.Tensor, n_boot: int, ci_level: float, seed: int) -> tuple[float, float, float]:
    """(accuracy, ci_low, ci_high) from per-example 0/1 correctness."""
    c = correct.detach().double().cpu().numpy()
    acc = float(c.mean())
    if n_boot == 0:
        return acc, math.nan, math.nan
    low, high = bootstrap_ci(c, n_boot=n_boot, alpha=1.0 - ci_level, seed=seed)
    return acc, low, high


def r2_score_np(y: np.ndarray, pred: np.ndarray) -> float:
    sst = float(np.sum((y - y.mean()) ** 2))
    return 1.0 - float(np.sum((y - pred) ** 2)) / sst


def r2_interval(y: np.ndarray, pred: np.ndarray, n_boot: int, ci_level: float, seed: int,
                chunk: int = 256) -> tuple[float, float]:
    """Percentile-bootstrap interval of R^2 over resampled (target, prediction) pairs (module docstring)."""
    if n_boot == 0:
        return math.nan, math.nan
    alpha = 1.0 - ci_level
    rng = np.random.default_rng(seed)
    n = y.size
    values = []
    for start in range(0, n_boot, chunk):
        stop = min(start + chunk, n_boot)
        idx = rng.integers(0, n, size=(stop - start, n))
        yb, pb = y[idx], pred[idx]
        sst = ((yb - yb.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
        sse = ((yb - pb) ** 2).sum(axis=1)
        ok = sst > 0
        values.append(1.0 - sse[ok] / sst[ok])
    vals = np.concatenate(values)
    if vals.size == 0:
        return math.nan, math.nan
    low, high = np.quantile(vals, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def check_regression_split(y: np.ndarray, split: str, names: list[str]) -> None:
    for j, name in enumerate(names):
        col = y[:, j]
        if np.all(col == col[0]):
            raise ValueError(f"target {name!r} is constant on split {split!r}, so R^2 (1 - SSE/SST with SST = 0) "
                             "is undefined; drop that target or evaluate on a split where it varies")


def target_names(target: Any, n_targets: int, default: str) -> list[str]:
    """One name per target column: a str (suffixed ``[j]`` when there are several columns) or a list."""
    if target is None:
        target = default
    if isinstance(target, str):
        if not target:
            raise TypeError("target must be a non-empty string or a list of names")
        return [target] if n_targets == 1 else [f"{target}[{j}]" for j in range(n_targets)]
    names = list(target)
    if len(names) != n_targets or not all(isinstance(t, str) and t for t in names):
        raise ValueError(f"target must be a name or a list of {n_targets} names (one per target column), "
                         f"got {target!r}")
    return names


def classification_rows(layer: Any, method: str, target: str, preds: Mapping[str, torch.Tensor],
                        labels: Mapping[str, Any], params: Mapping[str, Any], n_boot: int, ci_level: float,
                        seed: int) -> list[dict[str, Any]]:
    """One accuracy row per split, with the bootstrap interval over the split's examples."""
    rows = []
    for split, pred in preds.items():
        y = torch.as_tensor(labels[split], device=pred.device)
        acc, low, high = accuracy_interval(pred == y, n_boot, ci_level, seed)
        rows.append({"layer": layer, "measure": "accuracy", "split": split, "value": acc, "ci_low": low,
                     "ci_high": high, "target": target, "method": method, **params})
    return rows


def regression_rows(layer: Any, method: str, names: list[str], preds: Mapping[str, torch.Tensor],
                    targets: Mapping[str, np.ndarray], params: Mapping[str, Any] | list[Mapping[str, Any]],
                    n_boot: int, ci_level: float, seed: int) -> list[dict[str, Any]]:
    """One R^2 row per (split, target column); ``params`` may be per column."""
    rows = []
    for split, pred in preds.items():
        p = pred.detach().cpu().numpy().reshape(len(pred), -1)
        y = targets[split]
        for j, name in enumerate(names):
            r2 = r2_score_np(y[:, j], p[:, j])
            low, high = r2_interval(y[:, j], p[:, j], n_boot, ci_level, seed)
            par = params[j] if isinstance(params, list) else params
            rows.append({"layer": layer, "measure": "r2", "split": split, "value": r2, "ci_low": low,
                         "ci_high": high, "target": name, "method": method, **par})
    return rows


def table(rows: Iterable[Mapping[str, Any]], layers: Iterable[Any]) -> pd.DataFrame:
    """Probe rows → a table in the one results schema; ``layer_index`` is the layer's position in ``layers``
    (the input mapping's order), ``run``/``step`` are NaN (bare representations)."""
    return tidy(list(rows), layers=list(layers))

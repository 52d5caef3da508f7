"""Controls and baselines for probes: control tasks / selectivity, random-init twins, label efficiency, seeds.

* :func:`control_task`, :func:`selectivity` - Hewitt & Liang 2019 ("Designing and interpreting probes with
  control tasks", EMNLP): a probe that reaches high accuracy on a task might just memorise word types;
  its accuracy on a *control task* (random labels attached to input types) measures that capacity, and
  selectivity = task accuracy - control accuracy.
* :func:`random_init_twin`, :func:`with_baseline` - the same architecture, untrained: probes on it give
  the "what the architecture alone provides" baseline.
* :func:`stratified_subsample`, :func:`label_efficiency` - held-out accuracy as a function of the number
  of labelled examples per class.
* :func:`combine_seeds` - mean and interval over repeated runs (seeds).

Probes are named: "linear" (:func:`workbench.probing.linear_probe`), "ridge", "knn", "prototype",
"gaussian_nb", "mlp" (:mod:`workbench.probing._probes`), or given as a callable with the same call shape
``probe(x, labels, evals, **options) -> table`` returning a table in the results schema
(:mod:`workbench.results`) with ``accuracy`` rows per layer and split.

Every table returned here is in the results schema too: ``run, step, layer, layer_index, measure, split,
value, ci_low, ci_high``, then ``target``, ``method`` (the probe's own name, e.g. "logistic") and the
function's extra columns.
"""
from __future__ import annotations

import copy
import inspect
import math
import warnings
from collections.abc import Collection, Iterable
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from .._validation import Data, Instance, Interval, Options, check_labels, declare
from ..activations import as_layers
from ..results import check_tidy, tidy
from ._common import (PROBE_RULES, check_ci, check_int, check_target_name, example_labels, example_layers,
                      example_table, table, to_numpy)
from ._linear import linear_probe
from ._probes import gaussian_nb_probe, knn_probe, mlp_probe, prototype_probe, ridge_probe
from ._stats import bootstrap_ci

__all__ = ["control_task", "selectivity", "random_init_twin", "with_baseline", "stratified_subsample",
           "label_efficiency", "combine_seeds", "PROBES"]

PROBES: dict[str, Callable[..., pd.DataFrame]] = {
    "linear": linear_probe, "ridge": ridge_probe, "knn": knn_probe, "prototype": prototype_probe,
    "gaussian_nb": gaussian_nb_probe, "mlp": mlp_probe,
}
_KEYS = ["layer", "measure", "split", "target", "method"]
# declared rules (workbench._validation.declare): input types [N] (48 examples in the valid example) and the probe
_TYPES = Data("any", example=lambda: np.arange(Data.N) % 12, bad=[np.zeros((Data.N, 2)), np.arange(Data.N - 1)])
_PROBE = Instance(str, Callable, example="linear")


# ------------------------------------------------------------------------------------------ probe runner
def _resolve_probe(probe: Any) -> tuple[str, Callable[..., pd.DataFrame]]:
    if callable(probe):
        return getattr(probe, "__name__", "probe"), probe
    if not isinstance(probe, str):
        raise TypeError(f"probe must be a probe name ({sorted(PROBES)}) or a callable, got {type(probe).__name__}")
    if probe not in PROBES:
        raise ValueError(f"unknown probe {probe!r}; use one of {sorted(PROBES)} or pass a callable")
    return probe, PROBES[probe]


def _probe_options(name: str, options: Mapping[str, Any] | None) -> dict[str, Any]:
    if options is not None and not isinstance(options, Mapping):
        raise TypeError(f"probe_options must be a dict of keyword arguments for the probe, got "
                        f"{type(options).__name__}")
    opts = dict(options or {})
    if name == "linear" and "C" not in opts:
        opts["C"] = 1.0
    return opts


def _run_probe(fn: Callable[..., pd.DataFrame], x: Any, labels: Any, evals: dict, options: dict[str, Any],
               **defaults: Any) -> pd.DataFrame:
    """Call the probe, adding ``defaults`` (seed, n_boot, ...) that it accepts and the options do not set."""
    try:
        params = inspect.signature(fn).parameters
        accepts_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
    except (TypeError, ValueError):  # pragma: no cover - builtins without signature
        params, accepts_kw = {}, True
    kwargs = dict(options)
    for key, value in defaults.items():
        if key not in kwargs and (key in params or accepts_kw):
            kwargs[key] = value
    return check_tidy(fn(x, labels, evals, **kwargs), "the probe's result")


def _probe_label(frame: pd.DataFrame, name: str) -> str:
    """The probe's own name from its table (e.g. "logistic" for "linear"), else the registry name."""
    if "method" in frame.columns and frame["method"].nunique() == 1:
        return str(frame["method"].iloc[0])
    return name


def _accuracies(frame: pd.DataFrame) -> dict[tuple[Any, str], tuple[float, float, float]]:
    """(layer, split) -> (accuracy, ci_low, ci_high) from a probe table (NaN bounds when it has none)."""
    acc = frame[frame["measure"] == "accuracy"]
    if acc.empty:
        raise ValueError("the probe returned no 'accuracy' rows; use a classification probe")
    if acc.duplicated(["layer", "split"]).any():
        raise ValueError("the probe returned several accuracy rows per layer and split (e.g. several k or "
                         "alphas); give a single setting in probe_options (e.g. {'ks': (5,)})")
    out = {}
    for _, r in acc.iterrows():
        out[(r["layer"], r["split"])] = (float(r["value"]), float(r.get("ci_low", math.nan)),
                                         float(r.get("ci_high", math.nan)))
    return out


def _types_array(types: Any, name: str, n: int) -> np.ndarray:
    t = to_numpy(types, name) if not isinstance(types, (list, tuple)) else np.asarray(types)
    if t.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one input type per example), got shape {tuple(t.shape)}")
    if len(t) != n:
        raise ValueError(f"mismatched number of samples: {name} has {len(t)} entries, the labels have {n}")
    if t.dtype.kind == "f" and not np.all(np.isfinite(t)):
        raise ValueError(f"{name} contains NaN/Inf; types must be ids (ints or strings)")
    return t


# ----------------------------------------------------------------------------------------- control tasks
@declare(types=_TYPES, labels=Data("labels"), seed=Interval(int, 0))
def control_task(types: Any, labels: Any, *, seed: int = 0) -> np.ndarray:
    """Control-task labels (Hewitt & Liang 2019, Sec. 2): one fixed random label per input type.

    For every distinct type ``v`` (word type, token id, or any discrete id of the input; sorted with
    ``numpy.unique`` so the assignment does not depend on the example order) a label ``C(v)`` is drawn
    independently from the empirical distribution of ``labels`` (class frequencies over all given
    examples), with ``numpy.random.default_rng(seed)``. Example ``i`` gets ``C(types[i])``. The control
    task is thus a deterministic function of the type with the task's label marginal, but unrelated to
    the task's structure.

    Parameters
    ----------
    types : [N] ints or strings.
    labels : [N] integer class ids of the real task (>= 1 class).
    seed : int

    Returns
    -------
    [N] int64 control labels (values among the classes of ``labels``).

    Examples
    --------
    >>> types = ["the", "cat", "the", "dog", "cat"]
    >>> c = control_task(types, [0, 1, 0, 1, 1])
    >>> bool(c[0] == c[2] and c[1] == c[4]), set(c.tolist()) <= {0, 1}    # one fixed label per type, task's classes
    (True, True)
    """
    seed = check_int(seed, "seed")
    y = check_labels(labels, "labels", min_classes=1)
    t = _types_array(types, "types", len(y))
    uniq, inverse = np.unique(t, return_inverse=True)
    classes, counts = np.unique(y, return_counts=True)
    rng = np.random.default_rng(seed)
    per_type = rng.choice(classes, size=len(uniq), p=counts / counts.sum())
    return per_type[inverse.reshape(-1)].astype(np.int64)


@declare(**PROBE_RULES, types=_TYPES, probe=_PROBE, probe_options=Instance(Mapping, none=True),
         control_seed=Interval(int, 0), target=Instance(str))
def selectivity(x: Any, labels: Any, types: Any, evals: Mapping[str, tuple[Any, Any, Any]] | None = None,
                *, probe: Any = "linear", probe_options: Mapping[str, Any] | None = None, control_seed: int = 0,
                target: str = "label", n_boot: int = 1000, ci_level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Task accuracy, control-task accuracy and selectivity = task - control (Hewitt & Liang 2019, Sec. 3).

    The control labels come from :func:`control_task` applied to the training and evaluation examples
    together (so a type keeps its control label across splits; label frequencies of all splits). The same
    probe (same options) is fitted to the task labels and to the control labels, per layer.

    An evaluation example whose control label never occurs among the training control labels cannot be
    predicted by any probe; such examples are scored as errors: the probe is evaluated on the other
    examples and their accuracy and interval bounds are multiplied by the fraction of scorable examples
    (the interval is then conditional on that fraction). This only happens for rare classes.

    Parameters
    ----------
    x : [N, D], Activations or mapping layer -> [N, D_layer].
    labels : [N] task class ids.
    types : [N] input types (ints or strings), e.g. token ids.
    evals : mapping split name -> (X, y, types).
    probe : probe name or callable (module docstring); "linear" defaults to a fixed ``C=1.0``
        (probes are compared at fixed complexity, as in the paper) unless ``probe_options`` sets ``C``.
    probe_options : keyword arguments for the probe.
    control_seed : seed of the control labels.
    target, n_boot, ci_level, seed : passed to the probe when it accepts them.

    Returns
    -------
    DataFrame in the results schema (``method`` as the probe's own table names it, e.g. "logistic" for
    "linear"; ``layer_index`` the layer's position in ``x``); per layer and split ("train" and the evals)
    three measures: "task_accuracy", "control_accuracy" (with the probe's intervals) and "selectivity"
    (their difference; NaN interval: the two accuracies come from different fits); columns ``target,
    method, control_seed, n_types``.

    Examples
    --------
    >>> import numpy as np
    >>> types = np.repeat(np.arange(6), 10); labels = types % 2       # 6 word types; the task is the type's parity
    >>> t = selectivity(np.eye(6)[types], labels, types)              # features: one-hot of the type
    >>> t.query("split == 'train'").set_index("measure").value.to_dict()    # they memorize any task: selectivity 0
    {'task_accuracy': 1.0, 'control_accuracy': 1.0, 'selectivity': 0.0}
    """
    name, fn = _resolve_probe(probe)
    opts = _probe_options(name, probe_options)
    control_seed = check_int(control_seed, "control_seed")
    n_boot, ci_level = check_ci(n_boot, ci_level)
    target = check_target_name(target)
    y = check_labels(labels, "labels", min_classes=2)
    t = _types_array(types, "types", len(y))
    evals = {} if evals is None else evals
    if not isinstance(evals, Mapping):
        raise TypeError(f"evals must be a mapping split name -> (X, y, types), got {type(evals).__name__}")
    parts = [(None, y, t)]
    for split, triple in evals.items():
        if not (isinstance(triple, (tuple, list)) and len(triple) == 3):
            raise TypeError(f"evals[{split!r}] must be a triple (X, y, types)")
        ye = check_labels(triple[1], f"evals[{split!r}] y", min_classes=1)
        parts.append((split, ye, _types_array(triple[2], f"evals[{split!r}] types", len(ye))))
    all_types = np.concatenate([p[2] for p in parts])
    control = control_task(all_types, np.concatenate([p[1] for p in parts]), seed=control_seed)
    bounds = np.cumsum([0] + [len(p[1]) for p in parts])
    c_train = control[:len(y)]
    if len(np.unique(c_train)) < 2:
        raise ValueError("the control task gave a single class on the training split (too few distinct types); "
                         "use more types or another control_seed")
    task_evals, ctrl_evals, scorable = {}, {}, {}
    seen = np.unique(c_train)
    for i, (split, triple) in enumerate(evals.items(), start=1):
        ce = control[bounds[i]:bounds[i + 1]]
        ok = np.isin(ce, seen)
        scorable[split] = ok.mean()
        task_evals[split] = (triple[0], triple[1])
        if ok.any():
            ctrl_evals[split] = (_subset(triple[0], np.flatnonzero(ok)), ce[ok])
    defaults = dict(seed=seed, n_boot=n_boot, ci_level=ci_level, target=target)
    task_frame = _run_probe(fn, x, y, task_evals, opts, **defaults)
    task = _accuracies(task_frame)
    ctrl = _accuracies(_run_probe(fn, x, c_train, ctrl_evals, opts, **defaults))
    label = _probe_label(task_frame, name)
    layers, _ = as_layers(x, "x")
    rows = []
    for layer in layers:
        for split in ["train", *evals]:
            if (layer, split) not in task:
                continue
            ta = task[(layer, split)]
            frac = 1.0 if split == "train" else scorable[split]
            ca = ctrl.get((layer, split), (0.0, 0.0, 0.0))
            ca = tuple(v * frac for v in ca)
            params = {"target": target, "method": label, "control_seed": control_seed,
                      "n_types": len(np.unique(all_types))}
            for measure, (v, low, high) in (("task_accuracy", ta), ("control_accuracy", ca),
                                            ("selectivity", (ta[0] - ca[0], math.nan, math.nan))):
                rows.append({"layer": layer, "measure": measure, "split": split, "value": v, "ci_low": low,
                             "ci_high": high, **params})
    return table(rows, layers)


def _subset(x: Any, idx: np.ndarray) -> Any:
    def one(a):
        if isinstance(a, torch.Tensor):
            return a[torch.as_tensor(idx, device=a.device)]
        return np.asarray(a)[idx]
    if isinstance(x, Mapping):
        return {k: one(v) for k, v in x.items()}
    return one(x)


# ------------------------------------------------------------------------------------- random-init twin
@declare(model=Data("any", example=lambda: nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)),
                    bad=["model", None]), seed=Interval(int, 0))
def random_init_twin(model: nn.Module, *, seed: int = 0) -> nn.Module:
    """An untrained model with the architecture of ``model``: fresh, seeded initialisation.

    * If ``model.spec`` is a builder spec (every :mod:`workbench.models` builder sets one), the twin is
      ``workbench.models.build(**model.spec)`` - the builder's own initialisation, custom init included.
    * Otherwise ``copy.deepcopy(model)`` is re-initialised on the CPU: every submodule's
      ``reset_parameters()`` (or private ``_reset_parameters()``, e.g. ``nn.MultiheadAttention``), then,
      for Hugging Face models, ``module.apply(module._init_weights)`` (their own init scheme). Parameters
      that no such method touched keep the trained values: a RuntimeWarning lists them.

    The initialisation draws from the global torch generator seeded with ``seed`` inside
    ``torch.random.fork_rng`` (the caller's RNG state is unchanged), so the twin is the same for the same
    seed. It is moved to the device of ``model``'s first parameter (a rebuilt twin also to its floating
    dtype; a deep copy keeps every parameter's dtype) and given the same train/eval mode. ``model``
    itself is not modified.

    Examples
    --------
    >>> import torch
    >>> from workbench.models import build
    >>> model = build("mlp", input_shape=(4,), num_classes=2, hidden=(8,))
    >>> twin, again = random_init_twin(model, seed=1), random_init_twin(model, seed=1)
    >>> [p.shape == q.shape for p, q in zip(model.parameters(), twin.parameters())]     # same architecture
    [True, True, True, True]
    >>> torch.equal(next(twin.parameters()), next(again.parameters()))     # the same seed gives the same twin
    True
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    seed = check_int(seed, "seed")
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None and first.is_floating_point() else None
    spec = getattr(model, "spec", None)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        built = isinstance(spec, dict) and "name" in spec
        if built:
            from ..models import build

            twin = build(spec["name"], dict(spec.get("options") or {}))
            got = {k: tuple(v.shape) for k, v in twin.state_dict().items()}
            want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
            if got != want:
                raise ValueError("rebuilding model.spec gave a different architecture (state_dict keys/shapes "
                                 "differ); fix model.spec or delete it to re-initialise a deep copy instead")
        else:
            twin = copy.deepcopy(model).to("cpu")
            before = {k: p.detach().clone() for k, p in twin.named_parameters()}
            covered: set[int] = set()
            for m in twin.modules():
                reset = getattr(m, "reset_parameters", None) or getattr(m, "_reset_parameters", None)
                if callable(reset):
                    reset()
                    covered.update(id(p) for p in m.parameters(recurse=False))
            for m in twin.modules():
                init = getattr(m, "_init_weights", None)
                if callable(init) and hasattr(m, "config"):
                    m.apply(init)
                    covered.update(id(p) for p in m.parameters())
                    break
            stale = [k for k, p in twin.named_parameters()
                     if id(p) not in covered and torch.equal(p.detach(), before[k])]
            if stale:
                warnings.warn(f"{len(stale)} parameter(s) have no reset_parameters() and keep their trained values "
                              f"in the twin: {stale[:10]}; re-initialise them yourself", RuntimeWarning, stacklevel=2)
    if built and dtype is not None:  # a builder makes float32 weights; match e.g. a bfloat16 model
        twin = twin.to(dtype=dtype)
    twin = twin.to(device)
    twin.train(model.training)
    return twin


@declare(results=Data("any", example=lambda: example_table(0.9), bad=[pd.DataFrame({"value": [0.9]}), "results"]),
         baseline=Data("any", example=lambda: example_table(0.6),
                       bad=[pd.DataFrame({"value": [0.6]}), "baseline"]),
         on=Instance(Iterable))
def with_baseline(results: pd.DataFrame, baseline: pd.DataFrame, *, on: Sequence[str] = ()) -> pd.DataFrame:
    """Attach a baseline (e.g. the random-init twin's scores) to a results table.

    Both are tables in the results schema (:mod:`workbench.results`). Rows are matched on ``layer, method,
    target, split, measure`` plus the columns ``on`` (e.g. ``["k"]`` for kNN tables, ``["n_per_class"]`` for
    label-efficiency tables) - not on ``run`` or ``step``, so the baseline may come from another run (the
    random-init twin) or checkpoint. Returns ``results`` (schema columns and extras unchanged) plus the
    extras ``baseline``, ``baseline_ci_low``, ``baseline_ci_high`` and ``gain = value - baseline``. Every
    row of ``results`` needs exactly one match.

    Examples
    --------
    >>> from workbench.results import tidy
    >>> def table(value): return tidy([{"layer": "block1", "method": "linear", "target": "label", "split": "test",
    ...                                 "measure": "accuracy", "value": value}])
    >>> round(with_baseline(table(0.9), table(0.6)).gain.item(), 6)     # value - baseline
    0.3
    """
    check_tidy(results, "with_baseline(results)")
    check_tidy(baseline, "with_baseline(baseline)")
    keys = [k for k in _KEYS if k in results.columns] + list(on)
    for name, frame in (("results", results), ("baseline", baseline)):
        missing = [k for k in keys + ["value"] if k not in frame.columns]
        if missing:
            raise ValueError(f"{name} lacks column(s) {missing}")
        if frame.duplicated(keys).any():
            raise ValueError(f"{name} has several rows per {keys}; name the distinguishing columns in on=[...]")
    base = baseline[keys + ["value"]].rename(columns={"value": "baseline"})
    base["baseline_ci_low"] = baseline["ci_low"]
    base["baseline_ci_high"] = baseline["ci_high"]
    merged = results.merge(base, on=keys, how="left", validate="one_to_one", indicator=True)
    absent = merged[merged["_merge"] == "left_only"]
    if len(absent):
        raise ValueError(f"{len(absent)} result row(s) have no baseline row, e.g. "
                         f"{absent[keys].head(3).to_dict('records')}; compute the baseline for the same layers, "
                         "methods, targets, splits and measures")
    merged = merged.drop(columns="_merge")
    merged["gain"] = merged["value"] - merged["baseline"]
    return merged


# ----------------------------------------------------------------------------------- label efficiency
@declare(labels=Data("labels", bad=[np.zeros((Data.N, 1), dtype=int), np.full(Data.N, 0.5), "labels"]),
         per_class=Interval(int, 1), seed=Interval(int, 0))
def stratified_subsample(labels: Any, *, per_class: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of ``per_class`` examples of every class, drawn without replacement.

    Each class's examples are permuted with ``numpy.random.default_rng(seed)`` (one generator, classes in
    sorted order) and the first ``per_class`` kept. Raises ValueError if a class has fewer examples.

    Examples
    --------
    >>> import numpy as np
    >>> labels = np.array([0, 0, 0, 1, 1, 1, 1])
    >>> np.bincount(labels[stratified_subsample(labels, per_class=2)]).tolist()    # two of each class
    [2, 2]
    """
    y = check_labels(labels, "labels", min_classes=1)
    per_class = check_int(per_class, "per_class", minimum=1)
    seed = check_int(seed, "seed")
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        if len(idx) < per_class:
            raise ValueError(f"class {c} has only {len(idx)} training example(s), fewer than per_class={per_class}; "
                             "drop that value from per_class or add examples")
        chosen.append(rng.permutation(idx)[:per_class])
    return np.sort(np.concatenate(chosen))


@declare(x=Data("layers", example=lambda: example_layers(100)),
         labels=Data("labels", example=lambda: example_labels(100)),
         evals=Instance(Mapping, example={"test": (example_layers(40, seed=1), example_labels(40))}),
         per_class=Instance(Collection), seeds=Instance(Collection), probe=_PROBE,
         probe_options=Instance(Mapping, none=True), target=Instance(str), n_boot=Interval(int, 0),
         ci_level=Interval(float, 0, 1, closed="neither"))
def label_efficiency(x: Any, labels: Any, evals: Mapping[str, tuple[Any, Any]], *,
                     per_class: Sequence[int | str] = (1, 2, 5, 10, 20, 50, "all"), seeds: Sequence[int] = (0, 1, 2),
                     probe: Any = "linear", probe_options: Mapping[str, Any] | None = None, target: str = "label",
                     n_boot: int = 1000, ci_level: float = 0.95) -> pd.DataFrame:
    """Held-out accuracy against the number of labelled training examples per class.

    For every ``n`` in ``per_class`` and every seed, :func:`stratified_subsample` draws ``n`` training
    examples per class (``"all"``: the whole training split), the probe is fitted on them (with that seed
    where the probe takes one) and scored on ``evals``.

    Returns
    -------
    DataFrame in the results schema (``layer_index``: the layer's position in ``x``) with the columns
    ``target, method, n_per_class`` (int, or "all"), ``n_train``, ``seed``.
    Per-seed rows (``seed`` = the seed; interval = the probe's bootstrap over test examples) are followed by
    one row per (layer, split, n_per_class) with ``seed`` = <NA>: the mean over seeds with a Student-t
    interval over seeds (:func:`combine_seeds`, ``method="t"``; NaN bounds with a single seed) and
    ``n_seeds``. Only the eval splits are reported. ``probe="linear"`` uses ``C=1.0`` unless
    ``probe_options`` sets it (cross-validating C needs several examples per class).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> labels = np.repeat([0, 1], 50); x = rng.normal(size=(100, 4)) + 6 * np.eye(4)[labels]   # two far-apart blobs
    >>> x_test = rng.normal(size=(100, 4)) + 6 * np.eye(4)[labels]
    >>> flipped = np.r_[1 - labels[:20], labels[20:]]     # 20 of 100 test labels wrong: a perfect probe scores 0.8
    >>> t = label_efficiency(x, labels, {"test": (x_test, flipped)}, per_class=[1, 5], seeds=[0, 1],
    ...                      probe="prototype")
    >>> sorted(set(t.value.round(6)))      # 0.8 from one labelled example per class on
    [0.8]
    """
    name, fn = _resolve_probe(probe)
    opts = _probe_options(name, probe_options)
    n_boot, ci_level = check_ci(n_boot, ci_level)
    target = check_target_name(target)
    y = check_labels(labels, "labels", min_classes=2)
    layers, is_mapping = as_layers(x, "x")
    for layer, z in layers.items():
        n_rows = z.shape[0] if hasattr(z, "shape") else len(z)
        if n_rows != len(y):
            lname = f"x[{layer!r}]" if is_mapping else "x"
            raise ValueError(f"mismatched number of samples: {lname} has {n_rows} rows, labels has {len(y)}")
    if not isinstance(evals, Mapping) or not evals:
        raise ValueError("evals must be a non-empty mapping split name -> (X, y): label efficiency is measured "
                         "on held-out data")
    if isinstance(per_class, (str, bytes)) or not hasattr(per_class, "__len__") or len(per_class) == 0:
        raise ValueError("per_class must be a non-empty sequence of positive ints and/or 'all'")
    sizes = []
    smallest = np.unique(y, return_counts=True)[1].min()
    for i, n in enumerate(per_class):
        if isinstance(n, str):
            if n != "all":
                raise ValueError(f"per_class[{i}]={n!r}: use a positive int or 'all'")
        else:
            n = check_int(n, f"per_class[{i}]", minimum=1)
            if n > smallest:
                raise ValueError(f"per_class[{i}]={n} exceeds the size of the smallest class ({smallest} training "
                                 "examples); drop it or add examples")
        sizes.append(n)
    if isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__len__") or len(seeds) == 0:
        raise ValueError("seeds must be a non-empty sequence of ints")
    seeds = [check_int(s, f"seeds[{i}]") for i, s in enumerate(seeds)]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {seeds}")
    per_seed = []
    for n in sizes:
        for s in seeds:
            idx = np.arange(len(y)) if n == "all" else stratified_subsample(y, per_class=n, seed=s)
            frame = _run_probe(fn, _subset(x, idx), y[idx], dict(evals), opts, seed=s, n_boot=n_boot,
                               ci_level=ci_level, target=target)
            for (layer, split), (v, lo, hi) in _accuracies(frame).items():
                if split in evals:
                    per_seed.append({"layer": layer, "measure": "accuracy", "split": split, "value": v, "ci_low": lo,
                                     "ci_high": hi, "target": target, "method": _probe_label(frame, name),
                                     "n_per_class": n, "n_train": len(idx), "seed": s})
    out = table(per_seed, layers)
    summary = combine_seeds(out, on=["n_per_class", "n_train"], method="t", ci_level=ci_level)
    summary["seed"] = pd.NA
    full = pd.concat([out, summary], ignore_index=True)
    full["seed"] = full["seed"].astype("Int64")
    return full


# ------------------------------------------------------------------------------------------------- seeds
@declare(results=Data("any", example=lambda: [example_table(0.8), example_table(0.9)],
                      bad=[example_table(0.8), {0: pd.DataFrame({"value": [0.8]})}, "results"]),
         on=Instance(Iterable), method=Options("t", "bootstrap"), ci_level=Interval(float, 0, 1, closed="neither"),
         n_boot=Interval(int, 0), seed=Interval(int, 0))
def combine_seeds(results: Any, *, on: Sequence[str] = (), method: str = "t", ci_level: float = 0.95,
                  n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Mean over seeds (runs) of per-seed result tables, with an interval over seeds.

    ``results`` is one table in the results schema (:mod:`workbench.results`) with a ``seed`` column, or a
    mapping seed -> table, or a list of tables (seed = position). Rows are grouped by ``layer, measure,
    split, target, method`` (those present), ``step`` when it is given, plus ``on`` - not by ``run``: the
    seeds are usually separate runs; each group must hold one row per seed. Interval over the ``n``
    per-seed values ``v``:

    * ``method="t"`` (default): ``mean +- t_{n-1, (1+ci_level)/2} * sd / sqrt(n)`` with the sample
      standard deviation (``ddof=1``) - the Student-t interval, appropriate for the handful of seeds
      usually run; with one seed the bounds are NaN (no spread can be estimated). Not clipped: for a
      bounded measure (accuracy) it can extend past the bound when the seeds disagree.
    * ``method="bootstrap"``: :func:`stats.bootstrap_ci` over the per-seed values (percentile bootstrap;
      too narrow for few seeds).

    Returns a table in the results schema (``run`` NaN; ``layer_index`` as in ``results``): the group keys,
    ``value`` (mean), ``ci_low``, ``ci_high``, then the extras ``n_seeds`` and ``std`` (ddof=1, NaN for one
    seed).

    Examples
    --------
    >>> from workbench.results import tidy
    >>> def table(value): return tidy([{"layer": "block1", "method": "linear", "target": "label", "split": "test",
    ...                                 "measure": "accuracy", "value": value}])
    >>> t = combine_seeds([table(0.8), table(0.9), table(1.0)])     # mean +- t(0.975, 2) * sd / sqrt(3)
    >>> t[["value", "ci_low", "ci_high"]].round(4).values.tolist()    # 0.9 +- 4.3027 * 0.1 / 1.7321
    [[0.9, 0.6516, 1.1484]]
    """
    from scipy import stats as sps

    if method not in ("t", "bootstrap"):
        raise ValueError(f"method={method!r} is not one of ['t', 'bootstrap']")
    n_boot_checked, ci_level = check_ci(n_boot, ci_level)
    if method == "bootstrap" and n_boot_checked == 0:
        raise ValueError("method='bootstrap' needs n_boot >= 1")
    if isinstance(results, pd.DataFrame):
        if "seed" not in results.columns:
            raise ValueError("results has no 'seed' column; pass a mapping seed -> table or a list of tables")
        frame = results
    elif isinstance(results, Mapping):
        frame = pd.concat([f.assign(seed=s) for s, f in results.items()], ignore_index=True)
    elif isinstance(results, (list, tuple)):
        frame = pd.concat([f.assign(seed=s) for s, f in enumerate(results)], ignore_index=True)
    else:
        raise TypeError(f"results must be a DataFrame with a 'seed' column, a mapping or a list of tables, got "
                        f"{type(results).__name__}")
    check_tidy(frame, "combine_seeds(results)")
    if frame.empty:
        raise ValueError("results is empty")
    keys = [k for k in _KEYS if k in frame.columns] + (["step"] if frame["step"].notna().any() else []) + list(on)
    missing = [k for k in keys + ["value"] if k not in frame.columns]
    if missing:
        raise ValueError(f"results lacks column(s) {missing}")
    if frame.duplicated(keys + ["seed"]).any():
        raise ValueError(f"several rows per seed share {keys}; name the distinguishing columns in on=[...]")
    if not np.all(np.isfinite(frame["value"].astype(float))):
        raise ValueError("results has NaN/Inf values; drop those rows before combining")
    with_index = bool(frame["layer_index"].notna().all())
    rows = []
    for key, group in frame.groupby(keys, sort=False, dropna=False):
        v = group["value"].to_numpy(dtype=np.float64)
        n = len(v)
        mean = float(v.mean())
        sd = float(v.std(ddof=1)) if n > 1 else math.nan
        if n == 1:
            low = high = math.nan
        elif method == "t":
            half = float(sps.t.ppf(0.5 + ci_level / 2, n - 1)) * sd / math.sqrt(n)
            low, high = mean - half, mean + half
        else:
            low, high = bootstrap_ci(v, n_boot=n_boot_checked, alpha=1 - ci_level, seed=seed)
        index = {"layer_index": group["layer_index"].iloc[0]} if with_index else {}
        rows.append({**dict(zip(keys, key if isinstance(key, tuple) else (key,))), **index, "value": mean,
                     "ci_low": low, "ci_high": high, "n_seeds": n, "std": sd})
    return tidy(rows)

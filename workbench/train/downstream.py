"""Downstream evaluation of any checkpoint of a run: frozen probes, fine-tuning, label fractions, ID vs OOD,
and a dense (per-pixel) probe on the ``shapes`` masks.

``evaluate(run, task)`` returns a table in the results schema (:mod:`workbench.results`) with the extra
columns ``task``, ``method``, ``label_fraction``, and stores it with the run (``downstream.csv`` in the run
directory, columns :data:`DOWNSTREAM_COLUMNS`, merged by key, written atomically), so ``run.downstream()``
sees every evaluation ever made.

Methods
-------
``linear``    L2 logistic probe on frozen features (:func:`workbench.probing.linear_probe`, fixed ``C``
              or cross-validated), features standardized on the training rows.
``knn``       cosine k-nearest-neighbour vote on frozen features (k = 20; :func:`workbench.probing.knn_probe`).
``finetune``  the whole network plus a fresh linear head on its representation, trained with the settings
              ``finetune=`` (:data:`FINETUNE_DEFAULTS`: AdamW, 200 steps, batch 128, lr 1e-4 for the backbone
              and 1e-3 for the head, no layer-wise decay); with ``layer_decay`` < 1 the backbone's layers get
              the learning rates of :func:`layer_decay_groups`.
``dense``     per-pixel linear probe for ``shapes``: the feature map of ``dense_layer`` (a CNN stage, or a ViT
              block's patch tokens laid out on the patch grid; default a middle stage / block) is upsampled
              (bilinear) to the image size; each pixel is labelled background (0) or the shape class + 1
              inside the object mask; an L2 logistic probe (``C = 1``, standardized features; the objective
              of ``sklearn.linear_model.LogisticRegression(C=1)``, solved by :func:`_fit_logistic`) is fit on
              ``dense_pixels`` sampled training pixels and scored by pixel accuracy and mean IoU over the
              classes present in the ground truth or the prediction, on every pixel of each split.

Label fractions subsample the downstream training split per class (``max(1, round(f · n_c))``, seeded);
the evaluation splits are always complete. Label counts (``label_counts=[20, 100]``) take exactly ``n`` labelled
examples instead, stratified: class ``c`` gets ``n_c`` of them, ``n · p_c`` rounded by largest remainder (``p_c``
its share of the training split, at least one each), the first ``n_c`` of one seeded permutation per class —
so a smaller set lies inside a larger one whenever no class's count drops (largest remainder nearly always
grows every count with ``n``). The permutation is drawn with ``numpy.random.default_rng([seed, run seed,
0x1ABE1])``: the replicate seeds of a study see independent labelled sets, the conditions of one seed the same.

``layer="input"`` probes the raw inputs (flattened; no model): the baseline every representation is compared
with. ``layer`` may list several probe points, e.g. ``["fc2", "input"]``.
"""
from __future__ import annotations

import copy
import io
from types import MappingProxyType
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from .. import data as wb_data
from .._validation import Data, Instance, Interval, check_choice, check_fraction, declare
from ..results import tidy
from ..runs import Run

__all__ = ["evaluate", "finetune", "METHODS", "DOWNSTREAM_COLUMNS", "INPUT_LAYER", "FINETUNE_DEFAULTS",
           "finetune_settings", "layer_decay_groups", "backbone_parameters"]

METHODS = ("linear", "knn", "finetune", "dense")
#: columns of a run's stored ``downstream.csv`` (:meth:`workbench.runs.Run.downstream` reads it in the results schema)
DOWNSTREAM_COLUMNS = ["step", "task", "method", "label_fraction", "label_count", "layer", "layer_index", "split",
                      "measure", "value"]
_KEY = ["step", "task", "method", "label_fraction", "label_count", "layer", "split", "measure"]
#: the ``layer`` of a frozen probe on the raw inputs (no model; ``layer_index`` -1)
INPUT_LAYER = "input"


def _resolve_task(run: Run, task: Any) -> tuple[str, wb_data.Dataset, str | None]:
    """(task name, dataset, target factor or None for the class label)."""
    cfg = run.config
    if task is None or (isinstance(task, str) and task == "label"):
        return "label", wb_data.load(cfg.dataset, **dict(cfg.dataset_options)), None
    if isinstance(task, str):
        ds = wb_data.load(cfg.dataset, **dict(cfg.dataset_options))
        if task in ds["train"].factors:
            if ds.factor_info.get(task, {}).get("kind") != "categorical":
                raise ValueError(f"task={task!r} is a continuous factor; downstream evaluation classifies — "
                                 "use a categorical factor or the probing suite's regression probes")
            return task, ds, task
        raise ValueError(f"task={task!r} is neither 'label' nor a factor of {cfg.dataset!r} "
                         f"({sorted(ds['train'].factors)}); pass a dict {{'dataset': ..., 'options': ..., "
                         "'target': ...}} for another dataset")
    if isinstance(task, Mapping):
        unknown = set(task) - {"dataset", "options", "target", "name"}
        if unknown or "dataset" not in task:
            raise ValueError(f"task dict needs 'dataset' and may have 'options', 'target', 'name'; got {sorted(task)}")
        ds = wb_data.load(task["dataset"], **dict(task.get("options", {})))
        target = task.get("target")
        name = task.get("name") or (task["dataset"] + (f":{target}" if target else ""))
        return name, ds, target
    raise TypeError(f"task must be None, a factor name or a dict, got {type(task).__name__}")


def _labels(split: wb_data.Split, target: str | None, name: str) -> np.ndarray:
    y = split.labels if target is None else split.factors.get(target)
    if y is None:
        raise ValueError(f"split {name!r} has no {'labels' if target is None else f'factor {target!r}'}")
    return np.asarray(y)


class _Count(int):
    """An absolute label count among the label sets of :func:`evaluate` (``label_fraction`` NaN); ``draw`` is the
    run's seed, which seeds its subset together with evaluate's ``seed``."""

    draw: int = 0


def _count_index(y: np.ndarray, n: int, seed: int, draw: int) -> np.ndarray:
    """Exactly ``n`` rows, stratified by largest remainder (at least one per class), nested in ``n`` (module
    docstring)."""
    classes, counts = np.unique(y, return_counts=True)
    if n < len(classes):
        raise ValueError(f"label_counts: {n} labels cannot cover the {len(classes)} classes of the task; give at "
                         f"least {len(classes)} (one per class)")
    if n > len(y):
        raise ValueError(f"label_counts: {n} labels asked, but the task's training split has {len(y)}; give at most "
                         f"{len(y)} or a larger labelled split")
    share = n * counts / counts.sum()
    take = np.maximum(np.floor(share).astype(int), 1)
    while take.sum() > n:  # the at-least-one floor overshot: take back from the classes most above their share
        take[np.argmax(np.where(take > 1, take - share, -np.inf))] -= 1
    order = np.argsort(-(share - np.floor(share)), kind="stable")
    for c in order[:n - take.sum()]:
        take[c] += 1
    rng = np.random.default_rng([seed, draw, 0x1ABE1])
    keep = [rng.permutation(np.flatnonzero(y == c))[:k] for c, k in zip(classes, take)]
    return np.sort(np.concatenate(keep))


def _fraction_index(y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    if isinstance(fraction, _Count):
        return _count_index(y, int(fraction), seed, fraction.draw)
    if fraction >= 1.0:
        return np.arange(len(y))
    rng = np.random.default_rng([seed, 0xF4AC])
    keep = [rng.choice(idx, size=max(1, round(fraction * len(idx))), replace=False)
            for idx in (np.flatnonzero(y == c) for c in np.unique(y))]
    return np.sort(np.concatenate(keep))


def _default_layer(model: nn.Module) -> str:
    from ..models import probe_points

    names = list(probe_points(model))
    return names[-2] if len(names) >= 2 else names[-1]


def evaluate(run: Run, task: Any = None, *, step: int | str = "final", methods: Iterable[str] = ("linear",),
             label_fractions: Sequence[float] = (1.0,), label_counts: Sequence[int] = (),
             splits: Sequence[str] | None = None, layer: str | Sequence[str] | None = None, C: float | None = 1.0,
             finetune_steps: int | None = None,
             finetune: Mapping[str, Any] | None = None, dense_layer: str | None = None, dense_pixels: int = 20000,
             seed: int = 0, device: str | torch.device | None = None, cache: bool = True,
             head: bool | None = None) -> pd.DataFrame:
    """Evaluate checkpoint ``step`` of ``run`` on a downstream ``task``; store and return a tidy table.

    Parameters
    ----------
    run : a finished (or partially trained) :class:`~workbench.runs.Run`.
    task : None / "label" (the run's dataset and class), a categorical factor name of the run's dataset, or
        ``{"dataset": name, "options": {...}, "target": factor-or-None, "name": display}`` for another dataset.
    step : checkpoint step or "final".
    methods : subset of :data:`METHODS` (module docstring).
    label_fractions : fractions of the downstream training split, each in (0, 1] (may be empty with label_counts).
    label_counts : absolute numbers of labelled training examples, each at least the number of classes and at
        most the training split's size (stratified, nested, seeded by ``seed`` and the run's seed: module
        docstring); their rows have ``label_fraction`` NaN and ``label_count`` = n.
    splits : evaluation splits (default: every non-train split of the task's dataset, e.g. test and ood).
    layer : probe point(s) for the frozen probes (default: the one feeding the head, e.g. "pool"); ``"input"``
        (:data:`INPUT_LAYER`) probes the raw inputs, flattened — the no-model baseline.
    C : inverse L2 strength of the linear probe (None → cross-validated).
    finetune : fine-tuning settings for method ``finetune`` (:data:`FINETUNE_DEFAULTS`: optimizer, lr, head_lr,
        steps, batch_size, weight_decay, momentum, layer_decay, schedule), checked by :func:`finetune_settings`.
    finetune_steps : the old name of ``finetune={"steps": n}`` (kept; default 200 steps).
    dense_layer, dense_pixels, seed : see the module docstring.
    head : the frozen probes read the backbone *and* the objective's trained head (``run.load_model(step,
        head=True)``), so ``layer`` may name ``"projector"``, ``"projector.fc1"`` … (default layer: the head's
        output). None (default): only when ``layer`` names a layer the backbone lacks. Fine-tuning and the dense
        probe always use the backbone.

    Returns
    -------
    DataFrame in the results schema (``run`` = the run's display name, ``step``, ``layer``, ``layer_index`` =
    the probe point's position in the model (NaN for ``"embed"``, the fine-tuned representation; -1 for
    ``"input"``), ``measure``, ``split``, ``value``) with the extra columns ``task``, ``method``,
    ``label_fraction``, ``label_count`` (with ``label_counts`` only; NaN for fraction rows); one row per
    (method, label set, layer, split, measure); measures "accuracy" (and "loss" for linear) or
    "pixel_accuracy" and "miou" for dense.
    """
    from ..activations import extract
    from ..models import probe_points
    from .trainer import auto_device

    methods = list(methods)
    if not methods:
        raise ValueError(f"methods is empty; choose from {list(METHODS)}")
    for m in methods:
        check_choice(m, METHODS, "methods")
    fractions: list[float] = [check_fraction(f, "label_fractions") for f in label_fractions]
    ft_settings = finetune_settings(finetune, steps=finetune_steps)
    if any(f <= 0 for f in fractions):
        raise ValueError("label_fractions must be in (0, 1]")
    fractions += _counts(label_counts, run.config.seed)
    if not fractions:
        raise ValueError("label_fractions and label_counts are both empty; give e.g. label_fractions=[1.0] or "
                         "label_counts=[20, 100]")
    task_name, ds, target = _resolve_task(run, task)
    splits = [s for s in ds if s != "train"] if splits is None else list(splits)
    for s in splits:
        if s not in ds:
            raise ValueError(f"split {s!r} not in the task's dataset (splits: {list(ds)})")
    device = auto_device(device)
    step_n = run.resolve_step(step)
    model = run.load_model(step_n, device=str(device))
    probed = _probe_model(run, step_n, device, model, layer, head)  # the backbone, or backbone + head
    layers = _layers(probed.head_name if layer is None and probed is not model else layer, probed)
    cache_dir = run.store.root / "activations" if cache else None

    y_train_full = _labels(ds["train"], target, "train")
    rows: list[dict[str, Any]] = []
    order = {name: i for i, name in enumerate(probe_points(probed))} | {INPUT_LAYER: -1}

    def add(method: str, frac: float, lay: str, split: str, measure: str, value: float) -> None:
        count = int(frac) if isinstance(frac, _Count) else None
        rows.append({"step": step_n, "task": task_name, "method": method,
                     "label_fraction": None if count is not None else frac, "label_count": count, "layer": lay,
                     "layer_index": order.get(lay), "split": split, "measure": measure, "value": float(value)})

    frozen = [m for m in methods if m in ("linear", "knn")]
    for layer in layers if frozen else ():
        feats = {s: _raw_inputs(ds[s], s) if layer == INPUT_LAYER else
                 extract(probed, ds[s], layers=[layer], cache=cache_dir)[layer] for s in ["train", *splits]}
        for frac in fractions:
            idx = _fraction_index(y_train_full, frac, seed)
            xtr, ytr = feats["train"][idx], y_train_full[idx]
            evals = {s: (feats[s], _labels(ds[s], target, s)) for s in splits}
            if "linear" in frozen:
                from ..probing import linear_probe

                kwargs = {"C": C} if C is not None else {"folds": min(5, int(np.bincount(ytr).min()))}
                res = linear_probe(xtr, ytr, evals=evals, **kwargs)
                for r in res[res.split != "train"].itertuples():
                    add("linear", frac, layer, r.split, r.measure, r.value)
            if "knn" in frozen:
                from ..probing import knn_probe

                res = knn_probe(xtr, ytr, evals=evals, ks=(min(20, len(ytr) - 1),), n_boot=0)
                for r in res[(res.split != "train") & (res.measure == "accuracy")].itertuples():
                    add("knn", frac, layer, r.split, r.measure, r.value)
    if "finetune" in methods:
        for frac in fractions:
            idx = _fraction_index(y_train_full, frac, seed)
            for split, acc in _finetune(model, ds, target, idx, splits, ft_settings, seed, device).items():
                add("finetune", frac, "embed", split, "accuracy", acc)
    if "dense" in methods:
        if ds["train"].masks is None:
            raise ValueError(f"method 'dense' needs per-pixel masks; dataset {ds.name!r} has none (use 'shapes')")
        dl = dense_layer or _dense_default(model)
        for frac in fractions:
            idx = _fraction_index(y_train_full, frac, seed)
            for split, scores in _dense_probe(model, ds, idx, splits, dl, dense_pixels, seed, device).items():
                for measure, value in scores.items():
                    add("dense", frac, dl, split, measure, value)
    table = pd.DataFrame(rows, columns=DOWNSTREAM_COLUMNS).astype({"label_fraction": float, "label_count": float})
    _store(run, table)
    return tidy(table if label_counts else table.drop(columns="label_count"), run=run.name)


def _counts(label_counts: Sequence[int], draw: int) -> list[_Count]:
    """``label_counts`` checked, as :class:`_Count` label sets seeded by ``draw`` (the run's seed)."""
    if isinstance(label_counts, (str, bytes)) or not isinstance(label_counts, (list, tuple, range, np.ndarray)):
        raise TypeError(f"label_counts must be a list of integers, e.g. [20, 100], got {type(label_counts).__name__}")
    out = []
    for n in label_counts:
        if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)):
            raise TypeError(f"label_counts must hold integers (numbers of labelled examples), e.g. [20, 100], "
                            f"got {n!r}")
        if n < 2:
            raise ValueError(f"label_counts must hold integers >= 2 (a probe needs two classes), got {n}")
        c = _Count(int(n))
        c.draw = int(draw)
        out.append(c)
    if len(set(out)) < len(out):
        raise ValueError(f"label_counts repeats a value: {list(label_counts)}")
    return out


def _probe_model(run: Run, step: int, device: Any, model: nn.Module, layer: Any, head: bool | None) -> nn.Module:
    """The model ``evaluate``'s frozen probes read: ``model``, or with ``head`` (True; None: when ``layer`` names a
    layer that ``model`` lacks and the run's objective has a head) the backbone and its head."""
    from ..models import probe_points
    from ..models.heads import HEADS

    if head is None:
        wanted = [layer] if isinstance(layer, str) else list(layer) if isinstance(layer, (list, tuple)) else []
        known = set(probe_points(model)) | {n for n, _ in model.named_modules()} | {INPUT_LAYER}
        head = run.config.objective in HEADS and any(isinstance(w, str) and w not in known for w in wanted)
    elif not isinstance(head, bool):
        raise TypeError(f"head must be True, False or None (read the objective's head when layer names it), got "
                        f"{head!r}")
    return run.load_model(step, device=str(device), head=True) if head else model


def _layers(layer: Any, model: nn.Module) -> list[str]:
    """``evaluate``'s ``layer`` as a list of probe points (``"input"`` allowed)."""
    if layer is None:
        return [_default_layer(model)]
    names = [layer] if isinstance(layer, str) else layer
    if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, str) for n in names):
        raise TypeError(f"layer must be a probe point (str), 'input', or a non-empty list of them, got {layer!r}")
    if len(set(names)) < len(names):
        raise ValueError(f"layer repeats a probe point: {list(names)}")
    return list(names)


def _raw_inputs(split: wb_data.Split, name: str) -> torch.Tensor:
    """A split's inputs flattened to ``[N, D]`` float32: the features of the ``layer="input"`` probe."""
    x = torch.as_tensor(np.asarray(split.inputs))
    if not torch.is_floating_point(x):
        raise ValueError(f"layer='input' probes raw float inputs; split {name!r} holds {x.dtype} (token ids?) — "
                         "probe a layer of the model instead")
    return x.reshape(len(x), -1).float()


def _store(run: Run, table: pd.DataFrame) -> None:
    with run.lock():
        old = run.downstream()
        if len(old):
            old = old.reindex(columns=DOWNSTREAM_COLUMNS)  # tables stored before label_count: NaN there
            merged = pd.concat([old, table], ignore_index=True).drop_duplicates(_KEY, keep="last")
        else:
            merged = table
        buf = io.StringIO()
        merged.to_csv(buf, index=False)
        run.write_file("downstream.csv", buf.getvalue().encode())  # checksummed in the run's manifest


#: fine-tuning settings (``evaluate(..., finetune={...})``; :func:`finetune_settings` checks them)
FINETUNE_DEFAULTS: Mapping[str, Any] = MappingProxyType({
    "optimizer": "adamw",   # "adamw" | "adam" | "sgd" (torch.optim)
    "lr": 1e-4,             # backbone learning rate (its top layer's, with layer_decay < 1)
    "head_lr": 1e-3,        # learning rate of the fresh linear head
    "steps": 200,           # optimizer steps
    "batch_size": 128,      # examples per step (at most the labelled training rows)
    "weight_decay": 0.01,   # decoupled for adamw, L2 for adam and sgd (torch's AdamW default)
    "momentum": 0.9,        # sgd only
    "layer_decay": 1.0,     # lr of backbone layer l = lr * layer_decay ** (L - l) (layer_decay_groups)
    "schedule": "constant",  # "constant" | "cosine" (to 0 over the steps)
})  # read-only: change settings per call with evaluate(finetune={...})
_OPTIMIZERS = ("adamw", "adam", "sgd")
_SCHEDULES = ("constant", "cosine")


def finetune_settings(finetune: Mapping[str, Any] | None = None, *, steps: int | None = None) -> dict[str, Any]:
    """The fine-tuning settings: :data:`FINETUNE_DEFAULTS` updated by ``finetune``, checked.

    Parameters
    ----------
    finetune : dict of settings to change (keys of :data:`FINETUNE_DEFAULTS`), or None for the defaults.
    steps : the deprecated ``evaluate(finetune_steps=...)``; same as ``finetune={"steps": ...}`` (giving both is
        an error).

    Raises ``TypeError``/``ValueError`` naming the key (``finetune['lr']``) and what it accepts.

    >>> finetune_settings({"lr": 3e-4, "layer_decay": 0.75})["layer_decay"]
    0.75
    """
    from .._validation import check_positive_int

    if finetune is None:
        finetune = {}
    if not isinstance(finetune, Mapping):
        raise TypeError(f"finetune must be a dict of fine-tuning settings (keys {list(FINETUNE_DEFAULTS)}), got "
                        f"{type(finetune).__name__}")
    unknown = sorted(set(finetune) - set(FINETUNE_DEFAULTS), key=str)
    if unknown:
        raise ValueError(f"finetune has unknown key(s) {unknown}; accepted: {list(FINETUNE_DEFAULTS)}")
    out = {**FINETUNE_DEFAULTS, **finetune}
    if steps is not None:
        if "steps" in finetune:
            raise ValueError("give the fine-tuning steps once: finetune={'steps': ...} (finetune_steps= is its old "
                             "name)")
        out["steps"] = steps
    for key in ("optimizer", "schedule"):
        check_choice(out[key], _OPTIMIZERS if key == "optimizer" else _SCHEDULES, f"finetune[{key!r}]")
    for key in ("steps", "batch_size"):
        what = "finetune_steps" if key == "steps" and steps is not None else f"finetune[{key!r}]"
        out[key] = check_positive_int(out[key], what)
    for key, low, high in (("lr", 0.0, 10.0), ("head_lr", 0.0, 10.0), ("weight_decay", 0.0, 10.0),
                           ("momentum", 0.0, 0.999), ("layer_decay", 0.0, 1.0)):
        value = check_fraction(out[key], f"finetune[{key!r}]", low=low, high=high)
        if not np.isfinite(value) or (key in ("lr", "head_lr", "layer_decay") and value <= 0):
            raise ValueError(f"finetune[{key!r}] must be > 0 and <= {high}, got {out[key]!r}")
        out[key] = value
    return out


def _trainable(module: nn.Module) -> list[nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]


def layer_decay_groups(model: nn.Module, lr: float, layer_decay: float = 1.0, *,
                       exclude: Sequence[str] = ("head",)) -> list[dict[str, Any]]:
    """Optimizer parameter groups with layer-wise learning-rate decay over the model's probe points.

    The backbone's layers are its probe points (:func:`workbench.models.probe_points`, forward order) that hold
    trainable parameters, except those named in ``exclude`` (the pretraining classifier ``head``, which a
    fine-tune replaces). With ``L`` such layers, layer ``l = 1 … L`` trains at

        ``lr_l = lr · layer_decay ** (L − l)``

    (the top layer at ``lr``, each layer below it ``layer_decay`` times slower); parameters in no probe point
    (e.g. position embeddings) are layer 0, ``lr · layer_decay ** L``; the excluded points' parameters are
    kept at ``lr`` (they get no gradient when the representation does not use them). This is the layer-wise
    decay of Clark et al. 2020 (ELECTRA, ICLR, appendix) and Bao et al. 2022 (BEiT, ICLR), where the new head
    trains at the full rate. A parameter shared by several points belongs to the first one.

    Returns
    -------
    list of dicts ``{"name", "layer", "lr", "params"}`` in layer order (``torch.optim`` reads ``params``
    and ``lr``; extra keys are kept on its groups).

    >>> from workbench.models import build
    >>> mlp = build("mlp", input_shape=(4,), num_classes=2, hidden=(8, 8, 8))
    >>> [(g["name"], g["lr"]) for g in layer_decay_groups(mlp, 1.0, 0.5)]
    [('fc1', 0.25), ('fc2', 0.5), ('fc3', 1.0), ('head', 1.0)]
    """
    from ..models import get_module, probe_points

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    lr = check_fraction(lr, "lr", high=float("inf"))
    layer_decay = check_fraction(layer_decay, "layer_decay")
    if lr <= 0 or not np.isfinite(lr):
        raise ValueError(f"lr must be a finite number > 0, got {lr}")
    if layer_decay <= 0:
        raise ValueError(f"layer_decay must be in (0, 1] (1: no decay), got {layer_decay}")
    if isinstance(exclude, str) or not all(isinstance(e, str) for e in exclude):
        raise TypeError(f"exclude must be a list of probe-point names, got {exclude!r}")
    seen: set[int] = set()
    layers, excluded = [], []
    for name, path in probe_points(model).items():
        params = [p for p in _trainable(get_module(model, path)) if id(p) not in seen]
        seen.update(id(p) for p in params)
        if params:
            (excluded if name in exclude else layers).append((name, params))
    other = [p for p in _trainable(model) if id(p) not in seen]
    n = len(layers)
    groups = [{"name": "other", "layer": 0, "lr": lr * layer_decay ** n, "params": other}] if other else []
    groups += [{"name": name, "layer": i, "lr": lr * layer_decay ** (n - i), "params": params}
               for i, (name, params) in enumerate(layers, start=1)]
    groups += [{"name": name, "layer": n, "lr": lr, "params": params} for name, params in excluded]
    return groups


def backbone_parameters(model: nn.Module, *, exclude: Sequence[str] = ("head",)) -> int:
    """The number of trainable parameters of the model without its classifier: every parameter except those
    held only by the probe points named in ``exclude`` (default the ``head``, which the representation does
    not use and a fine-tune replaces); a shared (tied) tensor is counted once.

    For an MLP ``d → h1 → h2 → head`` this is ``(d + 1) h1 + (h1 + 1) h2`` (plus ``2 h`` per LayerNorm).

    >>> from workbench.models import build
    >>> backbone_parameters(build("mlp", input_shape=(20,), num_classes=3, hidden=(8, 8)))  # 21*8 + 9*8
    240
    """
    from ..models import probe_points

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(exclude, str) or not all(isinstance(e, str) for e in exclude):
        raise TypeError(f"exclude must be a list of probe-point names, got {exclude!r}")
    points = probe_points(model)
    skip = [points[e] for e in exclude if points.get(e)]
    kept: dict[int, nn.Parameter] = {}
    for path, module in model.named_modules():
        if any(path == s or path.startswith(s + ".") for s in skip):
            continue
        for p in module.parameters(recurse=False):
            if p.requires_grad:
                kept[id(p)] = p
    return int(sum(p.numel() for p in kept.values()))


def _check_finetune_data(dataset: Any) -> wb_data.Split:
    """The training split of ``finetune``'s ``dataset`` (a Dataset's ``"train"``, or a Split itself)."""
    if isinstance(dataset, wb_data.Dataset):
        if "train" not in dataset:
            raise ValueError(f"dataset has no 'train' split (splits: {list(dataset)}); pass the Split to fine-tune on")
        return dataset["train"]
    if isinstance(dataset, wb_data.Split):
        return dataset
    raise TypeError(f"dataset must be a workbench Dataset (its 'train' split is used) or a Split, got "
                    f"{type(dataset).__name__}")


def _example_finetune_model() -> nn.Module:
    from ..models import build

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build("mlp", input_shape=(6,), num_classes=3, hidden=(8,))


def _example_finetune_data() -> wb_data.Split:
    rng = np.random.default_rng(0)
    return wb_data.Split(inputs=rng.normal(size=(24, 6)).astype(np.float32), labels=np.arange(24) % 3)


@declare(model=Data("any", example=_example_finetune_model, bad=["model", None]),
         dataset=Data("any", example=_example_finetune_data, bad=["dataset"]),
         target=Instance(str, none=True), index=Data("any", none=True, bad=[np.array([0.5]), np.array([10 ** 6])]),
         settings=Instance(Mapping, none=True, example={"steps": 2}), seed=Interval(int, 0, None),
         device=Instance(str, torch.device, none=True))
def finetune(model: nn.Module, dataset: wb_data.Dataset | wb_data.Split, *, target: str | None = None,
             index: Sequence[int] | np.ndarray | None = None, settings: Mapping[str, Any] | None = None,
             seed: int = 0, device: str | torch.device | None = None) -> tuple[nn.Module, nn.Linear]:
    """Fine-tune a deep copy of ``model`` with a new linear head on its representation; return ``(net, head)``.

    The method ``finetune`` of :func:`evaluate` (module docstring), exposed: ``torch.manual_seed(seed)``, then a
    deep copy of the model and a fresh ``nn.Linear(D, K)`` head on :func:`~workbench.train.objectives.representation`
    (``D`` its width, ``K = max(y) + 1`` over the training split) are trained jointly for ``settings["steps"]``
    steps on minibatches of ``min(batch_size, n)`` rows drawn without replacement by
    ``numpy.random.default_rng([seed, t])`` at step ``t``, minimising the cross-entropy
    ``CE(head(repr(x)), y)``; the backbone's parameter groups follow :func:`layer_decay_groups` (learning rate
    ``lr``, ``layer_decay``), the head trains at ``head_lr``; optimizer and schedule as in :data:`FINETUNE_DEFAULTS`.
    Same seed, same data → the same weights as :func:`evaluate`'s fine-tune (which calls this). The model itself
    is not changed. Fine-tuning a pretrained network this way is the standard transfer protocol compared with
    training from random init in Neyshabur, Sedghi & Zhang 2020 ("What is being transferred in transfer
    learning?", NeurIPS).

    Parameters
    ----------
    model : the backbone (a workbench builder model; its own classifier ``head`` is ignored and replaced).
    dataset : a :class:`~workbench.data.Dataset` (its ``"train"`` split) or a :class:`~workbench.data.Split`.
    target : a categorical factor to classify instead of the class label (None: ``labels``).
    index : rows of the training split to fine-tune on (default: all of them), e.g. a label subset.
    settings : fine-tuning settings (keys of :data:`FINETUNE_DEFAULTS`), checked by :func:`finetune_settings`.
    seed : seed of the head's initialisation, dropout and the minibatch draws.
    device : where to train (default: CUDA when available, else CPU).

    Returns
    -------
    (net, head) : the fine-tuned copy and its new head, both in eval mode on ``device``;
    ``head(representation(net, x))`` are the logits.

    >>> import numpy as np
    >>> from workbench.data import Split
    >>> from workbench.models import build
    >>> split = Split(inputs=np.random.default_rng(0).normal(size=(32, 4)).astype("float32"), labels=np.arange(32) % 2)
    >>> net, head = finetune(build("mlp", input_shape=(4,), num_classes=2, hidden=(8,)), split,
    ...                      settings={"steps": 3}, device="cpu")
    >>> head.out_features
    2
    """
    from ..models.inputs import model_inputs

    from .objectives import representation
    from .trainer import auto_device

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module (e.g. run.load_model(step)), got {type(model).__name__}")
    train_split = _check_finetune_data(dataset)
    try:
        settings = finetune_settings(settings)
    except (TypeError, ValueError) as err:
        raise type(err)(f"settings: {err}") from None
    device = auto_device(device)
    y_all = torch.as_tensor(_labels(train_split, target, "train"), dtype=torch.long)
    if index is None:
        idx = np.arange(len(train_split))
    else:
        idx = np.asarray(index)
        if idx.ndim != 1 or len(idx) == 0 or not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"index must be a non-empty 1-D array of integer row numbers of the training split, got "
                             f"{idx.dtype} of shape {idx.shape}")
        if idx.min() < -len(train_split) or idx.max() >= len(train_split):
            raise ValueError(f"index holds rows outside the training split's {len(train_split)} rows")

    def embed(net, args, kwargs):
        return representation(net, args[0], kwargs.get("attention_mask"))

    torch.manual_seed(seed)
    net = copy.deepcopy(model).to(device).train()
    n_classes = int(y_all.max()) + 1
    train = train_split.subset(idx)
    y = y_all[idx]
    with torch.no_grad():
        args, kwargs = model_inputs(net, train, slice(0, 2), device)
        width = embed(net, args, kwargs).shape[-1]
    head = nn.Linear(width, n_classes).to(device)
    groups = layer_decay_groups(net, settings["lr"], settings["layer_decay"])
    groups.append({"name": "new head", "layer": -1, "lr": settings["head_lr"], "params": list(head.parameters())})
    wd, name = settings["weight_decay"], settings["optimizer"]
    if name == "sgd":
        opt = torch.optim.SGD(groups, lr=settings["lr"], momentum=settings["momentum"], weight_decay=wd)
    else:
        opt = (torch.optim.AdamW if name == "adamw" else torch.optim.Adam)(groups, lr=settings["lr"], weight_decay=wd)
    steps = settings["steps"]
    sched = (torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5 * (1 + np.cos(np.pi * t / steps)))
             if settings["schedule"] == "cosine" else None)
    bs = min(settings["batch_size"], len(idx))
    for t in range(steps):
        rows = np.random.default_rng([seed, t]).choice(len(idx), size=bs, replace=False)
        args, kwargs = model_inputs(net, train, rows, device)
        loss = nn.functional.cross_entropy(head(embed(net, args, kwargs)), y[rows].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
    return net.eval(), head.eval()


def _finetune(model: nn.Module, ds: wb_data.Dataset, target: str | None, idx: np.ndarray, splits: Sequence[str],
              settings: Mapping[str, Any], seed: int, device: torch.device) -> dict[str, float]:
    from ..models.inputs import model_inputs

    from .objectives import representation

    net, head = finetune(model, ds, target=target, index=idx, settings=settings, seed=seed, device=device)
    out = {}
    with torch.no_grad():
        for s in splits:
            split = ds[s]
            ys = torch.as_tensor(_labels(split, target, s), dtype=torch.long)
            preds = []
            for start in range(0, len(split), 512):
                args, kwargs = model_inputs(net, split, slice(start, start + 512), device)
                preds.append(head(representation(net, args[0], kwargs.get("attention_mask"))).argmax(1).cpu())
            out[s] = float((torch.cat(preds) == ys).double().mean())
    return out


def _dense_default(model: nn.Module) -> str:
    """The default layer of the dense probe: a middle convolutional stage (``stage*``) of a CNN, or a middle
    transformer block (``block*``) of a ViT."""
    from ..models import probe_points

    names = list(probe_points(model))
    for prefix in ("stage", "block"):
        chosen = [n for n in names if n.startswith(prefix)]
        if chosen:
            return chosen[len(chosen) // 2]  # a middle stage / block: enough resolution and semantics
    raise ValueError(f"dense probe needs a convolutional feature map or ViT patch tokens (probe points stage* or "
                     f"block*), {type(model).__name__} has {names}; pass dense_layer=")


@torch.no_grad()
def _pixel_features(model: nn.Module, split: wb_data.Split, layer: str, device: torch.device) -> torch.Tensor:
    """``[N · H · W, D]``: the token map of ``layer`` (:func:`workbench.activations.extract` with
    ``pool="patch-tokens"``: a CNN's ``[N, C, h, w]`` feature map, or a ViT's patch tokens without CLS) laid out
    on its ``h × w`` grid and upsampled (bilinear) to the image size."""
    from ..activations import extract

    h_img, w_img = split.inputs.shape[-2:]
    acts = extract(model, split, layers=[layer], pool="patch-tokens", batch_size=256, device=device)
    tokens, grid = acts[layer], acts.meta["grids"][layer]
    if tokens.dim() != 3 or grid is None or len(grid) != 2:
        raise ValueError(f"dense probe needs a [N, C, h, w] feature map or patch tokens on a 2-D grid; layer {layer!r} "
                         f"gives {tuple(tokens.shape)} — pass dense_layer= a convolutional stage or a ViT block")
    chunks = []
    for start in range(0, len(tokens), 256):
        part = tokens[start:start + 256]
        fmap = part.transpose(1, 2).reshape(len(part), part.shape[2], *grid)  # [n, D, h, w]
        up = nn.functional.interpolate(fmap, size=(h_img, w_img), mode="bilinear", align_corners=False)
        chunks.append(up.permute(0, 2, 3, 1).reshape(-1, part.shape[2]))
    return torch.cat(chunks)


def _fit_logistic(x: torch.Tensor, y: np.ndarray, C: float = 1.0, tol: float = 1e-9, max_iter: int = 100):
    """L2 logistic regression on standardized ``x`` by Newton's method; returns ``predict(x_new) -> labels``.

    Minimises sklearn's ``LogisticRegression(C=C)`` objective (lbfgs, l2) divided by ``C n``::

        J(W, b) = (1/n) sum_i CE(softmax(W^T x_i + b), y_i) + ||W||_F^2 / (2 C n)     (bias unpenalised)

    with one weight vector per class for ``K >= 3`` (multinomial) and a single vector (logits
    ``(0, w^T x + b)``) for ``K = 2``, so the minimiser, hence the predictions, are sklearn's fitted on the
    same standardized data. Inputs are standardized with the training mean and population std (a feature
    with std ``<= 1e-10 |mean|`` is only centered). The dense probe has few features (the channels of one
    feature map) and many rows, so the exact Hessian (``(D + 1) K`` square, from ``X^T diag(.) X``
    products) is cheap; Newton steps (pseudo-inverse: the common shift of the multinomial biases is a
    null direction that changes nothing) with Armijo backtracking converge to ``max |grad J| <= tol`` in
    a few tens of iterations where first-order solvers need hundreds on these correlated, imbalanced
    pixel features. Only classes present in ``y`` can be predicted.
    """
    classes, y_enc = np.unique(np.asarray(y), return_inverse=True)
    x = x.double()
    mean, std = x.mean(0), x.std(0, unbiased=False)
    std = torch.where((std <= 1e-10 * mean.abs()) | (std == 0), torch.ones_like(std), std)
    n, d = x.shape
    xt = torch.cat([(x - mean) / std, torch.ones(n, 1, dtype=torch.float64, device=x.device)], 1)  # [n, d+1]
    if len(classes) == 1:
        return lambda x_new: np.full(len(x_new), classes[0])
    k = 1 if len(classes) == 2 else len(classes)
    target = torch.as_tensor(y_enc, device=x.device)
    onehot = nn.functional.one_hot(target, max(k, 2)).double()
    lam = 1.0 / (C * n)
    pen = torch.ones(d + 1, 1, dtype=torch.float64, device=x.device)
    pen[-1] = 0.0  # the bias row is not penalised

    def logits(z: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        out = z @ theta
        return torch.cat([torch.zeros_like(out), out], 1) if k == 1 else out

    def objective(theta: torch.Tensor) -> torch.Tensor:
        return (nn.functional.cross_entropy(logits(xt, theta), target)
                + 0.5 * lam * (pen * theta.square()).sum())

    theta = torch.zeros(d + 1, k, dtype=torch.float64, device=x.device)
    for _ in range(max_iter):
        prob = torch.softmax(logits(xt, theta), 1)
        if k == 1:
            resid = prob[:, 1:] - onehot[:, 1:]
            grad = xt.T @ resid / n + lam * pen * theta
            w = prob[:, 1] * prob[:, 0]
            hess = (xt.T * w) @ xt / n + lam * torch.diag(pen[:, 0])
        else:
            grad = xt.T @ (prob - onehot) / n + lam * pen * theta
            z = (prob[:, :, None] * xt[:, None, :]).reshape(n, k * (d + 1))  # column (c, a) = p_ic x_ia
            hess = -(z.T @ z) / n
            for c in range(k):
                block = slice(c * (d + 1), (c + 1) * (d + 1))
                hess[block, block] += (xt.T * prob[:, c]) @ xt / n + lam * torch.diag(pen[:, 0])
        g = grad.T.reshape(-1)  # parameter order (class, feature), as the Hessian
        if float(g.abs().max()) <= tol:
            break
        vals, vecs = torch.linalg.eigh(hess)
        inv = torch.where(vals > 1e-12 * vals.max(), 1.0 / vals, torch.zeros_like(vals))
        step = -(vecs @ (inv * (vecs.T @ g))).reshape(k, d + 1).T
        f0, slope, t = objective(theta), float(g @ step.T.reshape(-1)), 1.0
        for _ in range(40):  # Armijo backtracking (a full step is accepted near the optimum)
            if float(objective(theta + t * step)) <= float(f0) + 1e-4 * t * slope:
                break
            t *= 0.5
        theta = theta + t * step

    @torch.no_grad()
    def predict(x_new: torch.Tensor) -> np.ndarray:
        z = (x_new.to(x.device).double() - mean) / std
        zt = torch.cat([z, torch.ones(len(z), 1, dtype=torch.float64, device=z.device)], 1)
        return classes[logits(zt, theta).argmax(1).cpu().numpy()]

    return predict


def _dense_probe(model: nn.Module, ds: wb_data.Dataset, idx: np.ndarray, splits: Sequence[str], layer: str,
                 n_pixels: int, seed: int, device: torch.device) -> dict[str, dict[str, float]]:
    def pixel_labels(split: wb_data.Split) -> np.ndarray:
        return (split.masks * (split.labels[:, None, None] + 1)).reshape(-1)

    train = ds["train"].subset(idx)
    x_tr = _pixel_features(model, train, layer, device)
    y_tr = pixel_labels(train)
    pick = np.random.default_rng([seed, 0xDE45]).choice(len(y_tr), size=min(n_pixels, len(y_tr)), replace=False)
    evals = {s: (_pixel_features(model, ds[s], layer, device), pixel_labels(ds[s])) for s in splits}
    predict = _fit_logistic(x_tr[pick], y_tr[pick], C=1.0)
    out = {}
    n_cls = int(max(y_tr.max(), *(e[1].max() for e in evals.values()))) + 1
    for s in splits:
        pred = predict(evals[s][0])
        true = evals[s][1]
        ious = []
        for k in range(n_cls):
            inter = np.sum((pred == k) & (true == k))
            union = np.sum((pred == k) | (true == k))
            if union:
                ious.append(inter / union)
        out[s] = {"pixel_accuracy": float(np.mean(pred == true)), "miou": float(np.mean(ious))}
    return out

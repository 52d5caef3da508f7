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
``finetune``  the whole network plus a fresh linear head on its representation trained with AdamW
              (``finetune_steps`` steps, batch 128, lr 1e-3 for the head and ``0.1 ×`` that for the backbone).
``dense``     per-pixel linear probe for ``shapes``: the feature map of ``dense_layer`` is upsampled
              (bilinear) to the image size; each pixel is labelled background (0) or the shape class + 1
              inside the object mask; an L2 logistic probe (``C = 1``, standardized features; the objective
              of ``sklearn.linear_model.LogisticRegression(C=1)``, solved by :func:`_fit_logistic`) is fit on
              ``dense_pixels`` sampled training pixels and scored by pixel accuracy and mean IoU over the
              classes present in the ground truth or the prediction, on every pixel of each split.

Label fractions subsample the downstream training split per class (``max(1, round(f · n_c))``, seeded);
the evaluation splits are always complete.
"""
from __future__ import annotations

import copy
import io
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from .. import data as wb_data
from .._validation import check_choice, check_fraction
from ..results import tidy
from ..runs import Run

__all__ = ["evaluate", "METHODS", "DOWNSTREAM_COLUMNS"]

METHODS = ("linear", "knn", "finetune", "dense")
#: columns of a run's stored ``downstream.csv`` (:meth:`workbench.runs.Run.downstream` reads it in the results schema)
DOWNSTREAM_COLUMNS = ["step", "task", "method", "label_fraction", "layer", "layer_index", "split", "measure", "value"]
_KEY = ["step", "task", "method", "label_fraction", "layer", "split", "measure"]


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


def _fraction_index(y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
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
             label_fractions: Sequence[float] = (1.0,), splits: Sequence[str] | None = None,
             layer: str | None = None, C: float | None = 1.0, finetune_steps: int = 200,
             dense_layer: str | None = None, dense_pixels: int = 20000, seed: int = 0,
             device: str | torch.device | None = None, cache: bool = True) -> pd.DataFrame:
    """Evaluate checkpoint ``step`` of ``run`` on a downstream ``task``; store and return a tidy table.

    Parameters
    ----------
    run : a finished (or partially trained) :class:`~workbench.runs.Run`.
    task : None / "label" (the run's dataset and class), a categorical factor name of the run's dataset, or
        ``{"dataset": name, "options": {...}, "target": factor-or-None, "name": display}`` for another dataset.
    step : checkpoint step or "final".
    methods : subset of :data:`METHODS` (module docstring).
    label_fractions : fractions of the downstream training split, each in (0, 1].
    splits : evaluation splits (default: every non-train split of the task's dataset, e.g. test and ood).
    layer : probe point for the frozen probes (default: the one feeding the head, e.g. "pool").
    C : inverse L2 strength of the linear probe (None → cross-validated).
    finetune_steps, dense_layer, dense_pixels, seed : see the module docstring.

    Returns
    -------
    DataFrame in the results schema (``run`` = the run's display name, ``step``, ``layer``, ``layer_index`` =
    the probe point's position in the model (NaN for ``"embed"``, the fine-tuned representation),
    ``measure``, ``split``, ``value``) with the extra columns ``task``, ``method``, ``label_fraction``; one row
    per (method, label fraction, split, measure); measures "accuracy" (and "loss" for linear) or
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
    fractions = [check_fraction(f, "label_fractions") for f in label_fractions]
    if any(f <= 0 for f in fractions):
        raise ValueError("label_fractions must be in (0, 1]")
    task_name, ds, target = _resolve_task(run, task)
    splits = [s for s in ds if s != "train"] if splits is None else list(splits)
    for s in splits:
        if s not in ds:
            raise ValueError(f"split {s!r} not in the task's dataset (splits: {list(ds)})")
    device = auto_device(device)
    step_n = run.resolve_step(step)
    model = run.load_model(step_n, device=str(device))
    layer = layer or _default_layer(model)
    cache_dir = run.store.root / "activations" if cache else None

    y_train_full = _labels(ds["train"], target, "train")
    rows: list[dict[str, Any]] = []
    order = {name: i for i, name in enumerate(probe_points(model))}

    def add(method: str, frac: float, lay: str, split: str, measure: str, value: float) -> None:
        rows.append({"step": step_n, "task": task_name, "method": method, "label_fraction": frac, "layer": lay,
                     "layer_index": order.get(lay), "split": split, "measure": measure, "value": float(value)})

    frozen = [m for m in methods if m in ("linear", "knn")]
    if frozen:
        feats = {s: extract(model, ds[s], layers=[layer], cache=cache_dir)[layer] for s in ["train", *splits]}
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
            for split, acc in _finetune(model, ds, target, idx, splits, finetune_steps, seed, device).items():
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
    table = pd.DataFrame(rows, columns=DOWNSTREAM_COLUMNS)
    _store(run, table)
    return tidy(table, run=run.name)


def _store(run: Run, table: pd.DataFrame) -> None:
    with run.lock():
        old = run.downstream()
        if len(old):
            old = old[DOWNSTREAM_COLUMNS]
            merged = pd.concat([old, table], ignore_index=True).drop_duplicates(_KEY, keep="last")
        else:
            merged = table
        buf = io.StringIO()
        merged.to_csv(buf, index=False)
        run.write_file("downstream.csv", buf.getvalue().encode())  # checksummed in the run's manifest


def _finetune(model: nn.Module, ds: wb_data.Dataset, target: str | None, idx: np.ndarray, splits: Sequence[str],
              steps: int, seed: int, device: torch.device) -> dict[str, float]:
    from ..models.inputs import model_inputs

    from .objectives import representation

    def embed(net, args, kwargs):
        return representation(net, args[0], kwargs.get("attention_mask"))

    torch.manual_seed(seed)
    net = copy.deepcopy(model).to(device).train()
    y_all = torch.as_tensor(_labels(ds["train"], target, "train"), dtype=torch.long)
    n_classes = int(y_all.max()) + 1
    train = ds["train"].subset(idx)
    y = y_all[idx]
    with torch.no_grad():
        args, kwargs = model_inputs(net, train, slice(0, 2), device)
        width = embed(net, args, kwargs).shape[-1]
    head = nn.Linear(width, n_classes).to(device)
    opt = torch.optim.AdamW([{"params": net.parameters(), "lr": 1e-4}, {"params": head.parameters(), "lr": 1e-3}])
    bs = min(128, len(idx))
    for t in range(steps):
        rows = np.random.default_rng([seed, t]).choice(len(idx), size=bs, replace=False)
        args, kwargs = model_inputs(net, train, rows, device)
        loss = nn.functional.cross_entropy(head(embed(net, args, kwargs)), y[rows].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    net.eval()
    out = {}
    with torch.no_grad():
        for s in splits:
            split = ds[s]
            ys = torch.as_tensor(_labels(split, target, s), dtype=torch.long)
            preds = []
            for start in range(0, len(split), 512):
                args, kwargs = model_inputs(net, split, slice(start, start + 512), device)
                preds.append(head(embed(net, args, kwargs)).argmax(1).cpu())
            out[s] = float((torch.cat(preds) == ys).double().mean())
    return out


def _dense_default(model: nn.Module) -> str:
    from ..models import probe_points

    names = [n for n in probe_points(model) if n.startswith("stage")]
    if not names:
        raise ValueError("dense probe needs a convolutional feature map; pass dense_layer=")
    return names[len(names) // 2]  # a middle stage: enough resolution and semantics


@torch.no_grad()
def _pixel_features(model: nn.Module, split: wb_data.Split, layer: str, device: torch.device) -> torch.Tensor:
    """``[N · H · W, C]``: the ``[N, C, h, w]`` feature map of ``layer`` upsampled (bilinear) to the image size."""
    from ..models import get_module, select_layers
    from ..models.inputs import call_model

    captured: list[torch.Tensor] = []
    module = get_module(model, select_layers(model, [layer])[layer])
    handle = module.register_forward_hook(lambda _m, _i, out: captured.append(out.detach()))
    was = model.training
    model.eval()
    h_img, w_img = split.inputs.shape[-2:]
    chunks = []
    try:
        for start in range(0, len(split), 256):
            captured.clear()
            call_model(model, split, slice(start, start + 256), device)
            fmap = captured[0]
            if fmap.dim() != 4:
                raise ValueError(f"dense probe needs a [N, C, h, w] feature map; layer {layer!r} gives "
                                 f"{tuple(fmap.shape)} — pass dense_layer= a convolutional stage")
            up = nn.functional.interpolate(fmap.float(), size=(h_img, w_img), mode="bilinear", align_corners=False)
            chunks.append(up.permute(0, 2, 3, 1).reshape(-1, fmap.shape[1]).cpu())
    finally:
        handle.remove()
        model.train(was)
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

"""Per-example data-pruning scores early in training: EL2N and GraNd (Paul et al. 2021), averaged over seeds."""
from __future__ import annotations

import numbers
from collections.abc import Iterable
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from .._validation import (Data, Instance, Interval, Options, check_choice, check_finite, check_labels,
                           check_positive_int, declare)
from ..models import device_of, predict
from ..results import tidy
from ..train import recorders
from ._common import eval_mode, example_classifier, example_split, math_attention, trainable

__all__ = ["el2n", "el2n_scores", "grand_scores"]



def _logits(logits: Any, name: str) -> np.ndarray | torch.Tensor:
    """``logits`` checked as a finite real [N, C] array or tensor (object arrays of numbers are converted); the
    score itself is computed where the ``el2n`` recorder uses it (:func:`workbench.train.recorders.el2n`)."""
    if isinstance(logits, torch.Tensor):
        z = logits.detach()
        kind = "f" if z.is_floating_point() else ("b" if z.dtype == torch.bool else "i")
    elif isinstance(logits, (np.ndarray, list, tuple)):
        z = np.asarray(logits)
        if z.dtype == object:  # numbers held as Python objects: converted; anything else (strings, None) refused
            odd = [v for v in z.ravel() if not isinstance(v, numbers.Real)][:1]
            if odd:
                odd = odd[0]
                raise TypeError(f"{name} must hold numbers (classifier logits [N, C]), got an object array holding "
                                f"{type(odd).__name__} values such as {odd!r}")
            z = z.astype(np.float64)
        kind = z.dtype.kind
    else:
        raise TypeError(f"{name} must be a numpy array or torch tensor of classifier logits [N, C], got "
                        f"{type(logits).__name__}")
    if kind not in "biuf":
        raise TypeError(f"{name} must hold numbers (classifier logits [N, C]), got dtype {z.dtype}")
    if z.ndim != 2 or z.shape[0] == 0 or z.shape[1] == 0:
        raise ValueError(f"{name} must be [N, C] classifier outputs with N, C >= 1, got shape {tuple(z.shape)}")
    check_finite(z, name)
    return z


@declare(logits=Data("x", bad=[np.zeros(Data.N), np.zeros((Data.N, Data.CLASSES, 1))]), labels=Data("labels"))
def el2n(logits: Any, labels: Any) -> np.ndarray:
    """EL2N score per example: ``‖softmax(f(x)) − onehot(y)‖₂`` (Paul et al. 2021, "Deep learning on a data
    diet: finding important examples early in training"), in float64.

    ``logits`` ``[N, C]`` (array or tensor; finite: NaN/Inf logits are refused), ``labels`` ``[N]`` class ids in
    ``0 .. C−1``.
    """
    return recorders.el2n(_logits(logits, "logits"), labels)

_MODELS = Data("any", example=lambda: [example_classifier(0), example_classifier(1)], bad=[[], ["model"], "models"])
# data: a labelled Split, a Dataset with split=, or an input array (with labels=)
_SCORE_RULES = {"models": _MODELS, "data": Data("any", example=example_split, bad=["data", None]),
                "labels": Data("labels", none=True), "split": Instance(str, none=True),
                "step": Instance(numbers.Integral, str, none=True)}


def _models(models: Any, step: Any) -> list[nn.Module]:
    """Models from a list of modules and/or runs (runs load checkpoint ``step``)."""
    from ..runs import Run

    if isinstance(models, (nn.Module, Run)):
        models = [models]
    if not isinstance(models, Sequence) or not len(models):
        raise TypeError("models must be a non-empty list of nn.Module or workbench Run (one per seed), "
                        f"got {type(models).__name__}")
    out = []
    for i, m in enumerate(models):
        if isinstance(m, Run):
            m = m.load_model(step)
        elif step is not None:
            raise ValueError(f"step={step!r} applies to runs only; models[{i}] is already a model")
        if not isinstance(m, nn.Module):
            raise TypeError(f"models[{i}] must be an nn.Module or a Run, got {type(m).__name__}")
        out.append(m)
    return out


def _split_and_labels(data: Any, split: str | None, labels: Any):
    from ..data import as_split

    the_split = as_split(data, split)
    y = the_split.labels if labels is None else labels
    if y is None:
        raise ValueError("the data has no labels; pass labels=... (e.g. the noisy labels the runs trained on)")
    y = check_labels(y, "labels", min_classes=1)
    if len(y) != len(the_split):
        raise ValueError(f"labels has {len(y)} entries but the data has {len(the_split)} examples")
    return the_split, y


def _frame(per_model: list[np.ndarray], measure: str, step: Any) -> pd.DataFrame:
    """Per-example scores averaged over the models, in the results schema (extras ``example``, ``std``,
    ``n_models``); ``step`` is filled when the runs were read at one given checkpoint."""
    s = np.stack(per_model)
    rows = pd.DataFrame({"measure": measure, "value": s.mean(0), "example": np.arange(s.shape[1]),
                         "std": s.std(0, ddof=1) if len(s) > 1 else np.nan, "n_models": len(s)})
    return tidy(rows, step=step if isinstance(step, (int, np.integer)) else np.nan)


@declare(**_SCORE_RULES, batch_size=Interval(int, 1))
def el2n_scores(models: Any, data: Any, *, labels: Any = None, split: str | None = None, step: Any = None,
                batch_size: int = 512) -> pd.DataFrame:
    """:func:`el2n` of every example under each model, averaged over the models (seeds), as Paul et al. do
    (they average over 10 initialisations, a few epochs into training).

    Parameters
    ----------
    models : classifiers (``nn.Module``) and/or :class:`~workbench.runs.Run` s — one per seed.
    data : a :class:`~workbench.data.Split`, a Dataset with ``split=``, or an input array.
    labels : the labels to score against (default: the split's labels; pass the noisy training labels
        for a run with label noise, as the ``el2n`` recorder does).
    step : checkpoint of the runs (default: the last).

    Returns
    -------
    DataFrame in the results schema (:mod:`workbench.results`): ``measure`` ``"el2n"``, ``value`` (mean over
    models), ``step`` (the given checkpoint, else NaN), and the extra columns ``example``, ``std`` (over
    models, ddof 1; NaN for one model), ``n_models``.
    """
    the_split, y = _split_and_labels(data, split, labels)
    check_positive_int(batch_size, "batch_size")
    scores = [recorders.el2n(_logits(predict(m, the_split, batch_size, device_of(m)), f"models[{i}]'s logits"), y)
              for i, m in enumerate(_models(models, step))]  # a diverged model (NaN logits) is named, not averaged
    return _frame(scores, "el2n", step)


def _per_example_grad_norms(model: nn.Module, args: tuple, kwargs: dict, y: torch.Tensor,
                            params: list[torch.Tensor], method: str) -> torch.Tensor:
    """``‖∇_θ CE(f(x_i), y_i)‖₂`` for each row ``i`` of one chunk: torch.func (vmap of grad) or a loop."""
    x = args[0]
    mask = kwargs.get("attention_mask")
    if method == "vmap":
        from torch.func import functional_call, grad, vmap

        names = {id(p): n for n, p in model.named_parameters()}
        chosen = {names[id(p)]: p.detach() for p in params}
        frozen = {n: p.detach() for n, p in model.named_parameters() if n not in chosen}
        buffers = dict(model.named_buffers())

        def one(theta, xi, yi, mi):
            kw = {} if mi is None else {"attention_mask": mi[None]}
            out = functional_call(model, ({**frozen, **theta}, buffers), (xi[None],), kw)
            return F.cross_entropy(out, yi[None])

        g = vmap(grad(one), in_dims=(None, 0, 0, None if mask is None else 0))(chosen, x, y, mask)
        return torch.stack([t.reshape(len(x), -1).double().square().sum(1) for t in g.values()]).sum(0).sqrt()
    norms = []
    for i in range(len(x)):
        kw = {} if mask is None else {"attention_mask": mask[i:i + 1]}
        out = model(x[i:i + 1], **kw)
        gi = torch.autograd.grad(F.cross_entropy(out, y[i:i + 1]), params, allow_unused=True)
        norms.append(sum(g.double().square().sum() for g in gi if g is not None).sqrt()
                     if any(g is not None for g in gi) else torch.zeros((), dtype=torch.float64))
    return torch.stack(norms)


@declare(**_SCORE_RULES, params=Instance(Iterable, none=True), chunk_size=Interval(int, 1),
         method=Options("auto", "vmap", "loop"))
def grand_scores(models: Any, data: Any, *, labels: Any = None, split: str | None = None, step: Any = None,
                 params: Sequence[torch.Tensor] | None = None, chunk_size: int = 64,
                 method: str = "auto") -> pd.DataFrame:
    """GraNd score per example: the expected norm of its loss gradient,
    ``χ(x, y) = E_w ‖∇_w CE(f_w(x), y)‖₂`` (Paul et al. 2021), the expectation taken as the mean over
    ``models`` (independently initialised / trained seeds at the same early step).

    Per-example gradients come from ``torch.func`` (``vmap`` of ``grad`` over a ``functional_call``) on
    chunks of ``chunk_size`` examples; where vmap cannot run the model (``method="auto"``) or with
    ``method="loop"``, from one backward pass per example. Eval mode (BatchNorm running statistics, no
    dropout), float64 accumulation of the squared entries.

    Parameters
    ----------
    models, data, labels, split, step : as :func:`el2n_scores`.
    params : for a single model, the parameters ``w`` the gradient is taken over (default: all trainable).
    chunk_size : examples per vmap call (bounds memory: one gradient per example in the chunk).
    method : ``"auto"`` (vmap, falling back to the loop), ``"vmap"`` or ``"loop"``.

    Returns
    -------
    DataFrame as :func:`el2n_scores` returns, ``measure`` ``"grand"``.
    """
    from ..models.inputs import model_inputs

    check_choice(method, ["auto", "vmap", "loop"], "method")
    check_positive_int(chunk_size, "chunk_size")
    the_split, y_all = _split_and_labels(data, split, labels)
    models = _models(models, step)
    if params is not None and len(models) > 1:
        raise ValueError("params= selects parameters of one model; pass a single model with it, or params=None")
    scores = []
    for model in models:
        ps = trainable(model, params)
        own = {id(p) for p in model.parameters()}
        if not all(id(p) in own for p in ps):
            raise ValueError("params must be parameters of the model (e.g. list(model.head.parameters()))")
        device = device_of(model)
        chunks = []
        with eval_mode(model), math_attention():
            with torch.no_grad():
                args, kwargs = model_inputs(model, the_split, np.arange(1), device)
                shape = tuple(model(*args, **kwargs).shape)
            if len(shape) != 2:
                raise ValueError(f"GraNd needs a classifier (logits [N, C]); the model returns {shape}")
            for start in range(0, len(the_split), chunk_size):
                idx = np.arange(start, min(start + chunk_size, len(the_split)))
                args, kwargs = model_inputs(model, the_split, idx, device)
                y = torch.as_tensor(y_all[idx], device=device)
                use = "vmap" if method in ("auto", "vmap") else "loop"
                if use == "vmap":
                    try:
                        chunks.append(_per_example_grad_norms(model, args, kwargs, y, ps, "vmap"))
                        continue
                    except (RuntimeError, NotImplementedError, TypeError, ValueError):
                        if method == "vmap":
                            raise
                        method = "loop"  # this model cannot be vmapped: loop for the rest
                chunks.append(_per_example_grad_norms(model, args, kwargs, y, ps, "loop"))
        scores.append(torch.cat(chunks).cpu().numpy())
    return _frame(scores, "grand", step)

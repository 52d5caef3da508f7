"""Linear mode connectivity: loss and accuracy along the straight line between two networks, and the barrier."""
from __future__ import annotations

import warnings
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from .. import data as wb_data
from .._validation import Data, Instance, Interval, Options, declare
from ..results import check_tidy, tidy
from ._common import (Classifier, check_module, classifier_copy, has_batchnorm, labelled_split, loss_and_accuracy,
                      recompute_batchnorm, training_split)

__all__ = ["interpolate", "barrier", "interpolate_state", "METRICS"]

#: what :func:`interpolate` measures at each point of the path
METRICS = ("loss", "accuracy")


def _check_alphas(alphas: Any) -> np.ndarray:
    if alphas is None:
        return np.linspace(0.0, 1.0, 11)
    if isinstance(alphas, (str, bytes)):
        raise TypeError(f"alphas must be a list of numbers, e.g. numpy.linspace(0, 1, 11), got {alphas!r}")
    try:
        arr = np.asarray(list(alphas), dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"alphas must be a list of numbers, e.g. numpy.linspace(0, 1, 11), got {alphas!r}") from None
    if arr.ndim != 1 or len(arr) < 2:
        raise ValueError(f"alphas must hold at least two interpolation coefficients, got {alphas!r}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"alphas must be finite numbers, got {alphas!r}")
    if len(np.unique(arr)) < len(arr):
        raise ValueError(f"alphas repeats a value: {arr.tolist()}")
    return np.sort(arr)


def _check_metrics(metric: Any) -> list[str]:
    names = [metric] if isinstance(metric, str) else list(metric) if isinstance(metric, Iterable) else None
    if not names or not all(isinstance(m, str) for m in names):
        raise TypeError(f"metric must be one of {list(METRICS)} or a non-empty list of them, got {metric!r}")
    for m in names:
        if m not in METRICS:
            raise ValueError(f"metric={m!r} is not one of {list(METRICS)}")
    return names


def _matching_states(a: nn.Module, b: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    sa, sb = a.state_dict(), b.state_dict()
    if list(sa) != list(sb):
        missing = sorted(set(sa) ^ set(sb))[:5]
        raise ValueError(f"model_b (+ head_b) does not have the architecture of model_a (+ head_a): tensors "
                         f"{missing} are in one only; interpolate two networks of the same architecture")
    for k in sa:
        if sa[k].shape != sb[k].shape:
            raise ValueError(f"model_b (+ head_b) does not have the architecture of model_a (+ head_a): {k!r} has "
                             f"shape {tuple(sb[k].shape)} vs {tuple(sa[k].shape)}")
    return sa, sb


def _example_state() -> dict[str, torch.Tensor]:
    return {"w": torch.tensor([0.0, 2.0]), "n": torch.tensor(3)}


@declare(state_a=Data("any", example=_example_state, bad=["state_a", {"w": torch.zeros(3)}]),
         state_b=Data("any", example=_example_state, bad=["state_b", {"v": torch.zeros(2)}]),
         alpha=Interval(float))
def interpolate_state(state_a: dict[str, torch.Tensor], state_b: dict[str, torch.Tensor],
                      alpha: float) -> dict[str, torch.Tensor]:
    """``θ(α) = (1 − α) θ_a + α θ_b`` for every floating tensor of two state dicts (computed in float64, cast back
    to the tensor's dtype); integer tensors (BatchNorm's ``num_batches_tracked``) are ``state_a``'s.

    >>> import torch
    >>> interpolate_state({"w": torch.tensor([0.0, 2.0])}, {"w": torch.tensor([1.0, 4.0])}, 0.25)["w"]
    tensor([0.2500, 2.5000])
    """
    for name, state in (("state_a", state_a), ("state_b", state_b)):
        if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise TypeError(f"{name} must be a state dict (name -> tensor), e.g. model.state_dict(), got "
                            f"{type(state).__name__}")
    if list(state_a) != list(state_b) or any(state_a[k].shape != state_b[k].shape for k in state_a):
        raise ValueError("state_b does not match state_a (different tensor names or shapes); interpolate the state "
                         "dicts of two networks of the same architecture")
    out = {}
    for k, ta in state_a.items():
        tb = state_b[k]
        if torch.is_floating_point(ta):
            mixed = (1.0 - alpha) * ta.double() + alpha * tb.to(ta.device).double()
            out[k] = mixed.to(ta.dtype)
        else:
            out[k] = ta.clone()
    return out


def _example_model(seed: int = 0) -> nn.Module:
    from ..models import build

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build("mlp", input_shape=(Data.D,), num_classes=Data.CLASSES, hidden=(8,))


def _example_split() -> wb_data.Split:
    x = np.random.default_rng(0).normal(size=(Data.N, Data.D)).astype(np.float32)
    return wb_data.Split(inputs=x, labels=np.arange(Data.N) % Data.CLASSES)


@declare(model_a=Data("any", example=_example_model, bad=["model_a", None]),
         model_b=Data("any", example=_example_model, bad=["model_b", None]),
         data=Data("any", example=_example_split, bad=["data", wb_data.Split(inputs=np.zeros((4, Data.D)))]),
         alphas=Instance(Iterable, none=True), head_a=Instance(nn.Module, none=True),
         head_b=Instance(nn.Module, none=True), metric=Instance(str, Iterable), split=Instance(str),
         train_data=Data("any", none=True, bad=["train_data"]), batchnorm=Options("recompute", "interpolate"),
         target=Instance(str, none=True), names=Instance(tuple, list, example=("a", "b")))
def interpolate(model_a: nn.Module, model_b: nn.Module, data: wb_data.Dataset | wb_data.Split, *,
                alphas: Sequence[float] | None = None, head_a: nn.Module | None = None, head_b: nn.Module | None = None,
                metric: str | Sequence[str] = METRICS, split: str = "test",
                train_data: wb_data.Dataset | wb_data.Split | None = None, batchnorm: str = "recompute",
                target: str | None = None, names: Sequence[str] = ("a", "b")) -> pd.DataFrame:
    """Loss and accuracy along the linear path between two networks (linear mode connectivity).

    At each ``α`` the network ``θ(α) = (1 − α) θ_a + α θ_b`` (every parameter and floating buffer, the heads
    included: :func:`interpolate_state`) is evaluated on the labelled ``data``: ``loss`` is the mean
    cross-entropy, ``accuracy`` the fraction of correct argmax predictions. Frankle et al. 2020 ("Linear mode
    connectivity and the lottery ticket hypothesis", ICML) introduced this test; Neyshabur, Sedghi & Zhang 2020
    ("What is being transferred in transfer learning?", NeurIPS, Sec. 3.3) use it to show that two fine-tunes of
    the *same* pretrained checkpoint stay in one basin (no barrier) while two trainings from random init do not.
    :func:`barrier` turns the table into the barrier height.

    BatchNorm: averaging weights does not average the statistics the averaged network sees, so with
    ``batchnorm="recompute"`` (default) the running mean and variance of every BatchNorm are reset and
    re-estimated at *each* ``α`` (the endpoints included) on ``train_data`` (the average of the statistics of
    near-equal batches of at most 512 rows, only the BatchNorm layers in train mode) — the reset that Jordan et
    al. 2023 ("REPAIR: REnormalizing Permuted Activations for Interpolation Repair", ICLR) show is needed before
    a barrier means anything. ``"interpolate"`` mixes the running statistics like the weights (warned for
    models with BatchNorm).

    Parameters
    ----------
    model_a, model_b : two networks of the same architecture (e.g. the ``net`` of two
        :func:`workbench.train.finetune` calls).
    data : the labelled evaluation data: a :class:`~workbench.data.Split`, or a Dataset (its split ``split``).
    alphas : interpolation coefficients (default 11 points ``0, 0.1, …, 1``; include 0 and 1 for :func:`barrier`;
        values outside ``[0, 1]`` extrapolate).
    head_a, head_b : the classifier heads of the two networks (logits ``head(representation(net, x))``), both or
        neither; None: the models are classifiers themselves (``model(x)`` are the logits).
    metric : a subset of :data:`METRICS`.
    split : the split of a Dataset ``data`` to evaluate on, and the ``split`` label of the rows.
    train_data : the data BatchNorm statistics are recomputed on (default: ``data["train"]`` for a Dataset);
        needed only for models with BatchNorm and ``batchnorm="recompute"``.
    batchnorm : "recompute" or "interpolate" (above).
    target : a categorical factor of ``data`` the heads classify (as in :func:`workbench.train.finetune`); None:
        the labels.
    names : the ``run`` and ``run_b`` labels of the two endpoints.

    Returns
    -------
    DataFrame in the results schema: one row per (``mix``, measure) with ``run`` = names[0], ``run_b`` =
    names[1], ``split``, ``measure`` in ``metric``, ``value``, and the extra column ``mix``.

    >>> import numpy as np
    >>> from workbench.data import Split
    >>> from workbench.models import build
    >>> split = Split(inputs=np.eye(4, dtype="float32"), labels=np.array([0, 1, 0, 1]))
    >>> a, b = (build("mlp", input_shape=(4,), num_classes=2, hidden=(3,)) for _ in range(2))
    >>> table = interpolate(a, b, split, alphas=[0, 0.5, 1])
    >>> table[["mix", "measure"]].drop_duplicates().shape[0]
    6

    Two fine-tunes of one checkpoint against two from random init (:func:`workbench.train.finetune`)::

        net1, h1 = finetune(pretrained, ds, seed=1); net2, h2 = finetune(pretrained, ds, seed=2)
        barrier(interpolate(net1, net2, ds, head_a=h1, head_b=h2))
    """
    check_module(model_a, "model_a")
    check_module(model_b, "model_b")
    check_module(head_a, "head_a", none=True)
    check_module(head_b, "head_b", none=True)
    if (head_a is None) != (head_b is None):
        raise ValueError("give both head_a and head_b (the heads of the two networks) or neither (the models are "
                         "classifiers themselves)")
    alphas_arr = _check_alphas(alphas)
    metrics = _check_metrics(metric)
    names = list(names)
    if len(names) != 2 or not all(isinstance(n, str) for n in names):
        raise ValueError(f"names must be two strings (the run labels of model_a and model_b), got {names!r}")
    evaluation = labelled_split(data, "data", split, target)
    end_a, end_b = Classifier(model_a, head_a), Classifier(model_b, head_b)  # read only: their state dicts
    state_a, state_b = _matching_states(end_a, end_b)
    bn = has_batchnorm(end_a)
    train_split = None
    if train_data is not None:
        train_split = training_split(train_data, "train_data")
    elif isinstance(data, wb_data.Dataset) and "train" in data:
        train_split = data["train"]
    if bn and batchnorm == "recompute" and train_split is None:
        raise ValueError("train_data is needed: the models have BatchNorm, whose statistics are recomputed at each "
                         "alpha (batchnorm='recompute'); pass train_data= a training Split, or "
                         "batchnorm='interpolate'")
    if not (bn and batchnorm == "recompute"):
        train_split = None
    if bn and batchnorm == "interpolate":
        warnings.warn("the models have BatchNorm and batchnorm='interpolate': the running statistics are averaged "
                      "like the weights, which need not match the averaged network's activations (Jordan et al. "
                      "2023) and can inflate the barrier; batchnorm='recompute' re-estimates them", stacklevel=2)
    net: Classifier = classifier_copy(model_a, head_a)
    rows = []
    for alpha in alphas_arr:
        net.load_state_dict(interpolate_state(state_a, state_b, float(alpha)))
        if train_split is not None:
            recompute_batchnorm(net, train_split)
        loss, acc = loss_and_accuracy(net, evaluation)
        values = {"loss": loss, "accuracy": acc}
        for m in metrics:
            rows.append({"measure": m, "split": split, "value": values[m], "mix": float(alpha)})
    return tidy(rows, run=names[0], run_b=names[1])


def _example_path() -> pd.DataFrame:
    rows = [{"run": "a", "run_b": "b", "split": "test", "measure": m, "mix": a, "value": v}
            for a, loss, acc in [(0.0, 0.2, 0.9), (0.5, 0.9, 0.6), (1.0, 0.4, 0.8)]
            for m, v in (("loss", loss), ("accuracy", acc))]
    return tidy(rows)


_BARRIER = {"loss": "loss_barrier", "accuracy": "error_barrier"}


@declare(table=Data("any", example=_example_path, bad=["table", tidy([{"measure": "loss", "value": 1.0}])]),
         reference=Options("linear", "mean"))
def barrier(table: pd.DataFrame, *, reference: str = "linear") -> pd.DataFrame:
    """The barrier height of each path in an :func:`interpolate` table.

    ``reference="linear"`` (default): ``B = max_α [L(θ(α)) − ((1 − α) L(θ_a) + α L(θ_b))]``, the largest rise
    of the loss above the straight line between the endpoints' losses (the barrier of Frankle et al. 2020's
    linear mode connectivity as written by Entezari et al. 2022, "The role of permutation invariance in linear
    mode connectivity of neural networks", ICLR). ``"mean"``: ``B = max_α L(θ(α)) − (L(θ_a) + L(θ_b)) / 2``,
    Frankle et al. 2020's instability ("Linear mode connectivity and the lottery ticket hypothesis", ICML,
    Sec. 2: the largest error along the path minus the mean of the endpoints' errors). Both are 0 for a flat
    path; the endpoints themselves (``α`` 0 and 1, which the table must hold) enter the maximum, so the
    linear barrier is ``>= 0``. ``loss`` rows give ``loss_barrier``; ``accuracy`` rows give ``error_barrier``,
    the same with the error ``1 − accuracy``.

    Returns
    -------
    DataFrame in the results schema: one row per path (``run``, ``run_b``, ``split``) and measure
    (``loss_barrier`` / ``error_barrier``), with ``mix`` = where the maximum is reached.

    >>> from workbench.results import tidy
    >>> path = tidy([{"measure": "loss", "mix": a, "value": v} for a, v in [(0, 1.0), (0.5, 2.5), (1, 2.0)]])
    >>> float(barrier(path)["value"].iloc[0])  # 2.5 - (1.0 + 2.0) / 2
    1.0
    """
    check_tidy(table, "barrier(table)", require=["mix"])
    data = table[table["measure"].isin(list(_BARRIER))]
    if data.empty:
        raise ValueError(f"table has no loss or accuracy rows (measures present: {sorted(set(table['measure']))}); "
                         "pass the table of workbench.mechanics.interpolate")
    keys = [c for c in ("run", "run_b", "step", "split", "measure") if c in data.columns]
    rows = []
    for key, group in data.groupby(keys, dropna=False, sort=False):
        info = dict(zip(keys, key))
        if group["mix"].duplicated().any():
            raise ValueError(f"table repeats an alpha for one path {info}; pass one interpolate() table per path "
                             "(distinct run / run_b / split)")
        g = group.sort_values("mix")
        alpha = g["mix"].to_numpy(np.float64)
        value = g["value"].to_numpy(np.float64)
        if info["measure"] == "accuracy":
            value = 1.0 - value  # error
        if not (np.any(alpha == 0.0) and np.any(alpha == 1.0)):
            raise ValueError(f"table has no rows at alpha 0 and 1 (column mix) for {info}; the barrier compares the "
                             "path with its endpoints — include 0 and 1 in interpolate(alphas=...)")
        end_a, end_b = value[alpha == 0.0][0], value[alpha == 1.0][0]
        if reference == "linear":
            excess = value - ((1.0 - alpha) * end_a + alpha * end_b)
        else:
            excess = value - 0.5 * (end_a + end_b)
        i = int(np.argmax(excess))
        rows.append({**info, "measure": _BARRIER[info["measure"]], "value": float(excess[i]),
                     "mix": float(alpha[i])})
    return tidy(rows)

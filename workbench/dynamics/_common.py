"""Shared plumbing of the dynamics measures: loss closures, eval mode, tidy frames, checkpoints.

A *loss* here is a callable ``loss(model) -> scalar tensor`` that evaluates one fixed batch: every
measure (gradient norms, layer skip, Hessian) calls it on the same model several times and needs the
same number back for the same weights. :func:`run_loss` builds it from a run's own training objective;
:func:`cross_entropy_loss` is the plain classifier loss; any closure of that shape works.
"""
from __future__ import annotations

import contextlib
import functools
import numbers
from collections.abc import Iterable
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from .._validation import Data, Instance, Interval, declare
from ..models import device_of
from ..results import COLUMNS, tidy

__all__ = ["LossFn", "run_loss", "objective_loss", "cross_entropy_loss", "over_checkpoints", "LAYER_COLUMNS"]

LossFn = Callable[[nn.Module], torch.Tensor]

#: every dynamics table is in the results schema (:mod:`workbench.results`): these columns first, then extras
LAYER_COLUMNS = list(COLUMNS)


def check_model(model: Any, name: str = "model") -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module (e.g. run.load_model(step)), got {type(model).__name__}")
    return model


def check_loss(loss: Any) -> LossFn:
    if not callable(loss) or isinstance(loss, nn.Module):
        raise TypeError("loss must be a callable loss(model) -> scalar tensor on one fixed batch (build one with "
                        f"workbench.dynamics.run_loss or cross_entropy_loss), got {type(loss).__name__}")
    return loss


def check_run(run: Any) -> Any:
    """``run`` must be a workbench Run (anything with its ``config``, ``name``, ``checkpoints`` and ``load_model``)."""
    if not all(hasattr(type(run), a) for a in ("config", "name", "checkpoints", "load_model")):
        raise TypeError(f"run must be a workbench Run (from workbench.train.train or RunStore.get), "
                        f"got {type(run).__name__}")
    return run


def scalar_loss(loss: LossFn, model: nn.Module) -> torch.Tensor:
    """Call ``loss(model)`` and check that it returned a finite scalar tensor."""
    value = loss(model)
    if not isinstance(value, torch.Tensor) or value.numel() != 1:
        raise TypeError(f"loss(model) must return a scalar torch tensor, got "
                        f"{type(value).__name__} {tuple(getattr(value, 'shape', ()))}")
    if not torch.isfinite(value.detach()).all():
        raise ValueError(f"loss(model) is {float(value)}; check the model's weights and the batch")
    return value.reshape(())


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode (no dropout, BatchNorm running statistics) inside the block; the previous mode after."""
    was = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was)


def math_attention():
    """Context where ``F.scaled_dot_product_attention`` uses its plain-math kernel: the fused CPU/CUDA
    kernels have no double backward (Hessian-vector products) and no vmap rule (per-example gradients)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.MATH])


def trainable(model: nn.Module, params: Sequence[torch.Tensor] | None = None) -> list[torch.Tensor]:
    """``params`` (validated) or every parameter of ``model`` with ``requires_grad``."""
    if params is None:
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError(f"{type(model).__name__} has no parameter with requires_grad=True")
        return params
    params = list(params)
    if not params or not all(isinstance(p, torch.Tensor) and p.requires_grad for p in params):
        raise TypeError("params must be a non-empty list of tensors with requires_grad=True "
                        "(e.g. list(model.layers[0].parameters())), or None for all trainable parameters")
    return params


def layer_order(model: nn.Module) -> dict[str, int]:
    """Probe-point name → its position in forward order (the ``layer_index`` of every table here)."""
    from ..models import probe_points

    return {name: i for i, name in enumerate(probe_points(model))}


def layer_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows with ``layer``, ``layer_index`` (the probe point's position in the model), ``measure``, ``value``
    (+ extras) → the results schema; ``run``/``step`` are NaN (:func:`over_checkpoints` fills them)."""
    return tidy(rows)


# ------------------------------------------------------------------------------------ declared examples
# Tiny valid arguments of the parameter declarations (``workbench._validation.declare``): the generated
# bad-input tests (tests/test_params.py) call every function with them and one bad value at a time.
def example_classifier(seed: int = 0) -> nn.Module:
    """An MLP classifier of ``Data.D`` features into ``Data.CLASSES`` classes (seeded, the caller's RNG untouched)."""
    from ..models import build

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build("mlp", input_shape=(Data.D,), num_classes=Data.CLASSES, hidden=(8,))


def example_inputs() -> np.ndarray:
    """``Data.N`` float32 examples of ``Data.D`` features (inputs of :func:`example_classifier`)."""
    return np.random.default_rng(0).normal(size=(Data.N, Data.D)).astype(np.float32)


def example_split() -> Any:
    """A labelled :class:`~workbench.data.Split` of :func:`example_inputs` (labels ``0 .. Data.CLASSES - 1``)."""
    from ..data import Split

    return Split(inputs=example_inputs(), labels=np.arange(Data.N) % Data.CLASSES)


def example_ce_loss() -> Callable[[nn.Module], torch.Tensor]:
    """:func:`cross_entropy_loss` of :func:`example_split` (a loss of :func:`example_classifier`)."""
    split = example_split()
    return cross_entropy_loss(torch.as_tensor(split.inputs), split.labels)


EXAMPLE_VOCAB = 10


def example_language_model(seed: int = 0) -> nn.Module:
    """A two-block causal Transformer LM over ``EXAMPLE_VOCAB`` tokens (seeded, the caller's RNG untouched)."""
    from ..models import build

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build("transformer", vocab_size=EXAMPLE_VOCAB, dim=8, depth=2, heads=2, max_len=8)


def example_tokens() -> np.ndarray:
    """Eight sequences of eight token ids (inputs of :func:`example_language_model`)."""
    return np.random.default_rng(0).integers(0, EXAMPLE_VOCAB, size=(8, 8))


def example_lm_loss() -> Callable[[nn.Module], torch.Tensor]:
    """Next-token cross-entropy on :func:`example_tokens` (a loss of :func:`example_language_model`)."""
    tokens = torch.as_tensor(example_tokens())

    def loss(model: nn.Module) -> torch.Tensor:
        logits = model(tokens)[:, :-1]
        return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))

    return loss


_EXAMPLE_STORES: list[Any] = []  # temporary run stores of example_run, removed at interpreter exit


@functools.lru_cache(maxsize=1)
def example_run() -> Any:
    """A tiny trained run (an MLP on a Gaussian mixture, checkpoints at steps 0 and 1, ``grad_norm`` recorded)
    in a temporary store; trained once per process."""
    import tempfile

    from ..runs import RunConfig
    from ..train import train

    store = tempfile.TemporaryDirectory(prefix="workbench-example-")
    _EXAMPLE_STORES.append(store)
    config = RunConfig(dataset="gaussian-mixture",
                       dataset_options={"n_train": 16, "n_test": 8, "n_ood": 0, "dim": Data.D, "latent_dim": 3},
                       model="mlp", model_options={"hidden": [8]}, objective="supervised", steps=1, batch_size=8,
                       checkpoints=1, recorders=("grad_norm",))
    return train(config, store.name, progress=False)


def example_measure(model: nn.Module) -> pd.DataFrame:
    """A ``measure(model) -> DataFrame`` for :func:`over_checkpoints`: the model's number of parameters."""
    return tidy([{"measure": "n_parameters", "value": float(sum(p.numel() for p in model.parameters()))}])


def model_rule(example: Callable[[], nn.Module] = example_classifier) -> Data:
    """Declaration of a model argument: a module (anything else is refused by the body, naming it)."""
    return Data("any", example=example, bad=["model", None])


def loss_rule(example: Callable[[], Callable] = example_ce_loss) -> Data:
    """Declaration of a ``loss(model) -> scalar`` argument (the body refuses a non-callable or a module)."""
    return Data("any", example=example, bad=[3.0, nn.Identity()])


RUN_RULE = Data("any", example=example_run, bad=["run", None])
LAYERS_RULE = Instance(Iterable, none=True)  # None, a regex string or a list of names (select_layers checks)


def _fork_rng(model: nn.Module):
    device = device_of(model)
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


def _example_objective() -> Any:
    """The training objective of :func:`example_run` (supervised cross-entropy), as the trainer builds it."""
    from .. import data as wb_data
    from ..train.objectives import make_objective

    run = example_run()
    config = run.config
    return make_objective(config, wb_data.load(config.dataset, **dict(config.dataset_options)), run.load_model())


def _example_batch() -> Any:
    """A :class:`~workbench.train.objectives.Batch` of :func:`example_split`."""
    from ..train.objectives import Batch

    split = example_split()
    return Batch(inputs=torch.as_tensor(split.inputs), labels=torch.as_tensor(split.labels), attention_mask=None,
                 index=np.arange(len(split)))


@declare(objective=Data("any", example=_example_objective, bad=["objective", None]),
         batch=Data("any", example=_example_batch), seed=Interval(int))
def objective_loss(objective: Any, batch: Any, *, seed: int = 0) -> LossFn:
    """``loss(model)`` = the training objective's loss on one fixed :class:`~workbench.train.objectives.Batch`.

    Objectives that draw randomness (MLM's masks, augmented views) draw it from torch's global RNG; here it
    is reseeded with ``seed`` inside a forked RNG on every call, so every call sees the same masks/views
    and the caller's RNG state is left untouched.
    """
    if not callable(objective):
        raise TypeError(f"objective must be a workbench Objective (workbench.train.objectives.make_objective), "
                        f"got {type(objective).__name__}")

    def loss(model: nn.Module) -> torch.Tensor:
        with _fork_rng(model):
            torch.manual_seed(seed)
            return objective(model, batch)[0]

    return loss


@declare(run=RUN_RULE, model=model_rule(lambda: example_run().load_model()), split=Instance(str),
         n=Interval(int, 1), seed=Interval(int))
def run_loss(run: Any, model: nn.Module, *, split: str = "test", n: int = 256, seed: int = 0) -> LossFn:
    """``loss(model)`` = ``run``'s own training objective on the first ``n`` rows of ``split`` of its dataset.

    The objective is built exactly as the trainer builds it (:func:`~workbench.train.objectives.make_objective`
    with the run's config); the batch never changes between calls (see :func:`objective_loss` for the seed).
    Supervised objectives read the split's clean labels.
    """
    from .. import data as wb_data
    from .._validation import check_positive_int
    from ..models.inputs import model_inputs
    from ..train.objectives import Batch, make_objective

    check_run(run)
    check_model(model)
    check_positive_int(n, "n")
    config = run.config
    ds = wb_data.load(config.dataset, **dict(config.dataset_options))
    if split not in ds:
        raise ValueError(f"split={split!r} is not a split of {config.dataset!r}; splits: {list(ds)}")
    objective = make_objective(config, ds, model)
    if objective is None:
        raise ValueError(f"run {run.name!r} has objective='none' (no loss); pass a loss such as cross_entropy_loss")
    part = ds[split]
    idx = np.arange(min(n, len(part)))
    device = device_of(model)
    args, kwargs = model_inputs(model, part, idx, device)
    labels = None if part.labels is None else torch.as_tensor(part.labels[idx], dtype=torch.long, device=device)
    batch = Batch(inputs=args[0], labels=labels, attention_mask=kwargs.get("attention_mask"), index=idx)
    return objective_loss(objective.eval(), batch, seed=seed)


@declare(inputs=Data("any", example=lambda: torch.as_tensor(example_inputs()), bad=["inputs", example_inputs()]),
         labels=Data("labels"), attention_mask=Data("any", none=True))
def cross_entropy_loss(inputs: Any, labels: Any, *, attention_mask: Any = None) -> LossFn:
    """``loss(model)`` = mean cross-entropy of ``model(inputs)`` (logits ``[N, C]``) against ``labels``."""
    from .._validation import check_labels, check_same_length

    if not isinstance(inputs, torch.Tensor):
        raise TypeError(f"inputs must be a torch tensor (one batch), got {type(inputs).__name__}")
    if isinstance(labels, (list, tuple)) or (isinstance(labels, np.ndarray) and labels.dtype == object):
        arr = np.asarray(labels, dtype=object)  # Python ints (e.g. an object array of ids): converted, nothing else
        if arr.ndim == 1 and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in arr):
            labels = arr.astype(np.int64)
    y = torch.as_tensor(check_labels(labels, "labels", min_classes=1))
    check_same_length(inputs=inputs, labels=y)
    if int(y.min()) < 0:
        raise ValueError(f"labels must be class ids 0..C-1 (they index the logits' columns), got {int(y.min())}; "
                         "map them with np.unique(labels, return_inverse=True)")
    kwargs = {} if attention_mask is None else {"attention_mask": torch.as_tensor(attention_mask)}

    def loss(model: nn.Module) -> torch.Tensor:
        device = device_of(model)
        logits = model(inputs.to(device), **{k: v.to(device) for k, v in kwargs.items()})
        if logits.ndim != 2:
            raise ValueError(f"cross_entropy_loss needs classifier logits [N, C]; the model returned "
                             f"{tuple(logits.shape)} (for a language model use run_loss)")
        if int(y.max()) >= logits.shape[1]:
            raise ValueError(f"labels must be class ids in 0..{logits.shape[1] - 1} (the model returns "
                             f"{logits.shape[1]} logits per example), got {int(y.max())}")
        return nn.functional.cross_entropy(logits, y.to(device))

    return loss


@declare(run=RUN_RULE, measure=Data("any", example=lambda: example_measure, bad=["measure", None]),
         steps=Instance(Iterable), device=Instance(str, torch.device))
def over_checkpoints(run: Any, measure: Callable[[nn.Module], pd.DataFrame], *, steps: Any = "all",
                     device: str = "cpu") -> pd.DataFrame:
    """``measure(model)`` at each checkpoint of ``run``, stacked with ``run`` and ``step`` columns in front
    (filled with the run's name and the checkpoint step; a results-schema table stays one).

    ``steps``: ``"all"`` (every checkpoint), ``"final"`` or a list of checkpoint steps.
    Example: ``over_checkpoints(run, lambda m: layer_grad_norms(m, run_loss(run, m)))``.
    """
    check_run(run)
    if not callable(measure):
        raise TypeError(f"measure must be a callable measure(model) -> DataFrame, got {type(measure).__name__}")
    ckpts = run.checkpoints()
    if not ckpts:
        raise ValueError(f"run {run.name!r} has no checkpoints yet; train it first")
    if isinstance(steps, str):
        if steps not in ("all", "final"):
            raise ValueError(f"steps={steps!r} must be 'all', 'final' or a list of checkpoint steps {ckpts}")
        chosen = ckpts if steps == "all" else [ckpts[-1]]
    else:
        chosen = [int(s) for s in steps]
        missing = sorted(set(chosen) - set(ckpts))
        if missing:
            raise ValueError(f"steps {missing} are not checkpoints of run {run.name!r}; checkpoints: {ckpts}")
    parts = []
    for step in chosen:
        df = measure(run.load_model(step, device=device))
        if not isinstance(df, pd.DataFrame):
            raise TypeError(f"measure must return a DataFrame, got {type(df).__name__}")
        parts.append(df.assign(run=run.name, step=step))
    out = pd.concat(parts, ignore_index=True)
    return out[["run", "step", *[c for c in out.columns if c not in ("run", "step")]]]


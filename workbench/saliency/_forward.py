"""Shared plumbing: inputs, the scoring forward function, targets, batching with out-of-memory back-off."""
from __future__ import annotations

import contextlib
import dataclasses
import numbers
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .. import _memory
from .._validation import check_finite
from ..data import Split
from ..models.inputs import model_inputs

OutputFn = Callable[..., torch.Tensor]

# Bytes of layer outputs per forward chunk on the CPU: small enough to stay near the caches of a laptop
# CPU, large enough that per-call overhead is amortised (tuned with benchmarks/bench_saliency.py).
CPU_BUDGET_BYTES = 512 * 2 ** 20
# On CUDA: this fraction of the free device memory.
CUDA_BUDGET_FRACTION = 0.25


@dataclasses.dataclass
class Batch:
    """Model inputs: ``x`` (float inputs or long token ids) and extra forward tensors by name."""

    x: torch.Tensor
    extra: dict[str, torch.Tensor]
    kind: str  # "image" | "signal" | "features" | "tokens"

    def __len__(self) -> int:
        return len(self.x)

    def rows(self, lo: int, hi: int) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        return self.x[lo:hi], tuple(v[lo:hi] for v in self.extra.values())


class Scorer(nn.Module):
    """``scores = output(model(x, *extra), **extra)``: ``[N]`` (one score per example) or ``[N, K]``.

    With ``output=None`` the model's own output is the scores (logits of a classifier).
    """

    def __init__(self, model: nn.Module, output: OutputFn | None, extra_names: Sequence[str] = ()):
        super().__init__()
        self.model = model
        self.output = output
        self.extra_names = tuple(extra_names)

    def forward(self, x: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        out = self.model(x, *extra)
        if self.output is not None:
            out = self.output(out, **dict(zip(self.extra_names, extra)))
        return out


def model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def model_dtype(model: nn.Module) -> torch.dtype:
    p = next((p for p in model.parameters() if p.is_floating_point()), None)
    return p.dtype if p is not None else torch.float32


def check_model(model: Any) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return model


def check_output(output: Any) -> OutputFn | None:
    if output is not None and not callable(output):
        raise TypeError("output must be None (the model returns class scores) or a callable "
                        f"output(model_output, **extra_inputs) -> scores [N] or [N, K], got {type(output).__name__}")
    return output


def as_batch(model: nn.Module, inputs: Any, name: str = "inputs") -> Batch:
    """Validate ``inputs`` and move them to the model's device.

    Accepted: a float tensor/array ``[N, C, H, W]`` (image), ``[N, C, L]`` (signal) or ``[N, D]`` / ``[N, L]``
    (features); an integer tensor ``[N, T]`` of token ids; a mapping with ``input_ids`` (and optionally
    ``attention_mask``), as returned by ``HFModel.tokenize``; or a workbench ``Split``.
    """
    device = model_device(model)
    extra: dict[str, torch.Tensor] = {}
    if isinstance(inputs, Split):
        args, kwargs = model_inputs(model, inputs, slice(None), device)
        x, extra = args[0], dict(kwargs)
    elif isinstance(inputs, Mapping):
        unknown = set(inputs) - {"input_ids", "attention_mask"}
        if "input_ids" not in inputs or unknown:
            raise ValueError(f"{name} as a mapping must hold 'input_ids' and optionally 'attention_mask' "
                             f"(as from model.tokenize(texts)); got keys {sorted(inputs)}")
        x = torch.as_tensor(inputs["input_ids"], device=device)
        if inputs.get("attention_mask") is not None:
            extra["attention_mask"] = torch.as_tensor(inputs["attention_mask"], device=device).long()
    elif isinstance(inputs, (torch.Tensor, np.ndarray)):
        x = torch.as_tensor(inputs).to(device)
    else:
        raise TypeError(f"{name} must be a tensor, numpy array, token mapping or workbench Split, "
                        f"got {type(inputs).__name__}")
    if x.dtype == torch.bool or x.is_complex():
        raise TypeError(f"{name} must be real numbers or integer token ids, got dtype {x.dtype}")
    if not x.is_floating_point():
        if x.dim() != 2:
            raise ValueError(f"integer {name} are token ids and must be [N, T], got shape {tuple(x.shape)}")
        kind = "tokens"
        x = x.long()
        mask = extra.get("attention_mask")
        if mask is not None and mask.shape != x.shape:
            raise ValueError(f"attention_mask has shape {tuple(mask.shape)} but input_ids {tuple(x.shape)}")
    else:
        kinds = {2: "features", 3: "signal", 4: "image"}
        if x.dim() not in kinds:
            raise ValueError(f"{name} must be [N, C, H, W] images, [N, C, L] or [N, L] signals or [N, D] "
                             f"features, got shape {tuple(x.shape)}; add the batch dimension with x[None]")
        kind = kinds[x.dim()]
        x = x.to(model_dtype(model))
        check_finite(x, name)
    if len(x) == 0:
        raise ValueError(f"{name} holds no examples")
    return Batch(x, extra, kind)


def run_batched(fn: Callable[[int, int], Any], n: int, batch_size: int) -> tuple[list[Any], int]:
    """:func:`workbench._memory.run_batched` (halve the chunk on out-of-memory) with attribution's advice."""
    return _memory.run_batched(fn, n, batch_size, hint="reduce the method's work per example (e.g. n_steps, "
                               "n_samples, perturbations_per_eval) or use a smaller input")


def row_bytes(scorer: Scorer, batch: Batch) -> int:
    """Bytes of all leaf-module outputs for one example (one forward, no grad) — the activation footprint."""
    total = [0]

    def hook(_m, _i, out):
        if isinstance(out, torch.Tensor):
            total[0] += out.numel() * out.element_size()

    leaves = [m for m in scorer.modules() if not any(True for _ in m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        x, extra = batch.rows(0, 1)
        with torch.no_grad():
            scorer(x, *extra)
    finally:
        for h in handles:
            h.remove()
    return max(total[0], x.numel() * x.element_size())


def auto_batch_size(scorer: Scorer, batch: Batch, expansion: int, *, backward: bool = True) -> int:
    """Examples per chunk so that ``examples x expansion`` forward rows fit the memory budget.

    Budget: :data:`CPU_BUDGET_BYTES` of layer outputs on the CPU, :data:`CUDA_BUDGET_FRACTION` of the free
    memory on CUDA. A backward pass roughly doubles the footprint (saved activations + their gradients).
    """
    device = batch.x.device
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        budget = CUDA_BUDGET_FRACTION * free
    else:
        budget = CPU_BUDGET_BYTES
    probe, _ = run_batched(lambda lo, hi: row_bytes(scorer, batch), 1, 1)  # the clear error if one row fails
    per_row = probe[0] * (2 if backward else 1)
    rows = max(1, int(budget // per_row))
    return int(min(len(batch), max(1, rows // max(1, expansion))))


def scores(scorer: Scorer, batch: Batch, batch_size: int | None = None) -> torch.Tensor:
    """Scores ``[N]`` or ``[N, K]`` of the whole batch, without gradients, chunked with OOM back-off."""
    if batch_size is None:
        batch_size = auto_batch_size(scorer, batch, 1, backward=False)

    def chunk(lo, hi):
        x, extra = batch.rows(lo, hi)
        with torch.no_grad():
            return check_scores(scorer(x, *extra), hi - lo)

    parts, _ = run_batched(chunk, len(batch), batch_size)
    return torch.cat(parts)


def check_scores(out: Any, n: int) -> torch.Tensor:
    if not isinstance(out, torch.Tensor) or out.dim() not in (1, 2) or len(out) != n:
        desc = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"the model output (after output=) must be scores [N] or [N, K] for the {n} examples, "
                         f"got {desc}; pass output=... mapping the model output to scores, e.g. "
                         "workbench.saliency.cosine_to(reference) or linear_head(head) for embedding models")
    return out


def resolve_targets(target: Any, s: torch.Tensor) -> torch.Tensor | None:
    """Targets as a LongTensor ``[N]`` (``None`` = predicted class), or None for one-score outputs."""
    n = len(s)
    if s.dim() == 1:
        if target is not None:
            raise ValueError("the model output (after output=) is one score per example, so target must be None; "
                             "return [N, K] scores from output= to choose a class")
        return None
    k = s.shape[1]
    if target is None:
        return s.argmax(1).long().cpu()
    if isinstance(target, numbers.Integral) and not isinstance(target, bool):
        t = torch.full((n,), int(target), dtype=torch.long)
    else:
        if isinstance(target, (str, bytes)) or not isinstance(target, (Sequence, np.ndarray, torch.Tensor)):
            raise TypeError(f"target must be None, an int or a sequence of ints (one per example), "
                            f"got {type(target).__name__}")
        t = torch.as_tensor(np.asarray(target.cpu() if isinstance(target, torch.Tensor) else target))
        if t.dim() != 1 or len(t) != n:
            raise ValueError(f"target has {len(t) if t.dim() else 'a scalar'} entries but there are {n} examples; "
                             "pass one class per example, one int for all, or None for the predicted class")
        if t.is_floating_point() or t.dtype == torch.bool:
            raise TypeError(f"target must hold integer class ids, got dtype {t.dtype}")
        t = t.long()
    if t.min() < 0 or t.max() >= k:
        raise ValueError(f"target must be class ids in [0, {k - 1}] (the scores have {k} columns), "
                         f"got values from {int(t.min())} to {int(t.max())}")
    return t


def target_scores(s: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
    """The score of each example's target, ``[N]``."""
    if targets is None:
        return s
    return s.gather(1, targets.to(s.device)[:, None])[:, 0]


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Evaluate in eval mode (no dropout, running BatchNorm statistics), restoring the previous mode."""
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)

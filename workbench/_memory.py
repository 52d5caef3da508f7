"""Out-of-memory handling shared by every forward loop (extraction, attribution): detect, back off, retry.

A forward pass that does not fit is retried on half the examples until it fits (or fails with one example), so a
batch size chosen on a laptop does not fail on a smaller GPU, and one chosen for an idle GPU survives a neighbour.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable

import torch

__all__ = ["is_oom", "run_batched"]


def is_oom(err: BaseException) -> bool:
    """True for CUDA's ``OutOfMemoryError`` and any ``RuntimeError`` whose message says 'out of memory' (the CPU
    allocator's and other backends')."""
    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is not None and isinstance(err, oom):
        return True
    return isinstance(err, RuntimeError) and "out of memory" in str(err).lower()


def run_batched(fn: Callable[[int, int], Any], n: int, batch_size: int, *, start: int = 0,
                hint: str = "use a smaller input") -> tuple[list[Any], int]:
    """Call ``fn(lo, hi)`` on consecutive chunks of ``range(start, n)``; on out-of-memory halve the chunk and retry
    it (a ``RuntimeWarning`` says so once per halving).

    Returns the list of results and the final chunk size. An out-of-memory error with a chunk of one example is
    raised as a ``RuntimeError`` ending with ``hint``; other errors pass through unchanged.

    >>> def fn(lo, hi):
    ...     if hi - lo > 2:
    ...         raise RuntimeError("CUDA out of memory (simulated)")
    ...     return (lo, hi)
    >>> import warnings
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     run_batched(fn, 5, 4)
    ([(0, 2), (2, 4), (4, 5)], 2)
    """
    out, lo, size = [], start, max(1, int(batch_size))
    while lo < n:
        hi = min(n, lo + size)
        try:
            out.append(fn(lo, hi))
        except Exception as err:  # only out-of-memory errors are handled
            if not is_oom(err):
                raise
            if hi - lo == 1:
                raise RuntimeError(f"out of memory with a batch of one example; {hint}") from err
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            size = max(1, (hi - lo) // 2)
            warnings.warn(f"out of memory with a batch of {hi - lo}; retrying with {size}", RuntimeWarning,
                          stacklevel=3)
            continue
        lo = hi
    return out, size

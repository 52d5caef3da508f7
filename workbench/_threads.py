"""Thread policy for torch work on a CPU that other processes may share.

torch starts with one intra-op thread per core. Every parallel region then waits for its slowest thread, so when
another process holds a core, each of the many small kernels of a small model's training step waits for a
descheduled thread, and torch's OpenMP runtime spins while it waits, taking time from the competitor in turn.
Measured on the 2-core CPU this project is developed on (``benchmarks/bench_contention.py``, one round on a machine
other sessions also used; the quick demo's CNN, width 16 / depth 3, batch 128, 32 x 32 images; ms per training step
through ``workbench.train.train``):

==================================  =========  ========
machine                              2 threads  1 thread
==================================  =========  ========
idle                                 107        145
one NumPy matmul loop                1742       263
one torch training loop (default)    1278       173
two torch training loops (default)   5496       484
==================================  =========  ========

Two threads win by ~1.35x on an idle machine and lose by 7-11x as soon as one other process runs, so the policy
(:func:`training_threads`) keeps one core free for everybody else: ``max(1, cores - 1)`` threads, and 1 for small
models (parameters x examples per step below :data:`SMALL_WORK`) whatever the machine. On 2 cores that is one
thread. The count depends on the machine and the model only, never on the load at the moment training starts:
float reductions depend on the thread count, so a load-dependent count would make a run's weights (and a resume
after a kill) depend on what else happened to run. ``busy=busy_cores()`` opts into skipping busy cores.

Override, in this order: the ``threads`` argument of :func:`training_threads` / :func:`thread_policy` (an int, or
``"torch"`` to leave torch's own setting), then an enclosing :func:`torch_threads` block with a count
(``Finding.run(threads=1)`` trains its runs with one thread whatever the machine), then the ``WORKBENCH_THREADS``
environment variable (same values as the argument, or ``"auto"`` for the policy), then the policy.

What torch honours at run time: ``torch.set_num_threads`` (intra-op; also sets MKL's and OpenMP's count) at any
time, which is what :func:`torch_threads` does and undoes. ``torch.set_num_interop_threads`` can be called once,
before the first inter-op work, so it is left alone (plain training does not use the inter-op pool). The OpenMP
wait policy cannot be changed at run time: torch's bundled GNU libgomp reads ``OMP_WAIT_POLICY`` and
``GOMP_SPINCOUNT`` once, when ``import torch`` loads it; ``KMP_BLOCKTIME`` belongs to Intel's OpenMP runtime and
is ignored by libgomp. With one thread there is no team to spin for, so the policy does not need them; for child
processes :func:`thread_env` sets them (``OMP_WAIT_POLICY=PASSIVE``) together with the thread counts.
"""
from __future__ import annotations

import contextlib
import contextvars
import math
import os
import time
from typing import Iterator

__all__ = ["ENV", "SMALL_WORK", "training_threads", "torch_threads", "thread_policy", "thread_env", "usable_cores",
           "busy_cores"]

#: environment variable overriding the policy: a positive integer, ``"torch"`` (leave torch's setting) or ``"auto"``
ENV = "WORKBENCH_THREADS"
#: parameters x examples per step below which a model trains with one thread on any machine
SMALL_WORK = 50_000_000
#: the count of the innermost :func:`torch_threads` block with an explicit count (the policy keeps it inside)
_PINNED: contextvars.ContextVar[int | None] = contextvars.ContextVar("workbench_threads_pinned", default=None)


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS reports it, else ``os.cpu_count()``)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _cpu_times() -> tuple[float, float] | None:
    try:
        with open("/proc/stat") as f:
            fields = [float(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    return sum(fields[:8]) - idle, sum(fields[:8])  # busy, total (user .. steal; guest is counted in user)


def busy_cores(interval: float = 0.05) -> float:
    """Cores other processes keep busy, sampled from ``/proc/stat`` over ``interval`` seconds (0.0 where the OS
    does not report it). This process sleeps while sampling, so it counts only the others."""
    first = _cpu_times()
    if first is None:
        return 0.0
    time.sleep(interval)
    second = _cpu_times()
    if second is None or second[1] <= first[1]:
        return 0.0
    return (os.cpu_count() or 1) * (second[0] - first[0]) / (second[1] - first[1])


def _parse(value: int | str | None, name: str) -> int | str | None:
    """A validated override: a positive int, ``"torch"``, or None for the policy (``None`` / ``"auto"`` / ``""``)."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "auto")):
        return None
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "torch":
            return "torch"
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"{name}={value!r} is not a thread count; use a positive integer, 'torch' (leave "
                             f"torch's setting) or 'auto' (the workbench policy)") from None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r} is not a thread count; use a positive integer, 'torch' (leave torch's "
                         f"setting) or 'auto' (the workbench policy)")
    return value


def training_threads(model_size: int | None = None, batch_size: int | None = None, *,
                     threads: int | str | None = None, cores: int | None = None,
                     busy: float | None = None) -> int | None:
    """Intra-op threads for training (or other torch work) on a CPU others may share.

    Parameters
    ----------
    model_size : number of parameters, if known (with ``batch_size`` it decides the small-model rule).
    batch_size : examples per step.
    threads : explicit choice, overriding ``WORKBENCH_THREADS`` and the policy: a positive int, ``"torch"`` (leave
        torch's setting) or ``"auto"`` / None (no override).
    cores : usable cores (default :func:`usable_cores`).
    busy : cores other processes keep busy, e.g. ``busy_cores()`` (default 0: the count must not depend on the
        machine's load, because results depend on the thread count; see the module docstring).

    Returns
    -------
    int or None
        The thread count, or None for "leave torch's setting" (``"torch"``).
    """
    choice = _parse(threads, "threads")
    if choice is None:
        choice = _PINNED.get()
    if choice is None:
        choice = _parse(os.environ.get(ENV), ENV)
    if choice == "torch":
        return None
    if choice is not None:
        return int(choice)
    for name, value in (("model_size", model_size), ("batch_size", batch_size), ("cores", cores)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
    if model_size is not None and batch_size is not None and model_size * batch_size < SMALL_WORK:
        return 1
    cores = usable_cores() if cores is None else cores
    if cores <= 2:  # one core left for everybody else leaves one
        return 1
    if busy is None:
        busy = 0.0
    if isinstance(busy, bool) or not isinstance(busy, (int, float)) or not math.isfinite(busy) or busy < 0:
        raise ValueError(f"busy must be a non-negative number of cores, got {busy!r}")
    return max(1, min(cores - 1, math.floor(cores - busy) - 1))


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[int]:
    """Run the block with ``n`` torch intra-op threads (None: unchanged) and restore the caller's count after.

    Inside a block with a count, :func:`training_threads` (and so ``train``) keeps that count unless its own
    ``threads`` argument says otherwise. Yields the count in effect inside the block.
    """
    import torch

    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"threads must be a positive integer or None, got {n!r}")
    before = torch.get_num_threads()
    if n is not None and n != before:
        torch.set_num_threads(n)
    token = _PINNED.set(n) if n is not None else None
    try:
        yield torch.get_num_threads()
    finally:
        if token is not None:
            _PINNED.reset(token)
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def thread_policy(model_size: int | None = None, batch_size: int | None = None, *,
                  threads: int | str | None = None) -> contextlib.AbstractContextManager[int]:
    """:func:`torch_threads` with the count :func:`training_threads` chooses (overrides included)."""
    return torch_threads(training_threads(model_size, batch_size, threads=threads))


def thread_env(threads: int, *, passive: bool = True, env: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a child process that should use ``threads`` threads in every runtime it may load (OpenMP,
    MKL, OpenBLAS, BLIS, numexpr, Accelerate, ``WORKBENCH_THREADS``); with ``passive`` its OpenMP threads sleep
    instead of spinning while they wait (``OMP_WAIT_POLICY=PASSIVE``). Starts from ``env`` (default
    ``os.environ``)."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    out = dict(os.environ if env is None else env)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "BLIS_NUM_THREADS",
                "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", ENV):
        out[var] = str(threads)
    if passive:
        out["OMP_WAIT_POLICY"] = "PASSIVE"
    else:
        out.pop("OMP_WAIT_POLICY", None)
    return out

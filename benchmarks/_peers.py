"""Every side of a benchmark at its best: each configuration in its own process, its thread count fixed in the
environment before NumPy / torch load, configurations interleaved and repeated, medians reported (issue 15).

A configuration is ``(side, threads, jobs)``: ``threads`` BLAS / OpenMP / torch threads per process, ``jobs``
joblib worker processes (1: none). The best configuration of a side is the one with the smallest median time.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, Sequence

from workbench._threads import thread_env

CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def thread_counts() -> list[int]:
    """1 thread and all threads (one entry on a 1-core machine)."""
    return sorted({1, CORES})


def run_child(argv: Sequence[str], threads: int, *, timeout: float | None = None) -> dict:
    """Run ``python argv... --child-out FILE`` with ``threads`` threads in every runtime; return FILE's JSON."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.json"
        env = thread_env(threads, passive=False)
        subprocess.run([sys.executable, *argv, "--child-out", str(out)], env=env, check=True, timeout=timeout)
        return json.loads(out.read_text())


def interleave(configs: dict[str, Callable[[], dict]], repeats: int) -> dict[str, list[dict]]:
    """Call every configuration ``repeats`` times, rotating the order each round (so drift in the machine's load
    spreads over all of them); returns each configuration's results in call order."""
    names = list(configs)
    out: dict[str, list[dict]] = {k: [] for k in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            out[name].append(configs[name]())
    return out


def median(values: Sequence[float]) -> float:
    s = sorted(values)
    n = len(s)
    return float(s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2)


def best(times: dict[str, float], prefix: str) -> tuple[str, float]:
    """The configuration named ``prefix...`` with the smallest time."""
    k = min((k for k in times if k.startswith(prefix)), key=times.__getitem__)
    return k, times[k]


def label(side: str, threads: int, jobs: int = 1) -> str:
    return f"{side} [{threads} thread{'s' if threads > 1 else ''}" + (f", joblib {jobs} jobs]" if jobs > 1 else "]")

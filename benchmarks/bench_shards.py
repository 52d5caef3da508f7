"""Sharded extraction (issue 17): one dataset extracted by ``k`` worker processes into one cache, against one process.

Workload: every probe point of the demo's CNN (width 16, depth 3) on ``--n`` procedural ``shapes`` images (32 px),
mean-pooled, written to a fresh activation cache. Sides, each a fresh Python process started before the clock (imports
and model construction are not timed; every process builds the same seeded model), in ``--rounds`` interleaved rounds,
medians reported:

- ``one``    : one process, ``extract(model, data, cache=dir)`` (torch at its best thread count on this machine: all
               cores, and 1 thread — both measured, the faster kept as the peer);
- ``shards`` : ``k`` processes (one torch thread each), worker ``i`` calls ``extract(..., cache=dir, shard=(i, k))``;
               the clock stops when the last block is written. Then one more call without ``shard`` returns the
               whole (its blocks joined on read) — timed separately (``merge_s``) and checked equal to the
               single-process result (max abs difference printed).

The machine's core count is printed and recorded (``os.cpu_count()``): on a 2-core machine ``k = 2`` is the most that
can help.

    python benchmarks/bench_shards.py [--n 8192] [--shards 2] [--rounds 3] [--out benchmarks/results]

Results go to ``benchmarks/results/shards.json`` (and are printed).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_CHILD = r"""
import os, sys, time
threads, n, cache, i, k = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
import torch
torch.set_num_threads(threads)
from workbench import data, models
from workbench.activations import extract
ds = data.load("shapes", n_train=n, n_test=16, n_ood=16, size=32, seed=0)
torch.manual_seed(0)
model = models.build("cnn", input_shape=(3, 32, 32), num_classes=ds.num_classes, width=16, depth=3)
print("ready", flush=True)
sys.stdin.readline()  # the clock starts when every process is ready
t0 = time.perf_counter()
extract(model, ds["train"], cache=cache, shard=None if k == 1 else (i, k))
print(f"done {time.perf_counter() - t0:.6f}", flush=True)
"""


def _run(n: int, cache: str, k: int, threads: int) -> float:
    """Wall time from releasing ``k`` ready processes to the last one finishing."""
    procs = [subprocess.Popen([sys.executable, "-c", _CHILD, str(threads), str(n), cache, str(i), str(k)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for i in range(k)]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    t0 = time.perf_counter()
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    for p in procs:
        line = p.stdout.readline().strip()
        assert line.startswith("done"), line
        p.wait()
    return time.perf_counter() - t0


def _merged(n: int, cache: str):
    import torch

    from workbench import data, models
    from workbench.activations import extract

    ds = data.load("shapes", n_train=n, n_test=16, n_ood=16, size=32, seed=0)
    torch.manual_seed(0)
    model = models.build("cnn", input_shape=(3, 32, 32), num_classes=ds.num_classes, width=16, depth=3)
    t0 = time.perf_counter()
    acts = extract(model, ds["train"], cache=cache)
    layers = {name: acts[name] for name in acts.layers}  # read every layer: the blocks are joined here
    return time.perf_counter() - t0, layers, acts.meta["cached"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=8192)
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    times: dict[str, list[float]] = {f"one_{cores}threads": [], "one_1thread": [], "shards": []}
    merge, max_diff = [], 0.0
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b, \
                tempfile.TemporaryDirectory() as c:
            times[f"one_{cores}threads"].append(_run(args.n, a, 1, cores))
            times["one_1thread"].append(_run(args.n, b, 1, 1))
            times["shards"].append(_run(args.n, c, args.shards, 1))
            m, merged, cached = _merged(args.n, c)
            assert cached, "the merge ran the model"
            merge.append(m)
            _, whole, _ = _merged(args.n, a)
            max_diff = max(max_diff, max(float((merged[k] - whole[k]).abs().max()) for k in whole))
    med = {k: statistics.median(v) for k, v in times.items()}
    peer = min((k for k in med if k.startswith("one")), key=med.get)
    ratio = med[peer] / med["shards"]
    print(f"machine: {cores} cores ({platform.processor() or platform.machine()}); N={args.n} shapes images, "
          f"demo CNN, every probe point, mean-pooled, into a fresh cache; medians of {args.rounds} rounds")
    for k, v in med.items():
        print(f"  {k:16s} {v:7.2f} s")
    print(f"  merge (no forward: blocks joined on read) {statistics.median(merge):.3f} s; "
          f"max |sharded - one process| = {max_diff:.2e}")
    print(f"{args.shards} shard processes vs one process at its best ({peer}): {ratio:.2f}x")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {"benchmark": "shards", "cores": cores, "n": args.n, "shards": args.shards, "rounds": args.rounds,
              "seconds": times, "median_s": med, "merge_s": merge, "peer": peer, "speedup_vs_peer": ratio,
              "max_abs_diff": max_diff}
    (out / "shards.json").write_text(json.dumps(record, indent=2))
    print(f"wrote {out / 'shards.json'}")


if __name__ == "__main__":
    main()

"""Activation capture: overhead against a bare forward pass, cache speed-up, peak memory (issue 2).

Peer: the bare forward pass over the same batches (same input conversion, inference mode, no hooks) —
the least any capture can cost. Measured, one run each after one warm-up pass:

- ``overhead``   : median over 7 interleaved pairs of extract(all probe points, pool="mean", in memory)
                   time / bare forward time, minus 1 (target ≤ 10 %)
- ``cache``      : cold extract into a cache dir (model runs + write) vs the warm call (reads the memmaps);
                   speed-up = cold / warm (target ≥ 10×)
- ``memory``     : peak RSS of a fresh process that extracts ``pool="flatten"`` (wide layers) for a large N
                   in memory vs spilled to a cache dir, each minus the peak RSS of the bare forward pass.

    python benchmarks/bench_activations.py [--n 8192] [--device cpu|cuda] [--out benchmarks/results]

Results go to ``benchmarks/results/activations.json`` (and are printed).
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _setup(n: int, device: str):
    from workbench import data, models

    ds = data.load("shapes", n_train=n, n_test=16, n_ood=16, size=32, seed=0)
    model = models.build("cnn", input_shape=(3, 32, 32), num_classes=ds.num_classes, width=16, depth=3).to(device)
    return ds["train"], model


def _bare(model, split, batch_size: int, device: str) -> None:
    from workbench.models.inputs import call_model

    model.eval()
    with torch.inference_mode():
        for start in range(0, len(split), batch_size):
            call_model(model, split, slice(start, min(start + batch_size, len(split))), device)
    if device == "cuda":
        torch.cuda.synchronize()


def _timed(fn, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def speed(n: int, device: str, batch_size: int = 256, rounds: int = 7) -> dict:
    from workbench.activations import extract
    from workbench.models import probe_points

    split, model = _setup(n, device)
    _bare(model, split, batch_size, device)  # warm-up
    pairs = []
    for i in range(rounds):  # interleaved pairs in alternating order, so drift in load hits both alike
        timed_bare = lambda: _timed(lambda: _bare(model, split, batch_size, device), repeats=1)  # noqa: E731
        timed_capture = lambda: _timed(lambda: extract(model, split, pool="mean", batch_size=batch_size), 1)  # noqa: E731
        if i % 2:
            c = timed_capture()
            pairs.append((timed_bare(), c))
        else:
            pairs.append((timed_bare(), timed_capture()))
    bare = float(np.median([p[0] for p in pairs]))
    capture = float(np.median([p[1] for p in pairs]))
    ratio = float(np.median([c / b for b, c in pairs]))
    with tempfile.TemporaryDirectory() as tmp:
        cold = []
        for i in range(3):  # a fresh directory each time, so every call misses
            d = Path(tmp) / f"c{i}"
            t0 = time.perf_counter()
            extract(model, split, pool="mean", batch_size=batch_size, cache=d)
            cold.append(time.perf_counter() - t0)

        def warm_read():
            acts = extract(model, split, pool="mean", batch_size=batch_size, cache=Path(tmp) / "c0")
            assert acts.meta["cached"]
            for name in acts:  # materialise every layer, as a measure would
                acts[name].sum()
        warm = _timed(warm_read)
    return {"n": n, "batch_size": batch_size, "layers": len(probe_points(model)),
            "bare_forward_s": bare, "extract_in_memory_s": capture, "overhead": ratio - 1, "rounds": rounds,
            "extract_cold_cache_s": min(cold), "extract_warm_cache_s": warm, "cache_speedup": min(cold) / warm}


def _memory_child(mode: str, n: int, device: str) -> None:
    """Run in a fresh process: one job, then print peak RSS (MiB)."""
    from workbench.activations import extract

    split, model = _setup(n, device)
    if mode == "bare":
        _bare(model, split, 256, device)
    elif mode == "memory":
        acts = extract(model, split, pool="flatten", layers=["stem", "stage1"])
        shapes = {k: tuple(v.shape) for k, v in acts.items()}
    else:
        with tempfile.TemporaryDirectory() as tmp:
            acts = extract(model, split, pool="flatten", layers=["stem", "stage1"], cache=tmp)
            shapes = {k: acts.shape(k) for k in acts.layers}  # header only: nothing loaded
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = {"peak_rss_mib": peak_mib}
    if mode != "bare":
        out["activation_mib"] = sum(int(np.prod(s)) * 4 for s in shapes.values()) / 2**20
    print(json.dumps(out))


def memory(n: int, device: str) -> dict:
    res = {}
    for mode in ("bare", "memory", "spill"):
        proc = subprocess.run([sys.executable, __file__, "--child", mode, "--n", str(n), "--device", device],
                              capture_output=True, text=True, check=True)
        res[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    base = res["bare"]["peak_rss_mib"]
    return {"n": n, "layers": ["stem", "stage1"], "pool": "flatten",
            "activation_mib": res["memory"]["activation_mib"],
            "peak_rss_bare_mib": base,
            "extra_rss_in_memory_mib": res["memory"]["peak_rss_mib"] - base,
            "extra_rss_spilled_mib": res["spill"]["peak_rss_mib"] - base}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=8192)
    ap.add_argument("--n-memory", type=int, default=8192)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--child", choices=("bare", "memory", "spill"))
    args = ap.parse_args()
    if args.child:
        _memory_child(args.child, args.n, args.device)
        return
    torch.manual_seed(0)
    s = speed(args.n, args.device)
    print(f"capture ({s['layers']} layers, N={s['n']}, {args.device}): bare forward {s['bare_forward_s']:.3f} s, "
          f"extract {s['extract_in_memory_s']:.3f} s (medians) -> overhead {100 * s['overhead']:+.1f} % "
          "(target <= 10 %)")
    print(f"cache: cold {s['extract_cold_cache_s']:.3f} s, warm {s['extract_warm_cache_s']:.4f} s "
          f"-> {s['cache_speedup']:.0f}x faster (target >= 10x)")
    m = memory(args.n_memory, args.device)
    print(f"memory (flatten stem+stage1, N={m['n']}, {m['activation_mib']:.0f} MiB of activations): "
          f"peak RSS above bare forward: in memory {m['extra_rss_in_memory_mib']:.0f} MiB, "
          f"spilled to disk {m['extra_rss_spilled_mib']:.0f} MiB "
          f"(ratio {m['extra_rss_in_memory_mib'] / max(m['extra_rss_spilled_mib'], 1):.1f}x)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {"benchmark": "activations", "device": args.device, "torch": torch.__version__,
              "machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
              "speed": s, "memory": m}
    (out / "activations.json").write_text(json.dumps(record, indent=2))
    print(f"wrote {out / 'activations.json'}")


if __name__ == "__main__":
    main()

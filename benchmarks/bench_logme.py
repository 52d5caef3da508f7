"""LogME: ``workbench.transfer._logme`` against the authors' reference implementation (speed and value).

Peer: ``LogME.py`` from https://github.com/thuml/LogME (class ``LogME``, numba-compiled; its default
``fit`` is the SVD "fixed-point" path of You et al. 2022). It is not on PyPI - the PyPI package named
``logme`` is an unrelated logging library - so put the file on the path (``PYTHONPATH`` or
``--logme-path DIR``); without it only our timings are recorded.

Two cases, each with ``C`` one-hot targets from Gaussian class blobs (float64 features):

- ``tall``: N > D (default N=10000, D=384, C=10) - the reference's correct regime; reports the time
  ratio and the relative value difference (expected <= 1e-6: the reference stops at a 1e-3 tolerance).
- ``wide``: N < D (default N=500, D=2048) - where the reference's fixed-point path drops
  ``(D - r)/2 log alpha``; reports its value, ours and the difference, plus its older eigen path
  (``_fit_icml``, correct but O(D^3)) for comparison.

Every side runs in its own process per thread count (1 and all threads; the thread variables are set before
NumPy / numba / torch load), takes the median of 3 calls after a warm-up call (numba compiles the reference on its
first call, not timed); ``--repeats`` interleaved rounds of all configurations, medians reported; each side is
represented by its best configuration (printed and kept in the JSON).

    python benchmarks/bench_logme.py [--n 10000 --d 384 --classes 10 --n-wide 500 --d-wide 2048]
                                     [--repeats 3] [--device cpu|cuda] [--logme-path DIR] [--out DIR]

Results go to ``benchmarks/results/logme.json`` (and are printed).
"""
from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch


def _data(n: int, d: int, c: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    y[:c] = np.arange(c)
    f = 0.3 * rng.standard_normal((c, d))[y] + rng.standard_normal((n, d))
    return f, y


def _peer(path: str | None):
    if path:
        sys.path.insert(0, path)
    try:
        return importlib.import_module("LogME")
    except ImportError:
        return None


def _ours(f, y, device: str):
    from workbench.transfer import logme

    x = torch.from_numpy(f).to(device) if device != "cpu" else f

    def run():
        value = logme(x, y)
        if device == "cuda":
            torch.cuda.synchronize()
        return value
    return run


SIDES = {"workbench": "workbench", "reference_fixed_point": "reference", "reference_icml": "reference eigen path"}


def child(args) -> dict:
    """One side on one case in this process: the median of 3 calls after a warm-up call that gives the value."""
    n, d = (args.n, args.d) if args.case == "tall" else (args.n_wide, args.d_wide)
    f, y = _data(n, d, args.classes, seed=0)
    if args.child == "workbench":
        fn = _ours(f, y, args.device)
    else:
        peer = _peer(args.logme_path)
        fn = (lambda: peer.LogME().fit(f, y)) if args.child == "reference_fixed_point" else \
            (lambda: peer.LogME()._fit_icml(f, y))
    value = float(fn())  # warm-up (numba compiles the reference on its first call)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"time_s": float(np.median(times)), "value": value, "torch_threads": torch.get_num_threads()}


def case(name: str, n: int, d: int, c: int, args, has_peer: bool, icml: bool) -> dict:
    from _peers import best, interleave, label, median, run_child, thread_counts

    argv = [__file__, "--n", str(args.n), "--d", str(args.d), "--classes", str(c), "--n-wide", str(args.n_wide),
            "--d-wide", str(args.d_wide), "--device", args.device, "--case", name]
    if args.logme_path:
        argv += ["--logme-path", args.logme_path]
    sides = ["workbench"] + (["reference_fixed_point"] + (["reference_icml"] if icml else []) if has_peer else [])
    configs = {label(side, t): (lambda side=side, t=t: run_child(argv + ["--child", side], t))
               for t in thread_counts() for side in sides}
    runs = interleave(configs, args.repeats)
    every = {k: median([r["time_s"] for r in v]) for k, v in runs.items()}
    seconds, values, chosen = {}, {}, {}
    for side in sides:
        key, t = best(every, side + " [")
        seconds[side], values[side], chosen[side] = t, runs[key][0]["value"], key
    out = {"case": name, "n": n, "d": d, "classes": c, "device": args.device, "seconds": seconds, "values": values,
           "configuration": chosen, "all_configurations_s": every,
           "runs_s": {k: [r["time_s"] for r in v] for k, v in runs.items()}}
    if has_peer:
        ref = values["reference_fixed_point"]
        out["speedup_vs_reference"] = seconds["reference_fixed_point"] / seconds["workbench"]
        out["value_diff_vs_reference"] = values["workbench"] - ref
        out["value_rel_diff_vs_reference"] = abs(values["workbench"] - ref) / abs(ref)
        if icml:
            out["speedup_vs_reference_icml"] = seconds["reference_icml"] / seconds["workbench"]
            out["value_diff_vs_reference_icml"] = values["workbench"] - values["reference_icml"]
    return out


def _report(r: dict) -> None:
    s, v, k = r["seconds"], r["values"], r["configuration"]
    for key, t in r["all_configurations_s"].items():
        print(f"  {r['case']:5s} {key:45s} {t:8.3f} s (runs: {', '.join(f'{x:.3f}' for x in r['runs_s'][key])})")
    line = (f"{r['case']:5s} N={r['n']} D={r['d']} C={r['classes']}: "
            f"workbench {s['workbench']:.3f} s [{k['workbench']}] (LogME {v['workbench']:.6f})")
    if "reference_fixed_point" in s:
        line += (f"; reference {s['reference_fixed_point']:.3f} s [{k['reference_fixed_point']}] "
                 f"(LogME {v['reference_fixed_point']:.6f}) -> {r['speedup_vs_reference']:.2f}x faster, value diff "
                 f"{r['value_diff_vs_reference']:+.3g} (rel {r['value_rel_diff_vs_reference']:.2g})")
    if "reference_icml" in s:
        line += (f"; reference eigen path {s['reference_icml']:.3f} s [{k['reference_icml']}] "
                 f"(LogME {v['reference_icml']:.6f}, diff {r['value_diff_vs_reference_icml']:+.3g})")
    print(line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--d", type=int, default=384)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--n-wide", type=int, default=500)
    ap.add_argument("--d-wide", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--logme-path", default=None, help="directory holding the authors' LogME.py")
    ap.add_argument("--no-icml", action="store_true", help="skip the reference's O(D^3) eigen path")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--child", choices=list(SIDES))
    ap.add_argument("--case", choices=["tall", "wide"])
    ap.add_argument("--child-out")
    args = ap.parse_args()
    if args.child:
        Path(args.child_out).write_text(json.dumps(child(args)))
        return
    sys.path.insert(0, str(Path(__file__).parent))
    from _peers import CORES

    peer = _peer(args.logme_path)
    if peer is None:
        print("reference LogME.py (github.com/thuml/LogME) not importable: timing workbench only")
    print(f"{CORES} cores; every side and thread count in its own process (1 and all threads), {args.repeats} "
          f"interleaved rounds, median times; each side's best configuration is compared")
    results = [case("tall", args.n, args.d, args.classes, args, peer is not None, icml=False),
               case("wide", args.n_wide, args.d_wide, args.classes, args, peer is not None, icml=not args.no_icml)]
    for r in results:
        _report(r)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {"benchmark": "logme", "device": args.device, "torch": torch.__version__,
              "machine": platform.processor() or platform.machine(), "cores": CORES, "repeats": args.repeats,
              "method": "each side and thread count in its own process, thread variables set before import; "
                        "interleaved rounds; median times; best configuration per side",
              "reference": None if peer is None else getattr(peer, "__file__", "LogME"),
              "cases": results}
    (out / "logme.json").write_text(json.dumps(record, indent=2))
    print(f"wrote {out / 'logme.json'}")


if __name__ == "__main__":
    main()

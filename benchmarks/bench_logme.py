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

Times are medians over ``--repeats`` interleaved runs after one warm-up each (the reference's numba
compilation happens at import and is not timed).

    python benchmarks/bench_logme.py [--n 10000 --d 384 --classes 10 --n-wide 500 --d-wide 2048]
                                     [--repeats 5] [--device cpu|cuda] [--logme-path DIR] [--out DIR]

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


def _time(fns: dict, repeats: int) -> tuple[dict, dict]:
    values = {k: fn() for k, fn in fns.items()}  # warm-up (and the value)
    times = {k: [] for k in fns}
    for i in range(repeats):
        order = list(fns) if i % 2 == 0 else list(fns)[::-1]
        for k in order:
            t0 = time.perf_counter()
            fns[k]()
            times[k].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) for k, v in times.items()}, {k: float(v) for k, v in values.items()}


def case(name: str, n: int, d: int, c: int, device: str, peer, repeats: int, icml: bool) -> dict:
    f, y = _data(n, d, c, seed=0)
    fns = {"workbench": _ours(f, y, device)}
    if peer is not None:
        fns["reference_fixed_point"] = lambda: peer.LogME().fit(f, y)
        if icml:
            fns["reference_icml"] = lambda: peer.LogME()._fit_icml(f, y)
    times, values = _time(fns, repeats)
    out = {"case": name, "n": n, "d": d, "classes": c, "device": device, "seconds": times, "values": values}
    if peer is not None:
        ref = values["reference_fixed_point"]
        out["speedup_vs_reference"] = times["reference_fixed_point"] / times["workbench"]
        out["value_diff_vs_reference"] = values["workbench"] - ref
        out["value_rel_diff_vs_reference"] = abs(values["workbench"] - ref) / abs(ref)
        if icml:
            out["speedup_vs_reference_icml"] = times["reference_icml"] / times["workbench"]
            out["value_diff_vs_reference_icml"] = values["workbench"] - values["reference_icml"]
    return out


def _report(r: dict) -> None:
    s, v = r["seconds"], r["values"]
    line = (f"{r['case']:5s} N={r['n']} D={r['d']} C={r['classes']}: "
            f"workbench {s['workbench']:.3f} s (LogME {v['workbench']:.6f})")
    if "reference_fixed_point" in s:
        line += (f"; reference {s['reference_fixed_point']:.3f} s (LogME {v['reference_fixed_point']:.6f}) "
                 f"-> {r['speedup_vs_reference']:.2f}x faster, value diff {r['value_diff_vs_reference']:+.3g} "
                 f"(rel {r['value_rel_diff_vs_reference']:.2g})")
    if "reference_icml" in s:
        line += (f"; reference eigen path {s['reference_icml']:.3f} s (LogME {v['reference_icml']:.6f}, "
                 f"diff {r['value_diff_vs_reference_icml']:+.3g})")
    print(line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--d", type=int, default=384)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--n-wide", type=int, default=500)
    ap.add_argument("--d-wide", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--logme-path", default=None, help="directory holding the authors' LogME.py")
    ap.add_argument("--no-icml", action="store_true", help="skip the reference's O(D^3) eigen path")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    peer = _peer(args.logme_path)
    if peer is None:
        print("reference LogME.py (github.com/thuml/LogME) not importable: timing workbench only")
    results = [case("tall", args.n, args.d, args.classes, args.device, peer, args.repeats, icml=False),
               case("wide", args.n_wide, args.d_wide, args.classes, args.device, peer, args.repeats,
                    icml=not args.no_icml)]
    for r in results:
        _report(r)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {"benchmark": "logme", "device": args.device, "torch": torch.__version__,
              "machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
              "reference": None if peer is None else getattr(peer, "__file__", "LogME"),
              "cases": results}
    (out / "logme.json").write_text(json.dumps(record, indent=2))
    print(f"wrote {out / 'logme.json'}")


if __name__ == "__main__":
    main()

"""Training throughput on a shared CPU: torch's default threads against the workbench thread policy (issue 15).

Each condition trains through the real trainer (``workbench.train.train``) in a fresh process:

- models: ``quick`` — the quick demo's run (CNN width 16, depth 3, 39 510 parameters; ``shapes`` 32 x 32,
  batch 128), and ``bigger`` — the same CNN at width 64, depth 4 (1.54 M parameters). Both train with two
  checkpoints (start and end), so no held-out evaluation falls into the timed window;
- threads: ``default`` (``WORKBENCH_THREADS=torch``: torch's own count, one per core) and ``policy`` (the
  workbench policy of ``workbench/_threads.py``; one thread on 2 cores);
- competitors, each a separate CPU-bound process started before and stopped after the condition: none (idle),
  ``numpy`` (a single-threaded NumPy matmul loop, ``OPENBLAS_NUM_THREADS=1``) and ``torch`` (a bare PyTorch loop
  training the quick CNN with torch's default threads — what another training session or test run on the machine
  looks like); 1 and 2 of each.

Throughput is steps/s between the trainer's logged steps (callback times) after a warm-up, over a window of
``--window`` seconds or ``--max-steps`` steps, whichever ends first. The slowdown of a condition is its idle rate
(same model and threads) over its rate; "vs best idle" divides the faster idle rate of the two thread settings.
Before each condition the cores other processes keep busy are sampled for 1 s (``background_busy_cores``): on a
machine shared with other sessions "idle" is only as idle as that.
Target (issue 15): with the policy, slowdown <= 2.5x on 2 cores with a competitor.

    python benchmarks/bench_contention.py [--models quick,bigger] [--kinds numpy,torch] [--competitors 1,2]
                                          [--window 15] [--max-steps 150] [--no-figure]

Results: ``benchmarks/results/contention.json`` and the figure ``contention_figure.svg`` (+ ``.csv`` data, ``.json``
spec; the SVG needs Chromium, the CSV is always written).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"quick": {"width": 16, "depth": 3, "steps": 300}, "bigger": {"width": 64, "depth": 4, "steps": 100}}
THREADS = ("default", "policy")

NUMPY_COMPETITOR = """
import numpy as np
a = np.random.default_rng(0).random((256, 256))
while True:
    a = a @ a
    a /= np.abs(a).max()
"""
TORCH_COMPETITOR = """
import torch, torch.nn as nn, torch.nn.functional as F
torch.manual_seed(0)
m = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 32, 3, stride=2,
                  padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.Conv2d(32, 64, 3, stride=2, padding=1),
                  nn.BatchNorm2d(64), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 6))
opt = torch.optim.AdamW(m.parameters(), 1e-3)
x, y = torch.randn(128, 3, 32, 32), torch.randint(0, 6, (128,))
while True:
    loss = F.cross_entropy(m(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
"""


def child(model: str, window: float, max_steps: int, out: str) -> None:
    """Train ``model`` in this process until the window closes; write steps/s and the threads used to ``out``."""
    import torch

    from workbench.demo import demo_configs
    from workbench.runs import RunStore
    from workbench.train import train

    spec = MODELS[model]
    cfg = demo_configs(quick=True)["clean"].replace(model_options={"width": spec["width"], "depth": spec["depth"]},
                                                    steps=spec["steps"], checkpoints=2)
    log_every = max(1, cfg.steps // 100)
    marks: list[tuple[int, float, int]] = []

    class Enough(Exception):
        pass

    def callback(step: int, _metrics: dict) -> None:
        marks.append((step, time.perf_counter(), torch.get_num_threads()))
        warm = [m for m in marks if m[0] >= 2 * log_every]
        if len(warm) >= 2 and (warm[-1][1] - warm[0][1] >= window or warm[-1][0] - warm[0][0] >= max_steps):
            raise Enough

    with tempfile.TemporaryDirectory() as root:
        try:
            train(cfg, RunStore(root), progress=False, callback=callback)
        except Enough:
            pass
    warm = [m for m in marks if m[0] >= 2 * log_every]
    steps, seconds = warm[-1][0] - warm[0][0], warm[-1][1] - warm[0][1]
    Path(out).write_text(json.dumps({"steps": steps, "seconds": seconds, "steps_per_s": steps / seconds,
                                     "threads": warm[-1][2]}))


def _competitors(kind: str, n: int) -> list[subprocess.Popen]:
    code = NUMPY_COMPETITOR if kind == "numpy" else TORCH_COMPETITOR
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1") if kind == "numpy" else dict(os.environ)
    if kind == "torch":
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "WORKBENCH_THREADS"):
            env.pop(var, None)  # torch's defaults, as a user's script gets them
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env) for _ in range(n)]
    time.sleep(3.0 if kind == "torch" else 1.0)  # past their imports: the load is on when we start
    return procs


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.kill()
    for p in procs:
        p.wait()


def condition(model: str, threads: str, kind: str, n: int, args, tmp: Path) -> dict:
    out = tmp / f"{model}-{threads}-{kind}{n}.json"
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY"):
        env.pop(var, None)  # both settings start from torch's defaults
    env["WORKBENCH_THREADS"] = "torch" if threads == "default" else "auto"
    from workbench._threads import busy_cores

    background = busy_cores(1.0)  # other sessions' load on the machine, before our competitors start
    procs = _competitors(kind, n) if n else []
    try:
        subprocess.run([sys.executable, __file__, "--child", model, "--window", str(args.window), "--max-steps",
                        str(args.max_steps), "--child-out", str(out)], env=env, check=True, cwd=ROOT,
                       timeout=args.window * 20 + 120)
        row = json.loads(out.read_text())
    except subprocess.TimeoutExpired:
        row = {"steps": 0, "seconds": float("nan"), "steps_per_s": 0.0, "threads": None, "timed_out": True}
    finally:
        _stop(procs)
    return {"model": model, "threads_setting": threads, "competitor": kind if n else "none", "competitors": n,
            "background_busy_cores": round(background, 2), **row}


def figure(rows: list[dict], path: Path) -> None:
    import plotly.graph_objects as go

    from workbench.figures import export

    fig = go.Figure()
    for threads in THREADS:
        sub = [r for r in rows if r["threads_setting"] == threads]
        fig.add_bar(name=f"{threads} threads", x=[f"{r['model']}: {r['competitors']} {r['competitor']}"
                                                   if r["competitors"] else f"{r['model']}: idle" for r in sub],
                    y=[r["slowdown"] for r in sub])
    fig.add_hline(y=2.5, line_dash="dot", annotation_text="target 2.5x")
    fig.update_layout(barmode="group", yaxis_title="slowdown vs idle (x)", yaxis_type="log",
                      title="Training on a shared 2-core CPU")
    try:
        export(fig, path, width="double", formats=["svg"])
    except RuntimeError as err:  # no Chromium: the CSV and JSON are written anyway
        print(f"figure: {err}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="quick,bigger")
    ap.add_argument("--kinds", default="numpy,torch")
    ap.add_argument("--competitors", default="1,2")
    ap.add_argument("--window", type=float, default=15.0, help="seconds of timed training per condition")
    ap.add_argument("--max-steps", type=int, default=150)
    ap.add_argument("--repeats", type=int, default=1, help="rounds per condition (median steps/s)")
    ap.add_argument("--no-figure", action="store_true")
    ap.add_argument("--figure-only", action="store_true", help="redraw the figure from contention.json")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--child", choices=list(MODELS))
    ap.add_argument("--child-out")
    args = ap.parse_args()
    if args.child:
        child(args.child, args.window, args.max_steps, args.child_out)
        return
    if args.figure_only:
        figure(json.loads((Path(args.out) / "contention.json").read_text())["rows"],
               Path(args.out) / "contention_figure.svg")
        return
    models = [m for m in args.models.split(",") if m]
    kinds = [k for k in args.kinds.split(",") if k]
    counts = [int(c) for c in args.competitors.split(",") if c]
    bad = sorted(set(models) - set(MODELS)) + sorted(set(kinds) - {"numpy", "torch"})
    if bad or any(c < 1 for c in counts):
        raise SystemExit(f"unknown models/kinds {bad} or counts {counts}: models {list(MODELS)}, kinds numpy,torch, "
                         f"counts >= 1")
    load = os.getloadavg()[0]
    print(f"{os.cpu_count()} cores, load average {load:.2f} at start")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in models:
            for kind, n in [("none", 0)] + [(k, c) for k in kinds for c in counts]:
                tries: dict[str, list[dict]] = {t: [] for t in THREADS}
                for i in range(args.repeats):
                    for threads in (THREADS if (len(rows) + i) % 2 == 0 else THREADS[::-1]):  # alternate the order
                        tries[threads].append(condition(model, threads, kind, n, args, Path(tmp)))
                for threads in THREADS:
                    ranked = sorted(tries[threads], key=lambda r: r["steps_per_s"])
                    rows.append(dict(ranked[len(ranked) // 2], steps_per_s_each=[r["steps_per_s"] for r in
                                                                                 tries[threads]]))
    for r in rows:
        idle = {t: next(x for x in rows if x["model"] == r["model"] and x["competitors"] == 0
                        and x["threads_setting"] == t)["steps_per_s"] for t in THREADS}
        rate = r["steps_per_s"]
        r["slowdown"] = idle[r["threads_setting"]] / rate if rate else float("inf")
        r["slowdown_vs_best_idle"] = max(idle.values()) / rate if rate else float("inf")
        what = "idle" if not r["competitors"] else f"{r['competitors']} {r['competitor']} competitor(s)"
        print(f"{r['model']:7s} {r['threads_setting']:7s} threads={r['threads']!s:4s} {what:22s} "
              f"{rate:7.2f} steps/s ({1000 / rate if rate else float('inf'):7.0f} ms/step)  slowdown "
              f"{r['slowdown']:5.2f}x (vs best idle {r['slowdown_vs_best_idle']:5.2f}x); background "
              f"{r['background_busy_cores']:.1f} busy cores")
    record = {"benchmark": "contention", "cores": os.cpu_count(), "machine": platform.processor() or platform.machine(),
              "load_average_at_start": load, "window_s": args.window, "max_steps": args.max_steps,
              "repeats": args.repeats,
              "models": MODELS, "rows": rows}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "contention.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out / 'contention.json'}")
    if not args.no_figure:
        figure(rows, out / "contention_figure.svg")


if __name__ == "__main__":
    main()

"""Integrated Gradients throughput: ``workbench.saliency._attribute`` against captum called directly (issue 6).

Peer: ``captum.attr.IntegratedGradients(model).attribute(x, target=t, n_steps=50)`` with its default batching
(``internal_batch_size=None``: all ``N x n_steps`` interpolated images in one forward/backward pass).
Ours: ``attribute(model, x, method="integrated_gradients", target=t, n_steps=50)``, which runs the same captum
algorithm in chunks of examples sized so that ``examples x n_steps`` rows fit a memory budget
(``workbench.saliency._forward.CPU_BUDGET_BYTES``), plus one scoring forward pass and a one-example probe.

Same model (the workbench CNN builder, eval mode, random init) and the same 32x32 ``shapes`` images; targets are
the predicted classes, passed to both. Each side runs in its own fresh process per thread count (1 and all
threads, the thread variables set before torch loads), so its peak RSS and its threads are its own; ``--repeats``
interleaved rounds of all configurations (default 3), median times; each side is represented by its best
configuration. The attributions are compared (max abs difference).

    python benchmarks/bench_saliency.py [--n 256] [--steps 50] [--width 8] [--depth 3] [--repeats 3]

Results go to ``benchmarks/results/saliency.json`` (and are printed).
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

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from _peers import CORES, best, label, median, thread_counts  # noqa: E402

from workbench._threads import thread_env  # noqa: E402


def _setup(n: int, width: int, depth: int):
    from workbench import data, models

    torch.manual_seed(0)
    x = torch.as_tensor(data.load("shapes", n_train=n, n_test=0, n_ood=0, size=32, seed=0)["train"].inputs)
    model = models.build("cnn", input_shape=(3, 32, 32), num_classes=6, width=width, depth=depth).eval()
    with torch.no_grad():
        target = model(x).argmax(1)
    return model, x, target


def child(side: str, n: int, steps: int, width: int, depth: int, out: str) -> None:
    """One timed run in this (fresh) process; writes the attributions and the time to ``out``."""
    import warnings

    warnings.simplefilter("ignore")
    model, x, target = _setup(n, width, depth)
    if side == "captum":
        from captum.attr import IntegratedGradients

        ig = IntegratedGradients(model)
        t0 = time.perf_counter()
        attr = ig.attribute(x, target=target, n_steps=steps)
        seconds, batch = time.perf_counter() - t0, n
    else:
        from workbench.saliency import attribute

        t0 = time.perf_counter()
        a = attribute(model, x, method="integrated_gradients", target=target, n_steps=steps)
        seconds, attr, batch = time.perf_counter() - t0, a.attributions, a.options["batch_size"]
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    torch.save({"attr": attr.detach(), "seconds": torch.tensor(seconds), "peak_mib": torch.tensor(peak_mib),
                "batch": torch.tensor(batch)}, out)


def _run(side: str, threads: int, args, tmp: Path, i: int) -> dict:
    out = tmp / f"{side}{threads}-{i}.pt"
    cmd = [sys.executable, __file__, "--child", side, "--n", str(args.n), "--steps", str(args.steps),
           "--width", str(args.width), "--depth", str(args.depth), "--child-out", str(out)]
    subprocess.run(cmd, check=True, cwd=ROOT, env=thread_env(threads, passive=False))
    return torch.load(out, weights_only=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--width", type=int, default=8)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--child", choices=["captum", "workbench"])
    p.add_argument("--child-out")
    args = p.parse_args()
    if args.child:
        child(args.child, args.n, args.steps, args.width, args.depth, args.child_out)
        return
    configs = [(side, t) for t in thread_counts() for side in ("captum", "workbench")]
    runs: dict[str, list[dict]] = {label(side, t): [] for side, t in configs}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            shift = i % len(configs)
            for side, t in configs[shift:] + configs[:shift]:
                r = _run(side, t, args, Path(tmp), i)
                runs[label(side, t)].append({k: v for k, v in r.items() if k != "attr" or not runs[label(side, t)]})
    every = {k: median([float(r["seconds"]) for r in v]) for k, v in runs.items()}
    for k, v in runs.items():
        each = ", ".join(f"{float(r['seconds']):.2f}" for r in v)
        print(f"  {k:30s} {every[k]:7.2f} s (runs: {each})")
    chosen = {side: best(every, side + " [")[0] for side in ("captum", "workbench")}
    secs = {side: every[k] for side, k in chosen.items()}
    first = {side: runs[k][0] for side, k in chosen.items()}
    diff = float((first["captum"]["attr"] - first["workbench"]["attr"]).abs().max())
    scale = float(first["captum"]["attr"].abs().max())
    result = {
        "benchmark": "integrated_gradients throughput",
        "n_images": args.n, "n_steps": args.steps,
        "model": {"builder": "cnn", "width": args.width, "depth": args.depth},
        "input": [3, 32, 32], "repeats": args.repeats,
        "seconds": secs, "configuration": chosen, "all_configurations_s": every, "cores": CORES,
        "method": "each side and thread count in its own process, thread variables set before import; interleaved "
                  "rounds; median times; best configuration per side",
        "attributions_per_second": {k: args.n / v for k, v in secs.items()},
        "speedup_workbench_over_captum": secs["captum"] / secs["workbench"],
        "peak_rss_mib": {k: float(v["peak_mib"]) for k, v in first.items()},
        "workbench_batch_size": int(first["workbench"]["batch"]),
        "max_abs_diff": diff, "max_abs_attribution": scale,
        "torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
    }
    print(json.dumps(result, indent=2))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "saliency.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

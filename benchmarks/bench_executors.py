"""One 12-run study through three executors, side by side: in-process, ``PoolExecutor(2)`` and a local
``RayExecutor`` (2 CPUs), each into a fresh run store (training included), one round each.

    python benchmarks/bench_executors.py [--steps 3000] [--no-ray]

Prints the wall times, the speed-up over in-process, whether each table equals the in-process one (sorted; floats
within 1e-6), ``os.cpu_count()``, the machine and the load average before and after each executor (the machine may
be shared: a busy one stretches the times, not the tables). Ray's time includes starting and stopping its local
cluster, which a user with no running cluster also waits for. Results: ``benchmarks/results/executors.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from workbench.executors import PoolExecutor, RayExecutor
from workbench.study import InProcessExecutor, Study

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "executors.json"

DATA = {"n_train": 2000, "n_test": 500, "n_ood": 500, "dim": 32}


def study(store: str, executor, steps: int) -> Study:
    base = {"dataset": "gaussian-mixture", "dataset_options": DATA, "model": "mlp",
            "model_options": {"hidden": [128, 128]}, "steps": steps, "lr": 3e-3, "batch_size": 64, "checkpoints": 3}
    return Study(base, vary={"lr": [1e-3, 3e-3, 1e-2], "label_noise": [0.0, 0.2]}, seeds=[0, 1], store=store,
                 executor=executor, measures=["rankme", "effective_rank"], measure_examples=500, name="bench")


def _sorted(table: pd.DataFrame) -> pd.DataFrame:
    keys = [c for c in table.columns if c not in ("value", "ci_low", "ci_high")]
    order = table[keys].map(str).agg("|".join, axis=1).argsort(kind="stable")
    return table.iloc[order.to_numpy()].reset_index(drop=True)[sorted(table.columns)]


def same_table(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    try:
        pd.testing.assert_frame_equal(_sorted(a), _sorted(b), check_exact=False, rtol=1e-6, atol=1e-9)
        return True
    except AssertionError:
        return False


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=3000, help="training steps per run (default 3000: ~6 s a run)")
    p.add_argument("--no-ray", action="store_true", help="skip the Ray executor")
    args = p.parse_args()

    executors = {"inprocess": InProcessExecutor, "pool(2)": lambda: PoolExecutor(2)}
    if not args.no_ray:
        executors["ray(2 cpus, local)"] = lambda: RayExecutor(init_options={"num_cpus": 2})
    rows, reference = {}, None
    for name, make in executors.items():
        with tempfile.TemporaryDirectory() as store:
            load_before = os.getloadavg()[0]
            t0 = time.perf_counter()
            st = study(store, make(), args.steps)
            table = st.run(progress=False)
            seconds = time.perf_counter() - t0
            load_after = os.getloadavg()[0]
        if reference is None:
            reference = table
        rows[name] = {"seconds": round(seconds, 2), "runs": len(st.configs), "failures": len(st.failures),
                      "same_table_as_inprocess": same_table(table, reference),
                      "load_before": round(load_before, 2), "load_after": round(load_after, 2)}
        print(f"{name:20s} {seconds:7.1f} s  same table: {rows[name]['same_table_as_inprocess']}  "
              f"(load average {load_before:.1f} → {load_after:.1f})", flush=True)
    base = rows["inprocess"]["seconds"]
    for name, row in rows.items():
        row["speedup_vs_inprocess"] = round(base / row["seconds"], 2)
        print(f"{name:20s} speed-up over in-process: {row['speedup_vs_inprocess']:.2f}x")
    out = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu_count": os.cpu_count(),
           "machine": f"{cpu_model()}, {platform.machine()}, {platform.system()} {platform.release()}",
           "python": platform.python_version(), "steps_per_run": args.steps, "runs": 12,
           "note": "one round each; a shared machine (see load averages); Ray's time includes starting its local "
                   "cluster", "executors": rows}
    print(f"os.cpu_count() = {os.cpu_count()}; {out['machine']}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {RESULTS}")
    assert np.all([r["same_table_as_inprocess"] for r in rows.values()]), "an executor's table differs"


if __name__ == "__main__":
    main()

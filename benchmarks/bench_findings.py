"""Each finding's quick experiment, timed end to end in a fresh run store, with its verdict.

Every finding with an experiment (``workbench.findings.FINDINGS``) runs at its ``quick`` size — all seeds, training
included — in a new temporary store, one after another in this process, so the wall time is what a user with an
empty store waits for ``workbench study ID --quick``. The load average before and after each finding is recorded,
because a busy machine stretches the time (the verdict does not depend on it: runs are seeded).

    python benchmarks/bench_findings.py [--findings S1,S3] [--mode quick] [--store DIR] [--no-record]

Results: ``benchmarks/results/findings.json`` (one entry per finding: verdict, checks, seconds, load), and — unless
``--no-record`` — the verdicts are written to ``workbench/findings/recorded.json``, which ``workbench findings``
shows (with date and machine) until a user has run the finding. ``--store`` reuses a store (re-analysis of runs
already trained; the times then exclude training, and the verdicts are not recorded).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from workbench import findings

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "findings.json"
RECORDED = ROOT / "workbench" / "findings" / "recorded.json"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--findings", default=",".join(findings.FINDINGS), help="comma-separated ids")
    p.add_argument("--mode", default="quick", choices=["smoke", "quick", "full"])
    p.add_argument("--store", default=None, help="reuse this run store (times exclude training; nothing recorded)")
    p.add_argument("--no-record", action="store_true", help="do not update workbench/findings/recorded.json")
    args = p.parse_args()
    ids = [findings.get(i).id for i in args.findings.split(",")]
    old = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    entries = dict(old.get("results", {})) if old.get("mode") == args.mode else {}
    recorded = json.loads(RECORDED.read_text()) if RECORDED.exists() else {}
    for fid in ids:
        with tempfile.TemporaryDirectory() as tmp:
            store = args.store or tmp
            load_before = os.getloadavg()[0]
            t0 = time.perf_counter()
            result = findings.get(fid).run(args.mode, store=store, out=Path(tmp) / "report", static=False,
                                           progress=False, record=False)
            seconds = time.perf_counter() - t0
            load_after = os.getloadavg()[0]
        verdict = result.verdict
        print(verdict)
        print(f"{fid}: {seconds:.0f} s (load average {load_before:.1f} → {load_after:.1f})\n")
        entries[fid] = {"outcome": verdict.outcome, "seconds": round(seconds, 1), "runs": len(result.study.configs),
                        "seeds": verdict.seeds, "load_before": round(load_before, 2),
                        "load_after": round(load_after, 2), "fresh_store": args.store is None,
                        "checks": verdict.to_dict()["checks"]}
        if args.store is None and not args.no_record and args.mode == "quick":
            recorded[fid] = verdict.to_dict()
            RECORDED.write_text(json.dumps(recorded, indent=1, sort_keys=True) + "\n")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"benchmark": "findings", "mode": args.mode, "torch": torch.__version__,
                                   "machine": findings.machine(), "threads": torch.get_num_threads(),
                                   "results": entries}, indent=1) + "\n")
    print("\n".join(f"{k}: {v['outcome']:<13} {v['seconds']:>6.0f} s  ({v['runs']} runs)" for k, v in entries.items()))


if __name__ == "__main__":
    main()

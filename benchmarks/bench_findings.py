"""Each finding's quick experiment, timed end to end in a fresh run store, with its verdict.

Every finding with an experiment (``workbench.findings.FINDINGS``) runs at its ``quick`` size — all seeds, training
included — in a new temporary store, one after another in this process, so the wall time is what a user with an
empty store waits for ``workbench study ID --quick``. The load average before and after each finding is recorded,
because a busy machine stretches the time (the verdict does not depend on it: runs are seeded).

    python benchmarks/bench_findings.py [--findings S1,S3] [--mode quick] [--store DIR] [--no-record]

Results: ``benchmarks/results/findings.json`` (one entry per finding: verdict, checks, seconds, load), and — unless
``--no-record`` — the verdicts are written to ``workbench/findings/recorded.json``, which ``workbench findings``
shows (with date and machine) until a user has run the finding. Each entry also has ``cpu_s``, the process's CPU time
(user + system): the findings train with one torch thread, so on a busy machine ``cpu_s`` is close to the wall time
the same run takes on an idle one. Several processes may record at once (each entry is merged under a file lock).
``--store`` reuses a store (re-analysis of runs already trained; the times then exclude training, and the verdicts are
not recorded).
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from workbench import findings

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "findings.json"
RECORDED = ROOT / "workbench" / "findings" / "recorded.json"


@contextmanager
def _locked():
    """Hold an exclusive lock on the results while one entry is merged in (concurrent benchmark processes)."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS.parent / ".findings.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _write(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=path == RECORDED) + "\n")
    os.replace(tmp, path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--findings", default=",".join(findings.FINDINGS), help="comma-separated ids")
    p.add_argument("--mode", default="quick", choices=["smoke", "quick", "full"])
    p.add_argument("--store", default=None, help="reuse this run store (times exclude training; nothing recorded)")
    p.add_argument("--no-record", action="store_true", help="do not update workbench/findings/recorded.json")
    args = p.parse_args()
    ids = [findings.get(i).id for i in args.findings.split(",")]
    for fid in ids:
        with tempfile.TemporaryDirectory() as tmp:
            store = args.store or tmp
            load_before = os.getloadavg()[0]
            t0, c0 = time.perf_counter(), time.process_time()
            result = findings.get(fid).run(args.mode, store=store, out=Path(tmp) / "report", static=False,
                                           progress=False, record=False)
            seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
            load_after = os.getloadavg()[0]
        verdict = result.verdict
        print(verdict)
        print(f"{fid}: {seconds:.0f} s, {cpu:.0f} s CPU (load average {load_before:.1f} → {load_after:.1f})\n")
        entry = {"outcome": verdict.outcome, "seconds": round(seconds, 1), "cpu_s": round(cpu, 1),
                 "runs": len(result.study.configs), "seeds": verdict.seeds, "load_before": round(load_before, 2),
                 "load_after": round(load_after, 2), "fresh_store": args.store is None,
                 "checks": verdict.to_dict()["checks"]}
        with _locked():  # re-read: another process may have merged its entries meanwhile
            old = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
            entries = dict(old.get("results", {})) if old.get("mode") == args.mode else {}
            entries[fid] = entry
            _write(RESULTS, {"benchmark": "findings", "mode": args.mode, "torch": torch.__version__,
                             "machine": findings.machine(), "threads": torch.get_num_threads(), "results": entries})
            if args.store is None and not args.no_record and args.mode == "quick":
                recorded = json.loads(RECORDED.read_text()) if RECORDED.exists() else {}
                recorded[fid] = verdict.to_dict()
                _write(RECORDED, recorded)
    print("\n".join(f"{k}: {v['outcome']:<13} {v['seconds']:>6.0f} s  {v.get('cpu_s', float('nan')):>6.0f} s CPU  "
                    f"({v['runs']} runs)" for k, v in entries.items()))


if __name__ == "__main__":
    main()

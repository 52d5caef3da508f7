"""CKA between every layer of two stacks: ours against per-pair loops and torch-cka (issue: fast all-pairs CKA).

Workload: two stacks of ``--layers`` layers (default 13 + 13), ``--n`` examples (10 000), width ``--d`` (384),
float64 values, linear kernel. Measured, best of ``--repeats`` after one warm-up call:

- ``ours``            : ``cka_matrix(A, B)`` (biased linear CKA; one blocked GEMM for all cross terms) on
                        ``--device``; also ``debiased=True``. Achieved FLOP/s counts only the GEMM flops
                        ``2 N sum(Da) sum(Db) + sum_i 2 N Da_i^2 + sum_j 2 N Db_j^2`` (cross + self terms; if N is
                        so small that ours keeps every layer as its Gram: ``2 N^2 (sum Da + sum Db + La Lb)``), and is
                        reported as a fraction of the float64 matmul peak measured on the same device (one big
                        square ``torch.matmul``, best of 3; the float32 peak is printed too).
- ``numpy_gram``      : a per-pair NumPy loop in the style of Kornblith et al.'s CKA demo, as scattered analysis
                        scripts use it: for every pair ``cka(center(gram(X_i)), center(gram(Y_j)))`` with [N, N]
                        Gram matrices (written here, float64, CPU).
- ``numpy_features``  : a per-pair NumPy loop over the feature-space form ``||Yc^T Xc||_F^2 / (||Xc^T Xc||_F
                        ||Yc^T Yc||_F)`` (what a careful script, or our old per-pair code, does).
- ``torch_cka``       : torch-cka 0.21 (if importable). It only accepts models + dataloaders and computes
                        *minibatch* CKA (Nguyen et al. 2021; unbiased HSIC per batch, ratio of means), so each
                        stack is wrapped as an identity "model" (one hooked ``nn.Identity`` per layer over the
                        precomputed features) and fed batches of ``--batch-size``; it is compared with our
                        ``MinibatchCKA`` over the same batches (same definition). It runs under
                        ``torch.set_default_dtype(float64)`` so its accumulators are float64 (it fails on float64
                        features otherwise).

A peer whose projected time exceeds ``--peer-budget`` seconds (default 30) is timed on a few pairs (torch-cka: on
the first layer of A against all of B) and extrapolated linearly in the number of pairs; the output says so.
Values are checked to agree to 1e-6 (absolute) on every pair a peer computed.

Every side at its best (issue 15): each configuration runs in its own process with its thread count set in the
environment before NumPy / torch load — 1 thread and all threads for every side, and for the per-pair NumPy loops
also joblib over the pairs (one worker per core, one BLAS thread each, workers started before the clock) — in
``--repeats`` interleaved rounds (default 3); medians are reported, and each side is represented by its fastest
configuration (all of them are printed and kept in the JSON). The matmul peak is measured with all threads.

    python benchmarks/bench_cka.py [--n 10000] [--d 384] [--layers 13] [--device cpu|cuda] [--batch-size 1000]

Results go to ``benchmarks/results/cka.json`` (and are printed).
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

TOL = 1e-6


# ------------------------------------------------------------------------------------------ helpers
def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _best(fn, repeats: int, device: str) -> float:
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_peak(device: str, dtype: torch.dtype, size: int) -> float:
    """FLOP/s of one [size, size] @ [size, size] matmul, best of 3 after a warm-up."""
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    torch.matmul(a, b)
    t = _best(lambda: torch.matmul(a, b), 3, device)
    return 2.0 * size ** 3 / t


def make_stacks(n: int, d: int, layers: int, seed: int = 0):
    """Two related stacks of float64 features (CPU numpy); layer l of each mixes a shared latent and noise."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, 64))
    stacks = []
    for _ in range(2):
        stack = {}
        h = z
        for i in range(layers):
            h = np.tanh(h @ (rng.standard_normal((h.shape[1], d)) / np.sqrt(h.shape[1])))
            stack[f"layer{i:02d}"] = h + 0.1 * rng.standard_normal((n, d))
        stacks.append(stack)
    return stacks


# ------------------------------------------------------------------------------- per-pair references
def gram_linear(x: np.ndarray) -> np.ndarray:
    return x @ x.T


def center_gram(k: np.ndarray) -> np.ndarray:
    """H K H for a symmetric K, computed in place on a copy."""
    k = k.copy()
    col = k.mean(axis=0)
    col -= col.mean() / 2.0
    k -= col[:, None]
    k -= col[None, :]
    return k


def cka_from_grams(k: np.ndarray, l: np.ndarray) -> float:
    kc, lc = center_gram(k), center_gram(l)
    return float(kc.ravel() @ lc.ravel() / (np.linalg.norm(kc) * np.linalg.norm(lc)))


def numpy_gram_pair(x: np.ndarray, y: np.ndarray) -> float:
    return cka_from_grams(gram_linear(x), gram_linear(y))


def numpy_features_pair(x: np.ndarray, y: np.ndarray) -> float:
    xc = x - x.mean(axis=0)
    yc = y - y.mean(axis=0)
    return float(np.linalg.norm(yc.T @ xc) ** 2 / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc)))


def per_pair_peer(pair_fn, a: dict, b: dict, ours: np.ndarray, budget: float, k_extra: int = 2) -> dict:
    """Loop over all pairs, or time the first 1 + k_extra pairs and extrapolate when the loop would exceed budget."""
    pairs = [(i, j) for i in range(len(a)) for j in range(len(b))]
    names_a, names_b = list(a), list(b)
    times, diffs = [], []
    extrapolated = False
    for p, (i, j) in enumerate(pairs):
        t0 = time.perf_counter()
        value = pair_fn(a[names_a[i]], b[names_b[j]])
        times.append(time.perf_counter() - t0)
        diffs.append(abs(value - ours[i, j]))
        if p == 0 and times[0] * len(pairs) > budget:
            extrapolated = True
        if extrapolated and p >= k_extra:
            break
    total = float(np.mean(times) * len(pairs)) if extrapolated else float(np.sum(times))
    return {"time_s": total, "extrapolated": extrapolated, "pairs_timed": len(times), "pairs": len(pairs),
            "max_abs_diff": float(max(diffs)), "agree": bool(max(diffs) <= TOL)}


# ------------------------------------------------------------------------------------------- torch-cka
class _FeatureStack(torch.nn.Module):
    """An identity 'model': input [b, sum d] precomputed features; layer i returns its own columns (hooked)."""

    def __init__(self, widths):
        super().__init__()
        self.widths = list(widths)
        self.layers = torch.nn.ModuleList(torch.nn.Identity() for _ in self.widths)

    def forward(self, x):
        for layer, part in zip(self.layers, torch.split(x, self.widths, dim=1)):
            layer(part)
        return x


def run_torch_cka(torch_cka, xa: torch.Tensor, xb: torch.Tensor, widths_a, widths_b, rows_a: int,
                  batch_size: int, device: str) -> tuple[np.ndarray, float]:
    """torch-cka CKA over the first ``rows_a`` layers of A against all of B; returns (matrix, seconds)."""
    from torch.utils.data import DataLoader, TensorDataset

    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            peer = torch_cka.CKA(_FeatureStack(widths_a), _FeatureStack(widths_b), model1_name="A", model2_name="B",
                                 model1_layers=[f"layers.{i}" for i in range(rows_a)],
                                 model2_layers=[f"layers.{i}" for i in range(len(widths_b))], device=device)
            loaders = (DataLoader(TensorDataset(xa), batch_size=batch_size),
                       DataLoader(TensorDataset(xb), batch_size=batch_size))
            _sync(device)
            t0 = time.perf_counter()
            peer.compare(*loaders)
            _sync(device)
            seconds = time.perf_counter() - t0
    finally:
        torch.set_default_dtype(old)
    return peer.export()["CKA"].cpu().numpy(), seconds


def run_ours_minibatch(xa: torch.Tensor, xb: torch.Tensor, names_a, names_b, widths_a, widths_b,
                       batch_size: int, device: str, precision: str = "float64") -> np.ndarray:
    """MinibatchCKA fed like torch-cka: each CPU batch of the concatenated features is moved to the device."""
    from workbench.similarity._cka import MinibatchCKA

    acc = MinibatchCKA(precision=precision)
    for s in range(0, xa.shape[0], batch_size):
        ba = xa[s:s + batch_size].to(device)
        bb = xb[s:s + batch_size].to(device)
        acc.update(dict(zip(names_a, torch.split(ba, widths_a, dim=1))),
                   dict(zip(names_b, torch.split(bb, widths_b, dim=1))))
    return acc.result(output="matrix").to_numpy()


# ------------------------------------------------------------------------------------------------ main
def _load(path: str) -> tuple[dict, dict]:
    arr = np.load(path, mmap_mode="r")  # [2, layers, n, d]
    return tuple({f"layer{i:02d}": np.array(arr[s, i]) for i in range(arr.shape[1])} for s in (0, 1))


def _pair_chunk(path: str, pairs: list, kind: str) -> list:
    """A joblib worker's share of a per-pair loop: [(i, j, value, seconds)]."""
    arr = np.load(path, mmap_mode="r")
    fn = numpy_gram_pair if kind == "numpy_gram" else numpy_features_pair
    out = []
    for i, j in pairs:
        x, y = np.ascontiguousarray(arr[0, i]), np.ascontiguousarray(arr[1, j])
        t0 = time.perf_counter()
        out.append((i, j, fn(x, y), time.perf_counter() - t0))
    return out


def per_pair_parallel(kind: str, path: str, layers: int, jobs: int, budget: float, k_extra: int = 2) -> dict:
    """The per-pair loop over all pairs, split over ``jobs`` joblib workers (1: a plain loop in this process); when
    the first pair shows the loop would exceed ``budget`` s, time only the first ``jobs * (1 + k_extra)`` pairs and
    extrapolate the wall time linearly in pairs."""
    pairs = [(i, j) for i in range(layers) for j in range(layers)]
    first = _pair_chunk(path, pairs[:1], kind)  # also a warm-up of the code path
    extrapolated = first[0][3] * len(pairs) / jobs > budget
    todo = pairs[:jobs * (1 + k_extra)] if extrapolated else pairs
    if jobs == 1:
        t0 = time.perf_counter()
        done = _pair_chunk(path, todo, kind)
        wall = time.perf_counter() - t0
    else:
        from joblib import Parallel, delayed

        with Parallel(n_jobs=jobs) as par:
            par(delayed(abs)(0) for _ in range(jobs))  # start the workers before the clock
            t0 = time.perf_counter()
            parts = par(delayed(_pair_chunk)(path, todo[w::jobs], kind) for w in range(jobs))
            wall = time.perf_counter() - t0
        done = [r for part in parts for r in part]
    total = wall * len(pairs) / len(todo)
    return {"time_s": total, "extrapolated": extrapolated, "pairs_timed": len(todo), "pairs": len(pairs),
            "values": [[i, j, v] for i, j, v, _ in done]}


def child(args) -> dict:
    """One configuration in this process (threads come from the environment); returns its timings and values."""
    side, device = args.child, args.device
    if side == "peak":
        peak_n = args.peak_n or (8192 if device.startswith("cuda") else 4096)
        return {"float64": matmul_peak(device, torch.float64, peak_n),
                "float32": matmul_peak(device, torch.float32, peak_n), "size": peak_n}
    a_np, b_np = _load(args.data)
    names_a, names_b = list(a_np), list(b_np)
    wa, wb = [v.shape[1] for v in a_np.values()], [v.shape[1] for v in b_np.values()]
    out: dict = {"torch_threads": torch.get_num_threads()}
    if side == "ours":
        from workbench.similarity import cka_matrix

        a_t = {k: torch.as_tensor(v, device=device) for k, v in a_np.items()}
        b_t = {k: torch.as_tensor(v, device=device) for k, v in b_np.items()}
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
            base_mem = torch.cuda.memory_allocated()
        out["matrix"] = cka_matrix(a_t, b_t, output="matrix").to_numpy().tolist()  # warm-up
        out["time_s"] = _best(lambda: cka_matrix(a_t, b_t, output="matrix"), 1, device)
        out["time_debiased_s"] = _best(lambda: cka_matrix(a_t, b_t, debiased=True, output="matrix"), 1, device)
        if device.startswith("cuda"):
            out["extra_gpu_memory_mib"] = (torch.cuda.max_memory_allocated() - base_mem) / 2**20
    elif side == "minibatch":
        xa = torch.as_tensor(np.hstack([a_np[k] for k in names_a]))
        xb = torch.as_tensor(np.hstack([b_np[k] for k in names_b]))
        bs = min(args.batch_size, args.n)
        mb = run_ours_minibatch(xa, xb, names_a, names_b, wa, wb, bs, device)  # warm-up
        out["time_s"] = _best(lambda: run_ours_minibatch(xa, xb, names_a, names_b, wa, wb, bs, device), 1, device)
        mb32 = run_ours_minibatch(xa, xb, names_a, names_b, wa, wb, bs, device, "float32")
        out["time_float32_s"] = _best(lambda: run_ours_minibatch(xa, xb, names_a, names_b, wa, wb, bs, device,
                                                                 "float32"), 1, device)
        out["matrix"], out["matrix_float32"] = mb.tolist(), mb32.tolist()
    elif side in ("numpy_gram", "numpy_features"):
        out.update(per_pair_parallel(side, args.data, len(names_a), args.child_jobs, args.peer_budget))
    elif side == "torch_cka":
        import torch_cka

        xa = torch.as_tensor(np.hstack([a_np[k] for k in names_a]))
        xb = torch.as_tensor(np.hstack([b_np[k] for k in names_b]))
        bs = min(args.batch_size, args.n)
        row, t_row = run_torch_cka(torch_cka, xa, xb, wa, wb, 1, bs, device)
        extrapolated = t_row * len(names_a) > args.peer_budget
        if extrapolated:
            peer, t_peer = row, t_row * len(names_a)
        else:
            peer, t_peer = run_torch_cka(torch_cka, xa, xb, wa, wb, len(names_a), bs, device)
        out.update(version=getattr(torch_cka, "__version__", "?"), time_s=t_peer, extrapolated=extrapolated,
                   pairs_timed=peer.size, pairs=len(names_a) * len(names_b), matrix=peer.tolist())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--d", type=int, default=384)
    ap.add_argument("--layers", type=int, default=13)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch-size", type=int, default=1000, help="minibatch size for torch-cka / MinibatchCKA")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds; medians are reported")
    ap.add_argument("--peer-budget", type=float, default=30.0, help="seconds; longer peers are extrapolated")
    ap.add_argument("--peak-n", type=int, default=None, help="matmul size for the peak (default 8192 cuda, 4096 cpu)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--child", choices=["peak", "ours", "minibatch", "numpy_gram", "numpy_features", "torch_cka"])
    ap.add_argument("--child-jobs", type=int, default=1)
    ap.add_argument("--child-out")
    ap.add_argument("--data")
    args = ap.parse_args()
    if args.child:
        Path(args.child_out).write_text(json.dumps(child(args)))
        return
    sys.path.insert(0, str(Path(__file__).parent))
    from _peers import CORES, best, interleave, label, median, run_child, thread_counts

    device = args.device
    try:
        import torch_cka  # noqa: F401
        has_torch_cka = True
    except ImportError:
        has_torch_cka = False
        print("torch-cka not importable: skipped (pip install torch-cka==0.21)")
    with tempfile.TemporaryDirectory() as tmp:
        a_np, b_np = make_stacks(args.n, args.d, args.layers)
        data = str(Path(tmp) / "stacks.npy")
        np.save(data, np.stack([np.stack(list(a_np.values())), np.stack(list(b_np.values()))]))
        names_a, names_b = list(a_np), list(b_np)
        wa, wb = [v.shape[1] for v in a_np.values()], [v.shape[1] for v in b_np.values()]
        del a_np, b_np
        pairs = len(names_a) * len(names_b)
        common = [__file__, "--n", str(args.n), "--d", str(args.d), "--layers", str(args.layers), "--device", device,
                  "--batch-size", str(args.batch_size), "--peer-budget", str(args.peer_budget), "--data", data]
        if args.peak_n:
            common += ["--peak-n", str(args.peak_n)]

        def config(side: str, threads: int, jobs: int = 1):
            return lambda: run_child(common + ["--child", side, "--child-jobs", str(jobs)], threads)

        print(f"CKA {len(names_a)} x {len(names_b)} layers, N={args.n}, d={args.d}, float64, device={device}, "
              f"{CORES} cores; every configuration in its own process, {args.repeats} interleaved rounds, medians")
        peaks = run_child(common + ["--child", "peak"], CORES)
        print(f"matmul peak ({peaks['size']}^2, best of 3, {CORES} threads): float64 {peaks['float64'] / 1e9:.1f} "
              f"GFLOP/s, float32 {peaks['float32'] / 1e9:.1f} GFLOP/s")
        full, mini = {}, {}
        for t in thread_counts():
            full[label("ours", t)] = config("ours", t)
            mini[label("ours MinibatchCKA", t)] = config("minibatch", t)
            for side in ("numpy_gram", "numpy_features"):
                full[label(side, t)] = config(side, t)
            if has_torch_cka:
                mini[label("torch_cka", t)] = config("torch_cka", t)
        if CORES > 1:  # the per-pair loops parallelise over pairs, one BLAS thread per worker
            for side in ("numpy_gram", "numpy_features"):
                full[label(side, 1, CORES)] = config(side, 1, CORES)
        runs = interleave({**full, **mini}, args.repeats)
    times = {k: median([r["time_s"] for r in v]) for k, v in runs.items()}
    record: dict = {"benchmark": "cka", "device": device, "torch": torch.__version__,
                    "machine": platform.processor() or platform.machine(), "cores": CORES, "n": args.n, "d": args.d,
                    "layers": args.layers, "pairs": pairs, "repeats": args.repeats,
                    "method": "each configuration in its own process with its thread count set before import; "
                              "interleaved rounds; median times",
                    "peak_flops": peaks, "configurations": {k: {"time_s": times[k],
                                                                "times_s": [r["time_s"] for r in v]}
                                                            for k, v in runs.items()}}
    for k in runs:
        each = ", ".join(f"{r['time_s']:.2f}" for r in runs[k])
        print(f"  {k:45s} {times[k]:9.3f} s  (runs: {each})")

    # ---- ours (best configuration) against the per-pair loops' best configurations
    ours_key, t_ours = best(times, "ours [")
    ours = np.array(runs[ours_key][0]["matrix"])
    t_ours_deb = median([r["time_debiased_s"] for r in runs[ours_key]])
    cka_mod = importlib.import_module("workbench.similarity._cka")
    if cka_mod._prefer_gram("linear", args.n, wa, wb):  # N close to d: every layer kept as its Gram
        plan = "gram"
        flops = 2.0 * args.n ** 2 * (sum(wa) + sum(wb) + len(wa) * len(wb))
    else:  # feature space: one blocked Xa^T Xb + one d x d GEMM per layer
        plan = "features"
        flops = 2.0 * args.n * (sum(wa) * sum(wb) + sum(w * w for w in wa) + sum(w * w for w in wb))
    peak64, peak32 = peaks["float64"], peaks["float32"]
    record["ours"] = {"configuration": ours_key, "time_s": t_ours, "time_debiased_s": t_ours_deb, "plan": plan,
                      "gemm_flops": flops, "flops_per_s": flops / t_ours,
                      "fraction_of_float64_peak": flops / t_ours / peak64}
    print(f"ours cka_matrix ({plan} plan), best {ours_key}: {t_ours:.3f} s ({pairs} pairs), debiased "
          f"{t_ours_deb:.3f} s; "
          f"{flops / 1e9:.1f} GFLOP of GEMM -> {flops / t_ours / 1e9:.1f} GFLOP/s = "
          f"{100 * flops / t_ours / peak64:.0f} % of float64 peak (target >= 50 %)")
    for key, what in (("numpy_gram", "NumPy per pair, [N, N] Grams (demo style)"),
                      ("numpy_features", "NumPy per pair, feature space")):
        peer_key, t_peer = best(times, key + " [")
        res = runs[peer_key][0]
        diffs = [abs(v - ours[i, j]) for i, j, v in res["values"]]
        record[key] = {"configuration": peer_key, "time_s": t_peer, "extrapolated": res["extrapolated"],
                       "pairs_timed": res["pairs_timed"], "pairs": res["pairs"], "max_abs_diff": float(max(diffs)),
                       "agree": bool(max(diffs) <= TOL), "ratio_vs_ours": t_peer / t_ours,
                       "all_configurations_s": {k: v for k, v in times.items() if k.startswith(key + " [")}}
        how = (f"EXTRAPOLATED from {res['pairs_timed']} of {res['pairs']} pairs" if res["extrapolated"]
               else f"all {res['pairs']} pairs")
        print(f"{what}, best {peer_key}: {t_peer:.2f} s ({how}) -> ours is {t_peer / t_ours:.1f}x faster; "
              f"max |diff| {max(diffs):.1e} ({'agree' if max(diffs) <= TOL else 'DISAGREE'} to {TOL:g})")

    # ---- minibatch: our MinibatchCKA (best) against torch-cka (best)
    mb_key, t_mb = best(times, "ours MinibatchCKA [")
    t_mb32 = median([r["time_float32_s"] for r in runs[mb_key]])
    mb, mb32 = np.array(runs[mb_key][0]["matrix"]), np.array(runs[mb_key][0]["matrix_float32"])
    diff32 = float(np.abs(mb32 - mb).max())
    bs = min(args.batch_size, args.n)
    from workbench.similarity._cka import _packed_size, _prefer_gram

    gram_plan = _prefer_gram("linear", bs, wa, wb)
    sizes = [min(bs, args.n - s) for s in range(0, args.n, bs)]
    record["ours_minibatch"] = {"configuration": mb_key, "time_s": t_mb, "batch_size": bs, "batches": len(sizes),
                                "plan": "packed grams" if gram_plan else "features"}
    record["ours_minibatch_float32"] = {"time_s": t_mb32, "max_abs_diff_vs_float64": diff32, "agree": diff32 <= TOL}
    work = ""
    if gram_plan:
        mb_flops = float(sum(2 * _packed_size(b) * (sum(wa) + sum(wb)) for b in sizes))
        record["ours_minibatch"].update(gram_gemm_flops=mb_flops, fraction_of_float64_peak=mb_flops / t_mb / peak64)
        record["ours_minibatch_float32"]["fraction_of_float32_peak"] = mb_flops / t_mb32 / peak32
        work = (f" ({mb_flops / 1e9:.0f} GFLOP of Gram GEMM: {mb_flops / t_mb / peak64:.0%} of the float64 peak end to "
                f"end; float32 {mb_flops / t_mb32 / peak32:.0%} of its peak)")
    print(f"ours MinibatchCKA (batch {bs}, {len(sizes)} batches, {record['ours_minibatch']['plan']}), best {mb_key}: "
          f"{t_mb:.3f} s; with float32 Gram GEMMs (precision='float32'): {t_mb32:.3f} s{work}; max |diff| vs float64 "
          f"{diff32:.1e}")
    if has_torch_cka:
        peer_key, t_peer = best(times, "torch_cka [")
        res = runs[peer_key][0]
        peer = np.array(res["matrix"])
        diff = float(np.abs(peer - mb[:peer.shape[0]]).max())
        record["torch_cka"] = {"version": res["version"], "configuration": peer_key, "time_s": t_peer,
                               "extrapolated": res["extrapolated"], "pairs_timed": res["pairs_timed"], "pairs": pairs,
                               "measured": "CKA.compare over identity models, minibatch CKA (unbiased HSIC)",
                               "max_abs_diff": diff, "agree": diff <= TOL, "ratio_vs_ours_minibatch": t_peer / t_mb,
                               "ratio_vs_ours_minibatch_float32": t_peer / t_mb32,
                               "all_configurations_s": {k: v for k, v in times.items() if k.startswith("torch_cka [")}}
        how = (f"EXTRAPOLATED from layer 0 of A x all of B ({res['pairs_timed']} pairs)" if res["extrapolated"]
               else f"all {pairs} pairs")
        print(f"torch-cka {res['version']} (minibatch {bs}), best {peer_key}: {t_peer:.2f} s ({how}) -> ours "
              f"MinibatchCKA is {t_peer / t_mb:.1f}x faster ({t_peer / t_mb32:.1f}x with precision='float32'); "
              f"max |diff| {diff:.1e} ({'agree' if diff <= TOL else 'DISAGREE'} to {TOL:g})")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "cka.json").write_text(json.dumps(record, indent=2))
    print(f"wrote {out / 'cka.json'}")
    bad = [k for k, v in record.items() if isinstance(v, dict) and v.get("agree") is False]
    if bad:
        raise SystemExit(f"values disagree beyond {TOL:g}: {bad}")


if __name__ == "__main__":
    main()

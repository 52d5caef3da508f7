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

A peer whose projected time exceeds ``--peer-budget`` seconds (default 300) is timed on a few pairs (torch-cka: on
the first layer of A against all of B) and extrapolated linearly in the number of pairs; the output says so.
Values are checked to agree to 1e-6 (absolute) on every pair a peer computed.

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
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--d", type=int, default=384)
    ap.add_argument("--layers", type=int, default=13)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch-size", type=int, default=1000, help="minibatch size for torch-cka / MinibatchCKA")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--peer-budget", type=float, default=300.0, help="seconds; longer peers are extrapolated")
    ap.add_argument("--peak-n", type=int, default=None, help="matmul size for the peak (default 8192 cuda, 4096 cpu)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    from workbench.similarity import cka_matrix

    device = args.device
    peak_n = args.peak_n or (8192 if device.startswith("cuda") else 4096)
    a_np, b_np = make_stacks(args.n, args.d, args.layers)
    names_a, names_b = list(a_np), list(b_np)
    a_t = {k: torch.as_tensor(v, device=device) for k, v in a_np.items()}
    b_t = {k: torch.as_tensor(v, device=device) for k, v in b_np.items()}
    pairs = len(a_np) * len(b_np)
    print(f"CKA {len(a_np)} x {len(b_np)} layers, N={args.n}, d={args.d}, float64, device={device}, "
          f"torch threads={torch.get_num_threads()}")

    # ---- peaks
    peak64 = matmul_peak(device, torch.float64, peak_n)
    peak32 = matmul_peak(device, torch.float32, peak_n)
    print(f"matmul peak ({peak_n}^2, best of 3): float64 {peak64 / 1e9:.1f} GFLOP/s, "
          f"float32 {peak32 / 1e9:.1f} GFLOP/s")

    # ---- ours
    record: dict = {"benchmark": "cka", "device": device, "torch": torch.__version__,
                    "machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                    "n": args.n, "d": args.d, "layers": args.layers, "pairs": pairs,
                    "peak_flops": {"float64": peak64, "float32": peak32, "size": peak_n}}
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base_mem = torch.cuda.memory_allocated()
    ours = cka_matrix(a_t, b_t, output="matrix").to_numpy()  # warm-up
    t_ours = _best(lambda: cka_matrix(a_t, b_t, output="matrix"), args.repeats, device)
    t_ours_deb = _best(lambda: cka_matrix(a_t, b_t, debiased=True, output="matrix"), args.repeats, device)
    wa_all = [v.shape[1] for v in a_np.values()]
    wb_all = [v.shape[1] for v in b_np.values()]
    cka_mod = importlib.import_module("workbench.similarity._cka")
    if cka_mod._prefer_gram("linear", args.n, wa_all, wb_all):  # N close to d: every layer kept as its Gram
        plan = "gram"
        flops = 2.0 * args.n ** 2 * (sum(wa_all) + sum(wb_all) + len(wa_all) * len(wb_all))
    else:  # feature space: one blocked Xa^T Xb + one d x d GEMM per layer
        plan = "features"
        flops = 2.0 * args.n * (sum(wa_all) * sum(wb_all) + sum(w * w for w in wa_all) + sum(w * w for w in wb_all))
    record["ours"] = {"time_s": t_ours, "time_debiased_s": t_ours_deb, "plan": plan, "gemm_flops": flops,
                      "flops_per_s": flops / t_ours, "fraction_of_float64_peak": flops / t_ours / peak64}
    if device.startswith("cuda"):
        record["ours"]["extra_gpu_memory_mib"] = (torch.cuda.max_memory_allocated() - base_mem) / 2**20
    print(f"ours cka_matrix ({plan} plan): {t_ours:.3f} s ({pairs} pairs), debiased {t_ours_deb:.3f} s; "
          f"{flops / 1e9:.1f} GFLOP of GEMM -> {flops / t_ours / 1e9:.1f} GFLOP/s = "
          f"{100 * flops / t_ours / peak64:.0f} % of float64 peak (target >= 50 %)")

    # ---- per-pair NumPy loops
    for key, fn, label in (("numpy_gram", numpy_gram_pair, "NumPy per pair, [N, N] Grams (demo style)"),
                           ("numpy_features", numpy_features_pair, "NumPy per pair, feature space")):
        res = per_pair_peer(fn, a_np, b_np, ours, args.peer_budget)
        res["ratio_vs_ours"] = res["time_s"] / t_ours
        record[key] = res
        how = (f"EXTRAPOLATED from {res['pairs_timed']} of {res['pairs']} pairs" if res["extrapolated"]
               else f"all {res['pairs']} pairs")
        print(f"{label}: {res['time_s']:.2f} s ({how}) -> ours is {res['ratio_vs_ours']:.1f}x faster; "
              f"max |diff| {res['max_abs_diff']:.1e} ({'agree' if res['agree'] else 'DISAGREE'} to {TOL:g})")

    # ---- minibatch: torch-cka vs MinibatchCKA
    xa = torch.as_tensor(np.hstack([a_np[k] for k in names_a]))
    xb = torch.as_tensor(np.hstack([b_np[k] for k in names_b]))
    wa = [a_np[k].shape[1] for k in names_a]
    wb = [b_np[k].shape[1] for k in names_b]
    bs = min(args.batch_size, args.n)
    run_ours_minibatch(xa, xb, names_a, names_b, wa, wb, bs, device)  # warm-up
    mb = run_ours_minibatch(xa, xb, names_a, names_b, wa, wb, bs, device)
    t_mb = _best(lambda: run_ours_minibatch(xa, xb, names_a, names_b, wa, wb, bs, device), args.repeats, device)
    mb32 = run_ours_minibatch(xa, xb, names_a, names_b, wa, wb, bs, device, "float32")
    t_mb32 = _best(lambda: run_ours_minibatch(xa, xb, names_a, names_b, wa, wb, bs, device, "float32"),
                   args.repeats, device)
    diff32 = float(np.abs(mb32 - mb).max())
    # GEMM work of the all-Gram plan: one packed Gram triangle per layer and batch, 2 * P * d flops
    from workbench.similarity._cka import _packed_size, _prefer_gram

    gram_plan = _prefer_gram("linear", bs, wa, wb)
    sizes = [min(bs, args.n - s) for s in range(0, args.n, bs)]
    record["ours_minibatch"] = {"time_s": t_mb, "batch_size": bs, "batches": len(sizes),
                                "plan": "packed grams" if gram_plan else "features"}
    record["ours_minibatch_float32"] = {"time_s": t_mb32, "max_abs_diff_vs_float64": diff32, "agree": diff32 <= TOL}
    work = ""
    if gram_plan:
        mb_flops = float(sum(2 * _packed_size(b) * (sum(wa) + sum(wb)) for b in sizes))
        record["ours_minibatch"].update(gram_gemm_flops=mb_flops, fraction_of_float64_peak=mb_flops / t_mb / peak64)
        record["ours_minibatch_float32"]["fraction_of_float32_peak"] = mb_flops / t_mb32 / peak32
        work = (f" ({mb_flops / 1e9:.0f} GFLOP of Gram GEMM: {mb_flops / t_mb / peak64:.0%} of the float64 peak end to "
                f"end; float32 {mb_flops / t_mb32 / peak32:.0%} of its peak)")
    print(f"ours MinibatchCKA (batch {bs}, {len(sizes)} batches, {record['ours_minibatch']['plan']}): {t_mb:.3f} s; "
          f"with float32 Gram GEMMs (precision='float32'): {t_mb32:.3f} s{work}; max |diff| vs float64 {diff32:.1e}")
    try:
        import torch_cka
    except ImportError:
        torch_cka = None
        print("torch-cka not importable: skipped (pip install torch-cka==0.21)")
    if torch_cka is not None:
        row, t_row = run_torch_cka(torch_cka, xa, xb, wa, wb, 1, bs, device)
        extrapolated = t_row * len(names_a) > args.peer_budget
        if extrapolated:
            peer, t_peer = row, t_row * len(names_a)
        else:
            peer, t_peer = run_torch_cka(torch_cka, xa, xb, wa, wb, len(names_a), bs, device)
        diff = float(np.abs(peer - mb[:peer.shape[0]]).max())
        record["torch_cka"] = {"version": getattr(torch_cka, "__version__", "?"), "time_s": t_peer,
                               "extrapolated": extrapolated,
                               "pairs_timed": (len(names_b) if extrapolated else pairs), "pairs": pairs,
                               "measured": "CKA.compare over identity models, minibatch CKA (unbiased HSIC)",
                               "max_abs_diff": diff, "agree": diff <= TOL, "ratio_vs_ours_minibatch": t_peer / t_mb,
                               "ratio_vs_ours_minibatch_float32": t_peer / t_mb32}
        how = (f"EXTRAPOLATED from layer 0 of A x all of B ({len(names_b)} pairs)" if extrapolated
               else f"all {pairs} pairs")
        print(f"torch-cka {record['torch_cka']['version']} (minibatch {bs}): {t_peer:.2f} s ({how}) -> ours "
              f"MinibatchCKA is {t_peer / t_mb:.1f}x faster ({t_peer / t_mb32:.1f}x with precision='float32'); "
              f"max |diff| {diff:.1e} "
              f"({'agree' if diff <= TOL else 'DISAGREE'} to {TOL:g})")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "cka.json").write_text(json.dumps(record, indent=2))
    print(f"wrote {out / 'cka.json'}")
    bad = [k for k, v in record.items() if isinstance(v, dict) and v.get("agree") is False]
    if bad:
        raise SystemExit(f"values disagree beyond {TOL:g}: {bad}")


if __name__ == "__main__":
    main()

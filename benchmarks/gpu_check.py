"""GPU check: run the CUDA tests, measure the device's matmul peak, and time the library's workloads on GPU and CPU.

For a person with a CUDA machine (issue 17)::

    python benchmarks/gpu_check.py [--size tiny|small|full] [--out benchmarks/results] [--cpu-only]
                                   [--workloads probe,cka,minibatch_cka,train,extract] [--no-cuda-tests]
                                   [--no-static]

1. **CUDA tests**: ``python -m pytest -q -k cuda`` over the test files that hold CUDA tests (probing, probes,
   similarity, spectrum), in a subprocess; pass / fail / skip counts and the tail of the output are recorded.
2. **Peak**: FLOP/s of one square ``torch.matmul`` (``2 n^3`` flops; best of 3 after a warm-up) in float32 (TF32
   off and on), bfloat16 and float64 on the GPU; float32, bfloat16 and float64 on the CPU with torch's threads
   (all cores unless ``OMP_NUM_THREADS`` / ``torch.set_num_threads`` say otherwise; recorded).
3. **Workloads**, the same library call on the GPU (inputs moved there before the clock) and on the CPU, each
   timed as the best of ``k`` calls after one warm-up call (``torch.cuda.synchronize()`` around every GPU call;
   on the CPU a warm-up longer than the size's budget is itself the measurement, ``cpu_timed_runs = 0``):

   ===============  =========================================================================================
   probe            ``linear_probe(train_layers, y, {"test": ...}, n_boot=0, Cs=..., folds=...)``: a layers x C
                    cross-validated sweep plus the refit (synthetic activations whose class separation grows
                    with depth). GPU vs CPU: max |difference| of the held-out accuracy per layer (tolerance
                    0.005) and whether the selected C agree.
   cka              ``cka_matrix(A, B)`` on two stacks of float64 layers. GEMM flops of the cheaper plan,
                    ``min(2 N (sum Da sum Db + sum Da^2 + sum Db^2), 2 N^2 (sum Da + sum Db + La Lb))``, as a
                    fraction of the float64 peak. GPU vs CPU: max |difference| of the CKA matrix (tolerance 1e-6).
   minibatch_cka    ``minibatch_cka(batches)`` (Nguyen et al. 2021) over ``N / b`` batches of both stacks.
                    Flops per batch: ``min(2 b (sum Da sum Db + sum Da^2 + sum Db^2), b (b + 1) (sum Da + sum
                    Db))`` (features plan, or packed Gram plan), fraction of the float64 peak; tolerance 1e-6.
   train            ``workbench.train.train`` on a ``shapes`` CNN (supervised, no augmentation), timed as in
                    ``bench_train.py``: runs of ``S`` and ``3 S`` steps in fresh stores, steps/s = ``2 S`` over the
                    difference (set-up cancels; when the difference is under 5 % of the long run, i.e. noise, the
                    long run's ``3 S`` steps over its whole time: ``*_setup_cancelled`` false). GPU vs CPU:
                    |difference| of the step-0 held-out loss (same initial weights, float32, cuDNN may use TF32:
                    tolerance 1e-3).
   extract          ``extract(model, split, pool="mean", device=...)`` over every probe point of a fresh CNN;
                    examples/s. GPU vs CPU: max |difference| of the activations, tolerance 5e-3 x the largest
                    |value| (TF32 convolutions).
   ===============  =========================================================================================

   Probe sweeps, training and extraction have no meaningful flop count (iterative solver, small convolutions):
   their fraction of peak is null.
4. **Output** in ``--out``: ``gpu_check.json`` (device, torch / CUDA versions, threads, peaks, CUDA test counts, one
   record per workload with ``cpu_s``, ``gpu_s``, ``speedup``, ``flops``, ``cpu_fraction_of_peak``,
   ``gpu_fraction_of_peak``, ``max_abs_diff``, ``tolerance``, ``ok`` and a ``check`` block of CPU values that a
   reader can recompute: CKA matrices, per-layer probe accuracies and C, summed logits); and the figure
   ``gpu_check_figure.{json,csv,html}`` (speedup per workload and fraction of peak) via
   ``workbench.figures.export`` / ``to_html``, plus ``.svg`` when a Chromium is installed (not with ``--no-static``).
5. **No CUDA**: without a CUDA device and without ``--cpu-only`` the script prints ``no CUDA device: GPU checks
   skipped``, writes nothing and exits 0. ``--cpu-only`` runs the CPU half of every workload (``gpu_s`` null).
   Exit status 1 when a workload's GPU result disagrees with the CPU beyond its tolerance or a CUDA test fails.

Sizes: ``tiny`` (seconds on one CPU thread, for the test), ``small`` (about a minute on a GPU machine), ``full`` (probe
50 000 x 768 x 12 layers, CKA 13 + 13 layers x 10 000 x 768, CNN width 64 batch 256, extraction of 50 000 images;
the CPU halves dominate: several minutes on a 16-core host; ``--workloads`` splits the run).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SKIP_MESSAGE = "no CUDA device: GPU checks skipped"
WORKLOADS = ("probe", "cka", "minibatch_cka", "train", "extract")
CUDA_TEST_FILES = ("tests/test_probing.py", "tests/test_probes.py", "tests/test_similarity.py",
                   "tests/test_spectrum.py")

SIZES = {
    "tiny": dict(peak_cpu=256, peak_gpu=2048, repeats=1, budget=2.0,
                 probe=dict(n=300, n_test=200, d=16, layers=3, classes=3, Cs=(0.1, 1.0), folds=2),
                 cka=dict(n=400, d=24, layers=3), minibatch=dict(n=400, d=24, layers=3, batch=100),
                 train=dict(width=8, depth=2, batch=32, steps=2, n_train=256, n_test=64, size=16),
                 extract=dict(n=256, width=8, depth=2, size=16, batch=128)),
    "small": dict(peak_cpu=2048, peak_gpu=8192, repeats=3, budget=30.0,
                  probe=dict(n=10000, n_test=2000, d=384, layers=6, classes=10,
                             Cs=(0.001, 0.01, 0.1, 1.0, 10.0, 100.0), folds=5),
                  cka=dict(n=4000, d=384, layers=13), minibatch=dict(n=4000, d=384, layers=13, batch=1000),
                  train=dict(width=32, depth=3, batch=128, steps=20, n_train=4000, n_test=500, size=32),
                  extract=dict(n=8192, width=32, depth=3, size=32, batch=256)),
    "full": dict(peak_cpu=4096, peak_gpu=16384, repeats=3, budget=60.0,
                 probe=dict(n=50000, n_test=10000, d=768, layers=12, classes=10,
                            Cs=(0.001, 0.01, 0.1, 1.0, 10.0, 100.0), folds=5),
                 cka=dict(n=10000, d=768, layers=13), minibatch=dict(n=10000, d=768, layers=13, batch=1000),
                 train=dict(width=64, depth=4, batch=256, steps=30, n_train=10000, n_test=1000, size=32),
                 extract=dict(n=50000, width=64, depth=4, size=32, batch=512)),
}
TOL = {"probe": 0.005, "cka": 1e-6, "minibatch_cka": 1e-6, "train": 1e-3, "extract_relative": 5e-3}


# ------------------------------------------------------------------------------------------------ timing
def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def timed(fn, device: str, repeats: int, budget: float, warmup: bool = True) -> tuple[float, object, int]:
    """(best seconds, the first call's result, timed calls) of ``fn()``: one warm-up call (unless ``warmup`` is
    False: the caller warmed up), then up to ``repeats`` timed calls while the seconds spent plus the expected next
    call stay within ``budget``. On the CPU a warm-up that alone exceeds the budget is itself the measurement (0 timed
    calls); on a GPU there is always at least one timed call."""
    first, warm = None, 0.0
    if warmup:
        _sync(device)
        t0 = time.perf_counter()
        first = fn()
        _sync(device)
        warm = time.perf_counter() - t0
    best, runs, spent = math.inf, 0, warm
    while runs < repeats:
        expected = best if runs else warm  # the next call should take about as long as the last one
        if spent + expected > budget and (runs or device == "cpu"):
            break
        _sync(device)
        t0 = time.perf_counter()
        result = fn()
        _sync(device)
        dt = time.perf_counter() - t0
        first = result if runs == 0 and not warmup else first
        best, runs, spent = min(best, dt), runs + 1, spent + dt
    return (best if runs else warm), first, runs


def matmul_peak(device: str, dtype, size: int, repeats: int = 3, budget: float = math.inf) -> tuple[float, int]:
    """(FLOP/s, n) of one [n, n] @ [n, n] ``torch.matmul`` (2 n^3 flops), best of ``repeats`` after a warm-up.

    ``n = size``, unless ``budget`` is finite: then a 256^2 matmul first estimates the rate and ``n`` is the
    largest multiple of 128 up to ``size`` whose matmul takes about ``budget / 8`` seconds (at least 256)."""
    import torch

    g = torch.Generator(device=device).manual_seed(0)
    n = size
    if math.isfinite(budget):
        n0 = min(size, 256)
        a = torch.randn(n0, n0, dtype=dtype, device=device, generator=g)
        seconds, _, _ = timed(lambda: torch.matmul(a, a), device, 1, math.inf)
        rate = 2.0 * n0 ** 3 / seconds
        n = max(n0, min(size, int((rate * budget / 8 / 2) ** (1 / 3)) // 128 * 128))
    a = torch.randn(n, n, dtype=dtype, device=device, generator=g)
    b = torch.randn(n, n, dtype=dtype, device=device, generator=g)
    seconds, _, _ = timed(lambda: torch.matmul(a, b), device, repeats, budget)
    return 2.0 * n ** 3 / seconds, n


def peaks(device: str, size: int, budget: float = math.inf) -> dict:
    """Matmul FLOP/s per dtype on ``device`` (CPU: float32, bfloat16, float64; CUDA: also float32 with TF32 on),
    and the matrix size used for each (``sizes``). On a CPU without bfloat16 units a bfloat16 matmul can be 50x
    slower than float32: ``budget`` bounds each (see :func:`matmul_peak`)."""
    import torch

    out: dict = {"sizes": {}}

    def one(name: str, dtype) -> None:
        out[name], out["sizes"][name] = matmul_peak(device, dtype, size, budget=budget)

    if device == "cpu":
        for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16), ("float64", torch.float64)):
            one(name, dtype)
        return out
    old = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        one("float32", torch.float32)
        torch.backends.cuda.matmul.allow_tf32 = True
        one("float32_tf32", torch.float32)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old
    one("bfloat16", torch.bfloat16)
    one("float64", torch.float64)
    return out


# ------------------------------------------------------------------------------------------------- data
def probe_data(n: int, n_test: int, d: int, layers: int, classes: int, seed: int = 0):
    """Synthetic float32 activations: a 16-d latent class structure (separation growing with depth) mapped to ``d``
    dims with anisotropic noise and a leaky ReLU. Returns (train layers, y, test layers, y_test)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n + n_test)
    latent = min(16, d)
    means = rng.standard_normal((classes, latent))
    scale = (1.0 + np.arange(d)) ** -0.5
    train, test = {}, {}
    for i in range(layers):
        sep = 0.3 + 1.2 * i / max(layers - 1, 1)
        z = sep * means[y] + rng.standard_normal((n + n_test, latent))
        h = z @ (rng.standard_normal((latent, d)) / np.sqrt(latent)) + rng.standard_normal((n + n_test, d)) * scale
        h = (np.maximum(h, 0) + 0.1 * h).astype(np.float32)
        train[f"layer{i:02d}"], test[f"layer{i:02d}"] = h[:n], h[n:]
    return train, y[:n], test, y[n:]


def cka_stacks(n: int, d: int, layers: int, seed: int = 0) -> tuple[dict, dict]:
    """Two related stacks of float64 [n, d] layers: each layer is tanh of a random projection of the previous one
    (starting from a shared 32-d latent) plus 0.1 noise."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, 32))
    stacks = []
    for side in "ab":
        stack, h = {}, z
        for i in range(layers):
            h = np.tanh(h @ (rng.standard_normal((h.shape[1], d)) / np.sqrt(h.shape[1])))
            stack[f"{side}{i:02d}"] = h + 0.1 * rng.standard_normal((n, d))
        stacks.append(stack)
    return stacks[0], stacks[1]


def cka_flops(n: int, wa: list[int], wb: list[int]) -> float:
    """GEMM flops of all-pairs linear CKA in the cheaper of the feature plan and the Gram plan."""
    feats = 2.0 * n * (sum(wa) * sum(wb) + sum(w * w for w in wa) + sum(w * w for w in wb))
    grams = 2.0 * n * n * (sum(wa) + sum(wb) + len(wa) * len(wb))
    return min(feats, grams)


def minibatch_flops(sizes: list[int], wa: list[int], wb: list[int]) -> float:
    """Sum over batches of the cheaper plan: features ``2 b (...)`` or packed Grams ``2 b (b + 1) / 2 (sum D)``."""
    total = 0.0
    for b in sizes:
        feats = 2.0 * b * (sum(wa) * sum(wb) + sum(w * w for w in wa) + sum(w * w for w in wb))
        grams = float(b * (b + 1)) * (sum(wa) + sum(wb))
        total += min(feats, grams)
    return total


def image_data(n: int, size: int, seed: int = 0):
    from workbench import data

    return data.load("shapes", n_train=n, n_test=16, n_ood=16, size=size, seed=seed)


def cnn(ds, width: int, depth: int, seed: int = 0):
    """A fresh ``models.build("cnn")`` under ``torch.manual_seed(seed)`` (CPU)."""
    import torch

    from workbench import models

    torch.manual_seed(seed)
    return models.build("cnn", input_shape=tuple(ds.input_shape), num_classes=ds.num_classes, width=width, depth=depth)


# -------------------------------------------------------------------------------------------- workloads
def _to(layers: dict, device: str) -> dict:
    import torch

    return {k: torch.as_tensor(v, device=device) for k, v in layers.items()}


def w_probe(p: dict, devices: list[str], repeats: int, budget: float) -> dict:
    from workbench.probing import linear_probe

    train, y, test, y_test = probe_data(p["n"], p["n_test"], p["d"], p["layers"], p["classes"])
    rec: dict = {"workload": "probe", "params": {k: list(v) if isinstance(v, tuple) else v for k, v in p.items()},
                 "flops": None, "tolerance": TOL["probe"],
                 "compared": "held-out accuracy per layer (and the selected C)"}
    results = {}
    for dev in devices:
        tr, te = _to(train, dev), _to(test, dev)

        def call(tr=tr, te=te):
            return linear_probe(tr, y, {"test": (te, y_test)}, n_boot=0, Cs=p["Cs"], folds=p["folds"])
        seconds, df, runs = timed(call, dev, repeats, budget)
        acc = df[(df.split == "test") & (df.measure == "accuracy")].set_index("layer")
        results[dev] = {k: {"C": float(acc.loc[k, "C"]), "test_accuracy": float(acc.loc[k, "value"])} for k in train}
        side = "cpu" if dev == "cpu" else "gpu"
        rec[f"{side}_s"], rec[f"{side}_timed_runs"] = seconds, runs
    rec["check"] = {"layers": results["cpu"]}
    if "cuda" in results:
        rec["max_abs_diff"] = max(abs(results["cuda"][k]["test_accuracy"] - results["cpu"][k]["test_accuracy"])
                                  for k in train)
        rec["same_C"] = all(results["cuda"][k]["C"] == results["cpu"][k]["C"] for k in train)
        rec["gpu_layers"] = results["cuda"]
    return rec


def w_cka(p: dict, devices: list[str], repeats: int, budget: float) -> dict:
    from workbench.similarity import cka_matrix

    a, b = cka_stacks(p["n"], p["d"], p["layers"])
    rec: dict = {"workload": "cka", "params": dict(p, seed=0),
                 "flops": cka_flops(p["n"], [v.shape[1] for v in a.values()], [v.shape[1] for v in b.values()]),
                 "peak_dtype": "float64", "tolerance": TOL["cka"], "compared": "CKA matrix (linear, biased)"}
    mats = {}
    for dev in devices:
        ta, tb = _to(a, dev), _to(b, dev)
        seconds, m, runs = timed(lambda ta=ta, tb=tb: cka_matrix(ta, tb, output="matrix"), dev, repeats, budget)
        mats[dev] = m.to_numpy()
        side = "cpu" if dev == "cpu" else "gpu"
        rec[f"{side}_s"], rec[f"{side}_timed_runs"] = seconds, runs
    rec["check"] = {"layers_a": list(a), "layers_b": list(b), "matrix": mats["cpu"].tolist()}
    if "cuda" in mats:
        rec["max_abs_diff"] = float(np.abs(mats["cuda"] - mats["cpu"]).max())
    return rec


def w_minibatch(p: dict, devices: list[str], repeats: int, budget: float) -> dict:
    from workbench.similarity import minibatch_cka

    a, b = cka_stacks(p["n"], p["d"], p["layers"], seed=1)
    starts = range(0, p["n"], p["batch"])
    sizes = [min(p["batch"], p["n"] - s) for s in starts]
    rec: dict = {"workload": "minibatch_cka", "params": dict(p, seed=1),
                 "flops": minibatch_flops(sizes, [v.shape[1] for v in a.values()], [v.shape[1] for v in b.values()]),
                 "peak_dtype": "float64", "tolerance": TOL["minibatch_cka"],
                 "compared": "minibatch CKA matrix (unbiased HSIC, ratio of means over batches in order)"}
    mats = {}
    for dev in devices:
        ta, tb = _to(a, dev), _to(b, dev)
        batches = [({k: v[s:s + p["batch"]] for k, v in ta.items()}, {k: v[s:s + p["batch"]] for k, v in tb.items()})
                   for s in starts]
        seconds, m, runs = timed(lambda batches=batches: minibatch_cka(batches, output="matrix"), dev, repeats, budget)
        mats[dev] = m.to_numpy()
        side = "cpu" if dev == "cpu" else "gpu"
        rec[f"{side}_s"], rec[f"{side}_timed_runs"] = seconds, runs
    rec["check"] = {"layers_a": list(a), "layers_b": list(b), "matrix": mats["cpu"].tolist()}
    if "cuda" in mats:
        rec["max_abs_diff"] = float(np.abs(mats["cuda"] - mats["cpu"]).max())
    return rec


def w_train(p: dict, devices: list[str], repeats: int, budget: float) -> dict:
    from workbench.runs import RunConfig, RunStore
    from workbench.train import train

    config = RunConfig(dataset="shapes", dataset_options={"n_train": p["n_train"], "n_test": p["n_test"], "n_ood": 16,
                                                          "size": p["size"], "seed": 0},
                       model="cnn", model_options={"width": p["width"], "depth": p["depth"]}, objective="supervised",
                       batch_size=p["batch"], lr=1e-3, steps=p["steps"], checkpoints=2, recorders=())
    s = p["steps"]
    rec: dict = {"workload": "train", "params": dict(p, short_steps=s, long_steps=3 * s), "flops": None,
                 "tolerance": TOL["train"], "compared": "step-0 held-out loss (same initial weights)"}
    first_loss = {}
    for dev in devices:
        def run(steps: int, dev=dev):
            with tempfile.TemporaryDirectory() as root:
                r = train(config.replace(steps=steps), RunStore(root), device=dev, progress=False)
                h = r.history()
                return h[(h.step == 0) & (h.measure == "loss") & (h.split == "test")].value.iloc[0]
        side = "cpu" if dev == "cpu" else "gpu"
        first_loss[dev] = float(run(2))  # warm-up: dataset cache, first-call kernels
        short, _, n_short = timed(lambda: run(s), dev, repeats, budget / 2, warmup=False)
        long, _, n_long = timed(lambda: run(3 * s), dev, repeats, budget / 2, warmup=False)
        cancelled = long - short > 0.05 * long  # else the difference is noise (tiny runs): whole runs are timed
        rec[f"{side}_s"] = long - short if cancelled else long
        rec[f"{side}_timed_steps"] = 2 * s if cancelled else 3 * s
        rec[f"{side}_setup_cancelled"] = cancelled
        rec[f"{side}_timed_runs"] = min(n_short, n_long)
        rec[f"{side}_steps_per_s"] = rec[f"{side}_timed_steps"] / rec[f"{side}_s"]
        rec[f"{side}_examples_per_s"] = rec[f"{side}_timed_steps"] * p["batch"] / rec[f"{side}_s"]
    rec["check"] = {"initial_test_loss": first_loss["cpu"]}
    if "cuda" in first_loss:
        rec["max_abs_diff"] = abs(first_loss["cuda"] - first_loss["cpu"])
    return rec


def w_extract(p: dict, devices: list[str], repeats: int, budget: float) -> dict:
    import torch

    from workbench.activations import extract

    ds = image_data(p["n"], p["size"])
    model = cnn(ds, p["width"], p["depth"])
    rec: dict = {"workload": "extract", "params": dict(p, seed=0, pool="mean"), "flops": None,
                 "compared": "activations of every probe point"}
    acts = {}
    for dev in devices:
        model.to(dev)
        seconds, a, runs = timed(lambda dev=dev: extract(model, ds["train"], pool="mean", batch_size=p["batch"],
                                                         device=dev), dev, repeats, budget)
        acts[dev] = {k: torch.as_tensor(a[k]).double().cpu().numpy() for k in a.layers}
        side = "cpu" if dev == "cpu" else "gpu"
        rec[f"{side}_s"], rec[f"{side}_timed_runs"] = seconds, runs
        rec[f"{side}_examples_per_s"] = p["n"] / seconds
    model.to("cpu")
    cpu = acts["cpu"]
    scale = max(float(np.abs(v).max()) for v in cpu.values())
    rec["tolerance"] = TOL["extract_relative"] * scale
    rec["check"] = {"layers": list(cpu), "head_sum": cpu["head"].sum(axis=0).tolist(),
                    "head_first_rows": cpu["head"][:4].tolist()}
    if "cuda" in acts:
        rec["max_abs_diff"] = max(float(np.abs(acts["cuda"][k] - cpu[k]).max()) for k in cpu)
    return rec


RUNNERS = {"probe": w_probe, "cka": w_cka, "minibatch_cka": w_minibatch, "train": w_train, "extract": w_extract}
PARAMS = {"probe": "probe", "cka": "cka", "minibatch_cka": "minibatch", "train": "train", "extract": "extract"}


def finish(rec: dict, peak: dict) -> dict:
    """Speedup, fraction of peak and the verdict of one workload record (fields absent on one side are null)."""
    rec.setdefault("gpu_s", None)
    rec.setdefault("max_abs_diff", None)
    cpu_s, gpu_s, flops = rec["cpu_s"], rec["gpu_s"], rec.get("flops")
    rec["speedup"] = cpu_s / gpu_s if gpu_s else None
    if gpu_s and "cpu_steps_per_s" in rec:  # the sides may have timed different step counts: compare rates
        rec["speedup"] = rec["gpu_steps_per_s"] / rec["cpu_steps_per_s"]
    dtype = rec.get("peak_dtype")
    rec["cpu_fraction_of_peak"] = flops / cpu_s / peak["cpu"][dtype] if flops and dtype else None
    rec["gpu_fraction_of_peak"] = (flops / gpu_s / peak["gpu"][dtype]
                                   if flops and dtype and gpu_s and peak.get("gpu") else None)
    ok = rec["max_abs_diff"] is None or rec["max_abs_diff"] <= rec["tolerance"]
    if rec["workload"] == "probe" and rec.get("same_C") is False:
        ok = False
    rec["ok"] = ok if rec["max_abs_diff"] is not None else None
    return rec


# ------------------------------------------------------------------------------------------ CUDA tests
def cuda_tests(timeout: float = 600.0) -> dict:
    files = [f for f in CUDA_TEST_FILES if (ROOT / f).exists()]
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "cuda", *files]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        text, rc = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as err:
        text, rc = f"{err.stdout or ''}\n... stopped after {timeout:.0f} s", None
    return {"command": " ".join(cmd[1:]), "returncode": rc, **pytest_counts(text), "tail": text[-3000:]}


def pytest_counts(text: str) -> dict:
    """Counts of pytest's last summary line (``2 failed, 5 passed, 1 skipped, 90 deselected in 3.1s``)."""
    counts = dict.fromkeys(("passed", "failed", "skipped", "errors", "deselected"), 0)
    summary = [line for line in text.splitlines() if re.search(r"\d+ (passed|failed|skipped|deselected|error)", line)]
    if summary:
        for num, word in re.findall(r"(\d+) (passed|failed|skipped|deselected|errors?)\b", summary[-1]):
            counts["errors" if word.startswith("error") else word] += int(num)
    return counts


# --------------------------------------------------------------------------------------------- figure
def figure(record: dict, out: Path, static: bool) -> list[str]:
    from plotly.subplots import make_subplots

    from workbench.figures import export, find_chromium, to_html

    recs = record["workloads"]
    names = [r["workload"] for r in recs]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("GPU speedup over CPU (x)", "fraction of measured peak"))
    fig.add_bar(name="speedup", x=names, y=[r["speedup"] for r in recs], row=1, col=1)
    for side in ("cpu", "gpu"):  # side by side through offset groups: barmode="group" shifted the bars' bases
        fig.add_bar(name=f"{side.upper()} fraction of {side.upper()} peak", x=names, offsetgroup=side,
                    y=[r[f"{side}_fraction_of_peak"] for r in recs], row=1, col=2)
    fig.update_yaxes(type="log", row=1, col=1)
    fig.update_yaxes(tickformat=".1~%", rangemode="tozero", row=1, col=2)
    fig.update_layout(barmode="overlay")
    written = [str(p) for p in export(fig, out / "gpu_check_figure.json").values()]  # .json spec + .csv data
    section = f"GPU check ({record['size']}): {record['device'] or 'CPU only'}, torch {record['torch']}"
    written.append(str(to_html({section: fig}, out / "gpu_check_figure.html", title="workbench GPU check")))
    if static and find_chromium():
        try:
            written += [str(p) for k, p in export(fig, out / "gpu_check_figure.svg", width="double").items()
                        if k == "svg"]
        except RuntimeError as err:
            print(f"figure: {err}")
    elif static:
        print("figure: no Chromium found; wrote HTML + JSON + CSV only")
    return written


# ----------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=tuple(SIZES), default="small")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--cpu-only", action="store_true", help="run the CPU half of every workload only")
    ap.add_argument("--workloads", default=",".join(WORKLOADS), help=f"comma-separated subset of {WORKLOADS}")
    ap.add_argument("--no-cuda-tests", action="store_true", help="skip the pytest run of the CUDA tests")
    ap.add_argument("--no-static", action="store_true", help="skip the SVG (Chromium) export of the figure")
    args = ap.parse_args(argv)
    names = [w for w in args.workloads.split(",") if w]
    unknown = sorted(set(names) - set(WORKLOADS))
    if unknown:
        ap.error(f"--workloads: unknown {unknown}; choose from {list(WORKLOADS)}")

    import torch

    has_cuda = torch.cuda.is_available()
    if not has_cuda and not args.cpu_only:
        print(SKIP_MESSAGE)
        return 0
    size = SIZES[args.size]
    devices = ["cpu"] if args.cpu_only else ["cpu", "cuda"]
    record: dict = {"benchmark": "gpu_check", "size": args.size, "cpu_only": args.cpu_only,
                    "device": None if args.cpu_only else torch.cuda.get_device_name(),
                    "torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": (
                        torch.backends.cudnn.version() if has_cuda else None),
                    "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(),
                    "tf32_matmul_default": torch.backends.cuda.matmul.allow_tf32,
                    "tf32_cudnn_default": torch.backends.cudnn.allow_tf32, "tolerances": TOL}
    print(f"gpu_check --size {args.size}: {record['device'] or 'CPU only'}; torch {record['torch']}, CUDA "
          f"{record['cuda']}; {record['torch_threads']} CPU threads")
    if not args.cpu_only and not args.no_cuda_tests:
        record["cuda_tests"] = cuda_tests()
        t = record["cuda_tests"]
        print(f"CUDA tests: {t['passed']} passed, {t['failed']} failed, {t['errors']} errors, {t['skipped']} skipped "
              f"(exit {t['returncode']})")
        if t["passed"] == 0 or t["failed"] or t["errors"]:
            print(t["tail"][-1500:])
    else:
        record["cuda_tests"] = None

    peak = {"cpu": peaks("cpu", size["peak_cpu"], budget=size["budget"] / 2),
            "gpu": None if args.cpu_only else peaks("cuda", size["peak_gpu"])}
    record["peaks_flops"] = peak
    for side, p in peak.items():
        if p:
            print(f"{side.upper()} matmul peak: " + ", ".join(
                f"{k} {v / 1e9:.1f} GFLOP/s ({p['sizes'][k]}^2)" for k, v in p.items() if k != "sizes"))

    record["workloads"] = []
    for name in names:
        rec = finish(RUNNERS[name](size[PARAMS[name]], devices, size["repeats"], size["budget"]), peak)
        record["workloads"].append(rec)
        line = f"{name:14s} cpu {rec['cpu_s']:9.4f} s"
        if rec["gpu_s"] is not None:
            line += f"  gpu {rec['gpu_s']:9.4f} s  speedup {rec['speedup']:7.1f}x"
        for side in ("cpu", "gpu"):
            if rec[f"{side}_fraction_of_peak"] is not None:
                line += f"  {side} {rec[f'{side}_fraction_of_peak']:.0%} of {rec['peak_dtype']} peak"
        if rec["max_abs_diff"] is not None:
            line += (f"  max|gpu-cpu| {rec['max_abs_diff']:.1e} ({'ok' if rec['ok'] else 'MISMATCH'} to "
                     f"{rec['tolerance']:.1e})")
        print(line, flush=True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "gpu_check.json"
    path.write_text(json.dumps(record, indent=2))
    print(f"wrote {path}")
    for p in figure(record, out, static=not args.no_static):
        print(f"wrote {p}")
    bad = [r["workload"] for r in record["workloads"] if r["ok"] is False]
    tests = record["cuda_tests"]
    if bad or (tests and (tests["failed"] or tests["errors"])):
        print(f"GPU check FAILED: mismatching workloads {bad}; CUDA tests failed: "
              f"{bool(tests and (tests['failed'] or tests['errors']))}")
        return 1
    if not args.cpu_only:
        print(f"GPU check OK: {len(record['workloads'])} workloads agree with the CPU within their tolerances")
    return 0


if __name__ == "__main__":
    sys.exit(main())

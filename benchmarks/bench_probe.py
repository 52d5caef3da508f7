"""Linear probe: one batched sweep (all layers x folds x strengths) against the equivalent scikit-learn loop.

Workload (issue): 13 layers of 10 000 x 384 features, 10 classes, 6 strengths x 5 folds of stratified
cross-validation, then a refit per layer at the selected C, scored on a held-out split. The features are
synthetic but shaped like network activations: a 32-d latent class structure whose separation grows
with depth, mapped into 384-d with a power-law noise spectrum, a leaky ReLU and per-feature offsets
(fixed seed), so layers range from near chance to nearly separable.

- ours:    ``workbench.probing.linear_probe(train_layers, y, {"test": ...}, n_boot=0)`` (defaults otherwise:
           float32 sweep to max|grad J| <= cv_tol = 1e-4, float64 refit to tol), wall time.
- sklearn: for each layer, for each fold, for each C: ``StandardScaler`` fitted on the fold's training
           part + ``LogisticRegression(C, solver="lbfgs", tol=cv_tol, max_iter)``; pick C by mean fold
           accuracy (ties -> lower mean log-loss, the same rule), refit on all training rows with
           ``tol=tol``; the same folds (``StratifiedKFold(5, shuffle=True, random_state=0)``), the same grid
           and the same tolerances (sklearn's ``tol`` is a bound on max|grad| of the same objective).
           If the loop is predicted to exceed ``--sklearn-budget`` seconds (from the first layer), only the
           first layers that fit are run and the time is extrapolated linearly in the number of layers
           (printed when it happens).

Reported: both wall times, the ratio (target >= 20x on the 2-core CPU), per-layer held-out accuracy
difference (target <= 0.5 points), the selected C on each side, and the CUDA time when a GPU is present.

    python benchmarks/bench_probe.py [--n 10000] [--layers 13] [--d 384] [--classes 10] [--n-test 2000]
                                     [--sklearn-budget 300] [--out benchmarks/results]

Results go to ``benchmarks/results/probe.json`` (and are printed).
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import torch


def make_layers(n: int, d: int, k: int, n_layers: int, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Synthetic activations: class separation grows with depth; anisotropic, rectified, offset (float32)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    latent = 32
    means = rng.standard_normal((k, latent))
    spectrum = (1.0 + np.arange(d)) ** -0.7
    layers = {}
    for l in range(n_layers):
        sep = 0.15 + 0.6 * l / max(n_layers - 1, 1)
        z = sep * means[y] + rng.standard_normal((n, latent))
        mix = rng.standard_normal((latent, d)) / np.sqrt(latent)
        rot, _ = np.linalg.qr(rng.standard_normal((d, d)))
        h = z @ mix + (rng.standard_normal((n, d)) * spectrum * 2) @ rot
        h = np.maximum(h, 0) + 0.1 * h + rng.uniform(-1, 1, d)
        layers[f"layer{l:02d}"] = h.astype(np.float32)
    return layers, y


def sklearn_loop(train: dict, y: np.ndarray, test: dict, y_test: np.ndarray, names: list[str], Cs, folds: int,
                 cv_tol: float, tol: float, max_iter: int) -> dict:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import StandardScaler

    splits = list(StratifiedKFold(folds, shuffle=True, random_state=0).split(np.zeros(len(y)), y))
    out = {}
    for name in names:
        t0, c0 = time.perf_counter(), time.process_time()
        x = train[name].astype(np.float64)
        acc = np.zeros((folds, len(Cs)))
        loss = np.zeros((folds, len(Cs)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            for f, (tr, va) in enumerate(splits):
                scaler = StandardScaler().fit(x[tr])
                xtr, xva = scaler.transform(x[tr]), scaler.transform(x[va])
                for j, c in enumerate(Cs):
                    clf = LogisticRegression(C=c, tol=cv_tol, max_iter=max_iter).fit(xtr, y[tr])
                    acc[f, j] = clf.score(xva, y[va])
                    loss[f, j] = log_loss(y[va], clf.predict_proba(xva), labels=clf.classes_)
            best = min(range(len(Cs)), key=lambda j: (-round(acc[:, j].mean(), 12), loss[:, j].mean()))
            scaler = StandardScaler().fit(x)
            clf = LogisticRegression(C=Cs[best], tol=tol, max_iter=max_iter).fit(scaler.transform(x), y)
        test_acc = clf.score(scaler.transform(test[name].astype(np.float64)), y_test)
        out[name] = {"seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0, "C": Cs[best],
                     "test_accuracy": float(test_acc)}
    return out


def ours(train: dict, y: np.ndarray, test: dict, y_test: np.ndarray, device: str, **kw) -> tuple[float, float, dict]:
    from workbench.probing import linear_probe

    tr = {k: torch.as_tensor(v, device=device) for k, v in train.items()}
    te = {k: torch.as_tensor(v, device=device) for k, v in test.items()}
    if device == "cuda":
        torch.cuda.synchronize()
    t0, c0 = time.perf_counter(), time.process_time()
    df = linear_probe(tr, y, {"test": (te, y_test)}, n_boot=0, **kw)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    acc = df[(df.split == "test") & (df.measure == "accuracy")].set_index("layer")
    return seconds, cpu_seconds, {k: {"C": float(acc.loc[k, "C"]), "test_accuracy": float(acc.loc[k, "value"])}
                                  for k in train}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10000, help="training examples")
    ap.add_argument("--n-test", type=int, default=2000)
    ap.add_argument("--d", type=int, default=384)
    ap.add_argument("--layers", type=int, default=13)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--sklearn-budget", type=float, default=300.0, help="seconds before extrapolating")
    ap.add_argument("--no-sklearn", action="store_true")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()

    from workbench.probing import linear_probe
    from workbench.probing._linear import DEFAULT_CS

    defaults = {k: v.default for k, v in inspect.signature(linear_probe).parameters.items()
                if v.default is not inspect.Parameter.empty}
    cv_tol, tol, max_iter = defaults["cv_tol"], defaults["tol"], defaults["max_iter"]
    Cs = list(DEFAULT_CS)

    layers, y_all = make_layers(args.n + args.n_test, args.d, args.classes, args.layers)
    train = {k: v[:args.n] for k, v in layers.items()}
    test = {k: v[args.n:] for k, v in layers.items()}
    y, y_test = y_all[:args.n], y_all[args.n:]
    names = list(train)
    print(f"workload: {args.layers} layers x {args.n} x {args.d}, {args.classes} classes, {len(Cs)} C x "
          f"{args.folds} folds (+ refit), held-out {args.n_test}; torch threads {torch.get_num_threads()}")

    import sklearn.linear_model  # noqa: F401  (import time is not part of either measurement)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    if load > (os.cpu_count() or 1):
        print(f"warning: load average {load:.1f} exceeds the {os.cpu_count()} cores; timings are unreliable")
    ours_cpu_s, ours_cpu_time, ours_res = ours(train, y, test, y_test, "cpu", folds=args.folds)
    print(f"ours (cpu):    {ours_cpu_s:8.2f} s  (process CPU time {ours_cpu_time:.2f} s)")
    record = {"benchmark": "probe", "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
              "threads": torch.get_num_threads(), "n": args.n, "n_test": args.n_test, "d": args.d,
              "layers": args.layers, "classes": args.classes, "folds": args.folds, "Cs": Cs, "cv_tol": cv_tol,
              "tol": tol, "load_average": load, "ours_cpu_s": ours_cpu_s, "ours_cpu_process_s": ours_cpu_time,
              "ours": ours_res}

    if torch.cuda.is_available():
        ours(train, y, test, y_test, "cuda", folds=args.folds)  # warm-up (CUDA context, kernels)
        gpu_s, _, gpu_res = ours(train, y, test, y_test, "cuda", folds=args.folds)
        record.update(ours_cuda_s=gpu_s, ours_cuda=gpu_res, gpu=torch.cuda.get_device_name())
        print(f"ours (cuda):   {gpu_s:8.2f} s  ({torch.cuda.get_device_name()})")

    if not args.no_sklearn:
        first = sklearn_loop(train, y, test, y_test, names[:1], Cs, args.folds, cv_tol, tol, max_iter)
        per_layer = first[names[0]]["seconds"]
        n_run = len(names)
        if per_layer * len(names) > args.sklearn_budget:
            n_run = max(1, min(len(names), int(args.sklearn_budget // per_layer)))
        # spread the timed layers over the depth (shallow layers are slower for sklearn: less separable)
        picked = [names[i] for i in np.unique(np.linspace(0, len(names) - 1, n_run).round().astype(int))]
        rest = [k for k in picked if k != names[0]]
        sk = {**first, **sklearn_loop(train, y, test, y_test, rest, Cs, args.folds, cv_tol, tol, max_iter)}
        sk_timed = sum(v["seconds"] for v in sk.values())
        sk_total = sk_timed * len(names) / len(sk)
        sk_cpu_total = sum(v["cpu_seconds"] for v in sk.values()) * len(names) / len(sk)
        extrapolated = len(sk) < len(names)
        if extrapolated:
            print(f"sklearn loop: timed {len(sk)} of {len(names)} layers ({sorted(sk)}) in {sk_timed:.1f} s, "
                  f"extrapolated linearly to all layers")
        print(f"sklearn loop:  {sk_total:8.2f} s{' (extrapolated)' if extrapolated else ''}  "
              f"(process CPU time {sk_cpu_total:.2f} s)")
        ratio = sk_total / ours_cpu_s
        print(f"speed-up (cpu, wall time): {ratio:.1f}x (target >= 20x); "
              f"process CPU time ratio {sk_cpu_total / ours_cpu_time:.1f}x")
        diffs = {k: 100 * (ours_res[k]["test_accuracy"] - v["test_accuracy"]) for k, v in sk.items()}
        for k in sorted(sk):
            print(f"  {k}: held-out accuracy ours {ours_res[k]['test_accuracy']:.4f} (C={ours_res[k]['C']:g}) "
                  f"sklearn {sk[k]['test_accuracy']:.4f} (C={sk[k]['C']:g})  diff {diffs[k]:+.2f} points")
        worst = max(abs(v) for v in diffs.values())
        print(f"max |accuracy difference|: {worst:.2f} points (target <= 0.5)")
        if torch.cuda.is_available():
            record.update(speedup_cuda_vs_sklearn_cpu=sk_total / record["ours_cuda_s"])
            print(f"speed-up (cuda vs the sklearn loop on cpu): {sk_total / record['ours_cuda_s']:.1f}x")
        record.update(sklearn_s=sk_total, sklearn_cpu_process_s=sk_cpu_total, sklearn_timed_s=sk_timed,
                      sklearn_layers_timed=sorted(sk), speedup_cpu_process=sk_cpu_total / ours_cpu_time,
                      sklearn_extrapolated=extrapolated, speedup_cpu=ratio, sklearn=sk,
                      accuracy_diff_points=diffs, max_abs_accuracy_diff_points=worst)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "probe.json").write_text(json.dumps(record, indent=2))
    print(f"wrote {out / 'probe.json'}")


if __name__ == "__main__":
    main()

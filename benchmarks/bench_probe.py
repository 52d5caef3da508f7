"""Linear probe: one batched sweep (all layers x folds x strengths) against scikit-learn at its best.

Workload (issue): 13 layers of 10 000 x 384 features, 10 classes, 6 strengths x 5 folds of stratified
cross-validation, then a refit per layer at the selected C, scored on a held-out split. The features are
synthetic but shaped like network activations: a 32-d latent class structure whose separation grows
with depth, mapped into 384-d with a power-law noise spectrum, a leaky ReLU and per-feature offsets
(fixed seed), so layers range from near chance to nearly separable.

Both sides solve the same problems to the same stopping rule: every fit stops at ``max |grad J| <=
min(cv_tol, rtol * lambda)`` (cross-validation) or ``min(tol, rtol * lambda)`` (refit), ``lambda = 1 / (C
n_train)``, with linear_probe's defaults (``cv_tol = 1e-4``, ``tol = 1e-6``, ``rtol = 1e-2``; sklearn's ``tol``
bounds max|grad| of the same objective), the same folds (``StratifiedKFold(5, shuffle=True,
random_state=0)``), each fold standardized with its own training part, the same grid and the same tie rule
(highest mean fold accuracy, then lowest mean fold log-loss).

- ours:    ``workbench.probing.linear_probe(train_layers, y, {"test": ...}, n_boot=0)`` (defaults otherwise).
- sklearn: ``StandardScaler`` + ``LogisticRegression(C, solver="lbfgs", tol=..., max_iter=10000)`` per layer
           x fold x C, then the refit, float64 (as scikit-learn computes).

Fair threads (issue 15): every configuration runs in its own process with its thread count set in the
environment before NumPy / torch load (``_peers.run_child``); no scikit-learn process imports torch.
Configurations: ours at 1 thread and at all threads (the whole workload each); scikit-learn at 1 thread, at
all threads (BLAS), and with ``joblib.Parallel(n_jobs=all cores)`` over the (layer, fold, C) fits at 1
thread each - what its users would do (``LogisticRegressionCV`` cannot standardize per fold or break ties
by log-loss). Ours and the peer run interleaved. scikit-learn's three configurations are first timed on one
*unit* (one fold's 6 fits of the middle layer); the fastest is then timed on whole layers spread over the
depth (full cross-validation + refit) as long as ``--sklearn-budget`` allows, and extrapolated linearly to
all layers (the other configurations scaled by their unit time). The ratio is the best scikit-learn
configuration's (extrapolated) time over our best configuration's time. A multi-thread configuration slower
than ``SLOW`` (2) x its side's 1-thread time + 60 s is stopped and reported as such (on a busy machine
spinning thread teams can take 10-25x longer, which would stretch the run past 15 minutes).

Reported: every configuration's time, the ratio, the selected C on both sides (must be equal per layer),
held-out accuracy differences, and the CUDA time when a GPU is present.

    python benchmarks/bench_probe.py [--n 10000] [--layers 13] [--d 384] [--classes 10] [--n-test 2000]
                                     [--sklearn-budget 420] [--out benchmarks/results]

Results go to ``benchmarks/results/probe.json`` (and are printed).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

SK_MAX_ITER = 10000  # the peer converges to the stopping rule (our fits converge within linear_probe's 1000)
SLOW = 2.0  # a configuration taking longer than SLOW x its side's 1-thread time (+ 60 s) is stopped, reported as such


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


def workload(args) -> tuple[dict, np.ndarray, dict, np.ndarray]:
    layers, y_all = make_layers(args.n + args.n_test, args.d, args.classes, args.layers)
    train = {k: v[:args.n] for k, v in layers.items()}
    test = {k: v[args.n:] for k, v in layers.items()}
    return train, y_all[:args.n], test, y_all[args.n:]


def _rule(tol: float, rtol: float, c: float, n: int) -> float:
    """The stopping rule of both sides: max|grad J| <= min(tol, rtol * lambda), lambda = 1 / (C n)."""
    return min(tol, rtol / (c * n))


def _fit_fold(x: np.ndarray, y: np.ndarray, tr: np.ndarray, va: np.ndarray, c: float, tol: float) -> tuple:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x[tr])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = LogisticRegression(C=c, tol=tol, max_iter=SK_MAX_ITER).fit(scaler.transform(x[tr]), y[tr])
    xva = scaler.transform(x[va])
    return (clf.score(xva, y[va]), log_loss(y[va], clf.predict_proba(xva), labels=clf.classes_),
            int(clf.n_iter_.max()) >= SK_MAX_ITER)


def _refit(x: np.ndarray, y: np.ndarray, xt: np.ndarray, yt: np.ndarray, c: float, tol: float) -> tuple:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = LogisticRegression(C=c, tol=tol, max_iter=SK_MAX_ITER).fit(scaler.transform(x), y)
    return float(clf.score(scaler.transform(xt), yt)), int(clf.n_iter_.max()) >= SK_MAX_ITER


def child_sklearn(args) -> dict:
    """scikit-learn on ``args.only`` layers (all folds, or ``args.unit_folds`` of them without refit)."""
    from joblib import Parallel, delayed
    from sklearn.model_selection import StratifiedKFold

    train, y, test, y_test = workload(args)
    names = args.only.split(",")
    cs, folds = [float(c) for c in args.cs.split(",")], args.folds
    xs = {k: train[k].astype(np.float64) for k in names}
    xts = {k: test[k].astype(np.float64) for k in names}
    splits = list(StratifiedKFold(folds, shuffle=True, random_state=0).split(np.zeros(len(y)), y))
    used = splits[:args.unit_folds] if args.unit_folds else splits
    tasks = [(k, f, j) for k in names for f in range(len(used)) for j in range(len(cs))]
    tasks.sort(key=lambda t: -cs[t[2]])  # weakest regularisation (slowest fits) first: balanced workers

    def cv_args(k, f, j):  # arrays as arguments: joblib memory-maps them instead of pickling them per task
        tr, va = used[f]
        return xs[k], y, tr, va, cs[j], _rule(args.cv_tol, args.rtol, cs[j], len(tr))

    t0, c0 = time.perf_counter(), time.process_time()
    if args.jobs > 1:
        with Parallel(n_jobs=args.jobs) as par:
            res = par(delayed(_fit_fold)(*cv_args(*t)) for t in tasks)
    else:
        res = [_fit_fold(*cv_args(*t)) for t in tasks]
    acc, loss = np.zeros((len(names), len(used), len(cs))), np.zeros((len(names), len(used), len(cs)))
    stalled = 0
    for (k, f, j), (a, lo, st) in zip(tasks, res):
        acc[names.index(k), f, j], loss[names.index(k), f, j] = a, lo
        stalled += st
    out = {"layers": {}}
    if not args.unit_folds:
        best = [min(range(len(cs)), key=lambda j: (-round(acc[i, :, j].mean(), 12), loss[i, :, j].mean()))
                for i in range(len(names))]
        refit = [(k, cs[best[i]], _rule(args.tol, args.rtol, cs[best[i]], len(y))) for i, k in enumerate(names)]
        if args.jobs > 1:
            with Parallel(n_jobs=args.jobs) as par:
                fin = par(delayed(_refit)(xs[k], y, xts[k], y_test, c, t) for k, c, t in refit)
        else:
            fin = [_refit(xs[k], y, xts[k], y_test, c, t) for k, c, t in refit]
        for i, (k, c, _) in enumerate(refit):
            out["layers"][k] = {"C": c, "test_accuracy": fin[i][0],
                                "cv_accuracy": [float(v) for v in acc[i].mean(0)]}
            stalled += fin[i][1]
    out.update(seconds=time.perf_counter() - t0, cpu_seconds_main_process=time.process_time() - c0,
               fits=len(tasks) + (0 if args.unit_folds else len(names)), fits_at_max_iter=stalled)
    return out


def child_ours(args) -> dict:
    import inspect

    import torch

    from workbench.probing import linear_probe
    from workbench.probing._linear import DEFAULT_CS

    train, y, test, y_test = workload(args)
    defaults = {k: v.default for k, v in inspect.signature(linear_probe).parameters.items()
                if v.default is not inspect.Parameter.empty}

    def one(device: str) -> tuple[float, float, dict]:
        tr = {k: torch.as_tensor(v, device=device) for k, v in train.items()}
        te = {k: torch.as_tensor(v, device=device) for k, v in test.items()}
        if device == "cuda":
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        df, cv = linear_probe(tr, y, {"test": (te, y_test)}, n_boot=0, folds=args.folds, return_cv=True)
        if device == "cuda":
            torch.cuda.synchronize()
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        acc = df[(df.split == "test") & (df.measure == "accuracy")].set_index("layer")
        cva = cv[cv.measure == "accuracy"]
        return seconds, cpu, {k: {"C": float(acc.loc[k, "C"]), "test_accuracy": float(acc.loc[k, "value"]),
                                  "cv_accuracy": cva[cva.layer == k].sort_values("C").value.tolist()} for k in train}

    seconds, cpu, layers = one("cpu")
    out = {"seconds": seconds, "cpu_seconds": cpu, "layers": layers, "torch_threads": torch.get_num_threads(),
           "torch": torch.__version__, "Cs": list(DEFAULT_CS),
           **{k: defaults[k] for k in ("cv_tol", "tol", "rtol", "max_iter")}}
    if args.cuda and torch.cuda.is_available():
        one("cuda")  # warm-up (CUDA context, kernels)
        out.update(cuda_seconds=one("cuda")[0], gpu=torch.cuda.get_device_name())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10000, help="training examples")
    ap.add_argument("--n-test", type=int, default=2000)
    ap.add_argument("--d", type=int, default=384)
    ap.add_argument("--layers", type=int, default=13)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--sklearn-budget", type=float, default=420.0,
                    help="seconds for the best scikit-learn configuration's whole layers before extrapolating")
    ap.add_argument("--no-sklearn", action="store_true")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--child", choices=["ours", "sklearn"])
    ap.add_argument("--child-out")
    for name in ("only", "cs"):
        ap.add_argument(f"--{name}")
    for name in ("cv-tol", "tol", "rtol"):
        ap.add_argument(f"--{name}", type=float)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--unit-folds", type=int, default=0)
    ap.add_argument("--cuda", action="store_true")
    args = ap.parse_args()
    if args.child:
        result = child_ours(args) if args.child == "ours" else child_sklearn(args)
        Path(args.child_out).write_text(json.dumps(result))
        return
    sys.path.insert(0, str(Path(__file__).parent))
    from _peers import CORES, label, run_child, thread_counts

    shape = ["--n", str(args.n), "--n-test", str(args.n_test), "--d", str(args.d), "--layers", str(args.layers),
             "--classes", str(args.classes), "--folds", str(args.folds)]
    names = [f"layer{l:02d}" for l in range(args.layers)]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"workload: {args.layers} layers x {args.n} x {args.d}, {args.classes} classes, 6 C x {args.folds} folds "
          f"(+ refit), held-out {args.n_test}; {CORES} cores, load average {load:.1f}; every configuration in its "
          "own process, ours and scikit-learn interleaved")
    ours_runs: dict[str, dict] = {}
    slow: dict[str, float] = {}  # configurations stopped after `timeout` seconds (> SLOW x the first one's time)

    def run_ours(t: int, timeout: float | None = None) -> None:
        key = label("ours", t)
        try:
            ours_runs[key] = run_child([__file__, *shape, "--child", "ours"] + (["--cuda"] if t == 1 else []), t,
                                       timeout=timeout)
        except subprocess.TimeoutExpired:
            slow[key] = timeout
            print(f"  {key:40s} stopped after {timeout:.0f} s (slower than {SLOW:g}x the 1-thread run)", flush=True)
            return
        r = ours_runs[key]
        print(f"  {key:40s} {r['seconds']:8.1f} s  (process CPU {r['cpu_seconds']:.1f} s)", flush=True)

    counts = thread_counts()
    run_ours(counts[0])
    first = ours_runs[label("ours", counts[0])]
    record = {"benchmark": "probe", "torch": first["torch"], "machine": platform.processor() or platform.machine(),
              "cores": CORES, "n": args.n, "n_test": args.n_test, "d": args.d, "layers": args.layers,
              "classes": args.classes, "folds": args.folds, "Cs": first["Cs"], "cv_tol": first["cv_tol"],
              "tol": first["tol"], "rtol": first["rtol"], "sklearn_max_iter": SK_MAX_ITER,
              "load_average_start": load,
              "method": "each configuration in its own process, thread variables set before import; ours and "
                        "scikit-learn interleaved; best configuration per side"}
    rule = ["--cv-tol", str(first["cv_tol"]), "--tol", str(first["tol"]), "--rtol", str(first["rtol"]),
            "--cs", ",".join(str(c) for c in first["Cs"])]
    sk_configs = [(t, 1) for t in counts] + ([(1, CORES)] if CORES > 1 else [])
    mid = names[len(names) // 2]

    def run_sk(t: int, jobs: int, only: list[str], unit: bool, timeout: float | None = None) -> dict:
        argv = [__file__, *shape, *rule, "--child", "sklearn", "--only", ",".join(only), "--jobs", str(jobs)]
        return run_child(argv + (["--unit-folds", "1"] if unit else []), t, timeout=timeout)

    sk_unit: dict[str, float] = {}
    ours_limit = SLOW * first["seconds"] + 60
    if not args.no_sklearn:
        for i, (t, jobs) in enumerate(sk_configs):
            key = label("sklearn", t, jobs)
            limit = None if i == 0 else SLOW * sk_unit[label("sklearn", *sk_configs[0])] + 60
            try:
                r = run_sk(t, jobs, [mid], unit=True, timeout=limit)
            except subprocess.TimeoutExpired:
                slow[key] = limit
                print(f"  {key:40s} stopped after {limit:.0f} s on the unit (slower than {SLOW:g}x 1 thread)")
                continue
            sk_unit[key] = r["seconds"]
            print(f"  {key:40s} {r['seconds']:8.1f} s  on the unit (1 fold x 6 C of {mid})", flush=True)
            if i == 0:
                for t_ours in counts[1:]:
                    run_ours(t_ours, ours_limit)  # interleaved with the peer
    else:
        for t in counts[1:]:
            run_ours(t, ours_limit)
    ours_times = {k: v["seconds"] for k, v in ours_runs.items()}
    ours_key = min(ours_times, key=ours_times.__getitem__)
    ours = ours_runs[ours_key]
    record.update(stopped_configurations_s=slow)
    record.update(ours_configurations_s=ours_times, ours_configuration=ours_key, ours_s=ours["seconds"],
                  ours_cpu_process_s=ours["cpu_seconds"], ours=ours["layers"])
    print(f"ours: best {ours_key}: {ours['seconds']:.1f} s")
    if "cuda_seconds" in first:
        record.update(ours_cuda_s=first["cuda_seconds"], gpu=first["gpu"])
        print(f"ours (cuda): {first['cuda_seconds']:.2f} s ({first['gpu']})")

    if not args.no_sklearn:
        sk_key = min(sk_unit, key=sk_unit.__getitem__)
        t, jobs = next(c for c in sk_configs if label("sklearn", *c) == sk_key)
        # whole layers for the fastest configuration, spread over the depth, the middle one first
        order = [mid] + [names[i] for i in np.unique(np.linspace(0, len(names) - 1, len(names)).round().astype(int))
                         if names[i] != mid]
        spread = [order[0]] + sorted(order[1:], key=lambda k: abs(names.index(k) - len(names) // 2), reverse=True)
        timed: dict[str, dict] = {}
        spent = 0.0
        for k in spread:
            r = run_sk(t, jobs, [k], unit=False)
            timed[k] = {**r["layers"][k], "seconds": r["seconds"], "fits_at_max_iter": r["fits_at_max_iter"]}
            spent += r["seconds"]
            print(f"  {sk_key:40s} {r['seconds']:8.1f} s  on {k} (5 folds x 6 C + refit): C={r['layers'][k]['C']:g}, "
                  f"ours C={ours['layers'][k]['C']:g}", flush=True)
            if spent + spent / len(timed) > args.sklearn_budget or len(timed) == len(names):
                break
        per_layer = spent / len(timed)
        sk_total = per_layer * len(names)
        scale = sk_total / sk_unit[sk_key]
        sk_all = {k: v * scale for k, v in sk_unit.items()}
        ratio = sk_total / ours["seconds"]
        diffs = {k: 100 * (ours["layers"][k]["test_accuracy"] - v["test_accuracy"]) for k, v in timed.items()}
        same_c = {k: ours["layers"][k]["C"] == v["C"] for k, v in timed.items()}
        cv_diff = {k: float(np.abs(np.subtract(ours["layers"][k]["cv_accuracy"], v["cv_accuracy"])).max())
                   for k, v in timed.items()}
        extrapolated = len(timed) < len(names)
        print(f"scikit-learn: best {sk_key}: {spent:.1f} s on {len(timed)} of {len(names)} layers "
              f"({', '.join(timed)}) -> {sk_total:.1f} s for all layers{' (extrapolated)' if extrapolated else ''}")
        for k, v in sk_all.items():
            print(f"  {k:40s} {v:8.1f} s for all layers (unit time x {scale:.1f})")
        for k in timed:
            print(f"  {k}: C ours {ours['layers'][k]['C']:g} sklearn {timed[k]['C']:g}; held-out accuracy ours "
                  f"{ours['layers'][k]['test_accuracy']:.4f} sklearn {timed[k]['test_accuracy']:.4f} "
                  f"(diff {diffs[k]:+.2f} points); max |CV accuracy diff| {cv_diff[k]:.4f}")
        print(f"speed-up: {ratio:.1f}x ({ours_key} vs {sk_key}); same C on {sum(same_c.values())} of {len(same_c)} "
              f"timed layers")
        record.update(sklearn_unit=f"1 fold x 6 C of {mid}", sklearn_unit_s=sk_unit, sklearn_configuration=sk_key,
                      sklearn_layers_timed=list(timed), sklearn_timed_s=spent, sklearn_s=sk_total,
                      sklearn_configurations_s=sk_all, sklearn_extrapolated=extrapolated, sklearn=timed,
                      speedup=ratio, same_c=same_c, accuracy_diff_points=diffs,
                      max_abs_accuracy_diff_points=max(abs(v) for v in diffs.values()),
                      max_abs_cv_accuracy_diff=cv_diff,
                      load_average_end=os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "probe.json").write_text(json.dumps(record, indent=2))
    print(f"wrote {out / 'probe.json'}")


if __name__ == "__main__":
    main()

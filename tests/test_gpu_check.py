"""benchmarks/gpu_check.py: the skip path without CUDA, and the CPU half (--cpu-only --size tiny) checked against
independent computations (numpy CKA / minibatch CKA, scikit-learn logistic regression, a plain forward pass)."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
RESULTS = ROOT / "benchmarks" / "results"


def _load_script():
    spec = importlib.util.spec_from_file_location("gpu_check_under_test", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _results_listing() -> dict:
    return {p.name: p.stat().st_mtime_ns for p in RESULTS.iterdir()} if RESULTS.exists() else {}


@pytest.fixture(scope="module")
def gc():
    return _load_script()


@pytest.fixture(scope="module")
def report(gc, tmp_path_factory):
    """One --cpu-only --size tiny run (in this process: the imports are shared with the checks below)."""
    out = tmp_path_factory.mktemp("gpu_check")
    before = _results_listing()
    rc = gc.main(["--cpu-only", "--size", "tiny", "--out", str(out), "--no-static"])
    assert _results_listing() == before, "the script wrote into benchmarks/results"
    assert rc == 0
    record = json.loads((out / "gpu_check.json").read_text())
    return out, record, {r["workload"]: r for r in record["workloads"]}


def test_no_cuda_prints_skip_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    before = _results_listing()
    proc = subprocess.run([sys.executable, str(SCRIPT), "--size", "tiny", "--out", str(out)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "no CUDA device: GPU checks skipped"
    assert not out.exists()
    assert _results_listing() == before


def test_unknown_workload_is_rejected(gc, tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        gc.main(["--cpu-only", "--size", "tiny", "--out", str(tmp_path), "--workloads", "cka,nope"])
    assert err.value.code == 2
    err_text = capsys.readouterr().err
    assert "--workloads" in err_text and "nope" in err_text
    assert not (tmp_path / "gpu_check.json").exists()


def test_record_shape(report, gc):
    out, record, recs = report
    assert list(recs) == list(gc.WORKLOADS)
    assert record["cpu_only"] is True and record["device"] is None and record["cuda_tests"] is None
    assert record["peaks_flops"]["gpu"] is None
    cpu_peak = record["peaks_flops"]["cpu"]
    assert all(cpu_peak[k] > 0 for k in ("float32", "bfloat16", "float64"))
    for r in recs.values():
        assert r["cpu_s"] > 0
        assert r["gpu_s"] is None and r["speedup"] is None and r["gpu_fraction_of_peak"] is None
        assert r["max_abs_diff"] is None and r["ok"] is None
    # the figure's data and spec (no static export asked for)
    data = pd.read_csv(out / "gpu_check_figure.csv")
    assert set(gc.WORKLOADS) <= set(data["x"].astype(str))
    assert (out / "gpu_check_figure.json").exists() and (out / "gpu_check_figure.html").exists()
    assert not (out / "gpu_check_figure.svg").exists()


def _numpy_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA (Kornblith et al. 2019) through centered Gram matrices, float64."""
    n = len(x)
    h = np.eye(n) - 1.0 / n
    k, l = h @ (x @ x.T) @ h, h @ (y @ y.T) @ h
    return float(np.sum(k * l) / np.sqrt(np.sum(k * k) * np.sum(l * l)))


def _hsic_u(k: np.ndarray, l: np.ndarray) -> float:
    """Unbiased HSIC of Song et al. 2012 (Thm. 2) on Grams with their diagonals zeroed."""
    n = len(k)
    k, l = k.copy(), l.copy()
    np.fill_diagonal(k, 0.0)
    np.fill_diagonal(l, 0.0)
    one = np.ones(n)
    t = np.trace(k @ l) + (one @ k @ one) * (one @ l @ one) / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * (one @ k @ l @ one)
    return float(t / (n * (n - 3)))


def test_cka_values_and_flops(report, gc):
    _, record, recs = report
    r = recs["cka"]
    p = r["params"]
    a, b = gc.cka_stacks(p["n"], p["d"], p["layers"], seed=p["seed"])
    want = np.array([[_numpy_cka(a[i], b[j]) for j in r["check"]["layers_b"]] for i in r["check"]["layers_a"]])
    np.testing.assert_allclose(np.array(r["check"]["matrix"]), want, atol=1e-10)
    # the flop count: feature plan 2N(sum Da sum Db + sum Da^2 + sum Db^2) vs Gram plan 2N^2(sum D + La Lb)
    n, d, L = p["n"], p["d"], p["layers"]
    assert r["flops"] == min(2.0 * n * (L * d * L * d + 2 * L * d * d), 2.0 * n * n * (2 * L * d + L * L))
    peak64 = record["peaks_flops"]["cpu"]["float64"]
    np.testing.assert_allclose(r["cpu_fraction_of_peak"], r["flops"] / r["cpu_s"] / peak64)


def test_minibatch_cka_values(report, gc):
    r = report[2]["minibatch_cka"]
    p = r["params"]
    a, b = gc.cka_stacks(p["n"], p["d"], p["layers"], seed=p["seed"])
    la, lb = r["check"]["layers_a"], r["check"]["layers_b"]
    cross, sa, sb = np.zeros((len(la), len(lb))), np.zeros(len(la)), np.zeros(len(lb))
    for s in range(0, p["n"], p["batch"]):
        ka = [a[k][s:s + p["batch"]] @ a[k][s:s + p["batch"]].T for k in la]
        kb = [b[k][s:s + p["batch"]] @ b[k][s:s + p["batch"]].T for k in lb]
        cross += [[_hsic_u(x, y) for y in kb] for x in ka]
        sa += [_hsic_u(x, x) for x in ka]
        sb += [_hsic_u(y, y) for y in kb]
    want = cross / np.sqrt(np.outer(sa, sb))  # ratio of sums = ratio of means over the same batches
    np.testing.assert_allclose(np.array(r["check"]["matrix"]), want, atol=1e-10)
    sizes = [min(p["batch"], p["n"] - s) for s in range(0, p["n"], p["batch"])]
    d, L = p["d"], p["layers"]
    assert r["flops"] == sum(min(2.0 * m * (L * d * L * d + 2 * L * d * d), m * (m + 1) * 2.0 * L * d) for m in sizes)


def test_probe_accuracies_match_sklearn(report, gc):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    r = report[2]["probe"]
    p = r["params"]
    train, y, test, y_test = gc.probe_data(p["n"], p["n_test"], p["d"], p["layers"], p["classes"])
    assert sorted(r["check"]["layers"]) == sorted(train)
    accs = []
    for name, res in r["check"]["layers"].items():
        assert res["C"] in p["Cs"]
        scaler = StandardScaler().fit(train[name].astype(np.float64))
        clf = LogisticRegression(C=res["C"], tol=1e-8, max_iter=10000).fit(scaler.transform(train[name]), y)
        acc = clf.score(scaler.transform(test[name]), y_test)
        assert abs(acc - res["test_accuracy"]) <= 1.0 / p["n_test"] + 1e-12, name  # at most one example apart
        accs.append(acc)
    assert accs[-1] > accs[0]  # the synthetic layers get more separable with depth


def test_extract_matches_plain_forward(report):
    from workbench import data, models

    r = report[2]["extract"]
    p = r["params"]
    ds = data.load("shapes", n_train=p["n"], n_test=16, n_ood=16, size=p["size"], seed=p["seed"])
    torch.manual_seed(p["seed"])
    model = models.build("cnn", input_shape=tuple(ds.input_shape), num_classes=ds.num_classes, width=p["width"],
                         depth=p["depth"]).eval()
    with torch.no_grad():
        logits = model(torch.as_tensor(ds["train"].inputs, dtype=torch.float32)).double().numpy()
    np.testing.assert_allclose(r["check"]["head_sum"], logits.sum(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(r["check"]["head_first_rows"], logits[:4], rtol=1e-5, atol=1e-5)
    assert r["cpu_examples_per_s"] == pytest.approx(p["n"] / r["cpu_s"])


def test_train_initial_loss_matches_fresh_model(report):
    from workbench import data, models

    r = report[2]["train"]
    p = r["params"]
    ds = data.load("shapes", n_train=p["n_train"], n_test=p["n_test"], n_ood=16, size=p["size"], seed=0)
    torch.manual_seed(0)
    model = models.build("cnn", input_shape=tuple(ds.input_shape), num_classes=ds.num_classes, width=p["width"],
                         depth=p["depth"]).eval()
    with torch.no_grad():
        loss = F.cross_entropy(model(torch.as_tensor(ds["test"].inputs, dtype=torch.float32)),
                               torch.as_tensor(ds["test"].labels, dtype=torch.long)).item()
    assert r["check"]["initial_test_loss"] == pytest.approx(loss, rel=1e-5)
    steps = 2 * p["short_steps"] if r["cpu_setup_cancelled"] else p["long_steps"]
    assert r["cpu_timed_steps"] == steps
    assert r["cpu_steps_per_s"] == pytest.approx(steps / r["cpu_s"])
    assert r["cpu_examples_per_s"] == pytest.approx(steps * p["batch"] / r["cpu_s"])


def test_verdicts_of_a_gpu_record(gc):
    """The GPU half's arithmetic and verdicts on hand-made records (no GPU needed)."""
    peak = {"cpu": {"float64": 1e10}, "gpu": {"float64": 1e12}}
    r = gc.finish({"workload": "cka", "cpu_s": 2.0, "gpu_s": 0.5, "flops": 1e10, "peak_dtype": "float64",
                   "tolerance": 1e-6, "max_abs_diff": 2e-6}, peak)
    assert r["speedup"] == 4.0 and r["ok"] is False
    assert r["cpu_fraction_of_peak"] == pytest.approx(0.5) and r["gpu_fraction_of_peak"] == pytest.approx(0.02)
    r = gc.finish({"workload": "probe", "cpu_s": 3.0, "gpu_s": 1.0, "flops": None, "tolerance": 0.005,
                   "max_abs_diff": 0.0, "same_C": False}, peak)
    assert r["speedup"] == 3.0 and r["cpu_fraction_of_peak"] is None and r["ok"] is False
    r = gc.finish({"workload": "train", "cpu_s": 3.0, "cpu_steps_per_s": 4.0, "gpu_s": 1.0, "gpu_steps_per_s": 60.0,
                   "flops": None, "tolerance": 1e-3, "max_abs_diff": 5e-4}, peak)
    assert r["speedup"] == 15.0 and r["ok"] is True  # rates, not seconds: the sides may time different steps
    r = gc.finish({"workload": "extract", "cpu_s": 3.0, "flops": None, "tolerance": 1e-3}, peak)
    assert r["gpu_s"] is None and r["speedup"] is None and r["ok"] is None


def test_pytest_summary_counts(gc):
    text = "....F\nFAILED tests/x.py::test_cuda_a\n1 failed, 5 passed, 2 skipped, 3 errors, 140 deselected in 3.2s\n"
    assert gc.pytest_counts(text) == {"passed": 5, "failed": 1, "skipped": 2, "errors": 3, "deselected": 140}
    assert gc.pytest_counts("no tests ran in 0.1s") == dict.fromkeys(("passed", "failed", "skipped", "errors",
                                                                     "deselected"), 0)

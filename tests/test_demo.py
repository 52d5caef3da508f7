"""The flagship demo end to end (quick mode, shared run store); the notebooks run in test_notebooks.py."""
from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from workbench.results import COLUMNS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def store(demo_store):
    return demo_store  # conftest: the demo's runs are trained once for the demo, notebook and browser tests


def _demo(out, store, *options):
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "workbench.cli", "demo", "--out", str(out), "--quick",
                           "--store", str(store), *options], capture_output=True, text=True,
                          timeout=2400)  # a hang guard only: training time depends on the machine's load
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, time.perf_counter() - t0


def test_demo_quick_writes_report_and_shows_the_effect(store, tmp_path):
    proc, first = _demo(tmp_path / "a", store)
    out = tmp_path / "a"
    html = (out / "report.html").read_text()
    # the results table names each row's run and layer (the index was dropped before)
    section = html[html.index('<section id="table">'):]
    header = re.findall(r"<th>(.*?)</th>", section[:section.index("</thead>")])
    assert header[:2] == ["run", "layer"], header
    cells = re.findall(r"<td>(.*?)</td>", section)
    assert {"clean", "noise-30%", "random-init", "stage3"} <= set(cells)
    assert html.count("<script") >= 2 and not re.search(r'<script[^>]+src=["\']https?://', html)  # offline
    res = pd.read_csv(out / "results.csv")
    assert set(res.columns) >= {"run", "step", "layer", "layer_index", "measure", "split", "value"}
    assert set(res["run"]) == {"clean", "noise-30%", "random-init"}
    probe = res[res.measure == "probe_accuracy"].set_index(["run", "split", "layer"])["value"]
    # the direction S1 predicts at the last conv stage: clean > noisy > random init, in and out of distribution
    for split in ("test", "ood"):
        assert (probe["clean", split, "stage3"] > probe["noise-30%", split, "stage3"]
                > probe["random-init", split, "stage3"])
    # every probe accuracy carries its bootstrap interval
    acc = res[res.measure == "probe_accuracy"]
    assert (acc.ci_low <= acc.value + 1e-12).all() and (acc.value <= acc.ci_high + 1e-12).all()
    assert (acc.ci_high - acc.ci_low).between(0.005, 0.2).all()
    # control task (random label per (shape, colour) type): the trained representation is selective at
    # stage3, the random-init one is not (selectivity itself is checked in test_probing_controls.py)
    wide = res[res.split == "test"].pivot_table(index=["run", "layer"], columns="measure", values="value")
    assert wide.loc[("clean", "stage3"), "probe_selectivity"] > 0.3
    assert wide.loc[("random-init", "stage3"), "probe_selectivity"] < 0.1
    hist = pd.read_csv(out / "history.csv")
    assert list(hist.columns) == list(COLUMNS)  # the random-init twin trains nothing: it has no history
    last = hist[(hist.measure == "accuracy") & (hist.split == "test")].groupby("run")["step"].max()
    assert last.to_dict() == {"clean": 300, "noise-30%": 300}
    cka = pd.read_csv(out / "cka.csv")
    assert len(cka) == res[res.run == "clean"].layer.nunique() ** 2
    assert cka["value"].between(0, 1 + 1e-9).all()
    assert "probe_accuracy[ood]" in proc.stdout  # the results table is printed
    figs = list((out / "figures").glob("*.csv"))
    assert len(figs) >= 5
    # second run: cached runs and activations — no training, no model forward; checkpoints untouched
    ckpts = {p: p.stat().st_mtime_ns for p in Path(store).rglob("model.safetensors")}
    acts = set(Path(store).glob("activations/*.npy"))
    _, second = _demo(tmp_path / "b", store, "--no-static")  # the reuse is the point: no figure export again
    assert {p: p.stat().st_mtime_ns for p in Path(store).rglob("model.safetensors")} == ckpts
    assert set(Path(store).glob("activations/*.npy")) == acts
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "b" / "results.csv"), res)
    print(f"demo: first {first:.1f}s, second {second:.1f}s")


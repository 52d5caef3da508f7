"""The flagship demo: what 30 % label noise in supervised pretraining does to a CNN, layer by layer.

On ``shapes`` we pretrain one small residual CNN on clean labels and one on 30 % symmetric label noise,
and keep a random-init twin as the baseline. For every layer of each we capture activations, fit a
logistic probe for the shape class (L2 strength chosen per layer by 5-fold cross-validation, 95 %
bootstrap intervals) on the in-distribution (test) and out-of-distribution (ood) splits, a control-task
probe (Hewitt & Liang 2019: every (shape, colour) input type gets a fixed random label) for selectivity,
compute RankMe and effective rank, and compare the two pretrained runs layer × layer with linear CKA.
This is the set-up of study S1 (Noisy Model Learning) at CPU scale.

``run_demo(out, quick=True)`` writes to ``out``:

- ``results.csv``   per-layer table in the results schema (run, step, layer, layer_index, measure, split,
  value, ci_low, ci_high)
- ``cka.csv``       tidy layer × layer CKA between the clean and noisy runs
- ``history.csv``   training curves of the runs (results schema)
- ``figures/*``     each figure as SVG, PDF, PNG (+ CSV of its data, + JSON spec)
- ``report.html``   self-contained interactive report (plotly.js inlined, works offline)

Runs and activations go through the run store and the activation cache, so a second call trains nothing
and runs no model.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pandas as pd

from . import data as wb_data
from .results import tidy
from .runs import RunConfig, RunStore
from .study import cross_run_similarity, layer_measures, run_activations

__all__ = ["demo_configs", "run_demo"]


def demo_configs(quick: bool = True) -> dict[str, RunConfig]:
    """The three runs of the demo (clean, 30 % noise, random init), CPU-sized when ``quick``."""
    if quick:
        data = {"n_train": 4000, "n_test": 1000, "n_ood": 1000, "size": 32, "seed": 0}
        model = {"width": 16, "depth": 3}
        train = {"steps": 300, "batch_size": 128, "lr": 3e-3, "checkpoints": 3}
    else:
        data = {"n_train": 20000, "n_test": 2000, "n_ood": 2000, "size": 32, "seed": 0}
        model = {"width": 32, "depth": 4}
        train = {"steps": 3000, "batch_size": 128, "lr": 2e-3, "checkpoints": 6}
    base = RunConfig(dataset="shapes", dataset_options=data, model="cnn", model_options=model, **train)
    return {"clean": base, "noise-30%": base.replace(label_noise=0.3),
            "random-init": base.replace(objective="none", steps=0)}


def analyze(store: RunStore, configs: dict[str, RunConfig], *, quick: bool = True) -> dict[str, Any]:
    """Train (or reuse) the runs, capture every layer, and compute the demo's tables."""
    from .train import train

    runs = {name: train(cfg, store, name=name) for name, cfg in configs.items()}
    first = next(iter(configs.values()))
    dataset = wb_data.load(first.dataset, **dict(first.dataset_options))
    limits = {"train": 2000 if quick else 10000}
    # "pool" is left out: mean-pooling the last stage's map already gives exactly the pooled features
    acts = {name: run_activations(run, dataset, ("train", "test", "ood"), layers=r"^(?!pool$)", max_examples=limits)
            for name, run in runs.items()}
    results = pd.concat([
        layer_measures(acts[name], run=name, step=run.checkpoints()[-1], eval_splits=("test", "ood"),
                       control_types=("shape", "color"))
        for name, run in runs.items()], ignore_index=True)
    cka = cross_run_similarity(acts["clean"]["test"], acts["noise-30%"]["test"], run_a="clean", run_b="noise-30%")
    history = tidy(pd.concat([h for h in (r.history() for r in runs.values()) if len(h)], ignore_index=True))
    from .spectrum import spectrum

    # covariance spectrum of the pooled features (the layer before the classifier head)
    spectra = {name: spectrum(a["test"][a["test"].layers[-2]]) for name, a in acts.items()}
    return {"runs": runs, "results": results, "cka": cka, "history": history, "spectra": spectra}


def _figures(tables: dict[str, Any]) -> dict[str, Any]:
    from . import figures

    res = tables["results"]
    probe = res[res["measure"] == "probe_accuracy"]
    hist = tables["history"]
    curves = hist[(hist["measure"] == "accuracy") & hist["split"].isin(["test", "ood"])]
    return {
        "Probe accuracy by layer (in-distribution)": figures.layer_curve(
            probe[probe["split"] == "test"], baseline="random-init", title="Shape-class probe, test split"),
        "Probe accuracy by layer (out-of-distribution)": figures.layer_curve(
            probe[probe["split"] == "ood"], baseline="random-init", title="Shape-class probe, OOD split"),
        "Probe selectivity by layer (control task)": figures.layer_curve(
            res[(res["measure"] == "probe_selectivity") & (res["split"] == "test")], baseline="random-init",
            title="Selectivity = task − control accuracy (Hewitt & Liang 2019), test split"),
        "RankMe by layer": figures.layer_curve(res[res["measure"] == "rankme"], baseline="random-init",
                                               title="RankMe (Garrido et al. 2023)"),
        "Linear CKA: clean vs 30% noise": figures.layer_heatmap(tables["cka"], title="Linear CKA, clean × noisy"),
        "Spectrum of pooled features": figures.spectrum_plot(tables["spectra"],
                                                            title="Covariance spectrum, pooled features"),
        "Held-out accuracy during pretraining": figures.step_curve(curves, measure="accuracy",
                                                                    title="Accuracy during pretraining"),
    }


def run_demo(out: str | os.PathLike, *, quick: bool = True, store: RunStore | str | os.PathLike | None = None,
             static: bool = True, verbose: bool = True) -> pd.DataFrame:
    """Run the demo end to end and write its report to ``out``; returns the tidy results table."""
    from . import figures

    t0 = time.perf_counter()
    out = Path(out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    store = store if isinstance(store, RunStore) else RunStore(store)
    tables = analyze(store, demo_configs(quick), quick=quick)
    tables["results"].to_csv(out / "results.csv", index=False)
    tables["cka"].to_csv(out / "cka.csv", index=False)
    tables["history"].to_csv(out / "history.csv", index=False)

    figs = _figures(tables)
    summary = summary_table(tables["results"])
    figures.to_html(figs, out / "report.html", title="workbench demo: label noise in pretraining",
                    table=summary)
    static_error = None
    if static:
        for i, (title, fig) in enumerate(figs.items()):
            stem = out / "figures" / f"{i:02d}_{_slug(title)}"
            try:
                figures.export(fig, stem.with_suffix(".svg"), formats=["svg", "pdf", "png"], width="single")
            except RuntimeError as err:  # no Chromium: CSV + JSON were still written
                static_error = str(err)
                break
    if verbose:
        pd.set_option("display.width", 160)
        print(summary.to_string())
        print(f"\nreport: {out / 'report.html'}   ({time.perf_counter() - t0:.1f} s)")
        if static_error:
            print(f"static figures skipped: {static_error}")
    return tables["results"]


def summary_table(results: pd.DataFrame) -> pd.DataFrame:
    """Runs × layers, one column per (measure, split): what the demo prints."""
    df = results.copy()
    df["column"] = df["measure"] + "[" + df["split"] + "]"
    table = df.pivot_table(index=["run", "layer_index", "layer"], columns="column", values="value")
    return table.reset_index(level="layer_index", drop=True).round(3)


def _slug(s: str) -> str:
    return "".join(c.lower() if c.isalnum() else "_" for c in s).strip("_")[:60]

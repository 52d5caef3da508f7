"""Named studies from ``assets/STUDIES.md`` that run headless: ``workbench study NAME --out DIR [--quick]``.

Each entry builds a :class:`~workbench.study.Study`, runs it, and reduces the table to the numbers that show
the published effect's *direction* (``summary``) plus figures.

==========  ==========================================================================================
name        what varies → what is measured
==========  ==========================================================================================
s1          label noise (0, 10, 30 %) in supervised pretraining on ``shapes`` → frozen linear probe on the
            in-distribution (test) and out-of-distribution (ood) splits; singular-value entropy and
            largest-singular-value ratio of the penultimate features (NMTune, Chen et al. 2024)
s4          SimCLR temperature (0.05, 0.2, 1.0) on ``shapes`` → uniformity and alignment (Wang & Isola
            2020), same-class tolerance (Wang & Liu 2021) of the embedding, and the linear probe
s3          LayerNorm placement (Pre-LN, Post-LN, Mix-LN, LayerNorm Scaling) of an 8-layer causal LM on
            ``tiny-language`` → per-layer gradient norm over steps (recorder), and at initialisation and the
            end: loss increase when each block is skipped, output variance and angular distance between
            consecutive layers vs depth (``workbench.dynamics``)
s12         40 % symmetric label noise, long training → accuracy on clean vs flipped training examples
            over steps (Arpit et al. 2017) and how well early EL2N scores flag the flipped examples
            (AUROC; Paul et al. 2021)
==========  ==========================================================================================
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from .results import tidy
from .runs import RunConfig
from .study import Study

__all__ = ["STUDIES", "make_study", "run_named_study", "el2n_auroc"]


def _shapes_base(quick: bool, **changes: Any) -> RunConfig:
    data = ({"n_train": 4000, "n_test": 1000, "n_ood": 1000, "size": 32, "seed": 0} if quick else
            {"n_train": 20000, "n_test": 2000, "n_ood": 2000, "size": 32, "seed": 0})
    model = {"width": 16, "depth": 3} if quick else {"width": 32, "depth": 4}
    return RunConfig(dataset="shapes", dataset_options=data, model="cnn", model_options=model,
                     steps=300 if quick else 3000, batch_size=128, lr=3e-3 if quick else 2e-3,
                     checkpoints=3 if quick else 6, **changes)


def _s1(quick: bool, store: Any) -> Study:
    return Study(_shapes_base(quick), vary={"label_noise": [0.0, 0.1, 0.3]}, seeds=[0] if quick else [0, 1, 2],
                 downstream=["linear"], measures=["singular_value_entropy", "largest_singular_value_ratio",
                                                  "effective_rank"],
                 layers=["pool"], store=store, name="s1")


def _s4(quick: bool, store: Any) -> Study:
    base = _shapes_base(quick, objective="simclr", augment=("crop", "flip", "color"), augment_strength=0.5,
                        projector="mlp", recorders=("align_unif",))
    return Study(base, vary={"temperature": [0.05, 0.2, 1.0]}, seeds=[0] if quick else [0, 1, 2],
                 downstream=["linear"], measures=["tolerance"], layers=["pool"], store=store, name="s4")


def _s12(quick: bool, store: Any) -> Study:
    base = _shapes_base(quick, label_noise=0.4, recorders=("clean_flipped", "el2n"))
    base = base.replace(steps=1200 if quick else 6000, checkpoints=10 if quick else 14,
                        dataset_options={**base.dataset_options, "n_train": 2000} if quick else base.dataset_options)
    return Study(base, vary={}, seeds=[0] if quick else [0, 1, 2], downstream=[], measures=[], store=store,
                 name="s12")


S3_NORMS = ("pre", "post", "mix", "lns")
S3_MEASURES = ("skip_loss_increase", "output_variance", "angular_distance", "grad_norm")


class _NormPlacementStudy(Study):
    """S3: one run per ``model_options["norm"]``; after training, ``workbench.dynamics`` measures at the first
    and last checkpoint on the first ``dynamics_examples`` test sentences, added to the table as
    ``kind="measure"`` rows (``grad_norm`` here is the gradient on that fixed batch; the per-step training
    gradient norms are the ``kind="history"`` rows of the ``grad_norm`` recorder)."""

    def __init__(self, base: RunConfig, norms: tuple[str, ...], dynamics_examples: int, **kwargs: Any):
        self.norms, self.dynamics_examples = tuple(norms), int(dynamics_examples)
        super().__init__(base, **kwargs)

    def _grid(self) -> dict[str, tuple[dict[str, Any], Any]]:
        return {f"norm={n},seed={s}": ({"norm": n}, self.base.replace(
                    model_options={**self.base.model_options, "norm": n}, seed=s))
                for n in self.norms for s in self.seeds}

    def _one(self, label: str) -> pd.DataFrame:
        from . import data as wb_data
        from . import dynamics

        table = super()._one(label)
        changes, cfg = self.configs[label]
        run = self.store.get(cfg)
        ckpts = run.checkpoints()
        test = wb_data.load(cfg.dataset, **dict(cfg.dataset_options))["test"]
        test = test.subset(slice(0, self.dynamics_examples))
        blocks = r"^(embed|layer\d+)$"  # the residual stream: token embedding, then each block's output
        parts = []
        for step in sorted({ckpts[0], ckpts[-1]}):
            model = run.load_model(step)
            loss = dynamics.run_loss(run, model, split="test", n=self.dynamics_examples)
            frames = [dynamics.layer_skip_loss(model, loss), dynamics.output_variance(model, test, layers=blocks),
                      dynamics.layer_angular_distance(model, test, layers=blocks),
                      dynamics.layer_grad_norms(model, loss, layers=blocks)]
            parts += [f.assign(step=step) for f in frames]
        rows = tidy(pd.concat(parts, ignore_index=True), run=label, split="test", kind="measure", **changes,
                    seed=cfg.seed)
        return tidy(pd.concat([table, rows], ignore_index=True))


def _s3(quick: bool, store: Any) -> Study:
    data = ({"n_train": 2000, "n_test": 256, "n_ood": 0, "max_len": 32, "seed": 0} if quick else
            {"n_train": 20000, "n_test": 1000, "n_ood": 0, "max_len": 32, "seed": 0})
    model = ({"dim": 64, "depth": 8, "heads": 4, "mlp_ratio": 2.0} if quick else
             {"dim": 128, "depth": 12, "heads": 4, "mlp_ratio": 4.0})
    base = RunConfig(dataset="tiny-language", dataset_options=data, model="transformer", model_options=model,
                     objective="clm", steps=400 if quick else 4000, batch_size=32 if quick else 64, lr=1e-3,
                     warmup=40 if quick else 400, schedule="cosine", checkpoints=2 if quick else 6,
                     recorders=("grad_norm", "act_var"))
    return _NormPlacementStudy(base, S3_NORMS, 128 if quick else 512, seeds=[0] if quick else [0, 1, 2],
                               downstream=[], measures=[], store=store, name="s3")


STUDIES: dict[str, Callable[[bool, Any], Study]] = {"s1": _s1, "s3": _s3, "s4": _s4, "s12": _s12}


def make_study(name: str, quick: bool = True, store: Any = None) -> Study:
    key = name.lower()
    if key not in STUDIES:
        raise ValueError(f"unknown study {name!r}; available: {sorted(STUDIES)}")
    return STUDIES[key](quick, store)


def el2n_auroc(run: Any, step: int) -> float:
    """AUROC of the EL2N scores at checkpoint ``step`` for telling flipped from clean training examples
    (0.5 = chance; Mann–Whitney U / (n_flipped · n_clean), ties counted one half)."""
    from scipy.stats import rankdata

    scores = run.load_artifact(f"el2n_{step:08d}")["scores"]
    flipped = run.load_artifact("label_noise")["flipped"]
    ranks = rankdata(scores)
    n_pos, n_neg = int(flipped.sum()), int((~flipped).sum())
    return float((ranks[flipped].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _s3_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per (norm, layer): the recorder's training gradient norm averaged over the first and the last 10 % of
    logged steps, and the dynamics measures at the last checkpoint; each averaged over seeds."""
    hist = table[(table.kind == "history") & (table.measure == "grad_norm")]
    order = {name: i for i, name in enumerate(pd.unique(hist["layer"]))}
    steps = np.sort(hist["step"].unique())
    k = max(1, len(steps) // 10)
    out = pd.concat({f"grad_norm_{when}": hist[hist.step.isin(chosen)].groupby(["norm", "layer"])["value"].mean()
                     for when, chosen in (("early", steps[:k]), ("late", steps[-k:]))}, axis=1)
    meas = table[table.kind == "measure"]
    final = meas[meas.step == meas.groupby("run")["step"].transform("max")]
    final = final[final.measure.isin(S3_MEASURES) & final.layer.notna()]
    out = out.join(final.pivot_table(index=["norm", "layer"], columns="measure", values="value"), how="outer")
    out = out.reset_index()
    out.insert(2, "layer_index", out["layer"].map(order))
    out["norm"] = pd.Categorical(out["norm"], [n for n in S3_NORMS if n in set(out["norm"])], ordered=True)
    return out.sort_values(["norm", "layer_index"]).reset_index(drop=True)


def _s3_figures(table: pd.DataFrame, summary: pd.DataFrame) -> dict[str, Any]:
    import plotly.express as px

    hist = table[(table.kind == "history") & (table.measure == "grad_norm")]
    figs = {"grad_norm_over_steps": px.line(hist, x="step", y="value", color="layer", line_group="run",
                                            facet_col="norm", log_y=True,
                                            title="S3: per-layer gradient norm over training steps")}
    long = summary.melt(id_vars=["norm", "layer", "layer_index"], var_name="measure", value_name="value")
    figs["depth_profiles"] = px.line(long.astype({"norm": str}), x="layer_index", y="value", color="norm",
                                     facet_col="measure", facet_col_wrap=3, markers=True,
                                     title="S3: gradient norm, skip-loss increase, output variance and angular "
                                           "distance vs depth").update_yaxes(matches=None)
    return figs


def _summary(name: str, study: Study, table: pd.DataFrame) -> pd.DataFrame:
    last = table[table["step"] == table.groupby("run")["step"].transform("max")]
    if name == "s1":
        probe = last[(last.kind == "downstream") & (last.measure == "accuracy")]
        out = probe.pivot_table(index="label_noise", columns="split", values="value").add_prefix("probe_acc_")
        spec = last[last.kind == "measure"].pivot_table(index="label_noise", columns="measure", values="value")
        return out.join(spec).reset_index()
    if name == "s4":
        probe = last[(last.kind == "downstream") & (last.measure == "accuracy")]
        out = probe.pivot_table(index="temperature", columns="split", values="value").add_prefix("probe_acc_")
        geo = last[(last.kind == "history") & last.measure.isin(["alignment", "uniformity"])]
        tol = last[(last.kind == "measure") & (last.measure == "tolerance")]
        return (out.join(geo.pivot_table(index="temperature", columns="measure", values="value"))
                .join(tol.pivot_table(index="temperature", columns="measure", values="value")).reset_index())
    if name == "s3":
        return _s3_summary(table)
    if name == "s12":
        hist = table[table.kind == "history"]
        curves = hist[((hist.measure == "accuracy") & (hist.split == "train_clean")) |
                      ((hist.measure == "memorized") & (hist.split == "train_flipped"))]
        out = curves.pivot_table(index="step", columns=["measure", "split"], values="value")
        out.columns = [f"{m}[{s}]" for m, s in out.columns]
        run = study.store.get(next(iter(study.configs.values()))[1])
        out["el2n_auroc_flipped"] = [el2n_auroc(run, int(s)) for s in out.index]
        return out.reset_index()
    raise ValueError(name)


def run_named_study(name: str, out: str | Path, *, quick: bool = True, store: Any = None,
                    static: bool = True) -> dict[str, Any]:
    """Run study ``name``, write ``results.csv``, ``summary.csv`` and figures (``<figure>.svg`` + ``.csv`` of its
    data + ``.json`` spec; no figure is named ``summary`` or ``results``) into ``out``; return them."""
    from . import figures

    study = make_study(name, quick, store)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = study.run()
    table.to_csv(out / "results.csv", index=False)
    summary = _summary(name.lower(), study, table)
    summary.to_csv(out / "summary.csv", index=False)
    figs = {}
    if name.lower() == "s12":
        hist = table[(table.kind == "history") & (((table.measure == "accuracy") & (table.split == "train_clean")) |
                                                  ((table.measure == "memorized") & (table.split == "train_flipped")))]
        # both curves are fractions of training examples, drawn on one axis: one line per measure / split
        curves = hist.assign(series=hist.measure + " / " + hist.split, measure="fraction of examples")
        figs["clean_vs_flipped"] = figures.step_curve(curves, color="series", dash=None,
                                                      title="S12: clean labels are fit first, flipped ones later")
    elif name.lower() == "s3":
        figs = _s3_figures(table, summary)
    else:
        key = "label_noise" if name.lower() == "s1" else "temperature"
        long = summary.melt(id_vars=[key], var_name="measure", value_name="value")
        import plotly.express as px

        fig = px.line(long, x=key, y="value", facet_col="measure", facet_col_wrap=3, markers=True,
                      title=f"{name.upper()}: effect of {key}").update_yaxes(matches=None)
        figs["effect"] = figures.attach_data(fig, long, "study_effect")  # the CSV next to it is the plotted table
    figures.to_html(figs, out / "report.html", title=f"workbench study {name}", table=summary)
    for fname, fig in figs.items():
        if static:
            try:
                figures.export(fig, out / f"{fname}.svg")
            except Exception as err:  # static export needs Chromium; HTML + CSV are enough
                print(f"static export skipped ({type(err).__name__}: {err})")
    if study.failures:
        print(f"failed runs: {study.failures}")
    print(summary.to_string(index=False))
    return {"table": table, "summary": summary, "failures": study.failures}

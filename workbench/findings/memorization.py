"""S12 — under label noise, networks fit clean labels first and memorize noisy ones later; early EL2N flags them.

A CNN is trained on ``shapes`` with 40 % of the training labels flipped (symmetric noise). The ``clean_flipped``
recorder logs, over steps, the accuracy on the clean training examples and the fraction of flipped examples
whose *wrong* label the network predicts (memorized); the ``el2n`` recorder stores each example's EL2N score
(‖softmax(f(x)) − onehot(y)‖₂, Paul et al. 2021) at every checkpoint, from which :func:`el2n_auroc` scores how
well EL2N tells flipped from clean examples.

Why it happens: the clean examples share patterns, so their gradients agree and dominate early training; each
flipped example has to be memorized on its own, which takes capacity and time (Arpit et al. 2017). While the
network has fit the patterns but not the exceptions, the flipped examples are exactly those it gets wrong —
their EL2N is high — so early EL2N flags them; once they are memorized their error, and the flag, fades.
"""
from __future__ import annotations

from typing import Any

import pandas as pd

from ..results import tidy
from ..runs import RunConfig
from ._base import Check, Finding, Quantity, Setting, at_step_fraction

__all__ = ["FINDING", "el2n_auroc"]


def el2n_auroc(run: Any, step: int) -> float:
    """AUROC of the EL2N scores at checkpoint ``step`` for telling flipped from clean training examples
    (0.5 = chance): Mann–Whitney U / (n_flipped · n_clean), ties counted one half."""
    from scipy.stats import rankdata

    scores = run.load_artifact(f"el2n_{step:08d}")["scores"]
    flipped = run.load_artifact("label_noise")["flipped"]
    ranks = rankdata(scores)
    n_pos, n_neg = int(flipped.sum()), int((~flipped).sum())
    return float((ranks[flipped].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _auroc_rows(study: Any, table: pd.DataFrame) -> pd.DataFrame:
    """``el2n_auroc`` at every checkpoint of every run that finished (kind ``measure``, split ``train``)."""
    parts = []
    for label, run, columns in study.finished_runs(table):
        rows = [{"step": s, "measure": "el2n_auroc", "value": el2n_auroc(run, s)} for s in run.checkpoints()]
        parts.append(tidy(rows, run=label, split="train", kind="measure", **columns))
    return pd.concat(parts, ignore_index=True)


def _progress(rows: pd.DataFrame) -> pd.Series:
    """A curve over checkpoints as the fraction of its total change covered: (v − v₀) / (v_last − v₀), by step."""
    v = rows.sort_values("step").set_index("step")["value"]
    span = v.iloc[-1] - v.iloc[0]
    return (v - v.iloc[0]) / span if span != 0 else v * float("nan")


def _fit_order(rows: pd.DataFrame) -> float:
    """Mean over checkpoints after step 0 of (clean-accuracy progress − flipped-memorization progress), each
    curve as the fraction of its own total rise covered (:func:`_progress`): > 0 when the clean labels are fit
    before the flipped ones are memorized (0.5 = at every checkpoint, clean is half its rise ahead)."""
    clean = _progress(rows[(rows.measure == "accuracy") & (rows.split == "train_clean")])
    memorized = _progress(rows[(rows.measure == "memorized") & (rows.split == "train_flipped")])
    gap = (clean - memorized).dropna()
    return float(gap[gap.index > 0].mean())


_early = at_step_fraction(0.1)  # the checkpoint nearest 10 % of training


def _early_above_chance(rows: pd.DataFrame) -> float:
    """EL2N AUROC at the checkpoint nearest 10 % of training, minus chance (0.5)."""
    return _early(rows) - 0.5


def _early_minus_late(rows: pd.DataFrame) -> float:
    """EL2N AUROC at the checkpoint nearest 10 % of training minus at the last checkpoint."""
    return _early(rows) - float(rows.sort_values("step")["value"].iloc[-1])


def _figures(table: pd.DataFrame) -> dict[str, Any]:
    from .. import figures

    hist = table[(table.kind == "history") & (((table.measure == "accuracy") & (table.split == "train_clean")) |
                                              ((table.measure == "memorized") & (table.split == "train_flipped")))]
    curves = hist.assign(series=hist.measure + " / " + hist.split, measure="fraction of examples")
    auroc = table[(table.kind == "measure") & (table.measure == "el2n_auroc")].assign(series="EL2N AUROC")
    return {"clean_vs_flipped": figures.step_curve(curves, color="series", dash="run",
                                                   title="S12: clean labels are fit first, flipped ones later "
                                                         "(one line per seed)"),
            "el2n_auroc": figures.step_curve(auroc, color="run", dash=None,
                                             title="S12: how well EL2N flags flipped examples, per checkpoint "
                                                   "(0.5 = chance)")}


_BASE = RunConfig(dataset="shapes", dataset_options={"n_train": 1000, "n_test": 500, "n_ood": 0, "size": 32,
                                                     "seed": 0},
                  model="cnn", model_options={"width": 16, "depth": 3}, steps=600, batch_size=128, lr=3e-3,
                  checkpoints=10, label_noise=0.4, recorders=("clean_flipped", "el2n"))

FINDING = Finding(
    id="S12", name="memorization",
    claim="Under label noise, networks fit clean labels first and memorize noisy ones later; early EL2N scores "
          "flag the noisy examples.",
    source="Arpit et al. 2017, A closer look at memorization in deep networks, ICML; Paul, Ganguli & Dziugaite "
           "2021, Deep learning on a data diet, NeurIPS",
    predicts="accuracy on clean training examples rises well before flipped examples are memorized; early EL2N "
             "flags flipped examples better (AUROC) than late EL2N",
    base=_BASE, vary={},
    study={"downstream": [], "measures": []},
    checks=[
        Check("flipped examples are memorized later than the clean ones are fit (clean-fit progress minus "
              "memorization progress, mean over checkpoints > 0)",
              Quantity({"kind": "history"}, step="all", reduce=_fit_order, name="clean progress − memorized progress"),
              a={}, expect="positive"),
        Check("early EL2N flags flipped examples above chance (AUROC at 10 % of training − 0.5 > 0)",
              Quantity({"kind": "measure", "measure": "el2n_auroc"}, step="all", reduce=_early_above_chance,
                       name="early EL2N AUROC − 0.5"), a={}, expect="positive"),
        Check("early EL2N flags flipped examples better than late EL2N (AUROC early − late > 0)",
              Quantity({"kind": "measure", "measure": "el2n_auroc"}, step="all", reduce=_early_minus_late,
                       name="EL2N AUROC early − late"), a={}, expect="positive"),
    ],
    settings={
        "smoke": Setting(seeds=(0, 1), config={"steps": 60, "checkpoints": 3, "dataset_options.n_train": 256,
                                               "dataset_options.n_test": 64, "model_options.width": 8}),
        "quick": Setting(seeds=(0, 1, 2)),
        "full": Setting(seeds=(0, 1, 2, 3, 4), config={"steps": 6000, "checkpoints": 14,
                                                        "dataset_options.n_train": 20000,
                                                        "model_options.width": 32, "model_options.depth": 4}),
    },
    figures=_figures, derive=_auroc_rows,
)

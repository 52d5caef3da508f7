"""S11 — supervised contrastive learning collapses subclasses; unsupervised contrastive learning suppresses hard
features; a larger embedding lessens the suppression.

Data: ``subclasses`` (:func:`workbench.data.features.make_subclasses`), Xue et al.'s (2023) synthetic model in
miniature: 32-dim vectors, the sum of a superclass feature (2 superclasses, strength 2), a subclass feature (3
subclasses per superclass, strength 1: the weak, *hard* feature), optionally an independent class-irrelevant
*easy* feature (4 values, strength 4, or absent), each along its own orthonormal direction, plus N(0, I) noise.
The label is the superclass; the ``subclass`` and ``easy`` factors are probed.

Model: an MLP ``32 → 64 → p`` trained with SimCLR (instance discrimination; positives = two noise + mask
augmentations of one example) or SupCon (positives = every example of the same superclass), with the loss on the
MLP's output itself (no projection head) — as in Xue et al.'s analysis, where the embedding the loss acts on is the
network's output — so the embedding dimension is the output width ``p`` (``model_options.hidden = [64, p]``,
p = 4 or 32). Every probe is a linear probe on that embedding (``fc2``) of held-out examples.

Grid: objective (simclr, supcon) × easy feature (absent, strength 4) × embedding dimension (4, 32) × seeds.

Why it happens (Xue et al. 2023): gradient descent prefers the simplest (minimum-norm) solution of the loss. SupCon
is minimized by mapping a whole superclass to one point, and the simplest map that does so ignores the subclass
feature, so the subclasses of a superclass collapse (class collapse; the ``subclass_spread`` of the embedding —
the between-subclass share of the within-superclass scatter — falls). SimCLR must tell every example apart, so it
keeps every feature the two views share — but an embedding with room for few directions keeps the ones that
explain the most variance: a strong (easy) feature, even when it is irrelevant to the classes, pushes the weak
(hard) one out (feature suppression). A wider embedding has room for both.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..results import tidy
from ..runs import RunConfig
from ._base import Check, Finding, Quantity, Setting

__all__ = ["FINDING", "spread_rows", "drop_rows"]

_OBJ, _EASY, _DIM = "objective", "dataset_options.easy_strength", "model_options.hidden"
_EASY_ON = 4.0
_SMALL, _LARGE = [64, 4], [64, 32]
_LAYER = "fc2"


def _probe(task: str) -> dict[str, Any]:
    return {"kind": "downstream", "task": task, "method": "linear", "measure": "accuracy", "split": "test"}


def spread_rows(study: Any, table: pd.DataFrame) -> pd.DataFrame:
    """:func:`~workbench.spectrum.subclass_spread` of each finished run's embedding (``fc2``) on the first
    ``measure_examples`` test examples at its last checkpoint (kind ``measure``, measure ``subclass_spread``).

    (The Study's registry measures are given the class labels, here the superclass; the spread needs the
    ``subclass`` factor too, so it is computed from the runs' activations here.)"""
    from .. import data
    from ..spectrum import subclass_spread
    from ..study import run_activations

    parts = []
    for label, run, columns in study.finished_runs(table):
        step = run.checkpoints()[-1]
        ds = data.load(run.config.dataset, **dict(run.config.dataset_options))
        acts = run_activations(run, ds, [study.measure_split], step=step, layers=[_LAYER],
                               max_examples={study.measure_split: study.measure_examples})[study.measure_split]
        value = subclass_spread(acts[_LAYER], acts.factors["subclass"], acts.factors["superclass"])
        row = {"step": step, "layer": _LAYER, "measure": "subclass_spread", "value": value}
        parts.append(tidy([row], run=label, split=study.measure_split, kind="measure",
                          **columns))
    return pd.concat(parts, ignore_index=True)


def drop_rows(table: pd.DataFrame) -> pd.DataFrame:
    """Per run with the easy feature present: the subclass (hard-feature) probe accuracy of the same objective,
    embedding dimension and seed *without* the easy feature minus with it (kind ``measure``, measure
    ``subclass_probe_drop``; > 0: the easy feature suppressed the hard one)."""
    acc = table[(table.kind == "downstream") & (table.task == "subclass") & (table.method == "linear")
                & (table.measure == "accuracy") & (table.split == "test")]
    acc = acc[acc.step == acc.groupby("run")["step"].transform("max")]
    easy = acc[_EASY].astype(float)
    off = {(r[_OBJ], r[_DIM], r["seed"]): r["value"] for r in acc[easy == 0.0].to_dict("records")}
    rows = []
    for r in acc[easy > 0.0].to_dict("records"):
        key = (r[_OBJ], r[_DIM], r["seed"])
        if key in off:
            rows.append({"run": r["run"], "step": r["step"], "layer": r["layer"], "measure": "subclass_probe_drop",
                         "split": "test", "value": float(off[key]) - float(r["value"]), "kind": "measure",
                         _OBJ: r[_OBJ], _EASY: r[_EASY], _DIM: r[_DIM], "seed": r["seed"]})
    return tidy(rows) if rows else pd.DataFrame()


def _derive(study: Any, table: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([spread_rows(study, table), drop_rows(table)], ignore_index=True)


def _figures(table: pd.DataFrame) -> dict[str, Any]:
    import plotly.express as px

    from .. import figures

    last = table[table.step == table.groupby("run")["step"].transform("max")]
    probes = last[(last.kind == "downstream") & (last.method == "linear") & (last.measure == "accuracy")
                  & (last.split == "test")]
    probes = probes.assign(probe=probes.task.map({"label": "superclass (label)", "subclass": "subclass (hard)",
                                                  "easy": "easy feature"}),
                           easy=np.where(probes[_EASY].astype(float) > 0, "easy feature present", "absent"),
                           embedding=probes[_DIM].map(lambda h: f"p = {str(h).strip('[]').split(',')[-1].strip()}"),
                           seed=probes.seed.astype(str))
    cols = ["run", _OBJ, "easy", "embedding", "seed", "probe", "value"]
    by_obj = px.strip(probes, x=_OBJ, y="value", color="probe", facet_col="easy", facet_row="embedding",
                      hover_data=["seed"],
                      title="S11: linear-probe accuracy on the embedding, by objective (one point per seed)")
    simclr = probes[probes[_OBJ] == "simclr"]
    means = simclr.groupby(["probe", "easy", "embedding"], as_index=False)["value"].mean()
    suppress = px.line(means.sort_values("embedding", key=lambda s: s.str.extract(r"(\d+)")[0].astype(int)),
                       x="embedding", y="value", color="easy", facet_col="probe", markers=True,
                       title="S11: SimCLR — the easy feature pushes the hard (subclass) feature out of a small "
                             "embedding (mean over seeds)")
    spread = last[(last.kind == "measure") & last.measure.isin(["subclass_spread", "effective_rank"])]
    spread = spread.assign(easy=np.where(spread[_EASY].astype(float) > 0, "easy present", "absent"),
                           embedding=spread[_DIM].astype(str), seed=spread.seed.astype(str))
    geo = px.strip(spread, x=_OBJ, y="value", color="embedding", facet_col="measure", facet_row="easy",
                   hover_data=["seed"],
                   title="S11: why — SupCon shrinks the spread of the subclasses inside each superclass (subclass "
                         "spread, 0 = collapsed) and the embedding's effective rank").update_yaxes(matches=None)
    gcols = ["run", _OBJ, "easy", "embedding", "seed", "measure", "value"]
    return {"probes_by_objective": figures.attach_data(by_obj, probes[cols], "s11_probes"),
            "suppression_vs_embedding": figures.attach_data(suppress, means, "s11_suppression"),
            "collapse_geometry": figures.attach_data(geo, spread[gcols], "s11_geometry")}


_DATA = {"n_train": 3000, "n_test": 1000, "dim": 32, "n_superclasses": 2, "subclasses_per_class": 3,
         "class_strength": 2.0, "subclass_strength": 1.0, "noise": 1.0, "n_easy": 4, "easy_strength": 0.0, "seed": 0}
_BASE = RunConfig(dataset="subclasses", dataset_options=_DATA, model="mlp", model_options={"hidden": _LARGE},
                  objective="simclr", augment=("noise", "mask"), augment_strength=0.5, projector="none",
                  temperature=0.2, steps=400, batch_size=128, lr=3e-3, checkpoints=1, recorders=())
_SUB = Quantity(_probe("subclass"), name="subclass probe accuracy")

FINDING = Finding(
    id="S11", name="contrastive_collapse",
    claim="Supervised contrastive learning collapses subclasses; unsupervised contrastive learning suppresses hard "
          "features; larger embeddings help.",
    source="Xue et al. 2023, Which features are learnt by contrastive learning? On the role of simplicity bias in "
           "class collapse and feature suppression, ICML",
    predicts="supervised contrastive: subclass probe accuracy below the unsupervised model's; unsupervised "
             "contrastive: the hard feature's probe drops when an easy feature is present; a larger embedding "
             "lessens the drop",
    base=_BASE, vary={_OBJ: ["simclr", "supcon"], _EASY: [0.0, _EASY_ON], _DIM: [_SMALL, _LARGE]},
    study={"downstream": ["linear"], "tasks": [None, "subclass", "easy"], "measures": ["effective_rank"],
           "layers": [_LAYER], "evaluate_options": {"layer": _LAYER}},
    checks=[
        Check("SupCon collapses subclasses: its subclass probe is below SimCLR's (no easy feature, p = 32)",
              _SUB, a={_OBJ: "simclr", _EASY: 0.0, _DIM: _LARGE}, b={_OBJ: "supcon", _EASY: 0.0, _DIM: _LARGE},
              expect="decrease"),
        Check("SimCLR suppresses the hard feature: its subclass probe drops when the easy feature is present "
              "(p = 4)",
              _SUB, a={_OBJ: "simclr", _EASY: 0.0, _DIM: _SMALL}, b={_OBJ: "simclr", _EASY: _EASY_ON, _DIM: _SMALL},
              expect="decrease"),
        Check("a larger embedding lessens the suppression: the probe drop at p = 32 is below the drop at p = 4",
              Quantity({"kind": "measure", "measure": "subclass_probe_drop"},
                       name="subclass probe drop (absent − present)"),
              a={_OBJ: "simclr", _EASY: _EASY_ON, _DIM: _SMALL}, b={_OBJ: "simclr", _EASY: _EASY_ON, _DIM: _LARGE},
              expect="decrease"),
    ],
    settings={
        "smoke": Setting(seeds=(0, 1), config={"steps": 120, "dataset_options.n_train": 1000,
                                               "dataset_options.n_test": 500}),
        "quick": Setting(seeds=(0, 1, 2, 3, 4)),
        "full": Setting(seeds=(0, 1, 2, 3, 4), config={"steps": 4000, "dataset_options.n_train": 50000,
                                                        "dataset_options.n_test": 5000}),
    },
    figures=_figures, derive=_derive,
    notes="CPU-scale stand-in for the paper's setting: vectors from its synthetic feature model and a 2-layer MLP "
          "whose output is the embedding (no projection head), instead of CIFAR-100 superclasses / CIFAR with MNIST "
          "digits as the easy feature and ResNets. The full setting keeps the model and grows data and training; the "
          "paper's image setting (CIFAR-100 superclasses, ResNet-18, embedding 128 vs 2048) is the one to confirm it. "
          "The data's strengths (2 / 1 / 4), p = 4 vs 32 and the model were fixed before the first run and not tuned; "
          "after a first look (3 seeds, 300 steps: every check already in the predicted direction) the quick size was "
          "raised to 5 seeds, 400 steps and 3000 examples. The subclass spread is computed from the runs' "
          "activations (derive), because the Study gives registry measures the superclass labels only.",
)

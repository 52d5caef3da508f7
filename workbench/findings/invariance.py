"""S6 — invariance to the right transformations matters as much as or more than data size; a wrong one hurts.

SimCLR pretrains a small CNN on ``shapes`` (coloured objects on textured backgrounds, every generative factor
known) with two augmentation sets — the *right* one, ``crop, flip, noise``, which leaves the object's colour
alone, and the same plus ``color`` (brightness, contrast, saturation and hue jitter), which teaches invariance to
exactly the factor a downstream colour task needs — each on all (``data_fraction = 1``) and half (0.5) of the
pretraining images. A linear probe on the frozen pooled features (``pool``) then reads the object's colour
(downstream task ``color``, 8 hues) and its shape (the label); ridge probes read the continuous factors (position
``x``, ``scale``: :func:`workbench.probing.ridge_probe`, R²); the ``invariance`` measure (Mahalanobis cosine of
``z(x)`` and ``z(T(x))`` above chance, :func:`workbench.similarity.invariance`, Ericsson et al. 2021) measures,
per layer, how invariant the features became to the colour jitter itself.

Why it happens (Xiao et al. 2021): a contrastive loss makes the two views of an image agree, so whatever the
augmentations change is, by construction, what the representation learns to discard. Colour jitter is harmless
for shape classification but erases the information a colour-dependent task needs, and no amount of extra
pretraining data brings it back — halving the data costs a little everywhere, the wrong invariance costs a lot on
the task it hits.

Scale (why this setting is defensible on a CPU): ``shapes`` has colour as an exact, known factor; the CNN
(width 8, depth 3) and 200 SimCLR steps (batch 64) are small, but colour is a low-level, linearly readable
property of the pixels, so whether training keeps or discards it shows early; the augmentations run at SimCLR's
full strength (``augment_strength = 1``: crops down to 8 % of the area; hue shifts up to ±72°, more than the 45°
between neighbouring hues), so the jitter can actually confuse hues.
"""
from __future__ import annotations

from typing import Any

import pandas as pd

from ..runs import RunConfig
from ._base import Check, Finding, Quantity, Setting

__all__ = ["FINDING", "RIGHT", "WRONG"]

RIGHT = ("crop", "flip", "noise")
WRONG = ("crop", "flip", "noise", "color")
_A, _F = "augment", "data_fraction"
_FACTORS = ["x", "scale"]


def _acc(task: str, name: str) -> Quantity:
    return Quantity({"kind": "downstream", "task": task, "measure": "accuracy", "split": "test", "method": "linear"},
                    name=name)


def _short(augment: Any) -> str:
    return "+ color (wrong)" if "color" in str(augment) else "crop, flip, noise (right)"


def _figures(table: pd.DataFrame) -> dict[str, Any]:
    import plotly.express as px

    from .. import figures

    last = table[table.step == table.groupby("run")["step"].transform("max")]
    down = last[(last.kind == "downstream") & (last.measure == "accuracy") & (last.split == "test")]
    down = down.assign(measure=down.task.map({"label": "shape accuracy", "color": "colour accuracy"}))
    probes = last[(last.kind == "measure") & last.measure.str.startswith("ridge_probe[")]
    probes = probes.assign(measure=probes.measure.str.replace("ridge_probe", "R²", regex=False))
    rows = pd.concat([down, probes], ignore_index=True)
    rows = rows.assign(augmentation=rows[_A].map(_short), seed=rows.seed.astype(str))
    cols = ["run", "augmentation", _F, "seed", "measure", "layer", "value", "ci_low", "ci_high"]
    probe_fig = px.strip(rows[cols], x=_F, y="value", color="augmentation", facet_col="measure", facet_col_wrap=2,
                         hover_data=["seed"],
                         title="S6: what a probe reads from the frozen features, by augmentation set and "
                               "pretraining data (one point per seed)").update_yaxes(matches=None)
    inv = last[(last.kind == "measure") & (last.measure == "invariance")]
    inv = inv.assign(augmentation=inv[_A].map(_short), seed=inv.seed.astype(str))
    inv = inv.sort_values("layer_index")
    inv_fig = px.line(inv, x="layer", y="value", color="augmentation", line_dash=inv[_F].astype(str),
                      line_group="run", markers=True,
                      title="S6: invariance of each layer to colour jitter (1 = the jitter changes nothing, 0 = as "
                            "different as another image); dash = data fraction")
    effect = _effect_rows(last)
    eff_fig = px.bar(effect, x="seed", y="drop", color="cause", barmode="group",
                     title="S6: colour accuracy lost to the wrong invariance vs to halving the pretraining data "
                           "(per seed)")
    return {"probes_by_condition": figures.attach_data(probe_fig, rows[cols], "s6_probes"),
            "colour_invariance_by_layer": figures.attach_data(inv_fig, inv[cols], "s6_invariance"),
            "wrong_invariance_vs_half_data": figures.attach_data(eff_fig, effect, "s6_effect")}


def _effect_rows(last: pd.DataFrame) -> pd.DataFrame:
    """Per seed: colour accuracy of (right, all data) minus (wrong, all data) and minus (right, half data)."""
    acc = last[(last.kind == "downstream") & (last.task == "color") & (last.measure == "accuracy") &
               (last.split == "test")]
    acc = acc.assign(cond=acc[_A].map(_short) + " | " + acc[_F].astype(str))
    wide = acc.pivot_table(index="seed", columns="cond", values="value")
    ref = wide.get(f"{_short(RIGHT)} | 1.0")
    rows = []
    for cause, cond in (("wrong invariance (all data)", f"{_short(WRONG)} | 1.0"),
                        ("half the data (right invariance)", f"{_short(RIGHT)} | 0.5")):
        if ref is not None and cond in wide:
            rows += [{"seed": str(s), "cause": cause, "drop": float(ref[s] - wide[cond][s])} for s in wide.index]
    return pd.DataFrame(rows, columns=["seed", "cause", "drop"])


_BASE = RunConfig(dataset="shapes", dataset_options={"n_train": 3000, "n_test": 1000, "n_ood": 0, "size": 32,
                                                     "seed": 0},
                  model="cnn", model_options={"width": 8, "depth": 3}, objective="simclr", augment=RIGHT,
                  augment_strength=1.0, projector="mlp", embed_dim=32, steps=200, batch_size=64, lr=3e-3,
                  checkpoints=1)

_COLOUR = _acc("color", "colour accuracy")

FINDING = Finding(
    id="S6", name="invariance",
    claim="Invariance to the right transformations matters as much as or more than data size; a wrong invariance "
          "hurts.",
    source="Xiao et al. 2021, What should not be contrastive in contrastive learning, ICLR",
    predicts="pretraining with colour jitter lowers the colour probe; that drop exceeds the drop from halving the "
             "pretraining data (colour accuracy with the right augmentations on half the data > with the wrong "
             "ones on all of it)",
    base=_BASE, vary={_A: [RIGHT, WRONG], _F: [1.0, 0.5]},
    study={"downstream": ["linear"], "tasks": [None, "color"], "evaluate_options": {"splits": ["test"]},
           "layers": ["stage2", "pool"], "measure_examples": 500,
           "measures": ["invariance", "ridge_probe"],
           "measure_options": {"invariance": {"transform": "color"}, "ridge_probe": {"target": _FACTORS}}},
    checks=[
        Check("colour jitter in pretraining lowers the colour probe (all data: wrong minus right < 0)", _COLOUR,
              a={_A: RIGHT, _F: 1.0}, b={_A: WRONG, _F: 1.0}, expect="decrease"),
        Check("the wrong invariance costs more colour accuracy than halving the data (right on half the data minus "
              "wrong on all of it > 0)", _COLOUR, a={_A: WRONG, _F: 1.0}, b={_A: RIGHT, _F: 0.5}, expect="increase"),
    ],
    settings={
        "smoke": Setting(seeds=(0, 1), config={"steps": 20, "dataset_options.n_train": 384,
                                               "dataset_options.n_test": 256},
                         study={"measure_examples": 128, "layers": ["pool"]}),
        "quick": Setting(seeds=(0, 1, 2)),
        "full": Setting(seeds=(0, 1, 2, 3, 4), config={"steps": 5000, "dataset_options.n_train": 50000,
                                                        "dataset_options.n_test": 5000,
                                                        "model_options.width": 32, "model_options.depth": 4}),
    },
    figures=_figures,
    notes="Quick (3 seeds, 200 steps): inconclusive. The mechanism shows — colour jitter makes the pooled features "
          "far more invariant to colour (invariance 0.63 ± 0.10 vs 0.18 ± 0.01 over seeds, all data) — but the linear "
          "colour probe does not follow at this scale: it swings by ±0.25 between seeds (per-seed wrong − right: "
          "+0.13, +0.24, −0.14), far more than either effect. Before the quick setting was fixed, two one-seed pilots "
          "(300 steps, batch 128, 4000 images) were tried: at augment_strength 0.5 the colour probe was *higher* with "
          "colour jitter (0.91 vs 0.76; hue shifts of ±36° do not confuse hues 45° apart); at 1.0 it was slightly "
          "lower (0.43 vs 0.46) while halving the data cost more (0.39). Strength 1.0 (SimCLR's) was kept; steps, "
          "batch and data were then cut to fit the CPU budget, not tuned on the verdict. Position (x) is not linearly "
          "readable from the globally pooled features in any condition (R² ≈ 0). The setting that should show it: the "
          "full size (5000 steps, width-32 depth-4 CNN, 50 000 images, 5 seeds) or Xiao et al.'s ResNet on "
          "ImageNet-100 with a colour-dependent downstream task.",
)

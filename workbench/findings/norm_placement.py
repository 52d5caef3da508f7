"""S3 — where LayerNorm sits sets how gradients and the value of layers spread over depth.

An 8-block causal language model is trained on ``tiny-language`` with four LayerNorm placements
(``model_options.norm``): Pre-LN (normalize each block's input), Post-LN (normalize after the residual sum),
Mix-LN (Post-LN in the first quarter of the blocks, Pre-LN after) and LayerNorm Scaling (Pre-LN with each
block's normalized input scaled by 1/√(block number)). The ``grad_norm`` recorder logs each block's gradient
norm at every logged step; at the first and last checkpoint the study measures the loss increase when each
block is skipped (``skip_loss_increase``), each layer's output variance and the angular distance between
consecutive layers.

Why it happens: in Pre-LN the residual stream grows with depth while each block adds a normalized update, so
deep blocks change the stream less — their gradients are smaller and skipping them costs little (the "curse of
depth"). In Post-LN every sum is renormalized, so the gradient reaching early blocks passes through every
later normalization and shrinks (Xiong et al. 2020). Mix-LN and LayerNorm Scaling are designed to even the
profile out.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..runs import RunConfig
from ._base import Check, Finding, Quantity, Setting

__all__ = ["FINDING", "NORMS"]

NORMS = ("pre", "post", "mix", "lns")
_NORM = "model_options.norm"
_BLOCKS = r"^layer\d+$"


def _blocks(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[rows["layer"].astype(str).str.match(_BLOCKS)]


def grad_slope(rows: pd.DataFrame) -> float:
    """Slope of log10(training gradient norm) over block index, each block's norm averaged over every logged
    step (decades per block: < 0 falls with depth)."""
    per_block = _blocks(rows).groupby("layer_index")["value"].mean()
    return float(np.polyfit(per_block.index.to_numpy(float), np.log10(per_block.to_numpy(float)), 1)[0])


def abs_grad_slope(rows: pd.DataFrame) -> float:
    """|:func:`grad_slope`|: how far from flat the gradient-norm profile is."""
    return abs(grad_slope(rows))


def skip_slope(rows: pd.DataFrame) -> float:
    """Slope of the loss increase when a block is skipped over block index (< 0: deep blocks matter less)."""
    b = _blocks(rows)
    return float(np.polyfit(b["layer_index"].to_numpy(float), b["value"].to_numpy(float), 1)[0])


_GRAD = {"kind": "history", "measure": "grad_norm"}
_SKIP = {"kind": "measure", "measure": "skip_loss_increase"}


def _figures(table: pd.DataFrame) -> dict[str, Any]:
    import plotly.express as px

    from .. import figures

    hist = _blocks(table[(table.kind == "history") & (table.measure == "grad_norm")])
    profile = (hist.groupby([_NORM, "seed", "layer", "layer_index"], as_index=False)["value"].mean()
               .assign(measure="mean training gradient norm"))
    meas = table[(table.kind == "measure") & table.measure.isin(["skip_loss_increase", "output_variance",
                                                                 "angular_distance"])]
    final = meas[meas.step == meas.groupby("run")["step"].transform("max")]
    depth = pd.concat([profile, final[[_NORM, "seed", "layer", "layer_index", "measure", "value"]]],
                      ignore_index=True).dropna(subset=["layer_index"])
    depth = depth.assign(norm=depth[_NORM], seed=depth["seed"].astype(str))
    fig = px.line(depth.sort_values("layer_index"), x="layer_index", y="value", color="norm", line_dash="seed",
                  facet_col="measure", facet_col_wrap=2, markers=True, log_y=False,
                  title="S3: gradient norm, skip-a-block loss, output variance and angular distance vs depth "
                        "(last checkpoint; one line per seed)").update_yaxes(matches=None)
    over_steps = hist.assign(norm=hist[_NORM])
    steps = px.line(over_steps, x="step", y="value", color="layer", line_group="run", facet_col="norm",
                    log_y=True, title="S3: per-block gradient norm over training steps")
    return {"depth_profiles": figures.attach_data(fig, depth, "s3_depth"),
            "grad_norm_over_steps": figures.attach_data(steps, over_steps, "s3_steps")}


_BASE = RunConfig(dataset="tiny-language", dataset_options={"n_train": 2000, "n_test": 256, "n_ood": 0,
                                                            "max_len": 32, "seed": 0},
                  model="transformer", model_options={"dim": 32, "depth": 8, "heads": 4, "mlp_ratio": 2.0},
                  objective="clm", steps=300, batch_size=32, lr=1e-3, warmup=30, schedule="cosine", checkpoints=0,
                  recorders=("grad_norm",))
_DEPTH = {"layers": r"^(embed|layer\d+)$"}  # the residual stream: token embedding, then each block's output

FINDING = Finding(
    id="S3", name="norm_placement",
    claim="Pre-LN gives small gradient norms and near-identity deep layers; Post-LN gives vanishing early "
          "gradients; Mix-LN and LayerNorm scaling even them out.",
    source="Xiong et al. 2020, On layer normalization in the transformer architecture, ICML; Li et al. 2025, "
           "Mix-LN, ICLR; Sun et al. 2025, The curse of depth in large language models (LayerNorm scaling)",
    predicts="Pre-LN: removing a deep block costs less than removing a shallow one, and gradient norms fall with "
             "depth; Post-LN: early-layer gradient norms below late-layer ones; Mix-LN and LN-scaling: a flatter "
             "per-layer gradient-norm profile than both",
    base=_BASE, vary={_NORM: list(NORMS)},
    study={"downstream": [], "measures": ["skip_loss_increase", "output_variance", "angular_distance"],
           "measure_options": {"output_variance": _DEPTH, "angular_distance": _DEPTH}, "measure_examples": 128,
           "steps": "all"},
    checks=[
        Check("Pre-LN: gradient norms fall with depth (slope of log10 norm over blocks < 0)",
              Quantity(_GRAD, step="all", reduce=grad_slope, name="gradient-norm slope"), a={_NORM: "pre"},
              expect="negative"),
        Check("Pre-LN: skipping a deep block costs less than skipping a shallow one (slope < 0)",
              Quantity(_SKIP, reduce=skip_slope, name="skip-loss slope"), a={_NORM: "pre"}, expect="negative"),
        Check("Post-LN: early blocks get smaller gradients than late ones (slope > 0)",
              Quantity(_GRAD, step="all", reduce=grad_slope, name="gradient-norm slope"), a={_NORM: "post"},
              expect="positive"),
        *[Check(f"{new}: a flatter gradient-norm profile than {old} (|slope| smaller)",
                Quantity(_GRAD, step="all", reduce=abs_grad_slope, name="|gradient-norm slope|"), a={_NORM: old},
                b={_NORM: new}, expect="decrease")
          for new in ("mix", "lns") for old in ("pre", "post")],
    ],
    settings={
        "smoke": Setting(seeds=(0, 1), config={"steps": 30, "warmup": 3, "dataset_options.n_train": 200,
                                               "dataset_options.n_test": 32, "model_options.dim": 32,
                                               "model_options.depth": 4},
                         study={"measure_examples": 32}),
        "quick": Setting(seeds=(0, 1, 2)),
        "full": Setting(seeds=(0, 1, 2, 3, 4), config={"steps": 4000, "warmup": 400, "batch_size": 64,
                                                        "dataset_options.n_train": 20000,
                                                        "dataset_options.n_test": 1000, "model_options.dim": 128,
                                                        "model_options.depth": 12, "model_options.mlp_ratio": 4.0},
                        study={"measure_examples": 512}),
    },
    figures=_figures,
)

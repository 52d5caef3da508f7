"""S4 — the contrastive temperature sets how hard negatives are penalized (uniformity–tolerance dilemma).

(Provisional settings; being replaced by measurements at the projector output.)
"""
from __future__ import annotations

from ..runs import RunConfig
from ._base import Check, Finding, Quantity, Setting

__all__ = ["FINDING"]

_BASE = RunConfig(dataset="shapes", dataset_options={"n_train": 4000, "n_test": 1000, "n_ood": 1000, "size": 32,
                                                     "seed": 0},
                  model="cnn", model_options={"width": 16, "depth": 3}, steps=300, batch_size=128, lr=3e-3,
                  checkpoints=3, objective="simclr", augment=("crop", "flip", "color"), augment_strength=0.5,
                  projector="mlp", recorders=("align_unif",))
_T = "temperature"

FINDING = Finding(
    id="S4", name="temperature",
    claim="The contrastive temperature sets how hard negatives are penalized: too low gives over-uniform "
          "embeddings that break semantic neighbourhoods (the uniformity–tolerance dilemma).",
    source="Wang & Liu 2021, Understanding the behaviour of contrastive loss, CVPR",
    predicts="lower temperature → more uniform and less tolerant embeddings (measured where the loss acts), after "
             "training has left the collapsed start",
    base=_BASE, vary={_T: [0.05, 0.2, 1.0]},
    study={"downstream": ["linear"], "measures": ["tolerance"], "layers": ["pool"]},
    checks=[
        Check("lower temperature gives more uniform embeddings (uniformity at τ = 1 minus at τ = 0.05 > 0)",
              Quantity({"kind": "history", "measure": "uniformity"}, name="uniformity"), a={_T: 0.05}, b={_T: 1.0},
              expect="increase"),
        Check("lower temperature gives less tolerant embeddings (tolerance at τ = 1 minus at τ = 0.05 > 0)",
              Quantity({"kind": "measure", "measure": "tolerance", "layer": "pool"}, name="tolerance"),
              a={_T: 0.05}, b={_T: 1.0}, expect="increase"),
    ],
    settings={
        "smoke": Setting(seeds=(0, 1), config={"steps": 30, "dataset_options.n_train": 256,
                                               "dataset_options.n_test": 128, "dataset_options.n_ood": 128,
                                               "model_options.width": 8}),
        "quick": Setting(seeds=(0, 1, 2)),
        "full": Setting(seeds=(0, 1, 2, 3, 4), config={"steps": 3000, "dataset_options.n_train": 20000,
                                                        "model_options.width": 32, "model_options.depth": 4}),
    },
)

"""S1 — slight label noise in supervised pretraining can help in-domain transfer but hurts out-of-domain transfer.

(Provisional settings; being replaced by the transfer design.)
"""
from __future__ import annotations

from ..runs import RunConfig
from ._base import Check, Finding, Quantity, Setting

__all__ = ["FINDING"]

_BASE = RunConfig(dataset="shapes", dataset_options={"n_train": 4000, "n_test": 1000, "n_ood": 1000, "size": 32,
                                                     "seed": 0},
                  model="cnn", model_options={"width": 16, "depth": 3}, steps=300, batch_size=128, lr=3e-3,
                  checkpoints=3)
_NOISE = "label_noise"


def _acc(split: str) -> Quantity:
    return Quantity({"kind": "downstream", "measure": "accuracy", "split": split, "method": "linear"},
                    name=f"linear-probe accuracy ({split})")


FINDING = Finding(
    id="S1", name="label_noise",
    claim="Slight label noise in supervised pretraining can help in-domain transfer but always hurts "
          "out-of-domain transfer; noise reshapes the feature spectrum.",
    source="Chen et al. 2024, Understanding and mitigating the label noise in pre-training on downstream tasks "
           "(NMTune), ICLR",
    predicts="transfer to a different downstream task: OOD accuracy falls from 0 % to 30 % noise; ID accuracy at "
             "slight noise is not below clean by more than its interval; SVE / LSVR move with noise",
    base=_BASE, vary={_NOISE: [0.0, 0.1, 0.3]},
    study={"downstream": ["linear"], "measures": ["singular_value_entropy", "largest_singular_value_ratio"],
           "layers": ["pool"]},
    checks=[
        Check("OOD transfer accuracy falls from 0 % to 30 % noise", _acc("ood"), a={_NOISE: 0.0}, b={_NOISE: 0.3},
              expect="decrease"),
        Check("ID transfer accuracy at 10 % noise is not below clean by more than its interval", _acc("test"),
              a={_NOISE: 0.0}, b={_NOISE: 0.1}, expect="no_drop"),
        Check("singular-value entropy moves with noise (0 % → 30 %)",
              Quantity({"kind": "measure", "measure": "singular_value_entropy", "layer": "pool"}, name="SVE"),
              a={_NOISE: 0.0}, b={_NOISE: 0.3}, expect="change"),
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

"""Training: objectives, the trainer loop, recorders and label corruption. Entry point: :func:`train`."""
from .noise import label_noise, pairflip_label_noise, symmetric_label_noise
from .downstream import DOWNSTREAM_COLUMNS, METHODS, evaluate
from .trainer import build_model, evaluate_accuracy, lr_factor, train, train_subset

__all__ = ["train", "evaluate", "METHODS", "DOWNSTREAM_COLUMNS", "build_model", "evaluate_accuracy", "train_subset",
           "lr_factor", "label_noise", "symmetric_label_noise", "pairflip_label_noise"]
from .downstream import finetune

__all__ += ["finetune"]

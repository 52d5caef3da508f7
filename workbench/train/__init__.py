"""Training: objectives, the trainer loop and label corruption. Entry point: :func:`train`."""
from .noise import symmetric_label_noise
from .trainer import build_model, evaluate_accuracy, train

__all__ = ["train", "build_model", "evaluate_accuracy", "symmetric_label_noise"]

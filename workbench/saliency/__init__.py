"""Attribution (saliency) on captum: one call shape for every method, faithfulness, ground truth, drift.

>>> a = attribute(model, images, method="integrated_gradients", target=labels)   # -> Attribution
>>> a.frame(); a.per_example()                                                   # tidy tables
>>> curve_auc(perturbation_curves(model, a)); completeness_gap(model, a)         # faithfulness
>>> localization(attribute_checkpoints(run, images, target=labels), masks)        # ground truth per checkpoint
>>> drift(attribute_checkpoints([run_a, run_b], images, target=labels))           # agreement across checkpoints
"""
try:
    import captum  # noqa: F401
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError("workbench.saliency is built on captum; install it with "
                      "pip install 'workbench[saliency]'") from err

from .attribute import attribute
from .checkpoints import attribute_checkpoints
from .drift import drift, rank_correlation, topk_overlap
from .faithfulness import completeness_gap, curve_auc, infidelity, perturbation_curves, sensitivity_max
from .groundtruth import localization, mask_mass, pointing_game
from .methods import METHODS, NOISE_TUNNELS, Method, register_method
from .outputs import cosine_to, linear_head, pooled
from .result import CHANNEL_REDUCTIONS, Attribution, feature_map

__all__ = ["attribute", "Attribution", "METHODS", "NOISE_TUNNELS", "Method", "register_method", "feature_map",
           "CHANNEL_REDUCTIONS", "cosine_to", "linear_head", "pooled", "attribute_checkpoints",
           "infidelity", "sensitivity_max", "perturbation_curves", "curve_auc", "completeness_gap",
           "mask_mass", "pointing_game", "localization", "drift", "rank_correlation", "topk_overlap"]

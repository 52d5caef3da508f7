"""Attribution (saliency) on captum: one call shape for every method, faithfulness, ground truth, drift.

>>> import torch
>>> model = torch.nn.Linear(3, 2, bias=False); model.weight.data = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 1.0]])
>>> a = attribute(model, torch.tensor([[1.0, 1.0, 2.0]]), method="integrated_gradients", target=[0])
>>> a.attributions.round(decimals=6).tolist()    # linear model, zero baseline: IG is exactly x * w of class 0
[[1.0, 2.0, 6.0]]

With a model, images, labels, masks and runs of your own — an :class:`Attribution`, its tidy tables,
faithfulness, ground truth per checkpoint, agreement across checkpoints:

>>> a = attribute(model, images, method="integrated_gradients", target=labels)  # doctest: +SKIP
>>> a.frame(); a.per_example()                                                   # doctest: +SKIP
>>> curve_auc(perturbation_curves(model, a)); completeness_gap(model, a)         # doctest: +SKIP
>>> localization(attribute_checkpoints(run, images, target=labels), masks)        # doctest: +SKIP
>>> drift(attribute_checkpoints([run_a, run_b], images, target=labels))           # doctest: +SKIP
"""
try:
    import captum  # noqa: F401
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError("workbench.saliency is built on captum; install it with "
                      "pip install 'workbench[saliency]'") from err

from ._attribute import attribute
from ._checkpoints import attribute_checkpoints
from ._drift import drift, rank_correlation, topk_overlap
from ._faithfulness import completeness_gap, curve_auc, infidelity, perturbation_curves, sensitivity_max
from ._groundtruth import localization, mask_mass, pointing_game
from ._methods import METHODS, NOISE_TUNNELS, Method, register_method
from ._outputs import cosine_to, linear_head, pooled
from ._result import CHANNEL_REDUCTIONS, Attribution, feature_map

__all__ = ["attribute", "Attribution", "METHODS", "NOISE_TUNNELS", "Method", "register_method", "feature_map",
           "CHANNEL_REDUCTIONS", "cosine_to", "linear_head", "pooled", "attribute_checkpoints",
           "infidelity", "sensitivity_max", "perturbation_curves", "curve_auc", "completeness_gap",
           "mask_mass", "pointing_game", "localization", "drift", "rank_correlation", "topk_overlap"]
from ._sanity import FLAG_LEVEL, SIMILARITIES, label_randomization_check, randomization_check, ssim

__all__ += ["randomization_check", "label_randomization_check", "ssim", "SIMILARITIES", "FLAG_LEVEL"]

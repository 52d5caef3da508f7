"""Training-dynamics diagnostics: pure functions of a model (any checkpoint, ``run.load_model(step)``) and
one fixed batch, each returning a tidy DataFrame.

==============================  ===========================================================================
function                        what it measures
==============================  ===========================================================================
:func:`layer_grad_norms`        ‖∂L/∂θ_layer‖₂ per probe point (the trainer's ``grad_norm`` recorder, for any
                                model and batch); :func:`grad_norm_history` reads the recorder over steps
:func:`output_variance`         variance of each layer's output (real tokens only) vs depth
:func:`layer_angular_distance`  (1/π)·arccos of the cosine between consecutive layers' outputs (Gromov et
                                al. 2024), averaged over tokens; :func:`angular_distance` on two arrays
:func:`layer_skip_loss`         loss increase when one Transformer Block / CNN ResBlock is skipped
:func:`hessian_top_eigenvalue`  top Hessian eigenvalue ("sharpness") by power iteration on HVPs
:func:`el2n_scores`             EL2N ‖softmax(f(x)) − onehot(y)‖₂ per example, averaged over seeds
:func:`grand_scores`            GraNd E‖∇_w ℓ(x, y)‖₂ per example, averaged over seeds (torch.func)
:func:`mode_onsets`             the step each eigenmode of a representation turns on (eigenvalue curves over
                                steps, e.g. the ``eig_steps`` recorder); :func:`stepwiseness` how separated
                                the onsets are (Simon et al. 2023)
==============================  ===========================================================================

The loss-based measures take ``loss(model) -> scalar``: :func:`run_loss` builds one from a run's own
objective on a fixed batch (masks of MLM drawn from a fixed seed), :func:`cross_entropy_loss` for a
classifier. :func:`over_checkpoints` applies any of them to every checkpoint of a run::

    from workbench.dynamics import over_checkpoints, layer_skip_loss, run_loss
    table = over_checkpoints(run, lambda m: layer_skip_loss(m, run_loss(run, m)))
"""
from ._common import LAYER_COLUMNS, cross_entropy_loss, objective_loss, over_checkpoints, run_loss
from ._depth import angular_distance, layer_angular_distance, layer_outputs, output_variance
from ._gradients import grad_norm_history, layer_grad_norms
from ._modes import mode_onsets, stepwiseness
from ._scores import el2n, el2n_scores, grand_scores
from ._sharpness import hessian_top_eigenvalue
from ._skip import layer_skip_loss, residual_blocks, skip_block

__all__ = ["layer_grad_norms", "grad_norm_history", "output_variance", "layer_outputs", "angular_distance",
           "layer_angular_distance", "layer_skip_loss", "residual_blocks", "skip_block", "hessian_top_eigenvalue",
           "el2n", "el2n_scores", "grand_scores", "run_loss", "objective_loss", "cross_entropy_loss",
           "over_checkpoints", "LAYER_COLUMNS", "mode_onsets", "stepwiseness"]

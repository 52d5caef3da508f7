"""What transfers in transfer learning: the analyses of Neyshabur, Sedghi & Zhang 2020 ("What is being transferred
in transfer learning?", NeurIPS) as pure functions of networks and data, each returning a tidy DataFrame.

===============================  ==========================================================================
function                         what it measures
===============================  ==========================================================================
:func:`interpolate`              loss / accuracy along ``θ(α) = (1 − α) θ_a + α θ_b`` (linear mode
                                 connectivity, Frankle et al. 2020), BatchNorm statistics recomputed per α
:func:`barrier`                  the barrier height of such a path
:func:`block_shuffle`            images cut into ``b × b`` blocks, the blocks permuted
:func:`shuffle_transfer`         fine-tune accuracy on block-shuffled images, pretrained vs random init
                                 (feature reuse vs low-level statistics, the paper's Fig. 2)
:func:`module_criticality`       accuracy drop when one module is re-initialized or rewound (Zhang, Bengio &
                                 Singer 2019; the paper's Sec. 4)
:func:`module_path`              loss / accuracy as one module moves from its reference to its final weights,
                                 with noise; :func:`path_criticality` the criticality score of Chatterji,
                                 Neyshabur & Sedghi 2020 from it
===============================  ==========================================================================

Fine-tuned networks come from :func:`workbench.train.finetune` (``net, head``)::

    from workbench.train import finetune
    from workbench.mechanics import interpolate, barrier
    pre = run.load_model()
    (n1, h1), (n2, h2) = finetune(pre, ds, seed=1), finetune(pre, ds, seed=2)
    barrier(interpolate(n1, n2, ds, head_a=h1, head_b=h2))   # ~0: one basin
"""
from ._connectivity import METRICS, barrier, interpolate, interpolate_state
from ._criticality import MODES, module_criticality, module_path, path_criticality
from ._shuffle import RANDOM_INIT, block_shuffle, default_block_sizes, shuffle_transfer

__all__ = ["interpolate", "barrier", "interpolate_state", "block_shuffle", "shuffle_transfer", "default_block_sizes",
           "module_criticality", "module_path", "path_criticality", "METRICS", "MODES", "RANDOM_INIT"]

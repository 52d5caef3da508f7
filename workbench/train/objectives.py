"""Pretraining objectives: one small ``nn.Module`` per :data:`~workbench.runs.OBJECTIVES` entry.

The trainer builds one with :func:`make_objective` and calls ``loss, metrics = objective(model, batch)``
every step. Trainable extras (projector, decoder, distillation head) live inside the objective, so the
trainer optimises ``model.parameters()`` plus ``objective.parameters()`` (those with ``requires_grad``)
and checkpoints ``objective.state_dict()`` next to the model. All randomness (views, masks, MLM
corruption, objective initialisation) comes from torch's global RNG, which the trainer reseeds.

Objectives and their losses (``tau`` = ``RunConfig.temperature``; ``z`` = projector output):

``supervised``
    Cross-entropy with ``label_smoothing`` on the model's logits; inputs augmented once when
    ``RunConfig.augment`` is set. Metric ``accuracy`` (against the possibly noisy training labels).
``simclr`` (Chen et al. 2020, "A simple framework for contrastive learning of visual representations",
    ICML, Eq. 1, NT-Xent)
    ``V = views`` augmented views of every example, ``z`` L2-normalised; for anchor ``i`` among the
    ``M = V N`` rows with positives ``P(i)`` (the other views of the same example)::

        l_i = -1/|P(i)| sum_{p in P(i)} log( exp(z_i.z_p / tau) / sum_{a != i} exp(z_i.z_a / tau) )

    averaged over anchors. For ``V = 2`` this is exactly NT-Xent; for ``V > 2`` it is the
    multi-positive ``L_out`` form of Khosla et al. (2020, Eq. 2) with one class per example.
``supcon`` (Khosla et al. 2020, "Supervised contrastive learning", NeurIPS, Eq. 2, ``L^sup_out``)
    The same formula with ``P(i)`` = every other row with the same label. With all labels distinct it
    equals ``simclr``.
``barlow`` (Zbontar et al. 2021, "Barlow Twins", ICML, Eq. 1)
    Each dimension of ``z`` batch-normalised over the batch (mean 0, biased variance 1, ``eps = 1e-5``,
    as ``BatchNorm1d(affine=False)`` in the authors' code); ``C = z1n^T z2n / N``;
    ``L = sum_i (1 - C_ii)^2 + lambda sum_{i != j} C_ij^2`` with ``lambda = 5e-3`` (the paper's value,
    tuned for ``D = 8192``; it is *not* rescaled with ``embed_dim`` — Tsai et al. 2021 suggest
    ``lambda = 1/D`` instead). With ``V > 2`` views the loss is averaged over all view pairs.
``vicreg`` (Bardes et al. 2022, "VICReg", ICLR, Eq. 1-6), as in the authors' implementation:
    ``25 * mse(z1, z2) + 25 * [v(z1) + v(z2)] / 2 + 1 * [c(z1) + c(z2)]`` where ``mse`` averages over
    all ``N x D`` entries, ``v(z) = mean_j relu(1 - sqrt(Var(z_j) + 1e-4))`` (unbiased variance, gamma = 1),
    ``c(z) = sum_{i != j} Cov(z)_ij^2 / D`` (unbiased covariance). The paper's Eq. 6 writes the invariance
    term as a per-sample *sum* over dimensions and the variance term without the 1/2; the weights 25/25/1
    were tuned with the code's normalisation, which is the one used here. View pairs averaged for ``V > 2``.
``mae`` (He et al. 2022, "Masked autoencoders are scalable vision learners", CVPR) — pixel-masking variant
    A fraction ``mask_ratio`` (``round(mask_ratio * P)`` of the ``P`` patches, at least one, chosen
    uniformly per example) of ``p x p`` image patches or length-``p`` signal segments is set to zero;
    the *encoder is the model's own* ``embed`` on the masked input (zeros included), and a small MLP
    decoder maps the embedding back to the full input. Loss: mean squared error over the masked
    entries only (He et al. compute the loss on masked patches; raw, not per-patch-normalised, targets).
    Unlike the original, masked patches are not dropped from the encoder, so it works for CNN, MLP and
    ViT alike. Patch size: the ViT's ``patch``; otherwise ``max(1, round(extent / 8))`` (``extent`` = the
    shorter image side or the signal length), i.e. an 8 x 8 grid / 8 segments.
``autoencoder``
    The same decoder reconstructs the unmasked input from ``embed``; loss = mean squared error over all
    entries. With ``augment`` set the encoder reads the augmented input and the target stays the clean
    one (a denoising autoencoder). (``mae`` with ``augment`` reconstructs the augmented input, as MAE's
    crop/flip augmentation does.)
``mlm`` (Devlin et al. 2019, "BERT", NAACL, Sec. 3.1)
    Of each sequence's maskable tokens (real, non-special: not pad/bos/eos/mask/unk), exactly
    ``round(mask_ratio * n)`` (at least one) are selected uniformly; each selected token is replaced by
    ``<mask>`` with probability 0.8, by a uniformly drawn non-special token with probability 0.1, kept
    with probability 0.1. Loss: cross-entropy of the per-token logits at the selected positions only.
    BERT selects each token independently with probability 0.15; the count here is exact per sequence.
    ``mask_ratio`` is used as given (BERT's 0.15 is not substituted; the RunConfig default is 0.5).
    Needs a ``transformer`` with ``task="lm"`` and ``causal=False``.
``clm``
    Next-token prediction: cross-entropy of logits at position ``t`` against token ``t + 1`` over the
    pairs where both are real tokens (padding never contributes). Needs ``task="lm"``, ``causal=True``.
``distill`` (Sarnthein et al. 2023, "Random teachers are good teachers", ICML)
    A teacher with the model's architecture is built from ``model.spec`` with fresh random weights
    (scaled by ``init_scale`` as the trainer scales the student), given its own head, frozen and run in
    eval mode; it is never updated. Student = the model plus an identically shaped, independently
    initialised head. Both heads are DINO heads (Caron et al. 2021): the projector MLP (``projector``,
    ``projector_depth``; GELU, no BN), a linear bottleneck to ``embed_dim`` with L2 normalisation, and a
    weight-normalised linear layer without bias to ``out_dim = 4096`` units (the paper uses 2048-wide
    hidden layers, a 256-d bottleneck and 65536 units). Loss: ``KL(softmax(t / tau_t) || softmax(s / tau_s))``
    averaged over examples, with ``tau_t = tau_s = 1`` and no centring, as in the authors' released
    random-teacher configuration (dinopl ``configs/cifar10_distillation_v2.json``); this has the same
    gradient as their cross-entropy objective and is 0 when the student matches the teacher.
    ``RunConfig.temperature`` is not used. The student (the model as the trainer initialised it) and the
    teacher are initialised independently; the paper's "locality" variant (student initialised near the
    teacher) is not implemented. Without augmentations one view is used and each student
    output is matched to the teacher's on the same input (the paper's setting); with augmentations,
    ``views`` views are drawn and student view ``i`` is matched to teacher view ``j`` for all ``i != j``
    (DINO's pairing).

``"none"`` (a random-init baseline) has no objective: :func:`make_objective` returns ``None``.

The heads (:func:`make_projector`, :class:`DinoHead`) and :func:`representation` live in
:mod:`workbench.models.heads` (re-exported here), so a checkpoint's backbone and trained head load as one model
with probe points in both: ``run.load_model(step, head=True)`` (:class:`~workbench.models.heads.WithHead`).
"""
from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..models import HFModel, device_of, model_inputs
from ..models.heads import DINO_OUT_DIM, DinoHead, make_projector, representation
from ..runs import CONTRASTIVE, OBJECTIVES, RunConfig
from .augment import make_augment

__all__ = ["Batch", "Objective", "make_objective", "representation", "representation_dim", "make_projector",
           "info_nce_loss", "barlow_twins_loss", "vicreg_loss", "patch_mask", "mlm_corrupt", "distill_kl",
           "Supervised", "SimCLR", "SupCon", "BarlowTwins", "VICReg", "MAE", "Autoencoder", "MLM", "CLM",
           "Distill", "OBJECTIVE_CLASSES"]

Metrics = dict[str, "float | torch.Tensor"]


@dataclass
class Batch:
    """One training batch as the trainer hands it to an objective."""

    inputs: torch.Tensor                    # on device; float images/signals/vectors or long tokens
    labels: torch.Tensor | None             # (possibly noisy) training labels, long, on device
    attention_mask: torch.Tensor | None     # [N, T] 1 = real token, for token data
    index: np.ndarray                       # row indices into the train split


# ----------------------------------------------------------------------------------------------- model access
def _is_token_model(model: nn.Module) -> bool:
    return callable(getattr(type(model), "hidden", None)) and callable(getattr(type(model), "pooled", None))


def _call(model: nn.Module, batch_inputs: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    return model(batch_inputs) if attention_mask is None else model(batch_inputs, attention_mask=attention_mask)


def _example_inputs(dataset, model: nn.Module, n: int = 2) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The first ``n`` training inputs as the model reads them (raw text tokenized by ``model.tokenize``)."""
    args, kwargs = model_inputs(model, dataset["train"], slice(0, n), device_of(model))
    return args[0], kwargs.get("attention_mask")


@torch.no_grad()
def representation_dim(model: nn.Module, dataset) -> int:
    """Width ``D`` of :func:`representation` for ``model`` on ``dataset`` (one eval-mode pass on two rows)."""
    was = model.training
    model.eval()
    try:
        x, mask = _example_inputs(dataset, model)
        return int(representation(model, x, mask).shape[-1])
    finally:
        model.train(was)


# ----------------------------------------------------------------------------------------------- heads
def _projector_width(kind: str, in_dim: int, out_dim: int) -> int:
    return in_dim if kind == "none" else out_dim


# ----------------------------------------------------------------------------------------------- loss formulas
def info_nce_loss(z: torch.Tensor, groups: torch.Tensor, temperature: float) -> tuple[torch.Tensor, Metrics]:
    """Multi-positive InfoNCE over rows of ``z`` (SupCon ``L_out``; NT-Xent when every group has 2 rows).

    Parameters
    ----------
    z : [M, D] embeddings (L2-normalised here).
    groups : [M] integer ids; rows with equal ids are positives of each other.
    temperature : tau > 0.

    Returns
    -------
    loss : scalar, ``mean_i -1/|P(i)| sum_{p in P(i)} log softmax_{a != i}(z_i.z_a / tau)_p`` over anchors
        with at least one positive (an error if none has).
    metrics : ``pos_sim`` / ``neg_sim``, mean cosine similarity of positive / negative pairs.
    """
    if z.dim() != 2 or groups.shape != (len(z),):
        raise ValueError(f"z must be [M, D] and groups [M], got {tuple(z.shape)} and {tuple(groups.shape)}")
    zn = F.normalize(z, dim=1)
    cos = zn @ zn.T
    eye = torch.eye(len(z), dtype=torch.bool, device=z.device)
    logits = (cos / temperature).masked_fill(eye, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    pos = (groups[:, None] == groups[None, :]) & ~eye
    n_pos = pos.sum(1)
    has = n_pos > 0
    if not bool(has.any()):
        raise ValueError("no anchor has a positive (every group holds one row); contrastive learning needs "
                         "at least two views per example (views >= 2)")
    per_anchor = -(log_prob.masked_fill(~pos, 0.0)).sum(1) / n_pos.clamp(min=1)
    loss = per_anchor[has].mean()
    neg = ~pos & ~eye
    cos = cos.detach()
    metrics = {"pos_sim": (cos * pos).sum() / pos.sum().clamp(min=1),
               "neg_sim": (cos * neg).sum() / neg.sum().clamp(min=1)}
    return loss, metrics


def _batch_standardise(z: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    mean = z.mean(0, keepdim=True)
    var = z.var(0, unbiased=False, keepdim=True)
    return (z - mean) / torch.sqrt(var + eps)


def _off_diagonal(m: torch.Tensor) -> torch.Tensor:
    n = m.shape[0]
    return m.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


def _check_pair(z1: torch.Tensor, z2: torch.Tensor, what: str) -> None:
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(f"{what}: z1 and z2 must be [N, D] of equal shape, got {tuple(z1.shape)}, {tuple(z2.shape)}")
    if len(z1) < 2:
        raise ValueError(f"{what} needs at least 2 examples per batch (it normalises over the batch); "
                         "raise batch_size")


def barlow_twins_loss(z1: torch.Tensor, z2: torch.Tensor, lambda_offdiag: float = 5e-3) -> tuple[torch.Tensor, Metrics]:
    """Barlow Twins (Zbontar et al. 2021, Eq. 1) on two views ``[N, D]``.

    ``C = bn(z1)^T bn(z2) / N`` with ``bn`` = per-dimension standardisation over the batch (biased variance,
    ``eps = 1e-5``); ``loss = sum_i (1 - C_ii)^2 + lambda_offdiag * sum_{i != j} C_ij^2``.
    Metrics: ``on_diag`` (first sum), ``off_diag`` (second sum, unweighted).
    """
    _check_pair(z1, z2, "barlow_twins_loss")
    c = _batch_standardise(z1).T @ _batch_standardise(z2) / len(z1)
    on = (1 - torch.diagonal(c)).pow(2).sum()
    off = _off_diagonal(c).pow(2).sum() if c.shape[0] > 1 else c.new_zeros(())
    return on + lambda_offdiag * off, {"on_diag": on.detach(), "off_diag": off.detach()}


def vicreg_loss(z1: torch.Tensor, z2: torch.Tensor, sim_weight: float = 25.0, var_weight: float = 25.0,
                cov_weight: float = 1.0, gamma: float = 1.0, eps: float = 1e-4) -> tuple[torch.Tensor, Metrics]:
    """VICReg (Bardes et al. 2022) on two views ``[N, D]``, normalised as in the authors' code.

    ``invariance = mean over N x D of (z1 - z2)^2``;
    ``variance = [mean_j relu(gamma - sqrt(Var z1_j + eps)) + (same for z2)] / 2`` (unbiased Var);
    ``covariance = [sum_{i != j} Cov(z1)_ij^2 + sum_{i != j} Cov(z2)_ij^2] / D`` (unbiased Cov);
    ``loss = sim_weight * invariance + var_weight * variance + cov_weight * covariance``.
    Metrics: the three unweighted terms.
    """
    _check_pair(z1, z2, "vicreg_loss")
    n, d = z1.shape
    inv = F.mse_loss(z1, z2)
    a, b = z1 - z1.mean(0), z2 - z2.mean(0)
    std_a, std_b = torch.sqrt(a.var(0) + eps), torch.sqrt(b.var(0) + eps)
    var = (F.relu(gamma - std_a).mean() + F.relu(gamma - std_b).mean()) / 2
    cov_a, cov_b = a.T @ a / (n - 1), b.T @ b / (n - 1)
    cov = (_off_diagonal(cov_a).pow(2).sum() + _off_diagonal(cov_b).pow(2).sum()) / d if d > 1 else a.new_zeros(())
    loss = sim_weight * inv + var_weight * var + cov_weight * cov
    return loss, {"invariance": inv.detach(), "variance": var.detach(), "covariance": cov.detach()}


def distill_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, student_temperature: float = 1.0,
               teacher_temperature: float = 1.0) -> torch.Tensor:
    """``mean_n KL(softmax(t_n / tau_t) || softmax(s_n / tau_s))``; the teacher side carries no gradient.

    Equal to the DINO cross-entropy ``-sum p_t log p_s`` minus the (constant) teacher entropy.
    """
    log_t = F.log_softmax(teacher_logits.detach() / teacher_temperature, dim=-1)
    log_s = F.log_softmax(student_logits / student_temperature, dim=-1)
    return (log_t.exp() * (log_t - log_s)).sum(-1).mean()


def _round_half_up(x: float) -> int:
    return math.floor(x + 0.5)


def patch_mask(n: int, spatial: tuple[int, ...], patch: int, ratio: float,
               device: torch.device | str = "cpu") -> torch.Tensor:
    """Boolean ``[n, *spatial]`` mask (True = masked) of ``round(ratio * P)`` (>= 1) random patches per row.

    ``spatial`` is ``(H, W)`` (``patch x patch`` squares) or ``(L,)`` (segments of ``patch``); the grid has
    ``P = prod(ceil(s / patch))`` cells, edge cells are cropped. Cells are chosen uniformly without
    replacement per example (ranks of ``torch.rand``), as MAE's per-sample shuffling.
    """
    grid = [math.ceil(s / patch) for s in spatial]
    cells = math.prod(grid)
    k = min(cells, max(1, _round_half_up(ratio * cells)))
    ranks = torch.rand(n, cells, device=device).argsort(1).argsort(1)
    m = (ranks < k).view(n, *grid)
    for axis, size in enumerate(spatial, start=1):
        m = m.repeat_interleave(patch, dim=axis).narrow(axis, 0, size)
    return m


def mlm_corrupt(tokens: torch.Tensor, attention_mask: torch.Tensor | None, ratio: float, mask_id: int | None,
                replace_ids: torch.Tensor, special_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT-style corruption. Returns ``(corrupted tokens, selected [N, T] bool)``.

    Maskable = real (``attention_mask == 1``) and not in ``special_ids``. Per row, exactly
    ``round(ratio * n_maskable)`` (at least 1 when any) positions are selected uniformly; of those, a draw
    ``u ~ U(0, 1)`` replaces the token by ``mask_id`` if ``u < 0.8``, by a uniform draw from
    ``replace_ids`` if ``0.8 <= u < 0.9``, and keeps it otherwise. With ``mask_id=None`` (a vocabulary
    without a mask token) the ``u < 0.8`` share is also replaced by random tokens.
    """
    real = torch.ones_like(tokens, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    maskable = real & ~torch.isin(tokens, special_ids)
    n_maskable = maskable.sum(1)
    k = torch.floor(ratio * n_maskable.to(torch.float64) + 0.5).long().clamp(min=1)
    k = torch.minimum(k, n_maskable)
    scores = torch.rand(tokens.shape, device=tokens.device).masked_fill(~maskable, 2.0)
    ranks = scores.argsort(1).argsort(1)
    selected = (ranks < k[:, None]) & maskable
    u = torch.rand(tokens.shape, device=tokens.device)
    random_tokens = replace_ids[torch.randint(len(replace_ids), tokens.shape, device=tokens.device)]
    out = tokens.clone()
    to_random = selected & (u >= 0.8) & (u < 0.9)
    if mask_id is None:
        to_random = to_random | (selected & (u < 0.8))
    else:
        out = out.masked_fill(selected & (u < 0.8), mask_id)
    out = torch.where(to_random, random_tokens, out)
    return out, selected


# ----------------------------------------------------------------------------------------------- base class
class Objective(nn.Module):
    """Base class: ``forward(model, batch) -> (scalar loss, metrics)``.

    Attributes: ``name`` (the RunConfig objective), ``needs_labels``, ``kind`` (dataset kind).
    """

    name: str = ""
    needs_labels: bool = False
    kinds: tuple[str, ...] = ("image", "signal", "vectors", "tokens")
    needs_augment: bool = False

    def __init__(self, config: RunConfig, dataset, model: nn.Module):
        super().__init__()
        self.kind = dataset.kind
        self.views = config.views
        self.temperature = float(config.temperature)
        self.augment = (make_augment(config.augment, config.augment_strength, kind=self.kind)
                        if config.augment else None)

    def _augmented_views(self, x: torch.Tensor, n_views: int) -> torch.Tensor:
        """``[n_views * N, ...]``: view-major stack of independent augmentations of ``x``."""
        return torch.cat([self.augment(x) if self.augment is not None else x for _ in range(n_views)])

    def forward(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, Metrics]:  # pragma: no cover
        raise NotImplementedError


def _need_labels(batch: Batch, name: str) -> torch.Tensor:
    if batch.labels is None:
        raise ValueError(f"objective={name!r} needs labels but the batch has none")
    return batch.labels


# ----------------------------------------------------------------------------------------------- supervised
class Supervised(Objective):
    """Cross-entropy (``label_smoothing``) on the model's logits; one augmentation when configured."""

    name, needs_labels = "supervised", True
    kinds = ("image", "signal", "vectors", "tokens", "text")

    def __init__(self, config, dataset, model):
        super().__init__(config, dataset, model)
        self.label_smoothing = float(config.label_smoothing)

    def forward(self, model, batch):
        y = _need_labels(batch, self.name)
        x = self.augment(batch.inputs) if self.augment is not None else batch.inputs
        logits = _call(model, x, batch.attention_mask)
        loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        return loss, {"accuracy": (logits.detach().argmax(1) == y).float().mean()}


# ----------------------------------------------------------------------------------------------- joint embedding
class _JointEmbedding(Objective):
    """``views`` augmented views -> representation -> projector -> loss."""

    kinds = ("image", "signal", "vectors")
    needs_augment = True

    def __init__(self, config, dataset, model):
        super().__init__(config, dataset, model)
        in_dim = representation_dim(model, dataset)
        self.projector = make_projector(config.projector, in_dim, config.embed_dim, config.projector_depth)
        self.projector.to(device_of(model))
        self.out_dim = _projector_width(config.projector, in_dim, config.embed_dim)

    def _embed_views(self, model, batch) -> torch.Tensor:
        n = len(batch.inputs)
        if n < 2:
            raise ValueError(f"objective={self.name!r} needs at least 2 examples per batch; raise batch_size")
        x = self._augmented_views(batch.inputs, self.views)
        return self.projector(representation(model, x)).view(self.views, n, -1)


class SimCLR(_JointEmbedding):
    """NT-Xent / multi-positive InfoNCE over augmented views (positives = views of the same example)."""

    name = "simclr"

    def forward(self, model, batch):
        z = self._embed_views(model, batch)
        n = z.shape[1]
        groups = torch.arange(n, device=z.device).repeat(self.views)
        return info_nce_loss(z.reshape(self.views * n, -1), groups, self.temperature)


class SupCon(_JointEmbedding):
    """Supervised contrastive loss (positives = every view of every example with the same label)."""

    name, needs_labels = "supcon", True

    def forward(self, model, batch):
        y = _need_labels(batch, self.name)
        z = self._embed_views(model, batch)
        return info_nce_loss(z.reshape(self.views * z.shape[1], -1), y.repeat(self.views), self.temperature)


def _pairwise(loss_fn, z: torch.Tensor) -> tuple[torch.Tensor, Metrics]:
    """Average ``loss_fn(z[i], z[j])`` (and its metrics) over all view pairs ``i < j``."""
    pairs = [(i, j) for i in range(len(z)) for j in range(i + 1, len(z))]
    total, sums = 0.0, {}
    for i, j in pairs:
        loss, metrics = loss_fn(z[i], z[j])
        total = total + loss
        for k, v in metrics.items():
            sums[k] = sums.get(k, 0.0) + v
    return total / len(pairs), {k: v / len(pairs) for k, v in sums.items()}


class BarlowTwins(_JointEmbedding):
    """Barlow Twins redundancy reduction between views, ``lambda_offdiag = 5e-3``."""

    name = "barlow"
    lambda_offdiag = 5e-3

    def forward(self, model, batch):
        return _pairwise(lambda a, b: barlow_twins_loss(a, b, self.lambda_offdiag), self._embed_views(model, batch))


class VICReg(_JointEmbedding):
    """VICReg with the paper's 25 / 25 / 1 weights and gamma = 1."""

    name = "vicreg"
    weights = (25.0, 25.0, 1.0)

    def forward(self, model, batch):
        s, v, c = self.weights
        return _pairwise(lambda a, b: vicreg_loss(a, b, s, v, c), self._embed_views(model, batch))


# ----------------------------------------------------------------------------------------------- reconstruction
class _Reconstruction(Objective):
    """``embed`` -> MLP decoder (Linear, GELU, Linear; hidden 256) -> full input."""

    kinds = ("image", "signal", "vectors")
    decoder_hidden = 256

    def __init__(self, config, dataset, model):
        super().__init__(config, dataset, model)
        self.input_shape = tuple(int(s) for s in dataset.input_shape)
        in_dim = representation_dim(model, dataset)
        hidden = max(self.decoder_hidden, in_dim)
        self.decoder = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(),
                                     nn.Linear(hidden, math.prod(self.input_shape))).to(device_of(model))

    def reconstruct(self, model, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(representation(model, x)).view(len(x), *self.input_shape)


class Autoencoder(_Reconstruction):
    """Reconstruct the (optionally augmented) input from ``embed``; MSE over every entry."""

    name = "autoencoder"

    def forward(self, model, batch):
        x = batch.inputs
        source = self.augment(x) if self.augment is not None else x
        return F.mse_loss(self.reconstruct(model, source), x), {}


class MAE(_Reconstruction):
    """Pixel-masking masked autoencoder: zero ``mask_ratio`` of the patches, MSE on masked entries only."""

    name = "mae"
    kinds = ("image", "signal")

    def __init__(self, config, dataset, model):
        super().__init__(config, dataset, model)
        self.mask_ratio = float(config.mask_ratio)
        spatial = self.input_shape[1:] if len(self.input_shape) > 1 else self.input_shape
        self.spatial = tuple(spatial)
        spec = getattr(model, "spec", {}) or {}
        vit_patch = spec.get("options", {}).get("patch") if spec.get("name") == "vit" else None
        self.patch = int(vit_patch) if vit_patch else max(1, _round_half_up(min(self.spatial) / 8))

    def forward(self, model, batch):
        x = batch.inputs
        source = self.augment(x) if self.augment is not None else x
        m = patch_mask(len(x), self.spatial, self.patch, self.mask_ratio, x.device)  # [N, *spatial]
        m = m[:, None] if x.dim() == len(self.spatial) + 2 else m  # broadcast over channels
        m = m.expand_as(x)
        recon = self.reconstruct(model, source.masked_fill(m, 0.0))
        err = (recon - source).pow(2)
        loss = err[m].mean()
        return loss, {"mse_visible": err.detach()[~m].mean() if bool((~m).any()) else err.new_zeros(())}


# ----------------------------------------------------------------------------------------------- language
def _token_model_check(model: nn.Module, name: str, causal: bool) -> None:
    spec = getattr(model, "spec", {}) or {}
    opts = spec.get("options", {})
    fix = f'model="transformer", model_options={{"task": "lm", "causal": {causal}}}'
    if spec.get("name") != "transformer" or not _is_token_model(model):
        raise ValueError(f"objective={name!r} needs a token language model; got {type(model).__name__}. Use {fix}")
    if opts.get("task") != "lm":
        raise ValueError(f"objective={name!r} needs per-token logits but the transformer was built with "
                         f"task={opts.get('task')!r}; use {fix}")
    if bool(opts.get("causal")) != causal:
        what = "sees only the past (causal=True)" if not causal else "sees the whole sequence (causal=False)"
        raise ValueError(f"objective={name!r} needs causal={causal}, but this transformer {what}; use {fix}")


def _special_ids(dataset) -> list[int]:
    vocab = list(dataset.vocab or [])
    opts = dataset.options or {}
    ids = {int(opts[k]) for k in ("pad_id", "bos_id", "eos_id", "mask_id", "unk_id", "cls_id", "sep_id")
           if opts.get(k) is not None}
    ids |= {vocab.index(t) for t in opts.get("special_tokens", []) if t in vocab}
    return sorted(ids)


def _mask_id(dataset) -> int | None:
    opts = dataset.options or {}
    if opts.get("mask_id") is not None:
        return int(opts["mask_id"])
    vocab = list(dataset.vocab or [])
    for token in ("<mask>", "[MASK]", "<MASK>"):
        if token in vocab:
            return vocab.index(token)
    return None


class MLM(Objective):
    """Masked language modelling (BERT 80/10/10) on a bidirectional token Transformer."""

    name, kinds = "mlm", ("tokens",)

    def __init__(self, config, dataset, model):
        super().__init__(config, dataset, model)
        self.mask_ratio = float(config.mask_ratio)
        vocab_size = int(model.head.out_features)
        special = _special_ids(dataset)
        self.mask_id = _mask_id(dataset)
        if self.mask_id is None:
            warnings.warn(f"dataset {dataset.name!r} has no mask token (options['mask_id'] or '<mask>'/'[MASK]' "
                          "in its vocab); MLM replaces the 80% share by random tokens instead", stacklevel=3)
        replace = sorted(set(range(vocab_size)) - set(special))
        device = device_of(model)
        self.register_buffer("special_ids", torch.tensor(special, dtype=torch.long, device=device), persistent=False)
        self.register_buffer("replace_ids", torch.tensor(replace, dtype=torch.long, device=device), persistent=False)

    def forward(self, model, batch):
        tokens, am = batch.inputs, batch.attention_mask
        corrupted, selected = mlm_corrupt(tokens, am, self.mask_ratio, self.mask_id, self.replace_ids,
                                          self.special_ids)
        if not bool(selected.any()):
            raise ValueError("no maskable token in this batch (every token is padding or special)")
        logits = _call(model, corrupted, am)
        picked, target = logits[selected], tokens[selected]
        loss = F.cross_entropy(picked, target)
        return loss, {"accuracy": (picked.detach().argmax(-1) == target).float().mean()}


class CLM(Objective):
    """Causal language modelling: next-token cross-entropy over real (non-padding) token pairs."""

    name, kinds = "clm", ("tokens",)

    def forward(self, model, batch):
        tokens, am = batch.inputs, batch.attention_mask
        logits = _call(model, tokens, am)[:, :-1]
        target = tokens[:, 1:]
        valid = (torch.ones_like(target, dtype=torch.bool) if am is None
                 else am[:, 1:].bool() & am[:, :-1].bool())
        if not bool(valid.any()):
            raise ValueError("no (token, next token) pair of real tokens in this batch")
        picked, target = logits[valid], target[valid]
        loss = F.cross_entropy(picked, target)
        return loss, {"accuracy": (picked.detach().argmax(-1) == target).float().mean()}


# ----------------------------------------------------------------------------------------------- distillation
def _fresh_copy(model: nn.Module, init_scale: float) -> nn.Module:
    """A new model of the same architecture with fresh random weights from the global RNG."""
    spec = getattr(model, "spec", None)
    if spec is not None:
        from .. import models

        fresh = models.build(**copy.deepcopy(spec))
    else:
        fresh = copy.deepcopy(model)
        for m in fresh.modules():
            if m is not fresh and hasattr(m, "reset_parameters"):
                m.reset_parameters()
    if init_scale != 1.0:  # as the trainer scales the student: every weight matrix / kernel
        with torch.no_grad():
            for p in fresh.parameters():
                if p.dim() >= 2:
                    p.mul_(init_scale)
    return fresh.to(device_of(model))


class Distill(Objective):
    """Self-distillation from a frozen random teacher (Sarnthein et al. 2023); see the module docstring."""

    name = "distill"
    out_dim = DINO_OUT_DIM
    student_temperature = 1.0
    teacher_temperature = 1.0

    def __init__(self, config, dataset, model):
        super().__init__(config, dataset, model)
        in_dim = representation_dim(model, dataset)
        device = device_of(model)
        self.head = DinoHead(in_dim, config.projector, config.projector_depth, config.embed_dim,
                             self.out_dim).to(device)
        self.teacher = _fresh_copy(model, config.init_scale)
        self.teacher_head = DinoHead(in_dim, config.projector, config.projector_depth, config.embed_dim,
                                     self.out_dim).to(device)
        for module in (self.teacher, self.teacher_head):
            module.requires_grad_(False)
            module.eval()
        self.n_views = config.views if self.augment is not None else 1

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # the teacher is frozen: no dropout, no batch-statistics updates
        self.teacher_head.eval()
        return self

    def forward(self, model, batch):
        n = len(batch.inputs)
        am = batch.attention_mask
        x = self._augmented_views(batch.inputs, self.n_views) if self.augment is not None else batch.inputs
        am_v = None if am is None else am.repeat(self.n_views, 1)
        student = self.head(representation(model, x, am_v)).view(self.n_views, n, -1)
        with torch.no_grad():
            self.teacher.eval()
            self.teacher_head.eval()
            teacher = self.teacher_head(representation(self.teacher, x, am_v)).view(self.n_views, n, -1)
        if self.n_views == 1:
            pairs = [(0, 0)]
        else:
            pairs = [(i, j) for i in range(self.n_views) for j in range(self.n_views) if i != j]
        loss = sum(distill_kl(student[i], teacher[j], self.student_temperature, self.teacher_temperature)
                   for i, j in pairs) / len(pairs)
        with torch.no_grad():
            def entropy(logits, tau):
                logp = F.log_softmax(logits / tau, dim=-1)
                return -(logp.exp() * logp).sum(-1).mean()
            metrics = {"teacher_entropy": entropy(teacher, self.teacher_temperature),
                       "student_entropy": entropy(student.detach(), self.student_temperature)}
        return loss, metrics


# ----------------------------------------------------------------------------------------------- factory
OBJECTIVE_CLASSES: dict[str, type[Objective]] = {
    "supervised": Supervised, "simclr": SimCLR, "supcon": SupCon, "barlow": BarlowTwins, "vicreg": VICReg,
    "mae": MAE, "autoencoder": Autoencoder, "mlm": MLM, "clm": CLM, "distill": Distill}
assert set(OBJECTIVE_CLASSES) | {"none"} == set(OBJECTIVES)

_KIND_HINT = {
    "mlm": "masked language modelling needs token data (e.g. dataset='tiny-language')",
    "clm": "causal language modelling needs token data (e.g. dataset='tiny-language')",
    "mae": "masked autoencoding masks image patches or signal segments; for token data use objective='mlm'",
    "autoencoder": "reconstruction needs float inputs; for token data use objective='mlm' or 'clm'",
}


def make_objective(config: RunConfig, dataset, model: nn.Module) -> Objective | None:
    """The :class:`Objective` for ``config.objective`` (``None`` for ``"none"``), checked against the data
    and model, with its extra modules on the model's device.

    Raises
    ------
    ValueError
        The objective cannot apply: wrong data kind (``mlm``/``clm`` on images, ``mae`` on tokens, joint
        embedding objectives on tokens), labels missing (``supervised``/``supcon``), no augmentation for a
        view-based objective, ``mask_ratio == 0`` for ``mae``/``mlm``, a token model that is not an LM of the
        right causality, or a supervised Transformer built with ``task="lm"``.
    """
    config = RunConfig.from_dict(config)
    name = config.objective
    if name == "none":
        return None
    cls = OBJECTIVE_CLASSES[name]
    kind = dataset.kind
    if kind not in cls.kinds:
        hint = _KIND_HINT.get(name) or ("it trains on augmented views and augmentations exist for images, "
                                        "signals and vectors only" if name in CONTRASTIVE else "")
        raise ValueError(f"objective={name!r} does not apply to {kind} data (dataset {dataset.name!r}): {hint}; "
                         f"it supports {list(cls.kinds)}")
    if config.augment and kind in ("tokens", "text"):
        raise ValueError(f"augment={list(config.augment)} but dataset {dataset.name!r} holds {kind}; "
                         "augmentations exist for images, signals and vectors only — set augment=()")
    if cls.needs_labels and dataset["train"].labels is None:
        raise ValueError(f"objective={name!r} needs class labels but dataset {dataset.name!r} has none; "
                         f"use an unsupervised objective (e.g. {'simclr' if name == 'supcon' else 'autoencoder'})")
    if cls.needs_augment and not config.augment:
        raise ValueError(f"objective={name!r} compares augmented views, but augment is empty (every view would "
                         "be identical); set e.g. augment=('crop', 'flip', 'color') for images or "
                         "('crop', 'noise', 'mask') for signals, ('noise', 'mask') for vectors")
    if name in ("mae", "mlm") and config.mask_ratio <= 0:
        raise ValueError(f"objective={name!r} needs mask_ratio > 0 (typical: 0.75 for mae, 0.15 for mlm); "
                         "for plain reconstruction use objective='autoencoder'")
    if name in ("mlm", "clm"):
        _token_model_check(model, name, causal=(name == "clm"))
    if name == "supervised" and isinstance(model, HFModel):
        raise ValueError("objective='supervised' trains the model's own class logits, but a Hugging Face model "
                         "(HFModel) outputs hidden states [N, T, D] and has no class head; fine-tune it on a "
                         "labelled task with workbench.train.evaluate(run, methods=['finetune']) (a linear head on "
                         "its mean-pooled representation) after RunStore.import_model(directory, dataset=...)")
    if name == "supervised" and _is_token_model(model):
        task = (getattr(model, "spec", {}) or {}).get("options", {}).get("task")
        if task == "lm":
            raise ValueError("objective='supervised' needs sequence logits but the transformer was built with "
                             "task='lm'; use model_options={'task': 'classify'} or objective='mlm'/'clm'")
    if name in ("mae", "autoencoder") or (name in CONTRASTIVE and name != "distill"):
        embed = getattr(model, "embed", None)
        if _is_token_model(model) or embed is None or isinstance(embed, nn.Module):
            raise ValueError(f"objective={name!r} needs a model with .embed(x) (mlp, cnn or vit); "
                             f"got {type(model).__name__}")
    return cls(config, dataset, model)

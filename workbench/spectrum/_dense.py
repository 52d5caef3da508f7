"""Dense representation Structure Estimator (DSE) of patch / token features.

Source: Dai, Xu, Wen, Liu & Huang 2025, "Exploring structural degradation in dense representations for
self-supervised learning", NeurIPS (arXiv:2510.17299), and the authors' code
(github.com/EldercatSAM/SSL-Degradation, ``estimator.py: compute_DSE``). The paper motivates DSE by an
error-rate decomposition: a dense (per-patch) linear probe does well when pseudo-classes of patches are
far apart relative to their spread (*class relevance*) and the features use many dimensions
(*effective dimensionality*)::

    DSE = M_inter - M_intra + lambda * M_dim,    M_intra = (M_intra_image + M_intra_batch) / 2

What follows is our re-implementation of the authors' ``compute_DSE`` (read, not copied); the pieces
marked *ours* are choices where the code left room:

* Tokens are L2-normalized first (``normalize=True``, the setting of the authors' README command).
  ``a`` = mean over all tokens of ``||z - zbar||`` (``zbar`` = mean token) sets the scale of every
  distance term below.
* Pseudo-classes come from k-means (or from given ``labels``). *Local*: the tokens of each image are
  split into ``n_local_clusters`` (3) clusters. *Global*: consecutive groups of ``images_per_group`` (8)
  images are pooled and split into ``n_clusters`` (24) clusters.
* Cluster radius of a cluster ``X_c`` with ``n_c >= 2`` tokens: nuclear norm of the centered cluster
  over a size factor, ``||X_c - mean||_* / sqrt(max(n_c - 1, D))``.
* ``M_intra_image`` = mean over images of the mean radius of its local clusters, ``/ a``;
  ``M_intra_batch`` = mean radius over all global clusters (all groups pooled), ``/ a``.
* ``M_inter`` = mean over groups of the mean, over the group's tokens, of the distance from a token to
  the nearest mean of *another* global cluster, ``/ a``. *Ours*: cluster means of the final partition
  (the authors use the k-means centroids, identical at convergence; empty clusters are ignored).
* ``M_dim``: tokens are shuffled within each image; for each position ``t`` the [B, D] matrix of the
  ``t``-th shuffled token of every image gets the RankMe-style effective rank
  ``exp(-sum p log p) / min(B, D)`` with ``p = sigma / sum sigma + 1e-12`` (uncentered singular values);
  ``M_dim`` is its mean over positions. So ``M_dim`` in ``(0, 1]``: across-image diversity of tokens.
  *Ours*: with unequal token counts only the first ``min_b T_b`` shuffled tokens of each image are used.
* ``lambda``: the paper sets it by balancing the standard deviations of the two terms across the
  checkpoints being compared (authors' README: "standard deviation normalization"); ``compute_DSE`` uses
  1, our default. To follow the paper, compute the components for every checkpoint and recombine
  ``m_inter - m_intra + lam * m_dim`` with ``lam = std(m_inter - m_intra) / std(m_dim)`` across
  checkpoints (our reading of that normalization; :meth:`DSEResult.with_lambda` does the recombination).
* *Ours*: k-means is k-means++ seeding (squared-distance sampling) plus up to ``kmeans_iters`` Lloyd steps
  with a fixed ``seed`` (the authors' seeding samples proportionally to the distance, not its square), run
  batched over images/groups. Shuffling and seeding use ``seed``, so results are reproducible on one
  device; a different random partition moves DSE by the k-means variance.

Higher DSE = better expected dense-probe performance (used to pick checkpoints; only differences between
checkpoints of one run/model are meaningful). All terms are invariant to a global rescaling and to
orthogonal transforms of the features.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch

from .._validation import Data, Flag, Interval, as_2d_tensor, check_labels, check_positive_int, declare
from ._moments import _clip_gram_eigenvalues

__all__ = ["dse", "DSEResult"]

_EPS = float(torch.finfo(torch.float64).eps)
_BUDGET = 8_000_000  # float64 elements per batched block


@dataclass(frozen=True)
class DSEResult:
    """Components and value of the Dense representation Structure Estimator (see :func:`dse`)."""

    dse: float
    m_inter: float
    m_intra: float
    m_intra_image: float
    m_intra_batch: float
    m_dim: float
    lam: float
    n_images: int
    n_tokens: int

    def with_lambda(self, lam: float) -> DSEResult:
        """The same components recombined as ``m_inter - m_intra + lam * m_dim``."""
        lam = float(lam)
        return replace(self, lam=lam, dse=self.m_inter - self.m_intra + lam * self.m_dim)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


# ------------------------------------------------------------------------------------------ helpers
def _singular_values_batched(mats: torch.Tensor) -> torch.Tensor:
    """Singular values [K, min(n, D)] of a batch [K, n, D] via the Gram matrix of the smaller side.

    Eigenvalues at the rounding-noise level (e.g. from zero padding rows) are set to 0 before the square
    root (see :mod:`workbench.spectrum._moments` for the trade-off).
    """
    n, d = mats.shape[-2:]
    gram = mats @ mats.mT if n <= d else mats.mT @ mats
    return _clip_gram_eigenvalues(torch.linalg.eigvalsh(gram).flip(-1), n, d).sqrt()


def _cluster_radii(x: torch.Tensor, cid: torch.Tensor, n_clusters: int) -> tuple[torch.Tensor, np.ndarray]:
    """Radius ``||X_c - mean_c||_* / sqrt(max(n_c - 1, D))`` of every cluster id in ``0..n_clusters-1``.

    Returns the radii (0 where ``n_c < 2``) and the cluster sizes (numpy). Clusters are zero-padded to a
    common length within blocks and decomposed in batches (zero rows do not change singular values).
    """
    m, d = x.shape
    counts_t = torch.bincount(cid, minlength=n_clusters)
    counts = counts_t.cpu().numpy()
    sums = torch.zeros((n_clusters, d), dtype=x.dtype, device=x.device).index_add_(0, cid, x)
    means = sums / counts_t.clamp_min(1).to(x.dtype)[:, None]
    xc = x - means[cid]
    order = torch.argsort(cid, stable=True)
    cid_sorted = cid[order]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    starts_t = torch.as_tensor(starts, device=x.device)
    pos = torch.arange(m, device=x.device) - starts_t[cid_sorted]
    xs = xc[order]
    nuclear = torch.zeros(n_clusters, dtype=x.dtype, device=x.device)
    a = 0
    while a < n_clusters:
        b, n_max = a, 0
        while b < n_clusters:
            cand = max(n_max, int(counts[b]), 1)
            if b > a and (b - a + 1) * cand * max(d, cand) > _BUDGET:
                break
            n_max, b = cand, b + 1
        lo, hi = int(starts[a]), int(starts[b - 1] + counts[b - 1])
        if hi > lo:
            padded = torch.zeros((b - a, n_max, d), dtype=x.dtype, device=x.device)
            padded[cid_sorted[lo:hi] - a, pos[lo:hi]] = xs[lo:hi]
            nuclear[a:b] = _singular_values_batched(padded).sum(dim=-1)
        a = b
    size = torch.as_tensor(np.maximum(counts - 1, d), dtype=x.dtype, device=x.device).sqrt()
    radii = torch.where(counts_t >= 2, nuclear / size, torch.zeros_like(nuclear))
    return radii, counts


def _kmeans_batched(x: torch.Tensor, k: int, iters: int, gen: torch.Generator) -> torch.Tensor:
    """k-means++ seeding + Lloyd iterations on each of ``G`` point sets [G, n, D]; labels [G, n]."""
    g, n, _ = x.shape
    rows = torch.arange(g, device=x.device)
    sq = x.square().sum(dim=-1)

    def dist2(centers: torch.Tensor) -> torch.Tensor:  # [G, n, k']
        return (sq[..., None] - 2.0 * x @ centers.mT + centers.square().sum(dim=-1)[:, None, :]).clamp_min(0.0)

    first = torch.randint(n, (g,), generator=gen, device=x.device)
    centers = x[rows, first][:, None, :]
    closest = dist2(centers)[..., 0]
    for _ in range(1, k):
        weights = torch.where(closest.sum(dim=1, keepdim=True) > 0, closest, torch.ones_like(closest))
        pick = torch.multinomial(weights, 1, generator=gen)[:, 0]
        new = x[rows, pick][:, None, :]
        centers = torch.cat([centers, new], dim=1)
        closest = torch.minimum(closest, dist2(new)[..., 0])
    labels = None
    for _ in range(iters):
        new_labels = dist2(centers).argmin(dim=-1)
        if labels is not None and bool(torch.equal(new_labels, labels)):
            break
        labels = new_labels
        onehot = torch.nn.functional.one_hot(labels, k).to(x.dtype)  # [G, n, k]
        count = onehot.sum(dim=1)
        sums = onehot.mT @ x
        centers = torch.where(count[..., None] > 0, sums / count.clamp_min(1.0)[..., None], centers)
    if labels is None:
        labels = dist2(centers).argmin(dim=-1)
    return labels


def _partition(x: torch.Tensor, sets: list[torch.Tensor], k: int, labels: torch.Tensor | None,
               iters: int, gen: torch.Generator) -> tuple[torch.Tensor, int, torch.Tensor]:
    """Split each token set (indices into ``x``) into clusters; global cluster id per token.

    Returns ``cid`` [M] (-1 for tokens in no set), the number of cluster ids, and the set index of every
    cluster id. Given ``labels`` are used within each set; otherwise k-means with ``min(k, size)``
    clusters, batched over sets of equal size.
    """
    m = x.shape[0]
    cid = torch.full((m, ), -1, dtype=torch.long, device=x.device)
    local = [None] * len(sets)
    if labels is not None:
        for i, idx in enumerate(sets):
            _, local[i] = torch.unique(labels[idx], return_inverse=True)
    else:
        by_size: dict[int, list[int]] = {}
        for i, idx in enumerate(sets):
            by_size.setdefault(int(idx.numel()), []).append(i)
        for size, members in by_size.items():
            kk = min(k, size)
            per_block = max(1, _BUDGET // max(1, size * max(x.shape[1], kk)))
            for s in range(0, len(members), per_block):
                chunk = members[s:s + per_block]
                stacked = torch.stack([x[sets[i]] for i in chunk])
                lab = _kmeans_batched(stacked, kk, iters, gen)
                for j, i in enumerate(chunk):
                    _, local[i] = torch.unique(lab[j], return_inverse=True)  # drop empty clusters
    offset, owner = 0, []
    for i, idx in enumerate(sets):
        lab = local[i]
        n_here = int(lab.max()) + 1
        cid[idx] = lab + offset
        owner.extend([i] * n_here)
        offset += n_here
    return cid, offset, torch.as_tensor(owner, dtype=torch.long, device=x.device)


def _check_real(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return float(value)


def _flatten_tokens(tokens: Any, image_ids: Any) -> tuple[torch.Tensor, np.ndarray, tuple[int, ...]]:
    """[M, D] float64 tokens and an image index (0..B-1, ordered) per token."""
    if isinstance(tokens, torch.Tensor):
        ndim = tokens.ndim
    else:
        tokens = np.asarray(tokens)
        ndim = tokens.ndim
    if ndim == 3:
        if image_ids is not None:
            raise ValueError("image_ids is only for [M, D] tokens; [B, T, D] tokens already say which image "
                             "each token belongs to")
        b, t, d = tokens.shape
        x = as_2d_tensor(tokens.reshape(b * t, d), "x", min_rows=1)
        return x, np.repeat(np.arange(b), t), (b, t)
    if ndim == 2:
        if image_ids is None:
            raise ValueError("[M, D] tokens need image_ids (one image id per token); or pass [B, T, D]")
        x = as_2d_tensor(tokens, "x", min_rows=1)
        ids = check_labels(image_ids, "image_ids", min_classes=1)
        if len(ids) != x.shape[0]:
            raise ValueError(f"mismatched number of tokens: x has {x.shape[0]} rows, image_ids has {len(ids)}")
        _, img = np.unique(ids, return_inverse=True)
        return x, img, (x.shape[0],)
    raise ValueError(f"x must be [B, T, D] tokens (images x tokens x features) or [M, D] with image_ids, "
                     f"got {ndim}-D input")


def _tokens() -> np.ndarray:
    """Valid tokens for the declared rule of ``x``: 4 images x 10 tokens x 6 features."""
    return np.random.default_rng(0).normal(size=(4, 10, 6))


@declare(x=Data("any", example=_tokens, bad=[_tokens()[0, 0], np.where(_tokens() > 2, np.nan, _tokens()), "tokens"]),
         labels=Data("labels", none=True, bad=[np.zeros(39, int), np.full(40, 0.5)]),
         image_ids=Data("labels", none=True, bad=[np.zeros(40, int)]), n_clusters=Interval(int, 2),
         n_local_clusters=Interval(int, 1), images_per_group=Interval(int, 1), lam=Interval(float), normalize=Flag(),
         seed=Interval(int), kmeans_iters=Interval(int, 1))
def dse(x: Any, labels: Any = None, *, image_ids: Any = None, n_clusters: int = 24,
        n_local_clusters: int = 3, images_per_group: int = 8, lam: float = 1.0, normalize: bool = True,
        seed: int = 0, kmeans_iters: int = 20) -> DSEResult:
    """Dense representation Structure Estimator (Dai et al. 2025, NeurIPS; see the module docstring for
    every term, what is from the paper/code and what is our choice).

    ``DSE = M_inter - (M_intra_image + M_intra_batch) / 2 + lam * M_dim``: class relevance (distance of a
    token to the nearest other pseudo-class mean minus the spread within pseudo-classes, both in units of
    the mean token distance to the mean token) plus ``lam`` times the effective dimensionality of tokens
    across images. Pseudo-classes come from k-means unless ``labels`` are given.

    Parameters
    ----------
    x : array or tensor [B, T, D] of tokens (images x tokens x features), or [M, D] with ``image_ids``
    labels : None or integer class per token ([B, T] or [M])
        Use these classes instead of k-means pseudo-labels (within each image and each group of images).
    image_ids : integer image id per token, for [M, D] input. Images are ordered by id.
    n_clusters, n_local_clusters : int
        k of the global (per group of images) and local (per image) k-means (paper code: 24 and 3);
        clipped to the number of tokens available.
    images_per_group : int
        Consecutive images pooled for the global clustering (paper code: 8).
    lam : float
        Weight of ``M_dim`` (1 in the authors' ``compute_DSE``; see :meth:`DSEResult.with_lambda`).
    normalize : bool
        L2-normalize every token first (default, as in the authors' command line).
    seed : int
        Seeds k-means++ and the within-image shuffle of ``M_dim``.
    kmeans_iters : int
        Maximum Lloyd iterations (paper code: 20).

    Returns
    -------
    DSEResult
        ``dse`` and the components ``m_inter``, ``m_intra`` (= mean of ``m_intra_image`` and
        ``m_intra_batch``), ``m_dim`` in ``(0, 1]``, plus ``lam``, ``n_images``, ``n_tokens``.

    Raises
    ------
    ValueError
        Fewer than 2 images, NaN/Inf, an all-zero token with ``normalize``, all tokens identical, no
        image/group with two pseudo-classes, mismatched label/image-id lengths.

    Examples
    --------
    >>> import numpy as np
    >>> image = [[1.0, 0], [1.0, 0], [0, 1.0], [0, 1.0]]       # 4 tokens: two of class 0 at e1, two of class 1 at e2
    >>> r = dse(np.array([image, image]), [[0, 0, 1, 1], [0, 0, 1, 1]])
    >>> round(r.m_inter, 6), round(r.m_intra, 6)   # ||e1 - e2|| / ||e1 - (e1 + e2)/2|| = 2; classes are points: 0
    (2.0, 0.0)
    """
    for name, value, minimum in (("n_clusters", n_clusters, 2), ("n_local_clusters", n_local_clusters, 1),
                                 ("images_per_group", images_per_group, 1), ("kmeans_iters", kmeans_iters, 1)):
        check_positive_int(value, name, minimum=minimum)
    lam = _check_real(lam, "lam")
    if not isinstance(normalize, (bool, np.bool_)):
        raise TypeError(f"normalize must be True or False, got {type(normalize).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an integer, got {type(seed).__name__}")
    x, img, _ = _flatten_tokens(x, image_ids)
    m, d = x.shape
    n_img = int(img.max()) + 1 if m else 0
    if n_img < 2:
        raise ValueError(f"dse needs tokens from at least 2 images, got {n_img}")
    lab_t = None
    if labels is not None:
        lab_np = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
        lab = check_labels(lab_np.reshape(-1), "labels", min_classes=1)
        if len(lab) != m:
            raise ValueError(f"labels must give one class per token ({m}), got {len(lab)}")
        lab_t = torch.as_tensor(lab, dtype=torch.long, device=x.device)
    if normalize:
        norms = x.norm(dim=1, keepdim=True)
        if not float(norms.min()) > 0.0:
            raise ValueError("x has an all-zero token that cannot be L2-normalized; remove it or pass "
                             "normalize=False")
        x = x / norms
    scale = float((x - x.mean(dim=0)).norm(dim=1).mean())
    if not scale > math.sqrt(d) * m * _EPS * float(x.abs().max()):
        raise ValueError("all tokens are identical, so the distances of DSE are undefined")

    gen = torch.Generator(device=x.device)
    gen.manual_seed(int(seed))
    img_t = torch.as_tensor(img, dtype=torch.long, device=x.device)
    order = torch.argsort(img_t, stable=True)
    counts = np.bincount(img, minlength=n_img)
    bounds = np.concatenate([[0], np.cumsum(counts)])
    per_image = [order[bounds[i]:bounds[i + 1]] for i in range(n_img)]

    # local pseudo-classes: M_intra_image
    cid, n_cid, owner = _partition(x, per_image, n_local_clusters, lab_t, kmeans_iters, gen)
    radii, sizes = _cluster_radii(x, cid, n_cid)
    valid = torch.as_tensor(sizes >= 2, device=x.device)
    per_img_sum = torch.zeros(n_img, dtype=x.dtype, device=x.device).index_add_(0, owner, radii)
    per_img_n = torch.zeros(n_img, dtype=x.dtype, device=x.device).index_add_(0, owner, valid.to(x.dtype))
    has = per_img_n > 0
    if not bool(has.any()):
        raise ValueError("no image has a local pseudo-class with 2 or more tokens; use more tokens per image")
    m_intra_image = float((per_img_sum[has] / per_img_n[has]).mean()) / scale

    # global pseudo-classes: M_intra_batch and M_inter
    groups = [torch.cat(per_image[s:s + images_per_group]) for s in range(0, n_img, images_per_group)]
    cid, n_cid, owner = _partition(x, groups, n_clusters, lab_t, kmeans_iters, gen)
    radii, sizes = _cluster_radii(x, cid, n_cid)
    if not bool((sizes >= 2).any()):
        raise ValueError("no global pseudo-class has 2 or more tokens; use more tokens or fewer clusters")
    m_intra_batch = float(radii[torch.as_tensor(sizes >= 2, device=x.device)].mean()) / scale
    cnt = torch.as_tensor(sizes, dtype=x.dtype, device=x.device)
    means = torch.zeros((n_cid, d), dtype=x.dtype, device=x.device).index_add_(0, cid, x) / cnt[:, None]
    inter = []
    owner_np = owner.cpu().numpy()
    for gi, idx in enumerate(groups):
        mine = np.nonzero(owner_np == gi)[0]
        if len(mine) < 2:
            continue
        mu = means[torch.as_tensor(mine, device=x.device)]
        pts = x[idx]
        dist = torch.cdist(pts, mu)
        local_c = cid[idx] - int(mine[0])
        dist[torch.arange(len(idx), device=x.device), local_c] = float("inf")
        inter.append(dist.min(dim=1).values.mean())
    if not inter:
        raise ValueError("every group of images has a single pseudo-class, so M_inter is undefined; "
                         "use more clusters, more images per group, or labels with 2+ classes per group")
    m_inter = float(torch.stack(inter).mean()) / scale

    # effective dimensionality across images
    t_min = int(counts.min())
    keys = torch.rand((n_img, int(counts.max())), generator=gen, device=x.device)
    mats = [x[per_image[i][torch.argsort(keys[i, :int(counts[i])])[:t_min]]] for i in range(n_img)]
    stacked = torch.stack(mats, dim=1)  # [t_min, B, D]: the t-th shuffled token of every image
    per_pos = max(1, _BUDGET // max(1, n_img * d + min(n_img, d) ** 2))
    eranks = []
    for s in range(0, t_min, per_pos):
        sv = _singular_values_batched(stacked[s:s + per_pos])
        total = sv.sum(dim=-1, keepdim=True)
        if not bool((total > 0).all()):
            raise ValueError("a set of tokens across images is all zeros, so M_dim is undefined; "
                             "remove all-zero tokens")
        p = sv / total + 1e-12
        eranks.append(torch.exp(-(p * torch.log(p)).sum(dim=-1)) / min(n_img, d))
    m_dim = float(torch.cat(eranks).mean())

    m_intra = 0.5 * (m_intra_image + m_intra_batch)
    return DSEResult(dse=m_inter - m_intra + lam * m_dim, m_inter=m_inter, m_intra=m_intra,
                     m_intra_image=m_intra_image, m_intra_batch=m_intra_batch, m_dim=m_dim, lam=lam,
                     n_images=n_img, n_tokens=m)

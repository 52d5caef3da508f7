"""Transferability scores besides LogME: LEEP, NCE, H-score (plain and shrinkage), TransRate.

Which inputs each needs:

* :func:`leep` - a source model's class probabilities on the target examples + target labels.
* :func:`nce`  - a hard source labelling of the target examples (e.g. the source model's argmax) +
  target labels.
* :func:`hscore`, :func:`transrate` - features of the target examples + target labels (like LogME).

All are computed in float64 torch on the input's device. Higher = predicted to transfer better, for all.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .._validation import Data, Flag, Interval, as_2d_tensor, declare
from ._common import check_eps, class_index, one_hot, rank_tolerance

__all__ = ["leep", "nce", "hscore", "transrate"]

_ROW_SUM_ATOL = 1e-3


# ------------------------------------------------------------------------------------------------ LEEP
@declare(source_probs=Data("x", example=lambda: np.full((Data.N, 4), 0.25),
                         bad=[np.full(Data.N, 0.25), np.full((Data.N, 4), np.nan), np.full((Data.N, 4), -0.25),
                              np.full((Data.N, 4), 0.5), "probabilities"]),
         labels=Data("labels"))
def leep(source_probs: Any, labels: Any) -> float:
    """Log expected empirical prediction (Nguyen, Hassner, Seeger & Archambeau 2020, "LEEP: a new measure
    to evaluate transferability of learned representations", ICML).

    With ``theta(x_i)`` [Z] the source model's predicted distribution over its ``Z`` source classes for
    target example ``i`` and ``y_i`` its target label::

        P(y, z)   = (1/N) sum_{i: y_i = y} theta(x_i)_z            (empirical joint)
        P(y | z)  = P(y, z) / sum_y' P(y', z)                       (empirical conditional)
        LEEP      = (1/N) sum_i log( sum_z P(y_i | z) theta(x_i)_z )  (log of the expected empirical prediction)

    A source class with ``P(z) = 0`` has ``theta(x_i)_z = 0`` for every ``i`` and contributes nothing.
    With one-hot ``theta`` (hard source labels) LEEP equals :func:`nce`.

    Parameters
    ----------
    source_probs : array or tensor [N, Z]
        Probabilities (softmax outputs, not logits): non-negative rows that sum to 1 within 1e-3
        (float16/float32 softmax is fine). Rows are renormalised to sum exactly to 1.
    labels : array [N]
        Integer target class ids (at least two classes).

    Returns
    -------
    float ``<= 0``: the mean log-probability that the "expected empirical predictor" assigns to the true
    target label (0 only if it is always certain and right). Invariant to relabelling source or target
    classes; depends on the source model's calibration (temperature) since ``theta`` enters directly.

    Raises
    ------
    ValueError
        Negative entries or rows not summing to 1 (e.g. logits were passed), NaN/Inf, mismatched ``N``,
        fewer than two target classes.

    Examples
    --------
    >>> import numpy as np
    >>> round(leep(np.full((4, 2), 0.5), [0, 0, 1, 1]), 4)    # uninformative source: log of the label frequency 1/2
    -0.6931
    >>> leep(np.eye(2)[[0, 0, 1, 1]], [1, 1, 0, 0])          # source classes determine the target: log 1
    0.0
    """
    theta = as_2d_tensor(source_probs, "source_probs", min_rows=1)
    codes, classes = class_index(labels, "labels", theta.shape[0], other="source_probs")
    if bool((theta < 0).any()):
        raise ValueError(f"source_probs has negative entries (min {float(theta.min()):.3g}); pass probabilities, "
                         "e.g. torch.softmax(logits, dim=1), not logits")
    sums = theta.sum(dim=1)
    off = (sums - 1.0).abs()
    if bool((off > _ROW_SUM_ATOL).any()):
        raise ValueError(f"source_probs rows must sum to 1 (they are probabilities over source classes); "
                         f"row sums range over [{float(sums.min()):.4g}, {float(sums.max()):.4g}]. "
                         "Apply softmax to logits first")
    theta = theta / sums[:, None]
    n = theta.shape[0]
    onehot = one_hot(codes, len(classes), theta.device)          # [N, C]
    joint = onehot.T @ theta / n                                 # [C, Z]
    pz = joint.sum(dim=0)                                        # [Z]
    cond = torch.where(pz > 0, joint / torch.where(pz > 0, pz, torch.ones_like(pz)), torch.zeros_like(joint))
    idx = torch.as_tensor(codes, device=theta.device)
    eep = (theta * cond[idx]).sum(dim=1)                         # sum_z P(y_i|z) theta_iz  (> 0)
    return float(torch.log(eep).mean())


# ------------------------------------------------------------------------------------------------- NCE
@declare(source_labels=Data("labels"), target_labels=Data("labels"))
def nce(source_labels: Any, target_labels: Any) -> float:
    """Negative conditional entropy ``-H(Y | Z)`` (Tran, Nguyen & Hassner 2019, "Transferability and
    hardness of supervised classification tasks", ICCV), from the empirical joint distribution.

    ``P(z, y) = #{i: z_i = z, y_i = y} / N``, ``P(z) = sum_y P(z, y)``::

        NCE = -H(Y | Z) = sum_{z, y} P(z, y) log( P(z, y) / P(z) )     (natural log, 0 log 0 = 0)

    Tran et al. take ``Z`` to be the source-task labels of the same examples; Nguyen et al. (LEEP, 2020)
    use the source model's argmax predictions on the target data as ``Z``. Either can be passed.

    Parameters
    ----------
    source_labels : array [N]
        Integer source labels (one class is allowed: then NCE = ``-H(Y)``).
    target_labels : array [N]
        Integer target labels (at least two classes).

    Returns
    -------
    float in ``[-H(Y), 0]`` (so ``>= -log C_target``); 0 exactly when the source label determines the
    target label. Invariant to relabelling either side.

    Examples
    --------
    >>> round(nce([0, 0, 1, 1], [1, 1, 0, 0]), 4), round(nce([0, 0, 1, 1], [0, 1, 0, 1]), 4)   # -H(target | source)
    (0.0, -0.6931)
    """
    z, _ = class_index(source_labels, "source_labels", min_classes=1)
    y, y_classes = class_index(target_labels, "target_labels", len(z), other="source_labels")
    n = len(z)
    zt, yt = torch.as_tensor(z), torch.as_tensor(y)
    n_y = len(y_classes)
    n_z = int(zt.max()) + 1
    counts = torch.zeros(n_z * n_y, dtype=torch.float64).index_add_(
        0, zt * n_y + yt, torch.ones(n, dtype=torch.float64)).reshape(n_z, n_y)
    joint = counts / n
    pz = joint.sum(dim=1, keepdim=True)
    nz = joint > 0
    terms = torch.where(nz, joint * torch.log(torch.where(nz, joint, torch.ones_like(joint)) / pz),
                        torch.zeros_like(joint))
    return float(terms.sum())


# --------------------------------------------------------------------------------------------- H-score
def _centered(data: Any, name: str = "x") -> torch.Tensor:
    x = as_2d_tensor(data, name, min_rows=2)
    xc = x - x.mean(dim=0, keepdim=True)
    if not bool((xc != 0).any()):
        raise ValueError(f"{name} is constant across all {x.shape[0]} samples (zero covariance), so this score is "
                         "undefined; check the activations")
    return xc


def _ledoit_wolf(xc: torch.Tensor, gram_eigs: torch.Tensor) -> tuple[float, float]:
    """Ledoit & Wolf (2004) shrinkage intensity and target scale for centered data ``xc`` [N, D].

    ``S = Xc^T Xc / N``, ``mu = tr(S) / D``, ``delta^2 = ||S - mu I||_F^2``,
    ``b^2 = (1/N^2) sum_k ||x_k x_k^T - S||_F^2 = (sum_k ||x_k||^4 - N ||S||_F^2) / N^2``,
    shrinkage ``= min(b^2, delta^2) / delta^2`` (0 when ``delta = 0``). Same quantities as
    ``sklearn.covariance.ledoit_wolf`` (which divides both ``b^2`` and ``delta^2`` by ``D``).
    """
    n, d = xc.shape
    lam = gram_eigs / n                                  # non-zero eigenvalues of S
    tr = float(lam.sum())
    mu = tr / d
    s_fro2 = float(lam.square().sum())
    delta2 = s_fro2 - d * mu * mu                        # ||S - mu I||^2 = ||S||^2 - 2 mu tr S + D mu^2
    row4 = float(xc.square().sum(dim=1).square().sum())
    b2 = (row4 - n * s_fro2) / (n * n)
    if not delta2 > 0:
        return 0.0, mu
    return min(max(b2, 0.0), delta2) / delta2, mu


@declare(x=Data("x", scale="invariant"), labels=Data("labels"), shrinkage=Flag())
def hscore(x: Any, labels: Any, *, shrinkage: bool = False) -> float:
    """H-score ``tr( cov(f)^+ cov(E[f | y]) )`` (Bao, Li, Huang & Zheng 2019, "An information-theoretic
    approach to transferability in task transfer learning", ICIP); with ``shrinkage=True`` the
    shrinkage estimator of Ibrahim, Ponomareva & Mazumder ("Newer is not always better: rethinking
    transferability metrics, their peculiarities, stability and performance", ECML-PKDD 2022;
    arXiv:2110.06893)::

        H_alpha = tr( [(1 - alpha) S + alpha mu I]^-1 (1 - alpha) S_B ),   mu = tr(S) / D

    ``S = Xc^T Xc / N`` is the covariance of the features, ``S_B = sum_c (N_c/N) m_c m_c^T`` the
    covariance of the class-conditional means ``m_c`` (``E[f|y]`` of each sample), both with the same
    ``1/N`` normalisation (any common factor cancels in the plain score), and ``alpha`` the Ledoit & Wolf
    (2004, J. Multivariate Anal. 88) shrinkage intensity toward ``mu I``, estimated from the data exactly
    as ``sklearn.covariance.ledoit_wolf`` does. With ``alpha = 0`` the shrinkage score equals the plain one.
    Note: the ``regularized_h_score`` found in several public code bases takes ``S`` from sklearn
    (``1/N``) but ``S_B`` from ``np.cov`` (``1/(N-1)``), which makes its value ``N/(N-1)`` times this one.

    The plain score uses the Moore-Penrose pseudo-inverse (as Bao et al.'s code does), computed on the
    eigenvalues of the Gram matrix of the centered features above ``lambda_max * max(N, D) * eps``.
    Because the class means lie in the span of the data, it equals ``tr(P_Y P_F)``: the overlap of the
    projection onto the centered class indicators and the projection onto the centered features' column
    space.

    Parameters
    ----------
    x : array or tensor [N, D]
        The features ``f`` (``X`` above).
    labels : array [N]
        Integer class ids (at least two classes).
    shrinkage : bool

    Returns
    -------
    float. Plain: in ``[0, min(C - 1, rank)]``; it is invariant to any invertible affine map of the
    features (scale, rotation, shift, per-feature scaling) and **saturates at C - 1 whenever
    rank(Xc) = N - 1** (e.g. ``N <= D``), where it carries no information - use ``shrinkage=True``
    there. Shrinkage: in ``[0, C - 1]``; invariant to isotropic scaling, rotations and shifts, but
    **depends on the relative scale of the features** (the target ``mu I`` is isotropic).

    Raises
    ------
    ValueError
        Constant features, NaN/Inf, mismatched ``N``, fewer than two classes.

    Examples
    --------
    >>> import numpy as np
    >>> round(hscore(np.array([[-1.1], [-0.9], [0.9], [1.1]]), [0, 0, 1, 1]), 4)   # var(class means) / var = 1/1.01
    0.9901
    """
    if not isinstance(shrinkage, (bool, np.bool_)):
        raise TypeError(f"shrinkage must be True or False, got {type(shrinkage).__name__}")
    xc = _centered(x)
    n, d = xc.shape
    codes, classes = class_index(labels, "labels", n)
    onehot = one_hot(codes, len(classes), xc.device)             # [N, C]
    counts = onehot.sum(dim=0)                                   # N_c
    if d <= n:
        lam, vec = torch.linalg.eigh(xc.T @ xc)                  # eigenpairs of N S
        means = (onehot.T @ xc) / counts[:, None]                # [C, D] class means (of centered data)
        proj = means @ vec                                       # m_c . v_i
        between = (counts[:, None] * proj.square()).sum(dim=0)   # v_i^T (N S_B) v_i
    else:
        lam, vec = torch.linalg.eigh(xc @ xc.T)                  # eigenpairs of the N x N Gram
        # with u_i the left singular vectors: v_i^T (N S_B) v_i = lam_i * sum_c (1_c . u_i)^2 / N_c
        proj = onehot.T @ vec                                    # [C, N]
        between = lam.clamp_min(0.0) * (proj.square() / counts[:, None]).sum(dim=0)
    keep = lam > rank_tolerance(lam, max(n, d))
    lam_k, between_k = lam[keep], between[keep]
    if not shrinkage:
        return float((between_k / lam_k).sum())
    alpha, mu = _ledoit_wolf(xc, lam_k)
    if alpha == 0.0:
        return float((between_k / lam_k).sum())
    # shrunk covariance is diagonal in the eigenbasis of S; S_B has no weight in S's null space
    denom = (1.0 - alpha) * lam_k / n + alpha * mu
    return float(((1.0 - alpha) * between_k / n / denom).sum())


# ------------------------------------------------------------------------------------------- TransRate
def _coding_rate(z: torch.Tensor, eps: float) -> torch.Tensor:
    """``1/2 logdet(I_D + Z^T Z / (n eps))`` via the Cholesky factor of the smaller Gram matrix."""
    n, d = z.shape
    gram = z.T @ z if d <= n else z @ z.T
    eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    chol = torch.linalg.cholesky(eye + gram / (n * eps))
    return torch.log(torch.diagonal(chol)).sum()


@declare(x=Data("x"), labels=Data("labels"), eps=Interval(float, 0, closed="neither"))
def transrate(x: Any, labels: Any, *, eps: float = 1e-4) -> float:
    """TransRate (Huang, Huang, Rong, Yang & Wei 2022, "Frustratingly easy transferability estimation",
    ICML): the coding rate of all features minus the mean coding rate of each class::

        Z       = F - mean(F)                                    (centered once, over all samples)
        R(Z, e) = 1/2 logdet( I_D + Z^T Z / (n e) )              (n = rows of Z)
        TrR     = R(Z, e) - (1/C) sum_c R(Z_c, e)                (Z_c = rows of Z in class c, n = N_c)

    This is the scaling and class averaging of the code listing that accompanies the paper (and of
    Transfer-Learning-Library's ``transrate``): ``1/(n e)`` rather than the ``D/(n e^2)`` of the
    MCR^2 coding rate (Yu et al. 2020), and an unweighted mean over classes rather than one weighted by
    ``N_c / N``; for balanced classes the two means coincide. The MCR^2 scaling with distortion
    ``e'`` is obtained with ``eps = e'^2 / D``. The class blocks are **not** re-centered. No other
    normalisation is applied to the features.

    Parameters
    ----------
    x : array or tensor [N, D]
        The features.
    labels : array [N]
        Integer class ids (at least two classes).
    eps : float
        Distortion ``e`` (default 1e-4, as in the paper's code), in squared feature units.

    Returns
    -------
    float (nats), real-valued (can be negative for tiny classes); higher = features more informative
    about the labels. Invariant to rotations and shifts of the features; **depends on the feature
    scale** (multiplying the features by ``c`` is the same as dividing ``eps`` by ``c^2``), so compare
    layers or models only after a common normalisation, or at a fixed scale.

    Raises
    ------
    ValueError
        Constant features, NaN/Inf, mismatched ``N``, fewer than two classes, ``eps <= 0``.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> labels = np.repeat([0, 1, 2], 20); f = rng.normal(size=(60, 3)) + 3 * np.eye(3)[labels]
    >>> round(transrate(f, labels), 4), round(transrate(rng.normal(size=(60, 3)), labels), 4)   # classes vs none
    (0.5395, 0.1483)
    """
    eps = check_eps(eps, "eps")
    z = _centered(x)
    codes, classes = class_index(labels, "labels", z.shape[0])
    idx = torch.as_tensor(codes, device=z.device)
    whole = _coding_rate(z, eps)
    per_class = torch.stack([_coding_rate(z[idx == c], eps) for c in range(len(classes))])
    return float(whole - per_class.mean())

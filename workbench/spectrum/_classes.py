"""Class structure of a representation: neural collapse, class-distance normalized variance, LiDAR.

All three compare how samples spread *within* a class (or group) with how the class means spread
*between* classes, but they are different numbers:

* :func:`neural_collapse` - Papyan, Han & Donoho 2020: ``NC1 = tr(Sigma_W Sigma_B^+) / C`` (trace of
  within-class covariance in the metric of the between-class covariance), plus NC2-NC4 (geometry of the
  class means, self-duality with and agreement of the classifier).
* :func:`cdnv` - Galanti, Gyorgy & Hutter 2022: per pair of classes, summed within-class variance over
  twice the squared distance of their means, averaged over pairs (no matrix inverse; scalar variances).
* :func:`lidar` - Thilak et al. 2024: effective rank of the LDA matrix ``Sigma_w^-1/2 Sigma_b Sigma_w^-1/2``
  where the "classes" are groups of augmented views of one input (a *rank*, not a ratio of scatters).

Class means are taken from the data (no weighting by class frequency beyond what each paper states);
everything is float64 in torch on the input's device.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .._validation import Data, Interval, as_2d_tensor, check_labels, declare

__all__ = ["neural_collapse", "cdnv", "lidar"]

_EPS = float(torch.finfo(torch.float64).eps)


def _encode(labels: Any, n: int, name: str, device: torch.device, min_classes: int = 2
            ) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    """Class values (sorted), per-sample class index and per-class counts (both on ``device``)."""
    y = check_labels(labels, name, min_classes=min_classes)
    if len(y) != n:
        raise ValueError(f"mismatched number of samples: x has {n} rows, {name} has {len(y)}; "
                         "pass one label per row of x")
    values, inv = np.unique(y, return_inverse=True)
    inv_t = torch.as_tensor(inv, dtype=torch.long, device=device)
    counts = torch.bincount(inv_t, minlength=len(values)).to(torch.float64)
    return values, inv_t, counts


def _class_means(h: torch.Tensor, inv: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    sums = torch.zeros((counts.shape[0], h.shape[1]), dtype=h.dtype, device=h.device).index_add_(0, inv, h)
    return sums / counts[:, None]


def _geometry(vectors: torch.Tensor, what: str) -> tuple[float, float, float]:
    """Equinorm, equiangularity and max-angle deviation of the rows of ``vectors`` [C, D]."""
    c = vectors.shape[0]
    norms = vectors.norm(dim=1)
    if not float(norms.min()) > 0.0:
        raise ValueError(f"a {what} vector is zero, so the angles of NC2 are undefined; check the features "
                         "(a class whose mean equals the global mean) or the classifier weights")
    equinorm = float(norms.std(unbiased=False) / norms.mean())
    unit = vectors / norms[:, None]
    cos = unit @ unit.T
    off = cos[~torch.eye(c, dtype=torch.bool, device=cos.device)]
    equiangular = float(off.std(unbiased=False))
    max_angle = float((off + 1.0 / (c - 1)).abs().mean())
    return equinorm, equiangular, max_angle


@declare(x=Data("x", scale="invariant"), labels=Data("labels"), weights=Data("x", none=True, scale="invariant"),
         bias=Data("any", none=True), logits=Data("x", none=True, scale="invariant"))
def neural_collapse(x: Any, labels: Any, *, weights: Any = None, bias: Any = None,
                    logits: Any = None) -> dict[str, float]:
    """Neural-collapse statistics NC1-NC4 (Papyan, Han & Donoho 2020, "Prevalence of neural collapse
    during the terminal phase of deep learning training", PNAS 117(40), Figs. 2-7).

    With ``h_i`` the features of sample ``i`` (rows of ``x``), ``mu_c`` the mean of class ``c``,
    ``mu_G`` the global mean of all samples and ``C`` the number of classes:

    * ``nc1 = tr(Sigma_W Sigma_B^+) / C`` (Fig. 6), ``Sigma_W = Ave_i (h_i - mu_{y_i})(h_i - mu_{y_i})^T``
      (average over all ``N`` samples), ``Sigma_B = Ave_c (mu_c - mu_G)(mu_c - mu_G)^T`` (average over
      classes), ``^+`` the Moore-Penrose pseudo-inverse (eigenvalues below ``D * eps * lambda_max`` count
      as zero). 0 when every sample sits at its class mean; ``~ N D / C^2`` for random labels.
    * ``nc2_equinorm = Std_c ||mu_c - mu_G|| / Avg_c ||mu_c - mu_G||`` (Fig. 2),
      ``nc2_equiangular = Std_{c != c'} cos(mu_c - mu_G, mu_c' - mu_G)`` (Fig. 3) and
      ``nc2_maxangle = Avg_{c != c'} |cos(mu_c - mu_G, mu_c' - mu_G) + 1/(C-1)|`` (Fig. 4). All three are
      0 for a simplex equiangular tight frame. Standard deviations are population ones (``ddof = 0``).
    * with ``weights`` W [C, D] (row ``k`` = classifier of the ``k``-th smallest label value):
      ``nc2_w_equinorm``, ``nc2_w_equiangular``, ``nc2_w_maxangle`` - the same three on the rows of W -
      and ``nc3 = || W / ||W||_F - M / ||M||_F ||_F^2`` (Fig. 5, self-duality) with ``M`` [C, D] the
      centered class means ``mu_c - mu_G``; in ``[0, 4]``.
    * with ``logits`` [N, C] or ``weights`` (and optional ``bias`` [C]): ``nc4`` = fraction of samples
      whose classifier prediction ``argmax_c (W h_i + b)_c`` differs from the nearest class mean
      ``argmin_c ||h_i - mu_c||`` (Fig. 7, "NCC mismatch"); in ``[0, 1]``.

    Namesakes: many follow-up papers report ``tr(Sigma_W) / tr(Sigma_B)`` or a normalized
    ``||M M^T / ||M M^T||_F - (I - 11^T/C)/sqrt(C-1)||_F`` as "NC1"/"NC2"; those are different numbers.
    ``mu_G`` is the mean of all samples as in the paper, which equals the mean of the class means only
    for balanced classes. Run it on the training features for the paper's setting.

    Returns
    -------
    dict measure -> float, in the order nc1, nc2_*, (nc2_w_*, nc3), (nc4).

    Raises
    ------
    ValueError
        Fewer than 2 classes, NaN/Inf, mismatched lengths or shapes, coinciding class means
        (``Sigma_B = 0``), a class mean equal to the global mean (angles undefined).

    Examples
    --------
    >>> import numpy as np
    >>> nc = neural_collapse(np.array([[-1.1], [-0.9], [0.9], [1.1]]), [0, 0, 1, 1])
    >>> round(nc["nc1"], 6)        # Sigma_W = 0.01, Sigma_B = 1, C = 2: 0.01 / 1 / 2
    0.005
    """
    z = as_2d_tensor(x, "x", min_rows=2)
    n, d = z.shape
    _, inv, counts = _encode(labels, n, "labels", z.device)
    c = counts.shape[0]
    mu_g = z.mean(dim=0)
    h = z - mu_g
    means = _class_means(h, inv, counts)            # mu_c - mu_G, [C, D]
    resid = h - means[inv]
    _, s, vh = torch.linalg.svd(means, full_matrices=False)
    if not float(s[0]) > 0.0 or float(s[0]) ** 2 <= n * d * (n * _EPS * float(z.abs().max())) ** 2:
        raise ValueError("all class means coincide in x (between-class covariance is zero), so NC1 is undefined; "
                         "check the labels and features")
    keep = s.square() > d * _EPS * s[0].square()
    v = vh[keep].T                                   # eigenvectors of Sigma_B with non-zero eigenvalues
    within = (resid @ v).square().sum(dim=0) / n     # v_k^T Sigma_W v_k
    # Sigma_B = M^T M / C has eigenvalues s_k^2 / C, so tr(Sigma_W Sigma_B^+) / C = sum_k within_k / s_k^2
    out = {"nc1": float((within / s[keep].square()).sum())}
    out["nc2_equinorm"], out["nc2_equiangular"], out["nc2_maxangle"] = _geometry(means, "centered class-mean")

    w = None
    if weights is not None:
        w = as_2d_tensor(weights, "weights", min_rows=1).to(z.device)
        if tuple(w.shape) != (c, d):
            raise ValueError(f"weights must have shape [n_classes, n_features] = [{c}, {d}], got "
                             f"{tuple(w.shape)}; row k is the classifier of the k-th smallest label value")
        out["nc2_w_equinorm"], out["nc2_w_equiangular"], out["nc2_w_maxangle"] = _geometry(w, "classifier")
        wn, mn = w.norm(), means.norm()
        out["nc3"] = float((w / wn - means / mn).square().sum())
    if logits is not None:
        lg = as_2d_tensor(logits, "logits", min_rows=1).to(z.device)
        if tuple(lg.shape) != (n, c):
            raise ValueError(f"logits must have shape [n_samples, n_classes] = [{n}, {c}], got {tuple(lg.shape)}")
        pred = lg.argmax(dim=1)
    elif w is not None:
        lg = z @ w.T
        if bias is not None:
            b = bias.detach() if isinstance(bias, torch.Tensor) else torch.as_tensor(np.asarray(bias, dtype=float))
            b = b.to(device=z.device, dtype=torch.float64).reshape(-1)
            if b.shape[0] != c or not bool(torch.isfinite(b).all()):
                raise ValueError(f"bias must be a finite vector of length n_classes = {c}")
            lg = lg + b
        pred = lg.argmax(dim=1)
    else:
        if bias is not None:
            raise ValueError("bias given without weights; pass weights=W (and bias=b) or logits")
        pred = None
    if pred is not None:
        dist = h.square().sum(dim=1, keepdim=True) - 2.0 * h @ means.T + means.square().sum(dim=1)
        ncc = dist.argmin(dim=1)
        out["nc4"] = float((pred != ncc).to(torch.float64).mean())
    return out


@declare(x=Data("x", scale="invariant"), labels=Data("labels"))
def cdnv(x: Any, labels: Any) -> float:
    """Class-distance normalized variance (Galanti, Gyorgy & Hutter 2022, "On the role of neural collapse
    in transfer learning", ICLR), averaged over all pairs of classes.

    ``CDNV = 2/(C(C-1)) sum_{i<j} (Var_i + Var_j) / (2 ||mu_i - mu_j||^2)`` with ``mu_c`` the mean and
    ``Var_c = Ave_{x in c} ||x - mu_c||^2`` the (plug-in, ``1/n_c``) total variance of class ``c``.

    Unlike ``nc1`` of :func:`neural_collapse` it uses scalar variances and pairwise distances (no matrix
    inverse), so it is cheap and well defined when ``D`` exceeds ``N``; it is not invariant to
    anisotropic rescaling of the features. Small values mean collapsed, well separated classes
    (it is ``>= 0``; 0 iff every class is a single point).

    Raises
    ------
    ValueError
        Fewer than 2 classes, NaN/Inf, mismatched lengths, two classes with the same mean (infinite
        CDNV).

    Examples
    --------
    >>> import numpy as np
    >>> round(cdnv(np.array([[-1.1], [-0.9], [0.9], [1.1]]), [0, 0, 1, 1]), 6)   # (0.01 + 0.01) / (2 * 2^2)
    0.0025
    """
    z = as_2d_tensor(x, "x", min_rows=2)
    n = z.shape[0]
    values, inv, counts = _encode(labels, n, "labels", z.device)
    h = z - z.mean(dim=0)
    means = _class_means(h, inv, counts)
    var = torch.zeros_like(counts).index_add_(0, inv, (h - means[inv]).square().sum(dim=1)) / counts
    sq = means.square().sum(dim=1)
    dist2 = (sq[:, None] + sq[None, :] - 2.0 * means @ means.T).clamp_min(0.0)
    iu = torch.triu_indices(len(values), len(values), offset=1, device=z.device)
    pair_d2 = dist2[iu[0], iu[1]]
    if not float(pair_d2.min()) > 0.0:
        k = int(pair_d2.argmin())
        a, b = values[int(iu[0, k])], values[int(iu[1, k])]
        raise ValueError(f"classes {a} and {b} have the same mean in x, so their CDNV is infinite; "
                         "check the labels or merge the classes")
    return float(((var[iu[0]] + var[iu[1]]) / (2.0 * pair_d2)).mean())


def _check_nonneg(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a non-negative number, got {type(value).__name__}")
    if not (np.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return float(value)


@declare(x=Data("x"), groups=Data("labels"), delta=Interval(float, 0), eps=Interval(float, 0))
def lidar(x: Any, groups: Any, *, delta: float = 1e-4, eps: float = 1e-8) -> float:
    """LiDAR, the effective rank of the LDA matrix of the self-supervised surrogate task (Thilak et al.
    2024, "LiDAR: sensing linear probing performance in joint embedding SSL architectures", ICLR).

    Each *group* (a surrogate class) holds the embeddings of ``q_g >= 2`` augmented views of one clean
    input; ``groups`` gives the group id of every row of ``x``. With ``mu_g`` the group means, ``mu`` their
    average and ``n`` the number of groups::

        Sigma_b = 1/(n-1) sum_g (mu_g - mu)(mu_g - mu)^T
        Sigma_w = 1/sum_g(q_g - 1) sum_g sum_{i in g} (z_i - mu_g)(z_i - mu_g)^T + delta I
        Sigma_lidar = Sigma_w^(-1/2) Sigma_b Sigma_w^(-1/2)
        p_k = lambda_k / ||lambda||_1 + eps,   LiDAR = exp(-sum_k p_k log p_k)

    over the ``D`` eigenvalues ``lambda_k`` of ``Sigma_lidar`` (= the generalized eigenvalues of
    ``Sigma_b v = lambda Sigma_w v``). For equal group sizes ``q`` the within normalization is the
    paper's ``1/(n(q-1))``. Defaults ``delta = 1e-4`` (ridge making ``Sigma_w`` invertible) and
    ``eps = 1e-8`` (RankMe-style smoothing of ``p``) are the paper's values as we read them (they are
    also the defaults of the ``stable-pretraining`` implementation; ``reptrix`` uses ``1e-6`` / ``1e-7``).
    ``delta`` is absolute, so it matters relative to the scale of the features.

    Differs from :func:`~workbench.spectrum.rankme` (spectrum of the embeddings themselves) by
    whitening with the within-group (augmentation) scatter: directions that vary across augmentations
    of one input do not count. Not :func:`neural_collapse`'s NC1 (a trace ratio, not a rank).

    Returns
    -------
    float, about ``[1, min(n - 1, D)]`` (each of the ``D`` terms is raised by ``eps``).

    Raises
    ------
    ValueError
        Fewer than 2 groups, a group with a single view, NaN/Inf, mismatched lengths, all group means
        equal (``Sigma_b = 0``).

    Examples
    --------
    >>> import numpy as np
    >>> z = np.array([[1.1, 0], [0.9, 0], [-0.9, 0], [-1.1, 0], [0, 0.6], [0, 0.4], [0, -0.4], [0, -0.6]])
    >>> round(lidar(z, [0, 0, 1, 1, 2, 2, 3, 3]), 4)   # means (+-1, 0), (0, +-0.5), isotropic within: exp(H(.8, .2))
    1.6494
    """
    delta = _check_nonneg(delta, "delta")
    eps = _check_nonneg(eps, "eps")
    z = as_2d_tensor(x, "x", min_rows=4)
    n_rows, d = z.shape
    values, inv, counts = _encode(groups, n_rows, "groups", z.device)
    if float(counts.min()) < 2:
        small = values[(counts < 2).cpu().numpy()]
        raise ValueError(f"every group needs at least 2 views (augmentations of one input); group(s) "
                         f"{small[:5].tolist()} have one: drop them or add views")
    n = len(values)
    h = z - z.mean(dim=0)
    means = _class_means(h, inv, counts)
    resid = h - means[inv]
    sigma_w = resid.T @ resid / float((counts - 1).sum())
    sigma_w.diagonal().add_(delta)
    cm = means - means.mean(dim=0)
    sigma_b = cm.T @ cm / (n - 1)
    if not float(sigma_b.diagonal().sum()) > n * d * (n_rows * _EPS * float(z.abs().max())) ** 2:
        raise ValueError("all group means coincide in x (between-group scatter is zero), so LiDAR is undefined")
    w_val, w_vec = torch.linalg.eigh(sigma_w)
    if not float(w_val[0]) > 0.0:
        raise ValueError("the within-group scatter is singular; pass delta > 0 (paper default 1e-4)")
    inv_sqrt = (w_vec * w_val.rsqrt()) @ w_vec.T
    m = inv_sqrt @ sigma_b @ inv_sqrt
    lam = torch.linalg.eigvalsh(0.5 * (m + m.T)).clamp_min(0.0)
    p = lam / lam.sum() + eps
    return float(torch.exp(-torch.special.xlogy(p, p).sum()))

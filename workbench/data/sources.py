"""Small offline datasets: MNIST-1D signals, sklearn digits and a latent Gaussian mixture.

Nothing here downloads anything: MNIST-1D is generated locally from the ``mnist1d`` package's templates
and transforms, the digits ship with scikit-learn, and the Gaussian mixture is sampled from a known model.
"""
from __future__ import annotations

import numbers
from typing import Sequence

import numpy as np

from .._validation import check_fraction, check_positive_int
from .dataset import Dataset, Split

__all__ = ["make_mnist1d", "make_digits", "make_gaussian_mixture", "bayes_risk"]

DIGIT_NAMES = [str(i) for i in range(10)]


def _check_seed(seed) -> int:
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or seed < 0:
        raise TypeError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _check_nonneg(value, name: str) -> float:
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not np.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


# ---------------------------------------------------------------------------------------------------------
# MNIST-1D
# ---------------------------------------------------------------------------------------------------------


def _mnist1d_generate(n_total: int, seed: int, args) -> dict[str, np.ndarray]:
    """Re-run ``mnist1d.transform.transform`` per example while recording its random draws.

    Uses a private ``np.random.RandomState(seed)`` that makes exactly the same calls, in the same order,
    as ``mnist1d.data.make_dataset`` does on the global numpy state after ``set_seed(seed)``; the signals
    are therefore identical to the package's own generator (for ``n_total`` a multiple of 10), but the
    global random state is left untouched and the per-example parameters are kept.
    """
    from mnist1d.data import get_templates
    from mnist1d.transform import interpolate
    from scipy.ndimage import gaussian_filter

    rs = np.random.RandomState(seed)
    templates = get_templates()
    per_class = n_total // len(templates["y"])
    low, high = args["padding"]
    dilated_len = args["template_len"] + high
    xs, ys, pads, scales, shifts, shears = [], [], [], [], [], []
    for label in range(len(templates["y"])):
        for _ in range(per_class):
            x = templates["x"][label] + 1e-8
            p = low + int(rs.rand() * (high - low + 1))  # pad
            x = np.concatenate([x, np.zeros(p)])
            x = interpolate(x, dilated_len)  # dilate
            s = 1 + args["scale_coeff"] * (rs.rand() - 0.5)  # scale
            x = x * s
            k = rs.choice(args["max_translation"])  # translate (circular shift)
            x = np.concatenate([x[-k:], x[:-k]])
            mask = x != 0
            corr = gaussian_filter(args["corr_noise_scale"] * rs.randn(*x.shape), 2)
            x = mask * x + (1 - mask) * corr
            x = x + args["iid_noise_scale"] * rs.randn(*x.shape)
            coeff = args["shear_scale"] * (rs.rand() - 0.5)  # shear
            x = x - coeff * np.linspace(-0.5, 0.5, len(x))
            x = interpolate(x, args["final_seq_length"])
            xs.append(x)
            ys.append(templates["y"][label])
            pads.append(p)
            scales.append(s)
            shifts.append(k)
            shears.append(coeff)
    order = rs.permutation(len(ys))
    out = {"x": np.stack(xs)[order], "y": np.asarray(ys)[order], "padding": np.asarray(pads)[order],
           "scale": np.asarray(scales)[order], "translation": np.asarray(shifts)[order],
           "shear": np.asarray(shears)[order]}
    if args["shuffle_seq"]:
        out["x"] = out["x"][..., rs.permutation(args["final_seq_length"])]
    out["x"] = (out["x"] - out["x"].mean()) / out["x"].std()
    return out


def make_mnist1d(n_train: int = 4000, n_test: int = 1000, seed: int = 0, length: int = 40,
                 scale_coeff: float = 0.4, max_translation: int = 48, corr_noise_scale: float = 0.25,
                 iid_noise_scale: float = 2e-2, shear_scale: float = 0.75,
                 padding: Sequence[int] = (36, 60), shuffle_seq: bool = False) -> Dataset:
    """MNIST-1D: ten 1-D digit templates, randomly padded, scaled, shifted, noised and sheared.

    Generated locally with the ``mnist1d`` package's templates and transforms (never downloaded). The
    package's own defaults are used; with ``n_train + n_test`` a multiple of 10 the pooled signals equal
    ``mnist1d.data.make_dataset`` for ``num_samples = n_train + n_test`` and the same seed.

    Parameters
    ----------
    n_train, n_test : int
        Split sizes. ``ceil((n_train + n_test) / 10) * 10`` balanced examples are generated, shuffled and
        the first ``n_train`` become train, the next ``n_test`` test.
    seed : int
        Seed of the generator (a private ``RandomState``; numpy's global state is not touched).
    length : int
        Final signal length (``final_seq_length`` of the package).
    scale_coeff, max_translation, corr_noise_scale, iid_noise_scale, shear_scale, padding, shuffle_seq
        The package's generation arguments (see ``mnist1d.data.get_dataset_args``).

    Returns
    -------
    Dataset
        ``kind="signal"``, inputs float32 ``[N, 1, length]`` (standardised over the whole pool), labels =
        digit. Factors (``[N]``), the per-example draws of the generator:

        - ``digit`` (categorical, = labels): template 0-9.
        - ``padding`` (continuous): zeros appended to the 12-sample template before dilation; more
          padding = narrower digit.
        - ``scale`` (continuous): amplitude multiplier ``1 + scale_coeff * (u - 0.5)``.
        - ``translation`` (continuous): circular shift in samples (of the dilated signal, 0..max_translation-1).
        - ``shear`` (continuous): slope of the linear trend subtracted from the signal.
    """
    n_train = check_positive_int(n_train, "n_train")
    n_test = check_positive_int(n_test, "n_test", minimum=0)
    seed = _check_seed(seed)
    length = check_positive_int(length, "length", minimum=4)
    max_translation = check_positive_int(max_translation, "max_translation")
    for v, nm in [(scale_coeff, "scale_coeff"), (corr_noise_scale, "corr_noise_scale"),
                  (iid_noise_scale, "iid_noise_scale"), (shear_scale, "shear_scale")]:
        _check_nonneg(v, nm)
    if (not isinstance(padding, Sequence) or len(padding) != 2
            or not all(isinstance(p, numbers.Integral) for p in padding) or not 0 <= padding[0] <= padding[1]):
        raise ValueError(f"padding must be a pair of integers (low, high) with 0 <= low <= high, got {padding!r}")
    try:
        import mnist1d.data  # noqa: F401  (only its templates and transforms are used)
    except ImportError as e:  # pragma: no cover
        raise ImportError("make_mnist1d needs the mnist1d package: pip install mnist1d") from e

    args = dict(template_len=12, padding=[int(padding[0]), int(padding[1])], scale_coeff=float(scale_coeff),
                max_translation=max_translation, corr_noise_scale=float(corr_noise_scale),
                iid_noise_scale=float(iid_noise_scale), shear_scale=float(shear_scale),
                shuffle_seq=bool(shuffle_seq), final_seq_length=length)
    n_total = -(-(n_train + n_test) // 10) * 10
    g = _mnist1d_generate(n_total, seed, args)
    factors_all = {"digit": g["y"].astype(np.int64), "padding": g["padding"].astype(np.float32),
                   "scale": g["scale"].astype(np.float32), "translation": g["translation"].astype(np.float32),
                   "shear": g["shear"].astype(np.float32)}
    x = g["x"].astype(np.float32)[:, None, :]
    splits = {}
    for name, sl in [("train", slice(0, n_train)), ("test", slice(n_train, n_train + n_test))]:
        if sl.stop > sl.start:
            f = {k: v[sl].copy() for k, v in factors_all.items()}
            splits[name] = Split(inputs=x[sl].copy(), labels=f["digit"].copy(), factors=f)
    factor_info = {
        "digit": {"kind": "categorical", "values": list(DIGIT_NAMES)},
        "padding": {"kind": "continuous", "range": list(args["padding"]), "unit": "samples"},
        "scale": {"kind": "continuous", "range": [1 - scale_coeff / 2, 1 + scale_coeff / 2]},
        "translation": {"kind": "continuous", "range": [0, max_translation - 1], "unit": "samples"},
        "shear": {"kind": "continuous", "range": [-shear_scale / 2, shear_scale / 2]},
    }
    options = dict(n_train=n_train, n_test=n_test, seed=seed, length=length, **{
        k: v for k, v in args.items() if k not in ("final_seq_length",)})
    return Dataset(name="mnist1d", kind="signal", splits=splits, class_names=list(DIGIT_NAMES),
                   factor_info=factor_info, options=options)


# ---------------------------------------------------------------------------------------------------------
# sklearn digits
# ---------------------------------------------------------------------------------------------------------


def make_digits(test_fraction: float = 0.25, seed: int = 0) -> Dataset:
    """The 1 797 8x8 handwritten digits bundled with scikit-learn (offline), stratified train/test split.

    Parameters
    ----------
    test_fraction : float in (0, 1)
        Fraction of examples in the test split; the split is stratified by digit.
    seed : int
        Seed of the split.

    Returns
    -------
    Dataset
        ``kind="image"``, inputs float32 ``[N, 1, 8, 8]`` = pixel counts 0..16 divided by 16. Labels =
        digit; one factor ``digit`` (categorical, = labels). No ood split.
    """
    test_fraction = check_fraction(test_fraction, "test_fraction")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be strictly between 0 and 1, got {test_fraction}")
    seed = _check_seed(seed)
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None]
    y = bunch.target.astype(np.int64)
    idx_train, idx_test = train_test_split(np.arange(len(y)), test_size=test_fraction, stratify=y,
                                           random_state=seed)
    splits = {name: Split(inputs=x[idx], labels=y[idx].copy(), factors={"digit": y[idx].copy()})
              for name, idx in [("train", np.sort(idx_train)), ("test", np.sort(idx_test))]}
    return Dataset(name="digits", kind="image", splits=splits, class_names=list(DIGIT_NAMES),
                   factor_info={"digit": {"kind": "categorical", "values": list(DIGIT_NAMES)}},
                   options=dict(test_fraction=test_fraction, seed=seed))


# ---------------------------------------------------------------------------------------------------------
# Gaussian mixture with a latent space
# ---------------------------------------------------------------------------------------------------------


def make_gaussian_mixture(n_train: int = 2000, n_test: int = 500, n_ood: int = 500, dim: int = 32,
                          n_classes: int = 4, latent_dim: int = 8, separation: float = 3.0, noise: float = 1.0,
                          seed: int = 0, ood_shift: float = 1.0) -> Dataset:
    """Classes as Gaussians in a latent space, linearly embedded in ``dim`` dimensions plus noise.

    Generative model (all parameters returned in ``options``)::

        y ~ Uniform{0 .. n_classes-1}
        z = means[y] + e,            e ~ N(0, I_latent_dim)            (latent, the factors z0..)
        x = mixing @ z + noise * n,  n ~ N(0, I_dim)                    (observed input)

    ``mixing`` is a fixed random ``dim x latent_dim`` matrix with orthonormal columns, so
    ``x | y ~ N(mixing @ means[y], mixing @ mixing.T + noise**2 I)``. Class means are
    ``separation / sqrt(2)`` times orthonormal directions when ``n_classes <= latent_dim`` (so every pair
    of means is exactly ``separation`` apart); otherwise random directions scaled so the *nearest* pair is
    ``separation`` apart. Because the columns are orthonormal, the Bayes-optimal classifier is
    nearest-mean in the projected latent ``mixing.T @ x`` with isotropic variance ``1 + noise**2``.

    Parameters
    ----------
    n_train, n_test, n_ood : int
        Split sizes (``n_test``/``n_ood`` may be 0 to leave the split out).
    dim : int
        Observed dimension (>= latent_dim).
    n_classes : int
        Number of mixture components (>= 2).
    latent_dim : int
        Latent dimension.
    separation : float > 0
        Distance between class means in latent units (latent within-class std is 1).
    noise : float >= 0
        Std of the isotropic observation noise.
    seed : int
        Seed; model parameters, train, test and ood come from independent child streams.
    ood_shift : float >= 0
        OOD split: every latent point is translated by the same vector ``ood_offset`` (a random
        direction of norm ``ood_shift * separation``, stored in ``options``) and the observation noise is
        multiplied by ``1 + ood_shift``. Class-conditional structure is kept, so the Bayes rule on the
        shifted data is nearest-mean to ``means + ood_offset`` with variance ``1 + ((1+ood_shift)*noise)**2``.
        ``0`` = same distribution as train.

    Returns
    -------
    Dataset
        ``kind="vectors"``, inputs float32 ``[N, dim]``, labels = class. Factors: ``class``
        (categorical, = labels) and ``z0 .. z{latent_dim-1}`` (continuous latent coordinates, before
        mixing and noise; for ood they include the offset). ``options`` holds ``means``
        (n_classes x latent_dim), ``mixing`` (dim x latent_dim), ``observed_means`` (n_classes x dim),
        ``latent_std`` (1.0), ``priors`` and ``ood_offset`` as nested lists.
    """
    n_train = check_positive_int(n_train, "n_train")
    n_test = check_positive_int(n_test, "n_test", minimum=0)
    n_ood = check_positive_int(n_ood, "n_ood", minimum=0)
    dim = check_positive_int(dim, "dim")
    n_classes = check_positive_int(n_classes, "n_classes", minimum=2)
    latent_dim = check_positive_int(latent_dim, "latent_dim")
    if latent_dim > dim:
        raise ValueError(f"latent_dim={latent_dim} must be <= dim={dim}; raise dim or lower latent_dim")
    separation = _check_nonneg(separation, "separation")
    if separation == 0:
        raise ValueError("separation must be > 0 (distance between class means in latent units)")
    noise = _check_nonneg(noise, "noise")
    ood_shift = _check_nonneg(ood_shift, "ood_shift")
    seed = _check_seed(seed)

    ss_params, ss_train, ss_test, ss_ood = np.random.SeedSequence(seed).spawn(4)
    prng = np.random.default_rng(ss_params)
    if n_classes <= latent_dim:
        q, _ = np.linalg.qr(prng.standard_normal((latent_dim, n_classes)))
        means = (separation / np.sqrt(2.0)) * q.T
    else:
        dirs = prng.standard_normal((n_classes, latent_dim))
        d = np.linalg.norm(dirs[:, None] - dirs[None], axis=-1)
        means = dirs * (separation / d[~np.eye(n_classes, dtype=bool)].min())
    mixing, _ = np.linalg.qr(prng.standard_normal((dim, latent_dim)))
    direction = prng.standard_normal(latent_dim)
    ood_offset = direction / np.linalg.norm(direction) * ood_shift * separation

    def sample(n, rng, offset, noise_std):
        y = rng.integers(0, n_classes, n)
        z = means[y] + rng.standard_normal((n, latent_dim)) + offset
        x = z @ mixing.T + noise_std * rng.standard_normal((n, dim))
        factors = {"class": y.astype(np.int64)}
        factors.update({f"z{j}": z[:, j].astype(np.float32) for j in range(latent_dim)})
        return Split(inputs=x.astype(np.float32), labels=y.astype(np.int64), factors=factors)

    splits = {}
    for name, n, ss, offset, nstd in [("train", n_train, ss_train, 0.0, noise), ("test", n_test, ss_test, 0.0, noise),
                                      ("ood", n_ood, ss_ood, ood_offset, noise * (1 + ood_shift))]:
        if n:
            splits[name] = sample(n, np.random.default_rng(ss), offset, nstd)
    class_names = [f"class{k}" for k in range(n_classes)]
    factor_info = {"class": {"kind": "categorical", "values": list(class_names)}}
    factor_info.update({f"z{j}": {"kind": "continuous", "description": f"latent coordinate {j}"}
                        for j in range(latent_dim)})
    options = dict(n_train=n_train, n_test=n_test, n_ood=n_ood, dim=dim, n_classes=n_classes,
                   latent_dim=latent_dim, separation=separation, noise=noise, seed=seed, ood_shift=ood_shift,
                   means=means.tolist(), mixing=mixing.tolist(), observed_means=(means @ mixing.T).tolist(),
                   latent_std=1.0, priors=[1.0 / n_classes] * n_classes, ood_offset=ood_offset.tolist(),
                   ood_noise=noise * (1 + ood_shift))
    return Dataset(name="gaussian-mixture", kind="vectors", splits=splits, class_names=class_names,
                   factor_info=factor_info, options=options)


def bayes_risk(dataset: Dataset, split: str = "test", *, mc_samples: int = 1_000_000, seed: int = 0) -> float:
    """The Bayes risk (the lowest possible 0-1 error) of a split of a ``gaussian-mixture`` dataset.

    :func:`make_gaussian_mixture` draws ``x = A z + σ n`` with ``z | y ~ N(μ_y, I)``, ``A`` (``mixing``) with
    orthonormal columns and equal priors, so ``x | y ~ N(A μ_y, A Aᵀ + σ² I)``: the classes share one
    covariance and the Bayes classifier is linear (LDA). The component of ``x`` orthogonal to the columns of ``A``
    is independent of ``y``; the sufficient statistic ``u = Aᵀ x ~ N(μ_y, s² I)`` with ``s² = 1 + σ²``, and the
    Bayes rule is nearest mean in ``u`` (Anderson 2003, *An introduction to multivariate statistical analysis*,
    ch. 6). Its error:

    - means on orthonormal directions, ``μ_k = c e_k`` with ``c = separation / √2`` (``n_classes <= latent_dim``):
      the scores ``e_kᵀ u`` are independent, so ``1 − R = ∫ φ(t) Φ(t + c / s)^(K−1) dt`` — one integral,
      evaluated by adaptive quadrature (``scipy.integrate.quad``, absolute error < 1e-10). For ``K = 2`` it
      equals ``Φ(−Δ / 2s)`` with ``Δ`` the distance between the means.
    - otherwise (more classes than latent dimensions: random mean directions): a Monte-Carlo average of
      ``1 − max_k p(k | u)`` (the Bayes classifier's conditional error, exact posterior) over ``mc_samples``
      seeded draws; its standard error is below ``0.5 / √mc_samples`` (5e-4 at the default).

    The ``ood`` split is the same mixture shifted by one common offset (which moves no decision boundary relative to
    the means) with noise ``σ (1 + ood_shift)``; its Bayes risk uses that noise.

    Parameters
    ----------
    dataset : a :class:`~workbench.data.Dataset` made by ``make_gaussian_mixture`` (``load("gaussian-mixture", …)``);
        its ``options`` hold the generative parameters.
    split : ``"train"``/``"test"`` (one distribution) or ``"ood"``.
    mc_samples, seed : draws and seed of the Monte-Carlo case (unused when the integral applies).

    Returns
    -------
    float in [0, 1 − 1/K]: the error of the Bayes-optimal classifier on ``split``'s distribution.

    Examples
    --------
    >>> from workbench.data import load, bayes_risk
    >>> ds = load("gaussian-mixture", n_train=10, n_test=10, n_ood=0, n_classes=2, separation=2.0, noise=0.0)
    >>> round(bayes_risk(ds), 4)  # Φ(−2 / 2) for two unit-variance Gaussians 2 apart
    0.1587
    """
    if not isinstance(dataset, Dataset):
        raise TypeError(f"dataset must be a workbench.data.Dataset (load('gaussian-mixture', ...)), got "
                        f"{type(dataset).__name__}")
    if dataset.name != "gaussian-mixture" or "means" not in dataset.options:
        raise ValueError(f"bayes_risk needs the known generative model of a 'gaussian-mixture' dataset; dataset "
                         f"{dataset.name!r} has none (its Bayes risk is unknown)")
    if split not in ("train", "test", "ood"):
        raise ValueError(f"split must be 'train', 'test' or 'ood', got {split!r}")
    mc_samples = check_positive_int(mc_samples, "mc_samples", minimum=1000)
    seed = _check_seed(seed)
    opts = dataset.options
    means = np.asarray(opts["means"], dtype=np.float64)
    k, latent = means.shape
    noise = float(opts["ood_noise"] if split == "ood" else opts["noise"])
    s = float(np.sqrt(float(opts.get("latent_std", 1.0)) ** 2 + noise ** 2))
    gram = means @ means.T
    norms = np.diag(gram)
    c = float(np.sqrt(norms[0]))
    if np.allclose(gram, np.diag(norms), atol=1e-9 * max(c * c, 1.0)) and np.allclose(norms, c * c):
        from scipy import integrate, stats

        def correct(t: float) -> float:
            return float(stats.norm.pdf(t) * stats.norm.cdf(t + c / s) ** (k - 1))

        p, _ = integrate.quad(correct, -np.inf, np.inf, epsabs=1e-12, epsrel=1e-10, limit=200)
        return float(min(max(1.0 - p, 0.0), 1.0))
    rng = np.random.default_rng([seed, 0xBA7E5])
    total, done = 0.0, 0
    while done < mc_samples:
        n = min(200_000, mc_samples - done)
        y = rng.integers(0, k, n)
        u = means[y] + s * rng.standard_normal((n, latent))
        logits = -((u[:, None, :] - means[None]) ** 2).sum(-1) / (2 * s * s)
        logits -= logits.max(1, keepdims=True)
        post = np.exp(logits)
        total += float((1.0 - post.max(1) / post.sum(1)).sum())
        done += n
    return total / mc_samples

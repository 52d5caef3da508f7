"""A synthetic feature dataset for *which features* a representation learns (Xue et al. 2023).

:func:`make_subclasses` (``workbench.data.load("subclasses", ...)``) builds vectors from orthonormal feature
directions plus isotropic Gaussian noise, after the data model of Xue, Joshi, Gan, Chen & Mirzasoleiman (2023,
"Which features are learnt by contrastive learning? On the role of simplicity bias in class collapse and feature
suppression", ICML, Sec. 3 and 5): an example is a sum of feature vectors, each of a given *strength* (norm), plus
noise. A feature of larger strength explains more of the input's variance and is "easier" (preferred by the
simplicity bias of gradient descent); a weaker one is "harder".

- superclass / subclass: the label is the superclass and the ``subclass`` factor says which of its subclasses an
  example comes from (class collapse: supervised contrastive learning can merge the subclasses of a class);
- an easy / hard feature pair: the weak subclass feature is the *hard*, class-relevant one; an independent,
  class-irrelevant *easy* feature (factor ``easy``) of controllable strength is added with ``easy_strength > 0``
  (feature suppression: unsupervised contrastive learning with a small embedding can learn the easy feature
  instead of the hard one). ``subclass_strength`` sets how hard the hard feature is.

Every random quantity comes from child streams of ``seed`` in a fixed order, so datasets that differ only in a
strength hold the same labels, factors and noise (their difference is that feature's contribution alone).
"""
from __future__ import annotations

import numbers

import numpy as np

from .._validation import check_positive_int
from .dataset import Dataset, Split

__all__ = ["make_subclasses"]


def _check_seed(seed) -> int:
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or seed < 0:
        raise TypeError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _check_strength(value, name: str, *, positive: bool = False) -> float:
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    if not np.isfinite(value) or value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {value!r}")
    return float(value)


def _directions(rng: np.random.Generator, dim: int, n: int, what: str) -> np.ndarray:
    """``n`` orthonormal directions in R^dim (rows), randomly rotated."""
    if n > dim:
        raise ValueError(f"dim={dim} is too small for {n} orthogonal feature directions ({what}); raise dim to at "
                         f"least {n}")
    q, _ = np.linalg.qr(rng.standard_normal((dim, n)))
    return q.T


def make_subclasses(n_train: int = 2000, n_test: int = 1000, dim: int = 32, n_superclasses: int = 2,
                    subclasses_per_class: int = 3, class_strength: float = 2.0, subclass_strength: float = 1.0,
                    noise: float = 1.0, n_easy: int = 4, easy_strength: float = 0.0, seed: int = 0) -> Dataset:
    """Superclasses made of subclasses: the label is the superclass, the ``subclass`` factor the subclass.

    Generative model (after Xue et al. 2023, ICML: Definition 3.1's class feature, subclass feature and noise,
    and Sec. 5's easy class-irrelevant feature)::

        c ~ U{0 .. K-1},  s ~ U{0 .. S-1},  e ~ U{0 .. E-1}           (superclass, subclass within it, easy value)
        x = class_strength · u_c + subclass_strength · v_(c,s) + easy_strength · b_e + noise · ξ,  ξ ~ N(0, I_dim)

    with ``u_0 .. u_{K-1}``, ``v_(0,0) .. v_(K-1,S-1)`` and ``b_0 .. b_{E-1}`` mutually orthonormal (a random
    rotation of R^dim), ``K = n_superclasses``, ``S = subclasses_per_class``, ``E = n_easy``; ``e`` is drawn
    independently of ``c`` and ``s`` (class-irrelevant). The subclass means of one superclass are
    ``subclass_strength · √2`` apart: a representation that keeps only what the label needs can merge them
    (class collapse), one that keeps every feature of the input separates them. ``easy_strength = 0`` (default)
    leaves the easy feature out; its factor is still drawn, so the labels, subclasses and noise do not change with
    ``easy_strength``.

    Parameters
    ----------
    n_train, n_test : split sizes (``n_test`` may be 0 to leave the split out).
    dim : input dimension, at least ``K + K·S``.
    n_superclasses, subclasses_per_class : ``K >= 2`` superclasses of ``S >= 2`` subclasses each.
    class_strength, subclass_strength : norms of the superclass and subclass feature vectors (>= 0).
    noise : standard deviation of the isotropic noise (>= 0).
    n_easy : number of values of the easy feature (>= 2); ``dim`` must be at least ``K + K·S + n_easy``.
    easy_strength : norm of the easy feature vectors (>= 0; 0: absent).
    seed : seed of the directions and of every split's draws (independent child streams).

    Returns
    -------
    Dataset
        ``kind="vectors"``, inputs float32 ``[N, dim]``, labels = superclass. Factors: ``superclass``
        (categorical, = labels), ``subclass`` (categorical, the global code ``c·S + s``, named ``"c{c}.s{s}"``) and
        ``easy`` (categorical). ``options`` holds ``superclass_of`` (subclass code → superclass) and the feature
        directions.

    Examples
    --------
    >>> from workbench import data
    >>> ds = data.load("subclasses", n_train=60, n_test=30, seed=0)
    >>> ds["train"].inputs.shape, sorted(ds["train"].factors)
    ((60, 32), ['easy', 'subclass', 'superclass'])
    >>> ds.options["superclass_of"]
    [0, 0, 0, 1, 1, 1]
    >>> with_easy = data.load("subclasses", n_train=60, n_test=30, easy_strength=4.0, seed=0)
    >>> bool((with_easy["train"].factors["subclass"] == ds["train"].factors["subclass"]).all())
    True
    """
    n_train = check_positive_int(n_train, "n_train")
    n_test = check_positive_int(n_test, "n_test", minimum=0)
    dim = check_positive_int(dim, "dim")
    k = check_positive_int(n_superclasses, "n_superclasses", minimum=2)
    s = check_positive_int(subclasses_per_class, "subclasses_per_class", minimum=2)
    class_strength = _check_strength(class_strength, "class_strength")
    subclass_strength = _check_strength(subclass_strength, "subclass_strength")
    noise = _check_strength(noise, "noise")
    n_easy = check_positive_int(n_easy, "n_easy", minimum=2)
    easy_strength = _check_strength(easy_strength, "easy_strength")
    seed = _check_seed(seed)
    ss_params, ss_train, ss_test = np.random.SeedSequence(seed).spawn(3)
    dirs = _directions(np.random.default_rng(ss_params), dim, k + k * s + n_easy,
                       "superclasses, their subclasses and the easy feature")
    u, v, b = dirs[:k], dirs[k:k + k * s], dirs[k + k * s:]

    def sample(n: int, rng: np.random.Generator) -> Split:
        c = rng.integers(0, k, n)
        sub = c * s + rng.integers(0, s, n)
        e = rng.integers(0, n_easy, n)
        x = (class_strength * u[c] + subclass_strength * v[sub] + easy_strength * b[e]
             + noise * rng.standard_normal((n, dim)))
        return Split(inputs=x.astype(np.float32), labels=c.astype(np.int64),
                     factors={"superclass": c.astype(np.int64), "subclass": sub.astype(np.int64),
                              "easy": e.astype(np.int64)})

    splits = {name: sample(n, np.random.default_rng(ss))
              for name, n, ss in (("train", n_train, ss_train), ("test", n_test, ss_test)) if n}
    class_names = [f"c{c}" for c in range(k)]
    sub_names = [f"c{c}.s{j}" for c in range(k) for j in range(s)]
    factor_info = {"superclass": {"kind": "categorical", "values": class_names},
                   "subclass": {"kind": "categorical", "values": sub_names,
                                "description": "global subclass code c·S + s; superclass_of maps it to c"},
                   "easy": {"kind": "categorical", "values": [f"easy{j}" for j in range(n_easy)],
                            "description": "the class-irrelevant easy feature (invisible when easy_strength=0)"}}
    options = dict(n_train=n_train, n_test=n_test, dim=dim, n_superclasses=k, subclasses_per_class=s,
                   class_strength=class_strength, subclass_strength=subclass_strength, noise=noise, n_easy=n_easy,
                   easy_strength=easy_strength, seed=seed, superclass_of=[c for c in range(k) for _ in range(s)],
                   class_directions=u.tolist(), subclass_directions=v.tolist(), easy_directions=b.tolist())
    return Dataset(name="subclasses", kind="vectors", splits=splits, class_names=class_names,
                   factor_info=factor_info, options=options)

"""The one measure registry: every shipped measure, by name, with what it takes and returns.

Each entry (:class:`Measure`) records the measure's name, family, inputs (:data:`TAKES`), the shape of its
result (:data:`RETURNS`), its reference, whether it is exact or stochastic, and the one function that
computes it. Adding a measure is one :func:`register` call. :func:`compute` applies any measure by name to
data in the data-first convention and returns the tidy results schema (:mod:`workbench.results`);
:class:`workbench.Study`, the figures, dashboards and ``workbench measures`` pick measures from here.

>>> import numpy as np
>>> from workbench.measures import compute, get
>>> get("rankme").takes, get("cka").returns
('x', 'layer_pair')
>>> x = np.random.default_rng(0).normal(size=(200, 8)) @ np.diag([1, 1, 1, 0, 0, 0, 0, 0])
>>> round(float(compute("rankme", x)["value"].iloc[0]), 2)      # rank-3 data: RankMe ≈ 3
3.0
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import pandas as pd

from . import dynamics, probing, similarity, spectrum, transfer
from ._validation import Data, Flag, Instance, Options, declare
from .activations import as_layers
from .results import tidy

__all__ = ["Measure", "TAKES", "RETURNS", "REGISTRY", "register", "get", "names", "measures_table", "compute",
           "Inputs"]

#: what a measure takes (the :class:`Inputs` fields it needs)
TAKES = {
    "x": "one representation [N, D] per layer",
    "x, labels": "one representation per layer and the examples' class labels",
    "x, groups": "one representation per layer and the group of each row (the augmented views of one input)",
    "tokens": "token features [B, T, D] of a dense layer (or [M, D] with image_ids=)",
    "x, views": "two representations of the same examples under two augmentations (positive pairs)",
    "x, fit": "a representation to evaluate and a labelled training representation to fit a probe on",
    "a, b": "two representations of the same examples (layers of one run, or of two runs)",
    "outputs, labels": "a source model's outputs (class probabilities) and target labels",
    "model, loss": "a model and a loss(model) on a fixed batch (its training objective)",
    "model, data": "a model and a data split",
}
#: the shape of a measure's result
RETURNS = {
    "per_layer": "one value per layer",
    "layer_pair": "one value per pair of layers (layer × layer_b)",
    "per_model": "one value for the whole model",
    "per_example": "one value per example (``example`` column)",
}


@dataclass(frozen=True)
class Measure:
    """One registered measure. ``fn`` is called as ``fn(inputs, **options)`` and returns rows (dicts with at
    least ``value``; ``measure`` defaults to :attr:`name`) for one layer, one layer pair or the model."""

    name: str
    family: str
    takes: str
    returns: str
    reference: str
    fn: Callable[..., Any] = field(repr=False)
    exact: bool = True
    description: str = ""
    requires: tuple[str, ...] = ()  # options the caller must pass (e.g. the classifier's weights for nc3)

    @property
    def function(self) -> Callable[..., Any]:
        """The public function that computes the measure (what the adapter ``fn`` calls)."""
        return getattr(self.fn, "source", self.fn)


REGISTRY: dict[str, Measure] = {}


def _example_entry(one: Any, **options: Any) -> dict:
    """``fn`` of the valid example of :func:`register`'s declaration (the generated tests register it once)."""
    return {"value": 0.0}


@declare(name=Instance(str, example="declared_example"), family=Instance(str, example="example"),
         takes=Options(*TAKES), returns=Options(*RETURNS),
         reference=Instance(str, example="the valid example of register's declaration (tests/test_params.py)"),
         fn=Instance(Callable, example=_example_entry), exact=Flag(), description=Instance(str),
         requires=Instance(Iterable))
def register(name: str, family: str, takes: str, returns: str, reference: str, fn: Callable[..., Any], *,
             exact: bool = True, description: str = "", requires: tuple[str, ...] = ()) -> Measure:
    """Add a measure to :data:`REGISTRY` (one entry per measure; a name is registered once)."""
    if name in REGISTRY:
        raise ValueError(f"measure {name!r} is already registered ({REGISTRY[name].family})")
    if takes not in TAKES:
        raise ValueError(f"takes={takes!r} is not one of {list(TAKES)}")
    if returns not in RETURNS:
        raise ValueError(f"returns={returns!r} is not one of {list(RETURNS)}")
    REGISTRY[name] = Measure(name, family, takes, returns, reference, fn, exact, description, tuple(requires))
    return REGISTRY[name]


@declare(name=Instance(str, example="rankme"))
def get(name: str) -> Measure:
    """The registered measure ``name``; a ValueError lists the names when there is none."""
    if not isinstance(name, str) or name not in REGISTRY:
        raise ValueError(f"unknown measure {name!r}; registered measures: {names()} (see `workbench measures`)")
    return REGISTRY[name]


@declare(takes=Options(*TAKES, none=True), family=Instance(str, none=True))
def names(*, takes: str | None = None, family: str | None = None) -> list[str]:
    """Registered measure names, optionally only those taking ``takes`` or of ``family``."""
    return [m.name for m in REGISTRY.values()
            if (takes is None or m.takes == takes) and (family is None or m.family == family)]


@declare()
def measures_table() -> pd.DataFrame:
    """One row per registered measure: name, family, takes, returns, exact, reference (``workbench measures``)."""
    return pd.DataFrame([{"name": m.name, "family": m.family, "takes": m.takes, "returns": m.returns,
                          "exact": m.exact, "function": f"{m.function.__module__}.{m.function.__name__}",
                          "reference": m.reference} for m in REGISTRY.values()])


@dataclass
class Inputs:
    """What a caller can give a measure. Representations are layer mappings (:func:`as_layers`)."""

    x: Mapping[str, Any] | None = None
    labels: Any = None
    groups: Any = None
    views: Mapping[str, Any] | None = None
    fit: tuple[Mapping[str, Any], Any] | None = None
    b: Mapping[str, Any] | None = None
    outputs: Any = None
    model: Any = None
    loss: Callable[[Any], Any] | None = None
    data: Any = None

    def need(self, measure: Measure) -> None:
        have = {"x": self.x is not None, "tokens": self.x is not None, "labels": self.labels is not None,
                "groups": self.groups is not None,
                "views": self.views is not None,
                "fit": self.fit is not None, "a": self.x is not None, "b": True,  # b=None: a against itself
                "outputs": self.outputs is not None, "model": self.model is not None,
                "loss": self.loss is not None, "data": self.data is not None}
        missing = [k for k in (p.strip() for p in measure.takes.split(",")) if not have[k]]
        if missing:
            raise ValueError(f"measure {measure.name!r} takes {measure.takes} ({TAKES[measure.takes]}); "
                             f"missing: {', '.join(missing)}")


@declare(name=Instance(str, example="tolerance"),
         x=Data("layers", none=True, example=lambda: Data("layers").example(), bad=[np.ones(Data.N), {}, "x"],
                scale="any"),
         labels=Data("labels", none=True, example=lambda: Data("labels").example()),
         b=Data("layers", none=True, bad=[{}, "b"], scale="any"), groups=Data("any", none=True),
         views=Data("layers", none=True, bad=[{}, "views"], scale="any"),
         fit=Data("any", none=True, bad=[(np.ones((Data.N, Data.D)),), "fit"]), outputs=Data("any", none=True),
         model=Data("any", none=True), loss=Instance(Callable, none=True), data=Data("any", none=True))
def compute(name: str, x: Any = None, labels: Any = None, *, b: Any = None, groups: Any = None, views: Any = None,
            fit: tuple[Any, Any] | None = None, outputs: Any = None, model: Any = None,
            loss: Callable[[Any], Any] | None = None, data: Any = None, **options: Any) -> pd.DataFrame:
    """Measure ``name`` (a registered name) on data given in the data-first convention, as a tidy table.

    Parameters
    ----------
    name : a name from :func:`names` (``workbench measures`` lists them with their references).
    x : array, tensor, :class:`~workbench.activations.Activations` or mapping layer -> [N, D] (the first
        representation ``a`` of a pair measure).
    labels : class labels of the rows of ``x`` (measures taking ``labels``; probes: the labels of ``x``).
    b : second representation of a pair measure (None: ``x`` against itself).
    groups : group of each row of ``x`` (LiDAR: rows that are augmented views of one input share a group).
    views : second augmented view of the rows of ``x`` (alignment).
    fit : ``(x_train, labels_train)`` a probe is fitted on (measures taking ``fit``).
    outputs : a source model's class probabilities [N, K] (LEEP) or hard labels (NCE).
    model, loss, data : a model, a ``loss(model)`` and a data split (model-level measures).
    **options : passed to the measure's function (e.g. ``k=20`` for ``mutual_knn``).

    Returns
    -------
    DataFrame in the results schema: per-layer measures one row per layer (``layer``, ``layer_index`` from
    the order of ``x``), pair measures one row per layer pair (plus ``layer_b``, ``layer_index_b``),
    model-level measures one row (or one per layer where the measure is defined per layer).
    """
    m = get(name)
    if fit is not None and not (isinstance(fit, (tuple, list)) and len(fit) == 2):
        raise TypeError(f"fit must be a pair (x_train, labels_train), got {type(fit).__name__}"
                        + (f" of length {len(fit)}" if isinstance(fit, (tuple, list)) else ""))
    inputs = Inputs(x=None if x is None else as_layers(x, "x")[0], labels=labels, groups=groups,
                    views=None if views is None else as_layers(views, "views")[0],
                    fit=None if fit is None else (as_layers(fit[0], "fit[0]")[0], fit[1]),
                    b=None if b is None else as_layers(b, "b")[0], outputs=outputs, model=model, loss=loss,
                    data=data)
    inputs.need(m)
    for req in m.requires:
        if not any(opt in options for opt in req.split("|")):
            raise ValueError(f"measure {name!r} needs the option {' or '.join(f'{o}=' for o in req.split('|'))} "
                             f"({m.description})")
    rows = list(_rows(m, inputs, options))
    for r in rows:
        r.setdefault("measure", m.name)
    return tidy(rows, layers=list(inputs.x) if inputs.x is not None else None)


def _rows(m: Measure, inputs: Inputs, options: Mapping[str, Any]):
    if m.returns == "per_layer" and m.takes in ("x", "x, labels", "x, groups", "x, views", "x, fit", "tokens"):
        for layer, value in inputs.x.items():
            try:
                out = m.fn(_One(inputs, layer, value), **options)
            except ValueError as err:
                raise ValueError(f"layer {layer!r}, {m.name}: {err}") from err
            for r in out if isinstance(out, list) else [out]:
                yield {"layer": layer, **r}
    else:
        yield from m.fn(inputs, **options)


class _One:
    """The inputs seen by a per-layer measure: ``x`` (and ``views`` / ``fit``) of one layer."""

    def __init__(self, inputs: Inputs, layer: str, x: Any):
        self.layer, self.x, self.labels, self.groups = layer, x, inputs.labels, inputs.groups
        self.views = None if inputs.views is None else inputs.views[layer]
        self.fit = None if inputs.fit is None else (inputs.fit[0][layer], inputs.fit[1])


# --------------------------------------------------------------------------------------- adapters
def _value(fn: Callable[..., Any], *, extra: Mapping[str, Any] | None = None, labels: bool = False,
           views: bool = False, groups: bool = False) -> Callable[..., dict]:
    """A per-layer adapter: ``fn(x[, labels | groups | views], **options)`` → ``{"value": float}``."""
    def adapter(one: _One, **options: Any) -> dict:
        args = ([one.x] + ([one.labels] if labels else []) + ([one.groups] if groups else [])
                + ([one.views] if views else []))
        return {"value": float(fn(*args, **{**(extra or {}), **options}))}
    adapter.source = fn
    return adapter


def _item(fn: Callable[..., Any], key: str, *, labels: bool = True) -> Callable[..., dict]:
    """A per-layer adapter picking ``key`` from a function returning a dict or a result object."""
    def adapter(one: _One, **options: Any) -> dict:
        out = fn(one.x, one.labels, **options) if labels else fn(one.x, **options)
        return {"value": float(out[key] if isinstance(out, Mapping) else getattr(out, key))}
    adapter.source = fn
    return adapter


def _alpha_req(one: _One, **options: Any) -> list[dict]:
    res = spectrum.alpha_req(one.x, **options)
    return [{"value": float(res.alpha)}, {"measure": "alpha_req_r2", "value": float(res.r2)}]


_alpha_req.source = spectrum.alpha_req


def _probe(fn: Callable[..., pd.DataFrame]) -> Callable[..., dict]:
    """A per-layer adapter: fit the probe on ``fit`` and report its accuracy on ``x`` (with its CI)."""
    def adapter(one: _One, **options: Any) -> dict:
        (x_fit, y_fit), ev = one.fit, "evaluated"
        table = fn(x_fit, y_fit, evals={ev: (one.x, one.labels)}, **options)
        row = table[(table["split"] == ev) & (table["measure"] == "accuracy")].iloc[0]
        return {"value": float(row["value"]), "ci_low": float(row["ci_low"]), "ci_high": float(row["ci_high"])}
    adapter.source = fn
    return adapter


def _pairs(fn: Callable[..., pd.DataFrame], **fixed: Any) -> Callable[..., list[dict]]:
    """A layer-pair adapter around a ``*_matrix(a, b, ...)`` function (its matrix output)."""
    def adapter(inputs: Inputs, **options: Any) -> list[dict]:
        mat = fn(inputs.x, inputs.b, **{**fixed, **options}, output="matrix")
        names_b = list(inputs.b) if inputs.b is not None else list(inputs.x)
        order_b = {n: i for i, n in enumerate(names_b)}
        return [{"layer": str(la), "layer_b": str(lb), "layer_index_b": order_b[str(lb)],
                 "value": float(mat.loc[la, lb])} for la in mat.index for lb in mat.columns]
    adapter.source = fn
    return adapter


def _subclass_spread(one: _One, *, superclass_of: Any) -> dict:
    """``subclass_spread`` with ``labels`` = subclass ids and ``superclass_of`` = subclass id → superclass id (a
    sequence indexed by the id, or a mapping)."""
    sub = np.asarray(one.labels)
    if isinstance(superclass_of, Mapping):
        missing = sorted({int(s) for s in np.unique(sub)} - {int(k) for k in superclass_of})
        lookup = {int(k): v for k, v in superclass_of.items()}
    else:
        lookup = dict(enumerate(np.asarray(superclass_of).tolist())) if np.ndim(superclass_of) == 1 else None
        if lookup is None:
            raise TypeError(f"superclass_of must be a 1-D sequence (subclass id -> superclass id) or a dict, got "
                            f"{type(superclass_of).__name__}")
        missing = sorted({int(s) for s in np.unique(sub)} - set(lookup))
    if missing:
        raise ValueError(f"superclass_of gives no superclass for subclass id(s) {missing[:5]}; map every subclass id "
                         "of the labels")
    sup = np.array([lookup[int(s)] for s in sub])
    return {"value": float(spectrum.subclass_spread(one.x, sub, sup))}


_subclass_spread.source = spectrum.subclass_spread


def _source(fn: Callable[..., float]) -> Callable[..., list[dict]]:
    def adapter(inputs: Inputs, **options: Any) -> list[dict]:
        return [{"value": float(fn(inputs.outputs, inputs.labels, **options))}]
    adapter.source = fn
    return adapter


def _model(fn: Callable[..., pd.DataFrame], how: str, name: str) -> Callable[..., list[dict]]:
    """A model-level adapter: ``fn(model, loss | data, **options)`` → its rows of measure ``name``."""
    def adapter(inputs: Inputs, **options: Any) -> list[dict]:
        frame = fn(inputs.model, inputs.loss if how == "loss" else inputs.data, **options)
        keep = [c for c in ("layer", "layer_index", "example", "measure", "value") if c in frame]
        return [r for r in frame[keep].to_dict("records") if r.get("measure", name) == name]
    adapter.source = fn
    return adapter


# --------------------------------------------------------------------------------------- the entries
_GARRIDO = "Garrido et al. 2023, RankMe, ICML"
_ROY = "Roy & Vetterli 2007, The effective rank, EUSIPCO"
_PAPYAN = "Papyan, Han & Donoho 2020, Prevalence of neural collapse, PNAS"
_WANG_ISOLA = "Wang & Isola 2020, Understanding contrastive representation learning, ICML"
_KORNBLITH = "Kornblith et al. 2019, Similarity of neural network representations revisited, ICML"

register("rankme", "spectrum", "x", "per_layer", _GARRIDO, _value(spectrum.rankme),
         description="exp of the entropy of the normalized singular values (uncentered)")
register("effective_rank", "spectrum", "x", "per_layer", _ROY, _value(spectrum.effective_rank),
         description="exp of the entropy of the normalized centered singular values")
register("participation_ratio", "spectrum", "x", "per_layer",
         "Gao et al. 2017, A theory of multineuronal dimensionality (bioRxiv)", _value(spectrum.participation_ratio))
register("stable_rank", "spectrum", "x", "per_layer", "Rudelson & Vershynin 2007, J. ACM",
         _value(spectrum.stable_rank))
register("alpha_req", "spectrum", "x", "per_layer", "Agrawal et al. 2022, α-ReQ, NeurIPS", _alpha_req,
         description="power-law decay exponent of the covariance spectrum (+ alpha_req_r2, the fit's R²)")
register("singular_value_entropy", "spectrum", "x", "per_layer",
         "Roy & Vetterli 2007 (entropy of the normalized singular values)", _value(spectrum.singular_value_entropy))
register("largest_singular_value_ratio", "spectrum", "x", "per_layer",
         "σ₁ / Σ σᵢ (share of the top singular value)", _value(spectrum.largest_singular_value_ratio))
register("uniformity", "contrastive", "x", "per_layer", _WANG_ISOLA, _value(spectrum.uniformity))
register("alignment", "contrastive", "x, views", "per_layer", _WANG_ISOLA, _value(spectrum.alignment, views=True))
register("tolerance", "contrastive", "x, labels", "per_layer",
         "Wang & Liu 2021, Understanding the behaviour of contrastive loss, CVPR",
         _value(spectrum.tolerance, labels=True))
for _k, _what in (("nc1", "tr(Σ_W Σ_B⁺)/C, within-class variability collapse"),
                  ("nc2_equinorm", "std/mean of the centered class-mean norms"),
                  ("nc2_equiangular", "std of the cosines between centered class means"),
                  ("nc3", "‖W/‖W‖ − M/‖M‖‖², self-duality (needs the classifier: option weights=W)"),
                  ("nc4", "disagreement of the classifier with nearest class mean (needs weights= or logits=)")):
    register(_k, "classes", "x, labels", "per_layer", _PAPYAN, _item(spectrum.neural_collapse, _k),
             description=_what, requires={"nc3": ("weights",), "nc4": ("weights|logits",)}.get(_k, ()))
register("cdnv", "classes", "x, labels", "per_layer", "Galanti, Gyorgy & Hutter 2022, ICLR",
         _value(spectrum.cdnv, labels=True))
register("subclass_spread", "classes", "x, labels", "per_layer",
         "Xue et al. 2023, Which features are learnt by contrastive learning?, ICML (class collapse); η² within "
         "superclasses (Pearson 1903)", _subclass_spread,
         description="labels = subclass ids; option superclass_of= (subclass id -> superclass id): between-subclass "
                     "share of the within-superclass scatter (0 = subclasses collapsed)", requires=("superclass_of",))
register("lidar", "classes", "x, groups", "per_layer", "Thilak et al. 2024, LiDAR, ICLR",
         _value(spectrum.lidar, groups=True),
         description="the groups are the augmented views of one input (the surrogate task's classes)")
register("dse", "dense", "tokens", "per_layer", "Dai et al. 2025, Dense representation Structure Estimator, NeurIPS",
         _item(spectrum.dse, "dse", labels=False), exact=False,
         description="token features [B, T, D] (or [M, D] with image_ids=); k-means pseudo-classes (seeded)")
register("logme", "transfer", "x, labels", "per_layer", "You et al. 2021, LogME, ICML",
         _value(transfer.logme, labels=True))
register("hscore", "transfer", "x, labels", "per_layer", "Bao et al. 2019, H-score, ICIP",
         _value(transfer.hscore, labels=True))
register("hscore_shrinkage", "transfer", "x, labels", "per_layer",
         "Ibrahim et al. 2022, Newer is not always better (shrinkage H-score), ICLR",
         _value(transfer.hscore, labels=True, extra={"shrinkage": True}))
register("transrate", "transfer", "x, labels", "per_layer", "Huang et al. 2022, TransRate, ICML",
         _value(transfer.transrate, labels=True))
register("leep", "transfer", "outputs, labels", "per_model", "Nguyen et al. 2020, LEEP, ICML", _source(transfer.leep))
register("nce", "transfer", "outputs, labels", "per_model", "Tran, Nguyen & Hassner 2019, NCE, ICCV",
         _source(transfer.nce))
for _name, _fn, _ref, _exact in (
        ("linear_probe", probing.linear_probe, "Alain & Bengio 2016; scikit-learn's logistic objective", True),
        ("knn_probe", probing.knn_probe, "k-NN classifier on the features (Wu et al. 2018)", True),
        ("prototype_probe", probing.prototype_probe, "nearest class mean (Snell et al. 2017)", True),
        ("gaussian_nb_probe", probing.gaussian_nb_probe, "Gaussian naive Bayes on the features", True),
        ("mlp_probe", probing.mlp_probe, "one-hidden-layer MLP probe (Hewitt & Liang 2019)", False)):
    register(_name, "probe", "x, fit", "per_layer", _ref, _probe(_fn), exact=_exact,
             description="accuracy on x of a probe fitted on fit = (x_train, labels_train), with a bootstrap CI")


def _ridge(one: _One, **options: Any) -> dict:
    """``ridge_probe`` on ``fit``, scored on ``x``: R² for float targets (a continuous factor), else accuracy."""
    (x_fit, y_fit), ev = one.fit, "evaluated"
    regression = np.asarray(y_fit).dtype.kind == "f"
    options = {"task": "regression" if regression else "classification", **options}
    table = probing.ridge_probe(x_fit, y_fit, evals={ev: (one.x, one.labels)}, **options)
    row = table[(table["split"] == ev) & (table["measure"] == ("r2" if options["task"] == "regression"
                                                               else "accuracy"))].iloc[0]
    return {"value": float(row["value"]), "ci_low": float(row["ci_low"]), "ci_high": float(row["ci_high"])}


_ridge.source = probing.ridge_probe


def _circular(one: _One, **options: Any) -> dict:
    """``circular_probe`` on ``fit`` (angles in radians), its mean cosine of the angle error on ``x``."""
    (x_fit, y_fit), ev = one.fit, "evaluated"
    table = probing.circular_probe(x_fit, y_fit, evals={ev: (one.x, one.labels)}, **options)
    row = table[(table["split"] == ev) & (table["measure"] == "circular_cosine")].iloc[0]
    return {"value": float(row["value"]), "ci_low": float(row["ci_low"]), "ci_high": float(row["ci_high"])}


_circular.source = probing.circular_probe
register("ridge_probe", "probe", "x, fit", "per_layer", "Hoerl & Kennard 1970; alpha by exact leave-one-out (Allen "
         "1974)", _ridge, description="R² on x (float targets: a continuous factor) or accuracy (class ids) of a "
         "ridge probe fitted on fit = (x_train, targets_train), with a bootstrap CI; a Study reads a factor with "
         "measure_options={'ridge_probe': {'target': 'x'}}")
register("circular_probe", "probe", "x, fit", "per_layer", "ridge onto (sin kθ, cos kθ); mean cosine of the angle "
         "error (Mardia & Jupp 2000, Directional statistics)", _circular,
         description="mean cos of the angle error on x of a ridge probe of an angle (radians) fitted on fit; a Study "
                     "reads a factor with measure_options={'circular_probe': {'target': 'rotation'}} (symmetry=k "
                     "for k-fold symmetric objects)")
register("invariance", "similarity", "x, views", "per_layer",
         "Ericsson, Gouk & Hospedales 2021, Why do self-supervised models transfer? Investigating the impact of "
         "invariance, NeurIPS (Mahalanobis cosine of z(x), z(T(x)); chance level removed)",
         _value(similarity.invariance, views=True),
         description="x = features of the examples, views = of the same examples transformed; a Study makes the "
                     "transformed copy with measure_options={'invariance': {'transform': 'color'}}")
for _name, _fn, _fixed, _ref in (
        ("cka", similarity.cka_matrix, {}, _KORNBLITH),
        ("cka_debiased", similarity.cka_matrix, {"debiased": True}, "Song et al. 2012 (unbiased HSIC); "
                                                                     + _KORNBLITH),
        ("cka_rbf", similarity.cka_matrix, {"kernel": "rbf"}, _KORNBLITH),
        ("cca", similarity.cca_matrix, {}, "Hotelling 1936; mean canonical correlation (Raghu et al. 2017)"),
        ("svcca", similarity.svcca_matrix, {}, "Raghu et al. 2017, SVCCA, NeurIPS"),
        ("pwcca", similarity.pwcca_matrix, {}, "Morcos, Raghu & Bengio 2018, NeurIPS"),
        ("shape_distance", similarity.shape_matrix, {}, "Williams et al. 2021, Generalized shape metrics, NeurIPS"),
        ("rsa", similarity.rsa_matrix, {}, "Kriegeskorte et al. 2008, RSA, Front. Syst. Neurosci."),
        ("mutual_knn", similarity.mutual_knn_matrix, {}, "Huh et al. 2024, The platonic representation "
                                                        "hypothesis, ICML"),
        ("jaccard_knn", similarity.jaccard_knn_matrix, {}, "Klabunde et al. 2023 (k-NN Jaccard)")):
    register(_name, "similarity", "a, b", "layer_pair", _ref, _pairs(_fn, **_fixed))
for _name, _semi in (("unit_matching", False), ("unit_semimatching", True)):
    register(_name, "similarity", "a, b", "layer_pair", "Li et al. 2016, Convergent learning, ICLR",
             _pairs(similarity.unit_matching_matrix, semi=_semi),
             description=("mean |correlation| of units paired " + ("to their best match, both directions averaged"
                          if _semi else "one-to-one (Hungarian)") + "; not rotation-invariant, unlike CKA"))
register("grad_norm", "dynamics", "model, loss", "per_layer", "‖∂L/∂θ_layer‖₂ of the training objective",
         _model(dynamics.layer_grad_norms, "loss", "grad_norm"))
register("skip_loss_increase", "dynamics", "model, loss", "per_layer",
         "Gromov et al. 2024 (loss increase when a block is skipped)",
         _model(dynamics.layer_skip_loss, "loss", "skip_loss_increase"))
register("hessian_top_eigenvalue", "dynamics", "model, loss", "per_model",
         "Cohen et al. 2021, edge of stability (power iteration on Hessian-vector products)",
         _model(dynamics.hessian_top_eigenvalue, "loss", "hessian_top_eigenvalue"), exact=False)
register("output_variance", "dynamics", "model, data", "per_layer", "variance of each layer's output vs depth",
         _model(dynamics.output_variance, "data", "output_variance"))
register("angular_distance", "dynamics", "model, data", "per_layer",
         "Gromov et al. 2024, The unreasonable ineffectiveness of the deeper layers",
         _model(dynamics.layer_angular_distance, "data", "angular_distance"))
register("el2n", "dynamics", "model, data", "per_example",
         "Paul, Ganguli & Dziugaite 2021, Deep learning on a data diet, NeurIPS (‖softmax − onehot‖₂)",
         _model(dynamics.el2n_scores, "data", "el2n"))
register("grand", "dynamics", "model, data", "per_example",
         "Paul, Ganguli & Dziugaite 2021 (expected norm of the per-example loss gradient)",
         _model(dynamics.grand_scores, "data", "grand"))

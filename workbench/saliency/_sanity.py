"""Sanity checks for saliency maps (Adebayo et al. 2018): do the maps change when the model does?

Adebayo, Gilmer, Muelly, Goodfellow, Hardt & Kim, "Sanity Checks for Saliency Maps", NeurIPS 2018:

- **model-parameter randomization** (:func:`randomization_check`): re-initialize the model's layers from the
  top (output) down, one more after each step (*cascading*), or one at a time (*independent*), recompute the
  maps of the same inputs and measure their similarity to the trained model's maps. A method whose maps stay
  similar when the weights are random does not explain the model (it acts like an edge detector);
- **data randomization** (:func:`label_randomization_check`): the same similarity between the maps of a model
  trained on the real labels and of the same architecture trained on random labels.

Similarities per example (:data:`SIMILARITIES`), each on the map of :func:`~workbench.saliency.feature_map`:
``spearman`` (rank correlation of the signed maps ``sum_c a_c``), ``spearman_abs`` (of the absolute maps
``sum_c |a_c|``), ``ssim`` (:func:`ssim` of the absolute maps, each divided by its maximum, ``data_range = 1``)
and ``topk_overlap`` (:func:`~workbench.saliency.topk_overlap` of the absolute maps). captum's ``saliency`` is
already ``|gradient|``, so for it ``spearman`` and ``spearman_abs`` coincide. (:func:`~workbench.saliency.drift`'s
``spearman`` ranks ``feature_map(a, channels)``, by default the absolute map: ``spearman_abs`` here.) Quantus'
``ModelParameterRandomisation`` (Hedström et al. 2023) implements the same test independently (Spearman by
default).

>>> import torch
>>> from workbench.models import build
>>> _ = torch.manual_seed(0)
>>> model = build("mlp", input_shape=(6,), num_classes=3, hidden=(32,))
>>> table = randomization_check(model, torch.randn(8, 6), method="saliency", similarity=("spearman_abs",))
>>> table[["layer", "n_randomized", "measure"]].values.tolist()
[[nan, 0, 'spearman_abs'], ['head', 1, 'spearman_abs'], ['fc1', 2, 'spearman_abs']]
>>> float(table["value"].iloc[0])       # step 0: nothing randomized, the maps are the same
1.0
"""
from __future__ import annotations

import contextlib
import copy
import warnings
import zlib
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from scipy.ndimage import uniform_filter
from torch import nn

from .._validation import Data, Instance, Interval, Options, check_choice, check_finite, declare
from ..models import get_module, select_layers
from ..probing import bootstrap_ci
from ..results import tidy
from ._attribute import attribute
from ._drift import rank_correlation, topk_overlap
from ._examples import ATTRIBUTE_RULES, example_model
from ._result import Attribution, feature_map

__all__ = ["randomization_check", "label_randomization_check", "ssim", "SIMILARITIES", "FLAG_LEVEL"]

#: similarity measures between two maps of the same example (module docstring)
SIMILARITIES = ("spearman", "spearman_abs", "ssim", "topk_overlap")

#: a method is flagged (UserWarning) when every randomization step leaves a similarity with a mean of at least this
FLAG_LEVEL = 0.9

# SSIM constants of Wang et al. 2004 (and skimage.metrics.structural_similarity's defaults)
_K1, _K2 = 0.01, 0.03

_SIMILARITY = Instance(str, tuple, list)
_K = Interval(float, 0, 1, closed="right")
_MAPS = Data("any", example=lambda: np.random.default_rng(0).random((4, 8, 8)),
             bad=["a", np.zeros(4), np.full((4, 8, 8), np.nan), np.zeros((4, 3, 3))])


# --------------------------------------------------------------------------------------------- similarities
def _maps(x: Any, name: str) -> np.ndarray:
    """Per-example maps ``[N, *S]`` as a finite float64 array (at least one axis after the examples)."""
    if isinstance(x, Attribution):
        x = x.map("l1")
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().to(torch.float64).numpy()
    if not isinstance(x, (np.ndarray, list, tuple)):
        raise TypeError(f"{name} must be an array or tensor of per-example maps [N, ...], got {type(x).__name__}")
    arr = np.asarray(x)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold numeric map values, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if arr.ndim < 2 or arr.size == 0:
        raise ValueError(f"{name} must be non-empty per-example maps [N, ...] (e.g. [N, H, W]), got shape {arr.shape}")
    check_finite(arr, name)
    return arr


@declare(a=_MAPS, b=Data("any", example=lambda: np.random.default_rng(1).random((4, 8, 8)),
                          bad=["b", np.zeros((4, 8, 9))]),
         win_size=Interval(int, 3), data_range=Interval(float, 0, closed="neither", none=True))
def ssim(a: Any, b: Any, *, win_size: int = 7, data_range: float | None = None) -> np.ndarray:
    """Structural similarity (SSIM) per example between two sets of maps ``[N, *S]`` (Wang et al. 2004).

    ``SSIM(x, y) = mean_w [(2 mu_x mu_y + C1)(2 s_xy + C2)] / [(mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2)]``
    with local means, variances and covariance over a uniform ``win_size``-wide window along every map axis
    (sample covariance, ``n / (n - 1)``), ``C1 = (0.01 R)^2``, ``C2 = (0.03 R)^2`` and ``R = data_range``; the mean
    is taken over the positions whose window lies inside the map (a border of ``(win_size - 1) // 2`` is
    cropped). These are the defaults of ``skimage.metrics.structural_similarity`` (Wang et al., "Image quality
    assessment: from error visibility to structural similarity", IEEE TIP 13(4), 2004). Computed in float64.

    Parameters
    ----------
    a, b : arrays or tensors ``[N, *S]`` (e.g. ``[N, H, W]`` maps, or ``[N, L]`` signals); an
        :class:`Attribution` is compared through its ``map("l1")``.
    win_size : odd window width, at most the smallest map side.
    data_range : ``R``. None: per example, ``max(a_i, b_i) - min(a_i, b_i)`` over both maps (1 if that is 0).

    Returns
    -------
    float64 array ``[N]``; 1 for identical maps.

    >>> import numpy as np
    >>> x = np.random.default_rng(0).random((2, 8, 8))
    >>> ssim(x, x).tolist()
    [1.0, 1.0]
    """
    a, b = _maps(a, "a"), _maps(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a and b must be maps of the same examples and shape, got {a.shape} and {b.shape}")
    if win_size % 2 == 0:
        raise ValueError(f"win_size must be odd, got {win_size}")
    if min(a.shape[1:]) < win_size:
        raise ValueError(f"win_size={win_size} is larger than the maps' smallest side ({min(a.shape[1:])}, "
                         f"shape {a.shape[1:]}); pass a smaller odd win_size")
    extra = (1,) * (a.ndim - 1)
    if data_range is None:
        both = np.concatenate([a.reshape(len(a), -1), b.reshape(len(b), -1)], axis=1)
        rng = both.max(1) - both.min(1)
        rng = np.where(rng > 0, rng, 1.0).reshape(-1, *extra)
    else:
        rng = float(data_range)
    size = (1,) + (win_size,) * (a.ndim - 1)
    n = win_size ** (a.ndim - 1)
    cov = n / (n - 1)
    mu_a, mu_b = uniform_filter(a, size), uniform_filter(b, size)
    var_a = cov * (uniform_filter(a * a, size) - mu_a * mu_a)
    var_b = cov * (uniform_filter(b * b, size) - mu_b * mu_b)
    cov_ab = cov * (uniform_filter(a * b, size) - mu_a * mu_b)
    c1, c2 = (_K1 * rng) ** 2, (_K2 * rng) ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov_ab + c2)) / ((mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2))
    pad = (win_size - 1) // 2
    inner = (slice(None),) + (slice(pad, -pad if pad else None),) * (a.ndim - 1)
    return s[inner].reshape(len(s), -1).mean(1)


def _similarities(a: Attribution, b: Attribution, names: Sequence[str], k: float) -> dict[str, np.ndarray]:
    """Per-example similarity ``[N]`` of two attributions of the same inputs, by measure name."""
    # channel sums in float64 (signed maps cancel)
    signed = [feature_map(x.attributions.to(torch.float64), "sum", kind=x.kind) for x in (a, b)]
    absolute = [feature_map(x.attributions.to(torch.float64), "l1", kind=x.kind) for x in (a, b)]
    out = {}
    for name in names:
        if name == "spearman":
            out[name] = rank_correlation(*signed, constant="nan")
        elif name == "spearman_abs":
            out[name] = rank_correlation(*absolute, constant="nan")
        elif name == "topk_overlap":
            out[name] = topk_overlap(*absolute, k)
        else:  # ssim of the absolute maps scaled to [0, 1] by their maximum
            scaled = []
            for m in absolute:
                m = m.detach().numpy()
                top = m.reshape(len(m), -1).max(1).reshape(-1, *(1,) * (m.ndim - 1))
                scaled.append(np.divide(m, top, out=np.zeros_like(m), where=top > 0))
            out[name] = ssim(*scaled, win_size=min(7, _largest_odd(min(scaled[0].shape[1:]))), data_range=1.0)
    return out


def _largest_odd(n: int) -> int:
    return n if n % 2 else n - 1


def _check_similarity(similarity: Any, shape: tuple[int, ...]) -> list[str]:
    names = [similarity] if isinstance(similarity, str) else list(similarity)
    if not names:
        raise ValueError(f"similarity is empty; choose from {list(SIMILARITIES)}")
    for name in names:
        check_choice(name, SIMILARITIES, "similarity")
    if len(set(names)) != len(names):
        raise ValueError(f"similarity names a measure twice: {names}")
    if "ssim" in names and (len(shape) < 1 or min(shape) < 3):
        raise ValueError(f"similarity='ssim' needs maps of at least 3 positions along every axis, got maps of shape "
                         f"{shape}; drop 'ssim' from similarity")
    return names


# --------------------------------------------------------------------------------------------- randomization
@contextlib.contextmanager
def _seeded(seed: int, model: nn.Module) -> Iterator[None]:
    """torch's global generators (CPU and the model's CUDA devices) and numpy's legacy global one (captum's
    GradientShap draws its interpolation points from ``np.random``) seeded with ``seed``; the caller's states are
    restored afterwards."""
    devices = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})
    state = np.random.get_state()
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            np.random.seed(seed % 2 ** 32)
            yield
    finally:
        np.random.set_state(state)


def _owners(module: nn.Module) -> tuple[list[nn.Module], list[str]]:
    """Submodules of ``module`` owning parameters that ``reset_parameters()`` re-initializes, and the names of
    parameters owned by submodules without it (left as they are)."""
    resettable, fixed = [], []
    for path, sub in module.named_modules():
        own = list(sub.named_parameters(recurse=False))
        if not own:
            continue
        if callable(getattr(sub, "reset_parameters", None)):
            resettable.append(sub)
        else:
            fixed += [f"{path}.{n}" if path else n for n, _ in own]
    return resettable, fixed


def _layers(model: nn.Module, layers: Any) -> dict[str, str]:
    """Layers to randomize, ``name -> module path`` in forward order: the chosen probe points holding parameters."""
    try:
        chosen = select_layers(model, layers)
    except ValueError as err:
        raise ValueError(f"layers: {err}") from None
    out = {}
    for name, path in chosen.items():
        if any(True for _ in get_module(model, path).parameters()):
            out[name] = path
        elif layers is not None and not isinstance(layers, str):
            raise ValueError(f"layers names {name!r}, which has no parameters to randomize; leave it out")
    if not out:
        raise ValueError(f"layers selects no module with parameters among {list(chosen)}; pass probe points or "
                         "module paths holding weights (workbench.models.probe_points(model))")
    return out


def _randomize(model: nn.Module, path: str, seed: int) -> list[str]:
    """Re-initialize the layer at ``path`` in place with its modules' own ``reset_parameters()`` under ``seed``;
    returns the parameters left untouched (their module has no ``reset_parameters``)."""
    resettable, fixed = _owners(get_module(model, path))
    with _seeded(seed, model), torch.no_grad():
        for sub in resettable:
            sub.reset_parameters()
    return fixed


def _derived_seed(seed: int, key: str) -> int:
    """A torch seed from ``seed`` and a string key (stable across runs and platforms)."""
    return int(np.random.SeedSequence([seed, zlib.crc32(key.encode())]).generate_state(1, np.uint64)[0] >> 2)


def _summary(values: np.ndarray, n_boot: int, seed: int) -> dict[str, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return {"value": np.nan, "ci_low": np.nan, "ci_high": np.nan, "n": 0}
    low, high = bootstrap_ci(finite, n_boot=n_boot, seed=seed)
    return {"value": float(finite.mean()), "ci_low": low, "ci_high": high, "n": int(finite.size)}


def _rows(base: Attribution, other: Attribution, names: Sequence[str], k: float, n_boot: int, seed: int,
          meta: dict[str, Any], dropped: list[str]) -> list[dict[str, Any]]:
    rows = []
    for measure, v in _similarities(base, other, names, k).items():
        row = {**meta, "measure": measure, **_summary(v, n_boot, seed)}
        if row["n"] < len(v):
            where = meta.get("layer")
            dropped.append(f"{measure}{'' if where is None else f' at {where}'}: {len(v) - row['n']}")
        if measure == "topk_overlap":
            row["k"] = k
        rows.append(row)
    return rows


def _warn_dropped(dropped: list[str], n: int) -> None:
    if dropped:
        warnings.warn(f"maps with the same value everywhere (e.g. all-zero gradients of a randomized ReLU network) "
                      f"have no rank correlation; those examples (of {n}) are left out of the mean and the interval, "
                      f"per measure: {'; '.join(dropped[:8])}{' ...' if len(dropped) > 8 else ''} (column n counts "
                      "the examples used)", stacklevel=4)


def _attribute_fn(inputs: Any, method: str, baselines: Any, layer: str | None, batch_size: int | None,
                  output: Any, method_kwargs: dict, seed: int):
    """``run(model, target) -> Attribution`` with every option fixed and torch's generators seeded the same way
    on every call (stochastic methods draw the same noise for every model)."""
    def run(model: nn.Module, target: Any) -> Attribution:
        with _seeded(seed, model):
            return attribute(model, inputs, method=method, target=target, baselines=baselines, layer=layer,
                             batch_size=batch_size, output=output, **method_kwargs)
    return run


@declare(**ATTRIBUTE_RULES, order=Options("cascading", "independent"), similarity=_SIMILARITY, k=_K,
         layers=Instance(str, list, tuple, none=True), seed=Interval(int, 0), n_boot=Interval(int, 1))
def randomization_check(model: nn.Module, inputs: Any, *, method: str = "integrated_gradients", target: Any = None,
                        baselines: Any = None, layer: str | None = None, batch_size: int | None = None,
                        output: Any = None, order: str = "cascading", similarity: str | Sequence[str] = SIMILARITIES,
                        k: float = 0.1, layers: str | Iterable[str] | None = None, seed: int = 0,
                        n_boot: int = 1000, **method_kwargs: Any) -> pd.DataFrame:
    """Model-parameter randomization test (Adebayo et al. 2018, "Sanity Checks for Saliency Maps", NeurIPS).

    The maps ``E(x; theta)`` of the trained model are compared with the maps ``E(x; theta_l)`` of copies whose
    layers are re-initialized: with ``order="cascading"`` step ``s`` re-initializes the top ``s`` layers (output
    layer first, then the one below, ...; the paper's Fig. 2), with ``order="independent"`` each layer alone
    (Fig. 4). For each step and measure the value is the mean over examples of the similarity
    ``sim(E(x_i; theta), E(x_i; theta_l))`` (:data:`SIMILARITIES`, module docstring), with a percentile-bootstrap
    95% interval over examples (:func:`workbench.probing.bootstrap_ci`). A method that explains the model
    should fall towards the similarity of two unrelated models; one that stays near 1 explains the input, not
    the weights — such a result (every step's mean at least :data:`FLAG_LEVEL` for a measure) is flagged with a
    ``UserWarning``.

    Layers are the model's probe points (``workbench.models.probe_points``; e.g. ``stem, stage1, ..., head`` of
    the CNN builder) that hold parameters, in forward order; a layer is re-initialized by calling
    ``reset_parameters()`` — the layer's own initialization — on every submodule of it that owns parameters
    (convolutions, linear maps, norms; BatchNorm's running statistics are reset too). Parameters of modules
    without ``reset_parameters`` (and, with ``layers=None``, parameters outside every probe point, e.g. a
    ViT's position embedding) keep their trained values; a ``UserWarning`` names them. Each layer gets its
    own seed derived from ``seed`` and its module path (the same re-initialization in both orders and any
    selection), under a forked torch generator (the caller's random state is untouched). The caller's model is
    never modified: every step works on a ``copy.deepcopy``.

    Targets: the class attributed is fixed by the trained model (``target``, or its predicted class when
    None) and kept for every randomized copy. Stochastic methods (``gradient_shap``, noise tunnels) draw the
    same noise for every model (torch's generators are seeded with ``seed`` before each attribution).

    Parameters
    ----------
    model, inputs, method, target, baselines, layer, batch_size, output, **method_kwargs
        As in :func:`workbench.saliency.attribute` (``layer`` is the layer *attributed to*, e.g. for Grad-CAM).
    order : "cascading" (top-down, cumulative) or "independent" (one layer at a time).
    similarity : names from :data:`SIMILARITIES` (default all).
    k : fraction of positions in the top-k of ``topk_overlap``.
    layers : layers to randomize: None (every probe point with parameters), a list of probe-point names or
        module paths in forward order, or a regular expression (see ``workbench.models.select_layers``).
    seed : seeds the re-initializations, the attribution noise and the bootstrap.
    n_boot : bootstrap resamples.

    Returns
    -------
    DataFrame in the results schema (:mod:`workbench.results`), one row per step and measure: ``layer`` the
    layer re-initialized at that step (NaN for step 0: the maps recomputed on an untouched copy, 1 when the
    method and model are deterministic), ``layer_index`` its position among the randomized layers (forward
    order, 0 = the lowest), ``value``, ``ci_low``, ``ci_high``; extra columns ``method``, ``order``,
    ``n_randomized`` (layers random at that step: 0, then 1, 2, ... top-down for cascading, 1 for
    independent), ``n`` (examples with a finite value: a constant map has no rank correlation and is left out
    with a warning) and ``k`` (``topk_overlap`` rows).

    Examples
    --------
    >>> import torch
    >>> from workbench.models import build
    >>> _ = torch.manual_seed(0)
    >>> model = build("mlp", input_shape=(6,), num_classes=3, hidden=(32,))
    >>> t = randomization_check(model, torch.randn(16, 6), method="saliency", similarity="topk_overlap", k=0.5)
    >>> t["n_randomized"].tolist()
    [0, 1, 2]
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check_choice(order, ("cascading", "independent"), "order")
    chosen = _layers(model, layers)
    position = {name: i for i, name in enumerate(chosen)}

    # a seed per layer from (seed, module path): a layer gets the same re-initialization in both orders and
    # whatever else is selected
    layer_seeds = {name: _derived_seed(seed, path) for name, path in chosen.items()}
    attribution_seed = _derived_seed(seed, "")
    run = _attribute_fn(inputs, method, baselines, layer, batch_size, output, method_kwargs, attribution_seed)

    trained = copy.deepcopy(model)
    original = run(trained, target)
    targets = original.targets
    names = _check_similarity(similarity, tuple(feature_map(original.attributions, "sum", kind=original.kind)
                                                .shape[1:]))
    fixed = _untouched(model, chosen, layers is None)
    if fixed:
        warnings.warn(f"randomization_check leaves {len(fixed)} parameter(s) at their trained values (no "
                      f"reset_parameters() or outside the randomized layers): {fixed[:8]}"
                      f"{' ...' if len(fixed) > 8 else ''}", stacklevel=3)

    meta = {"method": original.method, "order": order}
    dropped: list[str] = []
    # step 0: the maps recomputed on an untouched copy (1 when the pipeline is deterministic)
    rows = _rows(original, run(copy.deepcopy(model), targets), names, k, n_boot, seed,
                 {**meta, "layer": None, "layer_index": None, "n_randomized": 0}, dropped)
    top_down = list(reversed(list(chosen)))
    randomized = copy.deepcopy(model)
    for step, name in enumerate(top_down, start=1):
        if order == "independent":
            randomized = copy.deepcopy(model)
        _randomize(randomized, chosen[name], layer_seeds[name])
        other = run(randomized, targets)
        rows += _rows(original, other, names, k, n_boot, seed,
                      {**meta, "layer": name, "layer_index": position[name],
                       "n_randomized": step if order == "cascading" else 1}, dropped)
    _warn_dropped(dropped, len(original))
    table = tidy(rows)
    _flag(table, original.method, order)
    return table


def _untouched(model: nn.Module, chosen: dict[str, str], everything: bool) -> list[str]:
    """Parameters a full randomization leaves trained: in the chosen layers without ``reset_parameters``, and
    (when every probe point is chosen) outside all of them."""
    fixed = []
    covered: set[int] = set()
    for path in chosen.values():
        module = get_module(model, path)
        fixed += [f"{path}.{n}" if path else n for n in _owners(module)[1]]
        covered |= {id(p) for p in module.parameters()}
    if everything:
        fixed += [n for n, p in model.named_parameters() if id(p) not in covered]
    return list(dict.fromkeys(fixed))


def _flag(table: pd.DataFrame, method: str, order: str) -> None:
    steps = table[table["n_randomized"] > 0]
    stuck = [m for m, g in steps.groupby("measure", sort=False) if g["value"].notna().all()
             and bool((g["value"] >= FLAG_LEVEL).all())]
    if stuck and len(steps):
        warnings.warn(f"randomization_check: the maps of method={method!r} stay similar to the trained model's maps "
                      f"at every {order} randomization step ({', '.join(stuck)} >= {FLAG_LEVEL}): they do not depend "
                      "on the learned weights, so they fail the sanity check of Adebayo et al. (2018) — they "
                      "describe the input, not the model", UserWarning, stacklevel=4)


@declare(**ATTRIBUTE_RULES,
         random_label_model=Data("any", example=lambda: example_model(1), bad=["random_label_model", None]),
         similarity=_SIMILARITY, k=_K, seed=Interval(int, 0), n_boot=Interval(int, 1))
def label_randomization_check(model: nn.Module, random_label_model: nn.Module, inputs: Any, *,
                              method: str = "integrated_gradients", target: Any = None, baselines: Any = None,
                              layer: str | None = None, batch_size: int | None = None, output: Any = None,
                              similarity: str | Sequence[str] = SIMILARITIES, k: float = 0.1, seed: int = 0,
                              n_boot: int = 1000, **method_kwargs: Any) -> pd.DataFrame:
    """Data randomization test (Adebayo et al. 2018, Sec. 5): maps of a model trained on the real labels against
    maps of the same architecture trained on random labels, for the same inputs and target classes.

    The value per measure is the mean over examples of ``sim(E(x_i; model), E(x_i; random_label_model))``
    (:data:`SIMILARITIES`) with a percentile-bootstrap 95% interval over examples. A method that explains what
    the model learned should give dissimilar maps (the random-label model memorized, it learned no relation
    between input and label).

    Getting a random-label model: train the same configuration with labels independent of the inputs. With
    ``workbench.runs.RunConfig`` symmetric noise, ``label_noise=r`` flips exactly ``round(r N)`` labels, each to
    a uniformly chosen *other* class, so ``label_noise=1.0`` gives labels that are never the true class (still
    informative: "not c"). Labels independent of the true class need ``P(y' = c | y) = 1/K`` for every ``c``,
    i.e. ``label_noise=(K - 1) / K`` (e.g. ``5 / 6`` for the six shape classes); train it long enough to fit
    the training set (Zhang et al. 2017), as in the paper.

    Parameters
    ----------
    model, random_label_model : two models with the same inputs and outputs (neither is modified).
    inputs, method, target, baselines, layer, batch_size, output, **method_kwargs
        As in :func:`workbench.saliency.attribute`. ``target=None`` attributes ``model``'s predicted class, and the
        same class for ``random_label_model``; pass the true labels for the paper's setting.
    similarity, k, seed, n_boot : as in :func:`randomization_check`.

    Returns
    -------
    DataFrame in the results schema, one row per measure (``layer`` NaN), extra columns ``method``, ``n`` and
    ``k`` (``topk_overlap`` rows).

    Examples
    --------
    >>> import torch
    >>> from workbench.models import build
    >>> _ = torch.manual_seed(0)
    >>> a, b = (build("mlp", input_shape=(6,), num_classes=3, hidden=(32,)) for _ in range(2))
    >>> label_randomization_check(a, b, torch.randn(16, 6), method="saliency")["measure"].tolist()
    ['spearman', 'spearman_abs', 'ssim', 'topk_overlap']
    """
    for name, m in (("model", model), ("random_label_model", random_label_model)):
        if not isinstance(m, nn.Module):
            raise TypeError(f"{name} must be a torch.nn.Module, got {type(m).__name__}")
    if random_label_model is model:
        raise ValueError("random_label_model is model itself; pass the model trained on random labels")
    run = _attribute_fn(inputs, method, baselines, layer, batch_size, output, method_kwargs, seed)
    original = run(model, target)
    names = _check_similarity(similarity, tuple(feature_map(original.attributions, "sum", kind=original.kind)
                                                .shape[1:]))
    other = run(random_label_model, original.targets)
    if other.attributions.shape != original.attributions.shape:
        raise ValueError(f"random_label_model's attributions have shape {tuple(other.attributions.shape)}, model's "
                         f"{tuple(original.attributions.shape)}; the two models must share the architecture")
    dropped: list[str] = []
    rows = _rows(original, other, names, k, n_boot, seed, {"method": original.method}, dropped)
    _warn_dropped(dropped, len(original))
    return tidy(rows, layer=np.nan)

"""Module criticality: how much a network's performance depends on each module keeping its trained weights."""
from __future__ import annotations

import warnings
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from .. import data as wb_data
from .._validation import Data, Instance, Interval, declare
from ..models import get_module, probe_points
from ..results import check_tidy, tidy
from ._common import Classifier, check_module, classifier_copy, labelled_split, loss_and_accuracy

__all__ = ["module_criticality", "module_path", "path_criticality", "MODES"]

#: what happens to a module: a fresh random draw, or its weights at the ``reference`` checkpoint
MODES = ("reinit", "rewind")


def _owns_parameters(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def _check_modes(mode: Any) -> list[str]:
    modes = [mode] if isinstance(mode, str) else list(mode) if isinstance(mode, Iterable) else None
    if not modes or not all(isinstance(m, str) for m in modes):
        raise TypeError(f"mode must be one of {list(MODES)} or a list of them, got {mode!r}")
    for m in modes:
        if m not in MODES:
            raise ValueError(f"mode={m!r} is not one of {list(MODES)}")
    if len(set(modes)) < len(modes):
        raise ValueError(f"mode repeats a value: {modes}")
    return modes


def _modules(model: nn.Module, modules: Any, separate_head: bool = False) -> dict[str, str]:
    points = probe_points(model)
    if modules is None:  # with a separate head, the model's own classifier "head" is unused: left out
        chosen = {n: p for n, p in points.items() if _owns_parameters(get_module(model, p))
                  and not (separate_head and n == "head")}
        if not chosen:
            raise ValueError(f"{type(model).__name__} has no probe point that holds parameters; pass modules= "
                             "module paths (model.named_modules())")
        return chosen
    names = [modules] if isinstance(modules, str) else list(modules) if isinstance(modules, Iterable) else None
    if not names or not all(isinstance(n, str) for n in names):
        raise TypeError(f"modules must be a probe-point name or module path, or a non-empty list of them, got "
                        f"{modules!r}")
    paths = dict(model.named_modules())
    out = {}
    for n in names:
        path = points.get(n, n)
        if path not in paths or path == "":
            raise ValueError(f"modules: {n!r} is neither a probe point ({list(points)}) nor a module path of "
                             f"{type(model).__name__}")
        if not _owns_parameters(paths[path]):
            raise ValueError(f"modules: {n!r} holds no parameters; choose a module with weights")
        out[n] = path
    if len(set(out.values())) < len(out):
        raise ValueError(f"modules names one module twice: {names}")
    return out


def _reinit(module: nn.Module, seed: int, name: str) -> None:
    """Fresh default initialisation of every submodule that has ``reset_parameters`` (seeded)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        covered = set()
        for sub in module.modules():
            reset = getattr(sub, "reset_parameters", None)
            if callable(reset):
                reset()
                covered.update(id(p) for p in sub.parameters(recurse=False))
    left = [n for n, p in module.named_parameters() if id(p) not in covered]
    if left:
        warnings.warn(f"module_criticality: {name!r} has parameters without a re-initializer ({left[:3]}); they keep "
                      "their trained values under mode='reinit'", stacklevel=3)


def _rewind(net: nn.Module, reference: nn.Module, path: str, name: str) -> None:
    target = get_module(net, path)
    try:
        source = get_module(reference, path)
    except (AttributeError, KeyError, ValueError):
        raise ValueError(f"reference has no module {path!r} ({name}); pass the checkpoint of the same "
                         "architecture to rewind to") from None
    src, dst = source.state_dict(), target.state_dict()
    if list(src) != list(dst) or any(src[k].shape != dst[k].shape for k in dst):
        raise ValueError(f"reference's module {path!r} ({name}) does not match the model's (tensors or shapes "
                         "differ); pass a checkpoint of the same architecture")
    target.load_state_dict(src)


def _example_model() -> nn.Module:
    from ..models import build

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build("mlp", input_shape=(Data.D,), num_classes=Data.CLASSES, hidden=(8,))


def _example_split() -> wb_data.Split:
    x = np.random.default_rng(0).normal(size=(Data.N, Data.D)).astype(np.float32)
    return wb_data.Split(inputs=x, labels=np.arange(Data.N) % Data.CLASSES)


@declare(model=Data("any", example=_example_model, bad=["model", None]), head=Instance(nn.Module, none=True),
         data=Data("any", example=_example_split, bad=["data"]), reference=Instance(nn.Module, none=True),
         modules=Instance(str, Iterable, none=True), mode=Instance(str, Iterable), seed=Interval(int, 0, None),
         split=Instance(str), target=Instance(str, none=True))
def module_criticality(model: nn.Module, head: nn.Module | None, data: wb_data.Dataset | wb_data.Split, *,
                       reference: nn.Module | None = None, modules: str | Sequence[str] | None = None,
                       mode: str | Sequence[str] = "reinit", seed: int = 0, split: str = "test",
                       target: str | None = None) -> pd.DataFrame:
    """Per-module drop in accuracy (rise in loss) when one module loses its trained weights, the rest kept.

    For each module ``m`` a copy of the network has ``θ_m`` replaced, and is evaluated on the labelled ``data``:

    - ``mode="rewind"``: ``θ_m ← θ_m^ref``, the module's weights (and buffers) in ``reference`` — with the
      pretrained checkpoint as reference this is the rewind of Neyshabur, Sedghi & Zhang 2020 ("What is being
      transferred in transfer learning?", NeurIPS, Sec. 4, from ``θ_final`` back to ``θ_rewind``); with the
      network's own step-0 checkpoint it is the *re-initialization* test of Zhang, Bengio & Singer 2019 ("Are all
      layers created equal?", ICML workshop / JMLR 2022).
    - ``mode="reinit"``: a fresh draw of the module's default initialisation (``reset_parameters`` of each
      submodule after ``torch.manual_seed(seed)``; BatchNorm statistics reset) — Zhang et al.'s
      *re-randomization*.

    A module is *critical* when this hurts (``accuracy_drop`` large) and *robust* when it does not. This is the
    simple end-point version; the paper's criticality also searches along ``(1 − α) θ_rewind + α θ_final`` with
    noise, which is not computed here.

    Parameters
    ----------
    model : the network (e.g. a fine-tuned ``net`` from :func:`workbench.train.finetune`).
    head : its classifier head (logits ``head(representation(model, x))``), or None when ``model(x)`` are the logits.
    data : labelled evaluation data: a :class:`~workbench.data.Split`, or a Dataset (its split ``split``).
    reference : the checkpoint to rewind to (same architecture as ``model``; required by ``"rewind"``).
    modules : probe-point names or module paths of ``model`` (default: every probe point holding parameters, but
        the model's own classifier ``head`` when a separate ``head`` is given — the representation does not use it).
    mode : ``"reinit"``, ``"rewind"`` or both (a list).
    seed : seed of the re-initialisation (the same for every module).
    split : the split of a Dataset ``data``, and the ``split`` label of the rows.
    target : a categorical factor of ``data`` the head classifies (None: the labels).

    Returns
    -------
    DataFrame in the results schema: per (mode, module) the rows ``accuracy`` and ``loss`` of the changed network
    and ``accuracy_drop`` = base − changed accuracy, ``loss_increase`` = changed − base loss; ``layer`` = the
    module's name, ``layer_index`` its position among the probe points, ``method`` = the mode.

    >>> import numpy as np
    >>> from workbench.data import Split
    >>> from workbench.models import build
    >>> net = build("mlp", input_shape=(4,), num_classes=2, hidden=(3,))
    >>> split = Split(inputs=np.eye(4, dtype="float32"), labels=np.array([0, 1, 0, 1]))
    >>> table = module_criticality(net, None, split, reference=net, mode="rewind")
    >>> table[table.measure == "accuracy_drop"]["value"].tolist()
    [0.0, 0.0]
    """
    check_module(model, "model")
    check_module(head, "head", none=True)
    check_module(reference, "reference", none=True)
    modes = _check_modes(mode)
    if "rewind" in modes and reference is None:
        raise ValueError("reference is needed for mode='rewind': pass the checkpoint to rewind to (e.g. the "
                         "pretrained model, or run.load_model(0) for Zhang et al.'s re-initialization)")
    chosen = _modules(model, modules, head is not None)
    order = {n: i for i, n in enumerate(probe_points(model))}
    evaluation = labelled_split(data, "data", split, target)
    base_loss, base_acc = loss_and_accuracy(Classifier(model, head), evaluation)
    rows = []
    for m in modes:
        for name, path in chosen.items():
            clf = classifier_copy(model, head)
            if m == "reinit":
                _reinit(get_module(clf.net, path), seed, name)
            else:
                _rewind(clf.net, reference, path, name)
            loss, acc = loss_and_accuracy(clf, evaluation)
            index = order.get(name, np.nan)
            for measure, value in (("accuracy", acc), ("loss", loss), ("accuracy_drop", base_acc - acc),
                                   ("loss_increase", loss - base_loss)):
                rows.append({"layer": name, "layer_index": index, "measure": measure, "split": split,
                             "value": value, "method": m})
    return tidy(rows)


def _example_reference() -> nn.Module:
    from ..models import build

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        return build("mlp", input_shape=(Data.D,), num_classes=Data.CLASSES, hidden=(8,))


def _check_grid(values: Any, name: str, low: float, high: float, default: Sequence[float]) -> np.ndarray:
    if values is None:
        return np.asarray(default, dtype=np.float64)
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise TypeError(f"{name} must be a list of numbers in [{low}, {high}], got {values!r}")
    try:
        arr = np.asarray(list(values), dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a list of numbers in [{low}, {high}], got {values!r}") from None
    if arr.ndim != 1 or not len(arr) or not np.all(np.isfinite(arr)) or arr.min() < low or arr.max() > high:
        raise ValueError(f"{name} must be a non-empty list of numbers in [{low}, {high}], got {values!r}")
    if len(np.unique(arr)) < len(arr):
        raise ValueError(f"{name} repeats a value: {arr.tolist()}")
    return np.sort(arr)


@declare(model=Data("any", example=_example_model, bad=["model", None]), head=Instance(nn.Module, none=True),
         data=Data("any", example=_example_split, bad=["data"]),
         reference=Data("any", example=_example_reference, bad=["reference", None]),
         modules=Instance(str, Iterable, none=True), alphas=Instance(Iterable, none=True, example=[0.0, 1.0]),
         sigmas=Instance(Iterable, none=True, example=[0.0, 0.1]), n_noise=Interval(int, 1, None),
         seed=Interval(int, 0, None), split=Instance(str), target=Instance(str, none=True))
def module_path(model: nn.Module, head: nn.Module | None, data: wb_data.Dataset | wb_data.Split, *,
                reference: nn.Module, modules: str | Sequence[str] | None = None,
                alphas: Sequence[float] | None = None, sigmas: Sequence[float] | None = None, n_noise: int = 4,
                seed: int = 0, split: str = "test", target: str | None = None) -> pd.DataFrame:
    """Loss and accuracy as one module moves along ``θ_i(α) = (1 − α) θ_i^ref + α θ_i^final`` (the other modules
    final), optionally with Gaussian noise on that module — the measurements behind module criticality
    (Chatterji, Neyshabur & Sedghi 2020, "The intriguing role of module criticality in the generalization of deep
    networks", ICLR; used in Neyshabur, Sedghi & Zhang 2020, Sec. 4, with ``θ^ref`` the pretrained or the initial
    weights). :func:`path_criticality` reduces the table to the criticality score.

    At each ``(α, σ)`` the module's parameters are ``θ_i(α) + u``, ``u ~ N(0, σ² I)`` (``n_noise`` draws from a
    ``torch.Generator`` seeded by ``numpy.random.SeedSequence([seed, module position, α index, σ index])``; one
    evaluation at ``σ = 0``); the values are
    the means over the draws. Buffers (BatchNorm statistics) are interpolated like the weights.

    Parameters
    ----------
    model, head, data, modules, split, target : as :func:`module_criticality`.
    reference : ``θ^ref``, a network of the same architecture (the pretrained checkpoint, or step 0).
    alphas : the ``α`` grid in ``[0, 1]`` (default 0, 0.1, …, 1).
    sigmas : noise standard deviations ``≥ 0`` (default ``[0]``: no noise).
    n_noise : draws per ``(α, σ > 0)``.
    seed : seed of the noise.

    Returns
    -------
    DataFrame in the results schema: per module (``layer``, ``layer_index``), ``α`` and ``σ`` the rows ``loss``
    and ``accuracy`` with extra columns ``mix`` and ``noise_sd``, plus one row per module with measure
    ``distance`` = ``‖θ_i^final − θ_i^ref‖_F`` over its parameters (``mix``/``noise_sd`` NaN); ``method`` =
    ``"path"``.

    >>> import numpy as np, torch
    >>> from workbench.data import Split
    >>> from workbench.models import build
    >>> net, ref = (build("mlp", input_shape=(4,), num_classes=2, hidden=(3,)) for _ in range(2))
    >>> split = Split(inputs=np.eye(4, dtype="float32"), labels=np.array([0, 1, 0, 1]))
    >>> t = module_path(net, None, split, reference=ref, alphas=[0, 1])
    >>> sorted(set(t.measure))
    ['accuracy', 'distance', 'loss']
    """
    check_module(model, "model")
    check_module(head, "head", none=True)
    check_module(reference, "reference")
    alpha_grid = _check_grid(alphas, "alphas", 0.0, 1.0, np.linspace(0.0, 1.0, 11))
    sigma_grid = _check_grid(sigmas, "sigmas", 0.0, float("inf"), [0.0])
    chosen = _modules(model, modules, head is not None)
    order = {n: i for i, n in enumerate(probe_points(model))}
    evaluation = labelled_split(data, "data", split, target)
    rows = []
    for k, (name, path) in enumerate(chosen.items()):
        clf = classifier_copy(model, head)
        target = get_module(clf.net, path)
        final = {key: v.detach().clone() for key, v in target.state_dict().items()}
        _rewind(clf.net, reference, path, name)  # checks the reference's module
        start = {key: v.detach().clone() for key, v in target.state_dict().items()}
        params = dict(target.named_parameters())
        dist = float(torch.sqrt(sum(((final[p].double() - start[p].double()) ** 2).sum() for p in params)))
        index = order.get(name, np.nan)
        rows.append({"layer": name, "layer_index": index, "measure": "distance", "split": split, "value": dist,
                     "method": "path", "mix": np.nan, "noise_sd": np.nan})
        for i, alpha in enumerate(alpha_grid):
            mixed = {key: ((1 - alpha) * start[key].double() + alpha * final[key].double()).to(final[key].dtype)
                     if torch.is_floating_point(final[key]) else final[key] for key in final}
            for j, sigma in enumerate(sigma_grid):
                draws = 1 if sigma == 0 else n_noise
                losses, accs = [], []
                gen = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, k, i, j]).generate_state(1)[0]))
                for _ in range(draws):
                    target.load_state_dict(mixed)
                    if sigma > 0:
                        with torch.no_grad():
                            for p in params.values():
                                noise = torch.randn(p.shape, generator=gen, dtype=torch.float64)
                                p.add_((sigma * noise).to(p.dtype).to(p.device))
                    loss, acc = loss_and_accuracy(clf, evaluation)
                    losses.append(loss)
                    accs.append(acc)
                for measure, value in (("loss", float(np.mean(losses))), ("accuracy", float(np.mean(accs)))):
                    rows.append({"layer": name, "layer_index": index, "measure": measure, "split": split,
                                 "value": value, "method": "path", "mix": float(alpha), "noise_sd": float(sigma)})
    return tidy(rows)


def _example_path_table() -> pd.DataFrame:
    return tidy([{"layer": "fc1", "measure": "distance", "value": 2.0, "mix": np.nan, "noise_sd": np.nan}]
                + [{"layer": "fc1", "measure": "loss", "value": v, "mix": a, "noise_sd": s}
                   for a, s, v in [(0.0, 0.0, 2.0), (0.0, 0.5, 2.1), (1.0, 0.0, 0.1), (1.0, 0.5, 0.3),
                                   (0.5, 0.5, 0.2), (0.5, 0.0, 0.15)]])


@declare(table=Data("any", example=_example_path_table, bad=["table", tidy([{"measure": "loss", "value": 1.0}])]),
         epsilon=Interval(float, 0, None, closed="neither"))
def path_criticality(table: pd.DataFrame, *, epsilon: float) -> pd.DataFrame:
    """Module criticality from a :func:`module_path` table (Chatterji, Neyshabur & Sedghi 2020, Def. 4.1)::

        μ_i(ε) = min over (α, σ) with E_u L(θ_i(α) + u) ≤ ε  of  α² ‖θ_i^final − θ_i^ref‖²_F / σ²

    over the table's grid (``L`` its ``loss`` rows, ``‖·‖`` its ``distance`` row). A module that can be moved back
    to its reference (small ``α``) under large noise (large ``σ``) without the loss exceeding ``ε`` has low
    criticality; one that must stay at its final weights is critical. Grid points with ``σ = 0`` count only at
    ``α = 0`` (ratio 0); a module with no admissible point with ``σ > 0`` or ``α = 0`` gets ``inf``.

    Returns
    -------
    DataFrame in the results schema: one row per module, measure ``criticality``, with ``mix`` and ``noise_sd`` of
    the minimising point (NaN if none).

    >>> from workbench.results import tidy
    >>> t = tidy([{"layer": "fc1", "measure": "distance", "value": 2.0}]
    ...          + [{"layer": "fc1", "measure": "loss", "mix": a, "noise_sd": s, "value": v}
    ...             for a, s, v in [(1.0, 0.0, 0.1), (0.5, 0.5, 0.2), (0.0, 0.5, 2.0)]])
    >>> float(path_criticality(t, epsilon=0.5)["value"].iloc[0])  # 0.5² · 2² / 0.5²
    4.0
    """
    check_tidy(table, "path_criticality(table)", require=["mix", "noise_sd"])
    rows = []
    keys = [c for c in ("run", "step", "split", "layer") if c in table.columns]
    loss_rows = table[table["measure"] == "loss"]
    dist_rows = table[table["measure"] == "distance"]
    if loss_rows.empty or dist_rows.empty:
        raise ValueError("table needs loss and distance rows; pass the table of workbench.mechanics.module_path")
    for key, group in loss_rows.groupby(keys, dropna=False, sort=False):
        info = dict(zip(keys, key))
        match = dist_rows[(dist_rows["layer"].astype(str) == str(info["layer"]))]
        if match.empty:
            raise ValueError(f"table has no distance row for module {info['layer']!r}")
        dist2 = float(match["value"].iloc[0]) ** 2
        ok = group[group["value"] <= epsilon]
        a, s = ok["mix"].to_numpy(float), ok["noise_sd"].to_numpy(float)
        with np.errstate(divide="ignore", invalid="ignore"):
            score = np.where(a == 0, 0.0, np.where(s > 0, a ** 2 * dist2 / np.where(s > 0, s, 1.0) ** 2, np.inf))
        if len(score) and np.isfinite(score.min()):
            i = int(np.argmin(score))
            best = {"value": float(score[i]), "mix": float(a[i]), "noise_sd": float(s[i])}
        else:
            best = {"value": float("inf"), "mix": np.nan, "noise_sd": np.nan}
        index = group["layer_index"].iloc[0] if "layer_index" in group.columns else np.nan
        rows.append({**info, "layer_index": index, "measure": "criticality", "method": "path", **best})
    return tidy(rows)

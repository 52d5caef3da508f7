"""Built-in datasets and adapters; every source returns a :class:`~workbench.data.Dataset`.

>>> import workbench.data
>>> ds = workbench.data.load("shapes", n_train=200, n_test=100, n_ood=100, seed=0)
>>> ds["train"].inputs.shape
(200, 3, 32, 32)
"""
from __future__ import annotations

import importlib
from typing import Any, Callable

from .dataset import KINDS, Dataset, Split, as_split
from .sources import bayes_risk

__all__ = ["load", "available", "register", "Dataset", "Split", "KINDS", "as_split", "bayes_risk"]

# name -> "module:function"; modules are imported on first use so `import workbench` stays fast.
_BUILTIN: dict[str, str] = {
    "shapes": "workbench.data.shapes:make_shapes",
    "mnist1d": "workbench.data.sources:make_mnist1d",
    "digits": "workbench.data.sources:make_digits",
    "gaussian-mixture": "workbench.data.sources:make_gaussian_mixture",
    "subclasses": "workbench.data.features:make_subclasses",
    "tiny-language": "workbench.data.language:make_tiny_language",
    "sentences": "workbench.data.language:make_sentences",
    "arrays": "workbench.data.adapters:from_arrays",
    "torch": "workbench.data.adapters:from_torch",
    "hf-disk": "workbench.data.adapters:from_hf_disk",
}
_REGISTERED: dict[str, Callable[..., Dataset]] = {}


def register(name: str, builder: Callable[..., Dataset]) -> None:
    """Add a dataset builder under ``name`` (it must return a :class:`Dataset`)."""
    if not callable(builder):
        raise TypeError(f"builder for {name!r} must be callable")
    _REGISTERED[name] = builder


def available() -> list[str]:
    """Names accepted by :func:`load`."""
    return sorted(set(_BUILTIN) | set(_REGISTERED))


def _resolve(name: str) -> Callable[..., Dataset]:
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name in _BUILTIN:
        module, func = _BUILTIN[name].split(":")
        return getattr(importlib.import_module(module), func)
    raise ValueError(f"unknown dataset {name!r}; available: {', '.join(available())}")


def load(name: str, **options: Any) -> Dataset:
    """Build dataset ``name`` with ``options``; deterministic for a given ``seed`` option.

    Unknown option names raise ``TypeError`` naming the option and listing the accepted ones.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a dataset name (str), got {type(name).__name__}; "
                        f"for your own arrays use load('arrays', inputs=..., labels=...)")
    builder = _resolve(name)
    import inspect

    params = inspect.signature(builder).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(options) - set(params))
        if unknown:
            raise TypeError(f"unknown option(s) {unknown} for dataset {name!r}; accepted: {sorted(params)}")
    ds = builder(**options)
    if not isinstance(ds, Dataset):
        raise TypeError(f"dataset builder {name!r} returned {type(ds).__name__}, expected workbench.data.Dataset")
    return ds

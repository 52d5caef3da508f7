"""Bad-input tests generated from the parameter declarations (``workbench._validation.declare``).

For every public function that declares its parameters: a call with valid data (from the data rules) and one
bad value of one parameter must raise a ValueError or TypeError whose message names that parameter — for
every parameter and every invalid value its rule produces. A second test requires the declarations: every
public function of the measure families declares every parameter.
"""
from __future__ import annotations

import importlib
import inspect
import re

import pytest

from workbench._validation import Data, Rule

PACKAGES = ["workbench.similarity", "workbench.spectrum", "workbench.transfer", "workbench.probing",
            "workbench.figures", "workbench.results", "workbench.measures", "workbench.activations",
            "workbench.dynamics", "workbench.saliency", "workbench.interventions", "workbench.mechanics"]
DECLARED_PACKAGES = PACKAGES + ["workbench.dynamics", "workbench.figures", "workbench.measures", "workbench.results",
                                "workbench.activations"]


def _public_functions(packages):
    seen = {}
    for pkg in packages:
        mod = importlib.import_module(pkg)
        for name in getattr(mod, "__all__", []):
            obj = getattr(mod, name)
            if inspect.isfunction(obj) and id(obj) not in seen:
                seen[id(obj)] = (f"{pkg}.{name}", obj)
    return list(seen.values())


DECLARED = [(q, f) for q, f in _public_functions(DECLARED_PACKAGES) if hasattr(f, "__declared__")]


def _valid_call(fn):
    """Arguments of a valid call: every required parameter from its rule's example, and (by keyword) every optional
    data parameter whose rule gives an example of its own, ``Data(..., example=...)``: e.g. ``x`` and ``labels`` of
    ``measures.compute``, optional for model-level measures but needed by the example measure."""
    rules = fn.__declared__
    args, kwargs = [], {}
    for p in inspect.signature(fn).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.default is not inspect.Parameter.empty:
            rule = rules.get(p.name)
            if isinstance(rule, Data) and rule._example is not None:
                kwargs[p.name] = rule.example()
            continue
        value = rules[p.name].example()
        if p.kind == p.KEYWORD_ONLY:
            kwargs[p.name] = value
        else:
            args.append(value)
    return args, kwargs


def _cases():
    for qual, fn in DECLARED:
        for name, rule in fn.__declared__.items():
            for i, bad in enumerate(rule.invalid()):
                yield pytest.param(fn, name, bad, id=f"{qual}-{name}-{i}")


@pytest.mark.parametrize("fn,name,bad", list(_cases()))
def test_bad_value_is_refused_with_the_parameter_named(fn, name, bad):
    args, kwargs = _valid_call(fn)
    params = list(inspect.signature(fn).parameters.values())
    p = next(p for p in params if p.name == name)
    if p.kind == p.KEYWORD_ONLY or p.name in kwargs or params.index(p) >= len(args):
        kwargs[name] = bad
    else:
        args[params.index(p)] = bad
    with pytest.raises((ValueError, TypeError)) as err:
        fn(*args, **kwargs)
    assert re.search(rf"\b{re.escape(name)}\b", str(err.value)), \
        f"{fn.__qualname__}({name}={bad!r}) raised without naming {name!r}: {err.value}"


def test_declared_functions_run_on_their_valid_examples(tmp_path, monkeypatch):
    """The generated valid call must work, or the bad-value tests above would pass for the wrong reason.
    (Run in a temporary directory — the export examples write relative paths — and with the measure registry
    restored afterwards: the valid call of ``register`` adds an example entry.)"""
    from workbench import measures

    monkeypatch.chdir(tmp_path)
    registry = dict(measures.REGISTRY)
    failures = []
    try:
        for qual, fn in DECLARED:
            args, kwargs = _valid_call(fn)
            try:
                fn(*args, **kwargs)
            except Exception as err:
                failures.append(f"{qual}: {type(err).__name__}: {err}")
    finally:
        measures.REGISTRY.clear()
        measures.REGISTRY.update(registry)
    assert not failures, "\n".join(failures)


def test_every_public_measure_function_declares_every_parameter():
    missing = []
    for qual, fn in _public_functions(PACKAGES):
        declared = getattr(fn, "__declared__", None)
        params = [p.name for p in inspect.signature(fn).parameters.values()
                  if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        if declared is None:
            missing.append(f"{qual}: no declaration")
        elif set(params) - set(declared):
            missing.append(f"{qual}: undeclared {sorted(set(params) - set(declared))}")
        else:
            assert all(isinstance(r, Rule) for r in declared.values()), qual
    assert not missing, "\n".join(missing)

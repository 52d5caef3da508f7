"""Bad input gets a clear error, never a silent wrong value (issue 15, "Bad input ...").

The sweep: every public function of the packages of ``tests/test_params.py`` (``PACKAGES``) — plus
``activations.extract``, ``models.load`` and ``runs.RunConfig`` — is called with hostile values of each data
argument: complex, scaled to 1e±300 (1e±30 in float32), integer, bool, strings, object arrays, empty, 0-d,
wrong ndim, NaN/Inf, degenerate (constant, rank-1, duplicate rows, N = 1 or 2, D > N). Each call must either

- return a finite result equal (to tolerance) to the call on the sane version of the data — for a scaled
  input, the sane result times ``scale**k`` where ``k`` is the output's degree of homogeneity, measured per
  output number with an exact power-of-two scale (2**10), or
- raise ValueError/TypeError whose message names the argument.

Anything else is counted: *silent* (a result that is wrong, non-finite or complex) or *raw* (another exception,
or a message that does not name the argument). ``pytest -s`` prints the counts. Two documented exceptions: maps
``[N, ...]`` that are flattened (``FLATTENS``) take a 3-d input as the same data, and a table that flags a limit
value in a ``limit`` column (``logme_targets``: ``alpha``/``beta = inf``) is not judged on those numbers.
"""
from __future__ import annotations

import contextlib
import dataclasses
import inspect
import math
import numbers
import os
import re
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from test_params import PACKAGES, _public_functions, _valid_call

from workbench._validation import Data

N, D = Data.N, Data.D
TWO10 = 2.0 ** 10


# ------------------------------------------------------------------------------------------------ outputs
def _numbers(r, depth: int = 0) -> list[np.ndarray]:
    """Every number in a result, as flat arrays (DataFrames: their numeric columns)."""
    if depth > 4 or r is None or isinstance(r, (str, bytes, Path)) or (callable(r) and not hasattr(r, "shape")):
        return []
    if isinstance(r, (bool, np.bool_, numbers.Number)):
        return [np.asarray([r]).ravel()]
    if isinstance(r, torch.Tensor):
        return [r.detach().cpu().reshape(-1).numpy()] if r.dtype != torch.bool else []
    if isinstance(r, np.ndarray):
        if r.dtype == object:
            return [a for v in r.ravel()[:1000] for a in _numbers(v, depth + 1)]
        return [r.reshape(-1)] if np.issubdtype(r.dtype, np.number) else []
    if isinstance(r, pd.DataFrame):  # numeric columns, less those that are all NaN (e.g. no CI, no run)
        num = r.select_dtypes(include=[np.number]).dropna(axis=1, how="all")
        if not num.size:
            return []
        values = num.to_numpy()
        if "limit" in r.columns and not np.iscomplexobj(values):  # a documented limit value flagged in its row
            # (logme_targets: alpha or beta = inf where limit is "no_signal" / "noise_free") is not compared
            flagged = (r["limit"] != "none").to_numpy()[:, None] & np.isinf(values)
            return [values[~flagged]]
        return [values.reshape(-1)]
    if isinstance(r, pd.Series):
        return _numbers(r.to_numpy(), depth + 1)
    if isinstance(r, dict):
        return [a for k in sorted(r, key=str) for a in _numbers(r[k], depth + 1)]
    if isinstance(r, (list, tuple)):
        return [a for v in r for a in _numbers(v, depth + 1)]
    if dataclasses.is_dataclass(r):
        return [a for f in dataclasses.fields(r) for a in _numbers(getattr(r, f.name), depth + 1)]
    return []


def _flat(r) -> np.ndarray:
    parts = _numbers(r)
    return np.concatenate([np.asarray(p).astype(np.complex128 if np.iscomplexobj(p) else np.float64)
                           for p in parts]) if parts else np.zeros(0)


def _close(got: np.ndarray, want: np.ndarray, rtol: float) -> str | None:
    """None if ``got`` matches ``want`` (NaN where ``want`` is NaN, else finite and close), else why not."""
    if np.iscomplexobj(got):
        return "complex result"
    if got.shape != want.shape:
        return f"{got.size} numbers instead of {want.size}"
    nan = np.isnan(want)
    if not np.array_equal(np.isnan(got), nan):
        return "NaN where the sane result has none" if np.isnan(got).any() else "numbers where the sane result is NaN"
    g, w = got[~nan], want[~nan]
    if not np.all(np.isfinite(g)):
        return "non-finite result"
    scale = np.max(np.abs(w)) if w.size else 0.0
    bad = np.abs(g - w) > rtol * np.abs(w) + rtol * 1e-3 * scale + 1e-7  # 1e-7: arccos near 1 amplifies rounding
    if bad.any():
        i = int(np.argmax(bad))
        return f"{int(bad.sum())} number(s) differ (e.g. {g[i]:.6g} instead of {w[i]:.6g})"
    return None


def _scaled_expectation(r1: np.ndarray, r2: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Expected result at ``scale`` from the results at scale 1 and 2**10, per number: ``r1 * scale**k`` for the
    integer degree ``k`` seen between them (``r1`` when none fits), and where that is not representable."""
    with np.errstate(all="ignore"):
        ratio = np.abs(r2) / np.abs(r1)
        k = np.log2(ratio) / 10
        k_int = np.round(k)
        homogeneous = np.isfinite(k) & (np.abs(k - k_int) < 0.02) & (np.sign(r1) == np.sign(r2))
    k_int = np.where(homogeneous, k_int, 0.0)
    with np.errstate(all="ignore"):
        log_mag = np.log10(np.abs(r1)) + k_int * math.log10(scale)
        want = np.sign(r1) * 10.0 ** log_mag
    want = np.where(k_int == 0, r1, want)
    unrepresentable = (k_int != 0) & (r1 != 0) & ((log_mag > 308) | (log_mag < -307))
    return want, unrepresentable


# ---------------------------------------------------------------------------------------------- variants
@dataclasses.dataclass
class Variant:
    label: str
    value: object
    expect: str  # "raise" | "equal" | "scaled" | "finite"
    sane: object = None
    scale: float = 1.0
    rows: np.ndarray | None = None  # rows kept: the other row-aligned arguments are cut alike
    rtol: float = 1e-6


def _tensor(x):
    return torch.from_numpy(np.ascontiguousarray(x))


def _x_variants(x: np.ndarray, none_ok: bool) -> list[Variant]:
    if x.ndim != 2:  # e.g. [N, T, D] token activations or images: the variants that do not assume two axes
        return _generic_variants(x, none_ok)
    n, d = x.shape
    rng = np.random.default_rng(1)
    nan, inf = x.copy(), x.copy()
    nan[1, 0], inf[2, 1] = np.nan, np.inf
    xi = np.round(x * 4).astype(np.int64)
    x32 = x.astype(np.float32)
    half = np.r_[0:n // 2, 0:n - n // 2]
    above = x > np.median(x, axis=1, keepdims=True)  # every row has both values (no all-zero or constant row)
    rank1 = np.outer(rng.normal(size=n), rng.normal(size=d))
    wide = np.hstack([x, rng.normal(size=(n, 4 * n))])
    out = [
        Variant("complex", x + 1j * x[::-1], "raise"),
        Variant("complex-real", x.astype(np.complex128), "raise"),
        Variant("complex-tensor", _tensor(x + 1j * x[::-1]), "raise"),
        Variant("1e300", x * 1e300, "scaled", x, 1e300),
        Variant("1e-300", x * 1e-300, "scaled", x, 1e-300),
        Variant("f32-1e30", x32 * np.float32(1e30), "scaled", x32, 1e30, rtol=2e-3),
        Variant("f32-1e-30", x32 * np.float32(1e-30), "scaled", x32, 1e-30, rtol=2e-3),
        Variant("int", xi, "equal", xi.astype(np.float64)),
        Variant("bool", above, "equal", above.astype(np.float64)),
        Variant("tensor", _tensor(x), "equal", x),
        Variant("list", x.tolist(), "equal", x),
        Variant("object-floats", x.astype(object), "equal", x),
        Variant("object-str", x.astype(str).astype(object), "raise"),
        Variant("str-array", x.astype(str), "raise"),
        Variant("str", "features", "raise"),
        Variant("0-d", np.float64(1.5), "raise"),
        Variant("1-d", x[:, 0], "raise"),
        Variant("3-d", x[:, :, None], "raise"),
        Variant("empty", x[:0], "raise", rows=np.arange(0)),
        Variant("no-columns", x[:, :0], "raise"),
        Variant("nan", nan, "raise"),
        Variant("inf", inf, "raise"),
        Variant("zeros", np.zeros_like(x), "finite"),
        Variant("constant", np.ones_like(x), "finite"),
        Variant("rank1", rank1, "finite"),
        Variant("duplicate-rows", x[half], "finite", rows=half),
        Variant("n=2", x[:2], "finite", rows=np.arange(2)),
        Variant("n=1", x[:1], "finite", rows=np.arange(1)),
        Variant("d>n", wide, "finite"),
    ]
    if not none_ok:
        out.append(Variant("None", None, "raise"))
    return out


def _generic_variants(x: np.ndarray, none_ok: bool) -> list[Variant]:
    nan = x.copy()
    nan.reshape(-1)[1] = np.nan
    xi = np.round(x * 4).astype(np.int64)
    x32 = x.astype(np.float32)
    return [Variant("complex", x + 1j * x, "raise"),
            Variant("1e300", x * 1e300, "scaled", x, 1e300), Variant("1e-300", x * 1e-300, "scaled", x, 1e-300),
            Variant("f32-1e30", x32 * np.float32(1e30), "scaled", x32, 1e30, rtol=2e-3),
            Variant("int", xi, "equal", xi.astype(np.float64)), Variant("str", "features", "raise"),
            Variant("nan", nan, "raise"), Variant("0-d", np.float64(1.5), "raise")] + \
        ([] if none_ok else [Variant("None", None, "raise")])


QUICK_X = {"complex", "1e300", "1e-300", "int", "str", "nan", "empty", "1-d", "zeros", "n=2"}


def _label_variants(y: np.ndarray, none_ok: bool) -> list[Variant]:
    nan = y.astype(np.float64)
    nan[0] = np.nan
    out = [
        Variant("float-ints", y.astype(np.float64), "equal", y),
        Variant("float-fractions", y + 0.5, "raise"),
        Variant("complex", y + 0j, "raise"),
        Variant("str-array", y.astype(str), "raise"),
        Variant("object-ints", y.astype(object), "equal", y),
        Variant("negative-ids", y - 1, "equal", y),
        Variant("sparse-ids", y * 1000, "equal", y),
        Variant("nan", nan, "raise"),
        Variant("2-d", y[:, None], "raise"),
        Variant("short", y[:-1], "raise"),
        Variant("empty", y[:0], "raise"),
        Variant("0-d", np.int64(1), "raise"),
        Variant("str", "labels", "raise"),
        Variant("one-class", np.zeros_like(y), "finite"),
    ]
    if not none_ok:
        out.append(Variant("None", None, "raise"))
    return out


#: functions that pass their data on unchanged (as_layers wraps an array as a layer; token_rows reshapes): the measure
#: that receives the data checks it, so any return value counts as correct here — but not a raw error
PASS_THROUGH = {"as_layers", "token_rows", "sentence_split"}
#: functions whose valid call takes 0.2 s or more: a shorter list of variants (QUICK_X, QUICK_LABELS)
SLOW = {"linear_probe", "label_efficiency", "online_codelength"}
#: functions whose result holds the class ids (relabelled ids change it legitimately)
LABEL_ID_OUTPUTS = {"control_task", "logme_targets"}
QUICK_LABELS = {"float-fractions", "complex", "negative-ids", "nan", "short", "str"}
#: functions documented to take maps ``[N, ...]`` and flatten every row: a 3-d ``[N, D, 1]`` is the same data
FLATTENS = {"rank_correlation", "topk_overlap"}


def _per_layer(v: Variant, layers: dict) -> Variant:
    """A variant of every layer of a layer mapping (non-array values replace the mapping itself)."""
    if not isinstance(v.value, (np.ndarray, torch.Tensor)) or v.label in ("0-d",):
        return v
    return dataclasses.replace(v, value=dict.fromkeys(layers, v.value),
                               sane=None if v.sane is None else dict.fromkeys(layers, v.sane))


def _variants(rule: Data, example, none_ok: bool, quick: bool) -> list[Variant]:
    if rule.kind == "labels":
        vs = _label_variants(np.asarray(example), none_ok)
        return [v for v in vs if v.label in QUICK_LABELS] if quick else vs
    if rule.kind == "x" or (rule.kind == "layers" and isinstance(example, np.ndarray)):
        vs = _x_variants(np.asarray(example, dtype=np.float64), none_ok)
    elif rule.kind == "layers" and isinstance(example, dict):
        base = {k: np.asarray(v, dtype=np.float64) for k, v in example.items()}
        first = next(iter(base.values()))
        vs = [_per_layer(v, base) for v in _x_variants(first, none_ok)]
        # per-layer transforms of the *same* array: keep each layer's own values where the variant is a function
        vs = [_layerwise(v, base) for v in vs] + [Variant("empty-mapping", {}, "raise")]
    else:
        return []
    return [v for v in vs if v.label in QUICK_X] if quick else vs


def _layerwise(v: Variant, base: dict) -> Variant:
    """Apply scale/dtype variants to each layer's own values (the others keep the first layer's variant)."""
    first = next(iter(base.values()))
    make = {"1e300": lambda a: (a * 1e300, a), "1e-300": lambda a: (a * 1e-300, a),
            "f32-1e30": lambda a: (a.astype(np.float32) * np.float32(1e30), a.astype(np.float32)),
            "f32-1e-30": lambda a: (a.astype(np.float32) * np.float32(1e-30), a.astype(np.float32)),
            "int": lambda a: (np.round(a * 4).astype(np.int64), np.round(a * 4)),
            "complex": lambda a: (a + 1j * a[::-1], None), "tensor": lambda a: (_tensor(a), a)}
    if v.label not in make or not isinstance(v.value, dict):
        return v
    pairs = {k: make[v.label](a) for k, a in base.items()}
    del first
    return dataclasses.replace(v, value={k: p[0] for k, p in pairs.items()},
                               sane=None if v.sane is None else {k: p[1] for k, p in pairs.items()})


def _scale(value, s):
    if isinstance(value, dict):
        return {k: _scale(v, s) for k, v in value.items()}
    return value * (value.dtype.type(s) if isinstance(value, np.ndarray) else s)


def _cut(value, rows, n):
    """Cut a row-aligned argument to ``rows`` (layer mappings: every layer)."""
    if isinstance(value, dict):
        return {k: _cut(v, rows, n) for k, v in value.items()}
    if isinstance(value, (np.ndarray, torch.Tensor)) and value.ndim >= 1 and len(value) == n:
        return value[rows]
    return value


# ------------------------------------------------------------------------------------------------ the sweep
@dataclasses.dataclass
class Counts:
    tried: int = 0
    clear: int = 0
    ok: int = 0
    silent: list = dataclasses.field(default_factory=list)
    raw: list = dataclasses.field(default_factory=list)

    def line(self) -> str:
        return (f"tried {self.tried}: {self.ok} correct results, {self.clear} clear errors, "
                f"{len(self.silent)} silent, {len(self.raw)} raw")


def _call(fn, args, kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def _names(message: str, names) -> bool:
    return any(re.search(rf"(?<![\w.]){re.escape(str(n))}(?!\w)", message) for n in names)


def _judge(counts: Counts, where: str, name, run, expect: str, want=None, rtol: float = 1e-6,
           unrepresentable=None) -> None:
    """Run one call and count it; ``name``: the argument (or a tuple of names, any of which the error may name)."""
    counts.tried += 1
    names = name if isinstance(name, tuple) else (name,)
    try:
        got = run()
    except (ValueError, TypeError) as err:
        if _names(str(err), names):
            counts.clear += 1
        else:
            counts.raw.append(f"{where}: {type(err).__name__} not naming {name!r}: {str(err)[:160]}")
        return
    except Exception as err:  # counting what leaks is the point
        counts.raw.append(f"{where}: {type(err).__module__}.{type(err).__name__}: {str(err)[:160]}")
        return
    if expect == "any":
        counts.ok += 1
        return
    if expect == "raise":
        counts.silent.append(f"{where}: returned {type(got).__name__} instead of refusing")
        return
    flat = _flat(got)
    if expect == "finite":  # where the valid call's result is NaN (e.g. no CI for a difference), NaN is fine here
        defined = np.isfinite(want) if want is not None and want.shape == flat.shape else np.ones(flat.shape, bool)
        why = "complex result" if np.iscomplexobj(flat) else \
            ("non-finite result" if not np.all(np.isfinite(flat[defined])) else None)
    else:
        if unrepresentable is not None and unrepresentable.any():
            counts.silent.append(f"{where}: returned a result whose true value overflows/underflows float64")
            return
        why = _close(flat, want, rtol)
    if why:
        counts.silent.append(f"{where}: {why}")
    else:
        counts.ok += 1


def _sweep_function(counts: Counts, qual: str, fn) -> None:
    rules = fn.__declared__
    args0, kwargs0 = _valid_call(fn)
    params = [p for p in inspect.signature(fn).parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]

    def bound(overrides: dict):
        args, kwargs = list(args0), dict(kwargs0)
        for name, value in overrides.items():
            p = next(p for p in params if p.name == name)
            if p.kind != p.KEYWORD_ONLY and p.name not in kwargs and params.index(p) < len(args):
                args[params.index(p)] = value
            else:
                kwargs[name] = value
        return args, kwargs

    def current(name):
        args, kwargs = bound({})
        p = next(p for p in params if p.name == name)
        return kwargs[name] if name in kwargs else (args[params.index(p)] if params.index(p) < len(args) else None)

    try:
        base_result = _flat(_call(fn, *bound({})))
    except Exception:  # test_params checks the valid calls
        return
    quick = qual.rsplit(".", 1)[-1] in SLOW
    data_names = [n for n, r in rules.items() if isinstance(r, Data) and r.kind in ("x", "layers", "labels")]
    row_aligned = {n: current(n) for n in data_names}
    cache: dict = {}

    def result_of(overrides, key):
        if key not in cache:
            cache[key] = _flat(_call(fn, *bound(overrides)))
        return cache[key]

    for name in data_names:
        rule = rules[name]
        example = current(name)
        if example is None:
            continue
        p = next(p for p in params if p.name == name)
        none_ok = rule.none or p.default is None
        for v in _variants(rule, example, none_ok, quick):
            where = f"{qual}({name}={v.label})"
            overrides = {name: v.value}
            sane = {name: v.sane}
            if v.rows is not None:
                for other in data_names:
                    if other != name:
                        overrides[other] = sane[other] = _cut(row_aligned[other], v.rows, N)
            want, unrep = None, None
            expect = v.expect
            if v.label in ("negative-ids", "sparse-ids") and qual.rsplit(".", 1)[-1] in LABEL_ID_OUTPUTS:
                expect = "finite"  # the result lists the class ids themselves
            if v.label == "short" and len(data_names) == 1:
                continue  # labels of another length are only wrong next to row-aligned data
            if qual.rsplit(".", 1)[-1] in PASS_THROUGH:
                expect = "any"
            if v.label == "3-d" and qual.rsplit(".", 1)[-1] in FLATTENS:
                expect = "equal"  # x[:, :, None] flattened is x: the result of the valid call (v.sane is None)
            try:
                if expect == "equal":
                    want = base_result if v.sane is None else result_of(sane, (name, v.label))
                elif expect == "finite":
                    want = base_result
                elif expect == "scaled":
                    key = (name, "f32" if "f32" in v.label else "f64")
                    r1 = result_of(sane, key + (1,))
                    r2 = result_of({name: _scale(v.sane, TWO10)}, key + (2,))
                    want, unrep = _scaled_expectation(r1, r2, v.scale)
            except (ValueError, TypeError):  # the sane version is itself refused (e.g. scaled probabilities)
                expect = "raise"
            except Exception as err:  # the sane call itself must work
                counts.tried += 1
                counts.raw.append(f"{where}: the sane version failed: {type(err).__name__}: {str(err)[:120]}")
                continue
            # an error may name any argument cut to the same rows
            named = (name,) + (tuple(n for n in data_names if n != name) if v.rows is not None else ())
            _judge(counts, where, named, lambda o=overrides: _call(fn, *bound(o)), expect, want, v.rtol, unrep)


def _functions():
    return [(q, f) for q, f in _public_functions(PACKAGES) if hasattr(f, "__declared__")]


@contextlib.contextmanager
def _in_temporary_directory():
    """Run in a fresh temporary directory (the valid calls of the export functions write relative paths such as
    ``workbench-declared-example.json``: nothing of the sweep may land in the repository, however it is run)."""
    old = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="workbench-sweep-") as tmp:
        os.chdir(tmp)
        try:
            yield Path(tmp)
        finally:
            os.chdir(old)


def sweep_measures() -> Counts:
    """The sweep over the declared functions, run in a temporary directory (the measure registry is restored
    afterwards: the valid call of ``register`` adds an example entry)."""
    from workbench import measures

    counts = Counts()
    torch.manual_seed(0)
    registry = dict(measures.REGISTRY)
    try:
        with _in_temporary_directory():
            for qual, fn in _functions():
                _sweep_function(counts, qual, fn)
    finally:
        measures.REGISTRY.clear()
        measures.REGISTRY.update(registry)
    return counts


# --------------------------------------------------------------------------- extract, models.load, RunConfig
def sweep_entry_points(tmp: Path) -> Counts:
    from torch import nn

    from workbench import models
    from workbench.activations import extract
    from workbench.runs import RunConfig

    counts = Counts()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    x = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
    sane = extract(model, x).numpy()
    want = _flat(sane)
    for label, data, expect, rtol in [
            ("complex", x + 1j * x, "raise", 0), ("complex-tensor", _tensor(x + 1j * x), "raise", 0),
            ("int", np.round(x * 4).astype(np.int64), "equal", 1e-5), ("str", "inputs", "raise", 0),
            ("str-array", x.astype(str), "raise", 0), ("object-str", x.astype(str).astype(object), "raise", 0),
            ("texts", np.array(["a b", "c d"], dtype=object), "raise", 0), ("0-d", np.float32(1.0), "raise", 0),
            ("1-d", x[:, 0], "raise", 0), ("empty", x[:0], "raise", 0), ("wrong-width", x[:, :3], "raise", 0),
            ("bool", x > 0, "equal", 1e-5), ("float64", x.astype(np.float64), "equal", 1e-5)]:
        ref = want
        if label == "int":
            ref = _flat(extract(model, np.round(x * 4).astype(np.float32)).numpy())
        elif label == "bool":
            ref = _flat(extract(model, (x > 0).astype(np.float32)).numpy())
        _judge(counts, f"extract(data={label})", "data", lambda d=data: extract(model, d).numpy(), expect, ref, rtol)
    a_file = tmp / "not-a-dir"
    a_file.write_text("x")
    _judge(counts, "extract(cache=<a file>)", "cache", lambda: extract(model, x, cache=a_file), "raise")
    if not torch.cuda.is_available():
        _judge(counts, "extract(device='cuda')", "device", lambda: extract(model, x, device="cuda"), "raise")
    _judge(counts, "extract(device='tpu')", "device", lambda: extract(model, x, device="tpu"), "raise")

    # models.load on broken files
    from safetensors.torch import save_file

    cases = {}
    (tmp / "empty.pt").write_bytes(b"")
    cases["empty .pt"] = tmp / "empty.pt"
    (tmp / "empty.safetensors").write_bytes(b"")
    cases["empty .safetensors"] = tmp / "empty.safetensors"
    (tmp / "garbage.safetensors").write_bytes(bytes(range(256)) * 4)
    cases["garbage .safetensors"] = tmp / "garbage.safetensors"
    (tmp / "garbage.pt").write_bytes(b"\x80\x04garbage" * 50)
    cases["garbage .pt"] = tmp / "garbage.pt"
    (tmp / "text.bin").write_text("hello")
    cases["text .bin"] = tmp / "text.bin"
    good = tmp / "good.safetensors"
    save_file({"w": torch.ones(3, 3)}, str(good))
    (tmp / "cut.safetensors").write_bytes(good.read_bytes()[:-10])
    cases["truncated .safetensors"] = tmp / "cut.safetensors"
    (tmp / "no-weights").mkdir()
    (tmp / "no-weights" / "notes.txt").write_text("x")
    cases["dir without weights"] = tmp / "no-weights"
    saved = models.save(models.build("mlp", {"input_shape": [4], "num_classes": 2}), tmp / "saved")
    broken = tmp / "broken"
    broken.mkdir()
    (broken / "model.json").write_text((saved / "model.json").read_text())
    (broken / "model.safetensors").write_bytes(b"")
    cases["save dir, empty weights"] = broken
    bad_spec = tmp / "bad-spec"
    bad_spec.mkdir()
    (bad_spec / "model.json").write_text('{"name": "mlp", "opt')
    (bad_spec / "model.safetensors").write_bytes((saved / "model.safetensors").read_bytes())
    cases["save dir, truncated model.json"] = bad_spec
    hf = tmp / "hf"
    hf.mkdir()
    (hf / "config.json").write_text('{"model_type": "bert", "hidd')
    cases["HF dir, truncated config.json"] = hf
    for label, path in cases.items():
        into = nn.Linear(3, 3) if "safetensors" in label or ".pt" in label or ".bin" in label else None
        named = ("path", str(path))
        _judge(counts, f"models.load({label})", named, lambda p=path, m=into: models.load(p, into=m), "raise")
        if into is not None:
            _judge(counts, f"models.load({label}, no into)", named, lambda p=path: models.load(p), "raise")

    # RunConfig fields
    hostile = {"lr": [True, "1e-3", float("nan"), float("inf"), -1.0, 0, None, 1 + 1j],
               "weight_decay": [True, "0", float("nan"), float("inf"), -0.1, None],
               "temperature": [True, "0.2", float("nan"), 0, None], "init_scale": [True, float("nan"), None],
               "steps": [True, 1.5, "10", -1, None], "batch_size": [True, 0, 2.0, None],
               "seed": [True, -1, 0.5, None], "data_fraction": [True, float("nan"), 0, 1.5, "1", None],
               "label_noise": [True, float("nan"), -0.1, None], "checkpoints": [True, -1, None],
               "augment_strength": [True, float("nan"), 2.0], "warmup": [True, -1, 1.5],
               "views": [True, 1, 2.0], "mask_ratio": [True, float("nan"), 1.0],
               "dataset_options": [None, "a", [1]], "model_options": [None, "a"],
               "augment": [5, [None]], "recorders": [5, ["nope"]], "dataset": [None, 5, ""], "model": [None, 5]}
    for field, values in hostile.items():
        for value in values:
            _judge(counts, f"RunConfig({field}={value!r})", field, lambda f=field, v=value: RunConfig(**{f: v}),
                   "raise")
    return counts


# ----------------------------------------------------------------------------------------------- the tests
def test_adversarial_sweep_has_no_silent_and_no_raw_results(tmp_path, capsys, monkeypatch):
    cwd = tmp_path / "cwd"  # an empty current directory: the sweep must write nothing into it (see sweep_measures)
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    t0 = time.perf_counter()
    measures = sweep_measures()
    entry = sweep_entry_points(tmp_path)
    seconds = time.perf_counter() - t0
    total = Counts(measures.tried + entry.tried, measures.clear + entry.clear, measures.ok + entry.ok,
                   measures.silent + entry.silent, measures.raw + entry.raw)
    with capsys.disabled():
        print(f"\nbad-input sweep ({seconds:.1f} s): measures {measures.line()}; extract/load/RunConfig "
              f"{entry.line()}; total {total.line()}")
    assert not total.silent and not total.raw, "\n".join(["SILENT:"] + total.silent + ["RAW:"] + total.raw)
    assert not list(cwd.iterdir()), f"the sweep wrote into the current directory: {sorted(cwd.iterdir())}"


# ------------------------------------------------------------------------------------- the fixes, one by one
def test_complex_input_is_refused_naming_the_argument():
    from workbench import similarity, spectrum

    x = np.random.default_rng(0).normal(size=(20, 4))
    for bad in (x + 1j * x, x.astype(np.complex128), torch.from_numpy(x + 1j * x)):
        with pytest.raises(TypeError, match=r"^a is complex .*a\.real"):
            similarity.cka(bad, x)
        with pytest.raises(TypeError, match="x is complex"):
            spectrum.rankme(bad)
        with pytest.raises(TypeError, match="x is complex"):
            spectrum.second_moments(bad)


@pytest.mark.parametrize("scale,dtype", [(1e300, np.float64), (1e-300, np.float64), (1e30, np.float32),
                                         (1e-30, np.float32)])
def test_scale_invariant_measures_agree_at_extreme_magnitudes(scale, dtype):
    """Known values at scale 1 (independent of the scaled path) against the same data at 1e±300 / 1e±30."""
    from workbench import probing, similarity, spectrum

    rng = np.random.default_rng(0)
    a = rng.normal(size=(60, 5))
    b = np.tanh(a @ rng.normal(size=(5, 5))) + 0.1 * rng.normal(size=(60, 5))
    y = np.arange(60) % 3
    a = a + 2 * np.eye(3, 5)[y]
    s = dtype(scale)
    a32, b32 = a.astype(dtype), b.astype(dtype)
    cases = [("cka", lambda u, v: similarity.cka(u, v)), ("cca", lambda u, v: similarity.cca(u, v)),
             ("shape", lambda u, v: similarity.shape_distance(u, v, alpha=0.0)),
             ("knn", lambda u, v: similarity.mutual_knn(u, v, k=5)), ("rsa", lambda u, v: similarity.rsa(u, v)),
             ("rankme", lambda u, v: spectrum.rankme(u)), ("erank", lambda u, v: spectrum.effective_rank(u)),
             ("knn_probe", lambda u, v: probing.knn_probe(u, y, ks=(5,)).value.tolist())]
    for name, f in cases:
        want = f(a32, b32)
        got = f(a32 * s, b32)
        assert np.allclose(got, want, rtol=1e-4 if dtype == np.float32 else 1e-9, atol=1e-7), (name, got, want)


def test_scale_dependent_measures_refuse_extreme_magnitudes_naming_the_argument():
    from workbench import spectrum

    x = np.random.default_rng(0).normal(size=(30, 4))
    for s in (1e300, 1e-300):
        with pytest.raises(ValueError, match=r"x has an extreme magnitude \(max \|x\| = "):
            spectrum.spectrum(x * s)
    assert np.allclose(spectrum.spectrum(x * 1e6), spectrum.spectrum(x) * 1e12)  # ordinary scales are untouched
    with pytest.raises(ValueError, match="a has an extreme magnitude"):
        spectrum.alignment(x * 1e300, x, normalize=False)
    assert spectrum.alignment(x * 1e300, x) == pytest.approx(spectrum.alignment(x, x))  # normalized: rescaled


def test_linalg_failures_become_value_errors_naming_the_data():
    from workbench._validation import Data, declare

    @declare(x=Data("x"))
    def f(x):
        return np.linalg.cholesky(-np.eye(2) * float(np.asarray(x).sum()))

    with pytest.raises(ValueError, match=r"f: the linear algebra on x failed .*constant or duplicate columns"):
        f(np.ones((3, 2)))


def test_check_device():
    from workbench._validation import check_device

    assert check_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="device='tpu'"):
        check_device("tpu")
    with pytest.raises(TypeError, match="device must be"):
        check_device(True)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device='cuda': CUDA is not available"):
            check_device("cuda")


def _tiny_model():
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))


def test_extract_refuses_bad_inputs_naming_data_cache_and_device(tmp_path):
    from workbench.activations import extract

    model, x = _tiny_model(), np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    with pytest.raises(TypeError, match="data is complex"):
        extract(model, x + 1j * x)
    with pytest.raises(ValueError, match=r"could not run on data .*dtype int64.*token ids"):
        extract(model, np.arange(24).reshape(6, 4))
    with pytest.raises(TypeError, match=r"data holds str_? values .*cannot read raw text"):
        extract(model, np.array(["a", "b"]))
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match=r"cache=.* is a file"):
        extract(model, x, cache=tmp_path / "f")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device='cuda': CUDA is not available"):
            extract(model, x, device="cuda")


@pytest.mark.parametrize("damage", ["truncate", "flip", "sidecar", "no-sidecar", "reshape"])
def test_activation_cache_damage_is_detected_named_and_recomputed(tmp_path, damage):
    from workbench.activations import extract

    model, x = _tiny_model(), np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32)
    fresh = {k: v.numpy().copy() for k, v in extract(model, x).items()}
    first = extract(model, x, cache=tmp_path)
    target = first._layers[first.layers[0]]
    raw = target.read_bytes()
    if damage == "truncate":
        target.write_bytes(raw[:-12])
    elif damage == "flip":
        target.write_bytes(raw[:-4] + bytes(b ^ 0xFF for b in raw[-4:]))
    elif damage == "sidecar":
        target.with_suffix(".json").write_text('{"sha2')
    elif damage == "no-sidecar":
        target.with_suffix(".json").unlink()
    else:  # a valid .npy of another shape in place of the cached one
        np.save(target, np.zeros((5, 3), np.float32))
    with pytest.warns(RuntimeWarning, match=re.escape(f"activation cache file {target} is damaged")):
        again = extract(model, x, cache=tmp_path)
    assert again.meta["cached"] is False
    for k, v in fresh.items():
        np.testing.assert_array_equal(again[k].numpy(), v)
    assert extract(model, x, cache=tmp_path).meta["cached"] is True  # repaired: the next call reads it


def test_models_load_names_the_file_and_the_problem(tmp_path):
    from workbench import models

    (tmp_path / "e.pt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"e\.pt is empty \(0 bytes\)"):
        models.load(tmp_path / "e.pt")
    (tmp_path / "g.safetensors").write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ValueError, match=r"g\.safetensors is not a readable safetensors file"):
        models.load(tmp_path / "g.safetensors")
    (tmp_path / "g.pt").write_text("hello")
    with pytest.raises(ValueError, match=r"g\.pt is not a readable torch weights file"):
        models.load(tmp_path / "g.pt")
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text('{"model_type": "be')
    with pytest.raises(ValueError, match=r"config\.json is not valid JSON"):
        models.load(tmp_path / "hf")


@pytest.mark.parametrize("column", ["complex", "all-nan", "strings"])
def test_figures_name_a_non_numeric_value_column(column):
    from workbench import figures
    from workbench.results import tidy

    df = tidy([{"run": "r", "layer": f"l{i}", "measure": "acc", "value": 0.5 + i / 10} for i in range(3)])
    if column == "complex":
        df["value"] = df["value"] + 1j
    elif column == "all-nan":
        df["value"] = np.nan
    else:
        df["value"] = df["value"].astype(str)
    for make in (figures.layer_curve, figures.step_curve):
        with pytest.raises((TypeError, ValueError), match="'value'"):
            make(df.assign(step=0)) if make is figures.step_curve else make(df)

"""Input checks shared by every stage. Each error names the argument and says what to do."""
from __future__ import annotations

import abc
import functools
import inspect
import numbers
from typing import Any, Iterable, Mapping

import numpy as np
import torch

__all__ = ["as_2d_float", "as_2d_tensor", "check_finite", "check_real", "check_scale", "check_device",
           "check_same_length", "check_choice", "check_labels",
           "check_fraction", "check_positive_int", "declare", "Rule", "Interval", "Options", "Flag", "Instance", "Data"]


def check_real(x: Any, name: str) -> None:
    """Raise TypeError if ``x`` (a numpy array or torch tensor) is complex: no measure silently drops the imaginary
    part."""
    if (isinstance(x, torch.Tensor) and x.is_complex()) or (isinstance(x, np.ndarray) and np.iscomplexobj(x)):
        raise TypeError(f"{name} is complex (dtype {x.dtype}); pass the real part ({name}.real) or the magnitude "
                        f"(abs({name})) explicitly")


def _to_numpy(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        check_real(x, name)
        return x.detach().cpu().resolve_conj().numpy() if x.dtype != torch.bfloat16 else \
            x.detach().cpu().float().numpy()
    if isinstance(x, np.ndarray):
        check_real(x, name)
        return x
    if isinstance(x, (list, tuple)):
        arr = np.asarray(x)
        check_real(arr, name)
        return arr
    raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}")


#: magnitudes (max |x|) outside ``[2**-e, 2**e]`` with ``e`` per input precision are extreme: products of such
#: values overflow or underflow (float64: about 1e±100, squares and sums of squares stay finite and normal;
#: float32/float16: about 1e±15)
_SAFE_EXPONENT = {8: 332, 4: 50, 2: 50}


def _max_abs(x: np.ndarray | torch.Tensor) -> float:
    if isinstance(x, torch.Tensor):
        if x.numel() == 0:
            return 0.0
        lo, hi = torch.aminmax(x.detach())
        return float(max(abs(float(lo)), abs(float(hi))))
    if x.size == 0:
        return 0.0
    return float(max(abs(float(np.min(x))), abs(float(np.max(x)))))


def _extreme_exponent(x: Any) -> int | None:
    """The binary exponent ``e`` (max |x| in ``[2**(e-1), 2**e)``) of a finite float array or tensor whose magnitude
    is extreme for its precision, else None (also for non-float, non-finite or empty input: the body checks it)."""
    if isinstance(x, torch.Tensor):
        if not x.is_floating_point():
            return None
        size = x.element_size()
    elif isinstance(x, np.ndarray) and x.dtype.kind == "f":
        size = x.dtype.itemsize
    else:
        return None
    with np.errstate(all="ignore"):
        m = _max_abs(x)
    if not np.isfinite(m) or m == 0:
        return None
    e = int(np.frexp(m)[1])
    limit = _SAFE_EXPONENT.get(size, 50)
    return e if (e > limit or e < -limit) else None


def check_scale(x: Any, name: str, scale: str = "refuse") -> Any:
    """Handle a data argument of extreme magnitude (see ``_SAFE_EXPONENT``; ordinary data pass unchanged).

    ``scale="invariant"``: the measure does not change when its input is multiplied by a constant, so ``x`` is
    divided by a power of two of its max-abs (exact in floating point: the measure's value is unchanged) and
    returned. ``"refuse"``: raise ValueError naming ``name`` and the magnitude. ``"any"``: return ``x`` as it is
    (the function moves data without arithmetic, or passes it to a measure that checks it). A layer mapping is
    handled layer by layer; an :class:`~workbench.activations.Activations` or other lazy mapping is not read here.
    """
    check_choice(scale, ("invariant", "refuse", "any"), "scale")
    if scale == "any":
        return x
    if type(x) is dict:
        out = {k: check_scale(v, f"{name}[{k!r}]", scale) for k, v in x.items()}
        return out if any(out[k] is not x[k] for k in x) else x
    e = _extreme_exponent(x)
    if e is None:
        return x
    if scale == "invariant":
        return torch.ldexp(x, torch.tensor(-e, device=x.device)).to(x.dtype) if isinstance(x, torch.Tensor) \
            else np.ldexp(x, -e).astype(x.dtype, copy=False)
    raise ValueError(f"{name} has an extreme magnitude (max |{name}| = {_max_abs(x):.3g}, dtype {x.dtype}): this "
                     f"measure depends on the scale of its input, and products of such values overflow or underflow; "
                     f"rescale {name} (e.g. {name} / abs({name}).max()) and rescale the result accordingly")


def check_finite(x: np.ndarray | torch.Tensor, name: str) -> None:
    """Raise ValueError if ``x`` holds NaN or Inf, saying where.

    Fast path: under IEEE arithmetic a sum with any NaN or Inf term is NaN or Inf, so a finite sum means
    every entry is finite (one reduction, no boolean copy). Only a non-finite sum (bad entries, or finite
    ones that overflow) pays for the entry-by-entry check.
    """
    if isinstance(x, torch.Tensor):
        if not x.is_floating_point() or bool(torch.isfinite(x.sum())):
            return
        bad = ~torch.isfinite(x)
        n_bad = int(bad.sum())
    else:
        arr = np.asarray(x)
        if not np.issubdtype(arr.dtype, np.inexact):
            return
        with np.errstate(all="ignore"):  # an overflowing sum of finite entries is not an error here
            if np.isfinite(arr.sum()):
                return
        bad = ~np.isfinite(arr)
        n_bad = int(bad.sum())
    if n_bad:
        rows = np.unique(np.nonzero(np.asarray(bad.cpu() if isinstance(bad, torch.Tensor) else bad))[0])
        raise ValueError(
            f"{name} contains {n_bad} NaN/Inf value(s) (first rows: {rows[:5].tolist()}); "
            "remove or impute them before computing this measure")


def as_2d_float(x: Any, name: str, *, dtype=np.float64, min_rows: int = 1) -> np.ndarray:
    """Validate a [N, D] feature matrix and return it as a float numpy array.

    Integer input is converted; 1-D input is an error (ambiguous: one sample or one feature?).
    """
    arr = _to_numpy(x, name)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D [n_samples, n_features], got shape {tuple(arr.shape)}; "
                         "reshape (e.g. x.reshape(len(x), -1)) or pool the activations first")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(f"{name} must be numeric, got dtype {arr.dtype}")
    if arr.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} samples, got {arr.shape[0]}")
    if arr.shape[1] == 0:
        raise ValueError(f"{name} has no features (shape {tuple(arr.shape)}); pass at least one column")
    arr = arr.astype(dtype, copy=False)
    check_finite(arr, name)
    return arr


def as_2d_tensor(x: Any, name: str, *, dtype: torch.dtype = torch.float64, min_rows: int = 1) -> torch.Tensor:
    """Validate a [N, D] feature matrix and return it as a float torch tensor on the input's device.

    Like :func:`as_2d_float`, but a torch tensor stays where it is (CPU or CUDA) so the measure that
    called this runs on the same device; numpy/list input becomes a CPU tensor. Integer and bool input
    are converted; 1-D input is an error.
    """
    if isinstance(x, torch.Tensor):
        t = x.detach()
        if t.ndim != 2:
            raise ValueError(f"{name} must be 2-D [n_samples, n_features], got shape {tuple(t.shape)}; "
                             "reshape (e.g. x.reshape(len(x), -1)) or pool the activations first")
        if t.is_complex():
            raise TypeError(f"{name} must be real-valued, got dtype {t.dtype}")
        if t.shape[0] < min_rows:
            raise ValueError(f"{name} needs at least {min_rows} samples, got {t.shape[0]}")
        if t.shape[1] == 0:
            raise ValueError(f"{name} has no features (shape {tuple(t.shape)}); pass at least one column")
        t = t.to(dtype)
    else:
        arr = as_2d_float(x, name, dtype=np.float64, min_rows=min_rows)
        return torch.from_numpy(np.ascontiguousarray(arr)).to(dtype)
    check_finite(t, name)
    return t


def check_device(device: Any, name: str = "device") -> torch.device:
    """``device`` (a string such as "cpu" / "cuda:0", a ``torch.device`` or a CUDA index) as a ``torch.device`` that
    exists on this machine; ValueError naming ``name`` for an unknown device type or an unavailable accelerator."""
    if isinstance(device, bool) or not isinstance(device, (str, torch.device, int)):
        raise TypeError(f"{name} must be a device string such as 'cpu' or 'cuda:0', a torch.device or a CUDA index, "
                        f"got {type(device).__name__}")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as err:
        raise ValueError(f"{name}={device!r} is not a device: {str(err).split(' at ')[0][:120]}; "
                         "use 'cpu', 'cuda', 'cuda:N' or 'mps'") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{name}={device!r}: CUDA is not available on this machine (torch "
                             f"{torch.__version__}, {'built without CUDA' if torch.version.cuda is None else 'no GPU'}"
                             f"); use {name}='cpu'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"{name}={device!r}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                             f"(indices 0..{torch.cuda.device_count() - 1})")
    elif dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError(f"{name}={device!r}: MPS is not available on this machine; use {name}='cpu'")
    elif dev.type not in ("cpu", "cuda", "mps", "meta"):
        raise ValueError(f"{name}={device!r}: device type {dev.type!r} is not supported here; use 'cpu' or 'cuda'")
    return dev


def check_same_length(**arrays: Any) -> int:
    """All keyword arguments must have the same first dimension; returns it."""
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) > 1:
        desc = ", ".join(f"{k} has {n}" for k, n in lengths.items())
        raise ValueError(f"mismatched number of samples: {desc}; pass arrays over the same examples")
    return next(iter(lengths.values()))


def check_choice(value: Any, choices: Iterable[Any], name: str) -> Any:
    choices = list(choices)
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not one of {choices}")
    return value


def check_labels(y: Any, name: str = "labels", *, min_classes: int = 2) -> np.ndarray:
    """Integer class labels as a 1-D int64 array with at least ``min_classes`` classes."""
    arr = _to_numpy(y, name)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one class per sample), got shape {tuple(arr.shape)}")
    if not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise TypeError(f"{name} must hold integer class ids, got dtype {arr.dtype}; "
                            "encode strings with np.unique(y, return_inverse=True)")
    n_classes = len(np.unique(arr))
    if n_classes < min_classes:
        raise ValueError(f"{name} has {n_classes} distinct class(es); at least {min_classes} are needed")
    return arr.astype(np.int64, copy=False)


def check_fraction(value: Any, name: str, *, low: float = 0.0, high: float = 1.0) -> float:
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"{name} must be a number in [{low}, {high}], got {type(value).__name__}")
    if not (low <= float(value) <= high):
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
    return float(value)


def check_positive_int(value: Any, name: str, *, minimum: int = 1) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {type(value).__name__}")
    if int(value) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_layers_and_measures(acts: Any, measures: Any, choices: Iterable[str]) -> list[str]:
    """Shared checks of the per-layer table functions: ``acts`` a non-empty mapping layer -> array, ``measures``
    a name or a non-empty sequence of names from ``choices``; returns the measures as a list."""
    if not isinstance(acts, Mapping):
        raise TypeError(f"acts must be a mapping layer name -> [N, d] array, got {type(acts).__name__}")
    if len(acts) == 0:
        raise ValueError("acts is empty; pass at least one layer")
    measures = [measures] if isinstance(measures, str) else list(measures)
    if not measures:
        raise ValueError(f"measures is empty; choose from {list(choices)}")
    for m in measures:
        check_choice(m, choices, "measures")
    return measures


# ------------------------------------------------------------------------------------ declared parameters
# In the spirit of scikit-learn's ``_param_validation``: a public function declares a rule per parameter with
# :func:`declare`; the options are checked on every call (before the body runs) with the wording of the
# checks above, and the data rules tell the generated bad-input tests (tests/test_params.py) what valid and
# invalid data look like (the function body checks the data itself, so nothing is copied twice).
class Rule(abc.ABC):
    """A declared parameter rule: ``check`` raises on a bad value; ``example``/``invalid`` feed the tests.
    The base ``check`` accepts everything (a data rule: the function body checks the data)."""

    def check(self, value: Any, name: str) -> None:
        return None

    @abc.abstractmethod
    def example(self) -> Any:
        """A valid value of the parameter."""

    def invalid(self) -> list[Any]:
        return []


class Interval(Rule):
    """A number of ``kind`` (``int`` or ``float``) in an interval; ``None`` allowed with ``none=True``.

    ``closed`` is one of "both", "left", "right", "neither" (which ends belong to the interval).
    """

    def __init__(self, kind: type, low: float | None = None, high: float | None = None, *, closed: str = "both",
                 none: bool = False):
        check_choice(kind, (int, float), "kind")
        check_choice(closed, ("both", "left", "right", "neither"), "closed")
        self.kind, self.low, self.high, self.closed, self.none = kind, low, high, closed, none

    def describe(self) -> str:
        what = "an integer" if self.kind is int else "a number"
        lo_in, hi_in = self.closed in ("both", "left"), self.closed in ("both", "right")
        if self.low is not None and self.high is not None:
            rng = f" in {'[' if lo_in else '('}{self.low}, {self.high}{']' if hi_in else ')'}"
        elif self.low is not None:
            rng = f" {'>=' if lo_in else '>'} {self.low}"
        elif self.high is not None:
            rng = f" {'<=' if hi_in else '<'} {self.high}"
        else:
            rng = ""
        return what + rng + (" or None" if self.none else "")

    def check(self, value: Any, name: str) -> None:
        if value is None and self.none:
            return
        ok_type = numbers.Integral if self.kind is int else numbers.Real
        if not isinstance(value, ok_type) or isinstance(value, bool):
            raise TypeError(f"{name} must be {self.describe()}, got {type(value).__name__}")
        v = float(value)
        lo_in, hi_in = self.closed in ("both", "left"), self.closed in ("both", "right")
        if not np.isfinite(v) or (self.low is not None and (v < self.low or (v == self.low and not lo_in))) or \
                (self.high is not None and (v > self.high or (v == self.high and not hi_in))):
            raise ValueError(f"{name} must be {self.describe()}, got {value!r}")

    def example(self) -> Any:
        if self.low is not None and self.high is not None:
            mid = (self.low + self.high) / 2
            return int(np.ceil(mid)) if self.kind is int else mid
        if self.low is not None:
            return self.kind(self.low + 1)
        if self.high is not None:
            return self.kind(self.high - 1)
        return self.kind(1)

    def invalid(self) -> list[Any]:
        out: list[Any] = ["1"]
        if self.low is not None:
            out.append(self.kind(self.low - 1) if self.kind is int else self.low - 0.5)
        if self.high is not None:
            out.append(self.kind(self.high + 1) if self.kind is int else self.high + 0.5)
        if self.kind is int:
            out.append(1.5)
        if not self.none:
            out.append(None)
        return out


class Options(Rule):
    """One of a fixed set of values (strings); ``None`` allowed with ``none=True``."""

    def __init__(self, *values: Any, none: bool = False):
        self.values, self.none = list(values), none

    def check(self, value: Any, name: str) -> None:
        if value is None and self.none:
            return
        check_choice(value, self.values, name)

    def example(self) -> Any:
        return self.values[0]

    def invalid(self) -> list[Any]:
        return ["<not-an-option>"]


class Instance(Rule):
    """An instance of one of ``types`` (e.g. ``Instance(str)``, ``Instance(Mapping, none=True)``)."""

    def __init__(self, *types: type, none: bool = False, example: Any = None):
        self.types, self.none, self._example = types, none, example

    def describe(self) -> str:
        names = " or ".join(t.__name__ for t in self.types)
        article = "an" if names[0] in "AEIOUaeiou" else "a"
        return f"{article} {names}" + (" or None" if self.none else "")

    def check(self, value: Any, name: str) -> None:
        if value is None and self.none:
            return
        if not isinstance(value, self.types) or (bool not in self.types and isinstance(value, bool)):
            raise TypeError(f"{name} must be {self.describe()}, got {type(value).__name__}")

    def example(self) -> Any:
        if self._example is not None:
            return self._example
        return {str: "label", dict: {}, tuple: (), list: []}.get(self.types[0])

    def invalid(self) -> list[Any]:
        return [object()] + ([] if self.none else [None])


class Flag(Rule):
    """True or False (numpy booleans included)."""

    def check(self, value: Any, name: str) -> None:
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{name} must be True or False, got {value!r}")

    def example(self) -> Any:
        return True

    def invalid(self) -> list[Any]:
        return ["yes", None]


class Data(Rule):
    """A data argument, checked by the function body (the declaration says what valid and bad data are).

    ``kind``: "x" (a [N, D] array), "layers" (an array, tensor, Activations or layer mapping), "labels"
    (integer class ids of the N rows), "any" (checked by the body, no generated bad cases). ``example``: a
    valid value (or a function of no arguments making one) where the kind's default does not fit; ``bad``:
    invalid values for the generated tests in place of the kind's defaults. ``scale`` ("x" and "layers"): what a
    call does with data of extreme magnitude (:func:`check_scale`) — ``"invariant"`` (rescale by a power of two: the
    measure does not depend on the scale), ``"refuse"`` (the default) or ``"any"``; or a function of the call's
    arguments returning one of these (e.g. invariant only with ``normalize=True``). Every call refuses complex
    arrays in data arguments (:func:`check_real`).
    """

    N, D, CLASSES = 48, 6, 3

    def __init__(self, kind: str = "x", *, none: bool = False, example: Any = None, bad: list[Any] | None = None,
                 scale: str | Any = "refuse"):
        check_choice(kind, ("x", "layers", "labels", "any"), "kind")
        if not callable(scale):
            check_choice(scale, ("invariant", "refuse", "any"), "scale")
        self.kind, self.none, self._example, self._bad, self.scale = kind, none, example, bad, scale

    def prepare(self, value: Any, name: str, arguments: Mapping[str, Any]) -> Any:
        """Checks of every call, before the body: complex arrays are refused (TypeError naming ``name``); a data
        array ("x", "layers") of extreme magnitude is rescaled or refused by :func:`check_scale` with the rule's
        ``scale`` (a string, or a function of the call's arguments, defaults included, returning one)."""
        if self.kind == "any" or value is None:
            return value
        for v in (value.values() if type(value) is dict else (value,)):
            if isinstance(v, (np.ndarray, torch.Tensor)):
                check_real(v, name)
        if self.kind == "labels":
            return value
        return check_scale(value, name, self.scale(arguments) if callable(self.scale) else self.scale)

    def example(self) -> Any:
        if self._example is not None:
            return self._example() if callable(self._example) else self._example
        rng = np.random.default_rng(0)
        if self.kind == "labels":
            return np.arange(self.N) % self.CLASSES
        x = rng.normal(size=(self.N, self.D)) + np.repeat(np.eye(self.CLASSES, self.D), self.N // self.CLASSES, 0)
        return {"l0": x, "l1": np.tanh(x @ rng.normal(size=(self.D, self.D)))} if self.kind == "layers" else x

    def invalid(self) -> list[Any]:
        if self._bad is not None:
            return list(self._bad)
        if self.kind == "labels":
            return [np.zeros(self.N, dtype=np.int64)[:, None], np.arange(self.N - 1) % self.CLASSES]
        if self.kind in ("x", "layers"):
            bad = self.example() if self.kind == "x" else self.example()["l0"]
            nan = bad.copy()
            nan[0, 0] = np.nan
            return [bad[:, 0], nan, "features"]
        return []


def declare(**rules: Rule):
    """Declare a rule per parameter of a public function; the non-data rules are checked on every call.

    >>> @declare(k=Interval(int, 1), how=Options("mean", "max"))
    ... def f(x, *, k=1, how="mean"):
    ...     return k
    >>> f(None, k=0)
    Traceback (most recent call last):
    ...
    ValueError: k must be an integer >= 1, got 0
    """
    def decorate(fn):
        sig = inspect.signature(fn)
        unknown = sorted(set(rules) - set(sig.parameters))
        if unknown:
            raise TypeError(f"declare: {fn.__qualname__} has no parameter(s) {unknown}")
        checked = {k: r for k, r in rules.items() if not isinstance(r, Data)}
        data = {k: r for k, r in rules.items() if isinstance(r, Data) and r.kind != "any"}
        data_names = [k for k, r in rules.items() if isinstance(r, Data)]

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if not (checked or data_names):
                return fn(*args, **kwargs)
            bound = sig.bind_partial(*args, **kwargs)
            for name, value in bound.arguments.items():
                rule = checked.get(name)
                if rule is not None:
                    rule.check(value, name)
            if data and any(name in bound.arguments for name in data):
                full = sig.bind_partial(*args, **kwargs)
                full.apply_defaults()
                for name, rule in data.items():
                    if name in bound.arguments:
                        bound.arguments[name] = rule.prepare(bound.arguments[name], name, full.arguments)
                args, kwargs = bound.args, bound.kwargs
            try:
                return fn(*args, **kwargs)
            except (np.linalg.LinAlgError, torch.linalg.LinAlgError) as err:
                given = [n for n in data_names if bound.arguments.get(n) is not None] or data_names or ["the input"]
                first = (str(err).splitlines() or [""])[0][:160]
                raise ValueError(
                    f"{fn.__name__}: the linear algebra on {' / '.join(given)} failed ({first}); "
                    f"likely causes: constant or duplicate columns, (nearly) identical rows, far fewer samples than "
                    f"features, or values of extreme magnitude — drop constant columns, add samples or rescale "
                    f"{given[0]}") from err

        wrapper.__declared__ = dict(rules)
        return wrapper
    return decorate

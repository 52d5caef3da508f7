"""Hydra-style overrides → a :class:`~workbench.study.Study` grid: the logic of ``workbench sweep``.

``workbench sweep label_noise=0,0.1,0.3 seed=0,1,2 model_options.width=16,32`` reads each argument as an override
of a :class:`~workbench.runs.RunConfig` field, in the grammar of Hydra's basic sweeper:

==============================  ==========================================================================
``steps=200``                   a fixed value: every run has it (it changes the base config)
``label_noise=0,0.1,0.3``       a sweep: one grid axis (``Study(vary={"label_noise": [0.0, 0.1, 0.3]})``)
``seed=0,1,2``                  the seeds of every grid point (``Study(seeds=[0, 1, 2])``)
``lr=range(1,4)``               Hydra's range sweep ``range(start, stop[, step])`` (stop excluded; floats
                                allowed), also ``range(stop)``; ``choice(a,b)`` is the same as ``a,b``
``model_options.width=16,32``   a dotted key sets one entry of a dict-valued field, keeping the others
``model_options={width:16}``    a whole dict; ``key=[1,2]`` a list; ``key=[crop],[flip,crop]`` sweeps lists
``name='a,b'`` / ``"a b"``      a quoted string (commas and spaces inside are literal; ``\\,`` also escapes)
``x=null`` ``x=true`` ``x=1e-3``  null, booleans (any case), integers and floats (``1e-3``, ``inf``)
==============================  ==========================================================================

``+key=value`` and ``++key=value`` (Hydra's "add" / "force add") are accepted and mean ``key=value``: every
field exists and a dict entry is added when missing. Values are typed by the field the :class:`RunConfig`
declares: ``label_noise=0`` is the float ``0.0``, ``steps=1e3`` the int ``1000``, ``dataset=1`` the string
``"1"``, ``augment=crop`` the list ``["crop"]``; entries of dict fields keep the type they are written in.
An unknown key is a ``ValueError`` listing the close matches.

Example
-------
>>> from workbench.sweep import build_sweep
>>> sw = build_sweep(["label_noise=0,0.3", "seed=0,1", "steps=20"])
>>> sw.vary, sw.seeds, sw.base.steps
({'label_noise': [0.0, 0.3]}, [0, 1], 20)
>>> list(sw.study(downstream=[], measures=[]).configs)  # the runs' labels (the store: $WORKBENCH_HOME)
['label_noise=0.0,seed=0', 'label_noise=0.0,seed=1', 'label_noise=0.3,seed=0', 'label_noise=0.3,seed=1']
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from .runs import RunConfig

__all__ = ["Override", "parse_override", "parse_value", "Sweep", "build_sweep", "load_base", "format_value",
           "dry_run", "format_dry_run", "summary"]

#: Hydra sweep functions (and features) this grammar does not implement, with what to write instead
_UNSUPPORTED = {"interval": "it defines a search space for an optimizing sweeper; list the values or use range()",
                "glob": "list the values", "sort": "list the values in order", "shuffle": "list the values",
                "tag": "list the values", "extend_list": "give the whole list", "str": "quote the value",
                "int": "write the number", "float": "write the number", "bool": "write true or false",
                "json_str": "quote the value"}
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_][A-Za-z0-9_\-]*)*$")
_INT = re.compile(r"[+-]?\d[\d_]*$")
_FLOAT = re.compile(r"[+-]?((\d[\d_]*)?\.\d[\d_]*([eE][+-]?\d+)?|\d[\d_]*\.?([eE][+-]?\d+)?|inf|nan)$", re.I)
_SPECIAL = set(",[]{}()'\"\\=")  # a string holding one of these is written quoted (format_value)


def _field_kinds() -> dict[str, type | None]:
    """RunConfig field → the Python type its annotation declares (``None`` where it declares no simple one)."""
    simple = {"float": float, "int": int, "str": str, "tuple": list}
    out: dict[str, type | None] = {}
    for f in dataclasses.fields(RunConfig):
        ann = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        out[f.name] = dict if ann.startswith(("Mapping", "dict", "Dict")) else simple.get(ann)
    return out


_KINDS = _field_kinds()


# ----------------------------------------------------------------------------------------------------- parsing
@dataclasses.dataclass(frozen=True)
class _Prim:
    """A parsed scalar: its ``text`` as written (unescaped, stripped) and its ``value`` (quoted: the string)."""
    text: str
    value: Any
    quoted: bool = False


class _Parser:
    """Recursive descent over one override's value: ``element (',' element)*``, or ``range(..)`` / ``choice(..)``."""

    def __init__(self, text: str, what: str):
        self.s, self.i, self.what = text, 0, what

    def fail(self, message: str) -> ValueError:
        return ValueError(f"{self.what}: {message} (at character {self.i + 1} of {self.s!r})")

    def peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def skip_ws(self) -> None:
        while self.peek() in (" ", "\t"):
            self.i += 1

    def expect(self, ch: str) -> None:
        self.skip_ws()
        if self.peek() != ch:
            found = repr(self.peek()) if self.peek() else "the end"
            raise self.fail(f"expected {ch!r}, found {found}")
        self.i += 1

    def sweep(self) -> tuple[list[Any], bool]:
        """The whole value: (nodes, is_sweep)."""
        self.skip_ws()
        m = re.match(r"([A-Za-z_]+)\s*\(", self.s[self.i:])
        if m:
            name = m.group(1)
            if name in ("range", "choice"):
                self.i += m.end()
                args = self.args()
                self.end()
                if name == "choice":
                    if not args:
                        raise self.fail("choice() needs at least one value, e.g. choice(16,32)")
                    return args, True
                return [_Prim(_format_number(v), v) for v in self.range_values(args)], True
            if name in _UNSUPPORTED:
                raise self.fail(f"Hydra's {name}() is not supported here: {_UNSUPPORTED[name]}")
        nodes = [self.element()]
        self.skip_ws()
        while self.peek() == ",":
            self.i += 1
            nodes.append(self.element())
            self.skip_ws()
        self.end()
        return nodes, len(nodes) > 1

    def end(self) -> None:
        self.skip_ws()
        if self.i < len(self.s):
            hint = " (quote the value to keep it literal, e.g. key='a(b)')" if self.peek() in "()[]{}=" else ""
            raise self.fail(f"unexpected {self.peek()!r}{hint}")

    def args(self) -> list[Any]:
        """Comma-separated elements up to the closing parenthesis (keyword arguments are refused)."""
        out: list[Any] = []
        self.skip_ws()
        if self.peek() == ")":
            self.i += 1
            return out
        while True:
            if re.match(r"\s*[A-Za-z_]\w*\s*=", self.s[self.i:]):
                raise self.fail("keyword arguments are not supported; write range(start,stop,step) by position")
            out.append(self.element())
            self.skip_ws()
            if self.peek() == ",":
                self.i += 1
                continue
            self.expect(")")
            return out

    def range_values(self, args: list[Any]) -> list[int | float]:
        nums = [_plain(a) for a in args]
        if not 1 <= len(nums) <= 3 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in nums):
            raise self.fail(f"range() takes 1 to 3 numbers: range(stop), range(start,stop) or "
                            f"range(start,stop,step), got range({', '.join(a.text for a in args)})")
        start, stop, step = (0, nums[0], 1) if len(nums) == 1 else (nums[0], nums[1], nums[2] if len(nums) == 3 else 1)
        if step == 0 or not all(math.isfinite(v) for v in (start, stop, step)):
            raise self.fail("range() needs finite numbers and a step other than 0")
        if all(isinstance(v, int) for v in (start, stop, step)):
            values: list[int | float] = list(range(start, stop, step))
        else:  # Hydra's float range: start + i * step while short of stop, rounded to 12 significant digits
            n = max(0, math.ceil(round((stop - start) / step, 9)))
            values = [float(f"{start + i * step:.12g}") for i in range(n)]
        if not values:
            raise self.fail(f"range({', '.join(a.text for a in args)}) is empty")
        return values

    def element(self) -> Any:
        self.skip_ws()
        ch = self.peek()
        if ch == "[":
            self.i += 1
            items: list[Any] = []
            self.skip_ws()
            if self.peek() == "]":
                self.i += 1
                return items
            while True:
                items.append(self.element())
                self.skip_ws()
                if self.peek() == ",":
                    self.i += 1
                    continue
                self.expect("]")
                return items
        if ch == "{":
            self.i += 1
            out: dict[str, Any] = {}
            self.skip_ws()
            if self.peek() == "}":
                self.i += 1
                return out
            while True:
                key = self.primitive(stop=",:{}[]()'\"")
                if key is None or (not key.quoted and not key.text):
                    raise self.fail("a dict entry needs a key, e.g. {width:16}")
                self.expect(":")
                out[str(key.text)] = self.element()
                self.skip_ws()
                if self.peek() == ",":
                    self.i += 1
                    continue
                self.expect("}")
                return out
        node = self.primitive()
        if node is None:
            found = repr(ch) if ch else "nothing"
            raise self.fail(f"expected a value, found {found}")
        return node

    def primitive(self, stop: str = ",[]{}()'\"") -> _Prim | None:
        self.skip_ws()
        ch = self.peek()
        if ch in ("'", '"'):
            self.i += 1
            buf = []
            while True:
                c = self.peek()
                if not c:
                    raise self.fail(f"the quote {ch} is not closed")
                self.i += 1
                if c == "\\" and self.peek() in (ch, "\\"):
                    buf.append(self.peek())
                    self.i += 1
                elif c == ch:
                    text = "".join(buf)
                    return _Prim(text, text, quoted=True)
                else:
                    buf.append(c)
        buf, start = [], self.i
        while self.i < len(self.s):
            c = self.s[self.i]
            if c == "\\" and self.i + 1 < len(self.s):
                buf.append(self.s[self.i + 1])
                self.i += 2
                continue
            if c in stop:
                break
            buf.append(c)
            self.i += 1
        if self.i == start:
            return None
        text = "".join(buf).strip()
        return _Prim(text, _scalar(text) if "\\" not in self.s[start:self.i] else text)


def _scalar(text: str) -> Any:
    """An unquoted scalar: null, a boolean, an int, a float, else the text."""
    low = text.lower()
    if low == "null":
        return None
    if low in ("true", "false"):
        return low == "true"
    if _INT.match(text):
        return int(text)
    if _FLOAT.match(text):
        return float(text)
    return text


def _plain(node: Any) -> Any:
    """A parsed node as a plain Python value."""
    if isinstance(node, _Prim):
        return node.value
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return {k: _plain(v) for k, v in node.items()}


def _show(node: Any) -> str:
    if isinstance(node, _Prim):
        return repr(node.text) if node.quoted else node.text
    return format_value(_plain(node))


def _typed(node: Any, key: str, kind: type | None) -> Any:
    """``node`` as the value of ``key``, converted to the field's declared ``kind`` (None: as written)."""
    value = _plain(node)
    if kind is None:
        return value
    shown = _show(node)
    if kind in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{key} takes a number, got {shown} ({_kind_name(value)}); e.g. {key}="
                            f"{_DEFAULT_TEXT.get(key, '1')}")
        if kind is float:
            return float(value)
        if isinstance(value, float) and not value.is_integer():
            raise TypeError(f"{key} takes an integer, got {shown}; e.g. {key}={_DEFAULT_TEXT.get(key, '1')}")
        return int(value)
    if kind is str:
        if isinstance(node, _Prim) and value is not None:
            return node.text  # dataset=1 is the name "1", as written
        raise TypeError(f"{key} takes a name (a string), got {shown}; e.g. {key}={_DEFAULT_TEXT.get(key, 'name')}")
    if kind is list:
        if isinstance(node, _Prim) and isinstance(value, str):
            return [value]
        if isinstance(value, list) and all(isinstance(v, _Prim) and v.value is not None for v in node):
            return [v.text for v in node]
        raise TypeError(f"{key} takes a list of names, got {shown}; e.g. {key}=[crop,flip] (or {key}=[] for none)")
    if kind is dict:
        if isinstance(value, dict):
            return value
        raise TypeError(f"{key} takes a dict, got {shown}; write {key}={{width:16,depth:3}}, or set one entry with "
                        f"{key}.width=16")
    return value  # pragma: no cover - every RunConfig kind is handled above


def _kind_name(value: Any) -> str:
    return "null" if value is None else {bool: "a boolean", str: "a string", list: "a list", dict: "a dict"}.get(
        type(value), type(value).__name__)


def _format_number(v: int | float) -> str:
    return str(v) if isinstance(v, int) else repr(float(v))


def format_value(value: Any) -> str:
    """``value`` written in the override grammar, so that :func:`parse_value` reads it back.

    Example
    -------
    >>> format_value({"hidden": [16, 8], "act": "relu"}), format_value(None), format_value("a b")
    ('{act:relu,hidden:[16,8]}', 'null', "'a b'")
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return _format_number(value)
    if isinstance(value, str):
        plain = (value and not (_SPECIAL | {":", " ", "\t"}) & set(value)
                 and _scalar(value) == value)
        return value if plain else "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{format_value(str(k))}:{format_value(v)}" for k, v in sorted(value.items())) + "}"
    raise TypeError(f"cannot write {type(value).__name__} {value!r} as an override value")


_DEFAULT_TEXT = {f.name: format_value(getattr(RunConfig(), f.name)) for f in dataclasses.fields(RunConfig)}


def parse_value(text: str, *, what: str = "value") -> Any:
    """One value of the override grammar (no sweep) as a plain Python value.

    Parameters
    ----------
    text : e.g. ``"0.1"``, ``"[16,32]"``, ``"{width:16}"``, ``"null"``, ``"'a,b'"``.
    what : names the value in error messages.

    Example
    -------
    >>> parse_value("[1,2.5,true,null,cuda:0]")
    [1, 2.5, True, None, 'cuda:0']
    """
    if not isinstance(text, str):
        raise TypeError(f"{what} must be a string in the override grammar, got {type(text).__name__}")
    p = _Parser(text, what)
    node = p.element()
    p.end()
    return _plain(node)


@dataclasses.dataclass(frozen=True)
class Override:
    """One parsed ``key=value`` argument.

    Attributes
    ----------
    key : the field (``"label_noise"``), a dotted entry of a dict field (``"model_options.width"``) or ``"seed"``.
    values : the values, typed by the field (one for a fixed value).
    sweep : whether the argument sweeps (``a,b``, ``range(..)``, ``choice(..)``) or fixes the value.
    text : the argument as given.
    """
    key: str
    values: tuple[Any, ...]
    sweep: bool
    text: str


def _check_key(key: str, text: str) -> tuple[str, type | None]:
    """The field ``key`` names (unknown: ValueError with close matches) and the type of its values."""
    if not _KEY.match(key):
        raise ValueError(f"override {text!r}: {key!r} is not a key; write FIELD=VALUE or FIELD.ENTRY=VALUE, e.g. "
                         "label_noise=0.1 or model_options.width=16")
    name, dot, entry = key.partition(".")
    if "." in entry:
        raise ValueError(f"override {text!r}: a key sets a field or one entry of a dict field, not a nested entry; "
                         f"set the whole entry, e.g. {name}.{entry.partition('.')[0]}={{...}}")
    if name not in _KINDS:
        close = difflib.get_close_matches(name, list(_KINDS), n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        raise ValueError(f"override {text!r}: unknown RunConfig field {name!r}; {hint}fields: {', '.join(_KINDS)}")
    if dot:
        if _KINDS[name] is not dict:
            raise ValueError(f"override {text!r}: {name} is not a dict-valued field, so it has no entries; set "
                             f"{name} itself, e.g. {name}={_DEFAULT_TEXT[name]}")
        return name, None
    return name, _KINDS[name]


def parse_override(text: str) -> Override:
    """Parse one command-line override (module docstring: the grammar).

    Example
    -------
    >>> parse_override("label_noise=0,0.1")
    Override(key='label_noise', values=(0.0, 0.1), sweep=True, text='label_noise=0,0.1')
    >>> parse_override("model_options.hidden=[16,16]").values
    ([16, 16],)
    """
    if not isinstance(text, str):
        raise TypeError(f"an override must be a string KEY=VALUE, got {type(text).__name__} {text!r}")
    body = text.strip()
    if body.startswith("~"):
        raise ValueError(f"override {text!r}: deleting a key (~key) is not supported; every RunConfig field has a "
                         "value: set it instead, e.g. augment=[]")
    body = body[2:] if body.startswith("++") else body[1:] if body.startswith("+") else body
    key, eq, value = body.partition("=")
    key = key.strip()
    if not eq:
        raise ValueError(f"override {text!r} has no '=': write KEY=VALUE (label_noise=0.1) or KEY=A,B,C to sweep "
                         "(label_noise=0,0.1,0.3)")
    _, kind = _check_key(key, text)
    if not value.strip():
        raise ValueError(f"override {text!r} has no value after '='; give one, e.g. {key}="
                         f"{_DEFAULT_TEXT.get(key, '1')} (or {key}='' for an empty string)")
    nodes, sweep = _Parser(value, f"override {text!r}").sweep()
    if key == "seed":
        kind = int
    values = tuple(_typed(n, key, kind) for n in nodes)
    return Override(key, values, sweep, text)


# ----------------------------------------------------------------------------------------------------- the grid
@dataclasses.dataclass(frozen=True)
class Sweep:
    """A base config, the grid axes and the seeds that overrides describe (:func:`build_sweep`).

    Attributes
    ----------
    base : the base config with every fixed override applied.
    vary : field (or dotted entry) → values, Study-style.
    seeds : the seeds of every grid point.
    fixed : the fixed overrides (key → value), in the order given.
    study_options : further :class:`~workbench.study.Study` arguments (those of a finding's study; empty for a
        plain base config).
    """
    base: RunConfig
    vary: dict[str, list[Any]]
    seeds: list[int]
    fixed: dict[str, Any] = dataclasses.field(default_factory=dict)
    study_options: dict[str, Any] = dataclasses.field(default_factory=dict)

    def study(self, **options: Any):
        """The :class:`~workbench.study.Study` of this grid; ``options`` are further Study arguments (``store``,
        ``executor``, ``downstream``, ``measures``, ``name``, …) and take precedence over :attr:`study_options`.

        Example
        -------
        >>> build_sweep(["lr=1e-3,1e-2"]).study(downstream=[], measures=[], store="/tmp/s")  # doctest: +SKIP
        """
        from .study import Study

        return Study(self.base, self.vary or None, seeds=self.seeds, **{**self.study_options, **options})

    def overrides(self, changes: Mapping[str, Any], seed: int) -> str:
        """The overrides of one run (the fixed ones, its grid point and its seed), each ``key=value`` quoted for a
        POSIX shell where needed (``shlex.quote``): given to :func:`build_sweep` with the same base (or pasted
        after ``workbench sweep``), they make exactly that run's config."""
        import shlex

        items = {**{k: v for k, v in self.fixed.items() if k != "seed"}, **changes, "seed": seed}
        return " ".join(shlex.quote(f"{k}={format_value(v)}") for k, v in items.items())


def build_sweep(overrides: Sequence[str], *, base: RunConfig | Mapping[str, Any] | None = None,
                vary: Mapping[str, Sequence[Any]] | None = None, seeds: Sequence[int] | None = None,
                study_options: Mapping[str, Any] | None = None) -> Sweep:
    """Read command-line overrides into a base config, grid axes and seeds.

    Parameters
    ----------
    overrides : ``key=value`` strings (module docstring: the grammar). A sweep adds (or replaces) a grid axis,
        ``seed=...`` sets the seeds, a fixed value changes the base (and removes that key's axis, if any).
    base : the config the runs start from (a RunConfig or a dict of its fields); default ``RunConfig()``.
    vary, seeds, study_options : a study's own grid and arguments to start from (a finding's), which the
        overrides change; default: no axes, seed 0, no options.

    Returns
    -------
    :class:`Sweep` — ``sweep.study(...)`` is the :class:`~workbench.study.Study`.

    Example
    -------
    >>> sw = build_sweep(["model_options.width=16,32", "steps=20"], base={"model": "cnn"})
    >>> sw.vary, sw.base.steps
    ({'model_options.width': [16, 32]}, 20)
    """
    if isinstance(overrides, str) or not isinstance(overrides, (list, tuple)):
        raise TypeError(f"overrides must be a list of 'key=value' strings, got {type(overrides).__name__} "
                        f"{overrides!r}")
    config = RunConfig() if base is None else RunConfig.from_dict(base)
    axes = {k: list(v) for k, v in (vary or {}).items()}
    seed_list = [0] if seeds is None else list(seeds)
    fixed: dict[str, Any] = {}
    seen: dict[str, str] = {}
    for text in overrides:
        o = parse_override(text)
        if o.key in seen:
            raise ValueError(f"override {text!r}: {o.key} is already set by {seen[o.key]!r}; give each key once")
        seen[o.key] = text
        if o.key == "seed":
            seed_list = list(o.values)
            if not o.sweep:
                fixed["seed"] = o.values[0]  # one seed: the base has it too
        elif o.sweep:
            axes[o.key] = list(o.values)
        else:
            fixed[o.key] = o.values[0]
            axes.pop(o.key, None)
    for key in list(axes):  # a whole dict swept and one of its entries fixed: the entry would be lost
        lost = [k for k in fixed if k.partition(".")[0] == key and "." in k]
        if lost:
            raise ValueError(f"{key} is swept as a whole dict, which replaces {', '.join(lost)}; put the entry into "
                             f"each swept dict, or sweep {key}.<entry> instead")
    bad = [s for s in seed_list if isinstance(s, bool) or not isinstance(s, int) or s < 0]
    if bad or not seed_list:
        raise ValueError(f"seed takes integers >= 0, e.g. seed=0,1,2 or seed=range(0,3), got {seed_list}")
    if len(set(seed_list)) < len(seed_list):
        raise ValueError(f"seed repeats a value: {seed_list}; give each seed once")
    config = config.replace(**fixed) if fixed else config
    return Sweep(config, axes, seed_list, fixed, dict(study_options or {}))


def load_base(path: str | Path) -> RunConfig:
    """A :class:`RunConfig` from a JSON or YAML file (``.yaml``/``.yml``, needs pyyaml) holding some or all of its
    fields (the others keep their defaults), e.g. one run's ``config.json`` from the store.

    Example
    -------
    >>> load_base("base.json")  # doctest: +SKIP
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"--base {str(p)!r}: no such file; give a JSON or YAML file of RunConfig fields")
    text = p.read_text()
    if p.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ImportError(f"--base {p.name}: reading YAML needs pyyaml (`pip install pyyaml`); or give the "
                              "config as JSON") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ValueError(f"--base {str(p)!r} is not valid YAML: {err}") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"--base {str(p)!r} is not valid JSON ({err}); YAML files need the suffix .yaml") from None
    if not isinstance(data, Mapping):
        raise ValueError(f"--base {str(p)!r} must hold a mapping of RunConfig fields, got {type(data).__name__}")
    unknown = [k for k in data if k not in _KINDS]
    if unknown:
        hints = []
        for k in unknown:
            close = difflib.get_close_matches(str(k), list(_KINDS), n=2, cutoff=0.6)
            hints.append(f"{k!r}" + (f" (did you mean {' or '.join(close)}?)" if close else ""))
        raise ValueError(f"--base {str(p)!r} has unknown RunConfig field(s) {', '.join(hints)}; fields: "
                         f"{', '.join(_KINDS)}")
    return RunConfig.from_dict(data)


# ----------------------------------------------------------------------------------------------------- output
def dry_run(study: Any, sweep: Sweep) -> pd.DataFrame:
    """One row per run of ``study`` (built from ``sweep``) without training anything: ``run`` (the Study label),
    ``id``, ``status`` (``"new"``: not in the store; ``"done"``: finished, a run would reuse it; ``"exists"``:
    stored but not finished — a run resumes it), ``state`` (the stored run's state) and ``overrides`` (the
    run's own ``key=value`` overrides, :meth:`Sweep.overrides`)."""
    from .runs import Run

    ids = set(study.store.ids())
    rows = []
    for label, (changes, cfg) in study.configs.items():
        state = Run(study.store, cfg.id).status["state"] if cfg.id in ids else ""
        status = "new" if not state else "done" if state == "done" else "exists"
        rows.append({"run": label, "id": cfg.id, "status": status, "state": state,
                     "overrides": sweep.overrides(changes, cfg.seed)})
    return pd.DataFrame(rows, columns=["run", "id", "status", "state", "overrides"])


def format_dry_run(table: pd.DataFrame) -> str:
    """The dry-run lines (``run  id  status  overrides``) and a count line."""
    width = max([len("run")] + [len(r) for r in table["run"]])
    lines = [f"{'run':<{width}}  {'id':<16}  {'status':<18}  overrides"]
    for r in table.itertuples():
        status = r.status if r.status != "exists" else f"exists ({r.state})"
        lines.append(f"{r.run:<{width}}  {r.id:<16}  {status:<18}  {r.overrides}")
    counts = table["status"].value_counts()
    parts = [f"{counts.get(s, 0)} {s}" for s in ("new", "exists", "done")]
    lines.append(f"{len(table)} runs: {', '.join(parts)} (dry run: nothing trained)")
    return "\n".join(lines)


def summary(study: Any, table: pd.DataFrame) -> str:
    """A short account of a finished sweep: per run its id and the final step's loss/accuracy (training history,
    and downstream accuracy at the full label fraction when evaluated), then the failures."""
    rows = []
    for label, (_changes, cfg) in study.configs.items():
        t = table[table["run"] == label]
        if t.empty:
            continue
        row = {"run": label, "id": cfg.id}
        hist = t[t["kind"] == "history"]
        if len(hist):
            last = hist[hist["step"] == hist["step"].max()]
            for r in last[last["measure"].isin(["loss", "accuracy"]) & last["layer"].isna()].itertuples():
                row[f"{r.measure}[{r.split}]"] = r.value
        down = t[(t["kind"] == "downstream") & (t["measure"] == "accuracy")]
        if len(down):
            down = down[(down["step"] == down["step"].max())]
            if "label_fraction" in down:
                down = down[down["label_fraction"].isna() | (down["label_fraction"] == 1.0)]
            for r in down.itertuples():
                row[f"{r.method} {r.task}[{r.split}]"] = r.value
        rows.append(row)
    lines = []
    if rows:
        lines.append(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    done = len(rows)
    lines.append(f"{done} of {len(study.configs)} runs finished, {len(table)} rows"
                 + (f"; {len(study.failures)} failure(s):" if study.failures else ""))
    lines += [f"  {label}: {error}" for label, error in study.failures]
    return "\n".join(lines)

"""A published finding as a self-checking experiment: subjects → study table → checks → verdict → report.

A finding is one declarative :class:`Finding` (one module per finding in this package). It states the claim and
its source, the grid of pretraining choices (a base :class:`~workbench.runs.RunConfig`, ``vary`` and seeds), the
:class:`~workbench.study.Study` arguments (downstream tasks, measures by registry name), the :class:`Check` s
that turn the claim's predicted direction into numbers, the figures that explain *why*, and its sizes
(:class:`Setting`: ``smoke`` for tests and lessons, ``quick`` for a 2-core CPU, ``full`` for a GPU).

The verdict rule
----------------
Each check compares a per-run number ``q`` (a :class:`Quantity` read from the study table) between two
conditions A and B of the varied choices, paired by seed: ``d_s = q(B, s) − q(A, s)`` (or ``d_s = q(A, s)``
for a one-condition check). The interval is a hierarchical percentile bootstrap: resample seeds with
replacement and, where ``q`` carries an example-level interval (``ci_low``/``ci_high`` of a probe accuracy),
draw each resampled ``q`` from ``N(value, ((ci_high − ci_low) / 3.92)²)``; the statistic is the mean of the
resampled ``d``. A check is

- **shown** when the 95 % interval excludes no effect on the predicted side,
- **not shown** when it excludes no effect on the other side (the data contradict the claim),
- **inconclusive** when it contains no effect, or when fewer than ``min_seeds`` seeds pair up (one seed cannot
  tell an effect from noise).

``expect="no_drop"`` (non-inferiority: B is not below A by more than its interval) is shown when the interval
reaches 0 or above and not shown when it lies below 0. The finding is shown when every check is shown, not
shown when any check is not shown, and inconclusive otherwise. (Efron & Tibshirani 1993, *An introduction to
the bootstrap*, ch. 13; the hierarchical resampling of units then observations follows Saravanan et al. 2020,
"Application of the hierarchical bootstrap to multi-level data in neuroscience".)
"""
from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from ..results import tidy
from ..runs import RunConfig, RunStore, atomic_write_text
from ..study import Study

__all__ = ["Finding", "Setting", "Check", "Quantity", "Verdict", "MODES", "OUTCOMES", "EXPECT", "machine",
           "slope", "mean_of", "at_step_fraction"]

MODES = ("smoke", "quick", "full")
OUTCOMES = ("shown", "not shown", "inconclusive")
#: what a check predicts about its contrast d (q(B) − q(A), or q(A) when there is no B)
EXPECT = {"increase": "B > A", "decrease": "B < A", "change": "B ≠ A", "no_drop": "B ≥ A within its interval",
          "positive": "> 0", "negative": "< 0"}


def machine() -> str:
    """A short description of this machine for recorded verdicts: CPU model and cores, and the GPU if torch
    sees one."""
    import os

    import torch

    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")  # Linux names the model here; elsewhere platform's name stands
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), cpu)
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    return f"{cpu}, {n} cores{gpu}"


# ----------------------------------------------------------------------------------------------- quantities
def slope(over: str = "layer_index", *, log: bool = False) -> Callable[[pd.DataFrame], float]:
    """A reducer: the least-squares slope of ``value`` (or ``log10 value``) against column ``over`` among one
    run's rows — e.g. how a per-layer gradient norm changes with depth (decades per layer with ``log``)."""
    def reduce(rows: pd.DataFrame) -> float:
        x = rows[over].to_numpy(float)
        y = rows["value"].to_numpy(float)
        y = np.log10(y) if log else y
        ok = np.isfinite(x) & np.isfinite(y)
        if ok.sum() < 2 or np.ptp(x[ok]) == 0:
            return float("nan")
        return float(np.polyfit(x[ok], y[ok], 1)[0])
    reduce.__name__ = f"slope over {over}" + (" (log10)" if log else "")
    return reduce


def mean_of(rows: pd.DataFrame) -> float:
    """A reducer: the mean ``value`` of one run's rows."""
    return float(rows["value"].mean())


def at_step_fraction(fraction: float) -> Callable[[pd.DataFrame], float]:
    """A reducer: the ``value`` at the step nearest ``fraction`` of the run's last step (e.g. 0.1: early in
    training), among one run's rows."""
    def reduce(rows: pd.DataFrame) -> float:
        steps = rows["step"].to_numpy(float)
        target = fraction * np.nanmax(steps)
        return float(rows["value"].to_numpy(float)[np.nanargmin(np.abs(steps - target))])
    reduce.__name__ = f"at {fraction:g} of training"
    return reduce


@dataclass(frozen=True)
class Quantity:
    """A number per run read from a study table.

    Parameters
    ----------
    select : column → value; rows equal on every column (``None`` selects empty cells), e.g.
        ``{"kind": "downstream", "task": "held-out", "split": "ood", "measure": "accuracy"}``.
    step : ``"final"`` (each run's last step among the selected rows), ``"first"``, a step, or ``"all"``.
    reduce : one run's selected rows → a number; None: the rows must be exactly one per run, whose ``value`` is
        the number and whose ``ci_low``/``ci_high`` (when given) its example-level interval.
    name : how reports name it.
    """

    select: Mapping[str, Any]
    step: Any = "final"
    reduce: Callable[[pd.DataFrame], float] | None = None
    name: str = ""

    def label(self) -> str:
        return self.name or ", ".join(f"{k}={v}" for k, v in self.select.items() if k != "kind")

    def per_run(self, table: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
        """One row per run: ``keys`` (the varied columns and ``seed``), ``value`` and ``sd`` (example-level
        standard deviation; 0 without an interval)."""
        t = table
        for k, v in self.select.items():
            if k not in t.columns:
                raise ValueError(f"quantity {self.label()!r} selects column {k!r}, which the study table lacks; "
                                 f"columns: {list(table.columns)}")
            t = t[t[k].isna()] if v is None else t[t[k] == v]
        if t.empty:
            raise ValueError(f"quantity {self.label()!r}: no rows of the study table match {dict(self.select)}")
        if self.step == "final":
            t = t[t["step"] == t.groupby("run")["step"].transform("max")]
        elif self.step == "first":
            t = t[t["step"] == t.groupby("run")["step"].transform("min")]
        elif self.step != "all":
            t = t[t["step"] == self.step]
        rows = []
        for run, g in t.groupby("run", sort=False):
            row = {k: g[k].iloc[0] for k in keys}
            if self.reduce is None:
                if len(g) != 1:
                    raise ValueError(f"quantity {self.label()!r} selects {len(g)} rows of run {run!r}; add columns "
                                     "to select (layer, split, task …) or give a reduce function")
                r = g.iloc[0]
                width = float(r["ci_high"]) - float(r["ci_low"]) if "ci_low" in g else float("nan")
                row |= {"value": float(r["value"]), "sd": width / 3.92 if np.isfinite(width) else 0.0}
            else:
                row |= {"value": float(self.reduce(g)), "sd": 0.0}
            rows.append({"run": run, **row})
        return pd.DataFrame(rows)


@dataclass(frozen=True)
class Check:
    """One testable part of a claim: ``quantity`` compared between conditions ``a`` and ``b`` (varied column →
    value), paired by seed, as the module docstring's verdict rule says.

    ``expect``: ``"increase"`` / ``"decrease"`` / ``"change"`` / ``"no_drop"`` for q(B) − q(A);
    ``"positive"`` / ``"negative"`` for q(A) alone (``b`` None).
    """

    says: str
    quantity: Quantity
    a: Mapping[str, Any]
    b: Mapping[str, Any] | None = None
    expect: str = "increase"

    def __post_init__(self) -> None:
        if self.expect not in EXPECT:
            raise ValueError(f"expect={self.expect!r} is not one of {list(EXPECT)}")
        if (self.b is None) != (self.expect in ("positive", "negative")):
            raise ValueError(f"check {self.says!r}: expect={self.expect!r} needs "
                             f"{'no b (one condition)' if self.b is None else 'a condition b'}; "
                             "use positive/negative for one condition, the others for a contrast")

    def contrasts(self, table: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
        """Per seed: ``d`` (the contrast) and ``sd`` (its example-level standard deviation)."""
        q = self.quantity.per_run(table, keys)

        def pick(cond: Mapping[str, Any]) -> pd.DataFrame:
            t = q
            for k, v in cond.items():
                if k not in t.columns:
                    raise ValueError(f"check {self.says!r}: condition column {k!r} is not a varied column "
                                     f"({list(keys)})")
                t = t[t[k].astype(str) == str(v)]
            return t.set_index("seed")[["value", "sd"]]

        qa = pick(self.a)
        if self.b is None:
            return qa.rename(columns={"value": "d"})
        qb = pick(self.b)
        both = qa.add_suffix("_a").join(qb.add_suffix("_b"), how="inner")
        return pd.DataFrame({"d": both["value_b"] - both["value_a"],
                             "sd": np.hypot(both["sd_a"], both["sd_b"])}, index=both.index)

    def evaluate(self, table: pd.DataFrame, keys: Sequence[str], *, n_boot: int = 10000, level: float = 0.95,
                 min_seeds: int = 3, seed: int = 0) -> dict[str, Any]:
        """The check's row of the verdict table (see the module docstring for the rule)."""
        c = self.contrasts(table, keys).dropna(subset=["d"])
        d, sd = c["d"].to_numpy(float), c["sd"].to_numpy(float)
        n = len(d)
        row = {"check": self.says, "quantity": self.quantity.label(), "a": _cond(self.a),
               "b": _cond(self.b) if self.b is not None else "", "expect": self.expect, "n_seeds": n,
               "estimate": float(d.mean()) if n else float("nan"), "ci_low": float("nan"), "ci_high": float("nan"),
               "per_seed": json.dumps({str(s): round(float(v), 6) for s, v in zip(c.index, d)})}
        if n == 0:
            return row | {"outcome": "inconclusive", "reason": "no seed has both conditions"}
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, n, size=(n_boot, n))
        boots = (d[idx] + sd[idx] * rng.standard_normal((n_boot, n))).mean(axis=1)
        low, high = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
        row |= {"ci_low": float(low), "ci_high": float(high)}
        if n < min_seeds:
            return row | {"outcome": "inconclusive", "reason": f"{n} seed(s); a verdict needs at least {min_seeds}"}
        sign = {"increase": 1, "positive": 1, "decrease": -1, "negative": -1}.get(self.expect)
        if self.expect == "no_drop":
            outcome = "shown" if high >= 0 else "not shown"
        elif self.expect == "change":
            outcome = "shown" if (low > 0 or high < 0) else "inconclusive"
        else:
            lo, hi = sorted((sign * low, sign * high))
            outcome = "shown" if lo > 0 else ("not shown" if hi < 0 else "inconclusive")
        return row | {"outcome": outcome, "reason": ""}


def _cond(cond: Mapping[str, Any] | None) -> str:
    return ", ".join(f"{k}={v}" for k, v in (cond or {}).items())


# ----------------------------------------------------------------------------------------------- verdict
@dataclass
class Verdict:
    """A finding's verdict: the outcome, one row per check, and where and how it was obtained."""

    finding: str
    mode: str
    outcome: str
    checks: pd.DataFrame
    seeds: list[int]
    wall_s: float = float("nan")
    date: str = ""
    machine: str = ""

    def numbers(self) -> str:
        """The checks' estimates and intervals in one line."""
        return "; ".join(f"{r.quantity} {r.b or r.a}{' vs ' + r.a if r.b else ''}: {r.estimate:+.3g} "
                         f"[{r.ci_low:+.3g}, {r.ci_high:+.3g}] {r.outcome}" for r in self.checks.itertuples())

    def __str__(self) -> str:
        lines = [f"{self.finding} ({self.mode}, seeds {self.seeds}): {self.outcome.upper()}"]
        for r in self.checks.itertuples():
            lines.append(f"  [{r.outcome}] {r.check}: {r.estimate:+.4g} [{r.ci_low:+.4g}, {r.ci_high:+.4g}] "
                         f"over {r.n_seeds} seeds" + (f" ({r.reason})" if r.reason else ""))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"finding": self.finding, "mode": self.mode, "outcome": self.outcome, "seeds": self.seeds,
                "wall_s": self.wall_s, "date": self.date, "machine": self.machine,
                "checks": json.loads(self.checks.to_json(orient="records"))}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Verdict:
        return cls(d["finding"], d["mode"], d["outcome"], pd.DataFrame(d["checks"]), list(d["seeds"]),
                   float(d.get("wall_s", float("nan")) or float("nan")), d.get("date", ""), d.get("machine", ""))


def combine(outcomes: Sequence[str]) -> str:
    """Shown when every check is shown, not shown when any is not shown, else inconclusive."""
    if outcomes and all(o == "shown" for o in outcomes):
        return "shown"
    return "not shown" if "not shown" in outcomes else "inconclusive"


# ----------------------------------------------------------------------------------------------- finding
@dataclass(frozen=True)
class Setting:
    """One size of a finding's experiment: its ``seeds``, ``config`` changes to the finding's base (RunConfig
    fields; dotted keys change one entry of a dict field) and ``study`` changes to its Study arguments."""

    seeds: tuple[int, ...]
    config: Mapping[str, Any] = field(default_factory=dict)
    study: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Finding:
    """A published finding as an experiment (see the module docstring).

    Parameters
    ----------
    id, name : ``"S1"``, ``"label_noise"`` — either selects it (``workbench study S1`` / ``label_noise``).
    claim, source : the finding in one sentence and where it was published.
    predicts : the direction a verdict tests, in words.
    base : the RunConfig every run starts from (the quick setting's, before its changes).
    vary : the pretraining choices, Study-style (``{"label_noise": [0.0, 0.1, 0.3]}``; dotted keys allowed).
    study : further :class:`~workbench.study.Study` arguments (downstream, tasks, measures, layers, …).
    checks : the :class:`Check` s the verdict combines.
    settings : ``{"smoke" | "quick" | "full": Setting}``.
    figures : study table → ``{title: plotly figure}`` explaining why.
    derive : ``(study, table) → rows`` added to the table before the checks (numbers that need the runs'
        stored artifacts), in the results schema with the run's varied columns and seed.
    notes : what the reader should know about the experiment's scale or design (shown in the report).
    """

    id: str
    name: str
    claim: str
    source: str
    predicts: str
    base: RunConfig
    vary: Mapping[str, Sequence[Any]]
    study: Mapping[str, Any]
    checks: Sequence[Check]
    settings: Mapping[str, Setting]
    figures: Callable[[pd.DataFrame], dict[str, Any]] | None = None
    derive: Callable[[Study, pd.DataFrame], pd.DataFrame] | None = None
    notes: str = ""

    def __post_init__(self) -> None:
        missing = [m for m in ("smoke", "quick", "full") if m not in self.settings]
        if missing:
            raise ValueError(f"finding {self.id}: settings lack {missing}")

    def keys(self) -> list[str]:
        """The columns that identify a run's condition: the varied fields and ``seed``."""
        return [*self.vary, "seed"]

    def make_study(self, mode: str = "quick", *, store: Any = None, executor: Any = None) -> Study:
        """The :class:`~workbench.study.Study` of setting ``mode`` (not yet run)."""
        s = self._setting(mode)
        kwargs = {**self.study, **s.study}
        return Study(self.base.replace(**s.config), self.vary, seeds=list(s.seeds), store=store,
                     executor=executor, name=f"{self.id.lower()}-{mode}", **kwargs)

    def _setting(self, mode: str) -> Setting:
        if mode not in self.settings:
            raise ValueError(f"mode={mode!r} is not one of {list(self.settings)}")
        return self.settings[mode]

    def verdict(self, table: pd.DataFrame, *, mode: str = "quick", min_seeds: int = 3) -> Verdict:
        """Evaluate every check on a study table (the rule is the module docstring's)."""
        rows = [c.evaluate(table, self.keys(), min_seeds=min_seeds) for c in self.checks]
        checks = pd.DataFrame(rows)
        seeds = sorted({int(s) for s in table["seed"].dropna()}) if "seed" in table else []
        return Verdict(self.id, mode, combine(list(checks["outcome"])), checks, seeds,
                       date=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), machine=machine())

    def run(self, mode: str = "quick", *, out: str | Path | None = None, store: Any = None, executor: Any = None,
            static: bool = True, progress: bool = True, record: bool = True, threads: int | None = 1) -> Result:
        """Train (or reuse) the runs of setting ``mode``, measure, check, and — with ``out`` — write the report
        (:func:`write_report`). ``record`` keeps the verdict in the store (``<store>/findings/``), where
        ``workbench findings`` reads the latest one.

        ``threads``: torch's intra-op threads while the finding runs, its training included (restored after;
        None: training uses the thread policy of ``workbench._threads``). One thread is the default: on a 2-core
        CPU two threads train these small models ~1.3x faster when the machine is idle but several times slower as
        soon as another process runs (``benchmarks/bench_contention.py``); the recorded quick verdicts used one.
        """
        from .._threads import torch_threads

        with torch_threads(threads):  # validates threads; restores the caller's count after
            return self._run(mode, out, store, executor, static, progress, record)

    def _run(self, mode: str, out: Any, store: Any, executor: Any, static: bool, progress: bool,
             record: bool) -> Result:
        start = time.perf_counter()
        store = store if isinstance(store, RunStore) else RunStore(store)
        study = self.make_study(mode, store=store, executor=executor)
        table = study.run(progress=progress)
        if self.derive is not None:
            table = tidy(pd.concat([table, self.derive(study, table)], ignore_index=True))
        verdict = self.verdict(table, mode=mode)
        verdict.wall_s = round(time.perf_counter() - start, 1)
        result = Result(self, study, table, verdict)
        if record:
            save_verdict(verdict, store)
        if out is not None:
            from ._report import write_report

            write_report(result, out, static=static)
        return result


@dataclass
class Result:
    """What :meth:`Finding.run` returns: the finding, its study, the study table and the verdict."""

    finding: Finding
    study: Study
    table: pd.DataFrame
    verdict: Verdict


def verdict_path(store: RunStore, finding_id: str, mode: str) -> Path:
    return store.root / "findings" / f"{finding_id}-{mode}.json"


def save_verdict(verdict: Verdict, store: RunStore) -> Path:
    path = verdict_path(store, verdict.finding, verdict.mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(verdict.to_dict(), indent=1, allow_nan=True))
    return path


def load_verdict(path: Path) -> Verdict | None:
    """A stored verdict, or None when the file is missing or unreadable (a broken file is reported, not fatal)."""
    import warnings

    if not path.exists():
        return None
    try:
        return Verdict.from_dict(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError) as err:
        warnings.warn(f"ignoring the unreadable verdict file {path} ({type(err).__name__}: {err})", stacklevel=2)
        return None


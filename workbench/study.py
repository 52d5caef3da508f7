"""Runs × checkpoints × layers → one tidy table of measures.

The building blocks a study (and the flagship demo) is made of:

- :func:`run_activations` — a run's activations at a checkpoint on several splits, through the disk cache;
- :func:`layer_measures` — probe accuracy per split and spectrum measures per layer, tidy;
- :func:`cross_run_similarity` — layer × layer CKA between two runs, tidy.

Every table has one row per (run, step, layer, measure[, split]) with a ``value`` column, so any figure is
one call away and CSV export is free.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from .activations import Activations, extract
from .data import Dataset
from .measures import REGISTRY, TAKES, compute
from .measures import get as get_measure
from .results import COLUMNS, tidy
from .runs import Run

__all__ = ["run_activations", "layer_measures", "cross_run_similarity", "TIDY_COLUMNS", "Study", "InProcessExecutor",
           "select_per_run"]

TIDY_COLUMNS = list(COLUMNS)  # the results schema (workbench.results.COLUMNS), kept under its old name


def run_activations(run: Run, dataset: Dataset, splits: Sequence[str] = ("train", "test"), *,
                    step: int | str | None = None, layers: Any = None, pool: str = "mean",
                    max_examples: Mapping[str, int] | None = None, cache: str | os.PathLike | None = None,
                    batch_size: int = 256) -> dict[str, Activations]:
    """Activations of ``run``'s model at checkpoint ``step`` on each split (first ``max_examples[split]`` rows).

    ``cache`` defaults to ``<store>/activations``, so a second call with the same weights and data is a read.
    """
    model = run.load_model(step)
    cache = Path(cache) if cache is not None else run.store.root / "activations"
    out = {}
    for split in splits:
        data = dataset[split]
        limit = (max_examples or {}).get(split)
        if limit is not None and limit < len(data):
            data = data.subset(slice(0, limit))
        out[split] = extract(model, data, layers=layers, pool=pool, cache=cache, batch_size=batch_size)
    return out


def layer_measures(acts: Mapping[str, Activations], *, run: str, step: int, train_split: str = "train",
                   eval_splits: Sequence[str] = ("test",), target: str | None = None, probe_C: float | None = None,
                   control_types: Sequence[str] | None = None, spectrum_split: str | None = None,
                   n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Linear-probe accuracy (with bootstrap CIs) on each eval split, optional control-task selectivity, and
    RankMe / effective rank per layer, as one tidy table.

    Parameters
    ----------
    acts : split name → :class:`Activations` (same layers in each).
    target : factor to probe (default: the class labels).
    probe_C : inverse L2 strength of the logistic probe (sklearn convention); None (default) chooses it per
        layer by 5-fold cross-validation over :data:`workbench.probing._linear.DEFAULT_CS` (one batched fit
        of every layer × C × fold).
    control_types : factor names whose joint value is an example's *input type* for a Hewitt & Liang (2019)
        control task (:func:`workbench.probing.selectivity`, linear probe at C = 1): adds the measures
        ``control_accuracy`` and ``probe_selectivity`` (= task − control accuracy) per layer and eval split.
    spectrum_split : split whose activations feed the spectrum measures (default: the first eval split).
    n_boot, seed : percentile-bootstrap resamples over the split's examples for ``ci_low``/``ci_high`` of the
        accuracies (0 gives NaN bounds), and the seed of folds and bootstrap.

    Returns
    -------
    DataFrame with :data:`TIDY_COLUMNS` (``run, step, layer, layer_index, measure, split, value, ci_low,
    ci_high``); the spectrum rows and selectivity rows have NaN bounds.
    """
    from .probing import linear_probe, selectivity
    from .spectrum import effective_rank, rankme

    def factor(a: Activations, name: str | None) -> np.ndarray:
        y = a.labels if name is None else a.factors.get(name)
        if y is None:
            raise ValueError(f"factor {name!r} not found; factors: {list(a.factors)}")
        return np.asarray(y)

    def types_of(a: Activations) -> np.ndarray:
        cols = [factor(a, f) for f in control_types]
        return np.array(["|".join(map(str, t)) for t in zip(*cols)])

    suffix = "" if target is None else f"[{target}]"
    train = acts[train_split]
    layer_order = {name: i for i, name in enumerate(train.layers)}
    evals = {s: (acts[s], factor(acts[s], target)) for s in eval_splits}
    kwargs = {"C": probe_C} if probe_C is not None else {}
    probe = linear_probe(train, factor(train, target), evals=evals, n_boot=n_boot, seed=seed, **kwargs)
    probe = probe[(probe["measure"] == "accuracy") & probe["split"].isin(list(eval_splits))]
    rows = [{"layer": r.layer, "measure": f"probe_accuracy{suffix}", "split": r.split, "value": float(r.value),
             "ci_low": r.ci_low, "ci_high": r.ci_high} for r in probe.itertuples()]
    if control_types:
        control_types = [control_types] if isinstance(control_types, str) else list(control_types)
        sel = selectivity(train, factor(train, target), types_of(train),
                          {s: (acts[s], factor(acts[s], target), types_of(acts[s])) for s in eval_splits},
                          n_boot=n_boot, seed=seed)
        names = {"control_accuracy": f"control_accuracy{suffix}", "selectivity": f"probe_selectivity{suffix}"}
        sel = sel[sel["measure"].isin(list(names)) & sel["split"].isin(list(eval_splits))]
        rows += [{"layer": r.layer, "measure": names[r.measure], "split": r.split, "value": float(r.value),
                  "ci_low": r.ci_low, "ci_high": r.ci_high} for r in sel.itertuples()]
    spec_split = spectrum_split or eval_splits[0]
    spec = acts[spec_split]
    for layer in spec.layers:
        z = spec[layer]
        for name, fn in (("rankme", rankme), ("effective_rank", effective_rank)):
            rows.append({"layer": layer, "measure": name, "split": spec_split, "value": float(fn(z)),
                         "ci_low": np.nan, "ci_high": np.nan})
    df = pd.DataFrame(rows)
    df["run"], df["step"] = run, int(step)
    df["layer_index"] = df["layer"].map(layer_order).astype(int)
    return df[TIDY_COLUMNS]


def cross_run_similarity(a: Activations, b: Activations, *, run_a: str, run_b: str, step: int | None = None,
                         debiased: bool = False) -> pd.DataFrame:
    """Linear CKA between every layer of run ``a`` and every layer of run ``b`` on the same examples.

    A table in the results schema: :func:`~workbench.similarity.cka_matrix`'s pair rows (``layer``,
    ``layer_index`` of ``a``; ``layer_b``, ``layer_index_b`` of ``b``) with ``run`` = ``run_a``, the extra
    column ``run_b`` and ``step`` (NaN when not given)."""
    from .similarity import cka_matrix

    if a.n != b.n:
        raise ValueError(f"activations of {run_a!r} ({a.n} examples) and {run_b!r} ({b.n}) must cover the "
                         "same examples")
    df = cka_matrix(a, b, debiased=debiased, output="tidy")
    df["run"], df["run_b"] = run_a, run_b
    if step is not None:
        df["step"] = int(step)
    return df


# ----------------------------------------------------------------------------------------------- Study
#: what the Study gives each kind of measure (registry ``takes``), at every checkpoint of every run
STUDY_TAKES = {
    "x": "the layers' activations on measure_split",
    "x, labels": "the layers' activations and class labels on measure_split",
    "x, fit": "activations on measure_split to score, a probe fitted on fit_split",
    "a, b": "layer x layer within the run, and between every pair of runs at the same step (kind cross_run)",
    "outputs, labels": "the model's softmax outputs (hard labels for nce) and the labels on measure_split",
    "model, loss": "the model and the run's own training objective on measure_examples rows of measure_split",
    "model, data": "the model and measure_examples rows of measure_split",
    "x, views": "the layers' activations on measure_split and on one augmented copy of it (positive pairs): the "
                "run's augment (noise when it has none) at its augment_strength",
    "x, groups": "the layers' activations on views_per_group augmented copies of measure_split, each example's "
                 "copies one group (LiDAR's surrogate classes)",
    "tokens": "each layer's output on measure_split as token maps [N, T, D] (a feature map's H·W or L positions × "
              "its channels; a sequence model's positions × features); layers with one vector per example are "
              "skipped",
}


def select_per_run(table: pd.DataFrame, sel: Mapping[str, Any], what: str) -> pd.DataFrame:
    """The rows of a study table that ``sel`` (column -> value; ``None``/NaN selects empty cells) picks, one
    per run: the last checkpoint of each run unless ``sel`` names a ``step``. ``what`` names the selection
    in error messages (no rows, a missing column, or several rows left for a run)."""
    if not isinstance(sel, Mapping) or not sel:
        raise TypeError(f"{what} must be a non-empty dict of column -> value, e.g. {{'measure': 'rankme'}}")
    t = table
    for k, v in sel.items():
        if k not in t.columns:
            raise ValueError(f"{what} selects column {k!r}, which the table lacks; columns: {list(table.columns)}")
        t = t[t[k].isna()] if v is None or (isinstance(v, float) and np.isnan(v)) else t[t[k] == v]
    if "step" not in sel and "step" in t.columns:
        t = t[t["step"] == t.groupby("run")["step"].transform("max")]
    if t.empty:
        raise ValueError(f"{what} {dict(sel)} selects no rows")
    counts = t.groupby("run").size()
    if (counts > 1).any():
        raise ValueError(f"{what} {dict(sel)} selects several rows per run (e.g. {counts.idxmax()!r}); add columns "
                         "(layer, split, task, label_fraction, ...) until one remains")
    return t


class InProcessExecutor:
    """Runs jobs one after another in this process. The :class:`Study` only calls ``map``; a pool or a
    cluster engine with the same method (yielding ``(job, result_or_exception)`` as jobs finish) can
    replace it."""

    def map(self, fn, jobs):
        for job in jobs:
            try:
                yield job, fn(job)
            except Exception as err:  # a failed run is reported, the others go on
                yield job, err


#: extra columns of the study table, after the schema's and before the varied fields (:class:`Study`)
_STUDY_EXTRAS = ("kind", "task", "method", "label_fraction")


def _label(changes: Mapping[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in changes.items())


class Study:
    """A grid of pretraining choices → runs → downstream evaluation → measures → one tidy table.

    Parameters
    ----------
    base : RunConfig or dict — the configuration every run starts from.
    vary : mapping field → list of values; the runs are the Cartesian product (× ``seeds``).
    seeds : seeds of every grid point (``RunConfig.seed``).
    downstream : evaluation methods (:data:`workbench.train.downstream.METHODS`), applied to each task.
    tasks : downstream tasks (see :func:`workbench.train.evaluate`; None = the run's own labels).
    label_fractions : passed to :func:`~workbench.train.evaluate`.
    measures : names from the measure registry (:mod:`workbench.measures`, ``workbench measures`` lists them),
        computed at every step: what each kind of measure is given is :data:`STUDY_TAKES` (per-layer measures
        on ``measure_split``; probes fitted on ``fit_split``; pair measures layer × layer within a run and
        between every two runs on the same data, rows of kind ``cross_run`` with ``run_b``; model-level
        measures on the run's own objective; alignment and LiDAR on seeded augmented copies of the split;
        token-level measures (``dse``) on the layers' token maps).
    measure_options : measure name → options passed to it (e.g. ``{"mutual_knn": {"k": 5}}``).
    fit_split : the split probes (registry measures taking ``fit``) are fitted on.
    views_per_group : augmented copies of each example for LiDAR (its group of views).
    steps : "final", "all" (every checkpoint) or a list of steps, for measures and downstream alike.
    layers : probe points for the measures (None = all but the head's input pooling duplicates).
    store : RunStore or root; executor : see :class:`InProcessExecutor`.

    ``run()`` trains (or reuses) every run, evaluates, measures and returns the table in the results schema
    (:mod:`workbench.results`: ``run`` — the grid point's label —, ``step``, ``layer``, ``layer_index``,
    ``measure``, ``split``, ``value``, ``ci_low``, ``ci_high``), then the extra columns ``kind``
    ("measure" | "cross_run" | "downstream" | "history"; cross-run rows name the second run in ``run_b``),
    ``task``, ``method``, ``label_fraction`` (downstream rows), the
    varied fields and ``seed``; runs that fail are listed in ``study.failures`` and do not stop the others.
    Re-running reuses runs, activations and evaluations.
    """

    def __init__(self, base: Any, vary: Mapping[str, Sequence[Any]] | None = None, *, seeds: Sequence[int] = (0,),
                 downstream: Sequence[str] = ("linear",), tasks: Sequence[Any] = (None,),
                 label_fractions: Sequence[float] = (1.0,), measures: Sequence[str] = ("rankme", "effective_rank"),
                 measure_split: str = "test", measure_examples: int = 1000, steps: Any = "final",
                 layers: Any = None, store: Any = None, executor: Any = None, name: str = "study",
                 evaluate_options: Mapping[str, Any] | None = None,
                 measure_options: Mapping[str, Mapping[str, Any]] | None = None, fit_split: str = "train",
                 views_per_group: int = 4):
        from .runs import RunConfig, RunStore

        self.base = RunConfig.from_dict(base)
        self.vary = {k: list(v) for k, v in (vary or {}).items()}
        fields = set(self.base.to_dict())
        for k, v in self.vary.items():
            if k not in fields:
                raise ValueError(f"vary has unknown config field {k!r}; fields: {sorted(fields)}")
            if not v:
                raise ValueError(f"vary[{k!r}] is empty; give at least one value")
        if "seed" in self.vary:
            raise ValueError("vary the seed with seeds=[...], not vary={'seed': ...}")
        self.seeds = [int(s) for s in seeds]
        self.downstream, self.tasks = list(downstream), list(tasks)
        self.label_fractions, self.measures = list(label_fractions), list(measures)
        self.measure_options = {k: dict(v) for k, v in (measure_options or {}).items()}
        for m in self.measures:
            if m not in REGISTRY:
                raise ValueError(f"measures has unknown {m!r}; registered measures: {list(REGISTRY)} "
                                 "(`workbench measures` lists them with their references)")
            spec = REGISTRY[m]
            if spec.takes not in STUDY_TAKES:
                raise ValueError(f"measures: {m!r} takes {spec.takes} ({TAKES[spec.takes]}), which a Study does not "
                                 f"provide; compute it with workbench.measures.compute({m!r}, ...)")
            for req in spec.requires:
                if not any(o in self.measure_options.get(m, {}) for o in req.split("|")):
                    raise ValueError(f"measures: {m!r} needs the option {req.replace('|', ' or ')}= "
                                     f"({spec.description}); pass measure_options={{{m!r}: {{...}}}}")
        unknown = sorted(set(self.measure_options) - set(self.measures))
        if unknown:
            raise ValueError(f"measure_options names {unknown}, which are not in measures={self.measures}")
        self.fit_split = fit_split
        if not isinstance(views_per_group, int) or isinstance(views_per_group, bool) or views_per_group < 2:
            raise ValueError(f"views_per_group must be an integer >= 2, got {views_per_group!r}")
        self.views_per_group = views_per_group
        self.measure_split, self.measure_examples = measure_split, int(measure_examples)
        self.steps, self.layers, self.name = steps, layers, name
        self.store = store if isinstance(store, RunStore) else RunStore(store)
        self.executor = executor or InProcessExecutor()
        self.evaluate_options = dict(evaluate_options or {})
        self.failures: list[tuple[str, str]] = []
        self.configs = self._grid()  # validates every config up front: a bad grid fails before any training

    def _grid(self) -> dict[str, tuple[dict[str, Any], Any]]:
        import itertools

        keys = list(self.vary)
        out = {}
        for values in itertools.product(*(self.vary[k] for k in keys)):
            for seed in self.seeds:
                changes = dict(zip(keys, values))
                out[_label({**changes, "seed": seed})] = (changes, self.base.replace(**changes, seed=seed))
        return out

    def _steps(self, run: Run) -> list[int]:
        ckpts = run.checkpoints()
        if self.steps == "final":
            return [ckpts[-1]]
        if self.steps == "all":
            return ckpts
        missing = sorted(set(self.steps) - set(ckpts))
        if missing:
            raise ValueError(f"steps {missing} are not checkpoints of run {run.name!r} ({ckpts})")
        return list(self.steps)

    def _one(self, label: str) -> pd.DataFrame:
        from . import data as wb_data
        from .train import train
        from .train.downstream import evaluate  # not re-exported by workbench.train

        changes, cfg = self.configs[label]
        run = train(cfg, self.store, name=label, progress=False)
        parts = []
        steps = self._steps(run)
        if self.measures:
            ds = wb_data.load(cfg.dataset, **dict(cfg.dataset_options))
            for step in steps:
                parts.append(self._measure(run, ds, step))
        if self.downstream:
            for step in steps:
                for task in self.tasks:
                    ev = evaluate(run, task, step=step, methods=self.downstream,
                                  label_fractions=self.label_fractions, **self.evaluate_options)
                    parts.append(ev.assign(kind="downstream"))
        parts.append(run.history().assign(kind="history"))
        table = pd.concat([p for p in parts if len(p)] or parts, ignore_index=True)
        first = [c for c in table.columns if c in COLUMNS] + [c for c in _STUDY_EXTRAS if c in table.columns]
        table = table[[*first, *[c for c in table.columns if c not in first]]]
        choices = {k: str(v) if isinstance(v, (list, tuple)) else v for k, v in {**changes, "seed": cfg.seed}.items()}
        return tidy(table, run=label, **choices)

    def _activations(self, run: Run, ds: Dataset, step: int, splits: Sequence[str]) -> dict[str, Activations]:
        return run_activations(run, ds, list(dict.fromkeys(splits)), step=step, layers=self.layers,
                               max_examples=dict.fromkeys(splits, self.measure_examples))

    def _measure(self, run: Run, ds: Dataset, step: int) -> pd.DataFrame:
        """Every measure of :attr:`measures` at checkpoint ``step`` of ``run``, through the registry."""
        takes = {get_measure(m).takes for m in self.measures}
        need = [self.measure_split] + ([self.fit_split] if "x, fit" in takes else [])
        acts = self._activations(run, ds, step, need) if takes & {"x", "x, labels", "x, fit", "a, b"} else {}
        model = (run.load_model(step) if takes & {"outputs, labels", "model, loss", "model, data", "x, views",
                                                 "x, groups", "tokens"} else None)
        data = ds[self.measure_split]
        if len(data) > self.measure_examples:
            data = data.subset(slice(0, self.measure_examples))
        parts = []
        for name in self.measures:
            try:
                parts.append(self._one_measure(name, acts, model, data, run, ds.kind))
            except ValueError as err:
                raise ValueError(f"measure {name!r} at step {step}: {err}") from err
        return tidy(pd.concat(parts, ignore_index=True), step=step, split=self.measure_split, kind="measure")

    def _one_measure(self, name: str, acts: Mapping[str, Activations], model: Any, data: Any,
                     run: Run, kind: str) -> pd.DataFrame:
        """One measure: the registry's ``takes`` says what it is given (:data:`STUDY_TAKES`)."""
        import torch

        from .dynamics import run_loss
        from .models import predict

        spec, options = get_measure(name), self.measure_options.get(name, {})
        if spec.takes in ("x", "x, labels", "a, b"):
            x = acts[self.measure_split]
            return compute(name, x, x.labels, **options)
        if spec.takes == "x, fit":
            x, fit = acts[self.measure_split], acts[self.fit_split]
            return compute(name, x, x.labels, fit=(fit, fit.labels), **options)
        if spec.takes == "outputs, labels":
            probs = torch.softmax(predict(model, data).double(), dim=1).numpy()
            outputs = probs.argmax(1) if name == "nce" else probs
            return compute(name, outputs=outputs, labels=np.asarray(data.labels), **options)
        if spec.takes in ("x, views", "x, groups"):
            copies = 2 if spec.takes == "x, views" else self.views_per_group
            views = self._augmented(run, model, data, kind, copies)
            if spec.takes == "x, views":
                return compute(name, views[0], views=views[1], **options)
            stacked = {layer: torch.cat([v[layer] for v in views]) for layer in views[0]}
            groups = np.tile(np.arange(len(data)), copies)
            return compute(name, stacked, groups=groups, **options)
        if spec.takes == "tokens":
            return compute(name, self._token_maps(model, data, kind), **options)
        if spec.takes == "model, loss":
            loss = run_loss(run, model, split=self.measure_split, n=self.measure_examples)
            return compute(name, model=model, loss=loss, **options)
        return compute(name, model=model, data=data, **options)

    def _augmented(self, run: Run, model: Any, data: Any, kind: str, copies: int) -> list[Activations]:
        """Activations of ``copies`` augmented copies of ``data`` (the run's augmentations, or ``noise`` for a run
        trained without any), drawn from a fixed seed so every run and step sees the same copies."""
        import torch

        from .data import Split
        from .train.augment import make_augment

        cfg = run.config
        if kind not in ("image", "signal", "vectors"):
            raise ValueError(f"augmented views need image, signal or vector inputs; this dataset holds {kind}")
        augment = make_augment(cfg.augment or ("noise",), cfg.augment_strength, kind=kind)
        out = []
        with torch.random.fork_rng():
            torch.manual_seed(0)
            for _ in range(copies):
                x = augment(torch.as_tensor(np.asarray(data.inputs), dtype=torch.float32)).numpy()
                out.append(extract(model, Split(inputs=x, labels=data.labels), layers=self.layers))
        return out

    def _token_maps(self, model: Any, data: Any, kind: str) -> dict[str, Any]:
        """Each selected layer's output as ``[N, T, D]`` token maps (see :data:`STUDY_TAKES`)."""
        from .models import get_module, predict, select_layers

        paths = select_layers(model, self.layers)
        shapes: dict[str, tuple[int, ...]] = {}

        def hook(name):
            def record(_module, _inputs, output):
                out = output[0] if isinstance(output, (tuple, list)) else output
                shapes.setdefault(name, tuple(out.shape[1:]))
            return record

        handles = [get_module(model, path).register_forward_hook(hook(name)) for name, path in paths.items()]
        try:
            predict(model, data.subset(slice(0, 1)))
        finally:
            for h in handles:
                h.remove()
        maps = [name for name in paths if len(shapes.get(name, ())) >= 2]
        if not maps:
            raise ValueError(f"no selected layer outputs token maps (shapes {shapes}); choose convolutional or "
                             "sequence layers with layers=...")
        flat = extract(model, data, layers=maps, pool="flatten")
        out = {}
        for name in maps:
            t = flat[name].reshape(len(data), *shapes[name])
            if kind in ("image", "signal"):  # channels first: [N, C, *positions] -> [N, positions, C]
                t = t.flatten(2).transpose(1, 2)
            out[name] = t
        return out

    def _cross_runs(self, labels: Sequence[str]) -> pd.DataFrame:
        """Pair measures between every two runs (in grid order) at each step both measured, kind ``cross_run``."""
        from . import data as wb_data
        from .train import train

        pair = [m for m in self.measures if get_measure(m).takes == "a, b"]
        if not pair or len(labels) < 2:
            return pd.DataFrame()
        runs = {label: train(self.configs[label][1], self.store, name=label, progress=False) for label in labels}
        parts = []
        for i, la in enumerate(labels):
            for lb in labels[i + 1:]:
                ca, cb = self.configs[la][1], self.configs[lb][1]
                if (ca.dataset, dict(ca.dataset_options)) != (cb.dataset, dict(cb.dataset_options)):
                    continue  # different data: the examples do not correspond
                ds = wb_data.load(ca.dataset, **dict(ca.dataset_options))
                for step in sorted(set(self._steps(runs[la])) & set(self._steps(runs[lb]))):
                    xa = self._activations(runs[la], ds, step, [self.measure_split])[self.measure_split]
                    xb = self._activations(runs[lb], ds, step, [self.measure_split])[self.measure_split]
                    for name in pair:
                        t = compute(name, xa, b=xb, **self.measure_options.get(name, {}))
                        parts.append(tidy(t, run=la, run_b=lb, step=step, split=self.measure_split,
                                          kind="cross_run"))
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()

    def run(self, progress: bool = True) -> pd.DataFrame:
        """Train/reuse, evaluate and measure every run; returns the study table (class docstring)."""
        from tqdm.auto import tqdm

        self.failures = []
        tables = []
        bar = tqdm(total=len(self.configs), desc=self.name, disable=not progress)
        for label, result in self.executor.map(self._one, list(self.configs)):
            if isinstance(result, Exception):
                self.failures.append((label, f"{type(result).__name__}: {result}"))
            else:
                tables.append(result)
            bar.update(1)
        bar.close()
        if self.failures and progress:
            print(f"{len(self.failures)} run(s) failed: " + "; ".join(f"{l}: {e}" for l, e in self.failures))
        if not tables:
            raise RuntimeError("every run of the study failed: " + "; ".join(f"{l}: {e}" for l, e in self.failures))
        done = [label for label in self.configs if label not in dict(self.failures)]
        cross = self._cross_runs(done)
        if len(cross):
            tables.append(cross)
        self.table = tidy(pd.concat(tables, ignore_index=True))
        return self.table

    def correlate(self, measure: Mapping[str, Any], downstream: Mapping[str, Any], *, method: str = "spearman",
                  n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
        """Rank correlation across runs between a measure and a downstream score, with a bootstrap interval.

        ``measure`` and ``downstream`` select one value per run from :attr:`table` by column equality, e.g.
        ``{"measure": "effective_rank", "layer": "stage3"}`` and ``{"method": "linear", "split": "ood",
        "measure": "accuracy"}`` (the last checkpoint is used unless ``step`` is given). Spearman's ρ (or
        Kendall's τ-b with ``method="kendall"``) over runs; the interval is the 2.5–97.5 % percentile
        bootstrap over runs (resampling runs with replacement, ``n_boot`` times).
        """
        from scipy import stats

        check = {"spearman": stats.spearmanr, "kendall": stats.kendalltau}
        if method not in check:
            raise ValueError(f"method={method!r} is not one of {list(check)}")
        if not hasattr(self, "table"):
            raise RuntimeError("call .run() first")

        a, b = (select_per_run(self.table, sel, what).set_index("run")["value"]
                for sel, what in ((measure, "measure"), (downstream, "downstream")))
        common = a.index.intersection(b.index)
        if len(common) < 3:
            raise ValueError(f"need at least 3 runs with both values, got {len(common)}")
        x, y = a[common].to_numpy(float), b[common].to_numpy(float)
        for values, what, sel in ((x, "measure", measure), (y, "downstream", downstream)):
            if not np.isfinite(values).all():
                raise ValueError(f"{what} {dict(sel)} has non-finite values for some runs; drop those runs")
            if np.ptp(values) == 0:  # a rank correlation with a constant is undefined (scipy returns NaN)
                raise ValueError(f"{what} {dict(sel)} is the same ({values[0]:g}) for all {len(values)} runs; "
                                 "the rank correlation is undefined — pick a quantity that varies across runs")
        rho = float(check[method](x, y)[0])
        rng = np.random.default_rng(seed)
        boots = []
        for _ in range(n_boot):
            i = rng.integers(0, len(x), len(x))
            if np.ptp(x[i]) > 0 and np.ptp(y[i]) > 0:
                boots.append(check[method](x[i], y[i])[0])
        low, high = np.quantile(boots, [0.025, 0.975]) if boots else (np.nan, np.nan)
        return pd.DataFrame([{"measure": str(dict(measure)), "downstream": str(dict(downstream)), "method": method,
                              "n_runs": len(common), "value": rho, "ci_low": float(low), "ci_high": float(high)}])

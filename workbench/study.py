"""Runs × checkpoints × layers → one tidy table of measures.

The building blocks a study (and the flagship demo) is made of:

- :func:`run_activations` — a run's activations at a checkpoint on several splits, through the disk cache;
- :func:`layer_measures` — probe accuracy per split and spectrum measures per layer, tidy;
- :func:`cross_run_similarity` — layer × layer CKA between two runs, tidy.

Every table has one row per (run, step, layer, measure[, split]) with a ``value`` column, so any figure is
one call away and CSV export is free.
"""
from __future__ import annotations

import json
import numbers
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, NamedTuple, Sequence

import numpy as np
import pandas as pd

from .activations import Activations, extract
from .data import Dataset
from .measures import REGISTRY, TAKES, compute
from .measures import get as get_measure
from .results import COLUMNS, tidy
from .runs import Run

__all__ = ["run_activations", "layer_measures", "cross_run_similarity", "TIDY_COLUMNS", "Study", "InProcessExecutor",
           "select_per_run", "StudyJob", "JobResult", "run_job", "select_checkpoint", "SELECTION_MEASURES"]

TIDY_COLUMNS = list(COLUMNS)  # the results schema (workbench.results.COLUMNS), kept under its old name


def run_activations(run: Run, dataset: Dataset, splits: Sequence[str] = ("train", "test"), *,
                    step: int | str | None = None, layers: Any = None, pool: str = "mean",
                    max_examples: Mapping[str, int] | None = None, cache: str | os.PathLike | None = None,
                    batch_size: int = 256, head: bool = False) -> dict[str, Activations]:
    """Activations of ``run``'s model at checkpoint ``step`` on each split (first ``max_examples[split]`` rows).

    ``cache`` defaults to ``<store>/activations``, so a second call with the same weights and data is a read.
    ``head=True`` reads the backbone and the objective's head (``run.load_model(step, head=True)``): ``layers``
    may then name head probe points such as ``"projector"``.
    """
    model = run.load_model(step, head=head)
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
    "x, fit": "activations on measure_split to score, a probe fitted on fit_split (the class labels, or with the "
              "option target= a factor name or a list of them: measure NAME[factor] per factor)",
    "a, b": "layer x layer within the run, and between every pair of runs at the same step (kind cross_run: "
            "the first run's varied fields and seed, the second's run_b and seed_b)",
    "outputs, labels": "the model's softmax outputs (hard labels for nce) and the labels on measure_split",
    "model, loss": "the model and the run's own training objective on measure_examples rows of measure_split",
    "model, data": "the model and measure_examples rows of measure_split",
    "x, views": "the layers' activations on measure_split and on one augmented copy of it (positive pairs): the "
                "run's augment (noise when it has none) at its augment_strength; with the option transform= (names "
                "of workbench.train.augment, and strength=): the plain activations and one copy under that transform "
                "(the invariance measure)",
    "x, groups": "the layers' activations on views_per_group augmented copies of measure_split, each example's "
                 "copies one group (LiDAR's surrogate classes)",
    "tokens": "each layer's output on measure_split as token maps [N, T, D] (a feature map's H·W or L positions × "
              "its channels; a ViT's patch tokens without CLS; a sequence model's positions × features); layers with "
              "one vector per example are skipped",
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
_STUDY_EXTRAS = ("kind", "task", "method", "label_fraction", "label_count")
#: keys of a task given as a dict (:class:`Study` ``tasks``)
_TASK_KEYS = ("dataset", "options", "target", "name", "splits")
#: Study attributes that a :class:`StudyJob` does not carry (it rebuilds its own store, one config, no executor)
_NOT_IN_JOB = frozenset({"store", "executor", "failures", "configs", "table"})
_SEQUENCES = (list, tuple, range, np.ndarray)


def _cell(value: Any) -> Any:
    """A varied value as a table cell and in a run label: a dict as its JSON (sorted keys), a list as text."""
    if isinstance(value, Mapping):
        return json.dumps(value, sort_keys=True, default=str)
    if isinstance(value, (list, tuple)):
        return str(value)
    return value


def _label(changes: Mapping[str, Any]) -> str:
    return ",".join(f"{k}={_cell(v)}" for k, v in changes.items())


def _values(value: Any, what: str, example: str) -> list[Any]:
    """``value`` as a list; a string, a dict or a scalar is a TypeError (a string would be read letter by letter)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, _SEQUENCES):
        hint = " (a string would be read letter by letter)" if isinstance(value, str) else ""
        raise TypeError(f"{what} must be a list, e.g. {example}, got {type(value).__name__} {value!r}{hint}")
    return [v.item() if isinstance(v, np.generic) else v for v in value]


def _check_vary(vary: Any, base: Any) -> dict[str, list[Any]]:
    """``vary`` checked against ``base``'s fields; a dotted key ``field.key`` changes one entry of a dict field."""
    if vary is None:
        return {}
    if not isinstance(vary, Mapping):
        raise TypeError(f"vary must be a dict of config field -> list of values, e.g. {{'label_noise': [0.0, 0.2]}}, "
                        f"got {type(vary).__name__}")
    fields = base.to_dict()
    out = {}
    for key, values in vary.items():
        if not isinstance(key, str):
            raise TypeError(f"vary keys must be config field names (str), got {key!r}")
        name, dot, entry = key.partition(".")
        if name not in fields:
            raise ValueError(f"vary has unknown config field {name!r}; fields: {sorted(fields)}")
        if name == "seed":
            raise ValueError("vary the seed with seeds=[...], not vary={'seed': ...}")
        if dot and not isinstance(fields[name], dict):
            raise ValueError(f"vary[{key!r}]: {name} is not a dict-valued field, so it has no entries; "
                             f"vary {name!r} itself")
        if dot and not entry:
            raise ValueError(f"vary[{key!r}] names no entry after the dot, e.g. '{name}.width'")
        out[key] = _values(values, f"vary[{key!r}]", f"{{{key!r}: [{values!r}]}}")
        if not out[key]:
            raise ValueError(f"vary[{key!r}] is empty; give at least one value")
    for key in out:
        if "." in key and key.partition(".")[0] in out:
            raise ValueError(f"vary has both {key.partition('.')[0]!r} and {key!r}; vary one of them")
    return out


def _check_ints(value: Any, what: str, example: str) -> list[int]:
    """A non-empty list of distinct non-negative integers."""
    values = _values(value, what, example)
    if not values:
        raise ValueError(f"{what} is empty; give at least one, e.g. {example}")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(f"{what} must hold integers, e.g. {example}, got {v!r}")
        if v < 0:
            raise ValueError(f"{what} must hold integers >= 0, got {v}")
    if len(set(values)) < len(values):
        raise ValueError(f"{what} repeats a value: {values}")
    return [int(v) for v in values]


def _check_task(task: Any) -> None:
    if task is None or isinstance(task, str):
        return
    if not isinstance(task, Mapping):
        raise TypeError(f"tasks: each task must be None (the labels), a factor name (str) or a dict, got "
                        f"{type(task).__name__} {task!r}")
    unknown = sorted(set(task) - set(_TASK_KEYS))
    if unknown:
        raise ValueError(f"tasks: task {dict(task)} has unknown key(s) {unknown}; a task dict may have {_TASK_KEYS}")
    if "dataset" not in task and ("options" in task or "name" in task):
        raise ValueError(f"tasks: task {dict(task)} sets options/name without 'dataset'; name the dataset, or give "
                         "only 'target' (a factor of the run's own data) and 'splits'")
    if "splits" in task:
        splits = _values(task["splits"], "a task's 'splits'", "{'target': 'color', 'splits': ['test']}")
        if not splits or not all(isinstance(s, str) for s in splits):
            raise ValueError(f"tasks: task {dict(task)} needs 'splits' as a non-empty list of split names")


def _task_name(task: Any) -> str:
    """The name :func:`workbench.train.evaluate` gives ``task`` (its ``task`` column)."""
    if task is None or isinstance(task, str):
        return task or "label"
    if "dataset" in task:
        target = task.get("target")
        return task.get("name") or task["dataset"] + (f":{target}" if target else "")
    return task.get("target") or "label"


_DATA_CACHE: dict[str, Dataset] = {}


def _load_data(name: str, options: Mapping[str, Any]) -> Dataset:
    """``workbench.data.load(name, **options)``, the last two kept in memory (a Study checks and then measures the
    same data; the datasets are deterministic for their options)."""
    from . import data as wb_data

    try:
        key = json.dumps([name, options], sort_keys=True)
    except TypeError:  # options that are not JSON (arrays): not cached
        return wb_data.load(name, **dict(options))
    if key not in _DATA_CACHE:
        if len(_DATA_CACHE) >= 2:
            _DATA_CACHE.pop(next(iter(_DATA_CACHE)))
        _DATA_CACHE[key] = wb_data.load(name, **dict(options))
    return _DATA_CACHE[key]


class JobResult(NamedTuple):
    """What a :class:`StudyJob` returns: the run's table and the downstream tasks that failed on it
    (``(label, "task NAME: Error: message")``)."""
    table: pd.DataFrame
    failures: tuple[tuple[str, str], ...]


@dataclass(frozen=True, eq=False)
class StudyJob:
    """One run of a :class:`Study` as a small picklable callable (what the study gives its executor).

    ``job()`` rebuilds the study's evaluation and measure settings around this one run — ``config`` trained (or
    reused) in the store at ``store_root``, or the stored subject — and returns a :class:`JobResult`. It holds
    no executor, store handle or other run, so a process pool or a cluster engine can send it elsewhere.
    ``settings`` are the study's public attributes (a subclass's included; ``_private`` ones are not carried).
    """
    label: str
    changes: Mapping[str, Any] = field(repr=False)
    config: Any = field(repr=False)
    store_root: str
    settings: Mapping[str, Any] = field(repr=False)
    study_type: type = field(repr=False)

    def study(self) -> Study:
        """The study of this one run (its ``configs`` hold only ``label``; it has no executor)."""
        from .runs import RunStore

        study = object.__new__(self.study_type)
        study.__dict__.update(self.settings)
        study.store, study.executor, study.failures = RunStore(self.store_root), None, []
        study.configs = {self.label: (dict(self.changes), self.config)}
        return study

    def __call__(self) -> JobResult:
        study = self.study()
        table = study._one(self.label)
        return JobResult(table, tuple(study.failures))


def run_job(job: StudyJob) -> JobResult:
    """``job()``: the function a :class:`Study` hands its executor's ``map`` with the jobs."""
    return job()


class Study:
    """A grid of pretraining choices → runs → downstream evaluation → measures → one tidy table; or the same
    downstream evaluation and measures over runs already in the store (``subjects``).

    Parameters
    ----------
    base : RunConfig or dict — the configuration every run starts from (give ``base`` or ``subjects``).
    vary : mapping field → list of values; the runs are the Cartesian product (× ``seeds``). A dotted key
        ``"model_options.norm"`` changes one entry of a dict-valued field (``dataset_options``, ``model_options``,
        …), keeping the others of ``base``; a whole dict field (``"model_options": [{...}, {...}]``) is varied
        as a whole and its column holds each dict's JSON (sorted keys).
    subjects : instead of ``base``/``vary``/``seeds``: runs already in the store (a :class:`~workbench.runs.Run`,
        a run id or a unique run name; e.g. models imported into the store, or runs trained elsewhere), each
        with at least one checkpoint. They are never trained; their label (``run`` column) is their store name.
    dataset, dataset_options : the data the subjects are measured and evaluated on (tasks None and factor names
        included), instead of each subject's ``config.dataset`` / ``dataset_options`` (with ``dataset`` alone
        the options are empty; with ``dataset_options`` alone the subject's dataset takes them). Subjects only.
    seeds : seeds of every grid point (``RunConfig.seed``; default ``[0]``), distinct integers >= 0.
    downstream : evaluation methods (:data:`workbench.train.downstream.METHODS`), applied to each task.
    tasks : downstream tasks: None (the labels), a categorical factor name, or a dict — either
        :func:`workbench.train.evaluate`'s ``{"dataset", "options", "target", "name"}`` for another dataset or
        ``{"target": factor}`` of the run's own data — which may add ``"splits": [...]``, the evaluation splits
        of that task (default: ``evaluate_options["splits"]``, else every non-train split). A task that fails
        on a run (e.g. an OOD split holding classes the training split lacks) is listed in ``failures`` as
        ``(label, "task NAME: Error: message")`` with a warning; the run's other rows are kept.
    label_fractions : passed to :func:`~workbench.train.evaluate`, each in (0, 1].
    label_counts : absolute numbers of downstream labels, passed to :func:`~workbench.train.evaluate` (rows with
        ``label_count`` = n and ``label_fraction`` NaN); give ``label_fractions=[]`` for counts only.
    measures : names from the measure registry (:mod:`workbench.measures`, ``workbench measures`` lists them),
        computed at every step: what each kind of measure is given is :data:`STUDY_TAKES` (per-layer measures
        on ``measure_split``; probes fitted on ``fit_split``; pair measures layer × layer within a run and
        between every two runs on the same data, rows of kind ``cross_run`` with ``run_b``; model-level
        measures on the run's own objective; alignment and LiDAR on seeded augmented copies of the split;
        token-level measures (``dse``) on the layers' token maps).
    measure_split : the split measures are computed on (a split of every run's data).
    measure_examples : the first rows of ``measure_split`` (and ``fit_split``) that are measured.
    measure_options : measure name → options passed to it (e.g. ``{"mutual_knn": {"k": 5}}``).
    fit_split : the split probes (registry measures taking ``fit``) are fitted on.
    views_per_group : augmented copies of each example for LiDAR (its group of views).
    steps : "final", "all" (every checkpoint) or a list of checkpoint steps, for measures and downstream alike.
    layers : probe points for the measures, read by :func:`workbench.models.select_layers`: None selects
        every probe point of the model (:func:`workbench.models.probe_points`, in forward order — an MLP's
        ``fc1`` … and ``head``; a CNN's stages, ``pool`` and ``head``), a list names probe points or module
        paths, a string is a regular expression over the probe-point names.
    head : measure the backbone *and* the objective's trained head (``run.load_model(step, head=True)``,
        :class:`~workbench.models.heads.WithHead`): the probe points continue past the backbone (without its
        classifier ``head``) into the projector — ``projector.fc1`` …, ``projector`` (the loss's input) — or the
        DINO head of ``distill``. Every run must have a head (simclr, supcon, barlow, vicreg, distill). Downstream
        tasks read a head layer with ``evaluate_options={"layer": "projector"}``.
    store : RunStore or root (default: the subjects' store when they are Runs, else ``RunStore()``).
    executor : an object with ``map(fn, jobs)`` yielding ``(job, result_or_exception)`` (see
        :class:`InProcessExecutor`); it is given :func:`run_job` and one picklable :class:`StudyJob` per run.
    name : the study's name; a trained run's store name is ``"{name}/{label}"`` (the table's ``run`` column is
        the label), so studies with the same grid do not share run names.
    evaluate_options : further keyword arguments of :func:`~workbench.train.evaluate` (``layer``, ``C``,
        ``finetune`` (the fine-tuning settings), ``splits``, …).

    Every argument is checked when the Study is made, before any training (the data are loaded to check the
    split and factor names). ``run()`` trains (or reuses) every run, evaluates, measures and returns the table
    in the results schema (:mod:`workbench.results`: ``run`` — the grid point's label or the subject's store
    name —, ``step``, ``layer``, ``layer_index``, ``measure``, ``split``, ``value``, ``ci_low``, ``ci_high``),
    then the extra columns ``kind`` ("measure" | "cross_run" | "downstream" | "history"; cross-run rows name the
    second run in ``run_b``), ``task``, ``method``, ``label_fraction`` (downstream rows; ``label_count`` too
    with ``label_counts``), the varied fields
    (named as in ``vary``) and ``seed`` (trained runs; a cross-run row has those of its first run and the second
    run's seed in ``seed_b``), and ``n_params`` on every row of a run (the model size as a number: its trainable
    parameters without the classifier head, :func:`~workbench.train.downstream.backbone_parameters`); runs that
    fail are listed in ``study.failures`` and do not stop the others. Re-running reuses runs, activations and
    evaluations.
    """

    def __init__(self, base: Any = None, vary: Mapping[str, Sequence[Any]] | None = None, *,
                 subjects: Sequence[Any] | None = None, dataset: str | None = None,
                 dataset_options: Mapping[str, Any] | None = None, seeds: Sequence[int] | None = None,
                 downstream: Sequence[str] = ("linear",), tasks: Sequence[Any] = (None,),
                 label_fractions: Sequence[float] = (1.0,), measures: Sequence[str] = ("rankme", "effective_rank"),
                 measure_split: str = "test", measure_examples: int = 1000, steps: Any = "final",
                 layers: Any = None, store: Any = None, executor: Any = None, name: str = "study",
                 evaluate_options: Mapping[str, Any] | None = None,
                 measure_options: Mapping[str, Mapping[str, Any]] | None = None, fit_split: str = "train",
                 views_per_group: int = 4, head: bool = False, label_counts: Sequence[int] = ()):
        import inspect

        from .runs import Run, RunConfig, RunStore
        from .train.downstream import METHODS, evaluate

        if (base is None) == (subjects is None):
            raise ValueError("give either base (a config to train, with vary and seeds) or subjects (runs already in "
                             "the store), " + ("not both" if base is not None else "got neither"))
        if not isinstance(name, str) or not name:
            raise TypeError(f"name must be a non-empty string (the study's name), got {name!r}")
        if executor is not None and not callable(getattr(executor, "map", None)):
            raise TypeError(f"executor must have a map(fn, jobs) method (see InProcessExecutor), got "
                            f"{type(executor).__name__}")
        if store is None and subjects is not None and not isinstance(subjects, (str, Run)):
            store = next((s.store for s in subjects if isinstance(s, Run)), None)
        self.name = name
        self.store = store if isinstance(store, RunStore) else RunStore(store)
        self.executor = executor or InProcessExecutor()
        if subjects is None:
            if dataset is not None or dataset_options is not None:
                raise ValueError("dataset= and dataset_options= set the data of subjects=[...]; for trained runs "
                                 "set them in base")
            self.base = RunConfig.from_dict(base)
            self.vary = _check_vary(vary, self.base)
            self.seeds = _check_ints((0,) if seeds is None else seeds, "seeds", "seeds=[0, 1, 2]")
            self.subjects: dict[str, str] = {}
        else:
            if vary:
                raise ValueError("vary applies to trained runs (base=...); subjects are measured as they are")
            if seeds is not None:
                raise ValueError("seeds applies to trained runs (base=...); a subject is one stored run")
            if dataset is not None and not isinstance(dataset, str):
                raise TypeError(f"dataset must be a dataset name (str), got {type(dataset).__name__}")
            if dataset_options is not None and not isinstance(dataset_options, Mapping):
                raise TypeError(f"dataset_options must be a dict, got {type(dataset_options).__name__}")
            self.base, self.vary, self.seeds = None, {}, []
            self.subjects = self._check_subjects(subjects)
        self.dataset = dataset
        self.dataset_options = None if dataset_options is None else dict(dataset_options)

        self.downstream = _values(downstream, "downstream", "downstream=['linear']")
        for m in self.downstream:
            if m not in METHODS:
                raise ValueError(f"downstream has unknown method {m!r}; choose from {list(METHODS)} (or [] for none)")
        self.tasks = _values(tasks, "tasks", "tasks=[None, 'color']")
        for task in self.tasks:
            _check_task(task)
        fractions = _values(label_fractions, "label_fractions", "label_fractions=[0.1, 1.0]")
        for f in fractions:
            if isinstance(f, bool) or not isinstance(f, numbers.Real):
                raise TypeError(f"label_fractions must hold numbers in (0, 1], got {f!r}")
            if not 0 < f <= 1:
                raise ValueError(f"label_fractions must be in (0, 1] (a fraction of the downstream training split), "
                                 f"got {f}")
        self.label_fractions = [float(f) for f in fractions]
        counts = _values(label_counts, "label_counts", "label_counts=[20, 100]")
        self.label_counts = _check_ints(counts, "label_counts", "label_counts=[20, 100]") if counts else []
        if any(n < 2 for n in self.label_counts):
            raise ValueError(f"label_counts must hold integers >= 2 (labelled examples), got {self.label_counts}")
        if self.downstream and not (self.tasks and (self.label_fractions or self.label_counts)):
            raise ValueError("tasks and label_fractions must not be empty when downstream methods are given (or give "
                             "label_counts; downstream=[] evaluates nothing)")
        self.evaluate_options = dict(evaluate_options or {})
        accepted = [p for p in inspect.signature(evaluate).parameters
                    if p not in ("run", "task", "step", "methods", "label_fractions", "label_counts")]
        unknown = sorted(set(self.evaluate_options) - set(accepted))
        if unknown:
            raise ValueError(f"evaluate_options has {unknown}, which evaluate() does not take here; accepted: "
                             f"{accepted} (steps, downstream, tasks, label_fractions and label_counts are Study "
                             "arguments)")
        if "splits" in self.evaluate_options:
            _check_task({"splits": self.evaluate_options["splits"]})
        if {"finetune", "finetune_steps"} & set(self.evaluate_options):  # bad settings fail here, before training
            from .train.downstream import finetune_settings

            finetune_settings(self.evaluate_options.get("finetune"), steps=self.evaluate_options.get("finetune_steps"))

        self.measures = _values(measures, "measures", "measures=['rankme']")
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
        for m, opts in self.measure_options.items():  # a transform (invariance) is checked before any training
            if "transform" in opts and REGISTRY[m].takes == "x, views":
                from .train.augment import make_augment

                try:
                    make_augment(opts["transform"], opts.get("strength", 0.5))
                except (TypeError, ValueError) as err:
                    raise ValueError(f"measure_options[{m!r}]['transform']: {err}") from None
        for arg, value in (("measure_split", measure_split), ("fit_split", fit_split)):
            if not isinstance(value, str) or not value:
                raise TypeError(f"{arg} must be a split name (str), e.g. 'test', got {value!r}")
        self.fit_split = fit_split
        if not isinstance(views_per_group, int) or isinstance(views_per_group, bool) or views_per_group < 2:
            raise ValueError(f"views_per_group must be an integer >= 2, got {views_per_group!r}")
        self.views_per_group = views_per_group
        if isinstance(measure_examples, bool) or not isinstance(measure_examples, numbers.Integral):
            raise TypeError(f"measure_examples must be an integer >= 1, got {measure_examples!r}")
        if measure_examples < 1:
            raise ValueError(f"measure_examples must be >= 1, got {measure_examples}")
        self.measure_split, self.measure_examples = measure_split, int(measure_examples)
        if isinstance(steps, str):
            if steps not in ("final", "all"):
                raise ValueError(f"steps={steps!r}: use 'final', 'all' or a list of checkpoint steps, e.g. [0, 100]")
        else:
            example = f"steps=[{steps}]" if isinstance(steps, numbers.Integral) else "steps=[0, 100]"
            steps = _check_ints(steps, "steps", example)
        if not (layers is None or isinstance(layers, str)
                or (isinstance(layers, (list, tuple)) and layers and all(isinstance(x, str) for x in layers))):
            raise TypeError(f"layers must be None (every probe point), a regular expression (str) or a non-empty list "
                            f"of layer names, got {layers!r}")
        self.steps, self.layers = steps, layers
        if not isinstance(head, bool):
            raise TypeError(f"head must be True or False (measure the objective's head too), got {head!r}")
        self.head = head
        self.failures: list[tuple[str, str]] = []
        if self.subjects:
            self.configs = {label: ({}, Run(self.store, rid).config) for label, rid in self.subjects.items()}
        else:
            self.configs = self._grid()  # validates every config up front: a bad grid fails before any training
        self._check_steps()
        self._check_data()

    def _check_subjects(self, subjects: Any) -> dict[str, str]:
        """label (store name) → run id of each subject; each is in the store and has a checkpoint."""
        from .runs import Run

        if isinstance(subjects, (str, bytes, Run)) or not isinstance(subjects, (list, tuple)):
            raise TypeError(f"subjects must be a list of runs (Run, run id or run name), got {type(subjects).__name__}")
        if not subjects:
            raise ValueError("subjects is empty; give at least one run of the store")
        out: dict[str, str] = {}
        for subject in subjects:
            if isinstance(subject, Run):
                if subject.store.root.resolve() != self.store.root.resolve() or subject.id not in self.store.ids():
                    raise ValueError(f"subjects: run {subject.id} is in the store {subject.store.root}, not in the "
                                     f"study's store {self.store.root}; pass store={str(subject.store.root)!r}")
                run = Run(self.store, subject.id)
            elif isinstance(subject, str):
                try:
                    run = self.store.get(subject)
                except (KeyError, ValueError) as err:
                    raise ValueError(f"subjects: {err.args[0]}") from None
            else:
                raise TypeError(f"subjects: each must be a Run, a run id or a run name, got {type(subject).__name__}")
            if not run.checkpoints():
                raise ValueError(f"subjects: run {run.name!r} ({run.id}) has no checkpoints; train it or import a "
                                 "model with checkpoints first")
            if run.name in out:
                raise ValueError(f"subjects: {run.name!r} is given twice (or two subjects share that name: "
                                 f"{out[run.name]} and {run.id}); rename one")
            out[run.name] = run.id
        return out

    def _check_steps(self) -> None:
        """A list of ``steps`` must be checkpoints of every run (the subjects', or the configs' schedules)."""
        from .runs import Run, checkpoint_schedule

        if isinstance(self.steps, str):
            return
        for label, (_, cfg) in self.configs.items():
            have = (Run(self.store, self.subjects[label]).checkpoints() if label in self.subjects
                    else checkpoint_schedule(cfg.steps, cfg.checkpoints))
            missing = sorted(set(self.steps) - set(have))
            if missing:
                raise ValueError(f"steps {missing} are not checkpoints of run {label!r} (its checkpoints: {have})")

    def _data_spec(self, label: str) -> tuple[str, dict[str, Any]]:
        """(dataset name, options) that run ``label`` is measured and evaluated on."""
        cfg = self.configs[label][1]
        if self.dataset is None and self.dataset_options is None:
            return cfg.dataset, dict(cfg.dataset_options)
        if self.dataset is None:
            return cfg.dataset, dict(self.dataset_options)
        return self.dataset, dict(self.dataset_options or {})

    def _data(self, label: str) -> Dataset:
        return _load_data(*self._data_spec(label))

    def _task_arg(self, task: Any, label: str) -> tuple[Any, list[str] | None]:
        """``task`` as :func:`~workbench.train.evaluate` takes it for run ``label`` and its evaluation splits."""
        splits = self.evaluate_options.get("splits")
        if isinstance(task, Mapping):
            splits = task.get("splits", splits)
            task = ({k: v for k, v in task.items() if k != "splits"} if "dataset" in task else task.get("target"))
        if isinstance(task, Mapping) or (self.dataset is None and self.dataset_options is None):
            return task, None if splits is None else list(splits)
        name, options = self._data_spec(label)  # the study's data, not the subject's own
        target = None if task in (None, "label") else task
        return {"dataset": name, "options": options, "target": target, "name": target or "label"}, splits

    def _check_data(self) -> None:
        """The splits and the factor tasks name what each run's data (and each task's dataset) holds."""
        if not (self.measures or self.downstream):
            return
        fit = any(get_measure(m).takes == "x, fit" for m in self.measures)
        checked: set[str] = set()
        for label in self.configs:
            spec = self._data_spec(label)
            key = json.dumps(spec, sort_keys=True, default=repr)
            if key in checked:
                continue
            checked.add(key)
            ds = _load_data(*spec)
            for arg, split, used in (("measure_split", self.measure_split, bool(self.measures)),
                                     ("fit_split", self.fit_split, fit)):
                if used and split not in ds:
                    raise ValueError(f"{arg}={split!r} is not a split of the dataset {spec[0]!r}; its splits: "
                                     f"{list(ds)}")
            for m in self.measures:  # a probe's target factor(s) must be factors of the data
                targets = self.measure_options.get(m, {}).get("target") if get_measure(m).takes == "x, fit" else None
                for t in [] if targets is None else [targets] if isinstance(targets, str) else list(targets):
                    if t != "label" and t not in ds[self.fit_split].factors:
                        raise ValueError(f"measure_options[{m!r}]: target {t!r} is not a factor of the dataset "
                                         f"{spec[0]!r} (factors: {sorted(ds[self.fit_split].factors)}, or 'label')")
            for task in self.tasks if self.downstream else ():
                arg, splits = self._task_arg(task, label)
                if isinstance(arg, Mapping):
                    name, options = arg["dataset"], dict(arg.get("options") or {})
                    tds = ds if (name, options) == spec else _load_data(name, options)
                    target = arg.get("target")
                else:
                    name, tds, target = spec[0], ds, None if arg in (None, "label") else arg
                if target is not None and target not in tds["train"].factors:
                    raise ValueError(f"tasks: {target!r} is not a factor of the dataset {name!r} (factors: "
                                     f"{sorted(tds['train'].factors)})")
                own = not (isinstance(task, Mapping) and "dataset" in task)  # evaluate() checks these as factors
                if own and target is not None and tds.factor_info.get(target, {}).get("kind") != "categorical":
                    raise ValueError(f"tasks: {target!r} is a continuous factor; downstream evaluation classifies — "
                                     "use a categorical factor")
                bad = [s for s in splits or () if s not in tds]
                if bad:
                    raise ValueError(f"tasks: task {_task_name(task)!r} evaluates on split(s) {bad}, which the "
                                     f"dataset {name!r} lacks; its splits: {list(tds)}")
                if self.label_counts and "train" in tds and max(self.label_counts) > len(tds["train"]):
                    raise ValueError(f"label_counts: {max(self.label_counts)} labels asked, but task "
                                     f"{_task_name(task)!r} has {len(tds['train'])} training examples; give at most "
                                     f"{len(tds['train'])} or a larger labelled split")

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

    def _run_of(self, label: str) -> Run:
        """The stored subject ``label``, or the grid point ``label`` trained (or reused) as ``"{name}/{label}"``."""
        from .runs import Run
        from .train import train

        if label in self.subjects:
            return Run(self.store, self.subjects[label])
        return train(self.configs[label][1], self.store, name=f"{self.name}/{label}", progress=False)

    def columns(self, label: str) -> dict[str, Any]:
        """The columns naming run ``label``'s grid point on its rows of the table: the varied fields (a dict as its
        JSON, a list as text) and ``seed``; none for a subject."""
        if label in self.subjects:
            return {}
        changes, cfg = self.configs[label]
        return {k: _cell(v) for k, v in {**changes, "seed": cfg.seed}.items()}

    def finished_runs(self, table: pd.DataFrame) -> Iterator[tuple[str, Run, dict[str, Any]]]:
        """``(label, run, columns)`` of every run with rows in ``table`` (the study's table; failed runs have none),
        in grid order — for analyses added after :meth:`run` (a finding's ``derive``). ``columns``:
        :meth:`columns`."""
        done = set(table["run"])
        for label, (_changes, cfg) in self.configs.items():
            if label in done:
                yield label, (Run(self.store, self.subjects[label]) if label in self.subjects
                              else self.store.get(cfg)), self.columns(label)

    def jobs(self) -> list[StudyJob]:
        """One :class:`StudyJob` per run, in grid (or subject) order: what :meth:`run` gives the executor."""
        settings = {k: v for k, v in vars(self).items() if k not in _NOT_IN_JOB and not k.startswith("_")}
        return [StudyJob(label, changes, cfg, str(self.store.root), settings, type(self))
                for label, (changes, cfg) in self.configs.items()]

    def _one(self, label: str) -> pd.DataFrame:
        """Train (or reuse) run ``label`` — or take the stored subject —, measure and evaluate it: its rows of the
        study table. A downstream task that fails is appended to :attr:`failures`; the other rows are kept."""
        from .train.downstream import evaluate  # not re-exported by workbench.train

        run = self._run_of(label)
        parts = []
        steps = self._steps(run)
        if self.measures:
            ds = self._data(label)
            for step in steps:
                parts.append(self._measure(run, ds, step))
        if self.downstream:
            options = {k: v for k, v in self.evaluate_options.items() if k != "splits"}
            evaluated: dict[int, list[pd.DataFrame]] = {step: [] for step in steps}
            for task in self.tasks:
                arg, splits = self._task_arg(task, label)
                try:
                    tables = [evaluate(run, arg, step=step, methods=self.downstream, splits=splits,
                                       label_fractions=self.label_fractions, label_counts=self.label_counts,
                                       **options) for step in steps]
                except Exception as err:  # one task failing keeps the run's other rows
                    self.failures.append((label, f"task {_task_name(task)}: {type(err).__name__}: {err}"))
                    continue
                for step, ev in zip(steps, tables):
                    evaluated[step].append(ev.assign(kind="downstream"))
            parts += [ev for step in steps for ev in evaluated[step]]
        parts.append(run.history().assign(kind="history"))
        table = pd.concat([p for p in parts if len(p)] or parts, ignore_index=True)
        first = [c for c in table.columns if c in COLUMNS] + [c for c in _STUDY_EXTRAS if c in table.columns]
        table = table[[*first, *[c for c in table.columns if c not in first]]]
        return tidy(table, run=label, **self.columns(label), n_params=self._n_params(run))

    @staticmethod
    def _n_params(run: Run) -> int:
        """The model's size, the ``n_params`` column: :func:`~workbench.train.downstream.backbone_parameters`."""
        from .train.downstream import backbone_parameters

        return backbone_parameters(run.load_model())

    def _activations(self, run: Run, ds: Dataset, step: int, splits: Sequence[str]) -> dict[str, Activations]:
        return run_activations(run, ds, list(dict.fromkeys(splits)), step=step, layers=self.layers,
                               max_examples=dict.fromkeys(splits, self.measure_examples), head=self.head)

    def _measure(self, run: Run, ds: Dataset, step: int) -> pd.DataFrame:
        """Every measure of :attr:`measures` at checkpoint ``step`` of ``run``, through the registry."""
        takes = {get_measure(m).takes for m in self.measures}
        need = [self.measure_split] + ([self.fit_split] if "x, fit" in takes else [])
        acts = self._activations(run, ds, step, need) if takes & {"x", "x, labels", "x, fit", "a, b"} else {}
        model = (run.load_model(step) if takes & {"outputs, labels", "model, loss", "model, data", "x, views",
                                                 "x, groups", "tokens"} else None)
        layered = {"x, views", "x, groups", "tokens"}  # measures of the layers' activations: with the head if asked
        with_head = run.load_model(step, head=True) if self.head and takes & layered else model
        data = ds[self.measure_split]
        if len(data) > self.measure_examples:
            data = data.subset(slice(0, self.measure_examples))
        parts = []
        for name in self.measures:
            try:
                parts.append(self._one_measure(name, acts, with_head if get_measure(name).takes in layered else model,
                                               data, run, ds.kind))
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
            targets = options.get("target")
            if targets is None:
                return compute(name, x, x.labels, fit=(fit, fit.labels), **options)
            parts = []  # one factor (or several): its values are the labels; the measure is named NAME[factor]
            for t in [targets] if isinstance(targets, str) else list(targets):
                y, y_fit = (x.labels, fit.labels) if t == "label" else (x.factors[t], fit.factors[t])
                part = compute(name, x, np.asarray(y), fit=(fit, np.asarray(y_fit)), **{**options, "target": t})
                parts.append(part.assign(measure=f"{name}[{t}]"))
            return pd.concat(parts, ignore_index=True)
        if spec.takes == "outputs, labels":
            probs = torch.softmax(predict(model, data).double(), dim=1).numpy()
            outputs = probs.argmax(1) if name == "nce" else probs
            return compute(name, outputs=outputs, labels=np.asarray(data.labels), **options)
        if spec.takes == "x, views" and "transform" in options:  # z(x) against z(T(x)) for the named T
            options = dict(options)
            names, strength = options.pop("transform"), options.pop("strength", run.config.augment_strength)
            plain = extract(model, data, layers=self.layers)
            changed = self._augmented(run, model, data, kind, 1, names=names, strength=strength)[0]
            return compute(name, plain, views=changed, **options)
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

    def _augmented(self, run: Run, model: Any, data: Any, kind: str, copies: int, *, names: Any = None,
                   strength: float | None = None) -> list[Activations]:
        """Activations of ``copies`` augmented copies of ``data`` (the run's augmentations, or ``noise`` for a run
        trained without any; or ``names`` at ``strength``), drawn from a fixed seed so every run and step sees the
        same copies."""
        import torch

        from .data import Split
        from .train.augment import make_augment

        cfg = run.config
        if kind not in ("image", "signal", "vectors"):
            raise ValueError(f"augmented views need image, signal or vector inputs; this dataset holds {kind}")
        augment = make_augment(names or cfg.augment or ("noise",),
                               cfg.augment_strength if strength is None else strength, kind=kind)
        out = []
        with torch.random.fork_rng():
            torch.manual_seed(0)
            for _ in range(copies):
                x = augment(torch.as_tensor(np.asarray(data.inputs), dtype=torch.float32)).numpy()
                out.append(extract(model, Split(inputs=x, labels=data.labels), layers=self.layers))
        return out

    def _token_maps(self, model: Any, data: Any, kind: str) -> dict[str, Any]:
        """Each selected layer's output as ``[N, T, D]`` token maps (see :data:`STUDY_TAKES`): ``extract`` with
        ``pool="patch-tokens"`` for images (a CNN's positions × channels, a ViT's patch tokens without CLS) and
        ``"tokens"`` otherwise; layers with one vector per example are skipped."""
        acts = extract(model, data, layers=self.layers, pool="patch-tokens" if kind == "image" else "tokens")
        out = {name: acts[name] for name in acts if acts[name].dim() == 3}
        if not out:
            raise ValueError(f"no selected layer outputs token maps (shapes { {n: acts.shape(n) for n in acts} }); "
                             "choose convolutional or sequence layers with layers=...")
        return out

    def _pair_choices(self, la: str, lb: str) -> dict[str, Any]:
        """The columns naming a cross-run pair's conditions: run ``la``'s varied fields and ``seed`` (as its own
        rows have them) and run ``lb``'s ``seed_b``, so pairs of seeds of one condition can be selected; none for
        subjects."""
        out = self.columns(la)
        if lb not in self.subjects:
            out["seed_b"] = self.configs[lb][1].seed
        return out

    def _cross_runs(self, labels: Sequence[str]) -> pd.DataFrame:
        """Pair measures between every two runs (in grid order) at each step both measured, kind ``cross_run``."""
        pair = [m for m in self.measures if get_measure(m).takes == "a, b"]
        if not pair or len(labels) < 2:
            return pd.DataFrame()
        runs = {label: self._run_of(label) for label in labels}
        parts = []
        for i, la in enumerate(labels):
            for lb in labels[i + 1:]:
                if self._data_spec(la) != self._data_spec(lb):
                    continue  # different data: the examples do not correspond
                ds = self._data(la)
                for step in sorted(set(self._steps(runs[la])) & set(self._steps(runs[lb]))):
                    xa = self._activations(runs[la], ds, step, [self.measure_split])[self.measure_split]
                    xb = self._activations(runs[lb], ds, step, [self.measure_split])[self.measure_split]
                    for name in pair:
                        t = compute(name, xa, b=xb, **self.measure_options.get(name, {}))
                        parts.append(tidy(t, run=la, run_b=lb, step=step, split=self.measure_split,
                                          kind="cross_run", **self._pair_choices(la, lb)))
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()

    def run(self, progress: bool = True) -> pd.DataFrame:
        """Train/reuse, evaluate and measure every run; returns the study table (class docstring). The executor
        is given :func:`run_job` and :meth:`jobs`; a failed run, and each failed downstream task of a run (with
        a warning), is listed in :attr:`failures`."""
        from tqdm.auto import tqdm

        self.failures = []
        tables, failed = [], set()
        bar = tqdm(total=len(self.configs), desc=self.name, disable=not progress)
        for job, result in self.executor.map(run_job, self.jobs()):
            if isinstance(result, BaseException):
                failed.add(job.label)
                self.failures.append((job.label, f"{type(result).__name__}: {result}"))
            else:
                table, task_failures = result
                tables.append(table)
                for label, error in task_failures:
                    self.failures.append((label, error))
                    warnings.warn(f"study {self.name!r}, run {label!r}: {error} (the run's other rows are kept)",
                                  stacklevel=2)
            bar.update(1)
        bar.close()
        if self.failures and progress:
            print(f"{len(self.failures)} failure(s): " + "; ".join(f"{l}: {e}" for l, e in self.failures))
        if not tables:
            raise RuntimeError("every run of the study failed: " + "; ".join(f"{l}: {e}" for l, e in self.failures))
        done = [label for label in self.configs if label not in failed]
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


# ------------------------------------------------------------------------------------------ checkpoint selection
#: measures of :func:`select_checkpoint`'s table, one row each per run
SELECTION_MEASURES = ("picked_step", "oracle_step", "last_step", "score_picked", "score_oracle", "score_last",
                      "picked_minus_last", "oracle_minus_picked")


def _per_step(table: pd.DataFrame, sel: Mapping[str, Any], what: str) -> pd.DataFrame:
    """The rows ``sel`` picks (column → value, ``None`` selects empty cells): one per (run, step)."""
    if not isinstance(sel, Mapping) or not sel:
        raise TypeError(f"{what} must be a non-empty dict of column -> value, e.g. {{'measure': 'dse', "
                        f"'layer': 'stage2'}}, got {type(sel).__name__}")
    t = table
    for k, v in sel.items():
        if k not in t.columns:
            raise ValueError(f"{what} selects column {k!r}, which the table lacks; columns: {list(table.columns)}")
        t = t[t[k].isna()] if v is None or (isinstance(v, float) and np.isnan(v)) else t[t[k] == v]
    if t.empty:
        raise ValueError(f"{what} {dict(sel)} selects no rows of the table")
    counts = t.groupby(["run", "step"]).size()
    if (counts > 1).any():
        run, step = counts.idxmax()
        raise ValueError(f"{what} {dict(sel)} selects {counts.max()} rows for run {run!r} at step {step}; add columns "
                         "(layer, split, task, method, label_fraction, ...) until one row per run and step remains")
    return t


def select_checkpoint(table: pd.DataFrame, by: Mapping[str, Any], score: Mapping[str, Any], *, pick: str = "max",
                      best: str = "max") -> pd.DataFrame:
    """Pick a checkpoint of every run by a label-free estimator and compare it with the last and the oracle one.

    Per run, the candidate steps are those where both selections have a finite value. The estimator ``by``
    (e.g. DSE) picks ``s* = argmax_s by(s)`` (``pick="max"``; ``argmin`` with ``"min"``); the oracle step is
    the best downstream ``score`` (``argmax``, or ``argmin`` with ``best="min"`` for a loss); the last step is
    the last candidate. Ties go to the earliest step. The gaps are signed so that positive means better::

        picked_minus_last   = sign · (score(s*) − score(s_last))
        oracle_minus_picked = sign · (score(s_oracle) − score(s*))   (>= 0)

    with ``sign = +1`` for ``best="max"`` and ``-1`` for ``"min"``. This is how Dai et al. (2025, "Exploring
    structural degradation in dense representations for self-supervised learning", NeurIPS, sec. 5) report DSE's
    checkpoint selection: the dense score at DSE's pick against the last checkpoint, and the gap to the best
    (oracle) checkpoint.

    Parameters
    ----------
    table : a study table (results schema with ``run``, ``step`` and ``value``), e.g. ``Study.run()``'s.
    by : column → value selecting the estimator's rows, one per run and step, e.g.
        ``{"kind": "measure", "measure": "dse", "layer": "stage2"}``.
    score : column → value selecting the downstream score, one row per run and step, e.g.
        ``{"kind": "downstream", "method": "dense", "split": "test", "measure": "miou"}``.
    pick : "max" or "min": whether the estimator's largest or smallest value picks the checkpoint.
    best : "max" or "min": whether a larger or a smaller score is better.

    Returns
    -------
    DataFrame in the results schema, ``kind="selection"``, one row per run and measure of
    :data:`SELECTION_MEASURES`: the three steps (value = the step; ``step`` = that step), the scores there
    (``step`` = where it was read) and the two gaps (``step`` = the last step); the columns constant over a run's
    score rows (``seed``, the varied fields, ``task``, ``method``, ``split``, ...) are kept.

    Examples
    --------
    >>> import pandas as pd
    >>> rows = [{"run": "a", "step": s, "measure": m, "value": v} for s, d, q in [(10, 0.1, 0.5), (100, 0.3, 0.7),
    ...         (1000, 0.2, 0.6)] for m, v in [("dse", d), ("miou", q)]]
    >>> sel = select_checkpoint(pd.DataFrame(rows), by={"measure": "dse"}, score={"measure": "miou"})
    >>> sel.set_index("measure")["value"][["picked_step", "last_step", "picked_minus_last"]].round(3).tolist()
    [100.0, 1000.0, 0.1]
    """
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"table must be a study table (pandas DataFrame), got {type(table).__name__}")
    missing = [c for c in ("run", "step", "value") if c not in table.columns]
    if missing:
        raise ValueError(f"table lacks the columns {missing}; pass a study table in the results schema")
    for name, value in (("pick", pick), ("best", best)):
        if value not in ("max", "min"):
            raise ValueError(f"{name}={value!r}: use 'max' or 'min'")
    est = _per_step(table, by, "by")
    sc = _per_step(table, score, "score")
    sign = 1.0 if best == "max" else -1.0
    skip = {*COLUMNS, "kind", "run_b"} - {"split"}
    rows = []
    for run, s_rows in sc.groupby("run", sort=False):
        e = est[est["run"] == run].set_index("step")["value"].astype(float)
        s = s_rows.set_index("step")["value"].astype(float)
        steps = sorted(set(e.index[np.isfinite(e.to_numpy())]) & set(s.index[np.isfinite(s.to_numpy())]))
        if not steps:
            raise ValueError(f"run {run!r} has no step where both by {dict(by)} and score {dict(score)} have a finite "
                             "value")
        e, s = e[steps], s[steps]
        picked = steps[int(np.argmax(e.to_numpy()) if pick == "max" else np.argmin(e.to_numpy()))]
        oracle = steps[int(np.argmax(sign * s.to_numpy()))]
        last = steps[-1]
        keep = {c: s_rows[c].iloc[0] for c in s_rows.columns
                if c not in skip and s_rows[c].nunique(dropna=False) == 1}
        values = {"picked_step": (picked, picked), "oracle_step": (oracle, oracle), "last_step": (last, last),
                  "score_picked": (picked, s[picked]), "score_oracle": (oracle, s[oracle]),
                  "score_last": (last, s[last]), "picked_minus_last": (last, sign * (s[picked] - s[last])),
                  "oracle_minus_picked": (last, sign * (s[oracle] - s[picked]))}
        rows += [{**keep, "run": run, "step": step, "measure": m, "value": float(v)} for m, (step, v) in values.items()]
    return tidy(rows, kind="selection")

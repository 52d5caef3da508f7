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
from .runs import Run

__all__ = ["run_activations", "layer_measures", "cross_run_similarity", "TIDY_COLUMNS"]

TIDY_COLUMNS = ["run", "step", "layer", "layer_index", "measure", "split", "value"]


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
                   eval_splits: Sequence[str] = ("test",), target: str | None = None, probe_C: float | None = 1.0,
                   spectrum_split: str | None = None) -> pd.DataFrame:
    """Linear-probe accuracy on each eval split and RankMe / effective rank per layer, as a tidy table.

    Parameters
    ----------
    acts : split name → :class:`Activations` (same layers in each).
    target : factor to probe (default: the class labels).
    probe_C : inverse L2 strength of the logistic probe (sklearn convention); None chooses it by
        cross-validation (slower).
    spectrum_split : split whose activations feed the spectrum measures (default: the first eval split).
    """
    from .probing import linear_probe
    from .spectrum import effective_rank, rankme

    def labels_of(a: Activations) -> np.ndarray:
        y = a.labels if target is None else a.factors.get(target)
        if y is None:
            raise ValueError(f"target={target!r} not found; factors: {list(a.factors)}")
        return np.asarray(y)

    train = acts[train_split]
    layer_order = {name: i for i, name in enumerate(train.layers)}
    evals = {s: (acts[s], labels_of(acts[s])) for s in eval_splits}
    kwargs = {"C": probe_C} if probe_C is not None else {}
    probe = linear_probe(train, labels_of(train), evals=evals, **kwargs)
    probe = probe[probe["metric"] == "accuracy"]
    rows = [{"layer": r.layer, "measure": "probe_accuracy" if target is None else f"probe_accuracy[{target}]",
             "split": r.split, "value": float(r.value)} for r in probe.itertuples()]
    spec = acts[spectrum_split or eval_splits[0]]
    for layer in spec.layers:
        z = spec[layer]
        rows.append({"layer": layer, "measure": "rankme", "split": spectrum_split or eval_splits[0],
                     "value": float(rankme(z))})
        rows.append({"layer": layer, "measure": "effective_rank", "split": spectrum_split or eval_splits[0],
                     "value": float(effective_rank(z))})
    df = pd.DataFrame(rows)
    df["run"], df["step"] = run, int(step)
    df["layer_index"] = df["layer"].map(layer_order).astype(int)
    return df[TIDY_COLUMNS]


def cross_run_similarity(a: Activations, b: Activations, *, run_a: str, run_b: str, step: int | None = None,
                         debiased: bool = False) -> pd.DataFrame:
    """Linear CKA between every layer of run ``a`` and every layer of run ``b`` on the same examples."""
    from .similarity import cka_matrix

    if a.n != b.n:
        raise ValueError(f"activations of {run_a!r} ({a.n} examples) and {run_b!r} ({b.n}) must cover the "
                         "same examples")
    df = cka_matrix(a, b, debiased=debiased, output="tidy")
    df["run_a"], df["run_b"] = run_a, run_b
    if step is not None:
        df["step"] = int(step)
    return df

"""The one results schema: every measure, probe, evaluation and study returns a long, tidy table.

One row per value, with the columns :data:`COLUMNS` in this order, then named extra columns of the family
that produced it (:data:`EXTRA_COLUMNS`)::

    run  step  layer  layer_index  measure  split  value  ci_low  ci_high  [extras …]

- ``run`` — run name (NaN for measures computed on bare arrays), ``step`` — checkpoint step (NaN likewise);
- ``layer`` — layer (probe point) name, ``layer_index`` — its position in the mapping / model (NaN for a
  model-level measure);
- ``measure`` — what the value is (a registered measure name, ``accuracy``, ``loss`` …; never ``metric``);
- ``split`` — the data split the value was computed on (NaN if none);
- ``value`` — the number; ``ci_low`` / ``ci_high`` — its confidence interval (NaN if none).

Figures, dashboards, export and the HTML report consume this layout without renaming (the layout of
rsatoolbox's and pandas' long tables: Wickham, "Tidy data", J. Stat. Softw. 59(10), 2014). Producers build
it with :func:`tidy`; consumers call :func:`check_tidy`.

>>> from workbench.results import tidy
>>> t = tidy([{"layer": "block1", "measure": "rankme", "value": 3.5},
...           {"layer": "block2", "measure": "rankme", "value": 7.25}], run="a", step=100)
>>> list(t.columns)
['run', 'step', 'layer', 'layer_index', 'measure', 'split', 'value', 'ci_low', 'ci_high']
>>> t[["layer", "layer_index", "value"]].to_dict("records")
[{'layer': 'block1', 'layer_index': 0, 'value': 3.5}, {'layer': 'block2', 'layer_index': 1, 'value': 7.25}]
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from ._validation import Data, Instance, declare

__all__ = ["COLUMNS", "EXTRA_COLUMNS", "tidy", "check_tidy"]

COLUMNS = ("run", "step", "layer", "layer_index", "measure", "split", "value", "ci_low", "ci_high")

#: Named extra columns, one meaning each, placed after :data:`COLUMNS` when a family produces them.
EXTRA_COLUMNS = {
    "layer_b": "second layer of a layer-pair measure (similarity); ``layer`` is the first",
    "layer_index_b": "position of ``layer_b`` in its mapping",
    "run_b": "second run of a cross-run measure; ``run`` is the first",
    "target": "the factor (label) a probe or transfer score predicts",
    "method": "how the value was obtained: probe / evaluation method (linear, knn, mlp, finetune …)",
    "task": "downstream task name",
    "label_fraction": "fraction of the downstream training labels used",
    "label_count": "number of downstream training labels used (absolute label counts; NaN for a fraction)",
    "n_train": "number of training examples behind the value",
    "C": "inverse L2 strength of a logistic probe (sklearn convention)",
    "k": "neighbours of a k-NN probe or neighbourhood measure",
    "example": "example index of a per-example value",
    "kind": "study row kind: measure, downstream or history",
    "n_params": "trainable parameters of the run's model without its classifier head (model size)",
    "seed": "replicate seed of the row (the run's seed, or the seed of a resampling or fine-tune)",
    "n": "number of examples behind the value",
    "n_boot": "number of resamples behind ci_low / ci_high",
    "p_value": "permutation p-value (1 + #{null >= value}) / (1 + n_permutations) (Phipson & Smyth 2010)",
    "null_mean": "mean of the measure over row-permuted (unpaired) data",
    "null_sd": "standard deviation of the measure over row-permuted data (ddof=1 of the permuted sample; "
               "exact over all permutations for method='moments')",
    "null_skew": "skewness of the measure over row-permuted data (exact over all permutations for method='moments')",
    "calibrated": "chance-corrected value (value - null_mean) / (1 - null_mean): 1 perfect, 0 chance",
    "z_score": "(value - null_mean) / null_sd",
    "n_permutations": "number of permutations behind p_value / null_mean",
    "significant": "p_value <= alpha (no multiple-comparison correction)",
    "order": "randomization order of a saliency sanity check: cascading or independent",
    "n_randomized": "layers re-initialized at a step of a saliency sanity check (0 = none)",
    "iteration": "iteration of an iterative method (INLP: classifiers whose directions were removed before it)",
    "n_removed": "directions removed from a representation before the value (amnesic probing)",
    "mix": "mixing coefficient of a linear path (1 - mix) θ_start + mix θ_end (mode connectivity, module paths)",
    "noise_sd": "standard deviation of the Gaussian noise added to a module's weights (module criticality)",
    "block_size": "side in pixels of the blocks permuted in block-shuffled images",
}

_INT_COLUMNS = ("step", "layer_index", "layer_index_b")
_FLOAT_COLUMNS = ("value", "ci_low", "ci_high")


def _order_index(values: pd.Series, order: Sequence[str] | None) -> pd.Series:
    """Position of each value in ``order`` (default: order of first appearance)."""
    names = list(order) if order is not None else list(pd.unique(values.dropna()))
    return values.map({str(n): i for i, n in enumerate(names)} | {n: i for i, n in enumerate(names)})


def _as_int_if_whole(col: pd.Series) -> pd.Series:
    num = pd.to_numeric(col, errors="coerce")
    if num.notna().all() and len(num):
        return num.astype(np.int64)
    return num.astype(np.float64)


# declared rules (workbench._validation.declare): the options only are checked on a call (tables are checked by
# the body); a valid example table and bad rows for the generated tests
def _example_rows() -> list[dict[str, Any]]:
    return [{"layer": "block1", "measure": "rankme", "value": 3.5},
            {"layer": "block2", "measure": "rankme", "value": 7.25}]


@declare(rows=Data("any", example=_example_rows, bad=[[{"value": 1.0}], [{"measure": "", "value": 1.0}], "rows"]),
         layers=Instance(Iterable, none=True))
def tidy(rows: Iterable[Mapping[str, Any]] | pd.DataFrame, *, layers: Sequence[str] | None = None,
         **constants: Any) -> pd.DataFrame:
    """Rows → a table in the one schema: :data:`COLUMNS` first, then the extra columns in their given order.

    Parameters
    ----------
    rows : iterable of dicts, or a DataFrame, holding at least ``measure`` and ``value``.
    layers : layer names in model order, for ``layer_index`` (and ``layer_index_b``) when the rows lack it;
        default: the order in which layers first appear in the rows (producers iterate a layer mapping in
        order, so this is the mapping's order).
    **constants : columns set to one value on every row, e.g. ``run="a", step=100, split="test"``.

    Missing schema columns are NaN; ``step`` and ``layer_index`` are integers when no row lacks them.

    >>> tidy([{"measure": "loss", "value": 0.5}], run="a").iloc[0].to_dict()["run"]
    'a'
    """
    frame = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    for key, value in constants.items():
        frame[key] = value
    if "layer_index" not in frame and "layer" in frame:
        frame["layer_index"] = _order_index(frame["layer"], layers)
    if "layer_index_b" not in frame and "layer_b" in frame:
        frame["layer_index_b"] = _order_index(frame["layer_b"], layers)
    for col in COLUMNS:
        if col not in frame:
            frame[col] = np.nan
    for col in _INT_COLUMNS:
        if col in frame:
            frame[col] = _as_int_if_whole(frame[col])
    for col in _FLOAT_COLUMNS:
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype(np.float64)
    extra = [c for c in frame.columns if c not in COLUMNS]
    return check_tidy(frame[[*COLUMNS, *extra]].reset_index(drop=True), "tidy(rows)")


@declare(frame=Data("any", example=lambda: tidy(_example_rows()),
                    bad=[pd.DataFrame({"measure": ["m"], "value": [1.0]}), "frame"]),
         what=Instance(str), require=Instance(Iterable))
def check_tidy(frame: Any, what: str = "frame", *, require: Iterable[str] = ()) -> pd.DataFrame:
    """Check that ``frame`` follows the schema (module docstring) and holds the ``require``-d extra columns.

    Raises a ``TypeError`` (not a DataFrame) or a ``ValueError`` naming the missing columns, an empty or
    non-string ``measure`` and a non-numeric ``value``. Returns ``frame`` unchanged so a consumer can write
    ``table = check_tidy(table, "layer_curve(table)")``.

    >>> import pandas as pd
    >>> check_tidy(pd.DataFrame({"metric": ["accuracy"], "value": [1.0]}), "table")
    Traceback (most recent call last):
    ...
    ValueError: table is missing column(s) ['run', 'step', 'layer', 'layer_index', 'measure', 'split', \
'ci_low', 'ci_high'] of the results schema; the column 'metric' is called 'measure' — build tables with \
workbench.results.tidy(rows)
    """
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"{what} must be a pandas DataFrame in the results schema (workbench.results), "
                        f"got {type(frame).__name__}")
    required = [*COLUMNS, *[c for c in require if c not in COLUMNS]]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        hint = " the column 'metric' is called 'measure' —" if "metric" in frame.columns else ""
        raise ValueError(f"{what} is missing column(s) {missing} of the results schema;{hint} build tables with "
                         "workbench.results.tidy(rows)")
    if len(frame):
        measure = frame["measure"]
        if measure.isna().any() or not all(isinstance(m, str) and m for m in measure):
            raise ValueError(f"{what}: every row needs a measure name (a non-empty string) in 'measure'")
        if not pd.api.types.is_numeric_dtype(frame["value"]):
            raise ValueError(f"{what}: 'value' must be numeric, got dtype {frame['value'].dtype}")
    return frame

"""Token-level (sequence-labelling) probing: [N, T, D] token features -> flat (token, label) rows.

Any probe of :mod:`workbench.probing` then runs on the rows. The train/test split is made **by sentence**
(sequence), never by token: tokens of one sentence share context (and often word types), so a token-level
split would put near-duplicates of test tokens into training and inflate held-out scores (leakage).
"""
from __future__ import annotations

from typing import Any, Mapping, NamedTuple

import numpy as np
import torch

from .._validation import Data, Interval, declare
from ..activations import as_layers
from ._common import check_int, check_number, to_numpy

__all__ = ["TokenRows", "token_rows", "sentence_split"]


# declared rules of the token arguments (10 sentences x 4 tokens x 3 features in the valid example)
_TOKEN_RULES = {
    "x": Data("layers", example=lambda: np.random.default_rng(0).normal(size=(10, 4, 3)), scale="any",
              bad=[np.zeros((10, 4)), "features"]),
    "labels": Data("any", example=lambda: np.tile([0, 1, 2, 3], (10, 1)),
                   bad=[np.zeros(10, dtype=int), np.zeros((10, 3), dtype=int), np.full((10, 4), "a")]),
    "attention_mask": Data("any", none=True, bad=[np.full((10, 4), 2), np.ones((10, 3))]),
    "types": Data("any", none=True, bad=[np.zeros((10, 3), dtype=int)]),
    "ignore_index": Interval(int, none=True)}


class TokenRows(NamedTuple):
    """Flat token rows. ``x`` is [M, D] (or a layer mapping), the rest are [M] numpy arrays."""

    x: Any
    labels: np.ndarray
    sentence: np.ndarray
    position: np.ndarray
    types: np.ndarray | None


def _grid(x: Any, name: str, shape: tuple[int, int] | None) -> np.ndarray:
    arr = to_numpy(x, name)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D [n_sentences, n_tokens], got shape {tuple(arr.shape)}")
    if shape is not None and arr.shape != shape:
        raise ValueError(f"{name} has shape {tuple(arr.shape)} but the token features are {shape} sentences x "
                         "tokens; pass per-token arrays of the same padded shape")
    return arr


def _keep_mask(x: Any, labels: Any, attention_mask: Any, types: Any,
               ignore_index: int | None) -> tuple[Mapping, bool, np.ndarray, np.ndarray, np.ndarray | None]:
    layers, is_mapping = as_layers(x, "x")
    shape = None
    for layer, x in layers.items():
        lname = f"x[{layer!r}]" if is_mapping else "x"
        if not isinstance(x, (np.ndarray, torch.Tensor)):
            raise TypeError(f"{lname} must be a numpy array or torch tensor [N, T, D], got {type(x).__name__}")
        if x.ndim != 3:
            raise ValueError(f"{lname} must be 3-D [n_sentences, n_tokens, n_features], got shape {tuple(x.shape)}")
        if shape is not None and tuple(x.shape[:2]) != shape:
            raise ValueError(f"{lname} has {tuple(x.shape[:2])} sentences x tokens but another layer has {shape}")
        shape = tuple(x.shape[:2])
    y = _grid(labels, "labels", shape)
    if not (np.issubdtype(y.dtype, np.number) or y.dtype == bool):
        raise TypeError(f"labels must be numeric (class ids or values), got dtype {y.dtype}")
    keep = np.ones(shape, dtype=bool)
    if attention_mask is not None:
        m = _grid(attention_mask, "attention_mask", shape)
        if not (m.dtype == bool or np.all((m == 0) | (m == 1))):
            raise ValueError("attention_mask must hold 0/1 or booleans (1 = real token, 0 = padding)")
        keep &= m.astype(bool)
    if ignore_index is not None and np.issubdtype(y.dtype, np.integer):
        keep &= y != ignore_index
    t = None if types is None else _grid(types, "types", shape)
    return layers, is_mapping, y, keep, t


@declare(**_TOKEN_RULES)
def token_rows(x: Any, labels: Any, attention_mask: Any = None, *, types: Any = None,
               ignore_index: int | None = -100) -> TokenRows:
    """Flatten token representations ``x`` ``[N, T, D]`` and token labels ``[N, T]`` into rows, dropping padding.

    A token is kept when its ``attention_mask`` entry is 1/True (all kept if omitted) and, for integer
    labels, its label differs from ``ignore_index`` (the -100 convention of PyTorch / Hugging Face for
    sub-word continuations and special tokens; ``None`` keeps every label). Rows are ordered by sentence,
    then position. Tensors stay tensors on their device (only boolean indexing is done).

    Parameters
    ----------
    x : [N, T, D] array/tensor or mapping layer -> [N, T, D_layer] (same N, T for every layer).
    labels : [N, T] class ids or values.
    attention_mask : [N, T] of 0/1 or bool, optional.
    types : [N, T] input types (e.g. token ids), optional - carried along for control tasks.
    ignore_index : label value that marks tokens to drop.

    Returns
    -------
    TokenRows(x [M, D] or mapping, labels [M], sentence [M], position [M], types [M] or None).

    Examples
    --------
    >>> import numpy as np
    >>> feats = np.arange(12.0).reshape(2, 3, 2)                      # 2 sentences x 3 tokens x 2 features
    >>> rows = token_rows(feats, [[1, 2, -100], [3, -100, -100]])      # -100: a token to drop
    >>> rows.labels.tolist(), rows.sentence.tolist(), rows.position.tolist(), rows.x[-1].tolist()
    ([1, 2, 3], [0, 0, 1], [0, 1, 0], [6.0, 7.0])
    """
    layers, is_mapping, y, keep, t = _keep_mask(x, labels, attention_mask, types, ignore_index)
    sent, pos = np.nonzero(keep)
    flat = {}
    for layer, z in layers.items():
        if isinstance(z, torch.Tensor):
            flat[layer] = z[torch.as_tensor(keep, device=z.device)]
        else:
            flat[layer] = z[keep]
    feats = flat if is_mapping else next(iter(flat.values()))
    return TokenRows(feats, y[keep], sent, pos, None if t is None else t[keep])


def _take(x: Any, rows: np.ndarray) -> Any:
    def one(z):
        if isinstance(z, torch.Tensor):
            return z[torch.as_tensor(rows, device=z.device)]
        return z[rows]
    if isinstance(x, Mapping):
        return {k: one(v) for k, v in x.items()}
    return one(x)


@declare(**_TOKEN_RULES, test_fraction=Interval(float, 0, 1, closed="neither"),
         val_fraction=Interval(float, 0, 1, closed="left"), seed=Interval(int, 0))
def sentence_split(x: Any, labels: Any, attention_mask: Any = None, *, types: Any = None,
                   test_fraction: float = 0.2, val_fraction: float = 0.0, seed: int = 0,
                   ignore_index: int | None = -100) -> tuple:
    """Split sentences into train / (val) / test, then flatten each part into token rows.

    Sentences are permuted with ``numpy.random.default_rng(seed)``; the first ``max(1, round(test_fraction
    * N))`` go to "test", the next ``round(val_fraction * N)`` (at least 1 if ``val_fraction > 0``) to
    "val", the rest to training. Every token of a sentence is in the same split (no token-level leakage;
    module docstring). Tokens are then kept as in :func:`token_rows`.

    Returns
    -------
    ``(x, labels, evals)`` (the training tokens) with ``evals = {"test": (X, y)[, "val": (X, y)]}`` - ready
    for any probe, e.g. ``knn_probe(*sentence_split(feats, tags, mask))``. With ``types`` given:
    ``(x, labels, types, evals)`` with ``(X, y, types)`` triples - the arguments of
    :func:`workbench.probing.selectivity`.

    Raises
    ------
    ValueError: fewer than 2 sentences, fractions leaving no training sentence, or a split without any
    kept token; plus the checks of :func:`token_rows`.

    Examples
    --------
    >>> import numpy as np
    >>> feats = np.random.default_rng(0).normal(size=(10, 4, 3)); tags = np.tile([0, 1, 2, 3], (10, 1))
    >>> x_train, y_train, evals = sentence_split(feats, tags, test_fraction=0.2)    # 10 sentences of 4 tokens
    >>> len(y_train), len(evals["test"][1])                                      # 8 and 2 whole sentences
    (32, 8)
    """
    test_fraction = check_number(test_fraction, "test_fraction", low=0.0, high=1.0, low_open=True, high_open=True)
    val_fraction = check_number(val_fraction, "val_fraction", low=0.0, high=1.0, high_open=True)
    seed = check_int(seed, "seed")
    rows = token_rows(x, labels, attention_mask, types=types, ignore_index=ignore_index)
    layers, _ = as_layers(x, "x")
    n = next(iter(layers.values())).shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 sentences to split by sentence, got {n}")
    n_test = max(1, round(test_fraction * n))
    n_val = max(1, round(val_fraction * n)) if val_fraction > 0 else 0
    if n_test + n_val >= n:
        raise ValueError(f"test_fraction={test_fraction} and val_fraction={val_fraction} leave no training sentence "
                         f"out of {n}; lower them")
    perm = np.random.default_rng(seed).permutation(n)
    parts = {"test": perm[:n_test], "val": perm[n_test:n_test + n_val], "train": perm[n_test + n_val:]}
    out = {}
    for name, sents in parts.items():
        if name == "val" and n_val == 0:
            continue
        idx = np.flatnonzero(np.isin(rows.sentence, sents))
        if idx.size == 0:
            raise ValueError(f"the {name!r} sentences contain no kept token (all padding or ignore_index); "
                             "change seed/fractions or check the attention mask")
        t = None if rows.types is None else rows.types[idx]
        out[name] = (_take(rows.x, idx), rows.labels[idx], t)
    x_tr, y_tr, t_tr = out.pop("train")
    if types is None:
        return x_tr, y_tr, {k: (x, y) for k, (x, y, _) in out.items()}
    return x_tr, y_tr, t_tr, {k: (x, y, t) for k, (x, y, t) in out.items()}

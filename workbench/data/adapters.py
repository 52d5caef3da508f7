"""Wrap your own data as a :class:`~workbench.data.Dataset`: arrays, torch datasets, saved HF datasets."""
from __future__ import annotations

import numbers
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from .._validation import check_finite, check_fraction, check_same_length
from .dataset import KINDS, Dataset, Split

__all__ = ["from_arrays", "from_torch", "from_hf_disk"]

_NDIM = {"image": 4, "signal": 3, "vectors": 2, "tokens": 2, "text": 1}
_LAYOUT = {"image": "[N, C, H, W]", "signal": "[N, C, L]", "vectors": "[N, D]", "tokens": "[N, T]",
           "text": "[N] strings"}


def _to_numpy(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    if isinstance(x, (list, tuple)):
        try:
            return np.asarray(x)
        except ValueError as e:
            raise ValueError(f"{name} is a ragged list and cannot be stacked into an array: {e}; pad the "
                             "items to one shape first") from None
    raise TypeError(f"{name} must be a numpy array, torch tensor or list, got {type(x).__name__}")


def _is_text(arr: np.ndarray) -> bool:
    return arr.dtype.kind in "US" or (arr.dtype == object and arr.size > 0 and all(
        isinstance(v, str) for v in arr.ravel()[:1000]))


def _infer_kind(arr: np.ndarray, name: str) -> str:
    if arr.ndim == 1 and _is_text(arr):
        return "text"
    if arr.ndim == 4:
        return "image"
    if arr.ndim == 3:
        return "signal"
    if arr.ndim == 2:
        if np.issubdtype(arr.dtype, np.integer):
            return "tokens"
        if np.issubdtype(arr.dtype, np.floating) or arr.dtype == bool:
            return "vectors"
    raise ValueError(f"cannot infer the kind of {name} with shape {tuple(arr.shape)} and dtype {arr.dtype}: "
                     "4-D is image [N,C,H,W], 3-D signal [N,C,L], 2-D float vectors [N,D], 2-D int tokens "
                     "[N,T], 1-D str text [N]; pass kind= one of " + ", ".join(KINDS))


def _prepare_inputs(x: Any, kind: str | None, name: str) -> tuple[np.ndarray, str]:
    arr = _to_numpy(x, name)
    if kind is None:
        kind = _infer_kind(arr, name)
    elif kind not in KINDS:
        raise ValueError(f"kind={kind!r} is not one of {KINDS}")
    if arr.ndim != _NDIM[kind]:
        raise ValueError(f"{name} has shape {tuple(arr.shape)} but kind={kind!r} needs {_NDIM[kind]}-D inputs "
                         f"{_LAYOUT[kind]}; reshape them or pass the matching kind")
    if len(arr) == 0:
        raise ValueError(f"{name} is empty; pass at least one example")
    if kind == "text":
        if not _is_text(arr) or not all(isinstance(v, str) for v in arr.ravel()):
            raise TypeError(f"{name} must hold Python str for kind='text'")
        return np.array([str(v) for v in arr], dtype=object), kind
    if kind == "tokens":
        if not np.issubdtype(arr.dtype, np.integer):
            if np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
                arr = arr.astype(np.int64)
            else:
                raise TypeError(f"{name} must hold integer token ids for kind='tokens', got dtype {arr.dtype}")
        if arr.min() < 0:
            raise ValueError(f"{name} has negative token ids (min {arr.min()}); token ids must be >= 0")
        return arr.astype(np.int64, copy=False), kind
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(f"{name} must be numeric for kind={kind!r}, got dtype {arr.dtype}")
    if kind == "image" and arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255.0  # uint8 images are scaled to [0, 1]
    arr = arr.astype(np.float32, copy=False)
    check_finite(arr, name)
    if kind == "image" and (arr.min() < 0 or arr.max() > 1):
        raise ValueError(f"{name} holds image values in [{arr.min():.3g}, {arr.max():.3g}] but images must be in "
                         "[0, 1]; rescale them (e.g. x / 255 or (x - x.min()) / (x.max() - x.min())) or pass "
                         "kind='signal'/'vectors' if they are not images")
    return arr, kind


def _encode_labels(y: Any, name: str) -> tuple[np.ndarray, list[str] | None]:
    arr = _to_numpy(y, name)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one class per example), got shape {tuple(arr.shape)}")
    if arr.dtype.kind in "USO":
        names, codes = np.unique(arr.astype(str), return_inverse=True)
        return codes.astype(np.int64), [str(n) for n in names]
    if np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool:
        arr = arr.astype(np.int64)
    elif np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
        arr = arr.astype(np.int64)
    else:
        raise TypeError(f"{name} must hold integer class ids or strings, got dtype {arr.dtype}; for regression "
                        "targets pass them as a continuous factor instead")
    if len(arr) and arr.min() < 0:
        raise ValueError(f"{name} has negative class ids (min {arr.min()}); use ids 0 .. num_classes-1")
    return arr, None


def _encode_factor(v: Any, name: str) -> tuple[np.ndarray, dict]:
    arr = _to_numpy(v, name)
    if arr.dtype.kind in "USO":
        names, codes = np.unique(arr.astype(str), return_inverse=True)
        return codes.reshape(arr.shape).astype(np.int64), {"kind": "categorical", "values": [str(n) for n in names]}
    if np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool:
        arr = arr.astype(np.int64)
        top = int(arr.max()) if arr.size else -1
        return arr, {"kind": "categorical", "values": [str(i) for i in range(top + 1)]}
    if np.issubdtype(arr.dtype, np.floating):
        check_finite(arr, name)
        return arr.astype(np.float32), {"kind": "continuous"}
    raise TypeError(f"{name} must be numeric or strings, got dtype {arr.dtype}")


def from_arrays(inputs: Any, labels: Any = None, *, test_inputs: Any = None, test_labels: Any = None,
                factors: Mapping[str, Any] | None = None, test_factors: Mapping[str, Any] | None = None,
                kind: str | None = None, test_fraction: float | None = None, seed: int = 0,
                name: str = "arrays", class_names: Sequence[str] | None = None,
                pad_id: int | None = None) -> Dataset:
    """Wrap arrays (numpy or torch) as a :class:`Dataset`.

    Parameters
    ----------
    inputs : array [N, ...]
        Training inputs (or all inputs when ``test_fraction`` splits them).
    labels : array [N], optional
        Class ids (ints) or class names (strings, encoded in sorted order into ``class_names``).
    test_inputs, test_labels : arrays, optional
        A separate test split. Mutually exclusive with ``test_fraction``.
    factors, test_factors : dict of name -> array [N] or [N, T], optional
        Ground-truth factors. Strings/ints become categorical (strings encoded in sorted order, ints taken as
        codes), floats continuous. With ``test_fraction`` the ``factors`` are split with the inputs.
    kind : str, optional
        ``image`` / ``signal`` / ``tokens`` / ``text`` / ``vectors``. Inferred when omitted: 4-D image, 3-D
        signal, 2-D float vectors, 2-D integer tokens, 1-D strings text. ``uint8`` images are divided by 255;
        other images must already be in [0, 1].
    test_fraction : float in (0, 1), optional
        Randomly move this fraction of the examples into a test split (seeded by ``seed``).
    seed : int
        Seed of the random split.
    name : str
        Dataset name.
    class_names : sequence of str, optional
        Names of the label ids (overrides names derived from string labels).
    pad_id : int, optional
        For token inputs: id of the padding token; ``attention_mask = inputs != pad_id``. Without it every
        token is treated as real.

    Returns
    -------
    Dataset
        ``train`` (and ``test``) splits; ``options`` records ``kind`` and how the split was made.
    """
    if test_inputs is not None and test_fraction is not None:
        raise ValueError("pass either test_inputs or test_fraction, not both")
    if test_inputs is None and (test_labels is not None or test_factors is not None):
        raise ValueError("test_labels/test_factors were given without test_inputs; pass test_inputs too")
    x, kind = _prepare_inputs(inputs, kind, "inputs")
    y, names = (None, None) if labels is None else _encode_labels(labels, "labels")
    fac, info = {}, {}
    for k, v in (factors or {}).items():
        fac[k], info[k] = _encode_factor(v, f"factors[{k!r}]")
    check_same_length(inputs=x, **({"labels": y} if y is not None else {}),
                      **{f"factors[{k!r}]": v for k, v in fac.items()})

    def attention(arr):
        if kind != "tokens":
            return None
        return (arr != pad_id).astype(np.int64) if pad_id is not None else np.ones(arr.shape, np.int64)

    splits: dict[str, Split] = {}
    if test_fraction is not None:
        test_fraction = check_fraction(test_fraction, "test_fraction")
        n = len(x)
        n_test = round(n * test_fraction)
        if not 0 < test_fraction < 1 or n_test == 0 or n_test == n:
            raise ValueError(f"test_fraction={test_fraction} leaves an empty split with {n} examples; use a "
                             "value strictly between 0 and 1 that keeps at least one example on each side")
        perm = np.random.default_rng(seed).permutation(n)
        idx = {"train": np.sort(perm[n_test:]), "test": np.sort(perm[:n_test])}
        for s, ix in idx.items():
            splits[s] = Split(inputs=x[ix], labels=None if y is None else y[ix],
                              factors={k: v[ix] for k, v in fac.items()}, attention_mask=attention(x[ix]))
    else:
        splits["train"] = Split(inputs=x, labels=y, factors=fac, attention_mask=attention(x))
        if test_inputs is not None:
            xt, _ = _prepare_inputs(test_inputs, kind, "test_inputs")
            if xt.shape[1:] != x.shape[1:] and kind not in ("tokens",):
                raise ValueError(f"test_inputs has example shape {tuple(xt.shape[1:])} but inputs has "
                                 f"{tuple(x.shape[1:])}; both splits must hold the same kind of example")
            yt = None
            if test_labels is not None:
                yt, tnames = _encode_labels(test_labels, "test_labels")
                if names is not None or tnames is not None:
                    if names is None or tnames is None:
                        raise TypeError("labels and test_labels must both be strings or both be integer ids")
                    merged = sorted(set(names) | set(tnames))
                    y_all = np.asarray([merged.index(names[c]) for c in y], np.int64)
                    yt = np.asarray([merged.index(tnames[c]) for c in yt], np.int64)
                    splits["train"] = Split(inputs=x, labels=y_all, factors=fac, attention_mask=attention(x))
                    names = merged
            elif y is not None:
                raise ValueError("labels were given for inputs but test_labels is missing; pass test_labels "
                                 "(or neither)")
            tfac = {}
            for k, v in (test_factors or {}).items():
                tfac[k], tinfo = _encode_factor(v, f"test_factors[{k!r}]")
                if (k in info and info[k]["kind"] == "categorical" and tinfo["kind"] == "categorical"
                        and len(tinfo["values"]) > len(info[k]["values"])):
                    info[k] = tinfo
                info.setdefault(k, tinfo)
            check_same_length(test_inputs=xt, **({"test_labels": yt} if yt is not None else {}),
                              **{f"test_factors[{k!r}]": v for k, v in tfac.items()})
            splits["test"] = Split(inputs=xt, labels=yt, factors=tfac, attention_mask=attention(xt))
    if class_names is not None:
        class_names = [str(c) for c in class_names]
        top = max((int(s.labels.max()) for s in splits.values() if s.labels is not None and len(s.labels)),
                  default=-1)
        if top >= len(class_names):
            raise ValueError(f"class_names has {len(class_names)} names but labels go up to {top}")
        names = class_names
    options = dict(kind=kind, test_fraction=test_fraction, seed=seed, pad_id=pad_id,
                   separate_test=test_inputs is not None)
    return Dataset(name=name, kind=kind, splits=splits, class_names=names, factor_info=info, options=options)


def _stack_items(items: list, name: str) -> np.ndarray:
    first = items[0]
    if isinstance(first, str):
        return np.array(items, dtype=object)
    if isinstance(first, torch.Tensor):
        try:
            return torch.stack([torch.as_tensor(i) for i in items]).cpu().numpy()
        except RuntimeError as e:
            raise ValueError(f"{name}: items have different shapes and cannot be stacked ({e}); pad or resize "
                             "them in the dataset's transform") from None
    try:
        return np.stack([np.asarray(i) for i in items])
    except ValueError as e:
        raise ValueError(f"{name}: items have different shapes and cannot be stacked ({e}); pad or resize "
                         "them in the dataset's transform") from None


def _collect(dataset: Any, max_items: int | None, name: str) -> tuple[np.ndarray, np.ndarray | None]:
    if not hasattr(dataset, "__getitem__") and not hasattr(dataset, "__iter__"):
        raise TypeError(f"{name} must be a torch.utils.data.Dataset (map-style or iterable), got "
                        f"{type(dataset).__name__}")
    if isinstance(dataset, torch.utils.data.IterableDataset) or not hasattr(dataset, "__len__"):
        it = iter(dataset)
    else:
        n = len(dataset)
        n = n if max_items is None else min(n, max_items)
        it = (dataset[i] for i in range(n))
    xs, ys = [], []
    has_label = None
    for i, item in enumerate(it):
        if max_items is not None and i >= max_items:
            break
        pair = isinstance(item, (tuple, list)) and len(item) == 2
        if has_label is None:
            has_label = pair
        elif pair != has_label:
            raise ValueError(f"{name} item {i} is {'an (input, label) pair' if pair else 'a bare input'} but "
                             "earlier items were not; every item must have the same structure")
        if pair:
            xs.append(item[0])
            lab = item[1]
            ys.append(lab.item() if isinstance(lab, torch.Tensor) else lab)
        else:
            xs.append(item)
    if not xs:
        raise ValueError(f"{name} is empty; it must yield at least one item")
    return _stack_items(xs, name), (np.asarray(ys) if has_label else None)


def from_torch(dataset: Any, *, test_dataset: Any = None, kind: str | None = None, name: str = "torch",
               max_items: int | None = None) -> Dataset:
    """Stack a ``torch.utils.data.Dataset`` into a :class:`Dataset`.

    Parameters
    ----------
    dataset : torch Dataset (map-style or iterable)
        Yields ``(input, label)`` pairs or bare inputs (tensors, arrays or strings).
    test_dataset : torch Dataset, optional
        Same structure, becomes the ``test`` split.
    kind : str, optional
        Input kind; inferred from the stacked shape like :func:`from_arrays`.
    name : str
        Dataset name.
    max_items : int, optional
        Take at most this many items from each dataset (the first ones).

    Returns
    -------
    Dataset
    """
    if max_items is not None and (not isinstance(max_items, numbers.Integral) or max_items < 1):
        raise ValueError(f"max_items must be a positive integer or None, got {max_items!r}")
    x, y = _collect(dataset, max_items, "dataset")
    xt = yt = None
    if test_dataset is not None:
        xt, yt = _collect(test_dataset, max_items, "test_dataset")
        if (y is None) != (yt is None):
            raise ValueError("dataset and test_dataset must both yield (input, label) pairs or both bare inputs")
    ds = from_arrays(x, y, test_inputs=xt, test_labels=yt, kind=kind, name=name)
    ds.options.update(source="torch", max_items=max_items)
    return ds


_INPUT_COLUMNS = ("image", "img", "pixel_values", "input_ids", "text", "sentence", "signal", "x", "inputs",
                  "features")


def _is_image_feature(ds: Any, column: str) -> bool:
    feat = getattr(ds, "features", None)
    feat = feat.get(column) if hasattr(feat, "get") else None
    return type(feat).__name__ == "Image"


def _column(ds: Any, column: str) -> np.ndarray:
    arr = _raw_column(ds, column)
    if _is_image_feature(ds, column) and arr.ndim in (3, 4) and not (arr.ndim == 4 and arr.shape[1] in (1, 3)):
        arr = arr[:, None] if arr.ndim == 3 else arr.transpose(0, 3, 1, 2)  # [N,H,W(,C)] -> [N,C,H,W]
        if arr.shape[1] == 4:
            arr = arr[:, :3]  # drop alpha
    return arr


def _raw_column(ds: Any, column: str) -> np.ndarray:
    try:
        values = ds.with_format("numpy")[column]
    except (AttributeError, TypeError, ValueError):
        values = ds[column]
    if isinstance(values, np.ndarray) and values.dtype != object:
        return values
    values = list(values)
    if not values:
        return np.asarray(values)
    first = values[0]
    if hasattr(first, "convert") and hasattr(first, "mode"):  # PIL image -> [N, C, H, W]
        values = [np.asarray(v.convert("RGB") if v.mode not in ("L", "RGB") else v) for v in values]
        arr = np.stack(values)
        return arr[:, None] if arr.ndim == 3 else arr.transpose(0, 3, 1, 2)
    if isinstance(first, str):
        return np.array(values, dtype=object)
    lengths = {len(v) if hasattr(v, "__len__") else -1 for v in values}
    if len(lengths) > 1 and -1 not in lengths:  # ragged sequences (e.g. input_ids): pad with 0
        T = max(lengths)
        out = np.zeros((len(values), T), np.int64)
        for i, v in enumerate(values):
            out[i, :len(v)] = np.asarray(v)
        return out
    return np.stack([np.asarray(v) for v in values])


def from_hf_disk(path: str, *, input_column: str | None = None, label_column: str | None = "label",
                 kind: str | None = None, splits: Sequence[str] | Mapping[str, str] | None = None) -> Dataset:
    """Load a Hugging Face dataset saved with ``save_to_disk`` (``Dataset`` or ``DatasetDict``), offline.

    Parameters
    ----------
    path : str
        Folder written by ``dataset.save_to_disk(path)``.
    input_column : str, optional
        Column holding the inputs. Default: the first of ``image, img, pixel_values, input_ids, text,
        sentence, signal, x, inputs, features`` present.
    label_column : str or None
        Column of class labels (``ClassLabel`` names become ``class_names``); ``None`` for no labels.
    kind : str, optional
        Input kind; inferred from the column like :func:`from_arrays`. PIL images become ``[N, C, H, W]``
        in [0, 1]; ragged ``input_ids`` are padded with 0 and get an ``attention_mask``.
    splits : list of split names or dict {hf_name: workbench_name}, optional
        Which splits to take (default all; a single saved ``Dataset`` becomes ``train``).

    Returns
    -------
    Dataset
        Other 1-D numeric or string columns become factors.

    Raises
    ------
    ImportError
        If the ``datasets`` package is not installed.
    """
    try:
        import datasets
    except ImportError as e:
        raise ImportError("from_hf_disk needs the Hugging Face 'datasets' package: pip install datasets") from e
    import os

    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a folder path (str), got {type(path).__name__}")
    if not os.path.isdir(path):
        raise ValueError(f"path={str(path)!r} is not a folder; pass the directory given to save_to_disk")
    obj = datasets.load_from_disk(str(path))
    if isinstance(obj, dict) or (hasattr(obj, "keys") and not hasattr(obj, "column_names")):
        available = {k: obj[k] for k in obj}
    else:
        available = {"train": obj}
    if splits is None:
        mapping = {k: k for k in available}
    elif isinstance(splits, Mapping):
        mapping = dict(splits)
    else:
        mapping = {k: k for k in splits}
    missing = [k for k in mapping if k not in available]
    if missing:
        raise ValueError(f"split(s) {missing} not in the saved dataset; available: {list(available)}")

    first = available[next(iter(mapping))]
    columns = list(first.column_names)
    if input_column is None:
        input_column = next((c for c in _INPUT_COLUMNS if c in columns), None)
        if input_column is None:
            raise ValueError(f"could not guess the input column among {columns}; pass input_column=")
    if input_column not in columns:
        raise ValueError(f"input_column={input_column!r} is not a column; columns: {columns}")
    if label_column is not None and label_column not in columns:
        raise ValueError(f"label_column={label_column!r} is not a column; columns: {columns} (pass "
                         "label_column=None for unlabelled data)")
    class_names = None
    if label_column is not None:
        feat = getattr(first, "features", {}).get(label_column) if hasattr(first, "features") else None
        if feat is not None and hasattr(feat, "names"):
            class_names = list(feat.names)

    out_splits: dict[str, Split] = {}
    out_kind, factor_info = kind, {}
    for hf_name, wb_name in mapping.items():
        d = available[hf_name]
        x = _column(d, input_column)
        attention = None
        if x.ndim == 2 and np.issubdtype(x.dtype, np.integer) and "attention_mask" in d.column_names:
            attention = _column(d, "attention_mask").astype(np.int64)
        elif x.ndim == 2 and np.issubdtype(x.dtype, np.integer) and input_column == "input_ids":
            lengths = [len(v) for v in d[input_column]]
            attention = (np.arange(x.shape[1])[None] < np.asarray(lengths)[:, None]).astype(np.int64)
        x, out_kind = _prepare_inputs(x, out_kind, f"column {input_column!r} of split {hf_name!r}")
        if attention is not None and out_kind == "tokens" and attention.shape != x.shape:
            attention = None
        y = None
        if label_column is not None:
            y, names = _encode_labels(_column(d, label_column), f"column {label_column!r} of split {hf_name!r}")
            class_names = class_names or names
        factors = {}
        for c in d.column_names:
            if c in (input_column, label_column, "attention_mask"):
                continue
            try:
                v = _column(d, c)
            except Exception:  # unusual feature types are skipped, not fatal
                continue
            if v.ndim == 1 and (v.dtype.kind in "biufUSO"):
                try:
                    factors[c], factor_info[c] = _encode_factor(v, f"column {c!r}")
                except (TypeError, ValueError):
                    continue
        if out_kind == "tokens" and attention is None:
            attention = np.ones(x.shape, np.int64)
        out_splits[wb_name] = Split(inputs=x, labels=y, factors=factors,
                                    attention_mask=attention if out_kind == "tokens" else None)
    name = os.path.basename(os.path.normpath(str(path))) or "hf-disk"
    return Dataset(name=name, kind=out_kind, splits=out_splits, class_names=class_names,
                   factor_info=factor_info, options=dict(path=str(path), input_column=input_column,
                                                         label_column=label_column, splits=dict(mapping)))

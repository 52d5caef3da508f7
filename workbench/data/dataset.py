"""The one dataset type every source returns.

A :class:`Dataset` is a named collection of :class:`Split` objects (``train``, ``test`` and, where it is
meaningful, ``ood``) plus what kind of input it holds. A split carries the inputs, the main class label,
named ground-truth factors, optional per-pixel masks and, for token inputs, an attention mask.

Input layouts by ``kind``:

=========  ===========================================================  =====================
kind       ``inputs``                                                   dtype
=========  ===========================================================  =====================
image      ``[N, C, H, W]`` in ``[0, 1]``                                 float32
signal     ``[N, C, L]``                                                float32
tokens     ``[N, T]`` token ids, padded; ``attention_mask`` ``[N, T]``   int64
text       ``[N]`` raw strings, tokenized by the model that reads them  object (str)
vectors    ``[N, D]``                                                   float32
=========  ===========================================================  =====================

Factors are ``[N]`` arrays (sequence-level) or ``[N, T]`` arrays (token-level, ``-1`` on padding).
``factor_info[name]["kind"]`` is ``"categorical"`` or ``"continuous"``; categorical factors are int64
codes with their value names in ``factor_info[name]["values"]``.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

import numpy as np

KINDS = ("image", "signal", "tokens", "text", "vectors")

__all__ = ["Dataset", "Split", "KINDS", "as_split"]


def _hash_array(h: hashlib._Hash, name: str, arr: np.ndarray | None) -> None:
    h.update(name.encode())
    if arr is None:
        h.update(b"<none>")
        return
    arr = np.asarray(arr)
    if arr.dtype == object:
        for item in arr.ravel():
            h.update(str(item).encode("utf-8"))
            h.update(b"\x00")
    else:
        h.update(str(arr.dtype).encode())
        h.update(str(arr.shape).encode())
        h.update(np.ascontiguousarray(arr).tobytes())


@dataclass
class Split:
    """One split of a dataset. All arrays share their first dimension ``N``."""

    inputs: np.ndarray
    labels: np.ndarray | None = None
    factors: dict[str, np.ndarray] = field(default_factory=dict)
    masks: np.ndarray | None = None
    attention_mask: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.inputs)
        named = {"labels": self.labels, "masks": self.masks, "attention_mask": self.attention_mask,
                 **{f"factors[{k!r}]": v for k, v in self.factors.items()}}
        for name, arr in named.items():
            if arr is not None and len(arr) != n:
                raise ValueError(f"{name} has {len(arr)} rows but inputs has {n}; every array of a split "
                                 "must describe the same examples")
        self._fingerprint: str | None = None

    def __len__(self) -> int:
        return len(self.inputs)

    def subset(self, index: Any) -> Split:
        """A new split with rows ``index`` (slice, integer array or boolean mask)."""
        pick = lambda a: None if a is None else a[index]  # noqa: E731
        return Split(inputs=self.inputs[index], labels=pick(self.labels),
                     factors={k: v[index] for k, v in self.factors.items()}, masks=pick(self.masks),
                     attention_mask=pick(self.attention_mask))

    def fingerprint(self) -> str:
        """SHA-256 of every array in the split (content hash; used as the activation-cache key)."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            _hash_array(h, "inputs", self.inputs)
            _hash_array(h, "labels", self.labels)
            _hash_array(h, "attention_mask", self.attention_mask)
            for k in sorted(self.factors):
                _hash_array(h, f"factor:{k}", self.factors[k])
            self._fingerprint = h.hexdigest()
        return self._fingerprint


@dataclass
class Dataset(Mapping[str, Split]):
    """A named dataset: splits, input kind, class names, factor descriptions and build options."""

    name: str
    kind: str
    splits: dict[str, Split]
    class_names: list[str] | None = None
    factor_info: dict[str, dict] = field(default_factory=dict)
    vocab: list[str] | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind={self.kind!r} is not one of {KINDS}")
        if not self.splits:
            raise ValueError("a Dataset needs at least one split")

    # Mapping interface: ds["train"], list(ds), len(ds) == number of splits
    def __getitem__(self, split: str) -> Split:
        try:
            return self.splits[split]
        except KeyError:
            raise KeyError(f"dataset {self.name!r} has no split {split!r}; splits: {list(self.splits)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.splits)

    def __len__(self) -> int:
        return len(self.splits)

    @property
    def num_classes(self) -> int | None:
        if self.class_names is not None:
            return len(self.class_names)
        labels = [s.labels for s in self.splits.values() if s.labels is not None]
        return int(max(int(l.max()) for l in labels) + 1) if labels else None

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example (without the batch dimension)."""
        first = next(iter(self.splits.values()))
        return tuple(first.inputs.shape[1:])

    def fingerprint(self) -> str:
        h = hashlib.sha256(self.name.encode())
        for k in sorted(self.splits):
            h.update(k.encode())
            h.update(self.splits[k].fingerprint().encode())
        return h.hexdigest()

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={len(v)}" for k, v in self.splits.items())
        factors = list(self.factor_info) or "none"
        return (f"Dataset({self.name!r}, kind={self.kind!r}, splits[{sizes}], input_shape={self.input_shape}, "
                f"classes={self.num_classes}, factors={factors})")


def as_split(data: Any, split: str | None = None) -> Split:
    """The :class:`Split` that ``data`` names: a Split itself, ``data[split]`` of a :class:`Dataset`, or a numpy
    array / torch tensor of inputs (wrapped as an unlabelled Split)."""
    if isinstance(data, Split):
        return data
    if isinstance(data, Dataset):
        if split is None:
            raise ValueError(f"data is a Dataset with splits {list(data)}; pass split=... to choose one")
        return data[split]
    if hasattr(data, "detach") and hasattr(data, "numpy"):  # a torch tensor (data does not import torch)
        data = data.detach().cpu().numpy()
    if isinstance(data, np.ndarray):
        return Split(inputs=data)
    raise TypeError(f"data must be a workbench Split/Dataset, numpy array or torch tensor, got {type(data).__name__}")

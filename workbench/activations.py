"""Capture the activations of many layers in one forward pass per batch, pooled, cached on disk.

``extract(model, data, layers=None, pool="mean")`` returns an :class:`Activations` mapping
layer name → ``[N, D]`` float32 tensor, with the split's labels and factors attached.

Pooling (``pool``) by output layout:

==============  ======================================  ======================================
pool            conv map ``[N, C, *spatial]``            sequence ``[N, T, D]``
==============  ======================================  ======================================
mean            mean over spatial positions → [N, C]    mean over real tokens (attention mask)
spatial-mean    same as ``mean``                         mean over real tokens except the first
                                                         (CLS) token — ViT patch tokens
cls             error (no CLS token)                     token 0
last            error                                    last real token (attention mask)
flatten         [N, C·∏spatial]                          [N, T·D]
==============  ======================================  ======================================

Two-dimensional outputs ``[N, D]`` are returned as they are. A 3-D output is a conv map ``[N, C, L]`` when
the data are 1-D signals and a token sequence ``[N, T, D]`` otherwise (images through a ViT, tokens, text).

Unpooled token maps (:data:`TOKEN_POOLS`, for dense probes and token-level measures such as DSE) keep one
vector per position, ``[N, T, D]``:

==============  ======================================  ======================================
pool            conv map ``[N, C, *spatial]``            sequence ``[N, T, D]``
==============  ======================================  ======================================
tokens          ``[N, ∏spatial, C]`` (row-major          every token ``[N, T, D]`` (padding
                positions × channels)                    included)
patch-tokens    same as ``tokens``                       every token except the first (CLS):
                                                         ViT patch tokens ``[N, T - 1, D]``
==============  ======================================  ======================================

With a token pool, ``Activations.meta["grids"]`` gives each layer's grid of positions: the spatial shape of a
conv map (``(h, w)`` or ``(L,)``), for ``patch-tokens`` of an image model ``(h, w)`` with ``h · w = T - 1`` and
``h / w`` the image's aspect ratio (a ViT's patch grid), else None.

Cache: with ``cache=DIR`` each layer is appended, batch by batch, to its own ``.npy`` file with plain
writes (not a writable memory map, whose dirty pages count against the process), so memory stays at one
batch for any N; the file is renamed into place only when complete, and read back as a memory map. The key
is SHA-256 of (weights hash, data fingerprint, layer module path, pooling, and for a Hugging Face model its
``max_length`` and ``truncation``), so a second call with the same model, settings, data and layers reads the
files instead of running the model. Each entry has a lock (``.<file name>.lock``, a
:class:`workbench._locks.FileLock`, which holds on NFS too): processes and machines extracting the same entry into
one cache compute it once — the others wait for its lock, then read it — and only the missing or damaged entries of
a call are computed. Files are written to a unique temporary name, fsync-ed and renamed, their checksum file after
them the same way, then the directory is fsync-ed.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import math
import os
import secrets
import warnings
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from . import _memory
from ._locks import FileLock
from ._validation import (Data, Flag, Instance, Interval, Options, check_choice, check_device, check_positive_int,
                          check_real, declare)
from .data import as_split
from .models.inputs import call_model

__all__ = ["extract", "Activations", "as_layers", "weights_hash", "pool", "POOLS", "TOKEN_POOLS", "SINGLE_LAYER"]

POOLS = ("mean", "spatial-mean", "cls", "last", "flatten")
#: pools of :func:`extract` that keep one vector per position: ``[N, T, D]`` token maps (module docstring)
TOKEN_POOLS = ("tokens", "patch-tokens")

#: the layer name a bare array gets when a function that works per layer is given one array
SINGLE_LAYER = "features"


class Activations(Mapping[str, torch.Tensor]):
    """Layer name → ``[N, D]`` float32 tensor (``[N, T, D]`` token maps with a token pool; in forward order), plus
    the examples' labels and factors.

    Layers spilled to disk are memory-mapped and read on first access; a layer extracted in blocks
    (``extract(..., shard=(i, k))``) is a list of block files, joined when it is read.
    """

    def __init__(self, layers: dict[str, torch.Tensor | Path], labels: np.ndarray | None = None,
                 factors: dict[str, np.ndarray] | None = None, meta: dict[str, Any] | None = None):
        self._layers = dict(layers)
        self.labels = labels
        self.factors = factors or {}
        self.meta = meta or {}

    def __getitem__(self, layer: str) -> torch.Tensor:
        try:
            value = self._layers[layer]
        except KeyError:
            raise KeyError(f"no layer {layer!r}; layers: {list(self._layers)}") from None
        if isinstance(value, Path):
            value = torch.from_numpy(np.array(np.load(value, mmap_mode="r")))  # one layer in memory at a time
        elif isinstance(value, list):  # the blocks of a sharded extraction, joined on access
            value = torch.from_numpy(np.concatenate([np.load(p, mmap_mode="r") for p in value]))
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._layers)

    def __len__(self) -> int:
        return len(self._layers)

    @property
    def layers(self) -> list[str]:
        return list(self._layers)

    @property
    def n(self) -> int:
        return self.shape(next(iter(self._layers)))[0]

    def shape(self, layer: str) -> tuple[int, int]:
        """``(N, D)`` of ``layer`` without reading a spilled layer into memory."""
        value = self._layers[layer] if layer in self._layers else self[layer]
        if isinstance(value, torch.Tensor):
            return tuple(value.shape)
        shapes = [np.load(p, mmap_mode="r").shape for p in (value if isinstance(value, list) else [value])]
        return (sum(s[0] for s in shapes), *shapes[0][1:])

    def numpy(self) -> dict[str, np.ndarray]:
        return {k: self[k].numpy() for k in self}

    def __repr__(self) -> str:
        dims = {k: self.shape(k) for k in self._layers}
        on_disk = not isinstance(next(iter(self._layers.values())), torch.Tensor)
        return f"Activations(n={self.n}, layers={dims}, on_disk={on_disk})"


@declare(x=Data("layers", bad=[{}, None, "features"], scale="any"), name=Instance(str, example="x"))
def as_layers(x: Any, name: str) -> tuple[Mapping[str, Any], bool]:
    """The one data-first convention: ``x`` as an ordered mapping layer name → ``[N, D]`` data, and whether
    ``x`` was a mapping.

    An :class:`Activations`, a dict or any mapping is returned as it is (spilled layers stay on disk until
    read); a single array or tensor becomes the one layer :data:`SINGLE_LAYER`. Every per-layer function
    (probes, ``*_matrix``, tables) accepts these alike.

    >>> import numpy as np
    >>> layers, was_mapping = as_layers(np.zeros((4, 2)), "x")
    >>> list(layers), was_mapping
    (['features'], False)
    """
    if isinstance(x, Mapping):
        if len(x) == 0:
            raise ValueError(f"{name} is an empty mapping; pass at least one layer")
        return x, True
    if isinstance(x, (str, bytes)) or x is None:
        raise TypeError(f"{name} must be an array, a tensor, an Activations or a mapping layer -> [N, D] array, "
                        f"got {type(x).__name__}")
    return {SINGLE_LAYER: x}, False


@declare(model=Data("any", example=lambda: nn.Linear(3, 2), bad=["model", None]))
def weights_hash(model: nn.Module) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of every tensor in ``model.state_dict()``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


@declare(out=Data("any", example=lambda: torch.ones(2, 3, 4), bad=[np.ones((2, 3, 4)), "out"]),
         how=Options(*POOLS), layout=Options("sequence", "conv"), attention_mask=Instance(torch.Tensor, none=True),
         layer=Instance(str))
def pool(out: torch.Tensor, how: str = "mean", *, layout: str = "sequence", attention_mask: torch.Tensor | None = None,
         layer: str = "output") -> torch.Tensor:
    """One layer's batch output ``out`` pooled to ``[B, D]``, as :func:`extract` pools it.

    ``how`` is one of :data:`POOLS` (the table in the module docstring); ``layout`` says whether a 3-D output is a
    token ``"sequence"`` ``[B, T, D]`` (masked by ``attention_mask`` ``[B, T]``) or a ``"conv"`` map ``[B, C, L]``;
    4-D outputs are conv maps. ``layer`` names the output in error messages.

    >>> pool(torch.ones(2, 3, 4), "mean").shape
    torch.Size([2, 4])
    """
    check_choice(how, POOLS, "how")
    check_choice(layout, ("sequence", "conv"), "layout")
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"out must be a torch.Tensor [batch, ...], got {type(out).__name__}")
    return _pool(out, how, layout, attention_mask, layer)


def _pool(out: torch.Tensor, pool: str, layout: str, mask: torch.Tensor | None, layer: str) -> torch.Tensor:
    if out.ndim == 2:
        return out
    if out.ndim < 2:
        raise ValueError(f"layer {layer!r} produced a tensor of shape {tuple(out.shape)}; expected [batch, ...]")
    if pool == "flatten":
        return out.reshape(len(out), -1)
    if pool in TOKEN_POOLS:
        if layout == "conv" or out.ndim > 3:  # [N, C, *spatial] -> [N, positions, C]
            return out.flatten(2).transpose(1, 2)
        return out[:, 1:] if pool == "patch-tokens" else out
    if layout == "conv" or out.ndim > 3:
        if pool in ("mean", "spatial-mean"):
            return out.flatten(2).mean(2)
        raise ValueError(f"pool={pool!r} needs a token sequence but layer {layer!r} outputs a conv map "
                         f"{tuple(out.shape)}; use 'mean' or 'flatten'")
    # sequence [B, T, D]
    T = out.shape[1]
    m = mask if (mask is not None and mask.shape[1] == T) else torch.ones(out.shape[:2], device=out.device)
    m = m.to(out.dtype)
    if pool == "cls":
        return out[:, 0]
    if pool == "last":
        last = (m.cumsum(1) * m).argmax(1)  # index of the last real token
        return out[torch.arange(len(out), device=out.device), last]
    if pool == "spatial-mean":
        m = m.clone()
        m[:, 0] = 0
    denom = m.sum(1, keepdim=True).clamp_min(1)
    return (out * m.unsqueeze(-1)).sum(1) / denom


def _token_grid(out_shape: tuple[int, ...], pool: str, layout: str,
                input_shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """The grid of positions of one layer's token map (module docstring): a conv map's spatial shape; for
    ``patch-tokens`` of an image model ``(h, w)`` with ``h · w`` tokens in the image's aspect ratio; else None."""
    if len(out_shape) <= 2:
        return None
    if layout == "conv" or len(out_shape) > 3:
        return tuple(int(v) for v in out_shape[2:])
    if pool != "patch-tokens" or len(input_shape) != 4:
        return None
    t, (h_img, w_img) = out_shape[1] - 1, input_shape[-2:]
    h = round(math.sqrt(t * h_img / w_img)) if t > 0 else 0
    return (h, t // h) if h and h * (t // h) == t and h * w_img == (t // h) * h_img else None


def _cached_grid(path: Path) -> tuple[int, ...] | None:
    grid = json.loads(_sidecar(path).read_text()).get("grid")
    return tuple(grid) if grid is not None else None


def _check_inputs(model: nn.Module, the_split: Any) -> Any:
    """The split of ``extract``, its inputs checked: real numbers, or texts for a model that tokenizes (TypeError
    naming data); a numpy string array becomes an object array of texts (in a copy of the split)."""
    inputs = the_split.inputs
    check_real(inputs, "data")
    if inputs.dtype.kind in "US" or inputs.dtype == object:
        if not hasattr(model, "tokenize"):
            first = inputs.reshape(-1)[0] if inputs.size else None
            raise TypeError(f"data holds {type(first).__name__ if first is not None else inputs.dtype} values "
                            f"(dtype {inputs.dtype}), but {type(model).__name__} cannot read raw text (it has no "
                            ".tokenize); pass numeric inputs, or load a Hugging Face model with "
                            "workbench.models.load(path)")
        if inputs.dtype.kind in "US":
            return dataclasses.replace(the_split, inputs=inputs.astype(object))
    elif inputs.dtype.kind not in "biuf":
        raise TypeError(f"data must hold numbers or texts, got dtype {inputs.dtype}")
    return the_split


def _cache_key(whash: str, data_fp: str, module_path: str, pool: str, settings: str = "") -> str:
    # v2: every cached .npy has a sidecar .json with its SHA-256, shape and dtype (files of v1 had none)
    return hashlib.sha256(f"v2|{whash}|{data_fp}|{module_path}|{pool}{settings}".encode()).hexdigest()[:32]


def _model_settings(model: nn.Module) -> str:
    """The part of the cache key for a model's settings beyond its weights that change its activations: a Hugging
    Face model's token limit and truncation (``HFModel.max_length`` / ``.truncation``); empty for other models, whose
    keys stay as they were."""
    from .models import HFModel

    if isinstance(model, HFModel):
        return f"|max_length={model.max_length}|truncation={model.truncation}"
    return ""


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def _file_sha256(path: Path, chunk: int = 1 << 24) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _write_sidecar(path: Path, digest: str, shape: tuple[int, ...], grid: Any = None) -> None:
    """Record the checksum, shape and dtype of a cache file next to it (written after the file, atomically: unique
    temporary name, fsync, rename), and the grid of positions of a token map (token pools)."""
    side = _sidecar(path)
    tmp = side.with_name(f".{side.name}.{_unique()}.tmp")
    meta = {"sha256": digest, "shape": list(shape), "dtype": "<f4", "bytes": path.stat().st_size}
    if grid is not None:
        meta["grid"] = list(grid)
    try:
        with open(tmp, "w") as f:
            f.write(json.dumps(meta))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, side)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _unique() -> str:
    """A part of a temporary file name no other process (on any machine sharing the cache) uses."""
    return f"{os.getpid()}-{secrets.token_hex(6)}"


def _entry_lock(path: Path) -> Path:
    """The lock file of the cache entry ``path`` (key: its file name)."""
    return path.with_name(f".{path.name}.lock")


def _fsync_dir(path: Path) -> None:
    """fsync a directory so renames into it survive a power loss (skipped where directories cannot be synced)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _cache_intact(path: Path, *, warn: bool = True) -> bool:
    """Whether the cache file ``path`` matches its sidecar (size, SHA-256, shape, dtype); a mismatch warns naming the
    file (unless ``warn=False``: the unlocked first look, which a writer may be racing), which is then recomputed."""
    why = None
    try:
        meta = json.loads(_sidecar(path).read_text())
        if path.stat().st_size != meta["bytes"]:
            why = f"{path.stat().st_size} bytes instead of {meta['bytes']}"
        elif _file_sha256(path) != meta["sha256"]:
            why = "its SHA-256 does not match the one recorded when it was written"
        else:
            arr = np.load(path, mmap_mode="r")
            if list(arr.shape) != meta["shape"] or arr.dtype.str != meta["dtype"]:
                why = f"shape {arr.shape} / dtype {arr.dtype.str} instead of {tuple(meta['shape'])} / {meta['dtype']}"
    except FileNotFoundError:
        why = f"its checksum file {_sidecar(path).name} is missing"
    except (ValueError, KeyError, TypeError, OSError) as err:
        why = f"its checksum file {_sidecar(path).name} or header cannot be read ({type(err).__name__}: {err})"
    if why is None:
        return True
    if not warn:
        return False
    warnings.warn(f"activation cache file {path} is damaged ({why}); recomputing it", RuntimeWarning, stacklevel=3)
    return False


# declared rules (workbench._validation.declare): a small model and its inputs as the valid example of extract
def _example_model() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))


def _example_inputs(n: int = 8) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n, 4)).astype(np.float32)


def _with_nan() -> np.ndarray:
    x = _example_inputs()
    x[1, 2] = np.nan
    return x


@declare(model=Data("any", example=_example_model, bad=["model"]),
         data=Data("any", example=_example_inputs, bad=[_with_nan(), _example_inputs(0)]),
         layers=Instance(str, Iterable, none=True), pool=Options(*POOLS, *TOKEN_POOLS), split=Instance(str, none=True),
         batch_size=Interval(int, 1), cache=Instance(str, os.PathLike, none=True),
         device=Instance(str, torch.device, int, none=True), progress=Flag(), shard=Instance(tuple, list, none=True))
def extract(model: nn.Module, data: Any, layers: str | Sequence[str] | None = None, pool: str = "mean", *,
            split: str | None = None, batch_size: int = 256, cache: str | os.PathLike | None = None,
            device: str | torch.device | None = None, progress: bool = False,
            shard: tuple[int, int] | None = None) -> Activations:
    """Activations of ``layers`` of ``model`` on ``data``, pooled to ``[N, D]`` (or unpooled token maps
    ``[N, T, D]``), in one pass per batch.

    Parameters
    ----------
    model : nn.Module exposing probe points (see :func:`workbench.models.probe_points`).
    data : a :class:`~workbench.data.Split`, a :class:`~workbench.data.Dataset` with ``split=``, or an
        input array/tensor.
    layers : None (every probe point), a list of names/module paths, or a regex (see
        :func:`workbench.models.select_layers`).
    pool : one of ``mean | spatial-mean | cls | last | flatten`` (first table in the module docstring), or
        ``tokens | patch-tokens`` for unpooled ``[N, T, D]`` token maps — a CNN's positions × channels, a ViT's
        patch tokens without CLS — with their grids in ``meta["grids"]`` (second table).
    batch_size : examples per forward pass. A pass that runs out of memory (a CUDA device's, or the CPU
        allocator's) is retried on half as many examples, down to one, with a ``RuntimeWarning`` naming the size
        that fits (:func:`workbench._memory.run_batched`): the memory used is bounded by what the device has.
    cache : directory for the disk cache (and spill-to-disk for large N); None keeps everything in memory.
    device : where the model runs; default: where its parameters are.
    shard : ``(i, k)`` computes only the ``i``-th of ``k`` contiguous blocks of examples (rows
        ``i·N//k … (i+1)·N//k``) into ``cache`` and returns that block (``meta["rows"]``), so ``k`` workers or
        GPUs can extract one dataset together. A later call without ``shard`` finds the ``k`` blocks and returns
        them merged lazily — each layer is read block after block on access, nothing is copied into one file — and
        computes any missing block first (a sharded extraction that was interrupted resumes where it stopped).

    Hooks are always removed, also when the forward pass raises. The model is put in eval mode and its
    previous mode restored.

    Examples
    --------
    >>> import tempfile, torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> x, cache = torch.randn(10, 4), tempfile.mkdtemp()
    >>> [extract(net, x, cache=cache, shard=(i, 2)).n for i in range(2)]   # two workers, one cache
    [5, 5]
    >>> merged = extract(net, x, cache=cache)                               # no forward pass: the blocks
    >>> torch.allclose(merged["2"], extract(net, x)["2"])
    True
    """
    from .models import select_layers

    check_choice(pool, (*POOLS, *TOKEN_POOLS), "pool")
    check_positive_int(batch_size, "batch_size")
    if device is not None:
        device = check_device(device, "device")
    if cache is not None and Path(cache).exists() and not Path(cache).is_dir():
        raise ValueError(f"cache={str(cache)!r} is a file; pass a directory for the activation cache (it is created "
                         "if missing)")
    if isinstance(data, (torch.Tensor, np.ndarray)):
        check_real(data, "data")
        if data.ndim == 0:
            raise ValueError(f"data is a 0-d array ({data!r}); pass an array of examples [N, ...]")
    the_split = _check_inputs(model, as_split(data, split))
    n = len(the_split)
    if n == 0:
        raise ValueError("data has no examples")
    if shard is not None:
        shard = _check_shard(shard, n)
        if cache is None:
            raise ValueError("shard=(i, k) writes its block of examples into the activation cache for the other "
                             "blocks to join; pass cache=DIR (a directory every worker sees)")
    if the_split.inputs.dtype != object and np.issubdtype(the_split.inputs.dtype, np.floating):
        from ._validation import check_finite

        check_finite(the_split.inputs, "data inputs")
    chosen = select_layers(model, layers)  # name -> module path; raises listing layers if nothing matches
    if device is None:
        p = next(model.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
    job = _Job(model, the_split, pool, torch.device(device), batch_size, progress)

    meta = {"pool": pool, "n": n, "data_fingerprint": the_split.fingerprint(), "layers": chosen}
    if cache is None:
        arrays = job.run(0, n, chosen, None)
        if pool in TOKEN_POOLS:
            meta["grids"] = {name: job.grids.get(name) for name in chosen}
        return Activations({k: torch.from_numpy(arrays[k]) for k in chosen}, the_split.labels, the_split.factors,
                           {**meta, "cached": False})

    cache_dir = Path(cache)
    cache_dir.mkdir(parents=True, exist_ok=True)
    meta["weights_hash"] = whash = weights_hash(model)
    settings = _model_settings(model)
    paths = {name: cache_dir / f"{_cache_key(whash, meta['data_fingerprint'], path, pool, settings)}.npy"
             for name, path in chosen.items()}
    if shard is not None:
        i, k = shard
        lo, hi = _shard_rows(i, k, n)
        targets = {name: _shard_path(paths[name], i, k) for name in chosen}
        computed = job.fill(lo, hi, chosen, targets)
        if pool in TOKEN_POOLS:
            meta["grids"] = {name: _cached_grid(p) for name, p in targets.items()}
        return Activations(targets, _rows(the_split.labels, lo, hi),
                           {f: _rows(v, lo, hi) for f, v in the_split.factors.items()},
                           {**meta, "n": hi - lo, "shard": (i, k), "rows": (lo, hi), "cached": not computed})

    sources: dict[str, Path | list[Path]] = {}
    whole: dict[str, str] = {}  # layers with neither an entry nor blocks: computed whole
    blocks: dict[int, dict[str, str]] = {}  # k -> layers whose k blocks are partly there: the rest is computed
    for name, module_path in chosen.items():
        if paths[name].exists() and _cache_intact(paths[name], warn=False):
            sources[name] = paths[name]
            continue
        k = _shard_count(paths[name])
        if k is None:
            whole[name] = module_path
        else:
            blocks.setdefault(k, {})[name] = module_path
    computed = job.fill(0, n, whole, {name: paths[name] for name in whole}) if whole else False
    sources.update({name: paths[name] for name in whole})
    for k, todo in blocks.items():
        for i in range(k):
            lo, hi = _shard_rows(i, k, n)
            computed |= job.fill(lo, hi, todo, {name: _shard_path(paths[name], i, k) for name in todo})
        sources.update({name: [_shard_path(paths[name], i, k) for i in range(k)] for name in todo})
    sources = {name: sources[name] for name in chosen}
    if pool in TOKEN_POOLS:
        meta["grids"] = {name: _cached_grid(p if isinstance(p, Path) else p[0]) for name, p in sources.items()}
    return Activations(sources, the_split.labels, the_split.factors, {**meta, "cached": not computed})


def _check_shard(shard: Any, n: int) -> tuple[int, int]:
    if (not isinstance(shard, (tuple, list)) or len(shard) != 2
            or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in shard)):
        raise TypeError(f"shard must be a pair of integers (i, k): block i of k, got {shard!r}")
    i, k = int(shard[0]), int(shard[1])
    if k < 1 or not 0 <= i < k:
        raise ValueError(f"shard={tuple(shard)!r}: need k >= 1 blocks and 0 <= i < k")
    if k > n:
        raise ValueError(f"shard={tuple(shard)!r}: {k} blocks of {n} examples would leave blocks empty; use k <= {n}")
    return i, k


def _shard_rows(i: int, k: int, n: int) -> tuple[int, int]:
    """Rows of block ``i`` of ``k`` contiguous blocks of ``n`` examples: ``i·n//k … (i+1)·n//k``."""
    return i * n // k, (i + 1) * n // k


def _shard_path(path: Path, i: int, k: int) -> Path:
    return path.with_name(f"{path.stem}.shard-{i}-of-{k}.npy")


def _shard_count(path: Path) -> int | None:
    """The number of blocks ``k`` of the entry ``path`` written by sharded calls (the ``k`` with the most blocks
    there, if several), or None if there are none."""
    counts: dict[int, int] = {}
    for p in path.parent.glob(f"{path.stem}.shard-*-of-*.npy"):
        try:
            k = int(p.stem.rsplit("-of-", 1)[1])
        except (IndexError, ValueError):
            continue
        counts[k] = counts.get(k, 0) + 1
    return max(counts, key=lambda k: (counts[k], k)) if counts else None


def _rows(values: np.ndarray | None, lo: int, hi: int) -> np.ndarray | None:
    return None if values is None else values[lo:hi]


class _Job:
    """One model on one split: runs the forward passes of :func:`extract` over a block of rows and writes or returns
    the pooled outputs of the layers asked for."""

    def __init__(self, model: nn.Module, the_split: Any, pool: str, device: torch.device, batch_size: int,
                 progress: bool):
        self.model, self.split, self.pool, self.device = model, the_split, pool, device
        self.batch_size, self.progress = batch_size, progress
        inputs = the_split.inputs
        self.layout = "conv" if (inputs.dtype != object and inputs.ndim == 3
                                 and np.issubdtype(inputs.dtype, np.floating)) else "sequence"
        self.grids: dict[str, tuple[int, ...] | None] = {}

    def fill(self, lo: int, hi: int, todo: Mapping[str, str], targets: Mapping[str, Path]) -> bool:
        """Write rows ``lo … hi`` of each layer of ``todo`` to its cache file in ``targets`` unless the file is there
        and intact; each missing entry's lock is held while it is computed (taken in file-name order: no deadlock),
        and the entries are looked at again under the locks (another process may have written them). Returns whether
        anything was computed."""
        todo = {name: path for name, path in todo.items()
                if not (targets[name].exists() and _cache_intact(targets[name], warn=False))}
        if not todo:
            return False
        with contextlib.ExitStack() as locks:
            for p in sorted({targets[name] for name in todo}):
                locks.enter_context(FileLock(_entry_lock(p)))
            todo = {name: path for name, path in todo.items()
                    if not (targets[name].exists() and _cache_intact(targets[name]))}
            if todo:
                self.run(lo, hi, todo, {name: targets[name] for name in todo})
        return bool(todo)

    def run(self, lo: int, hi: int, todo: Mapping[str, str], targets: Mapping[str, Path] | None) -> dict[str, Any]:
        """The forward passes over rows ``lo … hi`` with a hook on each layer of ``todo``: arrays in memory
        (``targets=None``) or each layer appended to a temporary file renamed to its target when complete."""
        from tqdm.auto import tqdm

        from .models import get_module

        model, the_split, pool, device = self.model, self.split, self.pool, self.device
        current: dict[str, torch.Tensor] = {}
        current_mask: list[torch.Tensor | None] = [None]

        def make_hook(name: str):
            def hook(_module, _inputs, output):
                out = output[0] if isinstance(output, (tuple, list)) else output
                if hasattr(out, "last_hidden_state"):
                    out = out.last_hidden_state
                if not isinstance(out, torch.Tensor):
                    raise TypeError(f"layer {name!r} returned {type(out).__name__}, not a tensor; choose another "
                                    "layer")
                if pool in TOKEN_POOLS and name not in self.grids:
                    self.grids[name] = _token_grid(tuple(out.shape), pool, self.layout, the_split.inputs.shape)
                current[name] = _pool(out.detach(), pool, self.layout, current_mask[0], name).float()
            return hook

        handles = []
        writers = _Writers(hi - lo, targets)
        was_training = model.training
        bar = tqdm(total=hi - lo, disable=not self.progress, desc="extract", leave=False)
        try:
            handles = [get_module(model, path).register_forward_hook(make_hook(name)) for name, path in todo.items()]
            model.eval()

            def batch(start: int, stop: int) -> None:
                current.clear()
                idx = slice(start, stop)
                if the_split.attention_mask is not None:
                    current_mask[0] = torch.as_tensor(the_split.attention_mask[idx], device=device)
                elif the_split.inputs.dtype == object and hasattr(model, "tokenize"):
                    texts = [str(s) for s in the_split.inputs[idx]]
                    current_mask[0] = model.tokenize(texts)["attention_mask"].to(device)
                with torch.inference_mode():
                    self._call(idx)
                for name in todo:
                    if name not in current:
                        raise RuntimeError(f"layer {name!r} did not run in the forward pass; it cannot be captured")
                    out = current[name]
                    if not torch.isfinite(out).all():
                        raise ValueError(f"activations of layer {name!r} contain NaN/Inf in rows "
                                         f"{start}..{stop - 1}; check the model's weights and inputs")
                    writers.add(name, start - lo, out.cpu().numpy())
                current.clear()
                bar.update(stop - start)

            _memory.run_batched(batch, hi, self.batch_size, start=lo,
                                hint="the model does not fit the device; use a smaller model or input, or the CPU")
            return writers.finish(self.grids)
        except BaseException:
            writers.abort()
            raise
        finally:
            bar.close()
            for h in handles:
                h.remove()
            model.train(was_training)

    def _call(self, idx: slice) -> None:
        try:
            call_model(self.model, self.split, idx, self.device)
        except RuntimeError as err:  # dtype or shape mismatches of the inputs with the model
            if _memory.is_oom(err):
                raise
            inputs = self.split.inputs
            hint = ("; integer inputs are token ids for embedding models: for a model of real-valued "
                    "features pass data.astype(np.float32)") if np.issubdtype(inputs.dtype, np.integer) else ""
            raise ValueError(f"{type(self.model).__name__} could not run on data (inputs of shape "
                             f"{tuple(inputs.shape)}, dtype {inputs.dtype}): {str(err).splitlines()[0][:200]}"
                             f"{hint}") from err


class _Writers:
    """Where the rows of each layer go: an array in memory, or (with ``targets``) a temporary ``.npy`` file written
    with plain appends and a running SHA-256, fsync-ed and renamed to its target with its checksum sidecar."""

    def __init__(self, n: int, targets: Mapping[str, Path] | None):
        self.n, self.targets = n, targets
        self.arrays: dict[str, np.ndarray] = {}
        self.files: dict[str, Any] = {}
        self.tmp: dict[str, Path] = {}
        self.digests: dict[str, Any] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.written: dict[str, int] = {}

    def add(self, name: str, row: int, arr: np.ndarray) -> None:
        shape = (self.n, *arr.shape[1:])
        if self.targets is None:
            if name not in self.arrays:
                self.arrays[name] = np.empty(shape, dtype=np.float32)
            self.arrays[name][row:row + len(arr)] = arr
            return
        if name not in self.files:
            target = self.targets[name]
            self.tmp[name] = target.with_name(f".{target.name}.{_unique()}.tmp")
            self.files[name] = open(self.tmp[name], "wb")  # noqa: SIM115 — closed in finish/abort
            header = io.BytesIO()
            np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": shape})
            self.digests[name], self.shapes[name] = hashlib.sha256(header.getvalue()), shape
            self.files[name].write(header.getvalue())
            self.written[name] = 0
        if row != self.written[name]:  # rows arrive in order; a retried batch starts where the last one ended
            raise RuntimeError(f"internal: rows of layer {name!r} out of order ({row} after {self.written[name]})")
        chunk = np.ascontiguousarray(arr, dtype="<f4").tobytes()
        self.digests[name].update(chunk)
        self.files[name].write(chunk)
        self.written[name] += len(arr)

    def finish(self, grids: Mapping[str, Any]) -> dict[str, np.ndarray]:
        if self.targets is None:
            return self.arrays
        for name, f in self.files.items():
            f.flush()
            os.fsync(f.fileno())
            f.close()
            os.replace(self.tmp[name], self.targets[name])
            _write_sidecar(self.targets[name], self.digests[name].hexdigest(), self.shapes[name], grids.get(name))
        if self.files:
            _fsync_dir(next(iter(self.targets.values())).parent)
        return {}

    def abort(self) -> None:
        for name, f in self.files.items():
            f.close()
            self.tmp[name].unlink(missing_ok=True)

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

    Layers spilled to disk are memory-mapped and read on first access.
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
        return tuple(value.shape) if isinstance(value, torch.Tensor) else tuple(np.load(value, mmap_mode="r").shape)

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
         device=Instance(str, torch.device, int, none=True), progress=Flag())
def extract(model: nn.Module, data: Any, layers: str | Sequence[str] | None = None, pool: str = "mean", *,
            split: str | None = None, batch_size: int = 256, cache: str | os.PathLike | None = None,
            device: str | torch.device | None = None, progress: bool = False) -> Activations:
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
    batch_size : examples per forward pass.
    cache : directory for the disk cache (and spill-to-disk for large N); None keeps everything in memory.
    device : where the model runs; default: where its parameters are.

    Hooks are always removed, also when the forward pass raises. The model is put in eval mode and its
    previous mode restored.
    """
    from .models import select_layers, get_module

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
    if the_split.inputs.dtype != object and np.issubdtype(the_split.inputs.dtype, np.floating):
        from ._validation import check_finite

        check_finite(the_split.inputs, "data inputs")
    chosen = select_layers(model, layers)  # name -> module path; raises listing layers if nothing matches
    if device is None:
        p = next(model.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
    device = torch.device(device)
    layout = "conv" if (the_split.inputs.dtype != object and the_split.inputs.ndim == 3
                        and np.issubdtype(the_split.inputs.dtype, np.floating)) else "sequence"

    meta = {"pool": pool, "n": n, "data_fingerprint": the_split.fingerprint(), "layers": chosen}
    cache_dir = Path(cache) if cache is not None else None
    paths: dict[str, Path] = {}
    todo = chosen  # the layers to compute: all without a cache, else those whose entry is missing or damaged
    locks = contextlib.ExitStack()  # the locks of the entries being computed (held until they are written)
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        whash = weights_hash(model)
        meta["weights_hash"] = whash
        settings = _model_settings(model)
        paths = {name: cache_dir / f"{_cache_key(whash, meta['data_fingerprint'], path, pool, settings)}.npy"
                 for name, path in chosen.items()}
        todo = {name: path for name, path in chosen.items()
                if not (paths[name].exists() and _cache_intact(paths[name], warn=False))}
        if todo:  # take the missing entries' locks (in file-name order: no deadlock), then look again
            try:
                for p in sorted({paths[name] for name in todo}):
                    locks.enter_context(FileLock(_entry_lock(p)))
                todo = {name: path for name, path in todo.items()
                        if not (paths[name].exists() and _cache_intact(paths[name]))}
            except BaseException:
                locks.close()
                raise
        if not todo:  # every entry is there: computed earlier, or by another process while we waited
            locks.close()
            if pool in TOKEN_POOLS:
                meta["grids"] = {name: _cached_grid(p) for name, p in paths.items()}
            return Activations(dict(paths), the_split.labels, the_split.factors, {**meta, "cached": True})

    buffers: dict[str, Any] = {}  # layer -> in-memory array, or open temp file when spilling to the cache
    current: dict[str, torch.Tensor] = {}
    current_mask: list[torch.Tensor | None] = [None]
    grids: dict[str, tuple[int, ...] | None] = {}

    def make_hook(name: str):
        def hook(_module, _inputs, output):
            out = output[0] if isinstance(output, (tuple, list)) else output
            if hasattr(out, "last_hidden_state"):
                out = out.last_hidden_state
            if not isinstance(out, torch.Tensor):
                raise TypeError(f"layer {name!r} returned {type(out).__name__}, not a tensor; choose another layer")
            if pool in TOKEN_POOLS and name not in grids:
                grids[name] = _token_grid(tuple(out.shape), pool, layout, the_split.inputs.shape)
            current[name] = _pool(out.detach(), pool, layout, current_mask[0], name).float()
        return hook

    try:
        handles = [get_module(model, path).register_forward_hook(make_hook(name)) for name, path in todo.items()]
    except BaseException:
        locks.close()
        raise
    was_training = model.training
    model.eval()
    tmp_paths: dict[str, Path] = {}
    digests: dict[str, Any] = {}  # layer -> SHA-256 of its cache file, updated as the file is written
    shapes: dict[str, tuple[int, ...]] = {}
    try:
        from tqdm.auto import tqdm

        with torch.inference_mode():
            for start in tqdm(range(0, n, batch_size), disable=not progress, desc="extract", leave=False):
                idx = slice(start, min(start + batch_size, n))
                current.clear()
                if the_split.attention_mask is not None:
                    current_mask[0] = torch.as_tensor(the_split.attention_mask[idx], device=device)
                elif the_split.inputs.dtype == object and hasattr(model, "tokenize"):
                    texts = [str(s) for s in the_split.inputs[idx]]
                    current_mask[0] = model.tokenize(texts)["attention_mask"].to(device)
                try:
                    call_model(model, the_split, idx, device)
                except RuntimeError as err:  # dtype or shape mismatches of the inputs with the model
                    inputs = the_split.inputs
                    hint = ("; integer inputs are token ids for embedding models: for a model of real-valued "
                            "features pass data.astype(np.float32)") if np.issubdtype(inputs.dtype, np.integer) else ""
                    raise ValueError(f"{type(model).__name__} could not run on data (inputs of shape "
                                     f"{tuple(inputs.shape)}, dtype {inputs.dtype}): {str(err).splitlines()[0][:200]}"
                                     f"{hint}") from err
                for name in todo:
                    if name not in current:
                        raise RuntimeError(f"layer {name!r} did not run in the forward pass; it cannot be captured")
                    out = current[name]
                    if not torch.isfinite(out).all():
                        raise ValueError(f"activations of layer {name!r} contain NaN/Inf in rows "
                                         f"{start}..{idx.stop - 1}; check the model's weights and inputs")
                    arr = out.cpu().numpy()
                    if name not in buffers:
                        shape = (n, *arr.shape[1:])
                        if cache_dir is not None:
                            tmp_paths[name] = paths[name].with_name(f".{paths[name].name}.{_unique()}.tmp")
                            buffers[name] = open(tmp_paths[name], "wb")  # noqa: SIM115 — closed below
                            header = io.BytesIO()
                            np.lib.format.write_array_header_1_0(
                                header, {"descr": "<f4", "fortran_order": False, "shape": shape})
                            digests[name], shapes[name] = hashlib.sha256(header.getvalue()), shape
                            buffers[name].write(header.getvalue())
                        else:
                            buffers[name] = np.empty(shape, dtype=np.float32)
                    if cache_dir is not None:
                        chunk = np.ascontiguousarray(arr, dtype="<f4").tobytes()
                        digests[name].update(chunk)
                        buffers[name].write(chunk)
                    else:
                        buffers[name][idx] = arr
        if cache_dir is not None:
            for name in todo:
                buffers[name].flush()
                os.fsync(buffers[name].fileno())
                buffers[name].close()
                os.replace(tmp_paths[name], paths[name])
                _write_sidecar(paths[name], digests[name].hexdigest(), shapes[name], grids.get(name))
            _fsync_dir(cache_dir)
    except BaseException:
        for name, p in tmp_paths.items():
            if cache_dir is not None and name in buffers:
                buffers[name].close()
            p.unlink(missing_ok=True)
        raise
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
        locks.close()

    if pool in TOKEN_POOLS:
        meta["grids"] = {name: grids.get(name) if name in todo else _cached_grid(paths[name]) for name in chosen}
    if cache_dir is None:
        return Activations({k: torch.from_numpy(buffers[k]) for k in chosen}, the_split.labels,
                           the_split.factors, {**meta, "cached": False})
    return Activations(dict(paths), the_split.labels, the_split.factors, {**meta, "cached": False})

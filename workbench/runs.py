"""Run store: content-addressed run directories with atomic writes, resumable checkpoints and locking.

A *run* is one training job: a normalized :class:`RunConfig`, checkpoints (safetensors) on a schedule
(step 0, log-spaced steps and the final step), a tidy history (one row per step × measure) and a status.
The run id is a hash of the normalized config, so asking for the same run twice trains once.

Weights trained elsewhere — a Hugging Face directory, a state dict with its builder, a checkpoint series as
Pythia or MultiBERTs publish it — become a finished run with :meth:`RunStore.import_model` (``model="imported"``,
an id that starts with a hash of the weights, no history); every frozen analysis reads them like a trained run.

Layout of a store::

    root/
      runs/<run_id>/
        config.json            normalized config (what the id hashes)
        meta.json              display name, created time, workbench version (not hashed)
        status.json            {"state": "created"|"running"|"done"|"failed"|"interrupted", "step": int,
                                "error": str|None}; a "running" run whose process died reads "interrupted"
        history.csv            step, measure, split, layer, layer_index, value (:data:`HISTORY_COLUMNS`; read
                               back by :meth:`Run.history` in the results schema, :mod:`workbench.results`)
        downstream.csv         every downstream evaluation (:data:`workbench.train.DOWNSTREAM_COLUMNS`)
        checkpoints/<step:08d>/model.safetensors, model.json, objective.safetensors (objectives with parameters),
                               trainer.pt (optimizer state, step and the running sums of the logging interval),
                               history.csv (every history row up to this step), manifest.json (written last:
                               {"step", "files": {name: {"sha256", "size"}}})
        checkpoints/.corrupt-<step>-<n>/   a checkpoint that failed verification, moved aside (never deleted)
        artifacts/             run-specific arrays (e.g. label_noise.npz)
        manifest.json          {"version", "files": {relative path: {"sha256", "size"}}, "digest"} of config.json,
                               meta.json, status.json, history.csv, downstream.csv, artifacts/* and
                               checkpoints/<step>/manifest.json
        .lock.held             lock file of the process that trains the run (:class:`workbench._locks.FileLock`:
                               owner record, heartbeat, expiry; exists while held); ``.lock`` is also flock-ed
        .manifest.lock.held    lock file held while a file and its manifest entry are being replaced (+ flock on
                               ``.manifest.lock``)
      .imports/                imports being assembled (RunStore.import_model), renamed into runs/ when complete;
                               ``.imports/.import-*.held`` is the lock of a live import
      quarantine/              runs whose config.json was unreadable, moved here by :meth:`RunStore.repair`

Every file is written to a temporary name in the same directory, fsync-ed and renamed (``os.replace``), then the
directory is fsync-ed, so readers never see a half-written file and a killed writer (or a power loss) leaves the
previous version intact. Every file of a run goes through :meth:`Run.write_file`, which records its SHA-256 and
size in the run's ``manifest.json`` (the new entry is listed, with the old one as ``previous``, before the file is
replaced, so a kill between the two leaves a file the manifest accepts); every read verifies it:

- a checkpoint is *intact* when its ``manifest.json`` is present and every file it lists matches. Training resumes
  from the last checkpoint of the schedule before the first one that is not intact (that one is moved aside with a
  warning naming the file); its weights, optimizer state, running sums and history snapshot make the resumed run
  equal to an uninterrupted one, row for row. :meth:`Run.load_model` of a corrupt checkpoint raises ``ValueError``.
- a damaged ``history.csv`` is rebuilt from the last intact checkpoint's snapshot (with a warning naming it);
  a damaged ``status.json`` is recomputed from the checkpoints (``"interrupted"``); a damaged ``meta.json`` reads
  as ``{}``; a damaged ``downstream.csv`` or artifact raises ``ValueError`` naming the file.
- a run whose ``config.json`` is damaged is *broken*: :meth:`RunStore.list` shows it with state ``"broken"`` and
  :meth:`RunStore.runs` leaves it out, both with a warning naming the file; every other run keeps working.
- runs written by older versions (no manifests) are read without verification; :meth:`RunStore.repair` adds them.

:meth:`RunStore.check` (``workbench runs check``) verifies every checksum of every run; :meth:`RunStore.repair`
(``workbench runs repair``) fixes what can be fixed. Training holds the run's lock: a second process asking for the
same run — on this machine or another one sharing the store over NFS — waits, then finds it done. Locks are lock
files (:mod:`workbench._locks`: exclusive hard link, an owner record, a heartbeat every 10 s, taken over when the
owner's process is gone or 60 s after its last heartbeat), which exclude on NFS where ``fcntl.flock`` does not; the
``fcntl.flock`` of ``.lock`` / ``.manifest.lock`` is still taken inside them, for processes of older versions.
Temporary files of a run are removed when that lock is taken for training; ``.deleted-*`` leftovers of an
interrupted :meth:`RunStore.delete` when the store lists its runs.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import fcntl
import hashlib
import io
import json
import math
import os
import re
import shutil
import socket
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import pandas as pd

from ._locks import FileLock
from .results import tidy

__all__ = ["RunConfig", "RunStore", "Run", "checkpoint_schedule", "atomic_write_bytes", "atomic_write_text",
           "default_store_root", "IMPORTED", "StoreWarning"]

OBJECTIVES = ("supervised", "simclr", "supcon", "barlow", "vicreg", "mae", "mlm", "clm", "autoencoder",
              "distill", "none")
CONTRASTIVE = ("simclr", "supcon", "barlow", "vicreg", "distill")  # objectives that train an embedding head
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("constant", "cosine", "warmup-cosine")
NOISE_TYPES = ("symmetric", "pairflip")
PROJECTORS = ("none", "linear", "mlp")
AUGMENTATIONS = ("crop", "flip", "color", "noise", "blur", "rotate", "mask")
RECORDERS = ("grad_norm", "act_var", "eigs", "eig_steps", "align_unif", "projector_geometry", "clean_flipped",
             "el2n")
DEFAULT_RECORDERS = ("clean_flipped",)
#: columns of ``history.csv``; ``layer`` / ``layer_index`` are empty for model-level measures (the loss)
HISTORY_COLUMNS = ["step", "measure", "split", "layer", "layer_index", "value"]
#: ``RunConfig.model`` of a run made by :meth:`RunStore.import_model` (weights loaded, not trained here)
IMPORTED = "imported"
#: the manifest of a run directory and of each checkpoint directory
MANIFEST = "manifest.json"
#: files of a run directory its manifest tracks (besides ``artifacts/*`` and ``checkpoints/<step>/manifest.json``)
TRACKED = ("config.json", "meta.json", "status.json", "history.csv", "downstream.csv")
_NUMERIC_FIELDS = ("data_fraction", "label_noise", "label_smoothing", "augment_strength", "temperature", "views",
                   "projector_depth", "embed_dim", "mask_ratio", "init_scale", "lr", "weight_decay", "batch_size",
                   "steps", "warmup", "seed", "checkpoints")


class StoreWarning(UserWarning):
    """A stored file failed verification (or could not be read) and was worked around; the message names it."""


def default_store_root() -> Path:
    """``$WORKBENCH_HOME`` or ``~/.workbench`` — where runs and activation caches live by default."""
    return Path(os.environ.get("WORKBENCH_HOME", Path.home() / ".workbench"))


# ----------------------------------------------------------------------------------------------- config
@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything that determines what a run learns. Two equal configs are the same run.

    Parameters
    ----------
    dataset, dataset_options : name for :func:`workbench.data.load` and its options.
    model, model_options : builder name for :func:`workbench.models.build` and its options
        (``input_shape``/``num_classes``/``vocab_size`` are filled from the dataset).
    objective : one of :data:`OBJECTIVES` — ``"supervised"`` (cross-entropy, ``label_smoothing``),
        ``"simclr"`` (InfoNCE / NT-Xent over ``views`` augmented views at ``temperature``), ``"supcon"``
        (supervised contrastive), ``"barlow"`` (Barlow Twins), ``"vicreg"``, ``"mae"`` (masked
        autoencoding of images / 1-D signals, ``mask_ratio``), ``"mlm"`` / ``"clm"`` (masked / causal
        language modelling on token data), ``"autoencoder"``, ``"distill"`` (self-distillation from a
        frozen random teacher) or ``"none"`` (random init, no training: the baseline every curve is
        compared with). See :mod:`workbench.train.objectives`.
    data_fraction : fraction of the training split used (a seeded, stratified-when-labelled subset). With
        ``objective="none"`` (nothing is trained) it is set to 1.0, so every value names the same run. To
        pretrain on exactly ``m`` examples of a generated dataset, give it ``n_train=m`` in ``dataset_options``.
    label_noise, noise_type : fraction of training labels corrupted; ``"symmetric"`` flips to a uniformly
        chosen *other* class, ``"pairflip"`` (class-dependent, Han et al. 2018) flips class ``c`` to
        ``(c + 1) mod K``. Exactly ``round(label_noise * n_train)`` labels are flipped; which ones is recorded.
    label_smoothing : for the supervised cross-entropy.
    augment, augment_strength : augmentation names from :data:`AUGMENTATIONS` (torch ops, see
        :mod:`workbench.train.augment`) applied to training inputs, and a global strength in [0, 1].
        Empty means no augmentation (contrastive objectives then require at least one).
    temperature, views : contrastive temperature and number of augmented views per example.
    projector, projector_depth, embed_dim : head between the backbone's representation and the loss of
        contrastive objectives (``none | linear | mlp``); only meaningful for those (rejected otherwise).
    mask_ratio : fraction masked for ``mae`` / ``mlm``.
    init_scale : every weight matrix/conv kernel is multiplied by this after initialisation.
    optimizer, lr, weight_decay, batch_size, steps, seed : optimisation settings.
    schedule, warmup : learning-rate schedule (:data:`SCHEDULES`) and linear warm-up steps.
    checkpoints : number of log-spaced checkpoint steps in ``[1, steps]`` (step 0 and the final step are
        always saved).
    recorders : what is written into the history besides loss/accuracy (:data:`RECORDERS`), see
        :mod:`workbench.train.recorders`. They are part of the run id (a run asked for with a recorder
        always has its records), sorted so their order does not matter.

    Imported runs: ``model="imported"`` (:data:`IMPORTED`) marks a run made by :meth:`RunStore.import_model`;
    ``objective`` is ``"none"``, ``steps`` the last imported checkpoint step, and ``model_options`` record ``format``
    (``"hf"`` or ``"workbench"``), ``architecture``, ``weights`` (SHA-256, see :meth:`RunStore.import_model`) and
    ``steps`` (the imported checkpoints). Such a run cannot be trained.
    """

    dataset: str = "shapes"
    dataset_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    model: str = "cnn"
    model_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    objective: str = "supervised"
    data_fraction: float = 1.0
    label_noise: float = 0.0
    noise_type: str = "symmetric"
    label_smoothing: float = 0.0
    augment: tuple = ()
    augment_strength: float = 0.5
    temperature: float = 0.2
    views: int = 2
    projector: str = "none"
    projector_depth: int = 2
    embed_dim: int = 64
    mask_ratio: float = 0.5
    init_scale: float = 1.0
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 128
    steps: int = 500
    schedule: str = "constant"
    warmup: int = 0
    seed: int = 0
    checkpoints: int = 6
    recorders: tuple = DEFAULT_RECORDERS

    def __post_init__(self) -> None:
        from ._validation import check_choice, check_fraction, check_positive_int

        for name in _NUMERIC_FIELDS:  # True == 1: a bool would pass as a number and hash like one
            if isinstance(getattr(self, name), (bool, np.bool_)):
                raise TypeError(f"{name} must be a number, got the bool {getattr(self, name)!r}; pass a number "
                                f"(the default is {name}={_DEFAULTS[name]!r})")
        if not isinstance(self.dataset, str) or not self.dataset:
            raise TypeError(f"dataset must be a dataset name (str), got {self.dataset!r}")
        if not isinstance(self.model, str) or not self.model:
            raise TypeError(f"model must be a builder name (str), got {self.model!r}")
        for name in ("dataset_options", "model_options"):
            if not isinstance(getattr(self, name), Mapping):
                raise TypeError(f"{name} must be a dict, got {type(getattr(self, name)).__name__}")
        check_choice(self.objective, OBJECTIVES, "objective")
        check_choice(self.optimizer, OPTIMIZERS, "optimizer")
        check_choice(self.schedule, SCHEDULES, "schedule")
        check_choice(self.noise_type, NOISE_TYPES, "noise_type")
        check_choice(self.projector, PROJECTORS, "projector")
        check_fraction(self.label_noise, "label_noise", low=0.0, high=1.0)
        check_fraction(self.label_smoothing, "label_smoothing", low=0.0, high=0.99)
        check_fraction(self.augment_strength, "augment_strength")
        check_fraction(self.mask_ratio, "mask_ratio", low=0.0, high=0.95)
        if check_fraction(self.data_fraction, "data_fraction") <= 0:
            raise ValueError("data_fraction must be > 0 (the fraction of the training split used)")
        for name in ("augment", "recorders"):
            value = getattr(self, name)
            if isinstance(value, str):
                value = (value,)
            if not isinstance(value, (tuple, list)):
                raise TypeError(f"{name} must be a list of names, got {type(value).__name__}")
            allowed = AUGMENTATIONS if name == "augment" else RECORDERS
            for v in value:
                check_choice(v, allowed, name)
            object.__setattr__(self, name, tuple(sorted(set(value))) if name == "recorders" else tuple(value))
        if self.label_noise > 0 and self.objective == "none":
            raise ValueError("label_noise has no effect with objective='none' (no training); set it to 0")
        if self.label_noise > 0 and self.objective not in ("supervised", "supcon"):
            raise ValueError(f"label_noise={self.label_noise} has no effect: objective={self.objective!r} does not "
                             "read labels; use objective='supervised' or 'supcon', or set label_noise=0")
        if self.label_smoothing > 0 and self.objective != "supervised":
            raise ValueError("label_smoothing applies to objective='supervised' only; set it to 0")
        if self.projector != "none" and self.objective not in CONTRASTIVE:
            raise ValueError(f"projector={self.projector!r} is meaningless for objective={self.objective!r} "
                             f"(a projection head is trained only by {list(CONTRASTIVE)}); use projector='none'")
        if not (isinstance(self.temperature, (int, float)) and not isinstance(self.temperature, bool)
                and 0 < self.temperature < math.inf):
            raise ValueError(f"temperature must be a positive number, got {self.temperature!r}")
        if not (isinstance(self.init_scale, (int, float)) and not isinstance(self.init_scale, bool)
                and 0 < self.init_scale < math.inf):
            raise ValueError(f"init_scale must be a positive number, got {self.init_scale!r}")
        check_positive_int(self.views, "views", minimum=2)
        check_positive_int(self.projector_depth, "projector_depth")
        check_positive_int(self.embed_dim, "embed_dim")
        check_positive_int(self.warmup, "warmup", minimum=0)
        if not (isinstance(self.lr, (int, float)) and self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive finite number, got {self.lr!r}")
        if not (isinstance(self.weight_decay, (int, float)) and 0 <= self.weight_decay < math.inf):
            raise ValueError(f"weight_decay must be a finite number >= 0, got {self.weight_decay!r}")
        check_positive_int(self.batch_size, "batch_size")
        check_positive_int(self.steps, "steps", minimum=0)
        check_positive_int(self.seed, "seed", minimum=0)
        check_positive_int(self.checkpoints, "checkpoints", minimum=0)
        if self.model == IMPORTED:
            if self.objective != "none":
                raise ValueError(f"model={IMPORTED!r} names weights imported with RunStore.import_model, which are "
                                 f"not trained here; objective must be 'none', got {self.objective!r}")
            weights = self.model_options.get("weights")
            if not (isinstance(weights, str) and len(weights) == 64 and all(c in "0123456789abcdef" for c in weights)):
                raise ValueError(f"model={IMPORTED!r} needs model_options['weights'] = the SHA-256 (64 hex digits) "
                                 f"of the imported weights, got {weights!r}; import models with "
                                 "RunStore.import_model(source, dataset=...)")
        elif self.objective == "none" and self.steps != 0:
            object.__setattr__(self, "steps", 0)  # a random-init baseline trains for zero steps, whatever asked
        if self.objective == "none" and self.data_fraction != 1.0:
            object.__setattr__(self, "data_fraction", 1.0)  # it reads no training data: one run, whatever asked

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunConfig:
        """Build from a dict; unknown keys are an error that lists the accepted ones."""
        if isinstance(d, RunConfig):
            return d
        if not isinstance(d, Mapping):
            raise TypeError(f"config must be a dict or RunConfig, got {type(d).__name__}")
        fields = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(fields))
        if unknown:
            raise ValueError(f"unknown config field(s) {unknown}; accepted: {fields}")
        return cls(**dict(d))

    def replace(self, **changes: Any) -> RunConfig:
        """A copy with ``changes``: a plain key replaces a field; a dotted key ``"field.entry"`` (passed as
        ``**{"model_options.width": 8}``) replaces one entry of a dict-valued field and keeps the others."""
        d = self.to_dict()
        out: dict[str, Any] = {}
        for key, value in changes.items():
            name, dot, entry = key.partition(".")
            if name not in d:
                raise ValueError(f"unknown RunConfig field {name!r}; fields: {sorted(d)}")
            if dot:
                if not isinstance(d[name], dict):
                    raise ValueError(f"{key!r}: {name} is not a dict-valued field, so it has no entries")
                out.setdefault(name, dict(changes.get(name, d[name])))[entry] = value
            elif name not in out:
                out[name] = value
        return RunConfig.from_dict({**d, **out})

    def to_dict(self) -> dict[str, Any]:
        """Normalized, JSON-ready dict: every field present, options sorted, numbers canonical."""
        return _normalize(dataclasses.asdict(self))

    @property
    def imported(self) -> bool:
        """Whether this is the config of an imported run (``model == "imported"``), which cannot be trained."""
        return self.model == IMPORTED

    @property
    def id(self) -> str:
        """16 hex digits of SHA-256 over the canonical JSON of :meth:`to_dict`. For an imported run, the first 8
        hex digits of its weights hash (``model_options["weights"]``) followed by the first 8 of that SHA-256,
        so the id shows which weights it holds."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(blob.encode()).hexdigest()
        if self.imported:
            return self.model_options["weights"][:8] + digest[:8]
        return digest[:16]


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(RunConfig)}


def _normalize(x: Any) -> Any:
    """Canonical JSON-ready form: dict keys sorted, tuples → lists, numpy scalars → Python, 1.0 stays float."""
    if isinstance(x, Mapping):
        return {str(k): _normalize(x[k]) for k in sorted(x, key=str)}
    if isinstance(x, (list, tuple)):
        return [_normalize(v) for v in x]
    if isinstance(x, np.generic):
        return _normalize(x.item())
    if isinstance(x, float):
        if not math.isfinite(x):
            raise ValueError(f"config values must be finite, got {x}")
        return float(repr(x))
    if isinstance(x, (str, int, bool)) or x is None:
        return x
    raise TypeError(f"config value {x!r} of type {type(x).__name__} is not JSON-serialisable; "
                    "use str/int/float/bool/list/dict")


def checkpoint_schedule(steps: int, n: int) -> list[int]:
    """Step 0, ``n`` log-spaced steps in ``[1, steps]`` and ``steps`` itself, sorted and unique."""
    if steps <= 0:
        return [0]
    logs = np.unique(np.round(np.geomspace(1, steps, max(n, 1))).astype(int)) if n > 0 else np.array([], int)
    return sorted({0, steps, *map(int, logs)})


# ----------------------------------------------------------------------------------------------- atomic io
def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same directory, fsync, ``os.replace`` and fsync of the
    directory."""
    _atomic_write(Path(path), data, sync_dir=True)


def _atomic_write(path: Path, data: bytes, sync_dir: bool) -> None:
    """:func:`atomic_write_bytes`; ``sync_dir=False`` skips the directory fsync (a rename whose loss is harmless:
    the file is whole either way)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if sync_dir:
        _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    """fsync a directory, so a rename into it survives a power loss (no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a directory
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


def _write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, _json_bytes(obj))


def _files_digest_of(files: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a manifest's ``files`` (the manifest's own checksum, ``digest``)."""
    return hashlib.sha256(json.dumps(files, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _manifest_bytes(files: Mapping[str, Any]) -> bytes:
    files = dict(sorted(files.items()))
    return _json_bytes({"version": 1, "files": files, "digest": _files_digest_of(files)})


def _plain(entry: Mapping[str, Any]) -> dict[str, Any]:
    return {"sha256": entry["sha256"], "size": entry["size"]}


def _file_entry(path: Path) -> dict[str, Any]:
    return {"sha256": _file_sha256(path), "size": path.stat().st_size}


def _relpath(relpath: Any) -> str:
    """``relpath`` as a clean POSIX path inside a run directory (``ValueError`` for anything that leaves it)."""
    if not isinstance(relpath, (str, os.PathLike)):
        raise TypeError(f"relpath must be a path relative to the run directory, got {type(relpath).__name__}")
    parts = Path(relpath).parts
    if (not parts or Path(relpath).is_absolute() or any(x in ("..", ".") or x.startswith(".") for x in parts)
            or Path(relpath).as_posix() == MANIFEST or parts[0] == "checkpoints"):
        raise ValueError(f"relpath must name a file inside the run directory (no '..', no hidden names, not "
                         f"{MANIFEST} or checkpoints/, which the store writes itself), got {str(relpath)!r}")
    return Path(relpath).as_posix()


def _history_text(rows: list[dict[str, Any]]) -> str:
    return pd.DataFrame(rows, columns=HISTORY_COLUMNS).to_csv(index=False)


def _history_rows(data: bytes) -> list[dict[str, Any]]:
    """Rows of a stored ``history.csv`` with every value as written (floats parsed round-trip exactly)."""
    exact = {} if int(pd.__version__.split(".")[0]) >= 3 else {"float_precision": "round_trip"}  # 3: exact default
    df = pd.read_csv(io.BytesIO(data), keep_default_na=False, na_values=[""],
                     dtype={"measure": str, "split": str, "layer": str}, **exact)
    return df.reindex(columns=HISTORY_COLUMNS).to_dict("records")


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _entry(data: bytes) -> dict[str, Any]:
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def _bytes_problem(data: bytes | None, entry: Mapping[str, Any] | None) -> str | None:
    """What is wrong with a file's content ``data`` (None: absent) given its manifest ``entry`` (None: not listed,
    so unverified), or None. An entry being replaced lists the accepted older versions in ``previous`` (None: the
    file may be absent)."""
    if entry is None:
        return None
    previous = entry.get("previous") or []
    if data is None:
        return None if None in previous else "missing (deleted), but listed in the manifest"
    accepted = [entry, *(e for e in previous if e is not None)]
    if not any(len(data) == e.get("size") for e in accepted):
        return (f"{len(data)} bytes where the manifest says {entry.get('size')} (truncated, or written around the "
                "run store)")
    digest = hashlib.sha256(data).hexdigest()
    if not any(digest == e.get("sha256") for e in accepted):
        return "content does not match its SHA-256 in the manifest (garbled, or written around the run store)"
    return None


def _path_problem(path: Path, entry: Mapping[str, Any] | None) -> str | None:
    """:func:`_bytes_problem` of the file at ``path`` (sizes compared before anything is hashed)."""
    if entry is None:
        return None
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return _bytes_problem(None, entry)
    previous = [e for e in entry.get("previous") or [] if e is not None]
    if not any(size == e.get("size") for e in [entry, *previous]):
        return f"{size} bytes where the manifest says {entry.get('size')} (truncated, or written around the run store)"
    digest = _file_sha256(path)
    if not any(digest == e.get("sha256") for e in [entry, *previous]):
        return "content does not match its SHA-256 in the manifest (garbled, or written around the run store)"
    return None


def _seal_checkpoint(directory: Path, step: int) -> dict[str, Any]:
    """fsync every file of a checkpoint being assembled in ``directory``, write its ``manifest.json`` last
    (``{"step", "files": {name: {"sha256", "size"}}}``), fsync the directory; return the manifest's own entry."""
    files = {}
    for p in sorted(directory.iterdir()):
        if p.is_file() and not p.name.startswith(".") and p.name != MANIFEST:
            h, size = hashlib.sha256(), 0
            with open(p, "rb") as f:
                for chunk in iter(lambda f=f: f.read(1 << 20), b""):
                    h.update(chunk)
                    size += len(chunk)
                os.fsync(f.fileno())
            files[p.name] = {"sha256": h.hexdigest(), "size": size}
    data = (json.dumps({"step": int(step), "files": files}, indent=1, sort_keys=True) + "\n").encode()
    with open(directory / MANIFEST, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(directory)
    return _entry(data)


#: checkpoint verification results, keyed by the stat of every file of the checkpoint and its manifest entry
_VERIFIED: dict[tuple, str | None] = {}


def _is_leftover(p: Path) -> bool:
    """A temporary file or directory of an interrupted write: ``.<name>.<random>.tmp`` (atomic writes),
    ``.tmp-*`` / ``.old-*`` (checkpoints being written / replaced)."""
    n = p.name
    return n.startswith(".") and (n.endswith(".tmp") or n.startswith((".tmp-", ".old-")))


def _files_digest(directory: Path) -> str:
    """SHA-256 over the lines ``"<name>\t<SHA-256 of the file>\n"`` of the regular files directly in
    ``directory`` (names not starting with ``.``, the checkpoint's own ``manifest.json`` left out), in sorted name
    order: the identity of one checkpoint."""
    lines = [f"{p.name}\t{_file_sha256(p)}\n" for p in sorted(directory.iterdir())
             if p.is_file() and not p.name.startswith(".") and p.name != MANIFEST]
    return hashlib.sha256("".join(lines).encode()).hexdigest()


# ----------------------------------------------------------------------------------------------- run
class Run:
    """A handle on one run directory. Cheap to create; reads files on demand."""

    def __init__(self, store: RunStore, run_id: str):
        self.store = store
        self.id = run_id
        self.path = store.root / "runs" / run_id

    def __repr__(self) -> str:
        config, problem = self._config()
        if problem is not None:
            return f"Run({self.id!r}, state='broken': config.json {problem})"
        return f"Run({self.id!r}, name={self.name!r}, state={self.status['state']!r}, steps={config.steps})"

    @property
    def config(self) -> RunConfig:
        """The run's config. ``ValueError`` naming ``config.json`` when it is missing, unreadable or damaged."""
        config, problem = self._config()
        if problem is not None:
            raise ValueError(f"{self.path / 'config.json'}: {problem}; this run cannot be read; `workbench runs "
                             f"repair` moves it to {self.store.root / 'quarantine'}")
        return config

    def _config(self) -> tuple[RunConfig | None, str | None]:
        data, problem = self._read_verified("config.json")
        if problem is None and data is None:
            problem = "missing"
        if problem is not None:
            return None, problem
        try:
            return RunConfig.from_dict(json.loads(data)), None
        except (ValueError, TypeError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            return None, f"unreadable ({type(err).__name__}: {err})"

    @property
    def meta(self) -> dict[str, Any]:
        """Display name, created time, workbench version; ``{}`` with a :class:`StoreWarning` when damaged."""
        meta, problem = self._json_file("meta.json")
        if problem is not None:
            warnings.warn(f"{self.path / 'meta.json'}: {problem}; read as {{}} (display name and created time lost; "
                          "`workbench runs repair` rewrites it)", StoreWarning, stacklevel=2)
            return {}
        return meta or {}

    @property
    def name(self) -> str:
        return self.meta.get("name") or self.id

    @property
    def status(self) -> dict[str, Any]:
        """``{"state", "step", "error", "updated"}`` (+ ``"pid"``, ``"host"`` while running).

        A run left ``"running"`` by a process that died (killed, crashed, machine rebooted) is marked
        ``"interrupted"`` here — it resumes from its last checkpoint on the next :func:`~workbench.train.train`.
        The owner is alive exactly while it holds the run's lock, so an unheld lock means the owner is gone.
        A damaged ``status.json`` is recomputed from the checkpoints (``"interrupted"``, or ``"created"`` without
        checkpoints) with a :class:`StoreWarning` naming it, and rewritten when nobody trains the run.
        """
        return self._status(fix=True)

    def _status(self, fix: bool) -> dict[str, Any]:
        """The status; ``fix``: rewrite a damaged status or a dead owner's ``"running"`` (when the lock is free)."""
        p = self.path / "status.json"
        status, problem = self._json_file("status.json")
        if problem is None and status is not None and not (
                status.get("state") in _STATES and isinstance(status.get("step"), int)):
            problem = f"holds no valid state ({status!r:.80})"
        if problem is not None:
            with self._try_lock() as owned:
                steps = self.checkpoints()
                if not owned:  # a live owner rewrites it at its next checkpoint
                    return {"state": "running", "step": max(steps, default=-1), "error": None, "updated": _now()}
                state = "interrupted" if steps else "created"
                message = f"{p}: {problem}; state recomputed from the checkpoints: {state!r}"
                warnings.warn(message, StoreWarning, stacklevel=3)
                if fix:
                    self.set_status(state, max(steps, default=-1), error=message)
                return {"state": state, "step": max(steps, default=-1), "error": message, "updated": _now()}
        if status is None:
            return {"state": "created", "step": -1, "error": None}
        if status["state"] == "running":
            with self._try_lock() as owned:
                if owned:  # nobody trains it: re-read under the lock (the owner may have just finished)
                    status = self._json_file("status.json")[0] or status
                    if status.get("state") == "running":
                        who = f"pid {status.get('pid', '?')} on {status.get('host', '?')}"
                        error = f"the training process ({who}) ended without finishing"
                        status = {"state": "interrupted", "step": max(self.checkpoints(), default=-1), "error": error,
                                  "updated": _now()}
                        if fix:
                            self.set_status(status["state"], status["step"], error=error)
        return status

    @property
    def done(self) -> bool:
        return self.status["state"] == "done"

    def set_status(self, state: str, step: int, error: str | None = None) -> None:
        status = {"state": state, "step": int(step), "error": error, "updated": _now()}
        if state == "running":
            status |= {"pid": os.getpid(), "host": socket.gethostname()}
        self.write_file("status.json", _json_bytes(status))

    # --- verified files
    def write_file(self, relpath: str, data: bytes) -> Path:
        """Write ``data`` to ``relpath`` (relative to the run directory, e.g. ``"artifacts/x.npz"``) and record it in
        the run's manifest: the new SHA-256 and size are listed (the old ones kept as accepted ``previous``
        versions) under ``.manifest.lock``, the file is written atomically (temp file, fsync, ``os.replace``, fsync
        of the directory), then the entry is settled. Every read verifies the file against it. Returns the path."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be bytes, got {type(data).__name__}; encode text with .encode()")
        rel = _relpath(relpath)
        path, data = self.path / rel, bytes(data)
        self._update_manifest(rel, _entry(data), commit=lambda: atomic_write_bytes(path, data))
        return path

    def _read_verified(self, relpath: str) -> tuple[bytes | None, str | None]:
        """``(content or None when absent, problem or None)`` of a tracked file, verified against the manifest
        (read again when a concurrent writer replaced it between the two reads)."""
        path = self.path / relpath
        data, problem = None, None
        for _ in range(3):
            files = self._manifest_files()
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                data = None
            except OSError as err:  # e.g. a directory where the file should be
                return None, f"unreadable ({type(err).__name__}: {err})"
            problem = _bytes_problem(data, None if files is None else files.get(relpath))
            if problem is None:
                return data, None
        return data, problem

    def _json_file(self, relpath: str) -> tuple[dict[str, Any] | None, str | None]:
        data, problem = self._read_verified(relpath)
        if problem is not None or data is None:
            return None, problem
        try:
            obj = json.loads(data)
        except ValueError as err:
            return None, f"unreadable ({type(err).__name__}: {err})"
        if not isinstance(obj, dict):
            return None, f"holds a JSON {type(obj).__name__}, not an object"
        return obj, None

    def _manifest(self) -> tuple[dict[str, Any] | None, str | None]:
        """``(files or None when there is no manifest, problem or None)``."""
        p = self.path / MANIFEST
        try:
            data = p.read_bytes()
        except FileNotFoundError:
            return None, None
        try:
            manifest = json.loads(data)
            files = manifest["files"]
            if not (isinstance(files, dict) and all(isinstance(e, dict) and isinstance(e.get("sha256"), str)
                                                    and isinstance(e.get("size"), int) for e in files.values())):
                return None, "unreadable (not a run manifest)"
        except (ValueError, KeyError, TypeError) as err:
            return None, f"unreadable ({type(err).__name__}: {err})"
        if manifest.get("digest") != _files_digest_of(files):
            return None, "does not match its own digest (garbled)"
        return files, None

    def _manifest_files(self) -> dict[str, Any] | None:
        files, problem = self._manifest()
        if problem is not None:
            warnings.warn(f"{self.path / MANIFEST}: {problem}; the files of run {self.id} are read unverified "
                          "(`workbench runs repair` rebuilds it)", StoreWarning, stacklevel=3)
        return files

    @contextlib.contextmanager
    def _manifest_lock(self) -> Iterator[None]:
        self.path.mkdir(parents=True, exist_ok=True)
        with _path_lock(self.path / ".manifest.lock"):
            yield

    def _update_manifest(self, relpath: str, entry: dict[str, Any] | None,
                         commit: Callable[[], None] | None = None) -> None:
        """Set (``entry``) or drop (None) the manifest entry of ``relpath``. With ``commit`` (the write, rename or
        removal of the file itself), the entry is first listed with the accepted old versions as ``previous``, then
        ``commit()`` runs, then the entry is settled: a kill at any point leaves a file the manifest accepts."""
        with self._manifest_lock():
            files, problem = self._manifest()
            if problem is not None:
                warnings.warn(f"{self.path / MANIFEST}: {problem}; rebuilt from the files now present",
                              StoreWarning, stacklevel=3)
            files = dict(self._scan_manifest() if problem is not None else files or {})
            if commit is not None:
                old = files.get(relpath)
                if old is not None:
                    accepted = [_plain(old), *(old.get("previous") or [])]
                else:  # not listed: what is there now (a file of an older version), or nothing
                    path = self.path / relpath
                    accepted = [_file_entry(path) if path.is_file() else None]
                if entry is None:
                    accepted.append(None)
                pending = entry if entry is not None else (None if old is None else _plain(old))
                if pending is not None:
                    unique = []
                    for e in accepted:
                        if e not in unique and e != _plain(pending):
                            unique.append(e)
                    files[relpath] = {**_plain(pending), "previous": unique}
                    self._write_manifest(files)
                commit()
            if entry is None:
                files.pop(relpath, None)
            else:
                files[relpath] = _plain(entry)
            # settling needs no directory fsync: if the rename is lost, the entry above (accepting both) stays
            self._write_manifest(files, sync_dir=commit is None)

    def _write_manifest(self, files: Mapping[str, Any], sync_dir: bool = True) -> None:
        _atomic_write(self.path / MANIFEST, _manifest_bytes(files), sync_dir)

    def _scan_manifest(self) -> dict[str, Any]:
        """Manifest entries of the tracked files present now (what :meth:`RunStore.repair` trusts)."""
        files = {}
        for name in TRACKED:
            if (self.path / name).is_file():
                files[name] = _file_entry(self.path / name)
        if (self.path / "artifacts").is_dir():
            for p in sorted((self.path / "artifacts").iterdir()):
                if p.is_file() and not p.name.startswith("."):
                    files[f"artifacts/{p.name}"] = _file_entry(p)
        for step in self.checkpoints():
            p = self.checkpoint_dir(step) / MANIFEST
            if p.is_file():
                files[f"checkpoints/{step:08d}/{MANIFEST}"] = _file_entry(p)
        return files

    # --- checkpoints
    def checkpoint_dir(self, step: int) -> Path:
        return self.path / "checkpoints" / f"{int(step):08d}"

    def checkpoints(self) -> list[int]:
        """Steps with a checkpoint (a directory holding its manifest, model.safetensors, or the config.json of an
        imported Hugging Face model), ascending. Whether one is intact: :meth:`checkpoint_problem`."""
        root = self.path / "checkpoints"
        if not root.exists():
            return []
        return sorted(int(p.name) for p in root.iterdir() if p.is_dir() and p.name.isdigit()
                      and any((p / f).exists() for f in (MANIFEST, "model.safetensors", "config.json")))

    def checkpoint_problem(self, step: int, require: tuple[str, ...] = ()) -> str | None:
        """What is wrong with checkpoint ``step`` — a message that starts with the path of the bad file — or None
        when it is intact: its ``manifest.json`` is present (and matches the run's manifest) and every file it lists
        has its size and SHA-256. A checkpoint of an older version (no manifest, not listed by the run) is not
        verified. ``require``: file names that must be part of it (e.g. ``("trainer.pt",)`` to resume training).
        Results are cached per process while no file of the checkpoint changes."""
        d = self.checkpoint_dir(step)
        files = self._manifest_files()
        listed = None if files is None else files.get(f"checkpoints/{int(step):08d}/{MANIFEST}")
        try:
            stats = tuple((p.name, st.st_size, st.st_mtime_ns, st.st_ino)
                          for p in sorted(d.iterdir()) for st in [p.stat()])
        except FileNotFoundError:
            return f"{d}: missing"
        key = (str(d), stats, json.dumps(listed, sort_keys=True), tuple(require))
        if key not in _VERIFIED:
            if len(_VERIFIED) > 4096:
                _VERIFIED.clear()
            _VERIFIED[key] = self._checkpoint_problem(d, int(step), listed, tuple(require))
        return _VERIFIED[key]

    def _checkpoint_problem(self, d: Path, step: int, listed: Mapping[str, Any] | None,
                            require: tuple[str, ...]) -> str | None:
        mpath = d / MANIFEST
        try:
            data = mpath.read_bytes()
        except FileNotFoundError:
            data = None
        if data is None:
            if listed is not None and None not in (listed.get("previous") or []):
                return f"{mpath}: missing (deleted), but listed in {self.path / MANIFEST}"
            missing = [name for name in require if not (d / name).is_file()]
            return f"{d / missing[0]}: missing" if missing else None  # an older version's checkpoint: unverified
        problem = _bytes_problem(data, listed)
        if problem is not None:
            return f"{mpath}: {problem}"
        try:
            manifest = json.loads(data)
            files = manifest["files"]
            ok = int(manifest["step"]) == step and isinstance(files, dict) and all(
                isinstance(e, dict) and "/" not in n and not n.startswith(".") for n, e in files.items())
        except (ValueError, KeyError, TypeError):
            ok = False
        if not ok:
            return f"{mpath}: unreadable (not the manifest of checkpoint {step})"
        for name in require:
            if name not in files:
                return f"{d / name}: missing (the checkpoint's manifest does not list it)"
        for name, entry in sorted(files.items()):
            problem = _path_problem(d / name, entry)
            if problem is not None:
                return f"{d / name}: {problem}"
        return None

    @contextlib.contextmanager
    def checkpoint_writer(self, step: int, history: list[dict[str, Any]] | None = None) -> Iterator[Path]:
        """Assemble checkpoint ``step`` in a temporary directory (yielded: write the model and trainer files into
        it), then seal it: ``history.csv`` (the snapshot ``history``, if given) is added, every file fsync-ed,
        ``manifest.json`` written last, the directory fsync-ed and renamed into place (an existing checkpoint of
        that step is replaced), the run's manifest updated and ``checkpoints/`` fsync-ed. An exception (or a
        kill) inside leaves the previous state; the temporary directory is removed (by :meth:`clean_leftovers`
        after a kill)."""
        final = self.checkpoint_dir(step)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".tmp-{int(step):08d}-"))
        old = None
        try:
            yield tmp
            if history is not None:
                (tmp / "history.csv").write_text(_history_text(history))
            entry = _seal_checkpoint(tmp, step)
            if final.exists():
                old = final.with_name(f".old-{int(step):08d}-{os.getpid()}-{id(tmp):x}")
                os.replace(final, old)
            self._update_manifest(f"checkpoints/{int(step):08d}/{MANIFEST}", entry,
                                  commit=lambda: os.replace(tmp, final))
            _fsync_dir(final.parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            if old is not None and not final.exists():
                os.replace(old, final)
                old = None
            raise
        finally:
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)

    def move_checkpoint_aside(self, step: int) -> Path:
        """Move checkpoint ``step`` to ``checkpoints/.corrupt-<step>-<n>`` (kept for inspection, no longer a
        checkpoint) and drop it from the run's manifest; returns the new path. Hold :meth:`lock` when calling."""
        d = self.checkpoint_dir(step)
        n = 0
        while (aside := d.with_name(f".corrupt-{int(step):08d}-{n}")).exists():
            n += 1
        self._update_manifest(f"checkpoints/{int(step):08d}/{MANIFEST}", None, commit=lambda: os.replace(d, aside))
        _fsync_dir(d.parent)
        return aside

    def remove_checkpoint(self, step: int) -> None:
        """Delete checkpoint ``step``: dropped from the run's manifest as it is renamed out of ``checkpoints/``, then
        removed (a kill in between leaves a hidden ``.old-*`` folder that :meth:`clean_leftovers` deletes). Used
        for the resume point a cancelled training leaves between scheduled checkpoints, once a later scheduled one
        exists. Hold :meth:`lock` when calling."""
        d = self.checkpoint_dir(step)
        gone = d.with_name(f".old-{int(step):08d}-{os.getpid()}-{id(d):x}-removed")
        self._update_manifest(f"checkpoints/{int(step):08d}/{MANIFEST}", None, commit=lambda: os.replace(d, gone))
        _fsync_dir(d.parent)
        shutil.rmtree(gone, ignore_errors=True)

    def checkpoint_history(self, step: int) -> list[dict[str, Any]] | None:
        """The history snapshot stored in checkpoint ``step`` (rows with the keys of :data:`HISTORY_COLUMNS`,
        values exactly as written), or None for a checkpoint without one (written by an older version)."""
        p = self.checkpoint_dir(step) / "history.csv"
        if not p.is_file():
            return None
        return _history_rows(p.read_bytes())

    def clean_leftovers(self, lock: bool = False) -> list[Path]:
        """Remove the temporary files and directories interrupted writes left in this run (``.<name>.*.tmp``,
        ``checkpoints/.tmp-*``, ``checkpoints/.old-*``); returns them. Call it holding :meth:`lock` (a live
        trainer's temporary checkpoint must survive), or with ``lock=True``: then the run lock is taken here if it
        is free, and nothing is removed if it is not. Atomic writes in flight are safe either way (they hold the
        manifest lock, taken here too)."""
        if lock:
            with self._try_lock() as owned:
                return self.clean_leftovers() if owned else []
        removed = []
        with self._manifest_lock():
            for folder in (self.path, self.path / "artifacts", self.path / "checkpoints"):
                if not folder.is_dir():
                    continue
                for p in sorted(folder.iterdir()):
                    if _is_leftover(p):
                        if p.is_dir():
                            shutil.rmtree(p, ignore_errors=True)
                        else:
                            with contextlib.suppress(FileNotFoundError):
                                p.unlink()
                        removed.append(p)
        if removed:
            _fsync_dir(self.path)
        return removed

    def resolve_step(self, step: int | str | None) -> int:
        """The checkpoint step ``step`` names: an int that is a checkpoint, or None / "final" for the last."""
        steps = self.checkpoints()
        if not steps:
            raise FileNotFoundError(f"run {self.id} has no checkpoints yet (state: {self.status['state']})")
        if step is None or step == "final":
            return steps[-1]
        if step not in steps:
            raise ValueError(f"step={step!r} is not a checkpoint of run {self.id}; available steps: {steps}")
        return int(step)

    def _intact(self, step: int | str | None) -> Path:
        """The directory of checkpoint ``step`` after verifying it (``ValueError`` naming the bad file)."""
        step = self.resolve_step(step)
        problem = self.checkpoint_problem(step)
        if problem is not None:
            raise ValueError(f"checkpoint {step} of run {self.id} is corrupt: {problem}; `workbench runs repair` moves "
                             "it aside (train() then recomputes it)")
        return self.checkpoint_dir(step)

    def load_model(self, step: int | str | None = None, device: str = "cpu", *, head: bool = False):
        """The model at checkpoint ``step`` (default: the last one), in eval mode, after verifying the checkpoint
        (``ValueError`` naming a corrupt file). An imported Hugging Face model is loaded with the
        ``trust_remote_code`` it was imported with.

        ``head=True``: the backbone and the objective's trained head (projector of simclr/supcon/barlow/vicreg,
        DINO head of distill) as one :class:`~workbench.models.heads.WithHead`, ``forward(x) =
        head(representation(x))``, whose probe points continue past the backbone into the head (``fc2``, …,
        ``projector.fc1``, ``projector``); other objectives raise ``ValueError``."""
        from .models import load as load_model

        if not isinstance(head, bool):
            raise TypeError(f"head must be True or False (load the objective's head with the backbone), got {head!r}")
        ckpt = self._intact(step)
        trust = bool(self.meta.get("import", {}).get("trust_remote_code", False))
        model = load_model(ckpt, device=device, trust_remote_code=trust)
        if head:
            model = self._with_head(model, ckpt, device)
        model.eval()
        return model

    def _with_head(self, model: Any, ckpt: Path, device: str) -> Any:
        """``model`` with the objective's head of checkpoint ``ckpt`` (:meth:`load_model` with ``head=True``)."""
        from safetensors.torch import load_file

        from .models.heads import HEADS, WithHead, head_from_state

        cfg = self.config
        if cfg.objective not in HEADS:
            raise ValueError(f"head=True: run {self.name!r} was trained with objective={cfg.objective!r}, which has no "
                             f"projection head (heads: {', '.join(HEADS)}); load it with head=False")
        path = ckpt / "objective.safetensors"
        state = load_file(str(path)) if path.exists() else None
        name, module = head_from_state(cfg.objective, state, projector=cfg.projector,
                                       projector_depth=cfg.projector_depth, embed_dim=cfg.embed_dim)
        return WithHead(model, module, name).to(device)

    def weights_hash(self, step: int | str | None = None) -> str:
        """SHA-256 of the checkpoint file (weights identity without loading them). An imported Hugging Face
        checkpoint without a single ``model.safetensors`` (``.bin`` or sharded weights) gives the digest of its
        files (:meth:`RunStore.import_model`)."""
        ckpt = self._intact(step)
        if not (ckpt / "model.safetensors").exists():
            return _files_digest(ckpt)
        return _file_sha256(ckpt / "model.safetensors")

    # --- history
    def history(self) -> pd.DataFrame:
        """Training history in the results schema (:mod:`workbench.results`): ``run`` (display name), ``step``,
        ``layer``, ``layer_index``, ``measure``, ``split``, ``value`` (``ci_low``/``ci_high`` NaN).

        ``layer`` and ``layer_index`` are NaN for model-level measures (the loss, held-out accuracy); per-layer
        recorders name the probe point and its position in the model, and the model's representation is the
        layer ``"embed"`` (``layer_index`` NaN). Histories stored by older versions (a ``metric`` column, ""
        for no layer, no ``layer_index``) are read alike; their ``layer_index`` is the order in which the
        recorder wrote the layers of each measure.

        A damaged ``history.csv`` (deleted, truncated, garbled) is rebuilt from the snapshot of the last intact
        checkpoint, with a :class:`StoreWarning` naming it (and rewritten when nobody trains the run).
        """
        p = self.path / "history.csv"
        data, problem = self._read_verified("history.csv")
        if problem is None and data is not None:
            try:
                return tidy(_read_stored(io.BytesIO(data)), run=self.name)
            except (ValueError, KeyError, TypeError) as err:  # pandas' parser errors are ValueErrors
                problem = f"unreadable ({type(err).__name__}: {err})"
        if problem is None:
            return tidy([], run=self.name)
        rows, step = self._snapshot()
        if rows is None:
            warnings.warn(f"{p}: {problem}; no intact checkpoint holds a history snapshot, so the history reads "
                          "empty", StoreWarning, stacklevel=2)
            return tidy([], run=self.name)
        with self._try_lock() as owned:
            if owned:
                self.write_history(rows)
        warnings.warn(f"{p}: {problem}; rebuilt from the snapshot in checkpoint {step} "
                      f"({self.checkpoint_dir(step) / 'history.csv'})", StoreWarning, stacklevel=2)
        return tidy(_read_stored(io.BytesIO(_history_text(rows).encode())), run=self.name)

    def _snapshot(self) -> tuple[list[dict[str, Any]] | None, int | None]:
        """The history snapshot of the last intact checkpoint that holds one, and its step."""
        for step in reversed(self.checkpoints()):
            if (self.checkpoint_dir(step) / "history.csv").is_file() and self.checkpoint_problem(step) is None:
                return self.checkpoint_history(step), step
        return None, None

    def history_problem(self) -> str | None:
        """What is wrong with ``history.csv`` (a message naming it), or None."""
        data, problem = self._read_verified("history.csv")
        if problem is None and data is not None:
            try:
                _read_stored(io.BytesIO(data))
            except (ValueError, KeyError, TypeError) as err:
                problem = f"unreadable ({type(err).__name__}: {err})"
        return None if problem is None else f"{self.path / 'history.csv'}: {problem}"

    def downstream(self) -> pd.DataFrame:
        """Every downstream evaluation stored with this run (:func:`workbench.train.evaluate`), in the results
        schema with the extra columns ``task``, ``method``, ``label_fraction``, ``label_count``. Tables stored by
        older versions (a ``metric`` column, no ``layer_index``: NaN) are read alike. A damaged ``downstream.csv``
        raises ``ValueError`` naming it."""
        p = self.path / "downstream.csv"
        data, problem = self._read_verified("downstream.csv")
        if problem is None and data is None:
            return tidy([], run=self.name).assign(task=pd.Series(dtype=object), method=pd.Series(dtype=object),
                                                  label_fraction=pd.Series(dtype=float),
                                                  label_count=pd.Series(dtype=float))
        if problem is None:
            try:
                return tidy(_read_stored(io.BytesIO(data), dtype={"task": str, "method": str}, order_layers=False),
                            run=self.name)
            except (ValueError, KeyError, TypeError) as err:
                problem = f"unreadable ({type(err).__name__}: {err})"
        raise ValueError(f"{p}: {problem}; `workbench runs repair` moves it aside, then re-run the evaluations "
                         "(workbench.train.evaluate)")

    def write_history(self, rows: list[dict[str, Any]]) -> None:
        """Store ``rows`` (dicts with the keys of :data:`HISTORY_COLUMNS`; a missing key is empty) atomically."""
        self.write_file("history.csv", _history_text(rows).encode())

    # --- artifacts
    def save_artifact(self, name: str, **arrays: np.ndarray) -> None:
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        self.write_file(f"artifacts/{name}.npz", buf.getvalue())

    def load_artifact(self, name: str) -> dict[str, np.ndarray]:
        p = self.path / "artifacts" / f"{name}.npz"
        data, problem = self._read_verified(f"artifacts/{name}.npz")
        if problem is None and data is None:
            raise FileNotFoundError(f"run {self.id} has no artifact {name!r}")
        if problem is None:
            try:
                with np.load(io.BytesIO(data), allow_pickle=False) as z:
                    return {k: z[k] for k in z.files}
            except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as err:
                problem = f"unreadable ({type(err).__name__}: {err})"
        raise ValueError(f"{p}: {problem}; `workbench runs repair` moves it aside")

    # --- verification and repair (RunStore.check / RunStore.repair)
    def _tracked_names(self, files: Mapping[str, Any] | None) -> list[str]:
        names = set(TRACKED) | {r for r in files or {} if r.startswith("artifacts/")}
        if (self.path / "artifacts").is_dir():
            names |= {f"artifacts/{p.name}" for p in (self.path / "artifacts").iterdir()
                      if p.is_file() and not p.name.startswith(".")}
        return sorted(names)

    def _file_problem(self, rel: str, files: Mapping[str, Any] | None) -> str | None:
        """What is wrong with the tracked file ``rel`` (checksum against ``files``, then whether it parses)."""
        path = self.path / rel
        problem = _path_problem(path, None if files is None else files.get(rel))
        if problem is not None or not path.is_file():
            return problem
        try:
            if rel == "config.json":
                RunConfig.from_dict(json.loads(path.read_bytes()))
            elif rel.endswith(".json"):
                if not isinstance(json.loads(path.read_bytes()), dict):
                    return "holds no JSON object"
            elif rel.endswith(".csv"):
                _read_stored(path, order_layers=False)
            elif rel.endswith(".npz"):
                with np.load(path, allow_pickle=False) as z:
                    for k in z.files:
                        z[k]
        except (ValueError, TypeError, KeyError, OSError, EOFError, zipfile.BadZipFile) as err:
            return f"unreadable ({type(err).__name__}: {err})"
        if files is not None and rel not in files:
            return "not in the manifest, so not verified (`workbench runs repair` adds it)"
        return None

    def _problems(self) -> list[tuple[Path, str]]:
        """Every problem of this run as ``(path, what is wrong)``; changes nothing."""
        out: list[tuple[Path, str]] = []
        files, problem = self._manifest()
        if problem is not None:
            out.append((self.path / MANIFEST, f"{problem}; nothing else of this run can be verified"))
        elif files is None:
            out.append((self.path / MANIFEST, "missing: a run of an older version, not verified (`workbench runs "
                                              "repair` adds the manifests)"))
        for rel in self._tracked_names(files):
            problem = self._file_problem(rel, files)
            if problem is not None:
                out.append((self.path / rel, problem))
        steps = self.checkpoints()
        for step in steps:
            problem = self.checkpoint_problem(step)
            if problem is not None:
                path, _, what = problem.partition(": ")
                out.append((Path(path), what))
            elif not (self.checkpoint_dir(step) / MANIFEST).exists():
                out.append((self.checkpoint_dir(step) / MANIFEST, "missing: a checkpoint of an older version, not "
                                                                  "verified (`workbench runs repair` adds it)"))
        for rel in sorted(files or {}):
            parts = rel.split("/")
            if parts[0] == "checkpoints" and len(parts) == 3 and parts[1].isdigit() and int(parts[1]) not in steps:
                out.append((self.path / "checkpoints" / parts[1], "missing: a checkpoint the manifest lists"))
        for folder in (self.path, self.path / "artifacts", self.path / "checkpoints"):
            if folder.is_dir():
                out += [(p, "temporary file of an interrupted write (`workbench runs repair` removes it)")
                        for p in sorted(folder.iterdir()) if _is_leftover(p)]
        status = self._json_file("status.json")[0]
        if status is not None and status.get("state") == "running":
            with self._try_lock() as owned:
                if owned:
                    out.append((self.path / "status.json", f"state 'running', but its process (pid "
                                                           f"{status.get('pid', '?')}) is gone"))
        return out

    def _aside(self, rel: str) -> Path:
        """Move the tracked file ``rel`` to ``.corrupt-<name>-<n>`` next to it and drop its manifest entry."""
        path = self.path / rel
        n = 0
        while (aside := path.with_name(f".corrupt-{path.name}-{n}")).exists():
            n += 1
        self._update_manifest(rel, None, commit=lambda: os.replace(path, aside) if path.exists() else None)
        return aside

    def _repair(self) -> list[tuple[Path, str]]:
        """:meth:`RunStore.repair` of this run, the run lock held by the caller; returns ``(path, action)``."""
        out: list[tuple[Path, str]] = [(p, "removed: temporary file of an interrupted write")
                                       for p in self.clean_leftovers()]
        files, manifest_problem = self._manifest()
        if files is None:  # missing or unreadable: trust the files as they are now (after the fixes below)
            self._write_manifest(self._scan_manifest())
            out.append((self.path / MANIFEST, "rebuilt from the files present" if manifest_problem
                        else "added (a run of an older version)"))
        for step in self.checkpoints():
            problem = self.checkpoint_problem(step)
            d = self.checkpoint_dir(step)
            if problem is not None:
                out.append((self.move_checkpoint_aside(step), f"checkpoint {step} moved aside: {problem}"))
            elif not (d / MANIFEST).exists():
                self._update_manifest(f"checkpoints/{step:08d}/{MANIFEST}", _seal_checkpoint(d, step))
                out.append((d / MANIFEST, "added (a checkpoint of an older version, as it is now)"))
        files = self._manifest()[0] or {}
        for rel in self._tracked_names(files):
            problem = self._file_problem(rel, files)
            if problem is None:
                continue
            path = self.path / rel
            if problem.startswith("not in the manifest"):
                self._update_manifest(rel, _file_entry(path))
                out.append((path, "added to the manifest (as it is now)"))
            elif rel == "history.csv":
                rows, step = self._snapshot()
                if rows is not None:
                    self.write_history(rows)
                    out.append((path, f"rebuilt from the snapshot in checkpoint {step} ({problem})"))
                else:
                    out.append((self._aside(rel), f"moved aside, no checkpoint holds a snapshot ({problem})"))
            elif rel == "meta.json":
                from .version import __version__

                self.write_file("meta.json", _json_bytes({"created": _now(), "workbench_version": __version__,
                                                          "note": f"rewritten by repair: meta.json {problem}"}))
                out.append((path, f"rewritten ({problem}; display name lost)"))
            elif rel == "status.json":
                pass  # below
            elif path.exists() or not problem.startswith("missing"):
                out.append((self._aside(rel), f"moved aside ({problem})"))
            else:
                self._update_manifest(rel, None)
                out.append((path, f"dropped from the manifest ({problem})"))
        status, problem = self._json_file("status.json")
        if problem is None and status is not None and status.get("state") not in _STATES:
            problem = "holds no valid state"
        steps, config = self.checkpoints(), self.config
        state = None if status is None else status.get("state")
        if problem is not None or state == "running" or (state == "done" and config.steps not in steps):
            why = problem or ("its process is gone" if state == "running" else "its final checkpoint is missing")
            new = "failed" if config.imported else "interrupted" if steps else "created"
            self.set_status(new, max(steps, default=-1), error=f"marked {new} by repair: {why}")
            out.append((self.path / "status.json", f"state {new!r} ({why})"))
        return out

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive lock on this run between threads, processes and machines sharing the store (blocks until free;
        a lock whose owner died is taken over: :mod:`workbench._locks`). Not re-entrant."""
        self.path.mkdir(parents=True, exist_ok=True)
        with _path_lock(self.path / ".lock"):
            yield

    @contextlib.contextmanager
    def _try_lock(self) -> Iterator[bool]:
        """The lock if it is free right now (yields True), else yields False without waiting. A lock held by this
        process — another thread, or this one (the trainer reading its run's status) — is not free."""
        with _path_lock(self.path / ".lock", wait=False) as owned:
            yield owned


@contextlib.contextmanager
def _path_lock(path: Path, *, wait: bool = True, held: Path | None = None) -> Iterator[bool]:
    """The store lock named ``path`` for the block; yields whether it is held. With ``wait=False`` a lock held
    elsewhere (another machine, process or thread, or this thread) yields False at once.

    Exclusion comes from the lock file ``held`` (default ``<path>.held``; :class:`workbench._locks.FileLock`), which
    holds on NFS. Inside it, ``fcntl.flock`` on ``path`` (created if missing, as by older versions) is taken too, so
    processes of older versions on the same machine are still excluded; where the file system refuses ``flock``
    (``ENOLCK`` on an NFS mount without a lock manager) it is skipped: the lock file alone excludes."""
    lock = FileLock(held if held is not None else path.with_name(path.name + ".held"))
    if not lock.acquire(blocking=wait):
        yield False
        return
    f = None
    try:
        f = open(path, "a+")  # noqa: SIM115 — closed below
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:  # an older version's process holds it
        f.close()
        lock.release()
        yield False
        return
    except OSError:  # flock refused by the file system (or the file cannot be opened): the lock file excludes
        if f is not None:
            f.close()
        f = None
    except BaseException:
        if f is not None:
            f.close()
        lock.release()
        raise
    try:
        yield True
    finally:
        if f is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)
            f.close()
        lock.release()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


_STATES = ("created", "running", "done", "failed", "interrupted")


def _read_stored(path: Path | io.BytesIO, dtype: Mapping[str, Any] | None = None, *,
                 order_layers: bool = True) -> pd.DataFrame:
    """A stored history / downstream table, with the layout of older versions brought to today's: the column
    ``metric`` is ``measure``, an empty ``layer`` is NaN, and a missing ``layer_index`` is, with
    ``order_layers``, each layer's order of first appearance within its measure (the order the recorders write
    the layers in), else NaN (unknown)."""
    df = pd.read_csv(path, keep_default_na=False, na_values=[""],
                     dtype={"split": str, "layer": str, "measure": str, "metric": str, **(dtype or {})})
    df = df.rename(columns={"metric": "measure"})
    if "layer" not in df:
        df["layer"] = np.nan
    df["layer"] = df["layer"].replace("", np.nan)
    if "layer_index" not in df and order_layers:
        df["layer_index"] = df.groupby("measure", sort=False)["layer"].transform(
            lambda s: s.map({name: i for i, name in enumerate(pd.unique(s.dropna()))}))
    elif "layer_index" not in df:
        df["layer_index"] = np.nan
    return df


# ----------------------------------------------------------------------------------------------- store
class RunStore:
    """A directory of runs. ``RunStore()`` uses :func:`default_store_root`."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else default_store_root()
        (self.root / "runs").mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"RunStore({str(self.root)!r}, runs={len(self.ids())})"

    def ids(self) -> list[str]:
        """Ids of the runs (directories with a ``config.json``, readable or not). Leftovers of an interrupted
        :meth:`delete` (``runs/.deleted-*``) are removed here."""
        out = []
        for p in (self.root / "runs").iterdir():
            if p.name.startswith(".deleted-") and p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            elif not p.name.startswith(".") and (p / "config.json").exists():
                out.append(p.name)
        return sorted(out)

    def create(self, config: RunConfig | Mapping[str, Any], name: str | None = None) -> Run:
        """Register a run for ``config`` (idempotent) and return its handle. A damaged ``config.json`` of that run
        is rewritten from ``config`` (the run id is its hash), with a :class:`StoreWarning`."""
        config = RunConfig.from_dict(config)
        run = Run(self, config.id)
        run.path.mkdir(parents=True, exist_ok=True)
        problem = None
        if (run.path / "config.json").exists():
            problem = run._config()[1]
            if problem is not None:
                warnings.warn(f"{run.path / 'config.json'}: {problem}; rewritten from the config asked for (its hash "
                              "is the run id)", StoreWarning, stacklevel=2)
        if not (run.path / "config.json").exists() or problem is not None:
            run.write_file("config.json", _json_bytes(config.to_dict()))
        old = run.meta
        meta = dict(old)
        if not meta:
            from .version import __version__

            meta = {"created": _now(), "workbench_version": __version__}
        if name is not None and meta.get("name") != name:
            meta["name"] = name
        if meta != old or not (run.path / "meta.json").exists():
            run.write_file("meta.json", _json_bytes(meta))
        return run

    def get(self, run: str | Run | RunConfig | Mapping[str, Any]) -> Run:
        """A run by id, unique id prefix, display name, config, or Run. ``KeyError`` when nothing matches;
        ``ValueError`` listing the ids when a prefix or a name matches several runs."""
        if isinstance(run, Run):
            return run
        if isinstance(run, (RunConfig, Mapping)):
            rid = RunConfig.from_dict(run).id
            if rid not in self.ids():
                raise KeyError(f"no run for this config (id {rid}) in {self.root}; train it first")
            return Run(self, rid)
        if not isinstance(run, str):
            raise TypeError(f"run must be an id, name, config or Run, got {type(run).__name__}")
        ids = self.ids()
        if run in ids:
            return Run(self, run)
        matches = [i for i in ids if i.startswith(run)] or [i for i in ids if Run(self, i).meta.get("name") == run]
        if len(matches) == 1:
            return Run(self, matches[0])
        if not matches:
            raise KeyError(f"no run {run!r} in {self.root}; `store.list()` shows the runs")
        raise ValueError(f"run {run!r} is ambiguous: it matches the runs {matches}; pass one of these ids")

    def runs(self) -> list[Run]:
        """Every readable run. A run whose ``config.json`` is damaged is left out, with a :class:`StoreWarning`
        naming the file (:meth:`list` shows it as ``"broken"``; :meth:`repair` moves it to ``quarantine/``)."""
        out = []
        for i in self.ids():
            run = Run(self, i)
            problem = run._config()[1]
            if problem is None:
                out.append(run)
            else:
                warnings.warn(f"{run.path / 'config.json'}: {problem}; run {i} left out (`workbench runs repair` "
                              "moves it to quarantine/)", StoreWarning, stacklevel=2)
        return out

    def list(self) -> pd.DataFrame:
        """One row per run: id, name, state, step, n_checkpoints (saved so far), created and every config field.
        A run whose ``config.json`` is damaged has state ``"broken"`` and no config fields (a :class:`StoreWarning`
        names the file)."""
        rows = []
        for i in self.ids():
            run = Run(self, i)
            cfg, problem = run._config()
            if problem is not None:
                warnings.warn(f"{run.path / 'config.json'}: {problem}; run {i} listed as 'broken' (`workbench runs "
                              "repair` moves it to quarantine/)", StoreWarning, stacklevel=2)
            st, meta = ({"state": "broken", "step": -1} if problem is not None else run.status), run.meta
            rows.append({"id": run.id, "name": meta.get("name", ""), "state": st["state"], "step": st["step"],
                         "n_checkpoints": len(run.checkpoints()), "created": meta.get("created", ""),
                         **({} if cfg is None else {k: (json.dumps(v, sort_keys=True) if isinstance(v, (dict, list))
                                                        else v) for k, v in cfg.to_dict().items()})})
        fields = [f.name for f in dataclasses.fields(RunConfig)]
        cols = ["id", "name", "state", "step", "n_checkpoints", "created", *fields]
        return pd.DataFrame(rows, columns=cols)

    def import_model(self, source: str | os.PathLike, *, name: str | None = None, builder: Any = None,
                     dataset: str, dataset_options: Mapping[str, Any] | None = None,
                     trust_remote_code: bool = False) -> Run:
        """Import weights trained elsewhere as a finished run, so every frozen analysis (extraction, measures,
        :class:`~workbench.study.Study`, downstream evaluation) treats them like a run trained here.

        Parameters
        ----------
        source : path
            One of

            - a Hugging Face directory (``config.json`` + PyTorch weights); its config, weight (``model*.safetensors``,
              ``pytorch_model*.bin`` and their index) and tokenizer files are copied into the store (not linked,
              so a later save into the source cannot change the run) — other files (README, optimizer states)
              are left out;
            - a workbench model directory (``model.json`` + ``model.safetensors``, :func:`workbench.models.save`);
            - a ``.safetensors`` / ``.pt`` / ``.pth`` / ``.bin`` state-dict file (or a directory holding exactly
              one) with ``builder=``, or with a ``model.json`` next to it;
            - a **checkpoint series**: a directory whose entries are named ``step1000``, ``step_1000``,
              ``checkpoint-1000``, ``ckpt-1000``, ``global_step1000`` or ``1000`` (as Pythia, MultiBERTs or the
              Hugging Face Trainer publish them), each one model of a single form above (directories, or
              state-dict files with ``builder=``) → one run whose checkpoints are those steps. A directory that
              is itself a model (``model.json`` or ``config.json`` at its top) is imported as that one model.

            A single model becomes checkpoint step 0.
        name : display name; default the source's name (prefixed with its parent's for generic names such as
            ``model``; with ``-`` and 8 hex digits of the weights hash appended when another run of the store
            already has that name).
        builder : ``(model_name, options)`` for :func:`workbench.models.build`, a model name, or an ``nn.Module``
            built by it (only its ``spec`` is used; the module is not modified) — the architecture the weights of
            a bare state dict fit. State-dict and workbench checkpoints are stored as ``model.safetensors`` +
            ``model.json`` (:func:`workbench.models.save`), so they reload without the builder.
        dataset, dataset_options : the dataset the run's analyses use by default (:func:`workbench.data.load`),
            e.g. ``"sentences"`` (raw text) for a Hugging Face text encoder.
        trust_remote_code : passed to Hugging Face ``from_pretrained`` now and whenever the run's model is loaded
            (recorded in the run's meta); only enable it for code you trust.

        Returns
        -------
        Run
            State ``done``; ``config.model == "imported"`` with ``model_options`` ``format`` (``"hf"`` or
            ``"workbench"``), ``architecture`` (e.g. ``"BertModel"``, ``"cnn"``), ``steps`` (the checkpoints) and
            ``weights``: SHA-256 over the lines ``"<step>\t<checkpoint digest>\n"`` in step order, where a
            checkpoint digest is SHA-256 over ``"<file name>\t<SHA-256 of the file>\n"`` of its stored files in
            name order. The run id starts with 8 hex digits of ``weights``; importing the same weights again (with
            the same dataset) returns the existing run, and different weights never share a run.

        Raises
        ------
        FileNotFoundError
            ``source`` does not exist.
        ValueError
            ``source`` is no model or series, a series mixes forms or repeats a step, a bare state dict comes
            without ``builder`` (or does not fit it), or ``dataset`` is unknown.
        """
        if not isinstance(source, (str, os.PathLike)):
            raise TypeError(f"source must be a path to a model directory, weights file or checkpoint series, "
                            f"got {type(source).__name__}")
        source = Path(source).expanduser().resolve()
        if not source.exists():
            raise FileNotFoundError(f"source: no such file or directory: {str(source)!r}")
        from . import data as wb_data

        if not isinstance(dataset, str) or dataset not in wb_data.available():
            raise ValueError(f"dataset must name the dataset the run is analysed on, one of {wb_data.available()} "
                             f"(or one added with workbench.data.register); got {dataset!r}")
        if dataset_options is not None and not isinstance(dataset_options, Mapping):
            raise TypeError(f"dataset_options must be a dict, got {type(dataset_options).__name__}")
        if name is not None and (not isinstance(name, str) or not name):
            raise TypeError(f"name must be a non-empty string or None, got {name!r}")
        if not isinstance(trust_remote_code, bool):
            raise TypeError(f"trust_remote_code must be True or False, got {trust_remote_code!r}")
        if builder is not None:
            _check_builder(builder)
        plan = _import_plan(source, builder)
        forms = {form for _, form, _ in plan}
        staging_root = self.root / ".imports"
        staging_root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=staging_root, prefix="import-"))
        owner = contextlib.ExitStack()  # held while importing: repair removes only unheld (dead) stagings
        # the lock file lives beside the staging directory, not in it: it must not move into runs/ with it
        owner.enter_context(_path_lock(staging / ".lock", held=staging_root / f".{staging.name}.held"))
        try:
            lines = []
            for step, form, path in plan:
                ckpt = staging / "checkpoints" / f"{step:08d}"
                _stage_checkpoint(form, path, ckpt, builder, trust_remote_code)
                lines.append(f"{step}\t{_files_digest(ckpt)}\n")
            steps = [step for step, _, _ in plan]
            last = staging / "checkpoints" / f"{steps[-1]:08d}"
            fmt = "hf" if forms == {"hf"} else "workbench"
            options = {"format": fmt, "architecture": _architecture(last, fmt),
                       "weights": hashlib.sha256("".join(lines).encode()).hexdigest(), "steps": steps}
            config = RunConfig(dataset=dataset, dataset_options=dict(dataset_options or {}), model=IMPORTED,
                               model_options=options, objective="none", steps=steps[-1], recorders=())
            run = Run(self, config.id)
            if not (run.path / "config.json").exists():
                from .models import load as load_model

                load_model(last, trust_remote_code=trust_remote_code)  # fails now, not in a later analysis
                from .version import __version__

                taken = {r.meta.get("name") for r in self.runs()}
                default = source.stem if source.is_file() else source.name
                if default.lower() in _GENERIC_NAMES:  # e.g. a package's "model" directory: name the package
                    default = f"{source.parent.name}-{default}"
                _write_json(staging / "config.json", config.to_dict())
                _write_json(staging / "meta.json", {
                    "created": _now(), "workbench_version": __version__,
                    "name": name or (default if default not in taken else f"{default}-{options['weights'][:8]}"),
                    "import": {"source": str(source), "format": fmt, "forms": sorted(forms), "steps": steps,
                               "trust_remote_code": trust_remote_code}})
                _write_json(staging / "status.json", {"state": "done", "step": steps[-1], "error": None,
                                                      "updated": _now()})
                files = {n: _file_entry(staging / n) for n in ("config.json", "meta.json", "status.json")}
                for step in steps:  # checkpoint manifests, listed in the run's manifest (written last)
                    files[f"checkpoints/{step:08d}/{MANIFEST}"] = _seal_checkpoint(
                        staging / "checkpoints" / f"{step:08d}", step)
                atomic_write_bytes(staging / MANIFEST, _manifest_bytes(files))
                try:
                    os.replace(staging, run.path)
                    _fsync_dir(run.path.parent)
                except OSError:
                    if not (run.path / "config.json").exists():  # not a concurrent import of the same weights
                        raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            owner.close()
        if name is not None and run.meta.get("name") != name:
            run.write_file("meta.json", _json_bytes({**run.meta, "name": name}))
        return run

    def delete(self, run: str | Run) -> None:
        """Remove a run: renamed to ``runs/.deleted-<id>-<pid>`` under its lock, then removed (a kill in between
        leaves a leftover that :meth:`ids` removes)."""
        run = self.get(run)
        with run.lock():
            trash = run.path.with_name(f".deleted-{run.id}-{os.getpid()}")
            os.replace(run.path, trash)
            _fsync_dir(run.path.parent)
        shutil.rmtree(trash, ignore_errors=True)

    def check(self) -> pd.DataFrame:
        """Verify every stored file of every run against its manifest (and that JSON, CSV and array files parse).

        Returns
        -------
        DataFrame
            One row per problem: ``run`` (id or directory name), ``path`` (the file), ``problem``. Empty when all is
            well. Runs written by older versions (no manifests) are listed as unverified; temporary files of
            interrupted writes, ``.deleted-*`` leftovers and ``"running"`` runs whose process died are listed too.
            Nothing is changed: :meth:`repair` fixes what can be fixed.
        """
        rows = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", StoreWarning)
            for d in sorted((self.root / "runs").iterdir()):
                if d.name.startswith(".deleted-"):
                    rows.append((d.name, d, "left over from an interrupted delete (`workbench runs repair` "
                                            "removes it)"))
                elif d.is_dir() and not d.name.startswith("."):
                    if not (d / "config.json").exists():
                        rows.append((d.name, d / "config.json", "missing: an unfinished create or a damaged run"))
                    rows += [(d.name, path, problem) for path, problem in Run(self, d.name)._problems()]
        return pd.DataFrame([(r, str(p), q) for r, p, q in rows], columns=["run", "path", "problem"])

    def repair(self) -> pd.DataFrame:
        """Fix what :meth:`check` finds, as far as it can be fixed without retraining.

        Removes ``.deleted-*`` leftovers, temporary files of interrupted writes and the staging directories of
        imports whose process died (``.imports/import-*`` whose lock nobody holds); moves runs whose ``config.json``
        is unreadable to ``<root>/quarantine/`` (a directory left by an unfinished create, holding nothing else, is
        removed); moves corrupt checkpoints aside (``checkpoints/.corrupt-<step>-<n>``; :func:`~workbench.train.train`
        recomputes them); rebuilds a damaged ``history.csv`` from the last intact checkpoint's snapshot; moves a
        damaged ``downstream.csv`` or artifact aside (``.corrupt-<name>-<n>``); rewrites a damaged ``meta.json``
        ({} + a note) or ``status.json`` (recomputed from the checkpoints); marks runs left ``"running"`` by a dead
        process, or ``"done"`` without their final checkpoint, interrupted; adds the manifests runs of older versions
        lack (their files as they are now). Runs whose lock is held (training) are skipped.

        Returns
        -------
        DataFrame
            One row per action: ``run``, ``path``, ``action``.
        """
        rows = []
        for d in sorted((self.root / ".imports").glob("import-*")):  # stagings of imports killed midway
            if not d.is_dir():
                continue
            with _path_lock(d / ".lock", wait=False, held=d.with_name(f".{d.name}.held")) as dead:
                if dead:  # nobody holds it: not an import in progress
                    shutil.rmtree(d, ignore_errors=True)
                    rows.append(("", d, "removed: left over from an interrupted import"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", StoreWarning)
            for d in sorted((self.root / "runs").iterdir()):
                if d.name.startswith(".deleted-") and d.is_dir():
                    shutil.rmtree(d, ignore_errors=True)
                    rows.append((d.name, d, "removed: left over from an interrupted delete"))
                    continue
                if not d.is_dir() or d.name.startswith("."):
                    continue
                run = Run(self, d.name)
                with run._try_lock() as owned:
                    if not owned:
                        rows.append((d.name, d / ".lock", "skipped: a process holds the run's lock (training?)"))
                        continue
                    problem = run._config()[1] if (d / "config.json").exists() else "missing"
                    if problem is None:
                        rows += [(d.name, path, action) for path, action in run._repair()]
                        continue
                    kept = [p for p in d.iterdir() if p.name not in (".lock", ".manifest.lock", MANIFEST)
                            and not p.name.startswith((".lock.held", ".manifest.lock.held")) and not _is_leftover(p)]
                    if not kept and problem == "missing":
                        shutil.rmtree(d, ignore_errors=True)
                        rows.append((d.name, d, "removed: an unfinished create (no config.json, nothing stored)"))
                        continue
                    dest = self.root / "quarantine" / d.name
                    n = 0
                    while dest.exists():
                        n += 1
                        dest = self.root / "quarantine" / f"{d.name}-{n}"
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(d, dest)
                    _fsync_dir(d.parent)
                    rows.append((d.name, dest, f"moved to quarantine: config.json {problem}"))
        return pd.DataFrame([(r, str(p), a) for r, p, a in rows], columns=["run", "path", "action"])


# ----------------------------------------------------------------------------------------------- import
#: entry names of a checkpoint series: step1000, step_1000, step-1000, checkpoint-1000, ckpt_1000, global_step1000, 1000
_STEP_NAME = re.compile(r"^(?:global_step|checkpoint|ckpt|step|iter)?[-_]?(\d+)$", re.IGNORECASE)
_WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
_GENERIC_NAMES = {"model", "models", "weights", "checkpoints", "final", "pretrained"}
#: the files of a Hugging Face directory that define the model and its tokenizer (what is stored and hashed)
_HF_FILES = ("config.json", "sentence_bert_config.json", "generation_config.json", "tokenizer.json",
             "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.txt", "vocab.json",
             "merges.txt", "spiece.model", "tokenizer.model", "sentencepiece.bpe.model", "preprocessor_config.json")
_HF_WEIGHTS = re.compile(r"^(model|pytorch_model)(-\d+-of-\d+)?\.(safetensors|bin)(\.index\.json)?$")


def _check_builder(builder: Any) -> None:
    from torch import nn

    if isinstance(builder, nn.Module):
        spec = getattr(builder, "spec", None)
        if not (isinstance(spec, Mapping) and isinstance(spec.get("name"), str)):
            raise ValueError(f"builder: this {type(builder).__name__} has no builder spec (model.spec), so the "
                             "imported checkpoint could not be rebuilt; build it with workbench.models.build(...) "
                             "(register your own builder with workbench.models.register) or pass "
                             "builder=(model_name, options)")
    elif isinstance(builder, (tuple, list)):
        if len(builder) != 2 or not isinstance(builder[0], str) or not isinstance(builder[1], Mapping):
            raise TypeError(f"builder must be a (model_name, options) pair, got {builder!r}")
    elif not isinstance(builder, (str, Mapping)):
        raise TypeError(f"builder must be (model_name, options), a model name or an nn.Module built by "
                        f"workbench.models.build, got {type(builder).__name__}")
    elif isinstance(builder, Mapping) and not isinstance(builder.get("name"), str):
        raise TypeError(f"builder as a dict must be a model spec {{'name': ..., 'options': {{...}}}}, got {builder!r}")


def _build_from(builder: Any):
    """A fresh model of the architecture ``builder`` names (see :meth:`RunStore.import_model`)."""
    from torch import nn

    from .models import build

    if isinstance(builder, nn.Module):
        builder = builder.spec
    if isinstance(builder, str):
        return build(builder)
    if isinstance(builder, Mapping):
        return build(builder["name"], dict(builder.get("options") or {}))
    return build(builder[0], dict(builder[1]))


def _dir_form(directory: Path, builder: Any, what: str) -> tuple[str, Path] | None:
    """``(form, path)`` of a directory that is one model, else None. ``what`` names it in errors."""
    if (directory / "model.json").exists():
        return "workbench", directory
    if (directory / "config.json").exists():
        return "hf", directory
    weights = sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in _WEIGHT_SUFFIXES)
    if len(weights) > 1:
        raise ValueError(f"source: {what} holds several weight files {[p.name for p in weights]} and no model.json "
                         "or config.json; keep one state dict per checkpoint")
    if weights:
        return _file_form(weights[0], builder)
    return None


def _file_form(path: Path, builder: Any) -> tuple[str, Path]:
    if path.suffix.lower() not in _WEIGHT_SUFFIXES:
        raise ValueError(f"source: {path} is not a weights file (accepted: {', '.join(_WEIGHT_SUFFIXES)}) nor a "
                         "model directory")
    if builder is not None:
        return "state_dict", path
    if path.with_name("model.json").exists():
        return "workbench", path
    raise ValueError(f"builder: {path} holds only weights (a state dict), so the architecture must be given: "
                     "pass builder=(model_name, options) for workbench.models.build, or an nn.Module built by it")


def _import_plan(source: Path, builder: Any) -> list[tuple[int, str, Path]]:
    """``[(step, form, path)]`` ascending, form ``"hf" | "workbench" | "state_dict"`` — one form for all."""
    if source.is_file():
        return [(0, *_file_form(source, builder))]
    if (source / "model.json").exists() or (source / "config.json").exists():
        return [(0, *_dir_form(source, builder, str(source)))]
    entries: dict[int, tuple[str, Path]] = {}
    for child in sorted(source.iterdir()):
        m = _STEP_NAME.match(child.name if child.is_dir() else child.stem)
        if m is None or child.name.startswith(".") or (child.is_file() and child.suffix.lower() not in
                                                       _WEIGHT_SUFFIXES):
            continue
        step = int(m.group(1))
        if step in entries:
            raise ValueError(f"source: the series {source} has step {step} twice ({entries[step][1].name} and "
                             f"{child.name}); keep one entry per step")
        form = _dir_form(child, builder, f"step directory {child}") if child.is_dir() else _file_form(child, builder)
        if form is None:
            raise ValueError(f"source: step directory {child} of the series {source} is not a model (no model.json, "
                             "config.json or weights file)")
        entries[step] = form
    if not entries:
        form = _dir_form(source, builder, str(source))
        if form is not None:
            return [(0, *form)]
        raise ValueError(f"source: {source} is neither a Hugging Face directory (config.json), a workbench model "
                         "directory (model.json + model.safetensors), a weights file, nor a checkpoint series "
                         "(entries named step1000, step_1000, checkpoint-1000 or 1000); it contains "
                         f"{sorted(p.name for p in source.iterdir())[:20]}")
    forms = {step: form for step, (form, _) in entries.items()}
    if len(set(forms.values())) > 1:
        raise ValueError(f"source: the series {source} mixes checkpoint forms {forms}; every step must be the same "
                         "kind (all Hugging Face directories, all workbench model directories or all state dicts)")
    return [(step, form, path) for step, (form, path) in sorted(entries.items())]


def _stage_checkpoint(form: str, path: Path, dest: Path, builder: Any, trust_remote_code: bool) -> None:
    """Write one imported checkpoint into ``dest`` in a form :func:`workbench.models.load` reads."""
    from . import models

    dest.mkdir(parents=True)
    if form == "hf":
        files = [p for p in sorted(path.iterdir()) if p.is_file() and (
            p.name in _HF_FILES or _HF_WEIGHTS.match(p.name) or (trust_remote_code and p.suffix == ".py"))]
        if not any(_HF_WEIGHTS.match(p.name) and not p.name.endswith(".json") for p in files):
            raise ValueError(f"source: the Hugging Face directory {path} holds no PyTorch weights "
                             "(model*.safetensors or pytorch_model*.bin)")
        for p in files:  # copied, not hard-linked: saving into the source again (which truncates and rewrites
            shutil.copyfile(p, dest / p.name)  # files in place) would otherwise change the stored checkpoint
        return
    model = models.load(path) if form == "workbench" else models.load(path, into=_build_from(builder))
    models.save(model, dest)


def _architecture(checkpoint: Path, fmt: str) -> str:
    if fmt == "hf":
        cfg = _read_json(checkpoint / "config.json")
        archs = cfg.get("architectures") or []
        return str(archs[0] if archs else cfg.get("model_type", "unknown"))
    return str(_read_json(checkpoint / "model.json").get("name", "unknown"))

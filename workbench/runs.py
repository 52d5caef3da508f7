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
        checkpoints/<step:08d>/model.safetensors, model.json, trainer.pt
        artifacts/             run-specific arrays (e.g. label_noise.npz)
        .lock                  flock-ed by the process that trains the run
      .imports/                imports being assembled (RunStore.import_model), renamed into runs/ when complete

Every file is written to a temporary name in the same directory, fsync-ed and renamed (``os.replace``), so
readers never see a half-written file and a killed writer leaves the previous version intact. Training
holds an exclusive ``fcntl.flock`` on ``.lock``: a second process asking for the same run waits, then
finds it done.
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
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import pandas as pd

from .results import tidy

__all__ = ["RunConfig", "RunStore", "Run", "checkpoint_schedule", "atomic_write_bytes", "atomic_write_text",
           "default_store_root", "IMPORTED"]

OBJECTIVES = ("supervised", "simclr", "supcon", "barlow", "vicreg", "mae", "mlm", "clm", "autoencoder",
              "distill", "none")
CONTRASTIVE = ("simclr", "supcon", "barlow", "vicreg", "distill")  # objectives that train an embedding head
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("constant", "cosine", "warmup-cosine")
NOISE_TYPES = ("symmetric", "pairflip")
PROJECTORS = ("none", "linear", "mlp")
AUGMENTATIONS = ("crop", "flip", "color", "noise", "blur", "rotate", "mask")
RECORDERS = ("grad_norm", "act_var", "eigs", "align_unif", "projector_geometry", "clean_flipped", "el2n")
DEFAULT_RECORDERS = ("clean_flipped",)
#: columns of ``history.csv``; ``layer`` / ``layer_index`` are empty for model-level measures (the loss)
HISTORY_COLUMNS = ["step", "measure", "split", "layer", "layer_index", "value"]
#: ``RunConfig.model`` of a run made by :meth:`RunStore.import_model` (weights loaded, not trained here)
IMPORTED = "imported"


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
    data_fraction : fraction of the training split used (a seeded, stratified-when-labelled subset).
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
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
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
    """Write ``data`` to ``path`` via a temp file in the same directory, fsync and ``os.replace``."""
    path = Path(path)
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


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _files_digest(directory: Path) -> str:
    """SHA-256 over the lines ``"<name>\t<SHA-256 of the file>\n"`` of the regular files directly in
    ``directory`` (names not starting with ``.``), in sorted name order: the identity of one checkpoint."""
    lines = [f"{p.name}\t{_file_sha256(p)}\n" for p in sorted(directory.iterdir())
             if p.is_file() and not p.name.startswith(".")]
    return hashlib.sha256("".join(lines).encode()).hexdigest()


# ----------------------------------------------------------------------------------------------- run
class Run:
    """A handle on one run directory. Cheap to create; reads files on demand."""

    def __init__(self, store: RunStore, run_id: str):
        self.store = store
        self.id = run_id
        self.path = store.root / "runs" / run_id

    def __repr__(self) -> str:
        return f"Run({self.id!r}, name={self.name!r}, state={self.status['state']!r}, steps={self.config.steps})"

    @property
    def config(self) -> RunConfig:
        return RunConfig.from_dict(_read_json(self.path / "config.json"))

    @property
    def meta(self) -> dict[str, Any]:
        p = self.path / "meta.json"
        return _read_json(p) if p.exists() else {}

    @property
    def name(self) -> str:
        return self.meta.get("name") or self.id

    @property
    def status(self) -> dict[str, Any]:
        """``{"state", "step", "error", "updated"}`` (+ ``"pid"``, ``"host"`` while running).

        A run left ``"running"`` by a process that died (killed, crashed, machine rebooted) is marked
        ``"interrupted"`` here — it resumes from its last checkpoint on the next :func:`~workbench.train.train`.
        The owner is alive exactly while it holds the run's lock, so an unheld lock means the owner is gone.
        """
        p = self.path / "status.json"
        status = _read_json(p) if p.exists() else {"state": "created", "step": -1, "error": None}
        if status["state"] == "running":
            with self._try_lock() as owned:
                if owned:  # nobody trains it: re-read under the lock (the owner may have just finished)
                    status = _read_json(p)
                    if status["state"] == "running":
                        who = f"pid {status.get('pid', '?')} on {status.get('host', '?')}"
                        self.set_status("interrupted", max(self.checkpoints(), default=-1),
                                        error=f"the training process ({who}) ended without finishing")
                        status = _read_json(p)
        return status

    @property
    def done(self) -> bool:
        return self.status["state"] == "done"

    def set_status(self, state: str, step: int, error: str | None = None) -> None:
        status = {"state": state, "step": int(step), "error": error, "updated": _now()}
        if state == "running":
            status |= {"pid": os.getpid(), "host": socket.gethostname()}
        _write_json(self.path / "status.json", status)

    # --- checkpoints
    def checkpoint_dir(self, step: int) -> Path:
        return self.path / "checkpoints" / f"{int(step):08d}"

    def checkpoints(self) -> list[int]:
        """Steps with a complete checkpoint (a directory holding model.safetensors, or the config.json of an
        imported Hugging Face model), ascending."""
        root = self.path / "checkpoints"
        if not root.exists():
            return []
        return sorted(int(p.name) for p in root.iterdir() if p.is_dir() and p.name.isdigit()
                      and ((p / "model.safetensors").exists() or (p / "config.json").exists()))

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

    def load_model(self, step: int | str | None = None, device: str = "cpu"):
        """The model at checkpoint ``step`` (default: the last one), in eval mode. An imported Hugging Face
        model is loaded with the ``trust_remote_code`` it was imported with."""
        from .models import load as load_model

        trust = bool(self.meta.get("import", {}).get("trust_remote_code", False))
        model = load_model(self.checkpoint_dir(self.resolve_step(step)), device=device, trust_remote_code=trust)
        model.eval()
        return model

    def weights_hash(self, step: int | str | None = None) -> str:
        """SHA-256 of the checkpoint file (weights identity without loading them). An imported Hugging Face
        checkpoint without a single ``model.safetensors`` (``.bin`` or sharded weights) gives the digest of its
        files (:meth:`RunStore.import_model`)."""
        ckpt = self.checkpoint_dir(self.resolve_step(step))
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
        """
        p = self.path / "history.csv"
        if not p.exists():
            return tidy([], run=self.name)
        return tidy(_read_stored(p), run=self.name)

    def downstream(self) -> pd.DataFrame:
        """Every downstream evaluation stored with this run (:func:`workbench.train.evaluate`), in the results
        schema with the extra columns ``task``, ``method``, ``label_fraction``. Tables stored by older versions
        (a ``metric`` column, no ``layer_index``: NaN) are read alike."""
        p = self.path / "downstream.csv"
        if not p.exists():
            return tidy([], run=self.name).assign(task=pd.Series(dtype=object), method=pd.Series(dtype=object),
                                                  label_fraction=pd.Series(dtype=float))
        return tidy(_read_stored(p, dtype={"task": str, "method": str}, order_layers=False), run=self.name)

    def write_history(self, rows: list[dict[str, Any]]) -> None:
        """Store ``rows`` (dicts with the keys of :data:`HISTORY_COLUMNS`; a missing key is empty) atomically."""
        df = pd.DataFrame(rows, columns=HISTORY_COLUMNS)
        atomic_write_text(self.path / "history.csv", df.to_csv(index=False))

    # --- artifacts
    def save_artifact(self, name: str, **arrays: np.ndarray) -> None:
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        atomic_write_bytes(self.path / "artifacts" / f"{name}.npz", buf.getvalue())

    def load_artifact(self, name: str) -> dict[str, np.ndarray]:
        p = self.path / "artifacts" / f"{name}.npz"
        if not p.exists():
            raise FileNotFoundError(f"run {self.id} has no artifact {name!r}")
        with np.load(p, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive inter-process lock on this run (blocks until free)."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / ".lock", "a+") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    @contextlib.contextmanager
    def _try_lock(self) -> Iterator[bool]:
        """The lock if it is free right now (yields True), else yields False without waiting. ``flock``
        belongs to an open file, so this also sees a lock held by another thread of this process."""
        with open(self.path / ".lock", "a+") as f:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _read_stored(path: Path, dtype: Mapping[str, Any] | None = None, *, order_layers: bool = True) -> pd.DataFrame:
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
        return sorted(p.name for p in (self.root / "runs").iterdir() if (p / "config.json").exists())

    def create(self, config: RunConfig | Mapping[str, Any], name: str | None = None) -> Run:
        """Register a run for ``config`` (idempotent) and return its handle."""
        config = RunConfig.from_dict(config)
        run = Run(self, config.id)
        run.path.mkdir(parents=True, exist_ok=True)
        if not (run.path / "config.json").exists():
            _write_json(run.path / "config.json", config.to_dict())
        meta = run.meta
        if not meta:
            from .version import __version__

            meta = {"created": _now(), "workbench_version": __version__}
        if name is not None and meta.get("name") != name:
            meta["name"] = name
        _write_json(run.path / "meta.json", meta)
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
        return [Run(self, i) for i in self.ids()]

    def list(self) -> pd.DataFrame:
        """One row per run: id, name, state, step, n_checkpoints (saved so far), created and every config field."""
        rows = []
        for run in self.runs():
            cfg, st, meta = run.config.to_dict(), run.status, run.meta
            rows.append({"id": run.id, "name": meta.get("name", ""), "state": st["state"], "step": st["step"],
                         "n_checkpoints": len(run.checkpoints()), "created": meta.get("created", ""),
                         **{k: (json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v)
                            for k, v in cfg.items()}})
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
                try:
                    os.replace(staging, run.path)
                except OSError:
                    if not (run.path / "config.json").exists():  # not a concurrent import of the same weights
                        raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        if name is not None and run.meta.get("name") != name:
            _write_json(run.path / "meta.json", {**run.meta, "name": name})
        return run

    def delete(self, run: str | Run) -> None:
        run = self.get(run)
        with run.lock():
            trash = run.path.with_name(f".deleted-{run.id}-{os.getpid()}")
            os.replace(run.path, trash)
        shutil.rmtree(trash, ignore_errors=True)


# ----------------------------------------------------------------------------------------------- import
#: entry names of a checkpoint series: step1000, step_1000, step-1000, checkpoint-1000, ckpt_1000, global_step1000, 1000
_STEP_NAME = re.compile(r"^(?:global_step|checkpoint|ckpt|step|iter)?[-_]?(\d+)$", re.IGNORECASE)
_WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
_GENERIC_NAMES = {"model", "models", "weights", "checkpoints", "final", "pretrained"}
#: the files of a Hugging Face directory that define the model and its tokenizer (what is stored and hashed)
_HF_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
             "special_tokens_map.json", "added_tokens.json", "vocab.txt", "vocab.json", "merges.txt", "spiece.model",
             "tokenizer.model", "sentencepiece.bpe.model", "preprocessor_config.json")
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

"""Pretraining lab: choose pretraining choices, start / cancel training without blocking the kernel, watch
the loss live; finished runs land in the run store and appear in the run list.

Training is :func:`workbench.train.train` on a background thread (:class:`TrainingJob`). Its ``callback``
hook (called after each logged step) records the live loss and is where a cancel request is honoured: the
callback raises :class:`TrainingCancelled`, a ``KeyboardInterrupt``, which the trainer handles as a user
interrupt — the run's status becomes ``"interrupted"`` at its last complete checkpoint (checkpoints and
history are written atomically, so nothing is half-written), and starting the same configuration again
resumes from there. Cancellation takes effect at the next logged step (every ``max(1, steps // 100)``
steps).

>>> lab = PretrainingLab(store)                 # display it; or drive it from code:
>>> job = lab.start(objective="supervised", label_noise=0.2, steps=300)
>>> job.wait(); lab.runs()
>>> lab.select(run="my-run")                    # show a stored run's loss; its choices go into the widgets
"""
from __future__ import annotations

import html
import json
import threading
import time
import traceback
import warnings
from typing import Any, Callable, Mapping

import pandas as pd
import plotly.graph_objects as go

from .. import figures
from ..results import tidy
from ._base import ERROR_STYLE, Dashboard, clear_figure, row, set_options

__all__ = ["PretrainingLab", "TrainingJob", "TrainingCancelled", "DEFAULT_LAB_CONFIG"]

#: a small default: an MLP on the 8-D gaussian mixture trains in seconds on a laptop CPU
DEFAULT_LAB_CONFIG = dict(dataset="gaussian-mixture", dataset_options={"n_train": 512, "n_test": 256, "n_ood": 256,
                                                                       "dim": 16},
                          model="mlp", model_options={"hidden": [64, 64]}, steps=300, batch_size=64, checkpoints=4)

#: norm placements offered per model builder (``model_options["norm"]``); None = the builder's default
NORMS = {"mlp": [None, "layer", "batch"], "cnn": ["batch", "group", None],
         "transformer": ["pre", "post", "mix", "lns"], "vit": []}


def _shown(widget: Any) -> Any:
    """A control's value as the page shows it: a float slider's value at its readout precision (the browser snaps a
    log slider to its step grid — 0.2 becomes 10^-0.7 = 0.19952… — while it shows 0.2; the run is the one shown)."""
    value = widget.value
    fmt = getattr(widget, "readout_format", None)
    if isinstance(value, float) and fmt:
        return float(format(value, fmt))
    return value


class TrainingCancelled(KeyboardInterrupt):
    """Raised from the trainer's callback when a :class:`TrainingJob` is cancelled (module docstring)."""


class TrainingJob:
    """:func:`workbench.train.train` of one config on a background thread, with a cancel flag and live history.

    state: ``"pending"`` → ``"running"`` → ``"done"`` | ``"cancelled"`` | ``"failed"`` (``error`` holds the message).
    listeners: callables ``f(job)`` invoked from the training thread after each logged step and once at the end.
    """

    def __init__(self, config: Any, store: Any = None, *, name: str | None = None, device: Any = None):
        from ..runs import RunConfig, RunStore

        self.config = RunConfig.from_dict(config)
        self.store = store if isinstance(store, RunStore) else RunStore(store)
        self.name, self.device = name, device
        self.state, self.error, self.run = "pending", None, None
        self.step, self.total = 0, self.config.steps
        self.listeners: list[Callable[[TrainingJob], None]] = []
        self._rows: list[dict] = []
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> TrainingJob:
        if self._thread is not None:
            raise RuntimeError("this job was already started; make a new TrainingJob")
        self.state = "running"
        self._thread = threading.Thread(target=self._main, name=f"workbench-train-{self.name or self.config.id}",
                                        daemon=True)
        self._thread.start()
        return self

    def cancel(self) -> None:
        """Ask the training to stop at its next logged step (returns at once; :meth:`wait` for it)."""
        self._cancel.set()

    def wait(self, timeout: float | None = None) -> str:
        """Block until the job ends (or ``timeout`` seconds pass); returns :attr:`state`."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.state

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def history(self) -> pd.DataFrame:
        """Live training-batch measures so far (from the trainer's callback), in the results schema
        (:mod:`workbench.results`): ``run`` (the job's name or run id), ``step``, ``measure``, ``split``
        (``"train_batch"``), ``value``."""
        with self._lock:
            rows = list(self._rows)
        return tidy(rows, run=self.name or self.config.id, split="train_batch")

    def _callback(self, step: int, metrics: Mapping[str, float]) -> None:
        with self._lock:
            self._rows.extend({"step": step, "measure": k, "value": float(v)} for k, v in metrics.items())
            self.step = step
        self._notify()
        if self._cancel.is_set():
            raise TrainingCancelled(f"cancelled at step {step}")

    def _notify(self) -> None:
        for f in list(self.listeners):
            try:
                f(self)
            except Exception:  # a display error must not kill the training
                traceback.print_exc()

    def _main(self) -> None:
        from ..train import train

        try:
            self.run = train(self.config, self.store, name=self.name, device=self.device, progress=False,
                             callback=self._callback)
            self.state = "done" if self.run.done else self.run.status["state"]
            if self.state == "done":
                self.step = self.total
        except TrainingCancelled:
            self.run = self.store.get(self.config.id)
            self.state = "cancelled"
        except Exception as e:  # reported through state / error
            self.state, self.error = "failed", f"{type(e).__name__}: {e}"
            try:
                self.run = self.store.get(self.config.id)
            except KeyError:
                pass
        finally:
            self._notify()

    def __repr__(self) -> str:
        return f"TrainingJob(name={self.name!r}, state={self.state!r}, step={self.step}/{self.total})"


class PretrainingLab(Dashboard):
    """Widgets for the main :class:`~workbench.runs.RunConfig` pretraining choices, Start / Cancel, a live
    loss curve (``dash.figure``), a progress bar and the store's run list. :meth:`select` sets choices from
    code and shows a stored run's loss curve; :meth:`current_frame` is the history drawn.

    store:  RunStore or its root (default ``RunStore()``).
    base:   the config every run starts from (dict or RunConfig; default :data:`DEFAULT_LAB_CONFIG`); the
            widgets override its objective, label noise, temperature, augmentations, steps, model, norm
            placement, learning rate and seed.
    device: torch device for training (default: CUDA when available).
    """

    CHOICES = ("dataset", "model", "norm", "objective", "label_noise", "temperature", "augment", "steps", "lr", "seed",
               "checkpoints")

    def __init__(self, store: Any = None, base: Any = None, *, device: Any = None, refresh_every: float = 0.3,
                 export_path: str = "training_loss.svg"):
        from .. import data as wb_data
        from .. import models as wb_models
        from ..runs import AUGMENTATIONS, OBJECTIVES, RunConfig, RunStore

        self._init_base(export_path)
        W = self._W
        self.store = store if isinstance(store, RunStore) else RunStore(store)
        self.base = RunConfig.from_dict(DEFAULT_LAB_CONFIG if base is None else base)
        self.device, self.refresh_every = device, float(refresh_every)
        self.job: TrainingJob | None = None
        self._before_job: tuple[TrainingJob | None, pd.DataFrame | None] = (None, None)  # see _job_history
        self.jobs: list[TrainingJob] = []
        self.shown = None  # a stored Run chosen with select(run=...): drawn until the next start
        self._last_draw = 0.0
        b = self.base
        datasets = [d for d in wb_data.available() if d not in ("arrays", "hf-disk", "torch")]
        st = {"description_width": "90px"}
        self.controls = {
            "dataset": W.Dropdown(options=sorted(set(datasets) | {b.dataset}), value=b.dataset, description="dataset",
                                  style=st),
            "model": W.Dropdown(options=sorted(set(wb_models.available()) | {b.model}), value=b.model,
                                description="model", style=st),
            "norm": W.Dropdown(description="norm", style=st),
            "objective": W.Dropdown(options=list(OBJECTIVES), value=b.objective, description="objective", style=st),
            "label_noise": W.FloatSlider(value=b.label_noise, min=0.0, max=0.9, step=0.05, description="label noise",
                                         style=st),
            "temperature": W.FloatLogSlider(value=b.temperature, base=10, min=-2, max=1, step=0.05,
                                            description="temperature", style=st),
            "augment": W.SelectMultiple(options=list(AUGMENTATIONS), value=tuple(b.augment), rows=4,
                                        description="augment", style=st),
            "steps": W.BoundedIntText(value=b.steps, min=1, max=1_000_000, description="steps", style=st),
            "lr": W.FloatLogSlider(value=b.lr, base=10, min=-5, max=0, step=0.1, description="lr", style=st),
            "seed": W.BoundedIntText(value=b.seed, min=0, max=2**31 - 1, description="seed", style=st),
            "checkpoints": W.BoundedIntText(value=b.checkpoints, min=0, max=1000, description="checkpoints", style=st),
        }
        self._set_norms(b.model_options.get("norm", "(default)"))
        self.controls["model"].observe(lambda _c: self._set_norms(self.controls["norm"].value), names="value")
        self.name_w = W.Text(description="name", placeholder="(automatic)", style=st)
        self.start_button = W.Button(description="Start", icon="play", button_style="success")
        self.cancel_button = W.Button(description="Cancel", icon="stop", button_style="danger", disabled=True)
        self.start_button.on_click(lambda _b: self._start_clicked())
        self.cancel_button.on_click(lambda _b: self.cancel())
        self.progress = W.IntProgress(value=0, min=0, max=max(1, b.steps), description="progress")
        self.runs_html = W.HTML(layout=W.Layout(overflow="auto", max_width="100%"))  # a wide table scrolls in its box
        clear_figure(self.figure, "start a run to see its loss")
        left = W.VBox([*self.controls.values(), self.name_w, W.HBox([self.start_button, self.cancel_button])],
                      layout=W.Layout(min_width="340px"))
        right = W.VBox([self.figure, self.progress, self.status])
        self.widget = W.VBox([row(left, right), W.HTML("<b>runs in the store</b>"), self.runs_html, self.export_row])
        self.refresh_runs()

    # ------------------------------------------------------------------ config
    def _set_norms(self, want: Any) -> None:
        model = self.controls["model"].value
        opts = ["(default)"] + [n for n in NORMS.get(model, []) if n is not None] + \
            (["(none)"] if None in NORMS.get(model, []) else [])
        set_options(self.controls["norm"], opts, want if want in opts else "(default)")

    def config(self, **changes: Any):
        """The :class:`~workbench.runs.RunConfig` the widgets describe (``changes`` set widgets first)."""
        self.set(**changes)
        c = {k: _shown(w) for k, w in self.controls.items()}
        fields: dict[str, Any] = {k: c[k] for k in ("dataset", "model", "objective", "label_noise", "temperature",
                                                     "steps", "lr", "seed", "checkpoints")}
        fields["augment"] = tuple(c["augment"])
        opts = dict(self.base.model_options) if c["model"] == self.base.model else {}
        if c["norm"] != "(default)":
            opts["norm"] = None if c["norm"] == "(none)" else c["norm"]
        fields["model_options"] = opts
        if c["dataset"] != self.base.dataset:
            fields["dataset_options"] = {}
        return self.base.replace(**fields)

    def set(self, **changes: Any) -> PretrainingLab:
        """Set choice widgets programmatically, e.g. ``lab.set(objective="simclr", augment=["crop", "noise"])``."""
        unknown = sorted(set(changes) - set(self.CHOICES) - {"name"})
        if unknown:
            raise ValueError(f"unknown choice(s) {unknown}; the lab sets {list(self.CHOICES)} and name")
        if "model" in changes:
            self.controls["model"].value = self._check_choice(changes["model"], list(self.controls["model"].options),
                                                              "model")
        for k, v in changes.items():
            if k == "name":
                self.name_w.value = "" if v is None else str(v)
            elif k == "norm":
                v = "(none)" if v is None else v
                options = [o for _l, o in self.controls["norm"].options]
                self.controls["norm"].value = self._check_choice(v, options, "norm")
            elif k == "augment":
                self.controls["augment"].value = tuple([v] if isinstance(v, str) else v)
            elif k in ("dataset", "objective"):
                self.controls[k].value = self._check_choice(v, list(self.controls[k].options), k)
            elif k != "model":
                self.controls[k].value = v
        return self

    def select(self, *, run: Any = None, **choices: Any) -> PretrainingLab:
        """Set pretraining choices (as :meth:`set`) and/or show a stored run, then redraw once.

        ``run``: a run of the store (id, unique id prefix, display name, config or Run — :meth:`RunStore.get`);
        its training-batch loss is drawn (until the next :meth:`start`) and its choices are put into the
        widgets (each one the widgets can show), so Start trains it again only if ``choices`` change
        something. Raises ``ValueError`` for a run not in the store or an unknown choice.
        """
        if run is not None:
            try:
                shown = self.store.get(run)
            except KeyError as e:
                raise ValueError(f"run={run!r}: {e.args[0]}") from None
            with self._hold():
                self._load_choices(shown.config)
            self.shown = shown
        with self._hold():
            self.set(**choices)
        self._update()
        return self

    def _load_choices(self, config: Any) -> None:
        """Put ``config``'s choices into the widgets, skipping one a widget cannot show (e.g. a dataset the
        dataset list leaves out)."""
        values = {k: getattr(config, k) for k in self.CHOICES if k != "norm" and hasattr(config, k)}
        values["augment"] = list(config.augment)
        if "norm" in config.model_options:
            values["norm"] = config.model_options["norm"]
        for key in ("dataset", "model", *[k for k in values if k not in ("dataset", "model")]):
            if key in values:
                try:
                    self.set(**{key: values[key]})
                except (ValueError, TypeError) as err:  # shown, not dropped silently
                    warnings.warn(f"select(run=...): the lab cannot show {key}={values[key]!r} ({err}); "
                                  "that control keeps its current value", stacklevel=3)

    # ------------------------------------------------------------------ training
    def start(self, **changes: Any) -> TrainingJob:
        """Start training the configured run in the background (``changes`` set widgets first); returns the job.
        Raises ValueError for an invalid combination (e.g. label noise with a self-supervised objective)."""
        if self.job is not None and self.job.running:
            raise RuntimeError("a run is already training; cancel it or wait for it first")
        cfg = self.config(**changes)
        name = self.name_w.value.strip() or None
        job = TrainingJob(cfg, self.store, name=name, device=self.device)
        job.listeners.append(self._on_progress)
        self.name_w.value = ""  # a name is for one run: the next start names its own
        self.job, self.shown = job, None
        self.jobs.append(job)
        self.progress.max, self.progress.value, self.progress.bar_style = max(1, cfg.steps), 0, ""
        self.start_button.disabled, self.cancel_button.disabled = True, False
        self.status.value = f"training <b>{html.escape(name or cfg.id)}</b> …"
        clear_figure(self.figure, "waiting for the first logged step …")
        job.start()
        return job

    def _start_clicked(self) -> None:
        try:
            self.start()
        except (ValueError, TypeError, RuntimeError) as e:
            self.status.value = f"<span style='{ERROR_STYLE}'>{html.escape(str(e))}</span>"

    def cancel(self) -> None:
        """Cancel the current run (it stops at its next logged step; status and run list follow)."""
        if self.job is not None and self.job.running:
            self.job.cancel()
            self.cancel_button.disabled = True
            self.status.value = "cancelling …"

    def wait(self, timeout: float | None = None) -> str | None:
        """Block until the current job ends; returns its state (None when nothing was started)."""
        return None if self.job is None else self.job.wait(timeout)

    def _on_progress(self, job: TrainingJob) -> None:
        """From the training thread: progress bar at every logged step, curve at most every ``refresh_every`` s."""
        finished = job.state != "running"
        self.progress.value = min(job.step, self.progress.max)
        now = time.monotonic()
        if finished or now - self._last_draw >= self.refresh_every:
            self._last_draw = now
            self._update()
        if finished:
            self.start_button.disabled, self.cancel_button.disabled = False, True
            label = html.escape(job.name or job.config.id)
            if job.state == "done":
                self.progress.bar_style = "success"
                self.status.value = f"<b>{label}</b> done ({job.total} steps), run {job.config.id}"
            elif job.state == "cancelled":
                self.progress.bar_style = "warning"
                st = job.run.status if job.run is not None else {}
                self.status.value = (f"<b>{label}</b> cancelled at step {job.step}; the run is "
                                     f"'{st.get('state', '?')}' at checkpoint {st.get('step', '?')} and resumes "
                                     "from there when started again")
            else:
                self.progress.bar_style = "danger"
                self.status.value = (f"<span style='{ERROR_STYLE}'><b>{label}</b> {job.state}: "
                                     f"{html.escape(str(job.error))}</span>")
            self.refresh_runs()

    def current_frame(self) -> pd.DataFrame:
        """The history drawn, in the results schema: the training-batch loss of the run chosen with
        ``select(run=...)``, else the live loss of the current job (empty before any)."""
        if self.shown is not None:
            h = self.shown.history()
        elif self.job is not None:
            h = self._job_history()
        else:
            h = tidy([])
        return h[(h["measure"] == "loss") & (h["split"] == "train_batch")].reset_index(drop=True)

    def _job_history(self) -> pd.DataFrame:
        """The current job's curve: what its run stored before the job started (a resumed run's earlier steps,
        read once per job) followed by the job's live steps. The live steps alone drew a resumed run from its
        resume point on, its earlier history missing from the plot."""
        live = self.job.history()
        if self._before_job[0] is not self.job:
            try:
                stored = self.job.store.get(self.job.config.id).history()
            except KeyError:  # a new run: nothing before this job
                stored = live.iloc[:0]
            self._before_job = (self.job, stored)
        stored = self._before_job[1]
        first = live["step"].min() if len(live) else float("inf")
        earlier = stored[(stored["split"] == "train_batch") & (stored["step"] < first)]
        if earlier.empty:
            return live
        return pd.concat([earlier.assign(run=live["run"].iloc[0] if len(live) else earlier["run"]), live],
                         ignore_index=True)

    def _build_figure(self) -> go.Figure | None:
        frame = self.current_frame()
        if frame.empty:
            self._empty = ("this run logged no training loss" if self.shown is not None else
                           "no logged step yet" if self.job is not None else "start a run to see its loss")
            return None
        return figures.step_curve(frame, measure="loss", color="run", dash=None, log_x=False)

    def _update(self) -> None:
        st = self.status.value
        super()._update()
        if self.job is not None and self.job.state == "running":
            self.status.value = st  # keep "training …" while the curve grows

    # ------------------------------------------------------------------ run list
    def runs(self) -> pd.DataFrame:
        """The store's run list (:meth:`RunStore.list`)."""
        return self.store.list()

    def refresh_runs(self) -> None:
        df = self.runs()
        if df.empty:
            self.runs_html.value = "<i>no runs yet</i>"
            return
        # one line per run that fits the notebook's width: short id, step/steps, the choices the lab sets
        shown = pd.DataFrame({"name": df["name"], "id": df["id"].str[:8], "state": df["state"],
                              "step": df["step"].astype(str) + "/" + df["steps"].astype(str)})
        for c in ("dataset", "model", "objective", "label_noise", "temperature", "augment", "seed"):
            shown[c.replace("label_", "")] = df[c]
        shown["augment"] = shown["augment"].map(lambda a: ", ".join(json.loads(a)) if isinstance(a, str) else a)
        self.runs_html.value = shown.to_html(index=False, border=0, classes="workbench-runs", na_rep="")

    def __repr__(self) -> str:
        return f"PretrainingLab(store={str(self.store.root)!r}, job={self.job!r})"

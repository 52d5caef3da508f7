"""One trainer loop: deterministic, checkpointed on a log-spaced schedule, resumable after a kill.

Determinism: the model is initialised under ``torch.manual_seed(seed)``; the batch at step ``t`` is a
slice of a permutation drawn from ``default_rng([seed, epoch])``; the torch RNG is reseeded from
``(seed, t)`` before every step (dropout, augmentation). Resuming from checkpoint ``s`` therefore gives
the same weights as an uninterrupted run (bitwise on CPU), because nothing depends on how many steps
ran in this process. The history is the same too, row for row: a checkpoint holds the history so far and the
per-step values of the logging interval not yet averaged, so a resume from a step between two logged steps logs
the same averages. Training resumes from the last checkpoint of the schedule before the first one that is not intact
(:meth:`~workbench.runs.Run.checkpoint_problem`; that one is moved aside with a warning naming the bad file), and a
``done`` run with a damaged checkpoint is trained again from there.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import traceback
import warnings
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .. import data as wb_data
from .._validation import check_device
from ..models.inputs import model_inputs, predict
from ..runs import HISTORY_COLUMNS, Run, RunConfig, RunStore, checkpoint_schedule
from .noise import label_noise

__all__ = ["train", "build_model", "evaluate_accuracy", "auto_device"]


def auto_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given (ValueError when it does not exist here, e.g. "cuda" without CUDA), else CUDA when
    available, else CPU."""
    if device is not None:
        return check_device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def build_model(config: RunConfig, dataset: wb_data.Dataset) -> nn.Module:
    """Build ``config.model`` sized for ``dataset`` (input shape / vocabulary / classes), seeded."""
    from .. import models

    opts: dict[str, Any] = dict(config.model_options)
    if dataset.kind == "tokens":
        opts.setdefault("vocab_size", len(dataset.vocab or []))
        # the longest split (e.g. tiny-language's ood split is padded to 2x the train length), so that
        # held-out metrics and downstream probes can run the model on every split
        opts.setdefault("max_len", max(int(np.shape(s.inputs)[1]) for s in dataset.splits.values()))
        if config.objective in ("mlm", "clm"):  # a token language model: no class head
            opts.setdefault("task", "lm")
            opts.setdefault("causal", config.objective == "clm")
        else:
            opts.setdefault("task", "classify")
        if opts["task"] == "classify":
            opts.setdefault("num_classes", dataset.num_classes)
    else:
        opts.setdefault("input_shape", tuple(dataset.input_shape))
        opts.setdefault("num_classes", dataset.num_classes)
    torch.manual_seed(config.seed)
    model = models.build(config.model, **opts)
    if config.init_scale != 1.0:  # scale every weight matrix / kernel (not biases or norm gains)
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() >= 2:
                    p.mul_(config.init_scale)
    return model


def train_subset(config: RunConfig, labels: np.ndarray | None, n: int) -> np.ndarray:
    """Rows of the training split a run uses (``config.data_fraction``), sorted.

    With labels the subset is stratified: ``max(1, round(fraction * n_c))`` examples of each class ``c``,
    drawn with ``numpy.random.default_rng([seed, 0xDA7A])``; without labels a plain seeded sample.
    """
    if config.data_fraction >= 1.0:
        return np.arange(n)
    rng = np.random.default_rng([config.seed, 0xDA7A])
    if labels is None:
        return np.sort(rng.choice(n, size=max(1, round(config.data_fraction * n)), replace=False))
    keep = [rng.choice(idx, size=max(1, round(config.data_fraction * len(idx))), replace=False)
            for idx in (np.flatnonzero(labels == c) for c in np.unique(labels))]
    return np.sort(np.concatenate(keep))


def lr_factor(config: RunConfig, step: int) -> float:
    """Multiplier of ``config.lr`` at 1-indexed ``step``: linear warm-up over ``warmup`` steps, then constant
    or cosine decay to 0 at ``steps`` (``0.5 (1 + cos(pi t / T))`` over the post-warm-up steps)."""
    if config.warmup and step <= config.warmup:
        return step / config.warmup
    if config.schedule == "constant":
        return 1.0
    span = max(config.steps - config.warmup, 1)
    return 0.5 * (1.0 + float(np.cos(np.pi * min(step - config.warmup, span) / span)))


def evaluate_accuracy(model: nn.Module, split: wb_data.Split, labels: np.ndarray | None = None,
                      batch_size: int = 512, device: torch.device | str = "cpu") -> dict[str, float]:
    """Accuracy and mean cross-entropy of ``model`` on ``split`` (against ``labels`` if given)."""
    y = torch.as_tensor(split.labels if labels is None else labels, dtype=torch.long)
    logits = predict(model, split, batch_size, device)
    return {"accuracy": float((logits.argmax(1) == y).float().mean()),
            "loss": float(nn.functional.cross_entropy(logits, y))}


def _make_optimizer(config: RunConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)


def _batch_index(n: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Rows of the batch used at 1-indexed ``step``: a slice of a per-epoch permutation."""
    bs = min(batch_size, n)
    per_epoch = n // bs
    epoch, pos = divmod(step - 1, per_epoch)
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    return perm[pos * bs:(pos + 1) * bs]


def _save_checkpoint(run: Run, step: int, model: nn.Module, optimizer: torch.optim.Optimizer | None,
                     objective: nn.Module | None = None, history: list[dict[str, Any]] | None = None,
                     running: Mapping[str, list[torch.Tensor]] | None = None) -> None:
    """Write checkpoint ``step`` through :meth:`Run.checkpoint_writer` (temp directory, fsync, manifest, rename):
    the model, the objective's parameters, ``trainer.pt`` (optimizer state, step and the per-step values of the
    logging interval not yet averaged, ``running``) and the ``history`` snapshot (every row so far)."""
    from safetensors.torch import save_file

    from .. import models

    with run.checkpoint_writer(step, history=history) as tmp:
        models.save(model, tmp)
        if objective is not None and len(objective.state_dict()):
            save_file({k: v.detach().cpu().contiguous() for k, v in objective.state_dict().items()},
                      str(tmp / "objective.safetensors"))
        if optimizer is not None:
            torch.save({"optimizer": optimizer.state_dict(), "step": step,
                        "running": {k: torch.stack(v) for k, v in (running or {}).items() if v}}, tmp / "trainer.pt")


def _load_checkpoint(run: Run, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                     objective: nn.Module | None = None) -> dict[str, list[torch.Tensor]]:
    """Load checkpoint ``step`` (verified by the caller) into ``model``, ``optimizer`` and ``objective``; returns the
    running values of the logging interval it holds (empty for checkpoints of older versions)."""
    from safetensors.torch import load_file

    ckpt = run.checkpoint_dir(step)
    model.load_state_dict(load_file(ckpt / "model.safetensors"))
    if objective is not None and (ckpt / "objective.safetensors").exists():
        objective.load_state_dict(load_file(ckpt / "objective.safetensors"))
    state = torch.load(ckpt / "trainer.pt", map_location="cpu", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    return {k: list(v.unbind(0)) for k, v in state.get("running", {}).items()}


def _complete(run: Run, config: RunConfig) -> bool:
    """Every checkpoint of the schedule is present and intact (a ``done`` run with a bad one is trained again)."""
    steps = set(run.checkpoints())
    return all(s in steps and run.checkpoint_problem(s) is None
               for s in checkpoint_schedule(config.steps, config.checkpoints))


def _restore(run: Run, config: RunConfig, model: nn.Module, optimizer: torch.optim.Optimizer,
             objective: nn.Module | None) -> tuple[int | None, list[dict[str, Any]], dict[str, list[torch.Tensor]]]:
    """Load the last checkpoint ``s`` such that every checkpoint of the schedule up to ``s`` is intact; returns
    ``(s, history snapshot, running values)``, or ``(None, [], {})`` to start afresh. The first checkpoint that is
    not intact (or does not load) is moved aside with a :class:`~workbench.runs.StoreWarning` naming the file."""
    from ..runs import StoreWarning

    schedule = checkpoint_schedule(config.steps, config.checkpoints)
    while True:
        have, start = set(run.checkpoints()), None
        for s in schedule:
            if s not in have:
                break
            problem = run.checkpoint_problem(s, require=("model.safetensors", "trainer.pt"))
            if problem is not None:
                aside = run.move_checkpoint_aside(s)
                warnings.warn(f"{problem}; checkpoint {s} moved aside to {aside}; training resumes from "
                              + (f"checkpoint {start}" if start is not None else "the start"), StoreWarning,
                              stacklevel=4)
                break
            start = s
        if start is None:
            return None, [], {}
        # a resume point left by a cancel (train's callback), after `start` and before the next scheduled step
        bound = min([s for s in schedule if s > start], default=start)
        resume = [s for s in have if s not in schedule and start < s < bound]
        if resume:
            problem = run.checkpoint_problem(max(resume), require=("model.safetensors", "trainer.pt"))
            if problem is None:
                start = max(resume)
            else:
                aside = run.move_checkpoint_aside(max(resume))
                warnings.warn(f"{problem}; resume point {max(resume)} moved aside to {aside}; training resumes from "
                              f"checkpoint {start}", StoreWarning, stacklevel=4)
        try:
            running = _load_checkpoint(run, start, model, optimizer, objective)
            history = run.checkpoint_history(start)
        except Exception as err:  # a checkpoint of an older version (not verified) that does not load
            aside = run.move_checkpoint_aside(start)
            warnings.warn(f"{run.checkpoint_dir(start)}: does not load ({type(err).__name__}: {err}); moved aside to "
                          f"{aside}", StoreWarning, stacklevel=4)
            continue
        if history is None:  # a checkpoint of an older version: no snapshot, the run's history up to it
            old = run.history()
            history = old.loc[old["step"] <= start, HISTORY_COLUMNS].to_dict("records")
        return start, history, running


def train(config: RunConfig | Mapping[str, Any], store: RunStore | str | os.PathLike | None = None, *,
          name: str | None = None, device: str | torch.device | None = None, progress: bool = True,
          stop_after: int | None = None, callback: Callable[[int, dict], None] | None = None) -> Run:
    """Train the run described by ``config`` (or return it if it is already done).

    Parameters
    ----------
    config : RunConfig or dict of its fields.
    store : RunStore or its root directory (default ``RunStore()``).
    name : display name recorded in the run's meta (not part of its id).
    device : torch device; default CUDA when available, else CPU.
    progress : show a tqdm.auto progress bar.
    stop_after : stop (as if interrupted) after this many steps in this call — the run resumes from its
        last checkpoint next time. For tests and time-boxed sessions.
    callback : called as ``callback(step, metrics)`` after each logged step (live dashboards). If it raises
        ``KeyboardInterrupt`` (a dashboard's Cancel), the step just done is kept: a checkpoint is written there (a
        *resume point*, off the schedule), the run is ``interrupted`` at it, and training resumes from it — to the
        same weights and history as without the cancel; the resume point is removed once the next scheduled
        checkpoint is written.

    Returns
    -------
    Run
        Handle on the finished (or, with ``stop_after``, interrupted) run.
    """
    config = RunConfig.from_dict(config)
    if config.imported:
        raise ValueError("config describes an imported run (model='imported', RunStore.import_model): its weights were "
                         "trained elsewhere and it has no training recipe, so train() cannot train it; analyse it "
                         "as it is, or fine-tune it with workbench.train.evaluate(run, methods=['finetune'])")
    device = auto_device(device)  # before anything is stored: "cuda" without CUDA is a ValueError naming device
    store = store if isinstance(store, RunStore) else RunStore(store)
    run = store.create(config, name=name)
    if run.done and _complete(run, config):
        run.clean_leftovers(lock=True)  # a writer killed after finishing; skipped while another process holds it
        return run
    with run.lock():
        run.clean_leftovers()  # temp files of killed writers: only while holding the lock
        if run.done and _complete(run, config):  # another process finished it while we waited
            return run
        try:
            with contextlib.ExitStack() as scope:  # _fit sets torch's threads once the model is built
                _fit(run, config, device, progress, stop_after, callback, scope)
        except _Interrupted:
            pass
        except KeyboardInterrupt:
            run.set_status("interrupted", max(run.checkpoints(), default=-1))
            raise
        except Exception as err:
            run.set_status("failed", max(run.checkpoints(), default=-1),
                           error="".join(traceback.format_exception_only(type(err), err)).strip())
            raise
    return run


class _Interrupted(Exception):
    pass


def _fit(run: Run, config: RunConfig, device: torch.device, progress: bool, stop_after: int | None,
         callback: Callable[[int, dict], None] | None, scope: contextlib.ExitStack) -> None:
    from .._threads import thread_policy
    from .augment import make_augment
    from .objectives import Batch, make_objective
    from .recorders import Recorders

    ds = wb_data.load(config.dataset, **dict(config.dataset_options))
    full_train = ds["train"]
    subset = train_subset(config, full_train.labels, len(full_train))
    train_split = full_train.subset(subset) if len(subset) < len(full_train) else full_train
    model = build_model(config, ds).to(device)
    objective = make_objective(config, ds, model)
    if objective is not None:
        objective = objective.to(device)
    params = [p for p in list(model.parameters()) + ([] if objective is None else list(objective.parameters()))
              if p.requires_grad]  # the distillation teacher is frozen
    optimizer = _make_optimizer(config, params)
    # torch threads for a CPU others may share, restored when train() returns (WORKBENCH_THREADS overrides)
    scope.enter_context(thread_policy(sum(p.numel() for p in params), config.batch_size))
    schedule = checkpoint_schedule(config.steps, config.checkpoints)

    labels = train_split.labels
    flipped = None
    if config.label_noise > 0:
        if labels is None:
            raise ValueError(f"label_noise={config.label_noise} but dataset {config.dataset!r} has no labels")
        labels, flipped = label_noise(train_split.labels, config.label_noise, ds.num_classes,
                                      kind=config.noise_type, seed=config.seed)
        run.save_artifact("label_noise", noisy_labels=labels, flipped=flipped, index=subset)
    eval_ds = dataclasses.replace(ds, splits={**ds.splits, "train": train_split})
    augment = make_augment(config.augment, config.augment_strength, kind=ds.kind) if config.augment else None
    recorders = Recorders(config.recorders, model, eval_ds, labels=labels, flipped=flipped, device=device,
                          augment=augment, objective=objective)

    def checkpoint_rows(step: int) -> list[dict[str, Any]]:
        rows = _checkpoint_metrics(model, ds, step, device) if config.objective == "supervised" else []
        return rows + recorders.at_checkpoint(step, run)

    restored, history, running = _restore(run, config, model, optimizer, objective)
    if restored is not None:
        start = restored
        problem = run.history_problem()
        if problem is not None:
            from ..runs import StoreWarning

            warnings.warn(f"{problem}; rebuilt from the snapshot in checkpoint {start}", StoreWarning, stacklevel=3)
        run.write_history(history)  # the run's copy of the snapshot (rows of a later, lost checkpoint dropped)
    else:
        start = 0
        model.eval()
        history = checkpoint_rows(0)
        _save_checkpoint(run, 0, model, optimizer, objective, history=history)
        run.write_history(history)
    run.set_status("running", start)

    y_train = None if labels is None else torch.as_tensor(labels, dtype=torch.long)
    log_every = max(1, config.steps // 100)
    model.train()
    if objective is not None:
        objective.train()
    bar = tqdm(total=config.steps, initial=start, disable=not progress, desc=f"train {run.name}", leave=False,
               mininterval=0.1 if sys.stderr.isatty() else 5.0)
    cancelled: KeyboardInterrupt | None = None
    try:
        for step in range(start + 1, config.steps + 1):
            torch.manual_seed(config.seed * 1_000_003 + step)
            for group in optimizer.param_groups:
                group["lr"] = config.lr * lr_factor(config, step)
            logged = step % log_every == 0 or step == config.steps
            idx = _batch_index(len(train_split), config.batch_size, config.seed, step)
            args, kwargs = model_inputs(model, train_split, idx, device)
            batch = Batch(inputs=args[0], labels=None if y_train is None else y_train[idx].to(device),
                          attention_mask=kwargs.get("attention_mask"), index=idx)
            recorders.arm(logged)
            loss, metrics = objective(model, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            step_rows = recorders.after_backward(step, logged)
            optimizer.step()
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training loss became {float(loss)} at step {step}; lower lr "
                                         f"(now {config.lr}) or check the inputs")
            step_rows += recorders.after_step(step, logged)  # records of the updated weights
            for key, value in {"loss": loss, **metrics}.items():
                running.setdefault(key, []).append(torch.as_tensor(value).detach().float().reshape(()))
            if logged:
                means = {k: float(torch.stack(v).mean()) for k, v in running.items()}
                running.clear()
                history += [{"step": step, "measure": k, "split": "train_batch", "value": v}
                            for k, v in means.items()] + step_rows
                bar.set_postfix({k: f"{v:.3f}" for k, v in list(means.items())[:3]})
                if callback is not None:
                    try:
                        callback(step, means)
                    except KeyboardInterrupt as err:  # cancelled from the callback (the lab's Cancel): below
                        cancelled = err
            bar.update(1)
            if step in schedule:
                model.eval()
                history += checkpoint_rows(step)
                model.train()
                _save_checkpoint(run, step, model, optimizer, objective, history=history, running=running)
                run.write_history(history)
                run.set_status("running" if step < config.steps else "done", step)
                for extra in [s for s in run.checkpoints() if s < step and s not in schedule]:
                    run.remove_checkpoint(extra)  # a resume point of a cancel, now behind a scheduled checkpoint
            if cancelled is not None:  # at a step boundary: keep the steps done since the last checkpoint
                if step not in schedule:
                    _save_checkpoint(run, step, model, optimizer, objective, history=history, running=running)
                    run.write_history(history)
                raise cancelled
            if stop_after is not None and step - start >= stop_after and step < config.steps:
                run.set_status("interrupted", max(run.checkpoints()))
                raise _Interrupted
    finally:
        bar.close()
        recorders.close()
    if config.steps == 0 or start == config.steps:
        run.set_status("done", config.steps)


def _checkpoint_metrics(model: nn.Module, ds: wb_data.Dataset, step: int,
                        device: torch.device) -> list[dict[str, Any]]:
    """Held-out accuracy/loss of the classifier head on every labelled non-train split (model-level rows)."""
    rows = []
    for split_name, split in ds.items():
        if split.labels is None or split_name == "train":
            continue
        for measure, value in evaluate_accuracy(model, split, device=device).items():
            rows.append({"step": step, "measure": measure, "split": split_name, "value": value})
    return rows

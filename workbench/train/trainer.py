"""One trainer loop: deterministic, checkpointed on a log-spaced schedule, resumable after a kill.

Determinism: the model is initialised under ``torch.manual_seed(seed)``; the batch at step ``t`` is a
slice of a permutation drawn from ``default_rng([seed, epoch])``; the torch RNG is reseeded from
``(seed, t)`` before every step (dropout, augmentation). Resuming from checkpoint ``s`` therefore gives
the same weights as an uninterrupted run (bitwise on CPU), because nothing depends on how many steps
ran in this process.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from .. import data as wb_data
from ..models.inputs import call_model
from ..runs import Run, RunConfig, RunStore, checkpoint_schedule
from .noise import symmetric_label_noise

__all__ = ["train", "build_model", "evaluate_accuracy", "auto_device"]


def auto_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given, else CUDA when available, else CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def build_model(config: RunConfig, dataset: wb_data.Dataset) -> nn.Module:
    """Build ``config.model`` sized for ``dataset`` (input shape / vocabulary / classes), seeded."""
    from .. import models

    opts: dict[str, Any] = dict(config.model_options)
    if dataset.kind == "tokens":
        opts.setdefault("vocab_size", len(dataset.vocab or []))
        opts.setdefault("max_len", int(dataset.input_shape[0]))
        opts.setdefault("task", "classify")
        opts.setdefault("num_classes", dataset.num_classes)
    else:
        opts.setdefault("input_shape", tuple(dataset.input_shape))
        opts.setdefault("num_classes", dataset.num_classes)
    torch.manual_seed(config.seed)
    return models.build(config.model, **opts)


@torch.no_grad()
def predict(model: nn.Module, split: wb_data.Split, batch_size: int = 512,
            device: torch.device | str = "cpu") -> torch.Tensor:
    """Logits for every example of ``split`` (eval mode, restored afterwards)."""
    was_training = model.training
    model.eval()
    try:
        outs = [call_model(model, split, slice(i, i + batch_size), device).float().cpu()
                for i in range(0, len(split), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(outs)


def evaluate_accuracy(model: nn.Module, split: wb_data.Split, labels: np.ndarray | None = None,
                      batch_size: int = 512, device: torch.device | str = "cpu") -> dict[str, float]:
    """Accuracy and mean cross-entropy of ``model`` on ``split`` (against ``labels`` if given)."""
    y = torch.as_tensor(split.labels if labels is None else labels, dtype=torch.long)
    logits = predict(model, split, batch_size, device)
    return {"accuracy": float((logits.argmax(1) == y).float().mean()),
            "loss": float(nn.functional.cross_entropy(logits, y))}


def _make_optimizer(config: RunConfig, model: nn.Module) -> torch.optim.Optimizer:
    if config.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)


def _batch_index(n: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Rows of the batch used at 1-indexed ``step``: a slice of a per-epoch permutation."""
    bs = min(batch_size, n)
    per_epoch = n // bs
    epoch, pos = divmod(step - 1, per_epoch)
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    return perm[pos * bs:(pos + 1) * bs]


def _save_checkpoint(run: Run, step: int, model: nn.Module, optimizer: torch.optim.Optimizer | None) -> None:
    """Write the checkpoint into a temp directory, then rename it into place (atomic as a whole)."""
    from .. import models

    final = run.checkpoint_dir(step)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".tmp-{step:08d}-"))
    try:
        models.save(model, tmp)
        if optimizer is not None:
            torch.save({"optimizer": optimizer.state_dict(), "step": step}, tmp / "trainer.pt")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _load_checkpoint(run: Run, step: int, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    from safetensors.torch import load_file

    ckpt = run.checkpoint_dir(step)
    model.load_state_dict(load_file(ckpt / "model.safetensors"))
    trainer_file = ckpt / "trainer.pt"
    if trainer_file.exists():
        state = torch.load(trainer_file, map_location="cpu", weights_only=True)
        optimizer.load_state_dict(state["optimizer"])


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
    callback : called as ``callback(step, metrics)`` after each logged step (live dashboards).

    Returns
    -------
    Run
        Handle on the finished (or, with ``stop_after``, interrupted) run.
    """
    config = RunConfig.from_dict(config)
    store = store if isinstance(store, RunStore) else RunStore(store)
    run = store.create(config, name=name)
    if run.done:
        return run
    with run.lock():
        if run.done:  # another process finished it while we waited
            return run
        try:
            _fit(run, config, auto_device(device), progress, stop_after, callback)
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
         callback: Callable[[int, dict], None] | None) -> None:
    ds = wb_data.load(config.dataset, **dict(config.dataset_options))
    train_split = ds["train"]
    if train_split.labels is None and config.objective == "supervised":
        raise ValueError(f"dataset {config.dataset!r} has no labels; objective='supervised' needs them")
    model = build_model(config, ds).to(device)
    optimizer = _make_optimizer(config, model)
    schedule = checkpoint_schedule(config.steps, config.checkpoints)

    labels = train_split.labels
    flipped = None
    if config.label_noise > 0:
        labels, flipped = symmetric_label_noise(train_split.labels, config.label_noise, ds.num_classes,
                                                seed=config.seed)
        run.save_artifact("label_noise", noisy_labels=labels, flipped=flipped)

    done_steps = run.checkpoints()
    start = done_steps[-1] if done_steps else 0
    history: list[dict[str, Any]] = []
    if done_steps:
        _load_checkpoint(run, start, model, optimizer)
        old = run.history()
        history = old[old["step"] <= start].drop(columns="run").to_dict("records")
    else:
        history = _checkpoint_metrics(model, ds, labels, flipped, 0, device)
        _save_checkpoint(run, 0, model, optimizer)
        run.write_history(history)
    run.set_status("running", start)

    y_train = torch.as_tensor(labels, dtype=torch.long)
    log_every = max(1, config.steps // 100)
    model.train()
    bar = tqdm(total=config.steps, initial=start, disable=not progress, desc=f"train {run.name}", leave=False,
               mininterval=0.1 if sys.stderr.isatty() else 5.0)
    running: list[tuple[float, float]] = []
    try:
        for step in range(start + 1, config.steps + 1):
            torch.manual_seed(config.seed * 1_000_003 + step)
            idx = _batch_index(len(train_split), config.batch_size, config.seed, step)
            logits = call_model(model, train_split, idx, device)
            target = y_train[idx].to(device)
            loss = nn.functional.cross_entropy(logits, target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training loss became {float(loss)} at step {step}; lower lr "
                                         f"(now {config.lr}) or check the inputs")
            running.append((loss.item(), (logits.detach().argmax(1) == target).float().mean().item()))
            if step % log_every == 0 or step == config.steps:
                mean_loss, mean_acc = np.mean(running, axis=0)
                running.clear()
                history += [{"step": step, "metric": "loss", "split": "train_batch", "value": mean_loss},
                            {"step": step, "metric": "accuracy", "split": "train_batch", "value": mean_acc}]
                bar.set_postfix(loss=f"{mean_loss:.3f}", acc=f"{mean_acc:.2f}")
                if callback is not None:
                    callback(step, {"loss": mean_loss, "accuracy": mean_acc})
            bar.update(1)
            if step in schedule:
                model.eval()
                history += _checkpoint_metrics(model, ds, labels, flipped, step, device)
                model.train()
                _save_checkpoint(run, step, model, optimizer)
                run.write_history(history)
                run.set_status("running" if step < config.steps else "done", step)
            if stop_after is not None and step - start >= stop_after and step < config.steps:
                run.set_status("interrupted", max(run.checkpoints()))
                raise _Interrupted
    finally:
        bar.close()
    if config.steps == 0 or start == config.steps:
        run.set_status("done", config.steps)


def _checkpoint_metrics(model: nn.Module, ds: wb_data.Dataset, labels: np.ndarray | None,
                        flipped: np.ndarray | None, step: int, device: torch.device) -> list[dict[str, Any]]:
    """Held-out accuracy/loss on every non-train split; with label noise, fit of clean vs flipped labels."""
    rows = []
    for split_name, split in ds.items():
        if split.labels is None or split_name == "train":
            continue
        for metric, value in evaluate_accuracy(model, split, device=device).items():
            rows.append({"step": step, "metric": metric, "split": split_name, "value": value})
    if flipped is not None and flipped.any():
        logits = predict(model, ds["train"], device=device)
        pred = logits.argmax(1).numpy()
        rows += [
            {"step": step, "metric": "accuracy", "split": "train_clean",
             "value": float((pred[~flipped] == labels[~flipped]).mean())},
            # fraction of flipped examples predicted as their *noisy* label: memorization (Arpit et al. 2017)
            {"step": step, "metric": "memorized", "split": "train_flipped",
             "value": float((pred[flipped] == labels[flipped]).mean())},
            {"step": step, "metric": "accuracy", "split": "train_flipped_true",
             "value": float((pred[flipped] == ds["train"].labels[flipped]).mean())},
        ]
    return rows

"""Recorders: what training writes into a run's tidy history besides loss and accuracy.

Each recorder is switched on by name in ``RunConfig.recorders`` and adds rows ``(step, measure, split,
layer, layer_index, value)`` (:data:`workbench.runs.HISTORY_COLUMNS`; ``layer_index`` is the probe point's
position in the model, empty for the model's representation ``embed`` and for model-level rows). Per-step
recorders run on the logged steps (every ``steps // 100``), per-checkpoint recorders on the checkpoint schedule
(log-spaced), so the cost stays small by default.

==============  ===========  =======================================================================
name            when         rows (measure / split / layer)
==============  ===========  =======================================================================
grad_norm       logged step  ``grad_norm`` / ``train_batch`` / each probe point: ‖∂L/∂θ‖₂ over the
                             parameters inside that module (after backward, before the update)
act_var         logged step  ``act_var`` / ``train_batch`` / each probe point: variance of the module's
                             output over all its elements in the batch (``torch.var``, unbiased)
eigs            checkpoint   ``eig_k`` (k = 1..16) / ``probe`` / ``embed``: top eigenvalues of the
                             covariance of the model's representation
                             (``workbench.train.objectives.representation``); plus ``effective_rank`` and
                             ``rankme`` of the same features
eig_steps       logged step  ``eig_k`` (k = 1..16) / ``probe`` / ``embed`` and ``projector``: top
                + step 0     eigenvalues (float64) of the covariance of the model's representation and of
                             the objective's projector output (left out when there is none or it is the
                             identity), every ``k = max(1, steps // 100)`` steps after the update — the
                             cadence follows ``steps``, so it is part of the run id (Simon et al. 2023)
align_unif      checkpoint   ``alignment`` and ``uniformity`` (Wang & Isola 2020) / ``probe`` /
                             ``embed``: two augmented views of the probe set (needs ``augment``)
projector_      checkpoint   where a joint-embedding loss acts: ``alignment``, ``uniformity`` and
geometry                     ``tolerance`` (Wang & Liu 2021) / ``probe`` / ``projector`` (the objective's
                             projector output), and ``tolerance`` / ``probe`` / ``embed``; on two
                             augmented views of the probe set drawn from a fixed seed (needs a
                             ``simclr``/``supcon``/``barlow``/``vicreg`` objective, hence ``augment``)
clean_flipped   checkpoint   with label noise: ``accuracy`` on ``train_clean``, ``memorized`` on
                             ``train_flipped`` (fraction of flipped examples predicted as their noisy
                             label), ``accuracy`` on ``train_flipped_true``
el2n            checkpoint   ``el2n_mean`` on ``train`` and, with label noise, ``train_clean`` /
                             ``train_flipped``; the per-example scores go to the artifact
                             ``el2n_<step>`` (Paul et al. 2021: EL2N = ‖softmax(f(x)) − onehot(y)‖₂,
                             against the labels the model was trained on)
==============  ===========  =======================================================================

``eig_steps`` and ``eigs`` write the same ``eig_k`` rows of ``embed`` at a step they both see (a checkpoint that
is also a logged step); ``eigs`` then leaves its copy out, so the history holds one row per (step, measure, layer).

The probe set is the first ``min(512, N_test)`` examples of the test split (or train, if no test split).

``projector_geometry`` in detail: views ``v1 = aug(x)``, ``v2 = aug(x)`` of the probe set ``x`` (the run's
augmentations, drawn under ``torch.manual_seed(0)`` in a forked RNG, so every checkpoint and every run sees the
same views and training randomness is untouched); ``h = representation(v)``, ``z = projector(h)``. Then
``alignment = E ||ẑ1 − ẑ2||²`` (ẑ = z / ||z||), ``uniformity = (U(z1) + U(z2)) / 2`` with
``U(z) = log E_{i<j} exp(−2 ||ẑ_i − ẑ_j||²)`` (lower = more uniform), ``tolerance = (T(z1) + T(z2)) / 2`` with
``T`` the mean cosine similarity of same-class pairs (higher = more tolerant; :func:`workbench.spectrum.tolerance`,
true labels of the probe set; left out for unlabelled data), and the same ``tolerance`` of ``h`` at layer
``embed``. With ``projector="none"`` the projector is the identity and the ``projector`` rows describe ``h``.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._validation import check_labels
from ..models import param_groups, predict, probe_points

__all__ = ["Recorders", "el2n", "PROBE_SET_SIZE", "N_EIGS"]

PROBE_SET_SIZE = 512
N_EIGS = 16


def el2n(logits: Any, labels: Any) -> np.ndarray:
    """EL2N score per example: ``‖softmax(f(x)) − onehot(y)‖₂`` (Paul et al. 2021, "Deep learning on a data
    diet: finding important examples early in training"), in float64.

    ``logits`` ``[N, C]`` (array or tensor), ``labels`` ``[N]`` class ids in ``0 .. C−1``.
    """
    z = torch.as_tensor(np.asarray(logits.detach().cpu() if isinstance(logits, torch.Tensor) else logits),
                        dtype=torch.float64)
    if z.ndim != 2:
        raise ValueError(f"logits must be [N, C] classifier outputs, got shape {tuple(z.shape)}")
    y = torch.as_tensor(check_labels(labels, "labels", min_classes=1))
    if len(y) != len(z):
        raise ValueError(f"labels has {len(y)} entries but logits has {len(z)} rows; pass one label per example")
    if int(y.min()) < 0 or int(y.max()) >= z.shape[1]:
        raise ValueError(f"labels must be class ids in 0..{z.shape[1] - 1} (logits have {z.shape[1]} columns), "
                         f"got range {int(y.min())}..{int(y.max())}")
    return (torch.softmax(z, dim=1) - F.one_hot(y, z.shape[1]).double()).norm(dim=1).numpy()


class Recorders:
    """The recorders switched on for one run; the trainer calls the hooks below."""

    def __init__(self, names: tuple[str, ...], model: nn.Module, dataset: Any, *, labels: np.ndarray | None,
                 flipped: np.ndarray | None, device: torch.device, augment: Callable | None = None,
                 objective: nn.Module | None = None):
        self.names = set(names)
        self.model, self.dataset, self.labels, self.flipped, self.device = model, dataset, labels, flipped, device
        self.augment = augment
        self.projector = getattr(objective, "projector", None)
        if "projector_geometry" in self.names and (self.projector is None or augment is None):
            name = getattr(objective, "name", None) or "none"
            raise ValueError(f"recorder 'projector_geometry' measures the projector output of a joint-embedding "
                             f"objective on augmented views, but objective={name!r} "
                             + ("has no projector" if self.projector is None else "runs without augment")
                             + "; use objective='simclr', 'supcon', 'barlow' or 'vicreg' with augment=(...)")
        self._eig_steps_done: set[int] = set()  # steps whose embed eig_k rows eig_steps wrote
        self._order = {name: i for i, name in enumerate(probe_points(model))}
        self._handles: list[Any] = []
        self._act: dict[str, float] = {}
        if "act_var" in self.names:
            self._hook_activations()

    # ------------------------------------------------------------------ per step
    def _hook_activations(self) -> None:
        from ..models import get_module, probe_points

        for name, path in probe_points(self.model).items():
            def hook(_m, _i, out, name=name):
                if self._armed:
                    t = out[0] if isinstance(out, (tuple, list)) else out
                    if isinstance(t, torch.Tensor) and t.numel() > 1:
                        self._act[name] = t.detach().float().var()
            self._handles.append(get_module(self.model, path).register_forward_hook(hook))
        self._armed = False

    def arm(self, logged: bool) -> None:
        """Called before the forward pass: capture activation variances only on logged steps."""
        if "act_var" in self.names:
            self._armed = logged
            self._act.clear()

    def after_backward(self, step: int, logged: bool) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        if not logged:
            return rows
        if "grad_norm" in self.names:
            for name, params in param_groups(self.model).items():
                grads = [p.grad.detach().double().square().sum() for p in params if p.grad is not None]
                if grads:
                    rows.append({"step": step, "measure": "grad_norm", "split": "train_batch", "layer": name,
                                 "layer_index": self._order.get(name), "value": float(torch.stack(grads).sum().sqrt())})
        if "act_var" in self.names:
            rows += [{"step": step, "measure": "act_var", "split": "train_batch", "layer": name,
                      "layer_index": self._order.get(name), "value": float(v)} for name, v in self._act.items()]
            self._armed = False
        return rows

    def after_step(self, step: int, logged: bool) -> list[dict[str, Any]]:
        """Called after the optimizer update: the ``eig_steps`` rows of the updated weights on logged steps."""
        if not logged or "eig_steps" not in self.names:
            return []
        return self._eig_steps(step)

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    # ------------------------------------------------------------------ per checkpoint
    def _probe_split(self):
        split = self.dataset["test"] if "test" in self.dataset else self.dataset["train"]
        return split.subset(np.arange(min(PROBE_SET_SIZE, len(split))))

    @torch.no_grad()
    def _embed(self, split, transform: Callable | None = None) -> torch.Tensor:
        from ..models.inputs import model_inputs

        was = self.model.training
        self.model.eval()
        try:
            args, kwargs = model_inputs(self.model, split, slice(None), self.device)
            if transform is not None:
                args = (transform(args[0]),)
            from .objectives import representation

            return representation(self.model, args[0], kwargs.get("attention_mask")).double()
        finally:
            self.model.train(was)

    def at_checkpoint(self, step: int, run: Any) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        if "clean_flipped" in self.names and self.flipped is not None and self.flipped.any():
            rows += self._clean_flipped(step)
        if "el2n" in self.names and self.labels is not None:
            rows += self._el2n(step, run)
        if "eig_steps" in self.names and step == 0:  # the initial spectrum; later steps come from after_step
            rows += self._eig_steps(step)
        if "eigs" in self.names:
            rows += self._eigs(step)
        if "align_unif" in self.names:
            rows += self._align_unif(step)
        if "projector_geometry" in self.names:
            rows += self._projector_geometry(step)
        return rows

    def _train_logits(self) -> torch.Tensor:

        return predict(self.model, self.dataset["train"], device=self.device)

    def _clean_flipped(self, step: int) -> list[dict[str, Any]]:
        pred = self._train_logits().argmax(1).numpy()
        f, noisy, true = self.flipped, self.labels, self.dataset["train"].labels
        return [
            {"step": step, "measure": "accuracy", "split": "train_clean",
             "value": float((pred[~f] == noisy[~f]).mean())},
            # fraction of flipped examples predicted as their *noisy* label: memorization (Arpit et al. 2017)
            {"step": step, "measure": "memorized", "split": "train_flipped",
             "value": float((pred[f] == noisy[f]).mean())},
            {"step": step, "measure": "accuracy", "split": "train_flipped_true",
             "value": float((pred[f] == true[f]).mean())},
        ]

    def _el2n(self, step: int, run: Any) -> list[dict[str, Any]]:

        scores = el2n(self._train_logits(), self.labels)
        run.save_artifact(f"el2n_{step:08d}", scores=scores)
        rows = [{"step": step, "measure": "el2n_mean", "split": "train", "value": float(scores.mean())}]
        if self.flipped is not None and self.flipped.any():
            rows += [{"step": step, "measure": "el2n_mean", "split": "train_clean",
                      "value": float(scores[~self.flipped].mean())},
                     {"step": step, "measure": "el2n_mean", "split": "train_flipped",
                      "value": float(scores[self.flipped].mean())}]
        return rows

    def _eigs(self, step: int) -> list[dict[str, Any]]:
        from ..spectrum import effective_rank, rankme

        z = self._embed(self._probe_split())
        zc = z - z.mean(0)
        lam = torch.linalg.eigvalsh(zc.T @ zc / max(len(z) - 1, 1)).flip(0).clamp_min(0)
        rows = [] if step in self._eig_steps_done else [  # eig_steps wrote the same rows at this step
            {"step": step, "measure": f"eig_{k + 1}", "split": "probe", "layer": "embed", "value": float(v)}
            for k, v in enumerate(lam[:N_EIGS])]
        if float(lam.sum()) > 0:
            rows += [{"step": step, "measure": "effective_rank", "split": "probe", "layer": "embed",
                      "value": effective_rank(z)},
                     {"step": step, "measure": "rankme", "split": "probe", "layer": "embed", "value": rankme(z)}]
        return rows

    @torch.no_grad()
    def _eig_steps(self, step: int) -> list[dict[str, Any]]:
        """Top :data:`N_EIGS` covariance eigenvalues of the representation ``h`` (layer ``embed``) and of the
        projector output ``z = projector(h)`` (layer ``projector``, in eval mode) on the probe set."""
        h = self._embed(self._probe_split())
        feats = {"embed": h}
        if self.projector is not None and not isinstance(self.projector, nn.Identity):
            dtype = next((p.dtype for p in self.projector.parameters()), torch.float32)
            was = self.projector.training
            self.projector.eval()
            try:
                feats["projector"] = self.projector(h.to(dtype)).double()
            finally:
                self.projector.train(was)
        rows = []
        for layer, z in feats.items():
            zc = z - z.mean(0)
            lam = torch.linalg.eigvalsh(zc.T @ zc / max(len(z) - 1, 1)).flip(0).clamp_min(0)
            rows += [{"step": step, "measure": f"eig_{k + 1}", "split": "probe", "layer": layer, "value": float(v)}
                     for k, v in enumerate(lam[:N_EIGS])]
        self._eig_steps_done.add(step)
        return rows

    def _align_unif(self, step: int) -> list[dict[str, Any]]:
        if self.augment is None:
            raise ValueError("recorder 'align_unif' needs two augmented views: set RunConfig.augment")
        from ..spectrum import alignment, uniformity

        split = self._probe_split()
        z1, z2 = self._embed(split, self.augment), self._embed(split, self.augment)
        align, unif = alignment(z1, z2), 0.5 * (uniformity(z1) + uniformity(z2))  # both views, as the paper
        return [{"step": step, "measure": "alignment", "split": "probe", "layer": "embed", "value": align},
                {"step": step, "measure": "uniformity", "split": "probe", "layer": "embed", "value": unif}]

    @torch.no_grad()
    def _projector_geometry(self, step: int) -> list[dict[str, Any]]:
        from ..spectrum import alignment, tolerance, uniformity

        split = self._probe_split()
        cuda = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):  # the same views at every checkpoint; training RNG untouched
            torch.manual_seed(0)
            h1, h2 = self._embed(split, self.augment), self._embed(split, self.augment)
        dtype = next((p.dtype for p in self.projector.parameters()), torch.float32)
        was = self.projector.training
        self.projector.eval()
        try:
            z1, z2 = (self.projector(h.to(dtype)).double() for h in (h1, h2))
        finally:
            self.projector.train(was)
        row = {"step": step, "split": "probe"}
        rows = [{**row, "measure": "alignment", "layer": "projector", "value": alignment(z1, z2)},
                {**row, "measure": "uniformity", "layer": "projector",
                 "value": 0.5 * (uniformity(z1) + uniformity(z2))}]
        if split.labels is not None:  # tolerance needs classes
            y = np.asarray(split.labels)
            rows += [{**row, "measure": "tolerance", "layer": layer, "value": 0.5 * (tolerance(a, y) + tolerance(b, y))}
                     for layer, a, b in (("projector", z1, z2), ("embed", h1, h2))]
        return rows

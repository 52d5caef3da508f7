"""Feature reuse vs low-level statistics: fine-tuning on block-shuffled images (Neyshabur et al. 2020, Sec. 3.1)."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from .. import data as wb_data
from .._validation import Data, Instance, Interval, Options, declare
from ..results import tidy
from ._common import Classifier, check_module, loss_and_accuracy

__all__ = ["block_shuffle", "shuffle_transfer", "default_block_sizes", "RANDOM_INIT"]

#: the ``run`` label of the random-init rows of :func:`shuffle_transfer` (the probing figures' baseline name)
RANDOM_INIT = "random-init"


def _image_shape(images: Any, name: str = "images") -> tuple[int, int]:
    if not isinstance(images, (np.ndarray, torch.Tensor)):
        raise TypeError(f"{name} must be a numpy array or torch tensor of images [N, C, H, W] or [N, H, W], got "
                        f"{type(images).__name__}")
    if images.ndim not in (3, 4):
        raise ValueError(f"{name} must be a batch of images [N, C, H, W] or [N, H, W], got shape "
                         f"{tuple(images.shape)}")
    return int(images.shape[-2]), int(images.shape[-1])


@declare(height=Interval(int, 1, None), width=Interval(int, 1, None))
def default_block_sizes(height: int, width: int) -> list[int]:
    """The powers of two ``1, 2, 4, …`` that divide both image sides (the paper's 1 … 224 grid, scaled).

    >>> default_block_sizes(32, 32)
    [1, 2, 4, 8, 16, 32]
    """
    out, b = [], 1
    while height % b == 0 and width % b == 0 and b <= min(height, width):
        out.append(b)
        b *= 2
    return out


def _example_images() -> np.ndarray:
    return np.arange(2 * 1 * 4 * 4, dtype=np.float32).reshape(2, 1, 4, 4)


@declare(images=Data("any", example=_example_images, bad=["images", np.zeros((2, 4))]),
         block_size=Interval(int, 1, None),
         seed=Interval(int, 0, None), per=Options("dataset", "image"))
def block_shuffle(images: np.ndarray | torch.Tensor, block_size: int, *, seed: int = 0,
                  per: str = "dataset") -> tuple[np.ndarray | torch.Tensor, np.ndarray]:
    """Split each image into ``b × b`` blocks and permute the blocks (Neyshabur, Sedghi & Zhang 2020, "What is
    being transferred in transfer learning?", NeurIPS, Sec. 3.1 and Fig. 1).

    An ``H × W`` image has ``B = (H / b)(W / b)`` blocks, numbered row-major; block ``j`` of the output is block
    ``perm[j]`` of the input (every channel moved together, the pixels inside a block kept in place). ``b`` equal to
    the image size is the identity (one block); ``b = 1`` permutes the pixels. Shuffling keeps the low-level
    statistics of each block and destroys the spatial arrangement above the block scale, so the part of the
    pretrained model's advantage that survives small blocks is not feature reuse.

    ``per="dataset"`` (default) draws one permutation for every image — the reading of the paper followed here,
    under which a task stays learnable from scratch and train and test images (shuffled with the same ``seed``)
    share the arrangement; ``per="image"`` draws one per image. Permutations come from
    ``numpy.random.default_rng([seed, b])``.

    Parameters
    ----------
    images : ``[N, C, H, W]`` or ``[N, H, W]`` numpy array or torch tensor; ``b`` must divide ``H`` and ``W``.
    block_size : ``b``.
    seed, per : above.

    Returns
    -------
    (shuffled, perm) : the images (same type, dtype, shape), and the permutation ``[B]`` (``per="dataset"``) or
    ``[N, B]`` (``per="image"``); ``argsort(perm)`` undoes it.

    >>> import numpy as np
    >>> x = np.arange(16.0).reshape(1, 4, 4)
    >>> y, perm = block_shuffle(x, 2, seed=0)
    >>> sorted(y[0, :2, :2].ravel().tolist()) in ([0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15])
    True
    """
    h, w = _image_shape(images)
    b = int(block_size)
    if h % b or w % b:
        raise ValueError(f"block_size={b} does not divide the image size {h} x {w}; choose a divisor of both sides "
                         f"(e.g. {default_block_sizes(h, w)})")
    n = int(images.shape[0])
    gh, gw = h // b, w // b
    n_blocks = gh * gw
    rng = np.random.default_rng([seed, b])
    if per == "dataset":
        perm = rng.permutation(n_blocks)
    else:
        perm = np.stack([rng.permutation(n_blocks) for _ in range(n)]) if n else np.zeros((0, n_blocks), np.int64)
    is_torch = isinstance(images, torch.Tensor)
    x = images if is_torch else np.asarray(images)
    squeeze = x.ndim == 3
    if squeeze:
        x = x[:, None]
    c = x.shape[1]
    # [N, C, gh, b, gw, b] -> [N, C, gh, gw, b, b] -> [N, C, B, b, b]
    blocks = x.reshape(n, c, gh, b, gw, b)
    blocks = (blocks.permute(0, 1, 2, 4, 3, 5) if is_torch else blocks.transpose(0, 1, 2, 4, 3, 5))
    blocks = blocks.reshape(n, c, n_blocks, b, b)
    if per == "dataset":
        moved = blocks[:, :, torch.as_tensor(perm) if is_torch else perm]
    else:
        idx = perm[:, None, :, None, None]
        if is_torch:
            moved = torch.take_along_dim(blocks, torch.as_tensor(idx, device=blocks.device), dim=2)
        else:
            moved = np.take_along_axis(blocks, idx, axis=2)
    moved = moved.reshape(n, c, gh, gw, b, b)
    moved = moved.permute(0, 1, 2, 4, 3, 5) if is_torch else moved.transpose(0, 1, 2, 4, 3, 5)
    out = moved.reshape(n, c, h, w)
    if squeeze:
        out = out[:, 0]
    return (out.contiguous() if is_torch else np.ascontiguousarray(out)), perm


def _shuffled_split(split: wb_data.Split, b: int, seed: int, per: str, target: str | None,
                    name: str) -> wb_data.Split:
    labels = split.labels if target is None else split.factors.get(target)
    if labels is None:
        raise ValueError(f"split {name!r} has no {'labels' if target is None else f'factor {target!r}'}")
    inputs, _ = block_shuffle(np.asarray(split.inputs), b, seed=seed, per=per)
    return wb_data.Split(inputs=inputs, labels=np.asarray(labels), factors=dict(split.factors))


def _model_and_name(run_or_model: Any) -> tuple[nn.Module, str]:
    if isinstance(run_or_model, nn.Module):
        return run_or_model, "pretrained"
    if all(hasattr(type(run_or_model), a) for a in ("load_model", "name", "config")):
        return run_or_model.load_model("final"), str(run_or_model.name)
    raise TypeError(f"run_or_model must be a workbench Run (its final checkpoint is used) or a torch.nn.Module, got "
                    f"{type(run_or_model).__name__}")


def _random_init(model: nn.Module, seed: int) -> nn.Module:
    from ..models import build

    spec = getattr(model, "spec", None)
    if not isinstance(spec, Mapping):
        raise ValueError(f"run_or_model: {type(model).__name__} has no builder spec to rebuild at random init; pass "
                         "baseline= a randomly initialised network of the same architecture, or random_init=False")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build(**spec)


def _example_model() -> nn.Module:
    from ..models import build

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build("cnn", input_shape=(1, 4, 4), num_classes=2, width=2, depth=1, norm=None)


def _example_dataset() -> wb_data.Dataset:
    rng = np.random.default_rng(0)
    splits = {s: wb_data.Split(inputs=rng.normal(size=(12, 1, 4, 4)).astype(np.float32), labels=np.arange(12) % 2)
              for s in ("train", "test")}
    return wb_data.Dataset(name="example", kind="image", splits=splits)


@declare(run_or_model=Data("any", example=_example_model, bad=["run_or_model"]),
         dataset=Data("any", example=_example_dataset, bad=["dataset"]),
         block_sizes=Instance(Sequence, none=True, example=(2, 4)), settings=Instance(Mapping, none=True),
         seeds=Instance(Sequence, example=(0,)), splits=Instance(Sequence, none=True),
         target=Instance(str, none=True), per=Options("dataset", "image"), random_init=Instance(bool),
         baseline=Instance(nn.Module, none=True), device=Instance(str, torch.device, none=True))
def shuffle_transfer(run_or_model: Any, dataset: wb_data.Dataset, *, block_sizes: Sequence[int] | None = None,
                     settings: Mapping[str, Any] | None = None, seeds: Sequence[int] = (0,),
                     splits: Sequence[str] | None = None, target: str | None = None, per: str = "dataset",
                     random_init: bool = True, baseline: nn.Module | None = None,
                     device: str | torch.device | None = None) -> pd.DataFrame:
    """Downstream accuracy after fine-tuning on block-shuffled images, pretrained vs random init (Neyshabur,
    Sedghi & Zhang 2020, "What is being transferred in transfer learning?", NeurIPS, Sec. 3.1, Fig. 2).

    For each block size ``b`` and seed ``s``, every split of ``dataset`` is shuffled by
    :func:`block_shuffle` (``seed=s``: one permutation shared by the training and evaluation images with
    ``per="dataset"``), then :func:`workbench.train.finetune` (``settings``, ``seed=s``) fine-tunes the pretrained
    network and, with ``random_init``, the same architecture at random init (``baseline``, or
    ``build(**model.spec)`` after ``torch.manual_seed(s)``), each with a new linear head; both are scored on the
    shuffled evaluation splits. The gap between the curves at large ``b`` is what pretraining gives; the part of
    it that remains at small ``b``, where no spatial feature of the source survives, comes from low-level
    statistics of the data rather than feature reuse.

    Parameters
    ----------
    run_or_model : a :class:`~workbench.runs.Run` (its final checkpoint; rows named by the run) or a network
        (rows named ``"pretrained"``).
    dataset : an image :class:`~workbench.data.Dataset` with a ``"train"`` split (``[N, C, H, W]`` inputs).
    block_sizes : block sides (each dividing H and W; default :func:`default_block_sizes`, 1 … image size).
    settings : fine-tuning settings (:data:`workbench.train.downstream.FINETUNE_DEFAULTS`).
    seeds : replicate seeds (shuffle permutation, head init, minibatches, random init).
    splits : evaluation splits (default every split but ``"train"``).
    target : a categorical factor to classify instead of the class label.
    per : one permutation for the dataset or one per image (:func:`block_shuffle`).
    random_init, baseline : also fine-tune from random init; the random network (default: rebuilt per seed).
    device : where to fine-tune (default CUDA when available).

    Returns
    -------
    DataFrame in the results schema: one row per (init, block size, seed, split, measure) with ``run`` = the
    run's name / ``"pretrained"`` or :data:`RANDOM_INIT`, ``measure`` ``accuracy`` and ``loss`` (mean
    cross-entropy), ``method`` = ``"finetune"`` and the extra columns ``block_size`` and ``seed``.

    >>> import numpy as np
    >>> from workbench.data import Dataset, Split
    >>> from workbench.models import build
    >>> rng = np.random.default_rng(0)
    >>> ds = Dataset("toy", "image", {s: Split(rng.normal(size=(16, 1, 4, 4)).astype("float32"), np.arange(16) % 2)
    ...                              for s in ("train", "test")})
    >>> t = shuffle_transfer(build("cnn", input_shape=(1, 4, 4), num_classes=2, width=2, depth=1), ds,
    ...                      block_sizes=[1, 4], settings={"steps": 2}, device="cpu")
    >>> sorted(set(zip(t.run, t.block_size)))
    [('pretrained', 1), ('pretrained', 4), ('random-init', 1), ('random-init', 4)]
    """
    from ..train import finetune

    model, name = _model_and_name(run_or_model)
    check_module(baseline, "baseline", none=True)
    if not isinstance(dataset, wb_data.Dataset):
        raise TypeError(f"dataset must be a workbench Dataset of images with a 'train' split, got "
                        f"{type(dataset).__name__}")
    if "train" not in dataset:
        raise ValueError(f"dataset has no 'train' split (splits: {list(dataset)})")
    h, w = _image_shape(np.asarray(dataset["train"].inputs[:1]), "dataset['train'].inputs")
    if block_sizes is None:
        sizes = default_block_sizes(h, w)
    else:
        if isinstance(block_sizes, (str, bytes)) or not len(block_sizes):
            raise ValueError(f"block_sizes must be a non-empty list of block sides, got {block_sizes!r}")
        sizes = []
        for b in block_sizes:
            if isinstance(b, bool) or not isinstance(b, (int, np.integer)) or b < 1:
                raise ValueError(f"block_sizes must hold integers >= 1, got {b!r}")
            if h % b or w % b:
                raise ValueError(f"block_sizes: {b} does not divide the image size {h} x {w}; use divisors of both "
                                 f"sides, e.g. {default_block_sizes(h, w)}")
            sizes.append(int(b))
        if len(set(sizes)) < len(sizes):
            raise ValueError(f"block_sizes repeats a value: {sizes}")
    seed_list = list(seeds)
    if not seed_list or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 0
                                for s in seed_list):
        raise ValueError(f"seeds must be a non-empty list of integers >= 0, got {seeds!r}")
    if len(set(seed_list)) < len(seed_list):
        raise ValueError(f"seeds repeats a value: {seed_list}")
    eval_splits = [s for s in dataset if s != "train"] if splits is None else list(splits)
    if not eval_splits:
        raise ValueError("splits is empty (the dataset has only 'train'); pass splits=['train'] to score the "
                         "training images, or a dataset with a test split")
    for s in eval_splits:
        if s not in dataset:
            raise ValueError(f"splits: {s!r} is not a split of the dataset (splits: {list(dataset)})")
    rows = []
    for b in sizes:
        for seed in seed_list:
            seed = int(seed)
            shuffled = {s: _shuffled_split(dataset[s], b, seed, per, target, s) for s in {"train", *eval_splits}}
            ds_b = wb_data.Dataset(name=f"{dataset.name}-shuffle{b}", kind=dataset.kind, splits=shuffled,
                                   class_names=dataset.class_names)
            inits = [(name, model)]
            if random_init:
                inits.append((RANDOM_INIT, baseline if baseline is not None else _random_init(model, seed)))
            for label, net0 in inits:
                net, head = finetune(net0, ds_b, settings=settings, seed=seed, device=device)
                clf = Classifier(net, head)
                for s in eval_splits:
                    loss, acc = loss_and_accuracy(clf, shuffled[s])
                    for measure, value in (("accuracy", acc), ("loss", loss)):
                        rows.append({"run": label, "measure": measure, "split": s, "value": value,
                                     "method": "finetune", "block_size": b, "seed": seed})
    return tidy(rows)


"""Training throughput (examples/s) of every pretraining objective through the real trainer.

Each objective trains the model its data needs — images: the residual CNN (width 16, depth 3) on
``shapes`` 32 x 32; tokens: the 4-layer transformer (dim 64) on ``tiny-language`` — with batch 128
(64 for tokens) and the objective's default options (two views with crop/flip/colour augmentations for
the joint-embedding objectives, MLP projector). Throughput is measured by running ``workbench.train.train``
for ``S`` and ``3 S`` steps in fresh stores (after a 2-step warm-up run that fills the dataset cache) and
dividing the extra examples by the extra time, so set-up (model build, first and last checkpoint) cancels; the trainer's
own logging and
held-out evaluation at its schedule are included.

The peer is a plain PyTorch loop (the same CNN, ``F.cross_entropy``, AdamW, the same batches, nothing
else), run with the torch threads the trainer's thread policy picks (``workbench/_threads.py``; ``WORKBENCH_THREADS``
sets both): ``supervised`` / peer shows what the trainer (logging, recorders, augmentation plumbing, RNG
reseeding, checkpoint schedule) costs. Contrastive objectives process ``views`` views per example, so
their examples/s is expected to be about 1/views of the supervised figure or lower.

    python benchmarks/bench_train.py [--steps 20] [--objectives supervised,simclr,...]

Results: ``benchmarks/results/train.json``. On a CUDA machine the same objectives are also timed there
(float32; the trainer has no mixed-precision mode yet).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

IMAGE = dict(dataset="shapes", dataset_options={"n_train": 4000, "n_test": 500, "n_ood": 500, "size": 32, "seed": 0},
             model="cnn", model_options={"width": 16, "depth": 3}, batch_size=128, lr=1e-3)
TOKENS = dict(dataset="tiny-language", dataset_options={"n_train": 4000, "n_test": 500, "seed": 0},
              model="transformer", model_options={"dim": 64, "depth": 4, "heads": 4}, batch_size=64, lr=1e-3)
OBJECTIVES = {
    "supervised": dict(IMAGE),
    "simclr": dict(IMAGE, augment=("crop", "flip", "color"), projector="mlp"),
    "supcon": dict(IMAGE, augment=("crop", "flip", "color"), projector="mlp"),
    "barlow": dict(IMAGE, augment=("crop", "flip", "color"), projector="mlp"),
    "vicreg": dict(IMAGE, augment=("crop", "flip", "color"), projector="mlp"),
    "distill": dict(IMAGE, projector="mlp"),
    "mae": dict(IMAGE),
    "autoencoder": dict(IMAGE),
    "mlm": dict(TOKENS),
    "clm": dict(TOKENS),
}


def _time_train(cfg, steps: int, device: str) -> float:
    from workbench.runs import RunConfig, RunStore
    from workbench.train import train

    with tempfile.TemporaryDirectory() as root:
        store = RunStore(root)
        config = RunConfig(**cfg, steps=steps, checkpoints=2)
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        train(config, store, device=device, progress=False)
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0


def objective_throughput(name: str, steps: int, device: str) -> dict:
    cfg = dict(OBJECTIVES[name], objective=name)
    _time_train(cfg, 2, device)  # warm-up: dataset generation/caches and first-call kernels stay out of both timings
    short = _time_train(cfg, steps, device)
    long = _time_train(cfg, 3 * steps, device)
    examples = 2 * steps * cfg["batch_size"]
    return {"objective": name, "model": cfg["model"], "dataset": cfg["dataset"], "batch_size": cfg["batch_size"],
            "seconds_short": short, "seconds_long": long, "examples_per_s": examples / max(long - short, 1e-9)}


def plain_loop_throughput(steps: int, device: str) -> float:
    """The peer: a bare PyTorch supervised loop on the same CNN and data (examples/s)."""
    from workbench import data, models

    ds = data.load("shapes", **IMAGE["dataset_options"])
    x = torch.as_tensor(ds["train"].inputs, dtype=torch.float32, device=device)
    y = torch.as_tensor(ds["train"].labels, device=device)
    torch.manual_seed(0)
    model = models.build("cnn", input_shape=tuple(ds.input_shape), num_classes=ds.num_classes,
                         **IMAGE["model_options"]).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=IMAGE["lr"])
    bs = IMAGE["batch_size"]

    def run(n: int) -> float:
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for t in range(n):
            i = (t * bs) % (len(y) - bs)
            loss = F.cross_entropy(model(x[i:i + bs]), y[i:i + bs])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    model.train()
    run(3)  # warm-up
    return 2 * steps * bs / max(run(3 * steps) - run(steps), 1e-9)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--objectives", default=",".join(OBJECTIVES))
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    names = [n for n in args.objectives.split(",") if n]
    unknown = sorted(set(names) - set(OBJECTIVES))
    if unknown:
        raise SystemExit(f"unknown objective(s) {unknown}; choose from {sorted(OBJECTIVES)}")
    load = os.getloadavg()[0]
    if load > (os.cpu_count() or 1):
        print(f"warning: load average {load:.1f} exceeds the {os.cpu_count()} cores; timings are unreliable")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    record = {"benchmark": "train", "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
              "threads": torch.get_num_threads(), "steps": args.steps, "load_average": load, "results": {}}
    from workbench._threads import thread_policy

    with thread_policy(batch_size=IMAGE["batch_size"]) as threads:  # the trainer's count, for the peer too
        record["threads"] = threads
    print(f"torch threads (trainer's policy, peer too): {threads}")
    for device in devices:
        with thread_policy(batch_size=IMAGE["batch_size"]):
            peer = plain_loop_throughput(args.steps, device)
        rows = []
        print(f"[{device}] plain PyTorch supervised loop (peer): {peer:9.0f} examples/s")
        for name in names:
            r = objective_throughput(name, args.steps, device)
            rows.append(r)
            extra = f"  ({r['examples_per_s'] / peer:.2f}x the plain loop)" if name == "supervised" else ""
            print(f"[{device}] {name:12s} {r['model']:12s} {r['examples_per_s']:9.0f} examples/s{extra}")
        record["results"][device] = {"plain_loop_examples_per_s": peer, "objectives": rows}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train.json").write_text(json.dumps(record, indent=2))
    print(f"wrote {out / 'train.json'}")


if __name__ == "__main__":
    main()

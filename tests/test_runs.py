"""Run store: config hashing, atomic writes, training once, resume after interruption/kill, concurrency."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from workbench.results import COLUMNS
from workbench.runs import RunConfig, RunStore, atomic_write_text, checkpoint_schedule
from workbench.train import symmetric_label_noise, train

# a tiny, fast run: MLP on a Gaussian mixture
TINY = dict(dataset="gaussian-mixture", dataset_options={"n_train": 256, "n_test": 64, "n_ood": 64, "dim": 8},
            model="mlp", model_options={"hidden": [16]}, steps=30, batch_size=32, checkpoints=3, lr=1e-2)


def _weights(run, step=None):
    step = run.checkpoints()[-1] if step is None else step
    return load_file(run.checkpoint_dir(step) / "model.safetensors")


# ------------------------------------------------------------------------------------------ config
def test_config_id_is_sha256_of_canonical_json():
    cfg = RunConfig(dataset="shapes", model_options={"width": 8, "depth": 2}, label_noise=0.3)
    expected = {"batch_size": 128, "checkpoints": 6, "dataset": "shapes", "dataset_options": {},
                "label_noise": 0.3, "lr": 0.001, "model": "cnn", "model_options": {"depth": 2, "width": 8},
                "objective": "supervised", "optimizer": "adamw", "seed": 0, "steps": 500, "weight_decay": 0.0,
                "augment": [], "augment_strength": 0.5, "data_fraction": 1.0, "embed_dim": 64, "init_scale": 1.0,
                "label_smoothing": 0.0, "mask_ratio": 0.5, "noise_type": "symmetric", "projector": "none",
                "projector_depth": 2, "recorders": ["clean_flipped"], "schedule": "constant", "temperature": 0.2,
                "views": 2, "warmup": 0}
    blob = json.dumps(expected, sort_keys=True, separators=(",", ":"))
    assert cfg.id == hashlib.sha256(blob.encode()).hexdigest()[:16]


def test_config_id_ignores_key_order_and_container_type():
    a = RunConfig.from_dict({"model_options": {"hidden": (16, 8), "dropout": 0.0}, "seed": 1})
    b = RunConfig.from_dict({"seed": 1, "model_options": {"dropout": 0.0, "hidden": [16, 8]}})
    assert a.id == b.id
    assert a.id != a.replace(seed=2).id
    assert a.id != a.replace(label_noise=0.1).id


@pytest.mark.parametrize("bad, match", [
    ({"objectiv": "supervised"}, "unknown config field"),
    ({"label_noise": -0.1}, "label_noise"),
    ({"label_noise": 1.5}, "label_noise"),
    ({"objective": "simclr-typo"}, "objective"),
    ({"lr": 0}, "lr"),
    ({"steps": -1}, "steps"),
    ({"batch_size": 0}, "batch_size"),
    ({"objective": "none", "label_noise": 0.2}, "label_noise"),
    ({"objective": "simclr", "label_noise": 0.2}, "does not read labels"),
    ({"projector": "mlp"}, "projector"),
    ({"objective": "simclr", "temperature": 0}, "temperature"),
    ({"augment": ["crop", "sharpen"]}, "augment"),
    ({"recorders": ["el2n", "gpu_temp"]}, "recorders"),
    ({"noise_type": "asymmetric"}, "noise_type"),
    ({"data_fraction": 0.0}, "data_fraction"),
    ({"views": 1}, "views"),
    ({"schedule": "linear"}, "schedule"),
    ({"label_smoothing": 0.1, "objective": "simclr"}, "label_smoothing"),
])
def test_bad_configs_are_rejected(bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        RunConfig.from_dict(bad)


def test_checkpoint_schedule_is_log_spaced_with_zero_and_final():
    s = checkpoint_schedule(1000, 4)
    assert s == [0, 1, 10, 100, 1000]
    assert checkpoint_schedule(0, 5) == [0]
    short = checkpoint_schedule(7, 20)
    assert short[-1] == 7 and len(set(short)) == len(short)


# ------------------------------------------------------------------------------------------ atomic io
def test_atomic_write_keeps_old_file_when_interrupted(tmp_path, monkeypatch):
    p = tmp_path / "status.json"
    atomic_write_text(p, "old")

    def boom(*_a, **_k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_text(p, "new")
    monkeypatch.undo()
    assert p.read_text() == "old"
    assert [f.name for f in tmp_path.iterdir()] == ["status.json"]  # no temp file left behind


# ------------------------------------------------------------------------------------------ label noise
@pytest.mark.parametrize("rate", [0.0, 0.1, 0.3, 1.0])
def test_symmetric_noise_flips_exactly_the_requested_fraction(rate):
    y = np.repeat(np.arange(5), 200)
    noisy, flipped = symmetric_label_noise(y, rate, 5, seed=3)
    assert flipped.sum() == round(rate * len(y))
    assert np.array_equal(flipped, noisy != y)  # every flip changes the class
    if rate > 0:
        # flips go to every other class about equally often
        counts = np.bincount(((noisy[flipped] - y[flipped]) % 5), minlength=5)
        assert counts[0] == 0 and counts[1:].min() > 0.15 * flipped.sum()


# ------------------------------------------------------------------------------------------ training
def test_train_once_then_reuse(tmp_path):
    store = RunStore(tmp_path)
    run = train(TINY, store, name="tiny", progress=False)
    assert run.done and run.checkpoints() == checkpoint_schedule(30, 3)
    mtime = (run.checkpoint_dir(30) / "model.safetensors").stat().st_mtime_ns
    again = train(TINY, store, progress=False)
    assert again.id == run.id
    assert (run.checkpoint_dir(30) / "model.safetensors").stat().st_mtime_ns == mtime
    df = store.list()
    assert list(df["id"]) == [run.id] and df.loc[0, "state"] == "done" and df.loc[0, "name"] == "tiny"
    # saved checkpoints (count) and the config field `checkpoints` are distinct columns
    assert df.columns.is_unique and df.loc[0, "n_checkpoints"] == len(run.checkpoints()) == 4
    assert df.loc[0, "checkpoints"] == run.config.checkpoints
    hist = run.history()
    assert list(hist.columns) == list(COLUMNS) and set(hist["run"]) == {"tiny"}
    assert {"loss", "accuracy"} <= set(hist["measure"])
    assert {"test", "ood", "train_batch"} <= set(hist["split"])
    # the loss and the held-out accuracy are model-level: no layer
    assert hist["layer"].isna().all() and hist["layer_index"].isna().all()
    # the supervised objective learns: held-out accuracy at the end beats step 0
    acc = hist[(hist.measure == "accuracy") & (hist.split == "test")].set_index("step")["value"]
    assert acc.loc[30] > acc.loc[0] + 0.2


def test_same_seed_same_weights_other_seed_differs(tmp_path):
    a = train(TINY, tmp_path / "a", progress=False)
    b = train(TINY, tmp_path / "b", progress=False)
    c = train({**TINY, "seed": 1}, tmp_path / "c", progress=False)
    wa, wb, wc = _weights(a), _weights(b), _weights(c)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)


def test_resume_after_interruption_equals_uninterrupted(tmp_path):
    full = train(TINY, tmp_path / "full", progress=False)
    store = RunStore(tmp_path / "resumed")
    part = train(TINY, store, progress=False, stop_after=17)
    assert not part.done and part.status["state"] == "interrupted"
    assert part.checkpoints()[-1] < 30
    resumed = train(TINY, store, progress=False)
    assert resumed.done
    w_full, w_res = _weights(full), _weights(resumed)
    assert all(torch.equal(w_full[k], w_res[k]) for k in w_full)
    h_full, h_res = full.history(), resumed.history()
    assert len(h_full) == len(h_res)
    np.testing.assert_allclose(h_full["value"].to_numpy(), h_res["value"].to_numpy(), rtol=0, atol=1e-12)


_CHILD = textwrap.dedent("""
    import os, signal, sys, json
    from workbench.train import train
    cfg = json.loads(sys.argv[2])
    kill_at = int(sys.argv[3])
    def cb(step, metrics):
        if kill_at and step >= kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
    train(cfg, sys.argv[1], progress=False, callback=cb)
""")


def _child(store, cfg, kill_at=0):
    return subprocess.Popen([sys.executable, "-c", _CHILD, str(store), json.dumps(cfg), str(kill_at)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_killed_process_resumes_from_last_checkpoint(tmp_path):
    cfg = {**TINY, "steps": 60, "checkpoints": 4}
    proc = _child(tmp_path / "s", cfg, kill_at=25)
    proc.wait(timeout=120)
    assert proc.returncode == -9
    store = RunStore(tmp_path / "s")
    run = store.get(RunConfig.from_dict(cfg))
    # the owner is gone: the run reads "interrupted" at its last checkpoint (it said "running" for ever before)
    status = run.status
    assert status["state"] == "interrupted" and status["step"] == run.checkpoints()[-1]
    assert 0 < status["step"] < 60 and f"pid {proc.pid}" in status["error"]
    assert store.list().loc[0, "state"] == "interrupted"
    resumed = train(cfg, store, progress=False)
    full = train(cfg, tmp_path / "ref", progress=False)
    w1, w2 = _weights(resumed), _weights(full)
    assert all(torch.equal(w1[k], w2[k]) for k in w1)


def test_a_running_run_stays_running_while_its_owner_holds_the_lock(tmp_path):
    store = RunStore(tmp_path)
    run = store.create(TINY)
    with run.lock():  # as train() does; flock is per open file, so this process's other opens see it held
        run.set_status("running", 0)
        assert run.status["state"] == "running" and run.status["pid"] == os.getpid()
    assert run.status["state"] == "interrupted"  # released without finishing: the owner is gone


def test_two_processes_on_one_store(tmp_path):
    cfg = {**TINY, "steps": 40}
    procs = [_child(tmp_path, cfg) for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=180)
        assert p.returncode == 0, err.decode()[-2000:]
    store = RunStore(tmp_path)
    assert len(store.ids()) == 1
    run = store.runs()[0]
    assert run.done
    hist = run.history()
    # trained exactly once: no step is logged twice
    assert not hist.duplicated(["step", "measure", "split"]).any()
    assert run.checkpoints() == checkpoint_schedule(40, 3)


def test_label_noise_run_records_flips_and_memorization(tmp_path):
    cfg = {**TINY, "label_noise": 0.25}
    run = train(cfg, tmp_path, progress=False)
    art = run.load_artifact("label_noise")
    assert art["flipped"].sum() == round(0.25 * 256)
    assert {"train_clean", "train_flipped"} <= set(run.history()["split"])


def test_history_and_downstream_stored_by_older_versions_still_load(tmp_path):
    """Run stores written before the results schema (a ``metric`` column, "" for no layer, no ``layer_index``)
    read as today's tables."""
    store = RunStore(tmp_path)
    run = store.create(TINY, name="old")
    atomic_write_text(run.path / "history.csv", "step,metric,split,layer,value\n"
                      "0,accuracy,test,,0.25\n1,loss,train_batch,,2.5\n"
                      "1,grad_norm,train_batch,fc1,3.0\n1,grad_norm,train_batch,head,4.0\n"
                      "2,grad_norm,train_batch,fc1,5.0\n2,grad_norm,train_batch,head,6.0\n")
    hist = run.history()
    assert list(hist.columns) == list(COLUMNS)
    assert hist[["step", "measure", "split", "value"]].values.tolist() == [
        [0, "accuracy", "test", 0.25], [1, "loss", "train_batch", 2.5], [1, "grad_norm", "train_batch", 3.0],
        [1, "grad_norm", "train_batch", 4.0], [2, "grad_norm", "train_batch", 5.0],
        [2, "grad_norm", "train_batch", 6.0]]
    assert hist["layer"].isna().tolist() == [True, True, False, False, False, False]
    # the layers of a measure are numbered in the order the recorder wrote them
    assert hist["layer_index"].tolist()[2:] == [0, 1, 0, 1] and hist["layer_index"][:2].isna().all()
    atomic_write_text(run.path / "downstream.csv", "step,task,method,label_fraction,layer,split,metric,value\n"
                      "30,label,linear,1.0,fc1,test,accuracy,0.75\n30,label,finetune,0.5,embed,test,accuracy,0.5\n")
    down = run.downstream()
    assert list(down.columns) == [*COLUMNS, "task", "method", "label_fraction"]
    assert down[["run", "step", "layer", "measure", "split", "value", "method", "label_fraction"]].values.tolist() == [
        ["old", 30, "fc1", "accuracy", "test", 0.75, "linear", 1.0],
        ["old", 30, "embed", "accuracy", "test", 0.5, "finetune", 0.5]]
    assert down["layer_index"].isna().all()  # not stored by older versions: unknown


def test_history_rows_keep_their_layers(tmp_path):
    """Per-layer recorders store the probe point's position in the model; model-level rows have no layer."""
    from workbench.models import probe_points

    cfg = {**TINY, "recorders": ["grad_norm", "clean_flipped"]}
    run = train(cfg, tmp_path, progress=False)
    hist = run.history()
    grad = hist[hist.measure == "grad_norm"]
    order = {name: i for i, name in enumerate(probe_points(run.load_model()))}
    assert len(grad) and (grad["layer_index"] == grad["layer"].map(order)).all()
    assert hist.loc[hist.measure != "grad_norm", "layer"].isna().all()


def test_random_init_baseline_has_only_step_zero(tmp_path):
    run = train({**TINY, "objective": "none"}, tmp_path, progress=False)
    assert run.done and run.checkpoints() == [0] and run.config.steps == 0


def test_store_get_errors(tmp_path):
    store = RunStore(tmp_path)
    with pytest.raises(KeyError, match="no run"):
        store.get("nope")
    with pytest.raises(TypeError):
        store.get(3.5)


def test_cli_runs_list(tmp_path):
    train(TINY, tmp_path, name="tiny", progress=False)
    out = subprocess.run([sys.executable, "-m", "workbench.cli", "runs", "list", "--store", str(tmp_path),
                          "--format", "csv"], capture_output=True, text=True, check=True).stdout
    assert "tiny" in out and "gaussian-mixture" in out and out.count("\n") == 2
    ver = subprocess.run([sys.executable, "-m", "workbench.cli", "--version"], capture_output=True, text=True)
    assert ver.stdout.strip().startswith("workbench ")

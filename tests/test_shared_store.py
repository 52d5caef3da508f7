"""A run store and an activation cache shared by many processes: the lock file of ``workbench._locks`` (exclusion,
stale take-over, heartbeat, timeout), training one run from several processes, extracting one cache from six.

Processes are started with ``spawn`` (fresh interpreters, as on a cluster). No test asserts a duration: they wait for
states, each with a generous hang guard.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from workbench import _locks
from workbench._locks import FileLock

GUARD = 120  # seconds: hang guard of every wait (never reached when things work)
CTX = mp.get_context("spawn")


def _join_all(procs, guard=GUARD):
    try:
        for p in procs:
            p.join(timeout=guard)
            assert p.exitcode == 0, f"worker {p.name} ended with exit code {p.exitcode}"
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()


# ----------------------------------------------------------------------------------------------- the lock
def _count_worker(lock_path: str, counter: str, inside: str, n: int, go) -> None:
    assert go.wait(GUARD)
    for _ in range(n):
        with FileLock(lock_path, timeout=GUARD):
            try:  # a second holder at the same time would find the marker present
                fd = os.open(inside, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                os.close(fd)
            except FileExistsError:
                with open(counter + ".overlaps", "a") as f:
                    f.write("overlap\n")
            value = int(Path(counter).read_text())  # read, then write: a lost update without exclusion
            Path(counter).write_text(str(value + 1))
            os.unlink(inside)


def test_lock_excludes_processes(tmp_path):
    k, n = 4, 40
    counter, inside = tmp_path / "counter", tmp_path / "inside"
    counter.write_text("0")
    go = CTX.Event()
    procs = [CTX.Process(target=_count_worker, args=(str(tmp_path / "c.lock"), str(counter), str(inside), n, go),
                         name=f"counter-{i}") for i in range(k)]
    for p in procs:
        p.start()
    go.set()
    _join_all(procs)
    assert int(counter.read_text()) == n * k
    assert not (tmp_path / "counter.overlaps").exists()
    assert not (tmp_path / "c.lock").exists()  # released
    assert sorted(p.name for p in tmp_path.iterdir()) == ["counter"]  # no temporary files left


def _die_holding(lock_path: str) -> None:
    FileLock(lock_path, expire=600).acquire()
    os._exit(0)  # no release: the lock file stays, naming a pid that is gone


def test_a_lock_of_a_dead_process_on_this_machine_is_taken_over(tmp_path):
    path = tmp_path / "x.lock"
    p = CTX.Process(target=_die_holding, args=(str(path),))
    p.start()
    p.join(GUARD)
    assert p.exitcode == 0
    owner = json.loads(path.read_text())
    assert owner["pid"] == p.pid and owner["host"] == socket.gethostname() and owner["expire"] == 600
    # its heartbeat is fresh and expires in 600 s: only "the owner is gone" lets us in before the guard
    with FileLock(path, timeout=GUARD) as lock:
        assert json.loads(path.read_text())["token"] == lock.token
    assert not path.exists()


def _foreign(path: Path, *, age: float, expire: float, pid: int = 12345) -> None:
    """A lock file as a process on another machine leaves it, its last heartbeat ``age`` seconds ago."""
    rec = {"host": "elsewhere", "node": "elsewhere/boot/1", "pid": pid, "start": None, "token": "f" * 32,
           "created": "2026-01-01T00:00:00+00:00", "expire": expire}
    path.write_text(json.dumps(rec))
    t = time.time() - age
    os.utime(path, (t, t))


def test_an_expired_lock_of_another_machine_is_taken_over_and_a_fresh_one_is_not(tmp_path):
    fresh, old = tmp_path / "fresh.lock", tmp_path / "old.lock"
    _foreign(fresh, age=0, expire=600)
    _foreign(old, age=3600, expire=60)
    assert not FileLock(fresh).acquire(blocking=False)
    assert json.loads(fresh.read_text())["token"] == "f" * 32  # untouched
    with pytest.raises(TimeoutError, match=r"pid 12345 on host elsewhere"):
        FileLock(fresh, timeout=0.05).acquire()
    with FileLock(old, timeout=GUARD) as lock:
        assert json.loads(old.read_text())["token"] == lock.token
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh.lock"]  # the stale file was removed, no leftovers


def _race_worker(lock_path: str, go, results, done) -> None:
    lock = FileLock(lock_path)
    assert go.wait(GUARD)
    got = lock.acquire(blocking=False)
    results.put(got)
    assert done.wait(GUARD)
    if got:
        lock.release()


def test_waiters_racing_for_one_stale_lock_exactly_one_wins(tmp_path):
    path = tmp_path / "x.lock"
    _foreign(path, age=3600, expire=60)
    go, done, results = CTX.Event(), CTX.Event(), CTX.Queue()
    procs = [CTX.Process(target=_race_worker, args=(str(path), go, results, done), name=f"racer-{i}")
             for i in range(4)]
    for p in procs:
        p.start()
    try:
        go.set()
        got = [results.get(timeout=GUARD) for _ in procs]
    finally:
        done.set()
    _join_all(procs)
    assert sorted(got) == [False, False, False, True]
    assert not path.exists()


def test_threads_racing_for_a_stale_lock_exactly_one_wins_every_round(tmp_path):
    path = tmp_path / "x.lock"
    for _ in range(30):
        _foreign(path, age=3600, expire=60)
        barrier, got = threading.Barrier(4), []

        def race(barrier=barrier, got=got):
            lock = FileLock(path)
            barrier.wait(GUARD)
            if lock.acquire(blocking=False):
                got.append(lock)

        threads = [threading.Thread(target=race) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(GUARD)
        assert len(got) == 1
        assert json.loads(path.read_text())["token"] == got[0].token
        got[0].release()
    assert list(tmp_path.iterdir()) == []


def _hold_as_another_machine(lock_path: str, expire: float, heartbeat: float, ready, stop, lost: bool) -> None:
    import warnings

    _locks._NODE = "another-machine"  # only the heartbeat can show this holder is alive
    lock = FileLock(lock_path, expire=expire, heartbeat=heartbeat)
    lock.acquire()
    ready.set()
    assert stop.wait(GUARD)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lock.release()
    assert lock.lost is lost
    assert [w.category for w in caught] == ([_locks.LockWarning] if lost else [])


def test_the_heartbeat_keeps_a_long_holder_s_lock(tmp_path):
    path, expire = tmp_path / "x.lock", 3.0
    ready, stop = CTX.Event(), CTX.Event()
    p = CTX.Process(target=_hold_as_another_machine, args=(str(path), expire, 0.1, ready, stop, False))
    p.start()
    try:
        assert ready.wait(GUARD)
        first = os.stat(path).st_mtime
        tries, guard = 0, time.monotonic() + GUARD
        # the holder's lock lives for two expiry periods on its own heartbeats (mtimes); nobody may take it
        while os.stat(path).st_mtime - first < 2 * expire:
            assert time.monotonic() < guard, "the holder's heartbeat never advanced the lock's mtime"
            assert not FileLock(path).acquire(blocking=False)
            tries += 1
            time.sleep(0.05)
        assert tries > 0 and json.loads(path.read_text())["pid"] == p.pid
    finally:
        stop.set()
    _join_all([p])
    assert not path.exists()


def test_without_a_heartbeat_the_lock_of_another_machine_expires(tmp_path):
    # the control of the test above: the same holder without heartbeats is taken over
    path = tmp_path / "x.lock"
    ready, stop = CTX.Event(), CTX.Event()
    p = CTX.Process(target=_hold_as_another_machine, args=(str(path), 1.0, 0, ready, stop, True))
    p.start()
    try:
        assert ready.wait(GUARD)
        with FileLock(path, timeout=GUARD) as lock:
            assert json.loads(path.read_text())["token"] == lock.token
            stop.set()
            _join_all([p])  # the old holder finds out on release: it warns and sets `lost`, and leaves our lock
            assert json.loads(path.read_text())["token"] == lock.token
    finally:
        stop.set()
    _join_all([p])


def test_timeout_names_the_holder_and_errors_are_clear(tmp_path):
    path = tmp_path / "x.lock"
    with FileLock(path, timeout=GUARD):
        errors = []

        def wait():
            try:
                FileLock(path, timeout=0.1).acquire()
            except TimeoutError as err:
                errors.append(str(err))

        t = threading.Thread(target=wait)
        t.start()
        t.join(GUARD)
        assert len(errors) == 1
        assert f"pid {os.getpid()} on host {socket.gethostname()}" in errors[0] and "timeout=0.1" in errors[0]
        assert str(path) in errors[0]
        # not re-entrant: the holding thread gets False without waiting, and an error instead of a deadlock
        assert FileLock(path).acquire(blocking=False) is False
        with pytest.raises(RuntimeError, match="not re-entrant"):
            FileLock(path).acquire()
    with pytest.raises(ValueError, match="expire must be > 0"):
        FileLock(path, expire=0)
    with pytest.raises(ValueError, match=r"heartbeat=.*shorter than expire"):
        FileLock(path, expire=5, heartbeat=5)
    with pytest.raises(ValueError, match="timeout must be"):
        FileLock(path, timeout=-1)
    with pytest.raises(TypeError, match="path must be a file path"):
        FileLock(3)
    with pytest.raises(RuntimeError, match="not held"):
        FileLock(path).release()


# ----------------------------------------------------------------------------------------------- the run store
TINY = dict(dataset="gaussian-mixture", dataset_options={"n_train": 256, "n_test": 64, "n_ood": 64, "dim": 8},
            model="mlp", model_options={"hidden": [16]}, steps=30, batch_size=32, checkpoints=3, lr=1e-2)


def _train_worker(store: str, cfg: dict, trained: str, ready, go) -> None:
    import torch

    from workbench.train import train

    torch.set_num_threads(1)
    ready.set()
    assert go.wait(GUARD)

    def callback(step, metrics):  # runs only in the process that trains
        with open(trained, "a") as f:
            f.write(f"{os.getpid()} {step}\n")

    run = train(cfg, store, progress=False, callback=callback)
    assert run.done


def test_processes_training_one_run_train_it_once(tmp_path):
    from safetensors.torch import load_file

    from workbench.runs import RunConfig, RunStore, checkpoint_schedule
    from workbench.train import train

    store, trained = tmp_path / "store", tmp_path / "trained.txt"
    readies, go = [CTX.Event() for _ in range(3)], CTX.Event()
    procs = [CTX.Process(target=_train_worker, args=(str(store), TINY, str(trained), r, go), name=f"trainer-{i}")
             for i, r in enumerate(readies)]
    for p in procs:
        p.start()
    try:
        assert all(r.wait(GUARD) for r in readies)
    finally:
        go.set()
    _join_all(procs, guard=3 * GUARD)
    lines = [line.split() for line in trained.read_text().splitlines()]
    assert len({pid for pid, _ in lines}) == 1  # one process trained; the others waited, then reused the run
    steps = [int(s) for _, s in lines]
    assert steps == sorted(set(steps))  # no step twice
    s = RunStore(store)
    run = s.get(RunConfig.from_dict(TINY))
    assert s.ids() == [run.id] and run.done
    assert run.checkpoints() == checkpoint_schedule(30, 3)
    assert not run.history().duplicated(["step", "measure", "split", "layer"]).any()
    assert s.check().empty, s.check().to_string()
    leftovers = sorted(p.name for p in run.path.iterdir() if p.name.startswith(".") and p.name != ".lock"
                       and p.name != ".manifest.lock")
    assert leftovers == []  # no lock file held, no temporary file
    ref = train(TINY, tmp_path / "ref", progress=False)  # an independent training in this process
    step = run.checkpoints()[-1]
    w, w_ref = (load_file(r.checkpoint_dir(step) / "model.safetensors") for r in (run, ref))
    assert w.keys() == w_ref.keys() and all((w[k] == w_ref[k]).all() for k in w)


def test_a_run_trained_on_another_machine_reads_running_until_its_heartbeat_expires(tmp_path):
    # on NFS only the lock file tells: no flock is involved here
    from workbench.runs import RunStore

    store = RunStore(tmp_path)
    run = store.create(TINY)
    run.set_status("running", 0)
    _foreign(run.path / ".lock.held", age=0, expire=600)
    assert run.status["state"] == "running"
    assert store.repair()["action"].str.startswith("skipped").tolist() == [True]
    live = tmp_path / ".imports" / "import-live"  # an import in progress elsewhere: repair keeps its staging
    live.mkdir(parents=True)
    _foreign(tmp_path / ".imports" / ".import-live.held", age=0, expire=600)
    store.repair()
    assert live.exists()
    _foreign(run.path / ".lock.held", age=3600, expire=60)  # its heartbeat stopped an hour ago: the owner is gone
    _foreign(tmp_path / ".imports" / ".import-live.held", age=3600, expire=60)
    status = run.status
    assert status["state"] == "interrupted" and "ended without finishing" in status["error"]
    actions = store.repair()
    assert not live.exists() and "interrupted import" in actions["action"].iloc[0]
    assert not (run.path / ".lock.held").exists() and store.check().empty


# ----------------------------------------------------------------------------------------------- activation cache
SEEDS = (0, 1, 2, 3, 4)  # five models: five extraction jobs, three layers each


def _model_and_data(seed: int):
    import numpy as np
    import torch

    from workbench import models

    torch.manual_seed(seed)
    model = models.build("mlp", {"input_shape": (8,), "num_classes": 3, "hidden": [16, 16]})
    x = np.random.default_rng(7).normal(size=(64, 8)).astype(np.float32)
    return model, x


def _count_computations(model, seed: int, log: str) -> None:
    from workbench.models import get_module, select_layers

    for name, path in select_layers(model, None).items():
        def hook(_module, _inputs, _output, name=name):
            with open(log, "a") as f:
                f.write(f"{seed}:{name}\n")
        get_module(model, path).register_forward_hook(hook)


def _extract_worker(cache: str, log: str, out: str, offset: int, ready, go) -> None:
    import numpy as np
    import torch

    from workbench.activations import extract

    torch.set_num_threads(1)
    ready.set()
    assert go.wait(GUARD)
    arrays = {}
    for seed in SEEDS[offset:] + SEEDS[:offset]:  # each process in its own order
        model, x = _model_and_data(seed)
        _count_computations(model, seed, log)
        acts = extract(model, x, cache=cache, batch_size=64)  # one forward pass per computed extraction
        arrays.update({f"{seed}:{layer}": acts[layer].numpy() for layer in acts})
    np.savez(out, **arrays)


def test_six_processes_extracting_one_cache_compute_each_entry_once(tmp_path):
    import numpy as np

    from workbench.activations import extract

    cache, log = tmp_path / "cache", tmp_path / "computed.txt"
    readies, go = [CTX.Event() for _ in range(6)], CTX.Event()
    procs = [CTX.Process(target=_extract_worker, args=(str(cache), str(log), str(tmp_path / f"out{i}.npz"), i % 5,
                                                       r, go), name=f"extract-{i}")
             for i, r in enumerate(readies)]
    for p in procs:
        p.start()
    try:
        assert all(r.wait(GUARD) for r in readies)
    finally:
        go.set()
    _join_all(procs, guard=3 * GUARD)
    computed = log.read_text().split()
    expected = sorted(f"{seed}:{layer}" for seed in SEEDS for layer in ("fc1", "fc2", "head"))
    assert sorted(computed) == expected  # every entry computed exactly once, by one of the six
    reference = {}
    for seed in SEEDS:  # an independent extraction in this process, without a cache
        model, x = _model_and_data(seed)
        acts = extract(model, x, batch_size=64)
        reference.update({f"{seed}:{layer}": acts[layer].numpy() for layer in acts})
    for i in range(6):
        with np.load(tmp_path / f"out{i}.npz") as got:
            assert sorted(got.files) == sorted(reference)
            for key, value in reference.items():
                np.testing.assert_array_equal(got[key], value)
    assert not [p.name for p in cache.iterdir() if p.name.endswith((".lock", ".tmp"))]  # no lock or temp left


def test_only_the_missing_entry_of_a_call_is_computed(tmp_path):
    import numpy as np

    from workbench.activations import extract

    model, x = _model_and_data(0)
    cache = tmp_path / "cache"
    first = extract(model, x, cache=cache, batch_size=64)
    files = dict(first._layers)  # layer -> its cache file
    inodes = {layer: os.stat(p).st_ino for layer, p in files.items()}
    files["fc2"].unlink()
    files["fc2"].with_suffix(".json").unlink()
    again = extract(model, x, cache=cache, batch_size=64)
    assert not again.meta["cached"] and again._layers == files
    # the intact entries were not written again (a rewrite renames a new file, a new inode, into place)
    assert {layer: os.stat(p).st_ino for layer, p in files.items() if layer != "fc2"} == {
        layer: i for layer, i in inodes.items() if layer != "fc2"}
    reference = extract(model, x, batch_size=64)  # without the cache
    for layer in ("fc1", "fc2", "head"):
        np.testing.assert_array_equal(again[layer].numpy(), reference[layer].numpy())
    assert extract(model, x, cache=cache, batch_size=64).meta["cached"]

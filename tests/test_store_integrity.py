"""The run store keeps what it promises: kill anywhere and resume to the same weights, optimizer state and history;
every stored file checksummed, a damaged one detected and named (or recovered from); `workbench runs check/repair`."""
from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from workbench.cli import main as cli_main
from workbench.runs import RunConfig, RunStore, StoreWarning, checkpoint_schedule
from workbench.train import evaluate, train

CHILD = Path(__file__).with_name("_store_child.py")
DATA = {"n_train": 256, "n_test": 64, "n_ood": 64, "dim": 8}
# 200 steps: losses are averaged over 2 steps (log_every = steps // 100), and the checkpoints 1 and 53 fall between
# two logged steps, so a resume from them needs the running sums of the interval
KILL = dict(dataset="gaussian-mixture", dataset_options=DATA, model="mlp", model_options={"hidden": [16]}, steps=200,
            batch_size=32, checkpoints=5, lr=1e-2, label_noise=0.25, recorders=["grad_norm", "clean_flipped", "el2n"])
SMALL = dict(dataset="gaussian-mixture", dataset_options=DATA, model="mlp", model_options={"hidden": [16]}, steps=30,
             batch_size=32, checkpoints=3, lr=1e-2, label_noise=0.25)
CONTRASTIVE = dict(dataset="gaussian-mixture", dataset_options=DATA, model="mlp", model_options={"hidden": [16]},
                   steps=20, batch_size=32, checkpoints=2, lr=1e-2, objective="simclr", augment=["noise"],
                   projector="linear", recorders=[])


def _run_dir(root: Path) -> Path:
    runs = [p for p in (Path(root) / "runs").iterdir() if not p.name.startswith(".")]
    assert len(runs) == 1, runs
    return runs[0]


def _leftovers(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in Path(root).rglob("*")
                  if p.name.endswith(".tmp") or p.name.startswith((".tmp-", ".old-", ".deleted-")))


def _equal_state(a, b, where: str) -> None:
    """Nested dicts / lists / tensors equal exactly."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), f"{where}: keys {list(a)} != {list(b)}"
        for k in a:
            _equal_state(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _equal_state(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _assert_same_run(ref: Path, got: Path) -> None:
    """Same checkpoints (weights, objective, optimizer state with the running sums, history snapshot), same
    history and artifacts, byte for byte where the format is deterministic."""
    ref_steps = sorted(p.name for p in (ref / "checkpoints").iterdir() if p.name.isdigit())
    got_steps = sorted(p.name for p in (got / "checkpoints").iterdir() if p.name.isdigit())
    assert got_steps == ref_steps
    for step in ref_steps:
        a, b = ref / "checkpoints" / step, got / "checkpoints" / step
        names = sorted(p.name for p in a.iterdir())
        assert sorted(p.name for p in b.iterdir()) == names, step
        for name in names:
            if name == "trainer.pt":  # torch.save's zip is not byte-stable: compare what it holds
                _equal_state(torch.load(a / name, weights_only=True), torch.load(b / name, weights_only=True),
                             f"checkpoint {step} trainer.pt")
            elif name.endswith(".safetensors"):
                wa, wb = load_file(a / name), load_file(b / name)
                assert list(wa) == list(wb) and all(torch.equal(wa[k], wb[k]) for k in wa), f"{step}/{name}"
            elif name != "manifest.json":  # holds the digest of trainer.pt
                assert (a / name).read_bytes() == (b / name).read_bytes(), f"checkpoint {step} {name}"
    assert (got / "history.csv").read_bytes() == (ref / "history.csv").read_bytes()
    arts = sorted(p.name for p in (ref / "artifacts").iterdir()) if (ref / "artifacts").exists() else []
    for name in arts:
        assert (got / "artifacts" / name).read_bytes() == (ref / "artifacts" / name).read_bytes(), name
    assert json.loads((got / "status.json").read_text())["state"] == "done"


def _child(spec: dict) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(CHILD), json.dumps(spec)], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _kill_sweep(tmp_path: Path, n_points: int | None, n_delete: int) -> None:
    ref = tmp_path / "ref"
    first = _child({"config": KILL, "reference": str(ref), "trials": []})
    total = first["write_points"]
    assert total > 100  # every write of every checkpoint, history, status, artifact, manifest
    ks = list(range(1, total + 1)) if n_points is None else sorted(
        {round(total * i / n_points) for i in range(1, n_points + 1)} | {1, total - 1})
    trials = [{"store": str(tmp_path / f"k{k}"), "kill_at": k, "op": "train"} for k in ks]
    trials += [{"store": str(tmp_path / f"d{k}"), "kill_at": k, "op": "delete"} for k in range(1, n_delete + 1)]
    out = _child({"config": KILL, "reference": str(tmp_path / "ref2"), "trials": trials})
    assert out["write_points"] == total  # the same run writes the same way
    ref_dir = _run_dir(ref)
    inside_checkpoint, failures = 0, []
    for t in out["trials"]:
        where = f"{t['op']} killed at write point {t['kill_at']}"
        try:
            assert t["ended"] == -9, "not killed"
            assert t["resumed"] == 0, "the resume failed"
            seen = t["seen"]
            # a reader right after the kill: no ghost run, nothing "running" (its process is dead)
            assert all(not i.startswith(".") for i in seen["ids"]), seen
            assert "running" not in seen["states"] and "running" not in seen["listed"], seen
            inside_checkpoint += any("checkpoints/.tmp-" in p for p in seen["leftovers"])
            root = Path(t["store"])
            _assert_same_run(ref_dir, _run_dir(root))
            assert _leftovers(root) == []  # removed when the lock was taken (and ghosts when listed)
        except AssertionError as err:
            failures.append(f"{where}: {str(err).splitlines()[0]}")
    assert not failures, f"{len(failures)} of {len(out['trials'])} kills:\n" + "\n".join(failures)
    for t in out["trials"]:  # and every stored file matches its manifest
        assert RunStore(t["store"]).check().empty, (t, RunStore(t["store"]).check().to_dict("records"))
    assert inside_checkpoint >= 5  # kills inside checkpoint writes (a temporary checkpoint left behind)


def test_kill_anywhere_then_resume_equals_uninterrupted(tmp_path):
    """SIGKILL at 30 write points spread over a whole run (inside checkpoint writes, history, status, artifact and
    manifest writes) and at the first write points of RunStore.delete; resume in a fresh process each time."""
    _kill_sweep(tmp_path, 28, n_delete=4)


@pytest.mark.skipif(not os.environ.get("WORKBENCH_SLOW_TESTS"), reason="about 5 minutes; set WORKBENCH_SLOW_TESTS=1")
def test_kill_at_every_write_point(tmp_path):
    """Every one of the ~360 write points of the reference run (and 12 of RunStore.delete)."""
    _kill_sweep(tmp_path, None, n_delete=12)


# ------------------------------------------------------------------------------------------ exact resume in-process
@pytest.mark.parametrize("stop_after", [1, 60, 121])
def test_stop_after_between_logged_steps_resumes_exactly(tmp_path, stop_after):
    """log_every = 2; stopping after 1 / 60 / 121 steps leaves the last checkpoint at step 1 / 53 / 53, between two
    logged steps: the running sums must come back with the checkpoint (the old trainer averaged one step only)."""
    cfg = {**KILL, "recorders": ["grad_norm"], "label_noise": 0.0}
    full = train(cfg, tmp_path / "full", progress=False)
    store = RunStore(tmp_path / "part")
    part = train(cfg, store, progress=False, stop_after=stop_after)
    assert part.status["state"] == "interrupted" and part.checkpoints()[-1] in (1, 53)
    assert train(cfg, store, progress=False).done
    _assert_same_run(full.path, part.path)
    # the snapshot of every checkpoint holds exactly the rows up to its step
    hist = pd.read_csv(full.path / "history.csv")
    for step in checkpoint_schedule(cfg["steps"], cfg["checkpoints"]):
        snap = pd.read_csv(full.checkpoint_dir(step) / "history.csv")
        assert snap["step"].max() == step and len(snap) == (hist["step"] <= step).sum()


# ------------------------------------------------------------------------------------------ corruption
@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """A finished run (with an artifact and a downstream table) and its untouched copy."""
    root = tmp_path_factory.mktemp("ref")
    run = train(SMALL, root / "store", name="small", progress=False)
    evaluate(run, cache=False)  # downstream.csv
    contrastive = train(CONTRASTIVE, root / "contrastive", progress=False)
    return {"small": (root / "store", run.id), "contrastive": (root / "contrastive", contrastive.id)}


def _copy(stores, key, tmp_path):
    src, rid = stores[key]
    dst = tmp_path / key
    shutil.copytree(src, dst)
    return RunStore(dst), rid, src / "runs" / rid


def _damage(path: Path, how: str) -> None:
    if how == "delete":
        path.unlink()
    elif how == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:  # garble one byte in the middle, size unchanged
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x55
        path.write_bytes(bytes(data))


CHECKPOINT_FILES = ["model.safetensors", "model.json", "trainer.pt", "history.csv", "manifest.json"]


@pytest.mark.parametrize("how", ["truncate", "garble", "delete"])
@pytest.mark.parametrize("name", CHECKPOINT_FILES)
def test_damaged_checkpoint_file_is_named_and_recomputed(stores, tmp_path, name, how):
    store, rid, ref = _copy(stores, "small", tmp_path)
    run = store.get(rid)
    bad = run.checkpoint_dir(30) / name
    _damage(bad, how)
    with pytest.raises(ValueError, match=re.escape(str(bad))) as err:
        run.load_model(30)
    assert "workbench runs repair" in str(err.value)
    assert not store.check().empty and str(bad) in set(store.check()["path"])
    # a done run whose final checkpoint is bad is trained again (from the last intact one), not returned as done
    with pytest.warns(StoreWarning, match=re.escape(str(bad))):
        again = train(SMALL, store, progress=False)
    assert again.done and (run.path / "checkpoints" / ".corrupt-00000030-0").is_dir()  # moved aside, not deleted
    _assert_same_run(ref, run.path)
    assert store.check().empty


@pytest.mark.parametrize("how", ["truncate", "garble", "delete"])
def test_damaged_objective_is_named_and_recomputed(stores, tmp_path, how):
    store, rid, ref = _copy(stores, "contrastive", tmp_path)
    bad = store.get(rid).checkpoint_dir(20) / "objective.safetensors"
    _damage(bad, how)
    with pytest.warns(StoreWarning, match=re.escape(str(bad))):
        train(CONTRASTIVE, store, progress=False)
    _assert_same_run(ref, store.get(rid).path)


def test_middle_checkpoint_damaged_resumes_before_it(stores, tmp_path):
    """A bad checkpoint in the middle of the schedule: training restarts from the one before it, so no step of the
    schedule stays without its checkpoint."""
    store, rid, ref = _copy(stores, "small", tmp_path)
    steps = checkpoint_schedule(SMALL["steps"], SMALL["checkpoints"])
    bad = store.get(rid).checkpoint_dir(steps[2]) / "trainer.pt"
    _damage(bad, "delete")  # a deleted trainer.pt is never a silent optimizer reset
    with pytest.warns(StoreWarning, match=f"{re.escape(str(bad))}.*resumes from checkpoint {steps[1]}"):
        train(SMALL, store, progress=False)
    _assert_same_run(ref, store.get(rid).path)


@pytest.mark.parametrize("how", ["truncate", "garble", "delete"])
def test_damaged_history_is_rebuilt_from_the_snapshot(stores, tmp_path, how):
    store, rid, ref = _copy(stores, "small", tmp_path)
    run = store.get(rid)
    bad = run.path / "history.csv"
    _damage(bad, how)
    with pytest.warns(StoreWarning, match=f"{re.escape(str(bad))}.*rebuilt from the snapshot in checkpoint 30"):
        hist = run.history()
    assert bad.read_bytes() == (ref / "history.csv").read_bytes()  # rewritten (nobody held the lock)
    expected = pd.read_csv(ref / "history.csv")
    np.testing.assert_array_equal(hist["value"].to_numpy(), expected["value"].to_numpy())
    with warnings.catch_warnings():
        warnings.simplefilter("error", StoreWarning)
        run.history()  # healthy again: no warning


@pytest.mark.parametrize("how", ["truncate", "garble", "delete"])
def test_damaged_history_is_rebuilt_by_train_of_an_interrupted_run(tmp_path, how):
    store = RunStore(tmp_path)
    part = train(SMALL, store, progress=False, stop_after=12)
    bad = part.path / "history.csv"
    _damage(bad, how)
    with pytest.warns(StoreWarning, match=re.escape(str(bad))):
        run = train(SMALL, store, progress=False)
    _assert_same_run(train(SMALL, tmp_path / "ref", progress=False).path, run.path)


@pytest.mark.parametrize("how", ["truncate", "garble"])
def test_damaged_config_breaks_only_its_run(stores, tmp_path, how):
    store, rid, _ = _copy(stores, "small", tmp_path)
    other = train({**SMALL, "seed": 1, "steps": 5}, store, name="other", progress=False)
    bad = store.get(rid).path / "config.json"
    _damage(bad, how)
    with pytest.warns(StoreWarning, match=re.escape(str(bad))):
        df = store.list()
    assert dict(zip(df["id"], df["state"])) == {rid: "broken", other.id: "done"}
    with pytest.warns(StoreWarning, match=re.escape(str(bad))):
        assert [r.id for r in store.runs()] == [other.id]
    assert store.get("other").id == other.id and store.get(rid).id == rid  # lookups keep working
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        _ = store.get(rid).config
    assert train({**SMALL, "seed": 2, "steps": 5}, store, progress=False).done  # training other runs works
    # the CLI lists the healthy runs and the broken one
    proc = subprocess.run([sys.executable, "-m", "workbench.cli", "runs", "list", "--store", str(store.root)],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "broken" in proc.stdout and str(bad) in proc.stderr
    # training the broken run's config rewrites its config.json (the run id is its hash)
    with pytest.warns(StoreWarning, match=re.escape(str(bad))):
        assert train(SMALL, store, progress=False).done
    assert store.get(rid).config == RunConfig.from_dict(SMALL)


@pytest.mark.parametrize("how", ["truncate", "garble", "delete"])
def test_damaged_status_is_recomputed(stores, tmp_path, how):
    store, rid, ref = _copy(stores, "small", tmp_path)
    run = store.get(rid)
    bad = run.path / "status.json"
    _damage(bad, how)
    with pytest.warns(StoreWarning, match=re.escape(str(bad))):
        status = run.status
    assert status["state"] == "interrupted" and status["step"] == 30
    assert run.status["state"] == "interrupted"  # rewritten: no second warning needed
    assert train(SMALL, store, progress=False).done  # resumes at its final checkpoint: nothing to train
    _assert_same_run(ref, run.path)


@pytest.mark.parametrize("how", ["truncate", "garble"])
def test_damaged_meta_reads_empty(stores, tmp_path, how):
    store, rid, _ = _copy(stores, "small", tmp_path)
    bad = store.get(rid).path / "meta.json"
    _damage(bad, how)
    with pytest.warns(StoreWarning, match=re.escape(str(bad))):
        assert store.get(rid).meta == {}
    with pytest.warns(StoreWarning, match=re.escape(str(bad))):
        assert store.list().loc[0, "state"] == "done"


@pytest.mark.parametrize("how", ["truncate", "garble", "delete"])
def test_damaged_downstream_and_artifact_raise_naming_the_file(stores, tmp_path, how):
    store, rid, _ = _copy(stores, "small", tmp_path)
    run = store.get(rid)
    for bad, read in [(run.path / "downstream.csv", run.downstream),
                      (run.path / "artifacts" / "label_noise.npz", lambda: run.load_artifact("label_noise"))]:
        _damage(bad, how)
        with pytest.raises(ValueError, match=re.escape(str(bad))):
            read()
        assert str(bad) in set(store.check()["path"])
    actions = store.repair()
    assert {str(run.path / ".corrupt-downstream.csv-0"), str(run.path / "artifacts" / ".corrupt-label_noise.npz-0")} \
        <= set(actions["path"]) or how == "delete"
    assert run.downstream().empty and store.check().empty


@pytest.mark.parametrize("how", ["truncate", "garble", "delete"])
def test_damaged_run_manifest_is_named_and_rebuilt(stores, tmp_path, how):
    store, rid, ref = _copy(stores, "small", tmp_path)
    run = store.get(rid)
    bad = run.path / "manifest.json"
    _damage(bad, how)
    problems = store.check()
    assert str(bad) in set(problems["path"])
    if how != "delete":
        with pytest.warns(StoreWarning, match=re.escape(str(bad))):
            run.history()
    store.repair()
    assert store.check().empty
    _assert_same_run(ref, run.path)


def test_older_runs_without_manifests_still_read_and_repair_adds_them(stores, tmp_path):
    """A run as older versions wrote it: no manifests, no history snapshots, no running sums in trainer.pt."""
    store, rid, _ = _copy(stores, "small", tmp_path)
    run = store.get(rid)
    for p in list(run.path.rglob("manifest.json")) + list(run.path.glob("checkpoints/*/history.csv")):
        p.unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("error", StoreWarning)
        assert run.done and len(run.history()) and run.load_model() is not None
        assert store.list().loc[0, "state"] == "done"
        assert train(SMALL, store, progress=False).path == run.path  # done: nothing to train
    assert "older version" in " ".join(store.check()["problem"])
    actions = store.repair()
    assert (run.path / "manifest.json").exists() and len(actions) >= 5
    assert store.check().empty
    _damage(run.checkpoint_dir(30) / "model.safetensors", "garble")  # now verified
    with pytest.raises(ValueError, match=r"model\.safetensors"):
        run.load_model()


def test_older_interrupted_run_resumes(tmp_path):
    store = RunStore(tmp_path / "s")
    part = train(SMALL, store, progress=False, stop_after=12)
    for p in list(part.path.rglob("manifest.json")) + list(part.path.glob("checkpoints/*/history.csv")):
        p.unlink()
    run = train(SMALL, store, progress=False)
    full = train(SMALL, tmp_path / "ref", progress=False)
    assert (run.path / "history.csv").read_bytes() == (full.path / "history.csv").read_bytes()
    w1, w2 = load_file(run.checkpoint_dir(30) / "model.safetensors"), load_file(full.checkpoint_dir(30) /
                                                                                 "model.safetensors")
    assert all(torch.equal(w1[k], w2[k]) for k in w1)


def test_imported_runs_carry_checkpoint_manifests(stores, tmp_path):
    src, rid = stores["small"]
    store = RunStore(tmp_path / "imp")
    run = store.import_model(src / "runs" / rid / "checkpoints" / "00000030", dataset="gaussian-mixture",
                             dataset_options=DATA)
    assert (run.checkpoint_dir(0) / "manifest.json").exists() and store.check().empty
    bad = run.checkpoint_dir(0) / "model.safetensors"
    _damage(bad, "garble")
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        run.load_model()


# ------------------------------------------------------------------------------------------ leftovers, concurrency
def test_leftovers_are_removed_under_the_lock_and_ghosts_when_listing(stores, tmp_path):
    store, rid, _ = _copy(stores, "small", tmp_path)
    run = store.get(rid)
    leftovers = [run.path / ".status.json.abc.tmp", run.path / "artifacts" / ".x.npz.def.tmp"]
    for p in leftovers:
        p.write_bytes(b"half")
    (run.path / "checkpoints" / ".tmp-00000030-xyz").mkdir()
    ghost = store.root / "runs" / f".deleted-{rid}-123"
    shutil.copytree(run.path, ghost)
    assert store.ids() == [rid] and not ghost.exists()
    # a live writer's temp file survives a reader; taking the lock for training removes it
    run.history()
    assert all(p.exists() for p in leftovers)
    _damage(run.path / "status.json", "truncate")
    with pytest.warns(StoreWarning):
        train(SMALL, store, progress=False)
    assert _leftovers(store.root) == []


def test_concurrent_writers_keep_every_manifest_entry(tmp_path):
    store = RunStore(tmp_path)
    run = store.create(SMALL)

    def writer(t):
        for i in range(15):
            run.save_artifact(f"a{t}_{i}", x=np.full(3, t * 100 + i))

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    files = json.loads((run.path / "manifest.json").read_text())["files"]
    assert {f"artifacts/a{t}_{i}.npz" for t in range(4) for i in range(15)} <= set(files)
    assert store.check().empty and int(run.load_artifact("a3_14")["x"][0]) == 314


# ------------------------------------------------------------------------------------------ CLI check / repair
def test_cli_check_and_repair(stores, tmp_path, capsys):
    store, rid, ref = _copy(stores, "small", tmp_path)
    other = train({**SMALL, "seed": 1, "steps": 5}, store, progress=False)
    run = store.get(rid)
    _damage(run.checkpoint_dir(30) / "trainer.pt", "garble")
    _damage(run.path / "history.csv", "truncate")
    (run.path / ".history.csv.zz.tmp").write_text("x")
    _damage(other.path / "config.json", "truncate")
    shutil.copytree(run.path, store.root / "runs" / f".deleted-{rid}-9")
    assert cli_main(["runs", "check", "--store", str(store.root)]) == 1
    out = capsys.readouterr().out
    for path in (run.checkpoint_dir(30) / "trainer.pt", run.path / "history.csv", run.path / ".history.csv.zz.tmp",
                 other.path / "config.json"):
        assert str(path) in out, path
    assert cli_main(["runs", "repair", "--store", str(store.root)]) == 0
    out = capsys.readouterr().out
    assert "quarantine" in out and "moved aside" in out and "rebuilt from the snapshot" in out
    assert (store.root / "quarantine" / other.id / "config.json").exists()
    assert cli_main(["runs", "check", "--store", str(store.root)]) == 0
    assert "ok" in capsys.readouterr().out
    run = train(SMALL, store, progress=False)  # the checkpoint moved aside is recomputed
    _assert_same_run(ref, run.path)


def test_cli_check_is_clean_on_a_fresh_store(tmp_path, capsys):
    train(SMALL, tmp_path, progress=False)
    assert cli_main(["runs", "check", "--store", str(tmp_path)]) == 0


# ------------------------------------------------------------------------------------------ config
@pytest.mark.parametrize("field", ["lr", "weight_decay", "steps", "label_noise", "temperature", "seed"])
def test_bool_numeric_fields_are_refused(field):
    with pytest.raises(TypeError, match=field):
        RunConfig(**{field: True})


# ------------------------------------------------------------------------------------------ device, import leftovers
def test_train_on_a_missing_accelerator_names_device_and_stores_nothing(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match=r"device='cuda'.*CUDA is not available"):
        train({"dataset": "gaussian-mixture", "model": "mlp", "steps": 2}, tmp_path, device="cuda", progress=False)
    assert RunStore(tmp_path).ids() == []


def test_repair_removes_the_staging_of_a_dead_import_and_keeps_a_live_one(tmp_path):
    store = RunStore(tmp_path)
    dead = tmp_path / ".imports" / "import-dead"
    dead.mkdir(parents=True)
    (dead / "model.safetensors").write_bytes(b"half")
    live = tmp_path / ".imports" / "import-live"
    live.mkdir()
    with open(live / ".lock", "a+") as held:  # an import in progress holds its staging lock
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        actions = store.repair()
        assert not dead.exists() and live.exists()
    assert list(actions["path"]) == [str(dead)] and "interrupted import" in actions["action"].iloc[0]

"""Executors of workbench.executors (issue 17): a process pool, a real local Ray cluster and submitit's local
executor each run a tiny study into their own store and must give the in-process executor's table (training is
seeded and single-threaded), train each run once, report a failing job without losing the others, merge two
labels of one run, and reuse finished runs when re-run after a failure."""
from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from workbench.executors import (CheckpointableTask, PoolExecutor, RayExecutor, SubmititExecutor, Task, group_jobs,
                                 make_executor)
from workbench.runs import RunStore
from workbench.study import InProcessExecutor, Study, run_job
from workbench.train import train

pytestmark = [pytest.mark.usefixtures("one_thread")]

DATA = {"n_train": 200, "n_test": 100, "n_ood": 100, "dim": 8}
BASE = {"dataset": "gaussian-mixture", "dataset_options": DATA, "model": "mlp", "model_options": {"hidden": [12]},
        "steps": 30, "lr": 1e-2, "batch_size": 32, "checkpoints": 2}
VARY = {"lr": [1e-2, 2e-2]}
SEEDS = [0, 1]
OPTS = {"measures": ["rankme"], "measure_examples": 50, "name": "exec"}
HANG_GUARD = 300  # seconds: only a hung engine trips it


def _study(store, executor=None) -> Study:
    return Study(BASE, vary=VARY, seeds=SEEDS, store=store, executor=executor, **OPTS)


def _sorted(table: pd.DataFrame) -> pd.DataFrame:
    keys = [c for c in table.columns if c not in ("value", "ci_low", "ci_high")]
    order = table[keys].map(str).agg("|".join, axis=1).argsort(kind="stable")
    return table.iloc[order.to_numpy()].reset_index(drop=True)[sorted(table.columns)]


def _assert_same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(_sorted(a), _sorted(b), check_exact=False, rtol=1e-6, atol=1e-9)


def _checkpoints(store_root) -> dict:
    """Checkpoint file → mtime (ns) of every run in the store."""
    return {p: p.stat().st_mtime_ns for p in RunStore(store_root).root.glob("runs/*/checkpoints/*/model.safetensors")
            if not p.parent.name.startswith(".")}  # not a killed writer's temporary checkpoint


def _run_ids(store_root) -> set:
    return {p.name for p in RunStore(store_root).root.glob("runs/*") if p.is_dir()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The in-process study: its table, its store."""
    root = tmp_path_factory.mktemp("inprocess")
    st = _study(root, InProcessExecutor())
    return st.run(progress=False), root


def _results(executor, jobs) -> dict:
    out = {}
    for job, result in executor.map(run_job, jobs):
        assert job.label not in out, f"{job.label} yielded twice"
        out[job.label] = result
    return out


def _check_engine(executor, reference, root) -> None:
    """The study through ``executor`` equals the in-process one; each run trained once (one run directory per run
    id, as many checkpoints as in-process, and a second run() rewrites none of them)."""
    table, ref_root = reference
    got = _study(root, executor).run(progress=False)
    _assert_same(got, table)
    assert _run_ids(root) == _run_ids(ref_root)
    first = _checkpoints(root)
    assert len(first) == len(_checkpoints(ref_root)) > 0
    again = _study(root, executor).run(progress=False)
    _assert_same(again, table)
    assert _checkpoints(root) == first  # reused, not retrained


def _check_failure_dedup_and_rerun(executor, tmp_path) -> None:
    """A failing job is reported while the others succeed; two labels of one run are merged (both get their
    rows, trained once); re-running after the failure reuses the finished runs."""
    root = tmp_path / "store"
    st = _study(root, executor)
    jobs = st.jobs()
    bad_root = tmp_path / "not-a-dir"
    bad_root.write_text("a file where the store should be")
    bad = dataclasses.replace(jobs[1], store_root=str(bad_root))
    twin = dataclasses.replace(jobs[0], label="twin-of-" + jobs[0].label)
    assert len(group_jobs([jobs[0], bad, jobs[2], twin])) == 3

    results = _results(executor, [jobs[0], bad, jobs[2], twin])
    assert set(results) == {jobs[0].label, jobs[1].label, jobs[2].label, twin.label}
    assert isinstance(results[jobs[1].label], Exception)
    for label in (jobs[0].label, jobs[2].label, twin.label):
        assert not isinstance(results[label], BaseException), results[label]
    a, b = results[jobs[0].label].table, results[twin.label].table
    assert set(a["run"]) == {jobs[0].label} and set(b["run"]) == {twin.label}
    pd.testing.assert_frame_equal(a.drop(columns="run"), b.drop(columns="run"))
    assert len(_run_ids(root)) == 2  # jobs[0] (and its twin) and jobs[2]
    done = _checkpoints(root)

    # re-run the whole study after the failure: the two finished runs are reused, the others trained
    table = _study(root, executor).run(progress=False)
    after = _checkpoints(root)
    assert {p: after[p] for p in done} == done
    assert len(after) > len(done) and len(_run_ids(root)) == 4
    assert set(table["run"]) == {j.label for j in jobs}


# ------------------------------------------------------------------------------------------ shared logic
def test_group_jobs_merges_jobs_of_one_run_only(tmp_path):
    jobs = _study(tmp_path).jobs()
    twin = dataclasses.replace(jobs[2], label="again")
    other_store = dataclasses.replace(jobs[2], store_root=str(tmp_path / "elsewhere"))
    groups = group_jobs(jobs + [twin, other_store])
    assert [[j.label for j in g] for g in groups] == [[j.label] for j in jobs[:2]] + [
        [jobs[2].label, "again"], [jobs[3].label], [jobs[2].label]]
    assert group_jobs([1, 1]) == [[1], [1]]  # objects without a config are never merged


def test_task_reports_each_jobs_exception():
    def fn(x):
        if x == 2:
            raise ValueError("two")
        return x * 10

    out = Task(fn, [1, 2, 3])()
    assert out[0] == 10 and out[2] == 30 and isinstance(out[1], ValueError) and str(out[1]) == "two"


def test_make_executor_names_and_options(tmp_path):
    assert isinstance(make_executor("inprocess"), InProcessExecutor)
    pool = make_executor("pool", workers=3, threads=2)
    assert isinstance(pool, PoolExecutor) and pool.workers == 3 and pool.threads == 2
    assert isinstance(make_executor("ray", num_cpus=2), RayExecutor)
    assert isinstance(make_executor("slurm", folder=tmp_path, cluster="local"), SubmititExecutor)
    with pytest.raises(ValueError, match=r"unknown executor 'dask'.*inprocess"):
        make_executor("dask")
    with pytest.raises(TypeError, match=r"does not take option\(s\) \['wrkers'\]"):
        make_executor("pool", wrkers=2)
    with pytest.raises(TypeError, match=r"needs option\(s\) \['folder'\]"):
        make_executor("slurm")


@pytest.mark.parametrize("make, error, match", [
    (lambda: PoolExecutor(0), ValueError, r"workers must be a positive integer"),
    (lambda: PoolExecutor("2"), TypeError, r"workers must be a positive integer"),
    (lambda: PoolExecutor(devices="cuda:0"), TypeError, r"devices must be a list"),
    (lambda: PoolExecutor(devices=["gpu0"]), ValueError, r"devices has 'gpu0'"),
    (lambda: PoolExecutor(3, devices=["cuda:0", "cuda:1"]), ValueError, r"workers=3 but 2 devices"),
    (lambda: PoolExecutor(mp_context="thread"), ValueError, r"mp_context must be one of"),
    (lambda: RayExecutor(num_cpus=0), ValueError, r"num_cpus must be > 0"),
    (lambda: RayExecutor(num_gpus=-1), ValueError, r"num_gpus must be >= 0"),
    (lambda: RayExecutor(max_concurrent=0), ValueError, r"max_concurrent must be a positive integer"),
    (lambda: RayExecutor(init_options=[1]), TypeError, r"init_options must be a dict"),
    (lambda: SubmititExecutor(3), TypeError, r"folder must be a directory path"),
    (lambda: SubmititExecutor("f", cluster="pbs"), ValueError, r"cluster must be one of"),
    (lambda: SubmititExecutor("f", timeout_min=0), ValueError, r"timeout_min must be a positive number"),
    (lambda: SubmititExecutor("f", requeue="yes"), TypeError, r"requeue must be True or False"),
])
def test_bad_options_are_refused(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_importing_workbench_does_not_import_the_engines():
    code = ("import sys, workbench, workbench.study, workbench.executors; "
            "print(sorted(m for m in ('ray', 'submitit') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_missing_engine_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(ImportError, match=r"pip install 'workbench\[ray\]'"):
        list(RayExecutor().map(run_job, [object()]))


# ------------------------------------------------------------------------------------------ process pool
def test_pool_matches_inprocess_and_trains_each_run_once(reference, tmp_path):
    _check_engine(PoolExecutor(2), reference, tmp_path / "pool")


def test_pool_failure_dedup_and_rerun(tmp_path):
    _check_failure_dedup_and_rerun(PoolExecutor(2), tmp_path)


def _die_or_run(job):
    if job.label == "killer":
        os._exit(3)  # the worker process dies, as if killed or out of memory
    return run_job(job)


def test_pool_survives_a_dead_worker_and_the_rerun_reuses_finished_runs(tmp_path):
    from concurrent.futures.process import BrokenProcessPool

    root = tmp_path / "store"
    jobs = _study(root).jobs()
    killer = dataclasses.replace(jobs[0], label="killer", store_root=str(tmp_path / "elsewhere"))
    results = {job.label: r for job, r in PoolExecutor(2).map(_die_or_run, [killer] + jobs)}
    assert set(results) == {"killer"} | {j.label for j in jobs}
    assert isinstance(results["killer"], BrokenProcessPool)
    # only a job in the pool with the killer (2 in flight) may share its fate; the others run in a fresh pool
    lost = [j.label for j in jobs if not hasattr(results[j.label], "table")]
    assert len(lost) <= 1 and all(isinstance(results[label], BrokenProcessPool) for label in lost), results
    done = _checkpoints(root)
    table = _study(root, PoolExecutor(2)).run(progress=False)  # the rerun
    after = _checkpoints(root)
    assert {p: after[p] for p in done} == done and len(_run_ids(root)) == 4
    assert set(table["run"]) == {j.label for j in jobs}


def test_pool_gives_each_worker_its_device(tmp_path):
    seen = [r for _, r in PoolExecutor(devices=["cpu", "cpu"]).map(_visible_devices, [object(), object()])]
    assert seen == ["", ""]


def _visible_devices(_job):
    import os

    return os.environ.get("CUDA_VISIBLE_DEVICES")


# ------------------------------------------------------------------------------------------ Ray
@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=100 * 2**20)
    yield ray
    ray.shutdown()


def test_ray_matches_inprocess_and_trains_each_run_once(ray_cluster, reference, tmp_path):
    _check_engine(RayExecutor(), reference, tmp_path / "ray")
    assert ray_cluster.is_initialized()  # a cluster it did not start is left running


def test_ray_starts_and_stops_its_own_cluster_only():
    pytest.importorskip("ray")
    code = ("import ray\n"
            "from workbench.executors import RayExecutor\n"
            "out = sorted(r for _, r in RayExecutor(init_options={'num_cpus': 1}).map(len, ['ab', 'cde']))\n"
            "print(out, ray.is_initialized())\n")  # a cluster it started is shut down
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=HANG_GUARD)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[2, 3] False"


def test_ray_failure_dedup_and_rerun(ray_cluster, tmp_path):
    _check_failure_dedup_and_rerun(RayExecutor(max_concurrent=2), tmp_path)


# ------------------------------------------------------------------------------------------ submitit
def test_submitit_local_matches_inprocess(reference, tmp_path):
    pytest.importorskip("submitit")
    _check_engine(SubmititExecutor(tmp_path / "submitit", cluster="local", max_concurrent=2), reference,
                  tmp_path / "store")


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _poll(predicate, what: str):
    deadline = time.monotonic() + HANG_GUARD
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"hang guard: {what} did not happen within {HANG_GUARD} s")


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds the job's process through /proc (Linux)")
def test_submitit_preempted_job_is_requeued_and_resumes_the_run(tmp_path):
    """Preemption through submitit's own protocol: the job gets the preemption signal (USR2, as Slurm sends it),
    checkpoints its task (CheckpointableTask) and is requeued; the requeued task resumes the run from its last
    checkpoint — the study's table equals an uninterrupted in-process run's, and the checkpoints written before
    the interruption are kept as they were."""
    pytest.importorskip("submitit")
    base = {**BASE, "steps": 400, "checkpoints": 5}
    opts = {**OPTS, "name": "preempt"}
    expected = Study(base, store=tmp_path / "reference", **opts).run(progress=False)

    root = tmp_path / "store"
    st = Study(base, store=root, **opts)
    job = st.jobs()[0]
    run = train(job.config, root, name="before-preemption", progress=False, stop_after=100)  # a killed run
    kept = _checkpoints(root)
    assert kept and not run.done

    folder = tmp_path / "submitit"
    executor = SubmititExecutor(folder, cluster="local", timeout_min=10)
    out: dict = {}
    with run.lock():  # the job will wait for the run: a state to preempt it in, not a moment
        thread = threading.Thread(target=lambda: out.update(
            table=Study(base, store=root, executor=executor, **opts).run(progress=False)), daemon=True)
        thread.start()
        # the job has loaded its task and installed submitit's signal handlers once it renames the run
        _poll(lambda: run.meta.get("name") == f"preempt/{job.label}", "the job starting its run")
        controller = int(_poll(lambda: list(folder.glob("*_submitted.pkl")), "the submission")[0].name.split("_")[0])
        first = _poll(lambda: _children(controller), "the job's process")[0]
        os.kill(first, signal.SIGUSR2)  # what submitit's LocalJob._interrupt and Slurm's preemption send
        _poll(lambda: not thread.is_alive() or (_children(controller) and _children(controller)[0] != first),
              "the requeued job")  # or the study ending: then the job was not requeued (asserted below)
    thread.join(HANG_GUARD)
    assert not thread.is_alive() and "table" in out, "the study did not finish"
    _assert_same(out["table"], expected)
    after = _checkpoints(root)
    assert {p: after[p] for p in kept} == kept and len(after) > len(kept)
    logs = "".join(p.read_text() for p in folder.glob("*_log.*"))
    assert "Requeued job" in logs, logs[-2000:]


def test_submitit_tasks_follow_the_checkpoint_protocol():
    submitit = pytest.importorskip("submitit")
    task = CheckpointableTask(run_job, ["a"], 1)
    again = task.__submitit_checkpoint__()
    assert isinstance(again, submitit.helpers.DelayedSubmission) and again.function is task
    assert SubmititExecutor("f")._task_type() is CheckpointableTask
    assert SubmititExecutor("f", requeue=False)._task_type() is Task


def test_submitit_debug_cluster_matches_inprocess(reference, tmp_path):
    pytest.importorskip("submitit")
    table, _ = reference
    got = _study(tmp_path / "store", SubmititExecutor(tmp_path / "submitit", cluster="debug")).run(progress=False)
    _assert_same(got, table)


def test_submitit_slurm_parameters_reach_submitit(tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    fake = tmp_path / "bin"  # submitit's Slurm executor wants srun on PATH; nothing is submitted here
    fake.mkdir()
    for tool in ("srun", "sbatch"):
        (fake / tool).write_text("#!/bin/sh\nexit 1\n")
        (fake / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    ex = SubmititExecutor(tmp_path, cluster="slurm", max_concurrent=4, timeout_min=30,
                          slurm_options={"partition": "gpu", "slurm_gpus_per_node": 1})
    params = ex._make()._executor.parameters
    assert (params["array_parallelism"], params["partition"], params["gpus_per_node"], params["time"]) == (
        4, "gpu", 1, 30)
    assert ex.max_concurrent is None  # Slurm bounds the array, not the client


def test_submitit_local_failure_dedup_and_rerun(tmp_path):
    pytest.importorskip("submitit")
    _check_failure_dedup_and_rerun(SubmititExecutor(tmp_path / "submitit", cluster="local", max_concurrent=2),
                                   tmp_path)


def test_values_are_not_all_equal(reference):
    # guards the comparison: the runs differ from each other, so equal tables are not a coincidence
    table, _ = reference
    rankme = table[(table["kind"] == "measure") & (table["measure"] == "rankme")]
    assert rankme.groupby("run")["value"].mean().nunique() > 1
    assert np.isfinite(rankme["value"]).all()

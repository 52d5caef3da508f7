"""The thread policy (workbench._threads): choice, overrides, and restoring the caller's torch threads."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from workbench import _threads
from workbench._threads import ENV, thread_env, thread_policy, torch_threads, training_threads

TINY = 39_510  # parameters of the quick demo's CNN (width 16, depth 3, 6 classes): sum of numel, counted below


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_tiny_is_the_quick_demo_cnn():
    from workbench import models

    model = models.build("cnn", input_shape=(3, 32, 32), num_classes=6, width=16, depth=3)
    assert sum(p.numel() for p in model.parameters()) == TINY


@pytest.mark.parametrize("cores", [1, 2, 16, 64])
def test_tiny_model_gets_one_thread_on_any_machine(cores):
    assert training_threads(TINY, 128, cores=cores, busy=0.0) == 1


@pytest.mark.parametrize("cores, busy, expected", [(2, 0.0, 1), (4, 0.0, 3), (16, 0.0, 15), (16, 3.5, 11),
                                                   (16, 15.9, 1), (8, 40.0, 1)])
def test_big_model_leaves_one_core_and_skips_busy_ones(cores, busy, expected):
    # floor(cores - busy) - 1, at least 1, at most cores - 1: written out by hand above
    assert training_threads(10_000_000, 128, cores=cores, busy=busy) == expected
    assert training_threads(cores=cores, busy=busy) == expected  # size unknown: the same machine rule


def test_env_override_and_argument_precedence(monkeypatch):
    monkeypatch.setenv(ENV, "3")
    assert training_threads(TINY, 128, cores=2, busy=0.0) == 3
    assert training_threads(TINY, 128, threads=2, cores=2) == 2  # the argument wins over the variable
    monkeypatch.setenv(ENV, "torch")
    assert training_threads(TINY, 128) is None
    monkeypatch.setenv(ENV, " auto ")
    assert training_threads(TINY, 128, cores=16, busy=0.0) == 1


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5"])
def test_bad_env_value_names_the_variable(monkeypatch, value):
    monkeypatch.setenv(ENV, value)
    with pytest.raises(ValueError, match=ENV):
        training_threads(TINY, 128)


@pytest.mark.parametrize("kwargs, name", [({"threads": 0}, "threads"), ({"threads": True}, "threads"),
                                          ({"threads": 2.0}, "threads"), ({"model_size": -1, "batch_size": 8},
                                                                           "model_size"),
                                          ({"cores": 0}, "cores"), ({"cores": 8, "busy": float("nan")}, "busy")])
def test_bad_arguments_are_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        training_threads(**kwargs)


def test_context_manager_restores_threads_also_on_error():
    torch.set_num_threads(2)
    with torch_threads(1) as n:
        assert n == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with pytest.raises(RuntimeError, match="boom"), torch_threads(1):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == 2
    with torch_threads(None) as n:
        assert n == 2
    with pytest.raises(ValueError, match="threads"), torch_threads(0):
        pass
    assert torch.get_num_threads() == 2


def test_enclosing_block_pins_the_policy(monkeypatch):
    monkeypatch.setenv(ENV, "5")
    with torch_threads(2):
        assert training_threads(TINY, 128, cores=16, busy=0.0) == 2  # the block wins over the variable
        with thread_policy(TINY, 128) as n:
            assert n == 2
        assert training_threads(threads=3) == 3  # an explicit argument still wins
    assert training_threads(TINY, 128) == 5


def test_thread_policy_applies_and_restores(monkeypatch):
    torch.set_num_threads(2)
    with thread_policy(TINY, 128) as n:
        assert n == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    monkeypatch.setenv(ENV, "torch")
    with thread_policy(TINY, 128) as n:
        assert n == 2


def test_train_runs_under_the_policy_and_restores(tmp_path, monkeypatch):
    from workbench.runs import RunConfig, RunStore
    from workbench.train import train

    seen = []
    cfg = RunConfig(dataset="gaussian-mixture", dataset_options={"n_train": 64, "n_test": 32, "seed": 0},
                    model="mlp", model_options={"hidden": [8]}, steps=4, batch_size=16, checkpoints=2)
    torch.set_num_threads(2)
    monkeypatch.setenv(ENV, "1")
    train(cfg, RunStore(tmp_path), progress=False, callback=lambda step, m: seen.append(torch.get_num_threads()))
    assert seen and set(seen) == {1}
    assert torch.get_num_threads() == 2


def test_busy_cores_sees_a_busy_process():
    """A child spinning on one core shows as about one busy core (well above what an idle sample shows)."""
    if _threads._cpu_times() is None:
        pytest.skip("no /proc/stat")
    child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        import time

        time.sleep(0.3)
        busy = _threads.busy_cores(0.5)
    finally:
        child.kill()
        child.wait()
    assert busy >= 0.7


def test_thread_env_sets_every_runtime():
    env = thread_env(1, env={"PATH": "/bin", "OMP_WAIT_POLICY": "ACTIVE"})
    assert env["PATH"] == "/bin"
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", ENV):
        assert env[var] == "1"
    assert env["OMP_WAIT_POLICY"] == "PASSIVE"
    assert "OMP_WAIT_POLICY" not in thread_env(2, passive=False, env={"OMP_WAIT_POLICY": "ACTIVE"})
    with pytest.raises(ValueError, match="threads"):
        thread_env(0)


def test_child_with_thread_env_runs_one_torch_thread():
    code = "import torch; print(torch.get_num_threads())"
    out = subprocess.run([sys.executable, "-c", code], env=thread_env(1), capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"

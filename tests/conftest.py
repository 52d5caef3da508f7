"""Shared test fixtures."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Run a module with one intra-op torch thread and one BLAS / OpenMP thread in NumPy, SciPy and scikit-learn,
    restoring the settings after.

    Tiny models and tensors gain nothing from intra-op threads, and on a shared 2-core machine OpenMP
    threads oversubscribe badly (up to 10x slower; a scikit-learn reference fit with 2 BLAS threads next to
    torch's pool and another process crawled for minutes). Use with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def smoke_store(tmp_path_factory):
    """One run store for the findings' smoke runs, shared by the finding tests and the lesson notebooks: a smoke run
    is trained by whichever test needs it first and reused by the others (runs are keyed by their config; a reused
    run is the same seeded training). Smoke verdicts are kept there, never in the user's store.

    Under pytest-xdist (``make test`` runs the suite on every core) the workers share one store next to their
    temporary folders: the run store's locks (``workbench._locks``) let one worker train a run while another waits
    for it, as on a cluster."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = tmp_path_factory.getbasetemp().parent / "smoke-store"
        root.mkdir(exist_ok=True)
        return root
    return tmp_path_factory.mktemp("smoke-store")


@pytest.fixture(scope="session")
def demo_store(tmp_path_factory):
    """One run store for the flagship demo's runs, shared by the demo, notebook and browser tests: CI's
    ``WORKBENCH_HOME`` when set, else one folder for the session, so the demo's runs are trained once, by whichever
    of those tests comes first."""
    home = os.environ.get("WORKBENCH_HOME")
    return Path(home) if home else tmp_path_factory.mktemp("demo-store")

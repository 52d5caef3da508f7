"""Shared test fixtures."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Run a module with one intra-op torch thread, restoring the setting after.

    Tiny models and tensors gain nothing from intra-op threads, and on a shared 2-core machine OpenMP
    threads oversubscribe badly (up to 10x slower). Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

"""Shared by the notebook tests: execute a notebook as a user's kernel would and check every cell ran cleanly."""
from __future__ import annotations

import time
from pathlib import Path

import pytest


def output_text(output) -> str:
    """The text a cell output shows (a stream, or a result's text/plain)."""
    if output.get("output_type") == "stream":
        return output.get("text", "")
    return output.get("data", {}).get("text/plain", "")


def execute(path: Path, timeout: int):
    """Run ``path`` top to bottom with nbclient on the ``python3`` kernel, in its own folder; assert that every code
    cell ran and none raised. Returns ``(code cells, their outputs, seconds)``."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    t0 = time.perf_counter()
    client.execute()  # raises CellExecutionError on the first failing cell
    seconds = time.perf_counter() - t0
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.get("execution_count") for c in code), "a code cell did not run"
    outputs = [o for c in code for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    return code, outputs, seconds

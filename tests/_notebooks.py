"""Shared by the notebook tests: execute a notebook as a user's kernel would and check every cell ran cleanly."""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pandas as pd
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


def check_export(last: str, folder: Path) -> None:
    """A notebook ends with the export of a paper figure: ``last`` (its last cell's text output) reports the files
    (``{'csv': PosixPath(...), 'json': ..., ...}``, relative to the notebook's ``folder``); each exists and is not
    empty, the CSV holds the plotted numbers and the JSON spec has traces."""
    written = dict(re.findall(r"'(\w+)': PosixPath\('([^']+)'\)", last))
    assert {"csv", "json"} <= set(written), f"the last cell did not export a figure: {last[:500]}"
    files = {kind: folder / file for kind, file in written.items()}
    for kind, file in files.items():
        assert file.stat().st_size > 0, f"{kind} export {file} is empty"
    rows = pd.read_csv(files["csv"])
    assert len(rows) > 0 and rows.select_dtypes("number").shape[1] > 0, "the exported CSV holds no numbers"
    assert json.loads(files["json"].read_text())["data"], "the exported spec has no traces"

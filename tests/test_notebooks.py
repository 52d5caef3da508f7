"""Every tutorial notebook in ``notebooks/`` runs top to bottom (quick mode) and exports its paper figure.

Each notebook is executed with nbclient on the ``python3`` kernel, in its own folder (so ``data/`` next to it is
found), with ``WORKBENCH_QUICK=1`` and ``WORKBENCH_HOME`` pointing at one run store shared by all of them (and by
``test_demo.py`` when CI sets ``WORKBENCH_HOME``): the first notebook trains the demo's runs, the others reuse them.
A new notebook is picked up by its file name; nothing to register.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pandas as pd
import pytest
from _notebooks import execute, output_text

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    home = os.environ.get("WORKBENCH_HOME")
    return Path(home) if home else tmp_path_factory.mktemp("store")


def test_notebooks_are_found():
    names = {p.name for p in NOTEBOOKS}
    assert {"01_quickstart.ipynb", "02_probing.ipynb", "03_similarity.ipynb", "04_spectrum.ipynb",
            "05_layer_dashboard.ipynb", "06_pretraining_lab.ipynb", "07_saliency.ipynb",
            "08_dashboards.ipynb"} <= names


@pytest.mark.timeout(2400)  # hang guards only (here and per cell): training time depends on the machine's load
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path: Path, store: Path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_HOME", str(store))  # the kernel inherits the test's environment
    monkeypatch.setenv("WORKBENCH_QUICK", "1")
    code, outputs, seconds = execute(path, timeout=1800)

    mimes = {m for o in outputs for m in o.get("data", {})}
    assert mimes & {"application/vnd.plotly.v1+json", "application/vnd.jupyter.widget-view+json"}, \
        "the notebook drew no figure"
    # it ends with the export of a paper figure: the files it reports exist and the CSV holds the plotted rows
    last = "".join(output_text(o) for o in code[-1].get("outputs", []))
    written = dict(re.findall(r"'(\w+)': PosixPath\('([^']+)'\)", last))
    assert {"csv", "json"} <= set(written), f"the last cell did not export a figure: {last[:500]}"
    for kind, file in written.items():
        assert Path(file).stat().st_size > 0, f"{kind} export {file} is empty"
    rows = pd.read_csv(written["csv"])
    assert len(rows) > 0 and rows.select_dtypes("number").shape[1] > 0, "the exported CSV holds no numbers"
    assert json.loads(Path(written["json"]).read_text())["data"], "the exported spec has no traces"
    print(f"{path.name}: {seconds:.1f} s")

"""Every tutorial notebook in ``notebooks/`` runs top to bottom (quick mode) and exports its paper figure.

Each notebook is executed with nbclient on the ``python3`` kernel, in its own folder (so ``data/`` next to it is
found), with ``WORKBENCH_QUICK=1`` and ``WORKBENCH_HOME`` pointing at one run store shared by all of them (and by
``test_demo.py`` when CI sets ``WORKBENCH_HOME``): the first notebook trains the demo's runs, the others reuse them.
A new notebook is picked up by its file name; nothing to register.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from _notebooks import check_export, execute, output_text
from test_browser import CASES, browser_available

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def store(demo_store):
    return demo_store  # conftest: the demo's runs are trained once for the demo, notebook and browser tests


def test_notebooks_are_found():
    names = {p.name for p in NOTEBOOKS}
    assert {"01_quickstart.ipynb", "02_probing.ipynb", "03_similarity.ipynb", "04_spectrum.ipynb",
            "05_layer_dashboard.ipynb", "06_pretraining_lab.ipynb", "07_saliency.ipynb",
            "08_dashboards.ipynb"} <= names


@pytest.mark.timeout(2400)  # hang guards only (here and per cell): training time depends on the machine's load
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path: Path, store: Path, monkeypatch):
    if path.name in {c.notebook for c in CASES} and browser_available():
        pytest.skip("run top to bottom in JupyterLab by test_browser.py, with the same checks of its export")
    monkeypatch.setenv("WORKBENCH_HOME", str(store))  # the kernel inherits the test's environment
    monkeypatch.setenv("WORKBENCH_QUICK", "1")
    code, outputs, seconds = execute(path, timeout=1800)

    mimes = {m for o in outputs for m in o.get("data", {})}
    assert mimes & {"application/vnd.plotly.v1+json", "application/vnd.jupyter.widget-view+json"}, \
        "the notebook drew no figure"
    # it ends with the export of a paper figure: the files it reports exist and the CSV holds the plotted rows
    check_export("".join(output_text(o) for o in code[-1].get("outputs", [])), path.parent)
    print(f"{path.name}: {seconds:.1f} s")

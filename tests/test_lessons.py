"""Every lesson notebook in ``notebooks/lessons/`` (one per finding with an experiment) runs top to bottom at the
smoke size and ends with the finding's verdict.

Each lesson is executed with nbclient on the ``python3`` kernel with ``WORKBENCH_LESSON_MODE=smoke`` and
``WORKBENCH_HOME`` pointing at the session's smoke store (``conftest.smoke_store``, shared with the finding tests:
a smoke run is trained once per session; smoke verdicts are kept there, never in the user's store). A
lesson must run in about a minute on an idle 2-core CPU (with one torch thread, as here); each one's time is printed
(``pytest -s``) and the timeout is only a hang guard, since training time depends on the machine's load. A new
lesson is picked up by its file name; nothing to register.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from _notebooks import execute, output_text

from workbench import findings

ROOT = Path(__file__).resolve().parents[1]
LESSONS = sorted((ROOT / "notebooks" / "lessons").glob("*.ipynb"))


def _finding_of(path: Path) -> str:
    return path.name.split("_", 1)[0]


def test_every_finding_has_a_lesson():
    """One lesson per finding with an experiment, named ``<id>_<name>.ipynb`` and loading that finding."""
    expected = {f"{f.id}_{f.name}.ipynb" for f in findings.FINDINGS.values()}
    assert {p.name for p in LESSONS} == expected
    for path in LESSONS:
        nb = json.loads(path.read_text(encoding="utf-8"))
        code = "".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
        assert f'findings.get("{_finding_of(path)}")' in code, f"{path.name} does not load its finding"
        assert 'os.environ.get("WORKBENCH_LESSON_MODE", "quick")' in code, f"{path.name} has no size switch"


@pytest.mark.parametrize("path", LESSONS, ids=[p.name for p in LESSONS])
def test_lessons_are_stored_without_outputs(path: Path):
    """The repository keeps the lessons clean: no outputs, no execution counts (a student's run starts at [1])."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code, f"{path.name} has no code cell"
    assert not [c for c in code if c.get("outputs") or c.get("execution_count") is not None], \
        f"{path.name} is stored with outputs; clear them before committing"


@pytest.mark.slow
@pytest.mark.timeout(900)  # hang guards only (here and per cell): training time depends on the machine's load
@pytest.mark.parametrize("path", LESSONS, ids=[p.name for p in LESSONS])
def test_lesson_runs_at_smoke_size(path: Path, smoke_store: Path, monkeypatch):
    # the kernel inherits the test's environment; the smoke runs are shared with the finding tests (conftest)
    monkeypatch.setenv("WORKBENCH_HOME", str(smoke_store))
    fid = _finding_of(path)
    verdict_file = smoke_store / "findings" / f"{fid}-smoke.json"
    verdict_file.unlink(missing_ok=True)  # the lesson must write its own
    monkeypatch.setenv("WORKBENCH_LESSON_MODE", "smoke")
    # one intra-op thread: these tiny runs gain nothing from more, and on a shared 2-core machine the default
    # threads oversubscribe it (measured: a smoke finding ran 3-7x slower with them)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MKL_NUM_THREADS", "1")
    _code, outputs, seconds = execute(path, timeout=600)
    print(f"{path.name}: {seconds:.1f} s at smoke size")

    text = "\n".join(output_text(o) for o in outputs)
    assert "recorded" in text, f"{path.name} does not say whether a quick verdict is recorded"
    # the verdict line of str(Verdict), for this finding at the smoke size (the lesson obeyed the size switch)
    verdict = re.search(rf"^{fid} \(smoke, seeds \[(.*?)\]\): (SHOWN|NOT SHOWN|INCONCLUSIVE)$", text, flags=re.M)
    assert verdict, f"{path.name} printed no verdict line for {fid}"
    seeds = [int(s) for s in verdict.group(1).split(",")]
    assert seeds == sorted(findings.get(fid).settings["smoke"].seeds)
    assert verdict_file.is_file(), "the verdict was not kept in the store"
    plots = [o for o in outputs if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert len(plots) >= 3, f"{path.name} drew {len(plots)} figures; expected the checks', its own and the verdict's"
